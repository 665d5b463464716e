//! Appends durable batches and prints throughput, beside a raw "append 4 KiB + fdatasync" loop.
//!
//! ```text
//! cargo run --release -p raft-storage --example append_bench -- --batches 500 --batch-size 1
//!     [--entry-bytes 256] [--writers 1] [--raw] [--dir PATH] [--cache-bytes N] [--segment-bytes N]
//! ```
//!
//! Each batch is `append_entries` of `--batch-size` entries followed by `sync`; a batch is
//! acknowledged when `sync` returns. With `--writers W`, W threads do this at once (group commit
//! lets them share fdatasyncs). `--raw` also times a loop of 4 KiB `write` + `fdatasync` on a file
//! in the same directory, as many times as there are batches, alternating with the store in ten
//! rounds so that both meet the same disk conditions. Run it under
//! `strace -f -e trace=fsync,fdatasync` to see the syscalls behind `acked_batches`: each
//! group-commit round fdatasyncs the segment, then the sync watermark file
//! (`log_fdatasyncs`, `watermark_fdatasyncs`).

#![allow(clippy::print_stdout)]

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use raft_core::{Entry, EntryKind, LogStore, Storage};
use raft_storage::{SledStorage, StorageOptions};

struct Args {
    batches: u64,
    batch_size: u64,
    entry_bytes: usize,
    writers: u64,
    raw: bool,
    dir: Option<String>,
    cache_bytes: u64,
    segment_bytes: u64,
}

fn parse_args() -> Args {
    let mut a = Args {
        batches: 200,
        batch_size: 1,
        entry_bytes: 256,
        writers: 1,
        raw: false,
        dir: None,
        cache_bytes: 16 << 20,
        segment_bytes: 64 << 20,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--batches" => a.batches = value().parse().expect("--batches"),
            "--batch-size" => a.batch_size = value().parse().expect("--batch-size"),
            "--entry-bytes" => a.entry_bytes = value().parse().expect("--entry-bytes"),
            "--writers" => a.writers = value().parse().expect("--writers"),
            "--raw" => a.raw = true,
            "--dir" => a.dir = Some(value()),
            "--cache-bytes" => a.cache_bytes = value().parse().expect("--cache-bytes"),
            "--segment-bytes" => a.segment_bytes = value().parse().expect("--segment-bytes"),
            other => panic!("unknown flag {other}; see the example's header"),
        }
    }
    assert!(a.batches > 0 && a.batch_size > 0 && a.writers > 0, "counts must be positive");
    a
}

/// Times `n` appends of 4 KiB, each followed by fdatasync, in `dir`. Returns the seconds taken.
fn raw_loop(dir: &std::path::Path, n: u64) -> f64 {
    let path = dir.join("raw-append-4k.bin");
    let mut f = std::fs::File::create(&path).unwrap();
    let block = vec![0x5Au8; 4096];
    let started = Instant::now();
    for _ in 0..n {
        f.write_all(&block).unwrap();
        f.sync_data().unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    std::fs::remove_file(&path).unwrap();
    secs
}

fn main() {
    let args = parse_args();
    let tmp;
    let dir = match &args.dir {
        Some(d) => std::path::PathBuf::from(d),
        None => {
            tmp = tempfile::tempdir_in(std::env::current_dir().unwrap()).unwrap();
            tmp.path().to_path_buf()
        }
    };
    let options = StorageOptions {
        cache_capacity_bytes: args.cache_bytes,
        segment_size_bytes: args.segment_bytes,
        ..StorageOptions::new(1, 1)
    };
    let store = SledStorage::open(dir.join("store"), options).expect("open");
    let payload = Bytes::from(vec![0xA5u8; args.entry_bytes]);
    let next = Arc::new(Mutex::new(store.last_index().unwrap() + 1));
    let before = store.stats();
    // With --raw the two loops alternate in ten rounds, so that both meet the same disk weather.
    let rounds = if args.raw { 10.min(args.batches) } else { 1 };
    let (mut acked, mut secs, mut raw_secs) = (0u64, 0.0f64, 0.0f64);
    for round in 0..rounds {
        let batches = args.batches / rounds + u64::from(round < args.batches % rounds);
        let started = Instant::now();
        acked += run_store(&store, &next, &payload, batches, args.batch_size, args.writers);
        secs += started.elapsed().as_secs_f64();
        if args.raw {
            raw_secs += raw_loop(&dir, batches);
        }
    }
    let stats = store.stats();
    let entries = acked * args.batch_size;
    let mb = (entries * args.entry_bytes as u64) as f64 / 1e6;
    let fsyncs = stats.log_fsyncs - before.log_fsyncs;
    let watermark_fsyncs = stats.watermark_fsyncs - before.watermark_fsyncs;
    println!(
        "acked_batches={acked} batch_size={} writers={} entry_bytes={} entries={entries} secs={secs:.3} \
         batches_per_s={:.1} entries_per_s={:.0} mb_per_s={:.2} log_fdatasyncs={fsyncs} \
         watermark_fdatasyncs={watermark_fsyncs} entries_per_fdatasync={:.1} disk_bytes={}",
        args.batch_size,
        args.writers,
        args.entry_bytes,
        acked as f64 / secs,
        entries as f64 / secs,
        mb / secs,
        entries as f64 / fsyncs.max(1) as f64,
        store.disk_usage_bytes(),
    );
    if args.raw {
        let raw = args.batches as f64 / raw_secs;
        println!(
            "raw_appends={} raw_secs={raw_secs:.3} raw_appends_per_s={raw:.1} raw_mb_per_s={:.2} \
             ratio_batches_vs_raw={:.2}",
            args.batches,
            raw * 4096.0 / 1e6,
            (acked as f64 / secs) / raw
        );
    }
}

/// `batches` durable batches of `k` entries from `writers` threads; returns the acknowledged count.
fn run_store(
    store: &SledStorage,
    next: &Arc<Mutex<u64>>,
    payload: &Bytes,
    batches: u64,
    k: u64,
    writers: u64,
) -> u64 {
    let handles: Vec<_> = (0..writers)
        .map(|w| {
            let (store, next, payload) = (store.clone(), next.clone(), payload.clone());
            let mine = batches / writers + u64::from(w < batches % writers);
            std::thread::spawn(move || {
                let mut acked = 0u64;
                for _ in 0..mine {
                    {
                        let mut n = next.lock().unwrap();
                        let es: Vec<Entry> = (*n..*n + k)
                            .map(|index| Entry {
                                index,
                                term: 1,
                                kind: EntryKind::Normal,
                                data: payload.clone(),
                            })
                            .collect();
                        store.append_entries(&es).expect("append");
                        *n += k;
                    }
                    store.sync().expect("sync");
                    acked += 1;
                }
                acked
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).sum()
}
