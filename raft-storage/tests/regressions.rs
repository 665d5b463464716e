//! Regression tests for audited recovery bugs.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use raft_core::{
    ConfState, Entry, EntryKind, LogStore, Snapshot, SnapshotMeta, Storage, StorageError,
};
use raft_storage::{OpenError, SledStorage, StorageOptions};

fn opts() -> StorageOptions {
    StorageOptions {
        segment_size_bytes: 4 << 10,
        cache_capacity_bytes: 1 << 20,
        ..StorageOptions::new(1, 1)
    }
}

fn e(i: u64, t: u64, n: usize) -> Entry {
    Entry { index: i, term: t, kind: EntryKind::Normal, data: Bytes::from(vec![i as u8; n]) }
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

/// A crash image: the files as the page cache holds them (what SIGKILL leaves).
fn image(from: &Path, to: &Path) {
    for f in files(from) {
        let dest = to.join(f.strip_prefix(from).unwrap());
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(&f, &dest).unwrap();
    }
}

/// Compaction keeps the log from the segment holding live entry `index + 1`; that segment may
/// begin with since-overwritten entries whose predecessors were in the removed segments. Reopen
/// must not take them for a gap.
#[test]
fn compaction_after_an_overwrite_across_a_segment_boundary_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let s = SledStorage::open(dir.path(), opts()).unwrap();
    // Entries 1..=8 fill segment 1.
    for i in 1..=8 {
        s.append_entries(&[e(i, 1, 500)]).unwrap();
    }
    s.sync().unwrap();
    // 9..=10 rotate into segment 2, then 8'..=9' (term 2) overwrite them there.
    s.append_entries(&[e(9, 1, 10), e(10, 1, 10)]).unwrap();
    s.append_entries(&[e(8, 2, 10), e(9, 2, 10)]).unwrap();
    s.sync().unwrap();
    let conf_state = ConfState { voters: vec![1], ..Default::default() };
    let snap = Snapshot {
        meta: SnapshotMeta { index: 7, term: 1, conf_state },
        data: Bytes::from_static(b"sm"),
    };
    s.compact(&snap).unwrap();
    s.sync().unwrap();
    assert_eq!(s.last_index().unwrap(), 9);
    s.close().unwrap();
    drop(s);
    let s = SledStorage::open(dir.path(), opts()).expect("intact data must reopen");
    assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (8, 9));
    assert_eq!((s.term(8).unwrap(), s.term(9).unwrap()), (2, 2));
    let got = s.entries(8, 10, u64::MAX).unwrap();
    assert_eq!(got, vec![e(8, 2, 10), e(9, 2, 10)]);
}

/// A zeroed first sector of the active segment, with valid records after it, is damage to a
/// durable header, not an interrupted segment creation: refuse to open, never delete the file.
#[test]
fn zeroed_header_of_a_written_active_segment_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = SledStorage::open(dir.path(), opts()).unwrap();
    for i in 1..=8 {
        s.append_entries(&[e(i, 1, 500)]).unwrap();
        s.sync().unwrap();
    }
    for i in 9..=12 {
        s.append_entries(&[e(i, 1, 100)]).unwrap();
        s.sync().unwrap();
    }
    let crash = tempfile::tempdir().unwrap();
    image(dir.path(), crash.path());
    drop(s);
    let segs = files(&crash.path().join("wal"));
    assert!(segs.len() >= 2, "the test needs a sealed and an active segment");
    let seg = segs.last().unwrap();
    let mut b = std::fs::read(seg).unwrap();
    let before = b.len();
    b[..48].fill(0);
    std::fs::write(seg, &b).unwrap();
    let name = seg.file_name().unwrap().to_str().unwrap().to_owned();
    match SledStorage::open(crash.path(), opts()) {
        Ok(s2) => panic!(
            "opened: last_index={} (12 acked) removed={:?}",
            s2.last_index().unwrap(),
            s2.recovery_report().removed_files
        ),
        Err(OpenError::Storage(StorageError::Corrupt { what, .. })) => {
            assert!(what.contains(&name), "error must name {name}: {what}");
        }
        Err(other) => panic!("expected Corrupt, got {other}"),
    }
    assert_eq!(std::fs::metadata(seg).unwrap().len(), before as u64, "file must be kept");
}

/// Options with segments large enough to leave a preallocated tail after a few records.
fn prealloc_opts() -> StorageOptions {
    StorageOptions { segment_size_bytes: 64 << 10, ..opts() }
}

/// Offset past the last non-zero byte of `b`.
fn written_len(b: &[u8]) -> usize {
    b.iter().rposition(|&x| x != 0).map_or(0, |p| p + 1)
}

/// Appends and syncs `entries` one at a time, then returns a crash image of the store and
/// the path of its only (active, preallocated) segment in the image.
fn acked_image(entries: &[Entry]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let s = SledStorage::open(dir.path(), prealloc_opts()).unwrap();
    for en in entries {
        s.append_entries(std::slice::from_ref(en)).unwrap();
        s.sync().unwrap();
    }
    let crash = tempfile::tempdir().unwrap();
    image(dir.path(), crash.path());
    drop(s);
    let segs = files(&crash.path().join("wal"));
    assert_eq!(segs.len(), 1, "one segment: {segs:?}");
    let seg = segs[0].clone();
    (crash, seg)
}

/// The active segment is preallocated, so a crash leaves its records followed by zeros up to the
/// segment size. Reopening finds the end of the records where the zeros begin: every
/// acknowledged entry is there, nothing is reported torn, and appends go on after them.
#[test]
fn preallocated_active_segment_with_zeros_after_the_last_record_reopens() {
    let written: Vec<Entry> = (1..=20).map(|i| e(i, 1, 100)).collect();
    let (crash, seg) = acked_image(&written);
    let b = std::fs::read(&seg).unwrap();
    assert_eq!(b.len() as u64, prealloc_opts().segment_size_bytes, "segment is preallocated");
    assert!(written_len(&b) < b.len() / 2, "records, then zeros");
    let s = SledStorage::open(crash.path(), prealloc_opts()).expect("acknowledged data reopens");
    assert_eq!(s.recovery_report().torn_tail, None);
    assert_eq!(s.entries(1, 21, u64::MAX).unwrap(), written);
    s.append_entries(&[e(21, 2, 100)]).unwrap();
    s.sync().unwrap();
    let again = tempfile::tempdir().unwrap();
    image(crash.path(), again.path());
    drop(s);
    let len = std::fs::metadata(&seg).unwrap().len();
    assert_eq!(len, prealloc_opts().segment_size_bytes, "still preallocated after reopening");
    let s = SledStorage::open(again.path(), prealloc_opts()).unwrap();
    assert_eq!(s.recovery_report().torn_tail, None);
    let mut all = written.clone();
    all.push(e(21, 2, 100));
    assert_eq!(s.entries(1, 22, u64::MAX).unwrap(), all);
}

/// Zeros below the sync watermark are damage to acknowledged records, not the end of the
/// records of a preallocated segment: a zeroed record in the middle, or zeros from a record to
/// the end of the file, refuse the open, naming the file and offset, and leave the file as is.
#[test]
fn zeroed_record_below_the_watermark_is_refused() {
    let written: Vec<Entry> = (1..=20).map(|i| e(i, 1, 100)).collect();
    let (crash, seg) = acked_image(&written);
    let pristine = std::fs::read(&seg).unwrap();
    // Entry 10's payload is 100 bytes of 10; its record starts 12 + 18 bytes before it.
    let payload = pristine.windows(100).position(|w| w.iter().all(|&x| x == 10)).unwrap();
    let (start, end) = (payload - 30, payload + 100);
    let name = seg.file_name().unwrap().to_str().unwrap().to_owned();
    for (damage, to) in
        [("record of entry 10 zeroed", end), ("zeros from entry 10 on", pristine.len())]
    {
        let mut b = pristine.clone();
        b[start..to].fill(0);
        std::fs::write(&seg, &b).unwrap();
        match SledStorage::open(crash.path(), prealloc_opts()) {
            Ok(s) => panic!("{damage}: opened with last_index={}", s.last_index().unwrap()),
            Err(OpenError::Storage(StorageError::Corrupt { what, detail })) => {
                let at = format!("offset {start}");
                assert!(what.contains(&name) && what.contains(&at), "{damage}: {what}: {detail}");
            }
            Err(other) => panic!("{damage}: expected Corrupt, got {other}"),
        }
        assert_eq!(std::fs::read(&seg).unwrap(), b, "{damage}: the file must be kept as is");
    }
}
