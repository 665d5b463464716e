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
