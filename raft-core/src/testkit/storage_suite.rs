//! A conformance suite for [`LogStore`] implementations: every check of the trait contracts in
//! `storage.rs`, runnable against any store (in-memory here, sled in `raft-storage`).
//!
//! ```ignore
//! raft_core::testkit::storage_suite::run_all(|| MyStore::open_fresh());
//! ```
//!
//! Each check gets a fresh, empty store from the factory and panics with the check's name and
//! what differs. [`random_ops_match_model`] also compares a store with [`MemStorage`] over a
//! seeded random sequence of writes.

use bytes::Bytes;

use crate::StorageError;
use crate::storage::{LogStore, MemStorage, Storage};
use crate::testkit::rng::Rng;
use crate::types::{ConfState, Entry, EntryKind, HardState, Index, Snapshot, SnapshotMeta, Term};

/// An entry with a payload of `len` bytes derived from its index and term.
pub fn entry(index: Index, term: Term, len: usize) -> Entry {
    let kind = match index % 7 {
        0 => EntryKind::Empty,
        3 => EntryKind::ConfChange,
        _ => EntryKind::Normal,
    };
    let data = if kind == EntryKind::Empty {
        Bytes::new()
    } else {
        Bytes::from(
            (0..len)
                .map(|i| (index as usize * 31 + term as usize * 7 + i) as u8)
                .collect::<Vec<u8>>(),
        )
    };
    Entry { index, term, kind, data }
}

/// Entries `from..=to`, all of `term`, with payloads of a few different sizes.
pub fn entries(from: Index, to: Index, term: Term) -> Vec<Entry> {
    (from..=to).map(|i| entry(i, term, 1 + (i as usize * 13) % 50)).collect()
}

fn snapshot(index: Index, term: Term, voters: &[u64], data: &'static [u8]) -> Snapshot {
    Snapshot {
        meta: SnapshotMeta {
            index,
            term,
            conf_state: ConfState { voters: voters.to_vec(), index, ..Default::default() },
        },
        data: Bytes::from_static(data),
    }
}

fn all<S: LogStore>(s: &S) -> Vec<Entry> {
    let (first, last) = (s.first_index().unwrap(), s.last_index().unwrap());
    s.entries(first, last + 1, u64::MAX).unwrap()
}

/// One named check of the suite.
type Check<S> = (&'static str, fn(&S));

/// Runs every check, each on a fresh store from `make`.
pub fn run_all<S: LogStore>(mut make: impl FnMut() -> S) {
    let checks: [Check<S>; 19] = [
        ("empty_log", empty_log),
        ("append_then_read", append_then_read),
        ("append_empty_is_noop", append_empty_is_noop),
        ("append_truncates_conflicting_suffix", append_truncates_conflicting_suffix),
        ("append_rejects_gap", append_rejects_gap),
        ("append_rejects_non_contiguous_batch", append_rejects_non_contiguous_batch),
        ("append_below_first_index_is_refused", append_below_first_index_is_refused),
        ("entries_range_errors", entries_range_errors),
        ("entries_byte_limit", entries_byte_limit),
        ("term_bounds", term_bounds),
        ("hard_state_round_trip", hard_state_round_trip),
        ("conf_state_round_trip", conf_state_round_trip),
        ("compact_discards_prefix", compact_discards_prefix),
        ("compact_refuses_bad_snapshots", compact_refuses_bad_snapshots),
        ("compact_to_last_then_append", compact_to_last_then_append),
        ("install_snapshot_beyond_log", install_snapshot_beyond_log),
        ("install_snapshot_inside_log", install_snapshot_inside_log),
        ("install_older_snapshot_is_refused", install_older_snapshot_is_refused),
        ("random_ops_match_model", |s| random_ops_match_model(s, 1, 300)),
    ];
    for (name, check) in checks {
        let store = make();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&store)));
        if let Err(panic) = r {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("storage conformance check `{name}` failed: {msg}");
        }
    }
}

/// A new store: empty log at 0, default hard state, no snapshot, typed errors around it.
pub fn empty_log<S: LogStore>(s: &S) {
    assert_eq!(s.first_index().unwrap(), 1);
    assert_eq!(s.last_index().unwrap(), 0);
    assert_eq!(s.term(0).unwrap(), 0);
    assert_eq!(s.term(1), Err(StorageError::Unavailable { index: 1, last_index: 0 }));
    assert_eq!(s.entries(1, 1, u64::MAX).unwrap(), vec![]);
    assert!(matches!(s.entries(0, 1, u64::MAX), Err(StorageError::Compacted { .. })));
    assert!(matches!(s.entries(1, 2, u64::MAX), Err(StorageError::Unavailable { .. })));
    assert_eq!(s.snapshot().unwrap(), Snapshot::default());
    assert_eq!(s.initial_state().unwrap().hard_state, HardState::default());
    s.sync().unwrap();
}

/// Appended entries read back exactly, whole and in sub-ranges.
pub fn append_then_read<S: LogStore>(s: &S) {
    let es = entries(1, 20, 1);
    s.append_entries(&es[..10]).unwrap();
    s.append_entries(&es[10..]).unwrap();
    s.sync().unwrap();
    assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (1, 20));
    assert_eq!(all(s), es);
    assert_eq!(s.entries(5, 9, u64::MAX).unwrap(), es[4..8].to_vec());
    assert_eq!(s.entries(20, 21, u64::MAX).unwrap(), es[19..].to_vec());
    for e in &es {
        assert_eq!(s.term(e.index).unwrap(), e.term);
    }
}

/// Appending nothing changes nothing.
pub fn append_empty_is_noop<S: LogStore>(s: &S) {
    s.append_entries(&entries(1, 3, 1)).unwrap();
    s.append_entries(&[]).unwrap();
    assert_eq!(s.last_index().unwrap(), 3);
}

/// An append discards every entry at or after its first index.
pub fn append_truncates_conflicting_suffix<S: LogStore>(s: &S) {
    s.append_entries(&entries(1, 5, 1)).unwrap();
    let new = entries(3, 4, 2);
    s.append_entries(&new).unwrap();
    assert_eq!(s.last_index().unwrap(), 4);
    assert_eq!(s.term(2).unwrap(), 1);
    assert_eq!(s.term(3).unwrap(), 2);
    assert_eq!(s.entries(3, 5, u64::MAX).unwrap(), new);
    assert!(matches!(s.term(5), Err(StorageError::Unavailable { .. })));
    // Appending at last + 1 keeps everything; at last replaces only the last.
    s.append_entries(&entries(5, 6, 2)).unwrap();
    s.append_entries(&entries(6, 6, 3)).unwrap();
    assert_eq!(s.last_index().unwrap(), 6);
    assert_eq!(s.term(6).unwrap(), 3);
    // Rewriting from the very first entry.
    s.append_entries(&entries(1, 2, 4)).unwrap();
    assert_eq!(all(s), entries(1, 2, 4));
}

/// An append leaving a gap is refused and changes nothing.
pub fn append_rejects_gap<S: LogStore>(s: &S) {
    s.append_entries(&entries(1, 5, 1)).unwrap();
    assert!(s.append_entries(&entries(7, 8, 1)).is_err());
    assert_eq!(all(s), entries(1, 5, 1));
}

/// A batch whose indices are not contiguous is refused and changes nothing.
pub fn append_rejects_non_contiguous_batch<S: LogStore>(s: &S) {
    s.append_entries(&entries(1, 5, 1)).unwrap();
    let bad = vec![entry(4, 2, 3), entry(6, 2, 3)];
    assert!(s.append_entries(&bad).is_err());
    assert_eq!(all(s), entries(1, 5, 1));
}

/// An append starting below `first_index` is refused and changes nothing.
pub fn append_below_first_index_is_refused<S: LogStore>(s: &S) {
    s.append_entries(&entries(1, 8, 1)).unwrap();
    s.compact(&snapshot(5, 1, &[1], b"s")).unwrap();
    assert!(s.append_entries(&entries(3, 9, 2)).is_err());
    assert_eq!(all(s), entries(6, 8, 1));
}

/// `entries` answers `Compacted` below the log and `Unavailable` beyond it.
pub fn entries_range_errors<S: LogStore>(s: &S) {
    s.append_entries(&entries(1, 10, 1)).unwrap();
    s.compact(&snapshot(4, 1, &[1], b"s")).unwrap();
    assert_eq!(s.entries(4, 6, u64::MAX), Err(StorageError::Compacted { index: 4 }));
    assert!(matches!(s.entries(6, 12, u64::MAX), Err(StorageError::Unavailable { .. })));
    assert_eq!(s.entries(7, 7, u64::MAX).unwrap(), vec![]);
    assert_eq!(s.entries(5, 11, u64::MAX).unwrap(), entries(5, 10, 1));
}

/// `max_bytes` stops early, counting `Entry::size_bytes`, but always returns one entry.
pub fn entries_byte_limit<S: LogStore>(s: &S) {
    let es = entries(1, 10, 1);
    s.append_entries(&es).unwrap();
    assert_eq!(s.entries(1, 11, 0).unwrap(), es[..1].to_vec());
    let two = es[0].size_bytes() + es[1].size_bytes();
    assert_eq!(s.entries(1, 11, two).unwrap(), es[..2].to_vec());
    assert_eq!(s.entries(1, 11, two + es[2].size_bytes() - 1).unwrap(), es[..2].to_vec());
    let total: u64 = es.iter().map(Entry::size_bytes).sum();
    assert_eq!(s.entries(1, 11, total).unwrap(), es);
    assert_eq!(s.entries(3, 11, 1).unwrap(), es[2..3].to_vec());
}

/// `term` answers from `first_index() - 1` to `last_index()`, with typed errors outside.
pub fn term_bounds<S: LogStore>(s: &S) {
    s.append_entries(&entries(1, 3, 1)).unwrap();
    s.append_entries(&entries(4, 6, 2)).unwrap();
    s.compact(&snapshot(3, 1, &[1], b"s")).unwrap();
    assert_eq!(s.term(3).unwrap(), 1);
    assert_eq!(s.term(4).unwrap(), 2);
    assert_eq!(s.term(2), Err(StorageError::Compacted { index: 2 }));
    assert_eq!(s.term(7), Err(StorageError::Unavailable { index: 7, last_index: 6 }));
}

/// The hard state reads back as saved, and a later save replaces it.
pub fn hard_state_round_trip<S: LogStore>(s: &S) {
    let hs = HardState { term: 3, vote: Some(2), commit: 0 };
    s.save_hard_state(&hs).unwrap();
    s.sync().unwrap();
    assert_eq!(s.initial_state().unwrap().hard_state, hs);
    s.append_entries(&entries(1, 4, 3)).unwrap();
    let hs2 = HardState { term: 4, vote: None, commit: 4 };
    s.save_hard_state(&hs2).unwrap();
    assert_eq!(s.initial_state().unwrap().hard_state, hs2);
}

/// The membership reads back as saved.
pub fn conf_state_round_trip<S: LogStore>(s: &S) {
    let cs = ConfState {
        voters: vec![1, 2, 3],
        learners: vec![4],
        voters_outgoing: vec![1, 2, 5],
        learners_next: vec![5],
        auto_leave: true,
        index: 7,
    };
    s.save_conf_state(&cs).unwrap();
    s.sync().unwrap();
    assert_eq!(s.initial_state().unwrap().conf_state, cs);
    let cs2 = ConfState { voters: vec![1], ..Default::default() };
    s.save_conf_state(&cs2).unwrap();
    assert_eq!(s.initial_state().unwrap().conf_state, cs2);
}

/// Compaction drops entries up to the snapshot, keeps its term and stores the snapshot.
pub fn compact_discards_prefix<S: LogStore>(s: &S) {
    s.append_entries(&entries(1, 5, 1)).unwrap();
    s.append_entries(&entries(6, 10, 2)).unwrap();
    let snap = snapshot(6, 2, &[1, 2], b"state at 6");
    s.compact(&snap).unwrap();
    s.sync().unwrap();
    assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (7, 10));
    assert_eq!(s.term(6).unwrap(), 2);
    assert_eq!(s.snapshot().unwrap(), snap);
    assert_eq!(all(s), entries(7, 10, 2));
    // Compacting again, further.
    let snap2 = snapshot(8, 2, &[1, 2], b"state at 8");
    s.compact(&snap2).unwrap();
    assert_eq!(s.first_index().unwrap(), 9);
    assert_eq!(s.snapshot().unwrap(), snap2);
    s.append_entries(&entries(11, 12, 3)).unwrap();
    assert_eq!(
        s.entries(9, 13, u64::MAX).unwrap(),
        [entries(9, 10, 2), entries(11, 12, 3)].concat()
    );
}

/// Compaction with a term the log disagrees with, or beyond the log, is refused.
pub fn compact_refuses_bad_snapshots<S: LogStore>(s: &S) {
    s.append_entries(&entries(1, 5, 1)).unwrap();
    assert!(s.compact(&snapshot(3, 2, &[1], b"x")).is_err());
    assert!(s.compact(&snapshot(9, 1, &[1], b"x")).is_err());
    assert_eq!(s.first_index().unwrap(), 1);
    assert_eq!(all(s), entries(1, 5, 1));
    assert_eq!(s.snapshot().unwrap(), Snapshot::default());
    s.compact(&snapshot(3, 1, &[1], b"x")).unwrap();
    assert!(s.compact(&snapshot(2, 1, &[1], b"older")).is_err());
    assert_eq!(s.snapshot().unwrap().meta.index, 3);
}

/// Compacting the whole log leaves it empty after the snapshot, ready for the next index.
pub fn compact_to_last_then_append<S: LogStore>(s: &S) {
    s.append_entries(&entries(1, 5, 1)).unwrap();
    s.compact(&snapshot(5, 1, &[1], b"all")).unwrap();
    assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (6, 5));
    assert_eq!(s.term(5).unwrap(), 1);
    assert_eq!(s.entries(6, 6, u64::MAX).unwrap(), vec![]);
    s.append_entries(&entries(6, 7, 2)).unwrap();
    assert_eq!(all(s), entries(6, 7, 2));
}

/// A snapshot beyond the log replaces it: empty after the snapshot, its membership adopted.
pub fn install_snapshot_beyond_log<S: LogStore>(s: &S) {
    s.append_entries(&entries(1, 5, 1)).unwrap();
    let hs = HardState { term: 3, vote: Some(1), commit: 5 };
    s.save_hard_state(&hs).unwrap();
    let snap = snapshot(10, 3, &[1, 2, 3], b"leader's state");
    s.install_snapshot(&snap).unwrap();
    s.sync().unwrap();
    assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (11, 10));
    assert_eq!(s.term(10).unwrap(), 3);
    assert!(matches!(s.term(5), Err(StorageError::Compacted { .. })));
    let init = s.initial_state().unwrap();
    assert_eq!(init.conf_state, snap.meta.conf_state);
    assert_eq!(init.hard_state, hs);
    assert_eq!(s.snapshot().unwrap(), snap);
    assert!(s.append_entries(&entries(10, 10, 3)).is_err());
    s.append_entries(&entries(11, 12, 3)).unwrap();
    assert_eq!(all(s), entries(11, 12, 3));
}

/// A snapshot inside the log also discards every entry after it.
pub fn install_snapshot_inside_log<S: LogStore>(s: &S) {
    s.append_entries(&entries(1, 10, 1)).unwrap();
    let snap = snapshot(5, 1, &[2], b"mid");
    s.install_snapshot(&snap).unwrap();
    assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (6, 5));
    assert_eq!(s.term(5).unwrap(), 1);
    assert_eq!(s.snapshot().unwrap(), snap);
}

/// A snapshot older than the current one is refused with `Compacted`.
pub fn install_older_snapshot_is_refused<S: LogStore>(s: &S) {
    s.install_snapshot(&snapshot(10, 2, &[1], b"ten")).unwrap();
    assert!(matches!(
        s.install_snapshot(&snapshot(5, 1, &[1], b"five")),
        Err(StorageError::Compacted { .. })
    ));
    assert_eq!(s.snapshot().unwrap().meta.index, 10);
    // The same index again is accepted.
    s.install_snapshot(&snapshot(10, 2, &[1], b"ten again")).unwrap();
    assert_eq!(s.snapshot().unwrap().data, Bytes::from_static(b"ten again"));
}

/// Asserts that every read of `s` equals the same read of `model`.
pub fn assert_same_reads<S: LogStore>(s: &S, model: &MemStorage) {
    let first = model.first_index().unwrap();
    let last = model.last_index().unwrap();
    assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (first, last), "log bounds");
    assert_eq!(
        s.term(first - 1).unwrap(),
        model.term(first - 1).unwrap(),
        "term at the compaction point"
    );
    assert_eq!(
        s.entries(first, last + 1, u64::MAX).unwrap(),
        model.entries(first, last + 1, u64::MAX).unwrap()
    );
    assert_eq!(s.initial_state().unwrap(), model.initial_state().unwrap(), "initial state");
    assert_eq!(s.snapshot().unwrap(), model.snapshot().unwrap(), "snapshot");
}

/// Applies `ops` seeded random writes (appends with conflicts, hard and conf states, compactions,
/// snapshot installs, syncs) to `s` and to a [`MemStorage`], comparing all reads after each.
pub fn random_ops_match_model<S: LogStore>(s: &S, seed: u64, ops: usize) {
    let model = MemStorage::default();
    let mut rng = Rng::new(seed);
    let mut term = 1;
    for op in 0..ops {
        let first = model.first_index().unwrap();
        let last = model.last_index().unwrap();
        let roll = rng.next_u64() % 100;
        if roll < 60 {
            let from = if last >= first && roll < 15 {
                first + rng.next_u64() % (last - first + 1)
            } else {
                last + 1
            };
            if roll < 15 {
                term += 1;
            }
            let n = 1 + rng.next_u64() % 8;
            let es: Vec<Entry> =
                (from..from + n).map(|i| entry(i, term, (rng.next_u64() % 300) as usize)).collect();
            s.append_entries(&es).unwrap();
            model.append_entries(&es).unwrap();
        } else if roll < 75 {
            let hs = HardState {
                term,
                vote: rng.next_u64().is_multiple_of(2).then_some(1),
                commit: last,
            };
            s.save_hard_state(&hs).unwrap();
            model.save_hard_state(&hs).unwrap();
        } else if roll < 80 {
            let cs = ConfState { voters: vec![1, 1 + rng.next_u64() % 5], ..Default::default() };
            s.save_conf_state(&cs).unwrap();
            model.save_conf_state(&cs).unwrap();
        } else if roll < 90 && last >= first {
            let at = first + rng.next_u64() % (last - first + 1);
            let snap = Snapshot {
                meta: SnapshotMeta {
                    index: at,
                    term: model.term(at).unwrap(),
                    conf_state: ConfState::default(),
                },
                data: Bytes::from(format!("compacted at {at}, op {op}")),
            };
            s.compact(&snap).unwrap();
            LogStore::compact(&model, &snap).unwrap();
        } else if roll < 93 {
            let at = last.saturating_sub(3) + rng.next_u64() % 8;
            let at = at.max(model.snapshot().unwrap().meta.index);
            term += 1;
            let snap = Snapshot {
                meta: SnapshotMeta {
                    index: at,
                    term,
                    conf_state: ConfState { voters: vec![1, 2], ..Default::default() },
                },
                data: Bytes::from(format!("installed at {at}, op {op}")),
            };
            s.install_snapshot(&snap).unwrap();
            model.install_snapshot(&snap).unwrap();
        } else {
            s.sync().unwrap();
        }
        assert_same_reads(s, &model);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_storage_passes_the_suite() {
        run_all(MemStorage::default);
    }

    #[test]
    fn mem_storage_matches_itself_on_many_seeds() {
        for seed in 0..20 {
            random_ops_match_model(&MemStorage::default(), seed, 200);
        }
    }
}
