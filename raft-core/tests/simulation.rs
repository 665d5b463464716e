//! Seeded simulation of whole clusters (TigerBeetle VOPR style): drops, duplicates, reordering,
//! delays, partitions, crashes losing unsynced writes, pauses and clock drift, with the safety
//! invariants of `TESTING.md` checked after every step, liveness required after each heal, and
//! the client history checked for linearizability.
//!
//! `RAFT_SIM_SEEDS=<n>` runs seeds `0..n`; `RAFT_SIM_SEED=<s>` replays seed `s` exactly (add
//! `RAFT_SIM_VERBOSE=1` to print every step of the replay to stderr).
#![allow(clippy::print_stdout)]

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
    failures: Vec<(u64, String)>,
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
    }
}

/// Runs one seed; a panic in the core or the simulator counts as a failure of that seed.
fn run_seed(seed: u64) -> Result<RunStats, String> {
    match catch_unwind(AssertUnwindSafe(|| run_random(seed))) {
        Ok(Ok(stats)) => Ok(stats),
        Ok(Err(v)) => Err(v.to_string()),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "non-string panic".into());
            Err(format!("panic: {msg}"))
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
    t.failures.sort();
    println!(
        "simulation: seeds={} steps={} elections={} partitions={} crashes={} client_ops={} \
         violations={} pauses={} lease_seeds={} snapshots={} conf_changes={} transfers={} secs={:.1}",
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
        start.elapsed().as_secs_f64()
    );
    for (seed, e) in t.failures.iter().take(10) {
        println!("seed {seed} FAILED: {e}");
        println!(
            "  replay: RAFT_SIM_SEED={seed} cargo test -p raft-core --release --all-features \
             --test simulation -- --nocapture"
        );
    }
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
