//! `Node::prometheus_metrics`: the exposition is well-formed Prometheus text (format 0.0.4),
//! names every family once with its `# HELP` and `# TYPE`, labels every sample with the node,
//! and agrees with `Node::metrics`; the histograms record what the stages did and the gauges
//! follow the status.

use std::collections::BTreeMap;

use prometheus_parse::{Scrape, Value};
use raft_core::NodeId;
use raft_core::runtime::{Node, NodeMetrics, ReadConsistency};

use crate::cluster::Cluster;

/// Every family the library exports, as named in the exposition, with its type.
const FAMILIES: &[(&str, &str)] = &[
    ("raft_proposals_total", "counter"),
    ("raft_proposals_failed_total", "counter"),
    ("raft_reads_total", "counter"),
    ("raft_session_duplicates_total", "counter"),
    ("raft_ready_batches_total", "counter"),
    ("raft_fsyncs_total", "counter"),
    ("raft_snapshots_taken_total", "counter"),
    ("raft_snapshots_installed_total", "counter"),
    ("raft_leader_changes_total", "counter"),
    ("raft_applied_index", "gauge"),
    ("raft_commit_index", "gauge"),
    ("raft_last_index", "gauge"),
    ("raft_term", "gauge"),
    ("raft_is_leader", "gauge"),
    ("raft_has_leader", "gauge"),
    ("raft_pending_requests", "gauge"),
    ("raft_propose_to_commit_seconds", "histogram"),
    ("raft_commit_to_apply_seconds", "histogram"),
    ("raft_fsync_seconds", "histogram"),
    ("raft_append_batch_entries", "histogram"),
    ("raft_read_index_wait_seconds", "histogram"),
];

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Checks `text` line by line against the text format 0.0.4 as this library writes it: each
/// family is a `# HELP`, then its `# TYPE`, then its samples `name{k="v",...} value`, whose
/// names are the family's (with `_bucket`, `_sum`, `_count` for a histogram). Returns the
/// families with their types.
fn check_text_format(text: &str) -> BTreeMap<String, String> {
    let mut families = BTreeMap::new();
    let (mut help, mut family): (Option<&str>, Option<(&str, &str)>) = (None, None);
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, doc) = rest.split_once(' ').unwrap_or_else(|| panic!("{line}"));
            assert!(valid_name(name) && !doc.trim().is_empty(), "{line}");
            help = Some(name);
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or_else(|| panic!("{line}"));
            assert_eq!(help.take(), Some(name), "a TYPE right after its HELP: {line}");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            let first = families.insert(name.to_string(), kind.to_string()).is_none();
            assert!(first, "family {name} declared twice");
            family = Some((name, kind));
        } else {
            assert!(help.is_none() && !line.starts_with('#'), "unexpected line {line:?}");
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
            assert!(value == "+Inf" || value.parse::<f64>().is_ok(), "value: {line}");
            let (name, labels) = series.split_once('{').unwrap_or((series, "}"));
            let (fam, kind) = family.unwrap_or_else(|| panic!("sample before any TYPE: {line}"));
            let own = match kind {
                "histogram" => {
                    ["_bucket", "_sum", "_count"].iter().any(|s| name.strip_suffix(s) == Some(fam))
                }
                _ => name == fam,
            };
            assert!(own, "sample {name} under family {fam}");
            let labels = labels.strip_suffix('}').unwrap_or_else(|| panic!("labels: {line}"));
            for label in labels.split(',').filter(|l| !l.is_empty()) {
                let (k, v) = label.split_once('=').unwrap_or_else(|| panic!("label: {line}"));
                assert!(valid_name(k) && v.len() >= 2, "label: {line}");
                assert!(v.starts_with('"') && v.ends_with('"'), "label: {line}");
            }
        }
    }
    assert!(help.is_none(), "a HELP without its TYPE at the end");
    families
}

/// The exposition and `metrics()` read at one moment (the persister runs on its own thread, so
/// read until two snapshots around the exposition agree).
fn read_both(node: &Node) -> (String, NodeMetrics) {
    for _ in 0..100 {
        let before = node.metrics();
        let text = node.prometheus_metrics();
        if node.metrics() == before {
            return (text, before);
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    panic!("node {}'s counters never held still", node.id());
}

fn parse(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("parses")
}

/// The value of the one sample named `name` (a counter or a gauge, or a histogram's `_count`).
fn value(scrape: &Scrape, name: &str) -> f64 {
    let mut found = scrape.samples.iter().filter(|s| s.metric == name);
    let sample = found.next().unwrap_or_else(|| panic!("no sample {name}"));
    assert!(found.next().is_none(), "one sample {name}");
    match sample.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
        ref other => panic!("{name} is {other:?}"),
    }
}

/// The number of observations of histogram `name`, checked against its `+Inf` bucket.
fn observations(scrape: &Scrape, name: &str) -> u64 {
    let count = value(scrape, &format!("{name}_count"));
    let sample = scrape.samples.iter().find(|s| s.metric == name);
    let Some(Value::Histogram(buckets)) = sample.map(|s| &s.value) else {
        panic!("no histogram {name}")
    };
    let inf = buckets.iter().find(|b| b.less_than == f64::INFINITY).expect("+Inf bucket");
    assert_eq!(inf.count, count, "{name}: the +Inf bucket holds every observation");
    count as u64
}

/// A 3-node cluster after proposals (some forwarded by a follower) and reads, converged.
async fn busy_cluster() -> (Cluster, NodeId, NodeId) {
    let c = Cluster::new(3, crate::seed(), crate::defaults).await;
    let l = c.leader().await;
    let f = (1..=3).find(|&i| i != l).unwrap();
    for i in 0..20 {
        c.propose(if i % 4 == 0 { f } else { l }, &format!("set k{i} {i}")).await;
    }
    for id in [l, f] {
        assert_eq!(c.node(id).read(ReadConsistency::Linearizable, "k1").await.unwrap(), "1");
    }
    c.converged().await;
    (c, l, f)
}

#[tokio::test(start_paused = true)]
async fn exposition_is_prometheus_text_and_agrees_with_metrics() {
    let (c, l, f) = busy_cluster().await;
    for id in [l, f] {
        let (text, m) = read_both(c.node(id));
        let want: BTreeMap<String, String> =
            FAMILIES.iter().map(|(n, t)| (n.to_string(), t.to_string())).collect();
        assert_eq!(check_text_format(&text), want, "node {id}:\n{text}");
        let scrape = parse(&text);
        assert_eq!(scrape.docs.len(), FAMILIES.len(), "a HELP per family");
        let node = id.to_string();
        for s in &scrape.samples {
            assert_eq!(s.labels.get("node"), Some(node.as_str()), "{} on node {id}", s.metric);
        }
        let counters = [
            ("raft_proposals_total", m.proposals),
            ("raft_proposals_failed_total", m.proposals_failed),
            ("raft_reads_total", m.reads),
            ("raft_session_duplicates_total", m.duplicates),
            ("raft_ready_batches_total", m.ready_batches),
            ("raft_fsyncs_total", m.fsyncs),
            ("raft_snapshots_taken_total", m.snapshots_taken),
            ("raft_snapshots_installed_total", m.snapshots_installed),
            ("raft_leader_changes_total", m.leader_changes),
            ("raft_applied_index", m.applied_index),
            ("raft_pending_requests", m.pending_requests),
        ];
        for (name, want) in counters {
            assert_eq!(value(&scrape, name), want as f64, "{name} on node {id}: {m:?}");
        }
        // In memory there is nothing to fsync (`LogStore::needs_sync`): the durable stores'
        // fsyncs are checked through raft-kv's `/metrics`.
        assert!(m.proposals >= 5 && m.reads >= 1 && m.fsyncs == 0, "node {id}: {m:?}");
    }
    assert!(c.node(l).metrics().proposals >= 15, "{:?}", c.node(l).metrics());
    c.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn histograms_record_latencies_and_batch_sizes() {
    let (c, l, f) = busy_cluster().await;
    for id in [l, f] {
        let (text, m) = read_both(c.node(id));
        let scrape = parse(&text);
        let fsync = observations(&scrape, "raft_fsync_seconds");
        assert_eq!(fsync, m.fsyncs, "one fsync observation per fsync on node {id}");
        assert!(observations(&scrape, "raft_commit_to_apply_seconds") > 0, "node {id}");
        assert!(observations(&scrape, "raft_append_batch_entries") > 0, "node {id}");
        assert!(value(&scrape, "raft_append_batch_entries_sum") >= 20.0, "node {id}");
    }
    let scrape = parse(&c.node(l).prometheus_metrics());
    let committed = observations(&scrape, "raft_propose_to_commit_seconds");
    assert!(committed >= 15, "one per proposal of the leader's own: {committed}");
    let reads = observations(&scrape, "raft_read_index_wait_seconds");
    assert!(reads >= 1, "the leader's linearizable read: {reads}");
    c.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn gauges_follow_the_status() {
    let (c, l, f) = busy_cluster().await;
    // The status's indexes are refreshed once per tick: let a few ticks pass.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    for id in [l, f] {
        let s = c.node(id).status();
        let scrape = parse(&c.node(id).prometheus_metrics());
        assert_eq!(value(&scrape, "raft_term"), s.term as f64, "node {id}");
        assert_eq!(value(&scrape, "raft_commit_index"), s.commit_index as f64, "node {id}");
        assert_eq!(value(&scrape, "raft_last_index"), s.last_index as f64, "node {id}");
        assert_eq!(value(&scrape, "raft_is_leader"), f64::from(u8::from(id == l)), "node {id}");
        assert_eq!(value(&scrape, "raft_has_leader"), 1.0, "node {id}");
    }
    c.shutdown().await;
}
