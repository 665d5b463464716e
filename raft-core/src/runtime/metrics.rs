//! The node's metrics: counters, gauges and histograms in one prometheus-client [`Registry`] per
//! node, their Prometheus text exposition ([`Metrics::encode`], behind
//! `Node::prometheus_metrics`) and their snapshot [`NodeMetrics`] (behind `Node::metrics`).
//!
//! Naming: every family is `raft_<what>` with its unit last (`raft_fsync_seconds`,
//! `raft_append_batch_entries`); counters end in `_total`. Every sample carries the constant
//! label `node="<id>"`, so the series of several nodes stay apart when their expositions are
//! scraped by one Prometheus (or compared side by side in a test). One exposition holds one
//! node: a process that hosts several nodes serves each on its own path or port, since two
//! expositions concatenated would repeat the `# HELP`/`# TYPE` lines of every family.
//!
//! Writers (the handle, the driver, the applier) only bump atomics or, for histograms, take a
//! short uncontended lock; readers encode on demand. Each value is exact, the set is not one
//! atomic snapshot.

use std::borrow::Cow;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter as PromCounter;
use prometheus_client::metrics::gauge::Gauge as PromGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::types::NodeId;

/// A monotonic counter (`raft_<name>_total`).
#[derive(Debug, Default)]
pub(crate) struct Counter(PromCounter<u64, AtomicU64>);

impl Counter {
    pub(crate) fn inc(&self) {
        self.0.inc();
    }
    pub(crate) fn add(&self, n: u64) {
        self.0.inc_by(n);
    }
    pub(crate) fn get(&self) -> u64 {
        self.0.get()
    }
}

/// A value that goes up and down (an index, a term, a 0/1 flag).
#[derive(Debug, Default)]
pub(crate) struct Gauge(PromGauge<u64, AtomicU64>);

impl Gauge {
    pub(crate) fn set(&self, v: u64) {
        self.0.set(v);
    }
    pub(crate) fn get(&self) -> u64 {
        self.0.get()
    }
}

/// Latency buckets in seconds: 10 µs doubling to 5.24 s (20 bounds, then `+Inf`). An in-memory
/// commit lands in the first few, an fsync on a disk in the middle, a stuck one at the top.
fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(10e-6, 2.0, 20)
}

/// Batch-size buckets in entries: 1, 2, 4, ... 4096 (13 bounds, then `+Inf`).
fn batch_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(1.0, 2.0, 13)
}

/// A node's metrics. Field names are the metric names without the `raft_` prefix and the unit.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    // Counters.
    pub(crate) proposals: Counter,
    pub(crate) proposals_failed: Counter,
    pub(crate) reads: Counter,
    pub(crate) duplicates: Counter,
    pub(crate) ready_batches: Counter,
    pub(crate) fsyncs: Counter,
    pub(crate) snapshots_taken: Counter,
    pub(crate) snapshots_installed: Counter,
    pub(crate) leader_changes: Counter,
    // Gauges.
    pub(crate) applied_index: Gauge,
    pub(crate) commit_index: Gauge,
    pub(crate) last_index: Gauge,
    pub(crate) term: Gauge,
    pub(crate) is_leader: Gauge,
    pub(crate) has_leader: Gauge,
    /// Set from the caller's count at each [`Metrics::encode`].
    pending_requests: Gauge,
    // Histograms.
    pub(crate) propose_to_commit: Histogram,
    pub(crate) commit_to_apply: Histogram,
    pub(crate) fsync: Histogram,
    pub(crate) append_batch_entries: Histogram,
    pub(crate) read_index_wait: Histogram,
}

fn counter(r: &mut Registry, name: &str, help: &str) -> Counter {
    let c = Counter::default();
    r.register(name, help, c.0.clone());
    c
}

fn gauge(r: &mut Registry, name: &str, help: &str) -> Gauge {
    let g = Gauge::default();
    r.register(name, help, g.0.clone());
    g
}

fn histogram(
    r: &mut Registry,
    name: &str,
    help: &str,
    unit: Unit,
    buckets: impl Iterator<Item = f64>,
) -> Histogram {
    let h = Histogram::new(buckets);
    r.register_with_unit(name, help, unit, h.clone());
    h
}

impl Metrics {
    /// Metrics of node `node`, all zero; every sample is labelled `node="<node>"`.
    pub(crate) fn new(node: NodeId) -> Metrics {
        let labels = [(Cow::Borrowed("node"), Cow::Owned(node.to_string()))];
        let mut r = Registry::with_prefix_and_labels("raft", labels.into_iter());
        // The registry appends a full stop to each help text.
        let proposals =
            counter(&mut r, "proposals", "Commands proposed through this node, forwarded ones too");
        let proposals_failed = counter(
            &mut r,
            "proposals_failed",
            "Proposals answered with an error (refused, timed out, overtaken, shut down)",
        );
        let reads = counter(&mut r, "reads", "Reads asked of this node");
        let duplicates = counter(
            &mut r,
            "session_duplicates",
            "Session retries answered from the session table instead of being applied again",
        );
        let ready_batches = counter(&mut r, "ready_batches", "Ready batches the driver handled");
        let fsyncs = counter(&mut r, "fsyncs", "Log syncs to storage (one per group of batches)");
        let snapshots_taken = counter(&mut r, "snapshots_taken", "Snapshots taken on this node");
        let snapshots_installed = counter(
            &mut r,
            "snapshots_installed",
            "Snapshots received from a leader and installed",
        );
        let leader_changes = counter(&mut r, "leader_changes", "Times the known leader changed");
        let applied_index =
            gauge(&mut r, "applied_index", "Index of the last entry applied to the state machine");
        let commit_index = gauge(&mut r, "commit_index", "Index of the last entry known committed");
        let last_index = gauge(&mut r, "last_index", "Index of the last entry in the log");
        let term = gauge(&mut r, "term", "Current term");
        let is_leader = gauge(&mut r, "is_leader", "1 if this node is the leader, else 0");
        let has_leader = gauge(&mut r, "has_leader", "1 if this node knows a leader, else 0");
        let pending_requests =
            gauge(&mut r, "pending_requests", "Proposals and reads waiting for an answer");
        let propose_to_commit = histogram(
            &mut r,
            "propose_to_commit",
            "On the leader, time from a proposal to the commit of its entry",
            Unit::Seconds,
            latency_buckets(),
        );
        let commit_to_apply = histogram(
            &mut r,
            "commit_to_apply",
            "Time from an entry's commit to its application to the state machine",
            Unit::Seconds,
            latency_buckets(),
        );
        let fsync = histogram(
            &mut r,
            "fsync",
            "Duration of one log sync to storage",
            Unit::Seconds,
            latency_buckets(),
        );
        let append_batch_entries = histogram(
            &mut r,
            "append_batch",
            "Entries per batch appended to the log",
            Unit::Other("entries".into()),
            batch_buckets(),
        );
        let read_index_wait = histogram(
            &mut r,
            "read_index_wait",
            "Time from a ReadIndex request to its confirmation by a quorum",
            Unit::Seconds,
            latency_buckets(),
        );
        Metrics {
            registry: r,
            proposals,
            proposals_failed,
            reads,
            duplicates,
            ready_batches,
            fsyncs,
            snapshots_taken,
            snapshots_installed,
            leader_changes,
            applied_index,
            commit_index,
            last_index,
            term,
            is_leader,
            has_leader,
            pending_requests,
            propose_to_commit,
            commit_to_apply,
            fsync,
            append_batch_entries,
            read_index_wait,
        }
    }

    /// Everything in the Prometheus text exposition format (version 0.0.4, content type
    /// `text/plain; version=0.0.4`), `# HELP` and `# TYPE` for each family, no `# EOF`: it can
    /// be appended to an application's own metrics on one endpoint.
    pub(crate) fn encode(&self, pending_requests: u64) -> String {
        self.pending_requests.set(pending_requests);
        let mut out = String::with_capacity(16 << 10);
        // Writing to a String cannot fail, and every metric here encodes infallibly.
        prometheus_text::encode(&mut out, &self.registry).expect("encoding to a String");
        out
    }

    /// The counters and the applied index as read now.
    pub(crate) fn snapshot(&self, pending_requests: u64) -> NodeMetrics {
        NodeMetrics {
            proposals: self.proposals.get(),
            proposals_failed: self.proposals_failed.get(),
            reads: self.reads.get(),
            duplicates: self.duplicates.get(),
            ready_batches: self.ready_batches.get(),
            fsyncs: self.fsyncs.get(),
            snapshots_taken: self.snapshots_taken.get(),
            snapshots_installed: self.snapshots_installed.get(),
            leader_changes: self.leader_changes.get(),
            applied_index: self.applied_index.get(),
            pending_requests,
        }
    }
}

/// Counters of a node since it started (for a metrics endpoint).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeMetrics {
    /// Commands proposed through this node (forwarded ones included).
    pub proposals: u64,
    /// Proposals answered with an error (refused, timed out, shut down).
    pub proposals_failed: u64,
    /// Reads asked of this node.
    pub reads: u64,
    /// Session retries answered from the session table instead of being applied again.
    pub duplicates: u64,
    /// `Ready` batches handled.
    pub ready_batches: u64,
    /// fsyncs (one per group of batches).
    pub fsyncs: u64,
    /// Snapshots taken here.
    pub snapshots_taken: u64,
    /// Snapshots received from a leader and installed.
    pub snapshots_installed: u64,
    /// Times the known leader changed.
    pub leader_changes: u64,
    /// Applied index.
    pub applied_index: u64,
    /// Proposals and reads waiting for an answer.
    pub pending_requests: u64,
}

// What the stages record.
impl Metrics {
    pub(crate) fn observe_fsync(&self, d: Duration) {
        self.fsync.observe(d.as_secs_f64());
    }
    pub(crate) fn observe_commit_to_apply(&self, d: Duration) {
        self.commit_to_apply.observe(d.as_secs_f64());
    }
    pub(crate) fn observe_propose_to_commit(&self, d: Duration) {
        self.propose_to_commit.observe(d.as_secs_f64());
    }
    pub(crate) fn observe_append_batch(&self, entries: usize) {
        self.append_batch_entries.observe(entries as f64);
    }
    pub(crate) fn observe_read_wait(&self, d: Duration) {
        self.read_index_wait.observe(d.as_secs_f64());
    }
    pub(crate) fn set_gauges(&self, term: u64, commit: u64, last: u64, leader: bool, has: bool) {
        self.term.set(term);
        self.commit_index.set(commit);
        self.last_index.set(last);
        self.is_leader.set(u64::from(leader));
        self.has_leader.set(u64::from(has));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_snapshot_agree() {
        let m = Metrics::new(2);
        m.proposals.add(3);
        m.proposals.inc();
        m.fsyncs.inc();
        m.applied_index.set(41);
        m.term.set(5);
        m.is_leader.set(1);
        m.fsync.observe(0.000_3);
        m.fsync.observe(7.0);
        m.append_batch_entries.observe(3.0);
        let text = m.encode(9);
        for line in [
            "raft_proposals_total{node=\"2\"} 4",
            "raft_fsyncs_total{node=\"2\"} 1",
            "raft_applied_index{node=\"2\"} 41",
            "raft_term{node=\"2\"} 5",
            "raft_is_leader{node=\"2\"} 1",
            "raft_pending_requests{node=\"2\"} 9",
            "raft_fsync_seconds_bucket{node=\"2\",le=\"0.00032\"} 1",
            "raft_fsync_seconds_bucket{node=\"2\",le=\"5.24288\"} 1",
            "raft_fsync_seconds_bucket{node=\"2\",le=\"+Inf\"} 2",
            "raft_fsync_seconds_count{node=\"2\"} 2",
            "raft_append_batch_entries_bucket{node=\"2\",le=\"2\"} 0",
            "raft_append_batch_entries_bucket{node=\"2\",le=\"4\"} 1",
            "raft_append_batch_entries_bucket{node=\"2\",le=\"4096\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        let s = m.snapshot(9);
        assert_eq!((s.proposals, s.fsyncs, s.applied_index, s.pending_requests), (4, 1, 41, 9));
    }
}
