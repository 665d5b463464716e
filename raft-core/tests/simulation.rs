//! Seeded simulation of whole clusters (TigerBeetle VOPR style): drops, duplicates, reordering,
//! delays, partitions, crashes losing unsynced writes, pauses and clock drift, with the safety
//! invariants of `TESTING.md` checked after every step, liveness required after each heal, and
//! the client history checked for linearizability.
//!
//! `RAFT_SIM_SEEDS=<n>` runs seeds `0..n`; `RAFT_SIM_SEED=<s>` replays seed `s` exactly (add
//! `RAFT_SIM_VERBOSE=1` to print every step of the replay to stderr).
#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;
use std::time::Instant;

use raft_core::testkit::schedule::{RunStats, run_random};

/// Seeds run when `RAFT_SIM_SEEDS` is not set (debug builds run fewer).
const DEFAULT_SEEDS: u64 = if cfg!(debug_assertions) { 40 } else { 200 };
/// Worker threads (each seed is deterministic whatever thread runs it).
const THREADS: u64 = 2;

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(v.trim().parse().unwrap_or_else(|_| panic!("{name}={v:?} is not a number")))
}

#[derive(Default)]
struct Totals {
    seeds: u64,
    steps: u64,
    elections: u64,
    partitions: u64,
    crashes: u64,
    client_ops: u64,
    pauses: u64,
    lease_seeds: u64,
    snapshots: u64,
    conf_changes: u64,
    transfers: u64,
    reads_aborted: u64,
    refused: u64,
    failures: Vec<(u64, Failure)>,
}

impl Totals {
    fn add(&mut self, s: &RunStats) {
        self.seeds += 1;
        self.steps += s.steps;
        self.elections += s.elections;
        self.partitions += s.partitions;
        self.crashes += s.crashes;
        self.client_ops += s.client_ops;
        self.pauses += s.pauses;
        self.lease_seeds += u64::from(s.lease);
        self.snapshots += s.snapshots_installed;
        self.conf_changes += s.conf_changes;
        self.transfers += s.transfers;
        self.reads_aborted += s.reads_aborted;
        self.refused += s.refused;
    }
}

/// How a seed failed: its kind (for grouping) and the whole report.
struct Failure {
    kind: String,
    report: String,
}

/// The kind of a failure: what failed with its numbers and details left out, so that seeds
/// failing the same way group together ("Liveness: no leader committed a proposal within N
/// ticks after healing (leader now: None)").
fn kind_of(what: &str) -> String {
    let head = what.split(';').next().unwrap_or(what);
    let mut kind = String::with_capacity(head.len());
    for c in head.chars() {
        if c.is_ascii_digit() {
            if !kind.ends_with('N') {
                kind.push('N');
            }
        } else {
            kind.push(c);
        }
    }
    kind
}

/// Runs one seed; a panic in the core or the simulator counts as a failure of that seed.
fn run_seed(seed: u64) -> Result<RunStats, Failure> {
    match catch_unwind(AssertUnwindSafe(|| run_random(seed))) {
        Ok(Ok(stats)) => Ok(stats),
        Ok(Err(v)) => Err(Failure {
            kind: format!("{:?}: {}", v.invariant, kind_of(&v.detail)),
            report: v.to_string(),
        }),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "non-string panic".into());
            Err(Failure {
                kind: format!("panic: {}", kind_of(&msg)),
                report: format!("panic: {msg}"),
            })
        }
    }
}

/// Prints every failing seed, grouped by kind, with the whole report of the first few of each
/// kind and how to replay them.
fn report_failures(failures: &[(u64, Failure)]) {
    const SHOWN_PER_KIND: usize = 3;
    let mut kinds: BTreeMap<&str, Vec<&(u64, Failure)>> = BTreeMap::new();
    for f in failures {
        kinds.entry(f.1.kind.as_str()).or_default().push(f);
    }
    for (kind, seeds) in &kinds {
        let list: Vec<String> = seeds.iter().map(|(s, _)| s.to_string()).collect();
        println!("{} seed(s) failed with {kind}: {}", seeds.len(), list.join(" "));
        for (seed, f) in seeds.iter().take(SHOWN_PER_KIND) {
            println!("seed {seed} FAILED: {}", f.report);
            println!(
                "  replay: RAFT_SIM_SEED={seed} cargo test -p raft-core --release --all-features \
                 --test simulation -- --nocapture"
            );
        }
    }
}

#[test]
fn simulation() {
    let seeds: Vec<u64> = match env_u64("RAFT_SIM_SEED") {
        Some(s) => vec![s],
        None => (0..env_u64("RAFT_SIM_SEEDS").unwrap_or(DEFAULT_SEEDS)).collect(),
    };
    let totals = Mutex::new(Totals::default());
    let start = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            let (seeds, totals) = (&seeds, &totals);
            scope.spawn(move || {
                for &seed in seeds.iter().skip(t as usize).step_by(THREADS as usize) {
                    let r = run_seed(seed);
                    let mut tot = totals.lock().unwrap_or_else(|e| e.into_inner());
                    match r {
                        Ok(stats) => tot.add(&stats),
                        Err(e) => {
                            tot.seeds += 1;
                            tot.failures.push((seed, e));
                        }
                    }
                }
            });
        }
    });
    let mut t = totals.into_inner().unwrap_or_else(|e| e.into_inner());
    t.failures.sort_by_key(|f| f.0);
    println!(
        "simulation: seeds={} steps={} elections={} partitions={} crashes={} client_ops={} \
         violations={} pauses={} lease_seeds={} snapshots={} conf_changes={} transfers={} reads_aborted={} refused={} secs={:.1}",
        t.seeds,
        t.steps,
        t.elections,
        t.partitions,
        t.crashes,
        t.client_ops,
        t.failures.len(),
        t.pauses,
        t.lease_seeds,
        t.snapshots,
        t.conf_changes,
        t.transfers,
        t.reads_aborted,
        t.refused,
        start.elapsed().as_secs_f64()
    );
    report_failures(&t.failures);
    assert!(
        t.failures.is_empty(),
        "{} seed(s) violated an invariant (see above)",
        t.failures.len()
    );
}

/// One seed determines everything: two runs give the same stats and the same trace hash (or the
/// same violation).
#[test]
fn a_seed_replays_identically() {
    for seed in [3, 11] {
        let (a, b) = (run_random(seed), run_random(seed));
        assert_eq!(a, b, "seed {seed} is not deterministic");
        if let Ok(stats) = a {
            assert!(stats.steps > 0 && stats.trace_hash != 0);
        }
    }
}

/// Seeds that once failed, kept as regression cases (each replays exactly).
/// - Issue 18, no leader after healing: the leader of two voters removed itself and stepped
///   down before the other learned that the change was committed; the other still needed the
///   removed node's vote, which it refused (longer log). Fixed by the commit index in vote
///   answers (`MessageBody::VoteResponse::commit_index`).
/// - Issue 18, a member not caught up within the liveness bound: a learner a thousand entries
///   behind a one-voter leader, with one-entry appends and reordering. The protocol needs time
///   in proportion to the backlog (`Sim::settle` now allows it, and requires progress in every
///   liveness bound).
/// - A driver compacting at its applied index while the core already holds a newer snapshot from
///   the leader that the node has not restored yet (seeds 22838 and 63851 of 100,000, after the
///   schedule started sending membership changes and transfers to any member): the core refuses
///   (`SnapshotOutOfRange`), and the simulator's driver now skips the obsolete snapshot instead of
///   reporting a broken contract, as the runtime does.
const REGRESSION_SEEDS: [u64; 53] = [
    8779, 12267, 12440, 13148, 14415, 16635, 18845, 19797, 20860, 27531, 29403, 32179, 35102,
    36008, 40283, 40849, 40932, 47509, 49965, 51592, 56877, 60532, 61919, 62705, 62728, 65126,
    69971, 72855, 73780, 73798, 76394, 77558, 80233, 81463, 82032, 86396, 87767, 88402, 89388,
    89554, 90256, 93503, 96470, 97479, 98751, 98852, 9674, 32967, 43238, 46708, 76839, 22838,
    63851,
];

#[test]
fn regression_seeds() {
    let failures: Vec<(u64, Failure)> = REGRESSION_SEEDS
        .iter()
        .filter_map(|&seed| run_seed(seed).err().map(|f| (seed, f)))
        .collect();
    report_failures(&failures);
    assert!(failures.is_empty(), "{} regression seed(s) failed (see above)", failures.len());
}
