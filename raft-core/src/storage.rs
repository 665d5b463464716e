//! The storage contract the core reads from, and an in-memory implementation.
//!
//! The core never writes: it hands entries and hard state out in a [`crate::Ready`] and the driver
//! persists them. It reads the durable log back through [`Storage`].

use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::StorageError;
use crate::types::{ConfState, Entry, HardState, Index, NodeId, Snapshot, SnapshotMeta, Term};

/// What a node restarts from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InitialState {
    /// Durable term, vote and commit.
    pub hard_state: HardState,
    /// Durable membership.
    pub conf_state: ConfState,
}

/// Read access to the durable log.
///
/// Contract for implementations:
/// - Indices `first_index()..=last_index()` are present and contiguous; `term(first_index() - 1)`
///   is answerable (the term of the compaction point, 0 for an empty log).
/// - Everything returned has been made durable by the driver before the matching
///   `on_persisted` acknowledgement; reads never return data that was not written.
/// - Errors are typed: `Compacted` below `first_index`, `Unavailable` beyond `last_index`,
///   `Corrupt` for data that fails validation (never returned as if valid).
pub trait Storage {
    /// The hard state and membership to start from.
    fn initial_state(&self) -> Result<InitialState, StorageError>;
    /// Entries in `[low, high)`, stopping early once their total [`Entry::size_bytes`] would exceed
    /// `max_bytes`, but always returning at least one entry when `low < high`.
    fn entries(&self, low: Index, high: Index, max_bytes: u64) -> Result<Vec<Entry>, StorageError>;
    /// Term of the entry at `index`, for `first_index() - 1 <= index <= last_index()`.
    fn term(&self, index: Index) -> Result<Term, StorageError>;
    /// Index of the first entry still in the log (1 for a log that was never compacted).
    fn first_index(&self) -> Result<Index, StorageError>;
    /// Index of the last entry (`first_index() - 1` for an empty log).
    fn last_index(&self) -> Result<Index, StorageError>;
    /// The latest snapshot (metadata index 0 and empty data if there is none). Its index is
    /// `first_index() - 1` unless entries were kept below it.
    fn snapshot(&self) -> Result<Snapshot, StorageError>;
}

/// Write access to durable storage: what a driver uses to carry out a `Ready`.
///
/// Contract for implementations:
/// - Writes are visible to [`Storage`] reads at once, but durable only after [`LogStore::sync`]
///   returns `Ok`. A crash may lose any write not covered by a successful `sync`, but never
///   half of a record, and never anything a successful `sync` covered.
/// - Several writes may share one `sync` (group commit).
/// - Methods take `&self`: implementations are shared between the core's reads and the driver's
///   writes and synchronize internally.
/// - On error nothing is half-applied in a way later reads would return as valid.
pub trait LogStore: Storage {
    /// Appends `entries` (contiguous), first discarding every stored entry at or after
    /// `entries[0].index`, which must be in `first_index()..=last_index() + 1`.
    fn append_entries(&self, entries: &[Entry]) -> Result<(), StorageError>;
    /// Replaces the hard state.
    fn save_hard_state(&self, hard_state: &HardState) -> Result<(), StorageError>;
    /// Replaces the membership.
    fn save_conf_state(&self, conf_state: &ConfState) -> Result<(), StorageError>;
    /// Replaces the whole log with a snapshot received from the leader: afterwards the log is
    /// empty after `snapshot.meta.index`, `term(meta.index) == meta.term`, the membership is
    /// `meta.conf_state` and [`Storage::snapshot`] returns it. A snapshot older than the current
    /// one is refused with [`StorageError::Compacted`].
    fn install_snapshot(&self, snapshot: &Snapshot) -> Result<(), StorageError>;
    /// Stores a snapshot the application made at `snapshot.meta.index` (at most the applied index,
    /// within the log) and discards the entries up to and including it.
    fn compact(&self, snapshot: &Snapshot) -> Result<(), StorageError>;
    /// Makes every earlier write durable (fsync).
    fn sync(&self) -> Result<(), StorageError>;
    /// Whether [`LogStore::sync`] has anything to do. A store with nothing to flush (in memory:
    /// nothing survives a crash anyway) answers `false`, and a driver may then acknowledge a
    /// batch as soon as it is written instead of handing it to a thread that syncs. A durable
    /// store must keep the default, `true`.
    fn needs_sync(&self) -> bool {
        true
    }
}

#[derive(Debug, Default)]
struct MemInner {
    hard_state: HardState,
    conf_state: ConfState,
    snapshot: Snapshot,
    /// Index and term of the entry before `entries[0]` (compaction point).
    offset_index: Index,
    offset_term: Term,
    entries: Vec<Entry>,
}

impl MemInner {
    fn last_index(&self) -> Index {
        self.offset_index + self.entries.len() as u64
    }

    /// The term of the entry at `index` (the compaction point included).
    fn term_at(&self, index: Index) -> Result<Term, StorageError> {
        if index < self.offset_index {
            return Err(StorageError::Compacted { index });
        }
        if index == self.offset_index {
            return Ok(self.offset_term);
        }
        let last = self.last_index();
        if index > last {
            return Err(StorageError::Unavailable { index, last_index: last });
        }
        Ok(self.entries[(index - self.offset_index - 1) as usize].term)
    }

    /// Discards the entries up to and including `index`, which must be within the log.
    fn compact_to(&mut self, index: Index) {
        let n = (index - self.offset_index) as usize;
        if n > 0 {
            self.offset_term = self.entries[n - 1].term;
            self.entries.drain(..n);
            self.offset_index = index;
        }
    }

    /// Validates an append batch; returns how many stored entries to keep (`None`: empty batch).
    fn check_append(&self, entries: &[Entry]) -> Result<Option<usize>, StorageError> {
        let Some(first) = entries.first() else { return Ok(None) };
        let last = self.last_index();
        if first.index > last + 1 {
            return Err(StorageError::Unavailable { index: first.index, last_index: last });
        }
        if first.index <= self.offset_index {
            return Err(StorageError::Compacted { index: first.index });
        }
        for w in entries.windows(2) {
            if w[1].index != w[0].index + 1 {
                return Err(StorageError::Corrupt {
                    what: format!("append batch at index {}", w[0].index),
                    detail: "entries are not contiguous".into(),
                });
            }
        }
        Ok(Some((first.index - self.offset_index - 1) as usize))
    }
}

/// An in-memory [`Storage`], cheap to clone (clones share the data). Used by tests, the simulator
/// and examples; it makes nothing durable by itself.
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    inner: Arc<Mutex<MemInner>>,
}

impl MemStorage {
    /// An empty log with the given voters.
    pub fn new_with_voters(voters: &[NodeId]) -> MemStorage {
        let s = MemStorage::default();
        s.lock().conf_state.voters = voters.to_vec();
        s
    }

    fn lock(&self) -> MutexGuard<'_, MemInner> {
        // A poisoned lock only means a test thread panicked; the data is still consistent
        // because every method finishes its mutation before it can panic.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends `entries`, first removing every stored entry at or after `entries[0].index`.
    /// `entries[0].index` must be at most `last_index() + 1` and above the compaction point.
    pub fn append(&self, entries: &[Entry]) -> Result<(), StorageError> {
        let mut s = self.lock();
        let Some(keep) = s.check_append(entries)? else { return Ok(()) };
        s.entries.truncate(keep);
        s.entries.extend_from_slice(entries);
        Ok(())
    }

    /// [`MemStorage::append`] taking the entries by value: nothing is cloned, so no payload
    /// refcount is touched. A driver owns `Ready::entries` and can hand them over.
    pub fn append_owned(&self, entries: Vec<Entry>) -> Result<(), StorageError> {
        let mut s = self.lock();
        let Some(keep) = s.check_append(&entries)? else { return Ok(()) };
        s.entries.truncate(keep);
        s.entries.extend(entries);
        Ok(())
    }

    /// Replaces the hard state.
    pub fn set_hard_state(&self, hs: HardState) {
        self.lock().hard_state = hs;
    }

    /// Replaces the membership.
    pub fn set_conf_state(&self, cs: ConfState) {
        self.lock().conf_state = cs;
    }

    /// The stored hard state.
    pub fn hard_state(&self) -> HardState {
        self.lock().hard_state
    }

    /// Discards entries up to and including `index` (which must be at most `last_index()`).
    pub fn compact(&self, index: Index) -> Result<(), StorageError> {
        let mut s = self.lock();
        if index <= s.offset_index {
            return Ok(());
        }
        s.term_at(index)?;
        s.compact_to(index);
        Ok(())
    }

    /// Stores `snapshot` and discards entries up to its index (see [`LogStore::compact`]).
    /// A snapshot at or below the current one is refused with [`StorageError::Compacted`]
    /// (checked and stored under one lock: a snapshot installed meanwhile is never replaced by
    /// an older one).
    pub fn compact_with(&self, snapshot: &Snapshot) -> Result<(), StorageError> {
        let index = snapshot.meta.index;
        let mut s = self.lock();
        if index <= s.snapshot.meta.index || index < s.offset_index {
            return Err(StorageError::Compacted { index });
        }
        let term = s.term_at(index)?;
        if term != snapshot.meta.term {
            return Err(StorageError::Corrupt {
                what: format!("snapshot at index {index}"),
                detail: format!("snapshot term {} but the log has term {term}", snapshot.meta.term),
            });
        }
        s.compact_to(index);
        s.snapshot = snapshot.clone();
        Ok(())
    }

    /// Replaces the log with `snapshot` (see [`LogStore::install_snapshot`]).
    pub fn install(&self, snapshot: &Snapshot) -> Result<(), StorageError> {
        let mut s = self.lock();
        let SnapshotMeta { index, term, .. } = snapshot.meta;
        if index < s.snapshot.meta.index {
            return Err(StorageError::Compacted { index });
        }
        s.entries.clear();
        s.offset_index = index;
        s.offset_term = term;
        s.conf_state = snapshot.meta.conf_state.clone();
        s.snapshot = snapshot.clone();
        Ok(())
    }

    /// A deep copy that shares nothing with `self` (used to model a disk image at a crash).
    pub fn deep_clone(&self) -> MemStorage {
        let s = self.lock();
        MemStorage {
            inner: Arc::new(Mutex::new(MemInner {
                hard_state: s.hard_state,
                conf_state: s.conf_state.clone(),
                offset_index: s.offset_index,
                offset_term: s.offset_term,
                entries: s.entries.clone(),
                snapshot: s.snapshot.clone(),
            })),
        }
    }
}

impl Storage for MemStorage {
    fn initial_state(&self) -> Result<InitialState, StorageError> {
        let s = self.lock();
        Ok(InitialState { hard_state: s.hard_state, conf_state: s.conf_state.clone() })
    }

    fn entries(&self, low: Index, high: Index, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        let s = self.lock();
        if low <= s.offset_index {
            return Err(StorageError::Compacted { index: low });
        }
        let last = s.last_index();
        if high > last + 1 {
            return Err(StorageError::Unavailable { index: high - 1, last_index: last });
        }
        let lo = (low - s.offset_index - 1) as usize;
        let hi = (high.max(low) - s.offset_index - 1) as usize;
        let mut out = Vec::with_capacity(hi - lo);
        let mut bytes = 0u64;
        for e in &s.entries[lo..hi] {
            bytes += e.size_bytes();
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(e.clone());
        }
        Ok(out)
    }

    fn term(&self, index: Index) -> Result<Term, StorageError> {
        self.lock().term_at(index)
    }

    fn first_index(&self) -> Result<Index, StorageError> {
        Ok(self.lock().offset_index + 1)
    }

    fn last_index(&self) -> Result<Index, StorageError> {
        Ok(self.lock().last_index())
    }

    fn snapshot(&self) -> Result<Snapshot, StorageError> {
        Ok(self.lock().snapshot.clone())
    }
}

/// Writes are "durable" at once: `MemStorage` models a disk with no volatile cache. The
/// simulator models lost unsynced writes by delaying the writes themselves.
impl LogStore for MemStorage {
    fn append_entries(&self, entries: &[Entry]) -> Result<(), StorageError> {
        self.append(entries)
    }
    fn save_hard_state(&self, hard_state: &HardState) -> Result<(), StorageError> {
        self.set_hard_state(*hard_state);
        Ok(())
    }
    fn save_conf_state(&self, conf_state: &ConfState) -> Result<(), StorageError> {
        self.set_conf_state(conf_state.clone());
        Ok(())
    }
    fn install_snapshot(&self, snapshot: &Snapshot) -> Result<(), StorageError> {
        self.install(snapshot)
    }
    fn compact(&self, snapshot: &Snapshot) -> Result<(), StorageError> {
        self.compact_with(snapshot)
    }
    fn sync(&self) -> Result<(), StorageError> {
        Ok(())
    }
    fn needs_sync(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::EntryKind;
    use bytes::Bytes;

    fn ent(index: Index, term: Term) -> Entry {
        Entry { index, term, kind: EntryKind::Normal, data: Bytes::from_static(b"x") }
    }

    #[test]
    fn append_truncates_conflicting_suffix() {
        let s = MemStorage::default();
        s.append(&[ent(1, 1), ent(2, 1), ent(3, 1)]).unwrap();
        s.append(&[ent(2, 2)]).unwrap();
        assert_eq!(s.last_index().unwrap(), 2);
        assert_eq!(s.term(2).unwrap(), 2);
        assert_eq!(s.term(0).unwrap(), 0);
        assert!(matches!(s.append(&[ent(5, 2)]), Err(StorageError::Unavailable { .. })));
    }

    #[test]
    fn entries_respects_byte_limit_but_returns_one() {
        let s = MemStorage::default();
        s.append(&[ent(1, 1), ent(2, 1), ent(3, 1)]).unwrap();
        assert_eq!(s.entries(1, 4, 0).unwrap().len(), 1);
        assert_eq!(s.entries(1, 4, u64::MAX).unwrap().len(), 3);
        let one = ent(1, 1).size_bytes();
        assert_eq!(s.entries(1, 4, 2 * one).unwrap().len(), 2);
    }

    #[test]
    fn compaction_keeps_the_boundary_term() {
        let s = MemStorage::default();
        s.append(&[ent(1, 1), ent(2, 2), ent(3, 3)]).unwrap();
        s.compact(2).unwrap();
        assert_eq!(s.first_index().unwrap(), 3);
        assert_eq!(s.term(2).unwrap(), 2);
        assert!(matches!(s.term(1), Err(StorageError::Compacted { index: 1 })));
        assert!(matches!(s.entries(2, 4, u64::MAX), Err(StorageError::Compacted { .. })));
    }
}
