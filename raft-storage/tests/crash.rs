//! Crash test: a child process (this test binary, re-executed) appends, saves hard and conf states,
//! compacts and installs snapshots, syncing after each operation and reporting it to the parent
//! on stdout before (`begin ...`) and after (`ack`) it is durable. The parent kills the child with
//! SIGKILL at seeded random moments (during open, writes, syncs, rotations, compactions),
//! reopens the store and checks that it holds exactly the acknowledged operations, plus possibly
//! (a prefix of) the one in flight. The same store lives through all cycles.
//!
//! `RAFT_CRASH_ITERS=<n> cargo test -p raft-storage --release --test crash -- --nocapture`
//! prints `crash: cycles=<n> acked=<entries> lost=0`. `RAFT_CRASH_SEED` replays the same child
//! seeds and kill delays.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use raft_core::testkit::rng::Rng;
use raft_core::{
    ConfState, Entry, EntryKind, HardState, LogStore, MemStorage, Snapshot, SnapshotMeta, Storage,
};
use raft_storage::{SledStorage, StorageOptions};

const CHILD_DIR_ENV: &str = "RAFT_CRASH_CHILD_DIR";
const CHILD_SEED_ENV: &str = "RAFT_CRASH_CHILD_SEED";

fn options() -> StorageOptions {
    StorageOptions {
        segment_size_bytes: 64 << 10,
        cache_capacity_bytes: 1 << 20,
        ..StorageOptions::new(7, 1)
    }
}

fn payload(index: u64, term: u64) -> Bytes {
    let len = ((index * 37 + term * 11) % 300) as usize;
    Bytes::from(
        (0..len).map(|i| (index as usize + term as usize * 3 + i) as u8).collect::<Vec<u8>>(),
    )
}

fn entry(index: u64, term: u64) -> Entry {
    Entry { index, term, kind: EntryKind::Normal, data: payload(index, term) }
}

fn snapshot(index: u64, term: u64, voters: Vec<u64>) -> Snapshot {
    let data =
        Bytes::from(format!("state machine at {index}/{term} ").repeat(1 + (index % 200) as usize));
    Snapshot {
        meta: SnapshotMeta { index, term, conf_state: ConfState { voters, ..Default::default() } },
        data,
    }
}

/// One operation, as the child announces it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Op {
    Append { from: u64, to: u64, term: u64 },
    HardState { term: u64, commit: u64 },
    Conf { voter: u64 },
    Compact { index: u64, term: u64 },
    Install { index: u64, term: u64 },
}

impl Op {
    fn to_line(&self) -> String {
        match *self {
            Op::Append { from, to, term } => format!("begin append {from} {to} {term}"),
            Op::HardState { term, commit } => format!("begin hs {term} {commit}"),
            Op::Conf { voter } => format!("begin conf {voter}"),
            Op::Compact { index, term } => format!("begin compact {index} {term}"),
            Op::Install { index, term } => format!("begin install {index} {term}"),
        }
    }

    fn parse(line: &str) -> Option<Op> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let n = |i: usize| words.get(i).and_then(|w| w.parse::<u64>().ok());
        match *words.get(1)? {
            "append" => Some(Op::Append { from: n(2)?, to: n(3)?, term: n(4)? }),
            "hs" => Some(Op::HardState { term: n(2)?, commit: n(3)? }),
            "conf" => Some(Op::Conf { voter: n(2)? }),
            "compact" => Some(Op::Compact { index: n(2)?, term: n(3)? }),
            "install" => Some(Op::Install { index: n(2)?, term: n(3)? }),
            _ => None,
        }
    }

    /// Applies the op (or, for an append, its first `prefix` entries) to any store.
    fn apply<S: LogStore>(
        &self,
        s: &S,
        prefix: Option<u64>,
    ) -> Result<(), raft_core::StorageError> {
        match *self {
            Op::Append { from, to, term } => {
                let to = prefix.map_or(to, |p| from + p - 1);
                let es: Vec<Entry> = (from..=to).map(|i| entry(i, term)).collect();
                s.append_entries(&es)
            }
            Op::HardState { term, commit } => {
                s.save_hard_state(&HardState { term, vote: Some(1), commit })
            }
            Op::Conf { voter } => {
                s.save_conf_state(&ConfState { voters: vec![1, voter], ..Default::default() })
            }
            Op::Compact { index, term } => s.compact(&snapshot(index, term, vec![1])),
            Op::Install { index, term } => s.install_snapshot(&snapshot(index, term, vec![1, 2])),
        }
    }

    fn entries(&self) -> u64 {
        match *self {
            Op::Append { from, to, .. } => to - from + 1,
            _ => 0,
        }
    }
}

/// Chooses the next operation from the store's state.
fn next_op(s: &SledStorage, rng: &mut Rng, term: &mut u64) -> Op {
    let first = s.first_index().unwrap();
    let last = s.last_index().unwrap();
    let roll = rng.next_u64() % 1000;
    if roll < 80 && last >= first {
        *term += 1;
        let from = last.saturating_sub(rng.next_u64() % 5).max(first);
        Op::Append { from, to: from + rng.next_u64() % 8, term: *term }
    } else if roll < 180 {
        Op::HardState { term: *term, commit: last }
    } else if roll < 200 {
        Op::Conf { voter: 2 + rng.next_u64() % 3 }
    } else if roll < 230 && last >= first + 30 {
        let index = last - 10 - rng.next_u64() % 20;
        Op::Compact { index, term: s.term(index).unwrap() }
    } else if roll < 235 {
        *term += 1;
        Op::Install { index: last + rng.next_u64() % 10, term: *term }
    } else {
        let n = 1 + rng.next_u64() % 32;
        Op::Append { from: last + 1, to: last + n, term: *term }
    }
}

fn child_main(dir: &str, seed: u64) {
    let store = SledStorage::open(dir, options()).unwrap_or_else(|e| panic!("child open: {e}"));
    let last = store.last_index().unwrap();
    let mut term =
        store.initial_state().unwrap().hard_state.term.max(store.term(last).unwrap()) + 1;
    let mut rng = Rng::new(seed);
    let mut out = std::io::stdout().lock();
    let started = Instant::now();
    // End the line the test harness started ("test crash_child_process ... ").
    if writeln!(out).is_err() {
        return;
    }
    // Bounded: the parent kills us long before, but never leave a runaway process.
    while started.elapsed() < Duration::from_secs(30) {
        let op = next_op(&store, &mut rng, &mut term);
        if writeln!(out, "{}", op.to_line()).and_then(|_| out.flush()).is_err() {
            return;
        }
        op.apply(&store, None).unwrap_or_else(|e| panic!("child {op:?}: {e}"));
        store.sync().unwrap_or_else(|e| panic!("child sync: {e}"));
        if writeln!(out, "ack").and_then(|_| out.flush()).is_err() {
            return;
        }
    }
}

/// Not a test of its own: the entry point of the child process when re-executed by `crash`.
#[test]
fn crash_child_process() {
    if let Ok(dir) = std::env::var(CHILD_DIR_ENV) {
        let seed = std::env::var(CHILD_SEED_ENV).unwrap().parse().unwrap();
        child_main(&dir, seed);
        std::process::exit(0);
    }
}

/// Differences between `store` and `model`, if any.
fn differences(store: &SledStorage, model: &MemStorage) -> Option<String> {
    let (first, last) = (model.first_index().unwrap(), model.last_index().unwrap());
    let bounds = (store.first_index().unwrap(), store.last_index().unwrap());
    if bounds != (first, last) {
        return Some(format!("log bounds {bounds:?}, expected {:?}", (first, last)));
    }
    if store.term(first - 1) != model.term(first - 1) {
        return Some(format!(
            "term at {}: {:?} vs {:?}",
            first - 1,
            store.term(first - 1),
            model.term(first - 1)
        ));
    }
    let got = store.entries(first, last + 1, u64::MAX);
    if got != model.entries(first, last + 1, u64::MAX) {
        return Some(format!("entries {first}..={last} differ: {:?}", got.map(|v| v.len())));
    }
    if store.initial_state().unwrap() != model.initial_state().unwrap() {
        return Some(format!(
            "initial state {:?} vs {:?}",
            store.initial_state(),
            model.initial_state()
        ));
    }
    if store.snapshot().unwrap() != model.snapshot().unwrap() {
        return Some(format!(
            "snapshot meta {:?} vs {:?}",
            store.snapshot().unwrap().meta,
            model.snapshot().unwrap().meta
        ));
    }
    None
}

/// Acknowledged entries of `model` that `store` does not hold intact.
fn lost_entries(store: &SledStorage, model: &MemStorage) -> u64 {
    let (first, last) = (model.first_index().unwrap(), model.last_index().unwrap());
    let want = model.entries(first, last + 1, u64::MAX).unwrap();
    want.iter()
        .filter(|e| {
            store.entries(e.index, e.index + 1, u64::MAX).ok().as_deref()
                != Some(&[(*e).clone()][..])
        })
        .count() as u64
}

/// The states the store may be in: the acknowledged ones, plus the in-flight operation applied
/// whole or (for an append) in part.
fn candidates(model: &MemStorage, pending: Option<&Op>) -> Vec<MemStorage> {
    let mut out = vec![model.deep_clone()];
    if let Some(op) = pending {
        let n = op.entries();
        let prefixes: Vec<Option<u64>> =
            if n > 1 { (1..=n).map(Some).collect() } else { vec![None] };
        for p in prefixes {
            let c = model.deep_clone();
            if op.apply(&c, p).is_ok() {
                out.push(c);
            }
        }
    }
    out
}

#[test]
fn crash() {
    let iters: u64 =
        std::env::var("RAFT_CRASH_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let seed: u64 =
        std::env::var("RAFT_CRASH_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
                as u64
        });
    println!(
        "crash: seed={seed} (RAFT_CRASH_SEED={seed} replays the same child seeds and kill delays)"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let exe = std::env::current_exe().unwrap();
    let mut rng = Rng::new(seed);
    let mut model = MemStorage::default();
    let (mut acked_entries, mut acked_ops, mut torn, mut in_flight_survived) =
        (0u64, 0u64, 0u64, 0u64);
    let started = Instant::now();
    for cycle in 0..iters {
        let mut child = Command::new(&exe)
            .args(["crash_child_process", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR_ENV, &path)
            .env(CHILD_SEED_ENV, rng.next_u64().to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout).lines().map_while(Result::ok).collect::<Vec<_>>()
        });
        std::thread::sleep(Duration::from_millis(rng.next_u64() % 400));
        let exited_early = child.try_wait().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        let lines = reader.join().unwrap();
        if let Some(status) = exited_early {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            panic!("cycle {cycle}: child exited by itself ({status}) before the kill:\n{err}");
        }
        let mut pending: Option<Op> = None;
        for line in &lines {
            if line.starts_with("begin ") {
                pending = Some(Op::parse(line).unwrap_or_else(|| panic!("bad line {line:?}")));
            } else if line == "ack" {
                let op = pending.take().expect("ack without begin");
                op.apply(&model, None).unwrap();
                acked_ops += 1;
                acked_entries += op.entries();
            }
        }
        let store = SledStorage::open(&path, options()).unwrap_or_else(|e| {
            panic!("cycle {cycle} (seed {seed}): reopen after SIGKILL failed: {e}")
        });
        torn += store.recovery_report().torn_tail.is_some() as u64;
        let cands = candidates(&model, pending.as_ref());
        match cands.iter().position(|c| differences(&store, c).is_none()) {
            Some(i) => {
                in_flight_survived += (i > 0) as u64;
                model = cands[i].deep_clone();
            }
            None => {
                let lost = lost_entries(&store, &model);
                let why = differences(&store, &model).unwrap();
                println!("crash: cycles={} acked={acked_entries} lost={lost}", cycle + 1);
                panic!(
                    "cycle {cycle} (seed {seed}): store matches no acknowledged state: {why}; in flight: {pending:?}"
                );
            }
        }
    }
    println!(
        "crash: {acked_ops} acknowledged operations, {in_flight_survived} in-flight ones survived whole or in part, \
         {torn} torn tails trimmed, {:.1}s",
        started.elapsed().as_secs_f64()
    );
    println!("crash: cycles={iters} acked={acked_entries} lost=0");
}
