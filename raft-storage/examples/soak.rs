//! Sustained append load with periodic compaction: prints disk use and resident memory over time.
//!
//! ```text
//! cargo run --release -p raft-storage --example soak -- [--seconds 60] [--batch-size 64]
//!     [--entry-bytes 256] [--compact-every 100000] [--keep 10000] [--snapshot-bytes 1048576]
//!     [--cache-bytes 16777216] [--segment-bytes 67108864] [--dir PATH]
//! ```
//!
//! Every `--compact-every` entries the log is compacted to `--keep` entries behind the last one,
//! with a snapshot of `--snapshot-bytes`. Disk use should level off at about the kept entries plus
//! one or two segments plus the snapshot; resident memory at the sled cache plus the index.

#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use raft_core::{Entry, EntryKind, LogStore, Snapshot, SnapshotMeta, Storage};
use raft_storage::{SledStorage, StorageOptions};

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

struct Args {
    seconds: u64,
    batch_size: u64,
    entry_bytes: usize,
    compact_every: u64,
    keep: u64,
    snapshot_bytes: usize,
    cache_bytes: u64,
    segment_bytes: u64,
    dir: Option<String>,
}

fn parse_args() -> Args {
    let mut a = Args {
        seconds: 60,
        batch_size: 64,
        entry_bytes: 256,
        compact_every: 100_000,
        keep: 10_000,
        snapshot_bytes: 1 << 20,
        cache_bytes: 16 << 20,
        segment_bytes: 64 << 20,
        dir: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--seconds" => a.seconds = value().parse().expect("--seconds"),
            "--batch-size" => a.batch_size = value().parse().expect("--batch-size"),
            "--entry-bytes" => a.entry_bytes = value().parse().expect("--entry-bytes"),
            "--compact-every" => a.compact_every = value().parse().expect("--compact-every"),
            "--keep" => a.keep = value().parse().expect("--keep"),
            "--snapshot-bytes" => a.snapshot_bytes = value().parse().expect("--snapshot-bytes"),
            "--cache-bytes" => a.cache_bytes = value().parse().expect("--cache-bytes"),
            "--segment-bytes" => a.segment_bytes = value().parse().expect("--segment-bytes"),
            "--dir" => a.dir = Some(value()),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

fn main() {
    let args = parse_args();
    let tmp;
    let dir = match &args.dir {
        Some(d) => std::path::PathBuf::from(d),
        None => {
            tmp = tempfile::tempdir_in(std::env::current_dir().unwrap()).unwrap();
            tmp.path().join("store")
        }
    };
    let options = StorageOptions {
        cache_capacity_bytes: args.cache_bytes,
        segment_size_bytes: args.segment_bytes,
        ..StorageOptions::new(1, 1)
    };
    let store = SledStorage::open(&dir, options).expect("open");
    let payload = Bytes::from(vec![0x77u8; args.entry_bytes]);
    let snapshot_data = Bytes::from(vec![0x11u8; args.snapshot_bytes]);
    println!(
        "soak: cache_bytes={} segment_bytes={} rss_kib_at_start={}",
        args.cache_bytes,
        args.segment_bytes,
        rss_kib()
    );
    let started = Instant::now();
    let mut next_report = Duration::from_secs(5);
    let (mut next, mut since_compact, mut compactions) = (1u64, 0u64, 0u64);
    let (mut max_disk, mut max_rss) = (0u64, 0u64);
    while started.elapsed() < Duration::from_secs(args.seconds) {
        let es: Vec<Entry> = (next..next + args.batch_size)
            .map(|index| Entry { index, term: 1, kind: EntryKind::Normal, data: payload.clone() })
            .collect();
        store.append_entries(&es).unwrap();
        store.sync().unwrap();
        next += args.batch_size;
        since_compact += args.batch_size;
        if since_compact >= args.compact_every {
            let index = next - 1 - args.keep.min(next - 1);
            let snap = Snapshot {
                meta: SnapshotMeta { index, term: 1, ..Default::default() },
                data: snapshot_data.clone(),
            };
            store.compact(&snap).unwrap();
            since_compact = 0;
            compactions += 1;
        }
        if started.elapsed() >= next_report {
            next_report += Duration::from_secs(5);
            let (disk, rss) = (store.disk_usage_bytes(), rss_kib());
            max_disk = max_disk.max(disk);
            max_rss = max_rss.max(rss);
            println!(
                "t={:>3}s entries={} first_index={} last_index={} compactions={compactions} disk_bytes={disk} rss_kib={rss}",
                started.elapsed().as_secs(),
                next - 1,
                store.first_index().unwrap(),
                store.last_index().unwrap()
            );
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "soak: entries={} secs={secs:.1} entries_per_s={:.0} compactions={compactions} max_disk_bytes={max_disk} \
         max_rss_kib={max_rss} final_disk_bytes={} stats={:?}",
        next - 1,
        (next - 1) as f64 / secs,
        store.disk_usage_bytes(),
        store.stats()
    );
}
