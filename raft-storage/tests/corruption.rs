//! Corruption tests: bit flips and truncations at random offsets of every kind of file the store
//! keeps. For the files this crate writes (segments, snapshot data) every change must be refused
//! at open with a typed error. For sled's own files the store must either refuse to open or read
//! back exactly what was written: a flip in bytes sled does not use is harmless, wrong data never is.

#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};

use raft_core::testkit::rng::Rng;
use raft_core::testkit::storage_suite::{assert_same_reads, entries};
use raft_core::{
    ConfState, HardState, LogStore, MemStorage, Snapshot, SnapshotMeta, Storage, StorageError,
};
use raft_storage::{OpenError, SledStorage, StorageOptions};

fn options() -> StorageOptions {
    StorageOptions {
        segment_size_bytes: 8 << 10,
        cache_capacity_bytes: 1 << 20,
        ..StorageOptions::new(5, 2)
    }
}

/// Builds a store with sealed segments, an active one, a snapshot and a membership, and the
/// model of what it must read back. `clean` closes it cleanly; otherwise it is dropped after a
/// sync, as a crash would leave it.
fn build(dir: &Path, clean: bool) -> MemStorage {
    let model = MemStorage::default();
    let store = SledStorage::open(dir, options()).unwrap();
    for from in (1..=800).step_by(20) {
        let es = entries(from, from + 19, 1 + from / 100);
        store.append_entries(&es).unwrap();
        model.append_entries(&es).unwrap();
        let hs = HardState { term: 1 + from / 100, vote: Some(2), commit: from };
        store.save_hard_state(&hs).unwrap();
        model.save_hard_state(&hs).unwrap();
        store.sync().unwrap();
    }
    let cs = ConfState { voters: vec![1, 2, 3], ..Default::default() };
    store.save_conf_state(&cs).unwrap();
    model.save_conf_state(&cs).unwrap();
    let snap = Snapshot {
        meta: SnapshotMeta { index: 40, term: model.term(40).unwrap(), conf_state: cs },
        data: (0..150_000u32).map(|i| (i % 251) as u8).collect::<Vec<u8>>().into(),
    };
    store.compact(&snap).unwrap();
    LogStore::compact(&model, &snap).unwrap();
    // Past the watermark interval, so the last sync records the whole segment as durable.
    std::thread::sleep(std::time::Duration::from_millis(250));
    let es = entries(801, 810, 9);
    store.append_entries(&es).unwrap();
    model.append_entries(&es).unwrap();
    store.sync().unwrap();
    if clean {
        store.close().unwrap();
    }
    model
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            out.extend(files(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out.sort();
    out
}

fn copy_dir(from: &Path, to: &Path) {
    for f in files(from) {
        let dest = to.join(f.strip_prefix(from).unwrap());
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(&f, &dest).unwrap();
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Damage {
    Flip,
    Truncate,
}

/// What opening the damaged copy did.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Refused,
    /// Opened and read back exactly the model (the damaged bytes were unused).
    Intact,
}

fn damage_and_open(
    pristine: &Path,
    rel: &Path,
    damage: Damage,
    offset: u64,
    bit: u8,
    model: &MemStorage,
) -> Outcome {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(pristine, tmp.path());
    let path = tmp.path().join(rel);
    let mut bytes = std::fs::read(&path).unwrap();
    match damage {
        Damage::Flip => bytes[offset as usize] ^= 1 << bit,
        Damage::Truncate => bytes.truncate(offset as usize),
    }
    std::fs::write(&path, &bytes).unwrap();
    match SledStorage::open(tmp.path(), options()) {
        Err(OpenError::Storage(StorageError::Corrupt { what, detail })) => {
            assert!(!what.is_empty() && !detail.is_empty());
            Outcome::Refused
        }
        Err(OpenError::Storage(StorageError::Io(_))) => Outcome::Refused,
        Err(e) => panic!("{rel:?} {damage:?} at {offset}: unexpected error {e}"),
        Ok(store) => {
            // Either all reads are right, or a read reports the corruption: never wrong data.
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                assert_same_reads(&store, model)
            }));
            match r {
                Ok(()) => Outcome::Intact,
                Err(_) => panic!(
                    "{rel:?} {damage:?} at {offset} (bit {bit}): store opened and served wrong data"
                ),
            }
        }
    }
}

/// Which kind of file a path is, and whether this crate must detect every change to it.
fn kind(rel: &Path) -> (&'static str, bool) {
    let s = rel.to_string_lossy();
    if s.starts_with("wal/") {
        ("segment", true)
    } else if s.starts_with("snapshots/") {
        ("snapshot", true)
    } else {
        ("sled", false)
    }
}

fn run(clean: bool, trials_per_file: u64, seed: u64) {
    let pristine = tempfile::tempdir().unwrap();
    let model = build(pristine.path(), clean);
    let mut rng = Rng::new(seed);
    let all = files(pristine.path());
    let segments = all.iter().filter(|f| f.starts_with(pristine.path().join("wal"))).count();
    assert!(segments >= 4, "the store has sealed segments and an active one: {segments}");
    let mut summary = std::collections::BTreeMap::<(&str, Damage), (u64, u64)>::new();
    for file in &all {
        let rel = file.strip_prefix(pristine.path()).unwrap();
        let len = std::fs::metadata(file).unwrap().len();
        let (kind, strict) = kind(rel);
        if len == 0 {
            continue;
        }
        for damage in [Damage::Flip, Damage::Truncate] {
            for _ in 0..trials_per_file {
                let offset = rng.next_u64() % len;
                let bit = (rng.next_u64() % 8) as u8;
                let outcome = damage_and_open(pristine.path(), rel, damage, offset, bit, &model);
                if strict {
                    assert_eq!(
                        outcome,
                        Outcome::Refused,
                        "{rel:?} {damage:?} at {offset} (bit {bit}) undetected"
                    );
                }
                let e = summary.entry((kind, damage)).or_default();
                match outcome {
                    Outcome::Refused => e.0 += 1,
                    Outcome::Intact => e.1 += 1,
                }
            }
        }
    }
    for ((kind, damage), (refused, intact)) in summary {
        println!(
            "corruption (clean close: {clean}): {kind} {damage:?}: {refused} refused at open, {intact} opened \
             with every read intact, 0 served wrong data"
        );
    }
}

fn trials() -> u64 {
    std::env::var("RAFT_CORRUPTION_TRIALS").ok().and_then(|v| v.parse().ok()).unwrap_or(12)
}

#[test]
fn every_change_is_detected_after_a_clean_close() {
    run(true, trials(), 0xC0FFEE);
}

#[test]
fn every_change_is_detected_after_a_crash() {
    run(false, trials(), 0xBADD15C);
}

/// Zeroed sectors and cut records at the end of the last segment, as a power loss leaves them
/// after unacknowledged writes, are trimmed; the same damage before a later sync marker is not.
#[test]
fn torn_tails_are_trimmed_but_synced_damage_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStorage::open(dir.path(), StorageOptions::new(5, 2)).unwrap();
    store.append_entries(&entries(1, 50, 1)).unwrap();
    store.sync().unwrap();
    let seg = files(&dir.path().join("wal")).pop().unwrap();
    let synced_len = std::fs::metadata(&seg).unwrap().len() as usize;
    store.append_entries(&entries(51, 58, 1)).unwrap(); // not synced: may be lost
    drop(store);
    let written = std::fs::read(&seg).unwrap();
    // A power loss lost every unsynced sector: the unsynced region reads as zeros.
    let mut torn = written.clone();
    torn[synced_len..].fill(0);
    std::fs::write(&seg, &torn).unwrap();
    let store = SledStorage::open(dir.path(), StorageOptions::new(5, 2)).unwrap();
    assert!(store.recovery_report().torn_tail.is_some());
    assert_eq!(store.last_index().unwrap(), 50);
    assert_eq!(store.entries(1, 51, u64::MAX).unwrap(), entries(1, 50, 1));
    drop(store);
    // Only the last sector of the unsynced write never reached the disk: it reads as it was
    // before, zeros past the synced data.
    let mut torn = written.clone();
    let n = torn.len();
    let from = ((n - 1) / 512 * 512).max(synced_len);
    torn[from..].fill(0);
    std::fs::write(&seg, &torn).unwrap();
    let store = SledStorage::open(dir.path(), StorageOptions::new(5, 2)).unwrap();
    let report = store.recovery_report().torn_tail.clone().expect("a torn tail was trimmed");
    assert!(report.bytes > 0 && report.offset >= synced_len as u64, "{report:?}");
    let last = store.last_index().unwrap();
    assert!((50..58).contains(&last), "synced entries survive, the torn one does not: {last}");
    assert_eq!(store.entries(1, last + 1, u64::MAX).unwrap(), entries(1, last, 1));
    store.append_entries(&entries(last + 1, 51, 1)).unwrap();
    // Writes after the trim land on a clean tail, and a later sync marker vouches for them.
    store.append_entries(&entries(52, 60, 2)).unwrap();
    store.sync().unwrap();
    store.append_entries(&entries(61, 61, 2)).unwrap();
    store.sync().unwrap();
    drop(store);
    // Now zero a sector in the middle of synced data: the marker written after it proves it was
    // durable, so this is corruption, not a torn write.
    let bytes = std::fs::read(&seg).unwrap();
    let mut zeroed = bytes.clone();
    let mid = bytes.len() / 2 / 512 * 512;
    zeroed[mid..mid + 512].fill(0);
    std::fs::write(&seg, &zeroed).unwrap();
    let err = SledStorage::open(dir.path(), StorageOptions::new(5, 2)).unwrap_err();
    assert!(
        matches!(&err, OpenError::Storage(StorageError::Corrupt { what, .. }) if what.contains(".seg")),
        "{err}"
    );
}

/// A catalogue that lost its identity must not be bootstrapped over existing log files.
#[test]
fn missing_catalogue_is_not_rebootstrapped() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), true);
    std::fs::remove_dir_all(dir.path().join("catalogue")).unwrap();
    let err = SledStorage::open(dir.path(), options()).unwrap_err();
    assert!(err.to_string().contains("refusing to bootstrap"), "{err}");
}

/// A segment file missing from the middle of the log is named.
#[test]
fn missing_segment_is_named() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), true);
    let segs = files(&dir.path().join("wal"));
    std::fs::remove_file(&segs[1]).unwrap();
    let err = SledStorage::open(dir.path(), options()).unwrap_err().to_string();
    let name = segs[1].file_name().unwrap().to_string_lossy().into_owned();
    assert!(err.contains(&name), "{err}");
}
