//! Restart time with a large log: builds a store of `--entries` entries, then times opening it
//! (which verifies every checksum and rebuilds the in-memory index).
//!
//! ```text
//! cargo run --release -p raft-storage --example restart_bench -- --entries 1000000
//!     [--entry-bytes 256] [--batch 1000] [--opens 5] [--dir PATH] [--cold]
//! ```
//!
//! `--cold` drops the page cache before each open (`/proc/sys/vm/drop_caches`, needs root).

#![allow(clippy::print_stdout)]

use std::time::Instant;

use bytes::Bytes;
use raft_core::{Entry, EntryKind, LogStore, Storage};
use raft_storage::{SledStorage, StorageOptions};

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn drop_caches() -> bool {
    std::fs::write("/proc/sys/vm/drop_caches", "3\n").is_ok()
}

fn main() {
    let (mut entries, mut entry_bytes, mut batch, mut opens, mut dir, mut cold) =
        (1_000_000u64, 256usize, 1000u64, 5, None, false);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--entries" => entries = value().parse().expect("--entries"),
            "--entry-bytes" => entry_bytes = value().parse().expect("--entry-bytes"),
            "--batch" => batch = value().parse().expect("--batch"),
            "--opens" => opens = value().parse().expect("--opens"),
            "--dir" => dir = Some(std::path::PathBuf::from(value())),
            "--cold" => cold = true,
            other => panic!("unknown flag {other}"),
        }
    }
    let tmp;
    let dir = match dir {
        Some(d) => d,
        None => {
            tmp = tempfile::tempdir_in(std::env::current_dir().unwrap()).unwrap();
            tmp.path().join("store")
        }
    };
    let options = StorageOptions::new(1, 1);
    let store = SledStorage::open(&dir, options.clone()).expect("open");
    let payload = Bytes::from(vec![0x3Cu8; entry_bytes]);
    let started = Instant::now();
    let mut next = store.last_index().unwrap() + 1;
    while next <= entries {
        let to = (next + batch - 1).min(entries);
        let es: Vec<Entry> = (next..=to)
            .map(|index| Entry { index, term: 1, kind: EntryKind::Normal, data: payload.clone() })
            .collect();
        store.append_entries(&es).unwrap();
        store.sync().unwrap();
        next = to + 1;
    }
    println!(
        "built entries={entries} entry_bytes={entry_bytes} secs={:.1} disk_bytes={}",
        started.elapsed().as_secs_f64(),
        store.disk_usage_bytes()
    );
    store.close().unwrap();
    drop(store);
    let mut times = Vec::new();
    for i in 0..opens {
        let dropped = cold && drop_caches();
        let t = Instant::now();
        let store = SledStorage::open(&dir, options.clone()).expect("reopen");
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(store.last_index().unwrap(), entries);
        let report = store.recovery_report();
        println!(
            "open {i}: secs={secs:.3} cache={} segments={} entry_records={} clean_close={} rss_kib={}",
            if dropped { "cold" } else { "warm" },
            report.segments,
            report.entry_records,
            report.clean_close,
            rss_kib()
        );
        times.push(secs);
        // Alternate clean closes and crash-like drops (the tail is then checked leniently).
        if i % 2 == 0 {
            store.close().unwrap();
        }
    }
    times.sort_by(f64::total_cmp);
    println!(
        "restart_entries={entries} open_secs_min={:.3} open_secs_median={:.3} open_secs_max={:.3}",
        times[0],
        times[times.len() / 2],
        times[times.len() - 1]
    );
}
