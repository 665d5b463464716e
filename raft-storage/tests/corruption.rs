//! Corruption tests: bit flips and truncations at random offsets of every kind of file the store
//! keeps. For the files this crate writes (segments, snapshot data, the sync watermark) every
//! change must be refused at open with a typed error. For sled's own files the store must either
//! refuse to open or read back exactly what was written: a flip in bytes sled does not use is
//! harmless, wrong data never is.
//!
//! The active segment of a crash image is preallocated: past its records it holds zeros that were
//! never written. Damage there cannot hide or alter data (it reads like a torn, unsynced write
//! would), so those trials only require that the store never serves wrong data; every other byte
//! of every segment is checked strictly.
//!
//! The "after a crash" stores are real crash images: a child process (this test binary,
//! re-executed) writes and syncs, then leaves with `std::process::exit` without closing or
//! dropping the store, so the files are exactly what a SIGKILL after the last acknowledged `sync`
//! leaves behind.

#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::process::Command;

use raft_core::testkit::rng::Rng;
use raft_core::testkit::storage_suite::{assert_same_reads, entries};
use raft_core::{
    ConfState, HardState, LogStore, MemStorage, Snapshot, SnapshotMeta, Storage, StorageError,
};
use raft_storage::{OpenError, SledStorage, StorageOptions};

const CHILD_DIR_ENV: &str = "RAFT_CORRUPTION_CHILD_DIR";
const CHILD_SCENARIO_ENV: &str = "RAFT_CORRUPTION_CHILD_SCENARIO";

fn options() -> StorageOptions {
    StorageOptions {
        segment_size_bytes: 8 << 10,
        cache_capacity_bytes: 1 << 20,
        ..StorageOptions::new(5, 2)
    }
}

/// Writes a log with sealed segments, an active one, a snapshot and a membership to `s`, syncing
/// after every step; the same calls on a `MemStorage` give the model to read back.
fn write_log<S: LogStore>(s: &S) {
    for from in (1..=800).step_by(20) {
        s.append_entries(&entries(from, from + 19, 1 + from / 100)).unwrap();
        s.save_hard_state(&HardState { term: 1 + from / 100, vote: Some(2), commit: from })
            .unwrap();
        s.sync().unwrap();
    }
    let cs = ConfState { voters: vec![1, 2, 3], ..Default::default() };
    s.save_conf_state(&cs).unwrap();
    let snap = Snapshot {
        meta: SnapshotMeta { index: 40, term: s.term(40).unwrap(), conf_state: cs },
        data: (0..150_000u32).map(|i| (i % 251) as u8).collect::<Vec<u8>>().into(),
    };
    s.compact(&snap).unwrap();
    s.append_entries(&entries(801, 810, 9)).unwrap();
    s.sync().unwrap();
}

/// What the child process writes before it "crashes".
fn child_scenario(scenario: &str, dir: &Path) {
    let store = match scenario {
        "log" => {
            let store = SledStorage::open(dir, options()).unwrap();
            write_log(&store);
            store
        }
        "acked_tail" | "unsynced_tail" => {
            let store = SledStorage::open(dir, StorageOptions::new(5, 2)).unwrap();
            for from in (1..=50).step_by(10) {
                store.append_entries(&entries(from, from + 9, 1)).unwrap();
                store.sync().unwrap();
            }
            if scenario == "unsynced_tail" {
                store.append_entries(&entries(51, 58, 1)).unwrap(); // never synced
            }
            store
        }
        other => panic!("unknown scenario {other}"),
    };
    // Leave without closing or dropping the store: what a crash after the last write leaves.
    let _ = &store;
    std::process::exit(0);
}

/// Not a test of its own: the entry point of the child process that makes crash images.
#[test]
fn corruption_child_process() {
    if let Ok(dir) = std::env::var(CHILD_DIR_ENV) {
        let scenario = std::env::var(CHILD_SCENARIO_ENV).unwrap();
        child_scenario(&scenario, Path::new(&dir));
    }
}

/// Runs `scenario` in a child process on `dir` and returns once it has exited.
fn crash_image(scenario: &str, dir: &Path) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["corruption_child_process", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR_ENV, dir)
        .env(CHILD_SCENARIO_ENV, scenario)
        .output()
        .unwrap();
    assert!(out.status.success(), "child {scenario}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Builds the store of [`write_log`] in `dir` and returns the model of what it must read back.
/// `clean` closes it cleanly; otherwise it is the crash image a child process leaves.
fn build(dir: &Path, clean: bool) -> MemStorage {
    if clean {
        let store = SledStorage::open(dir, options()).unwrap();
        write_log(&store);
        store.close().unwrap();
    } else {
        crash_image("log", dir);
    }
    let model = MemStorage::default();
    write_log(&model);
    model
}

/// Offset past the last non-zero byte: the records of a preallocated segment end at or after it
/// (at it unless the last record ends in zeros), and only never-written zeros follow.
fn written_len(bytes: &[u8]) -> usize {
    bytes.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1)
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
    } else if s == "sync-watermark" {
        ("watermark", true)
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
        // Strict trials cover the written bytes; a segment's preallocated zeros get their own.
        let data_len = match kind {
            "segment" => written_len(&std::fs::read(file).unwrap()) as u64,
            _ => len,
        };
        for damage in [Damage::Flip, Damage::Truncate] {
            for _ in 0..trials_per_file.div_ceil(4) {
                if data_len == len {
                    break;
                }
                let offset = data_len + rng.next_u64() % (len - data_len);
                let bit = (rng.next_u64() % 8) as u8;
                // Never wrong data (checked inside); refusing or opening intact are both fine.
                let outcome = damage_and_open(pristine.path(), rel, damage, offset, bit, &model);
                let e = summary.entry(("segment preallocated tail", damage)).or_default();
                match outcome {
                    Outcome::Refused => e.0 += 1,
                    Outcome::Intact => e.1 += 1,
                }
            }
            for _ in 0..trials_per_file {
                let offset = rng.next_u64() % data_len;
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

/// The crash image of `scenario` in a new directory, and the path of its only segment.
fn tail_image(scenario: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    crash_image(scenario, dir.path());
    let segs = files(&dir.path().join("wal"));
    assert_eq!(segs.len(), 1, "one segment: {segs:?}");
    let seg = segs[0].clone();
    (dir, seg)
}

/// Asserts that opening `dir` is refused as corrupt, naming `seg` and an offset.
fn assert_refused(dir: &Path, seg: &Path, damage: &str) {
    let name = seg.file_name().unwrap().to_string_lossy().into_owned();
    match SledStorage::open(dir, StorageOptions::new(5, 2)) {
        Err(OpenError::Storage(StorageError::Corrupt { what, detail })) => {
            assert!(what.contains(&name) && what.contains("offset"), "{damage}: {what}: {detail}");
        }
        Err(e) => panic!("{damage}: expected Corrupt naming {name}, got {e}"),
        Ok(s) => panic!(
            "{damage}: opened acknowledged data as a torn tail: last_index={} (50 acked), {:?}",
            s.last_index().unwrap(),
            s.recovery_report().torn_tail
        ),
    }
}

/// After a crash, damage to the last acknowledged records (those of the very last `sync`) is
/// refused, not trimmed as a torn tail: the sync watermark file made the synced length durable
/// before that `sync` returned.
#[test]
fn damage_to_the_last_acknowledged_records_is_refused_after_a_crash() {
    let (dir, seg) = tail_image("acked_tail");
    let pristine = std::fs::read(&seg).unwrap();
    // Undamaged, the image opens with every acknowledged entry (checked on a copy: an open that
    // repairs anything moves the watermark).
    let copy = tempfile::tempdir().unwrap();
    copy_dir(dir.path(), copy.path());
    let store = SledStorage::open(copy.path(), StorageOptions::new(5, 2)).unwrap();
    assert_eq!(store.entries(1, 51, u64::MAX).unwrap(), entries(1, 50, 1));
    assert_eq!(store.recovery_report().torn_tail, None);
    drop(store);
    // The last record is entry 50: 12 bytes of record header, 18 of entry fields, its payload.
    let last_len = 12 + 18 + entries(50, 50, 1)[0].data.len();
    // The segment is preallocated: its records end where its zeros begin.
    let n = written_len(&pristine);
    let last = n - last_len;
    let mut damages: Vec<(String, Vec<u8>)> = Vec::new();
    for cut in [1, 2, last_len / 2, last_len - 1, last_len, last_len + 1] {
        damages
            .push((format!("truncated by {cut} bytes of records"), pristine[..n - cut].to_vec()));
        let mut b = pristine.clone();
        b[n - cut..n].fill(0);
        damages.push((format!("last {cut} bytes of records zeroed"), b));
    }
    for at in [last, last + 5, last + 12, last + 20, n - 1] {
        let mut b = pristine.clone();
        b[at] ^= 0x10;
        damages.push((format!("bit flip at offset {at}"), b));
    }
    let mut b = pristine.clone();
    b[(n - 1) / 512 * 512..].fill(0);
    damages.push(("last sector zeroed".to_string(), b));
    for (damage, bytes) in damages {
        std::fs::write(&seg, &bytes).unwrap();
        assert_refused(dir.path(), &seg, &damage);
        assert_eq!(std::fs::read(&seg).unwrap(), bytes, "{damage}: the file must be kept as is");
    }
}

/// Zeroed sectors and cut records at the end of the last segment, as a power loss leaves them
/// after unacknowledged writes, are trimmed and reported; the acknowledged entries survive.
#[test]
fn unsynced_torn_tails_are_trimmed_after_a_crash() {
    let (image, image_seg) = tail_image("unsynced_tail");
    let written = std::fs::read(&image_seg).unwrap();
    // The unsynced batch (51..=58) is the last 8 records, followed by preallocated zeros.
    let end = written_len(&written);
    let unsynced_len = entries(51, 58, 1).iter().map(|e| 12 + 18 + e.data.len()).sum::<usize>();
    let synced_len = end - unsynced_len;
    let rel = image_seg.strip_prefix(image.path()).unwrap().to_path_buf();
    // Each trial starts from the crash image (an open that repairs also moves the watermark).
    let dir = tempfile::tempdir().unwrap();
    let seg = dir.path().join(&rel);
    let open = |bytes: &[u8]| {
        std::fs::remove_dir_all(dir.path()).unwrap();
        copy_dir(image.path(), dir.path());
        std::fs::write(&seg, bytes).unwrap();
        SledStorage::open(dir.path(), StorageOptions::new(5, 2)).unwrap()
    };
    // Cut anywhere in the unsynced batch: it was never acknowledged.
    for cut in [end - 1, synced_len + unsynced_len / 2, synced_len + 3] {
        let store = open(&written[..cut]);
        let report = store.recovery_report().torn_tail.clone().expect("a torn tail was trimmed");
        assert!(report.offset >= synced_len as u64 && report.bytes > 0, "{report:?}");
        let last = store.last_index().unwrap();
        assert!((50..58).contains(&last), "acked entries survive, the torn one does not: {last}");
        assert_eq!(store.entries(1, last + 1, u64::MAX).unwrap(), entries(1, last, 1));
        drop(store);
    }
    // A power loss lost every unsynced sector: the unsynced region reads as zeros, just like the
    // preallocated space after it, so the records simply end at the watermark.
    let mut torn = written.clone();
    torn[synced_len..].fill(0);
    let store = open(&torn);
    assert_eq!(store.recovery_report().torn_tail, None);
    assert_eq!(store.entries(1, 51, u64::MAX).unwrap(), entries(1, 50, 1));
    assert_eq!(store.last_index().unwrap(), 50);
    drop(store);
    // Only the last sector of the unsynced write never reached the disk.
    let mut torn = written.clone();
    let from = ((end - 1) / 512 * 512).max(synced_len);
    torn[from..].fill(0);
    let store = open(&torn);
    let report = store.recovery_report().torn_tail.clone().expect("a torn tail was trimmed");
    assert!(report.bytes > 0 && report.offset >= synced_len as u64, "{report:?}");
    let last = store.last_index().unwrap();
    assert!((50..58).contains(&last), "synced entries survive, the torn one does not: {last}");
    // Writes after the trim land on a clean tail, and the watermark covers them once synced.
    store.append_entries(&entries(last + 1, 61, 2)).unwrap();
    store.sync().unwrap();
    drop(store);
    let bytes = std::fs::read(&seg).unwrap();
    let end = written_len(&bytes);
    std::fs::write(&seg, &bytes[..end - 1]).unwrap();
    assert_refused(dir.path(), &seg, "acknowledged tail cut after the repair");
    // A zeroed sector in the middle of synced data is corruption, not a torn write.
    let mut zeroed = bytes.clone();
    let mid = end / 2 / 512 * 512;
    zeroed[mid..mid + 512].fill(0);
    std::fs::write(&seg, &zeroed).unwrap();
    assert_refused(dir.path(), &seg, "zeroed sector in synced data");
}

/// The sync watermark file is required and checked like every file this crate writes.
#[test]
fn damaged_or_missing_watermark_file_is_refused() {
    let (dir, _) = tail_image("acked_tail");
    let path = dir.path().join("sync-watermark");
    let pristine = std::fs::read(&path).unwrap();
    for at in [0, 40, 511, 512, 4095, 4096, 4100, 4607, 4608, 8191] {
        let mut b = pristine.clone();
        b[at] ^= 1;
        std::fs::write(&path, &b).unwrap();
        let err = SledStorage::open(dir.path(), StorageOptions::new(5, 2)).unwrap_err();
        assert!(err.to_string().contains("sync-watermark"), "flip at {at}: {err}");
    }
    std::fs::remove_file(&path).unwrap();
    let err = SledStorage::open(dir.path(), StorageOptions::new(5, 2)).unwrap_err();
    assert!(
        err.to_string().contains("sync-watermark") && err.to_string().contains("missing"),
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
