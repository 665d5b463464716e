//! The node's view of its log: the durable part read through [`Storage`], plus entries not yet
//! persisted ("unstable"), and the commit/apply cursors.

use std::collections::VecDeque;

use crate::error::{Error, StorageError};
use crate::storage::Storage;
use crate::types::{Entry, Index, Snapshot, SnapshotMeta, Term};

/// The log of one node.
// Invariant: applied <= applying <= committed <= last_index();
//            applying <= persisted (only durable entries are handed out to apply);
//            unstable_offset == persisted + 1 whenever the unstable entries were not truncated below
//            what storage holds.
pub(crate) struct RaftLog<S: Storage> {
    storage: S,
    /// Entries not yet known durable; `unstable[0].index == unstable_offset`.
    unstable: VecDeque<Entry>,
    unstable_offset: Index,
    /// Last unstable index already handed out in a `Ready` for persisting.
    in_progress: Index,
    /// Highest index known durable and part of the current log.
    persisted: Index,
    /// `(index, term)` of an entry known to be in the durable log (the last one made durable), so
    /// the hot term lookups (`prev_log_term`, `last_term`, commit checks) skip storage. `(0, 0)`
    /// holds nothing.
    term_cache: (Index, Term),
    pub(crate) committed: Index,
    /// Last index handed out for applying.
    pub(crate) applying: Index,
    /// Last index the state machine acknowledged.
    pub(crate) applied: Index,
    /// The latest snapshot the log starts from (from storage, or received and not yet durable).
    /// Entries at or below its index are compacted away from this log's point of view.
    snapshot_meta: SnapshotMeta,
    /// A snapshot to hand out in the next `Ready` (to persist and restore the state machine from).
    pending_snapshot: Option<Snapshot>,
}

impl<S: Storage> RaftLog<S> {
    pub(crate) fn new(storage: S, committed: Index, applied: Index) -> Result<RaftLog<S>, Error> {
        let last = storage.last_index()?;
        let first = storage.first_index()?;
        let snapshot = storage.snapshot()?;
        let committed = committed.max(applied).max(first - 1);
        // A state machine that is behind the snapshot must be restored from it first.
        let pending_snapshot = (applied < snapshot.meta.index).then(|| snapshot.clone());
        if committed > last {
            return Err(StorageError::Corrupt {
                what: "hard state".into(),
                detail: format!("commit index {committed} is beyond the last log index {last}"),
            }
            .into());
        }
        let term_cache = storage.term(last).map_or((0, 0), |t| (last, t));
        Ok(RaftLog {
            storage,
            unstable: VecDeque::new(),
            unstable_offset: last + 1,
            in_progress: last,
            persisted: last,
            term_cache,
            committed,
            applying: applied.max(first - 1),
            applied: applied.max(first - 1),
            snapshot_meta: snapshot.meta,
            pending_snapshot,
        })
    }

    /// The snapshot the log starts from.
    pub(crate) fn snapshot_meta(&self) -> &SnapshotMeta {
        &self.snapshot_meta
    }

    /// Starts the log over from a snapshot received from the leader (§7): everything up to its
    /// index is replaced by it. The snapshot is handed out in the next `Ready`.
    pub(crate) fn restore(&mut self, snapshot: Snapshot) {
        let index = snapshot.meta.index;
        debug_assert!(index > self.committed, "restoring a snapshot below the commit index");
        self.unstable.clear();
        self.unstable_offset = index + 1;
        self.in_progress = index;
        self.persisted = self.persisted.min(index);
        self.term_cache = (0, 0);
        self.committed = index;
        self.applying = index;
        self.applied = self.applied.max(index);
        self.snapshot_meta = snapshot.meta.clone();
        self.pending_snapshot = Some(snapshot);
    }

    /// The snapshot to hand out, if any.
    pub(crate) fn take_pending_snapshot(&mut self) -> Option<Snapshot> {
        self.pending_snapshot.take()
    }

    pub(crate) fn has_pending_snapshot(&self) -> bool {
        self.pending_snapshot.is_some()
    }

    /// The driver made the snapshot at `index` durable.
    pub(crate) fn snapshot_persisted(&mut self, index: Index) {
        if self.snapshot_meta.index == index && self.unstable_offset == index + 1 {
            self.persisted = self.persisted.max(index);
        }
    }

    pub(crate) fn storage(&self) -> &S {
        &self.storage
    }

    pub(crate) fn last_index(&self) -> Index {
        match self.unstable.back() {
            Some(e) => e.index,
            None => self.unstable_offset - 1,
        }
    }

    pub(crate) fn last_term(&self) -> Term {
        self.term(self.last_index()).unwrap_or(0)
    }

    pub(crate) fn persisted(&self) -> Index {
        self.persisted
    }

    /// Term of the entry at `index`, or `None` if the log has no such entry (or it was compacted).
    pub(crate) fn term(&self, index: Index) -> Option<Term> {
        if index >= self.unstable_offset {
            return self.unstable.get((index - self.unstable_offset) as usize).map(|e| e.term);
        }
        if index == self.snapshot_meta.index {
            return Some(self.snapshot_meta.term);
        }
        if index < self.snapshot_meta.index {
            return None;
        }
        if index == self.term_cache.0 {
            return Some(self.term_cache.1);
        }
        if index == 0 {
            return Some(0);
        }
        self.storage.term(index).ok()
    }

    pub(crate) fn match_term(&self, index: Index, term: Term) -> bool {
        self.term(index) == Some(term)
    }

    /// Whether a candidate with this last entry is at least as up-to-date as us (§5.4.1).
    pub(crate) fn is_up_to_date(&self, last_index: Index, last_term: Term) -> bool {
        let my_term = self.last_term();
        last_term > my_term || (last_term == my_term && last_index >= self.last_index())
    }

    /// Entries in `[lo, hi)`, at most `max_bytes` (but at least one) and `max_count`.
    pub(crate) fn entries(
        &self,
        lo: Index,
        hi: Index,
        max_bytes: u64,
        max_count: usize,
    ) -> Result<Vec<Entry>, Error> {
        let hi = hi.min(self.last_index() + 1).min(lo.saturating_add(max_count as u64));
        if lo >= hi {
            return Ok(Vec::new());
        }
        if lo <= self.snapshot_meta.index {
            return Err(StorageError::Compacted { index: lo }.into());
        }
        let mut out = if lo < self.unstable_offset {
            self.storage.entries(lo, hi.min(self.unstable_offset), max_bytes)?
        } else {
            Vec::new()
        };
        if hi > self.unstable_offset
            && (out.is_empty() || out.last().map(|e| e.index + 1) == Some(self.unstable_offset))
        {
            let mut bytes: u64 = out.iter().map(Entry::size_bytes).sum();
            let start = lo.max(self.unstable_offset);
            let skip = (start - self.unstable_offset) as usize;
            for e in self.unstable.iter().skip(skip).take((hi - start) as usize) {
                bytes += e.size_bytes();
                if !out.is_empty() && bytes > max_bytes {
                    break;
                }
                out.push(e.clone());
            }
        }
        Ok(out)
    }

    /// Appends entries that follow on from `entries[0].index - 1`, replacing any conflicting
    /// suffix. Entries must be contiguous; the caller checked it.
    pub(crate) fn truncate_and_append(&mut self, entries: Vec<Entry>) {
        let Some(first) = entries.first() else { return };
        let after = first.index;
        debug_assert!(after > self.committed, "truncating committed entries");
        if after == self.unstable_offset + self.unstable.len() as u64 {
            // Plain append.
        } else if after <= self.unstable_offset {
            // Replaces everything unstable and some persisted entries.
            self.unstable.clear();
            self.unstable_offset = after;
            self.persisted = self.persisted.min(after - 1);
            if self.term_cache.0 >= after {
                self.term_cache = (0, 0);
            }
        } else {
            self.unstable.truncate((after - self.unstable_offset) as usize);
        }
        self.in_progress = self.in_progress.min(after - 1);
        self.unstable.extend(entries);
    }

    /// Appends entries that directly follow the last one (a leader's own proposals), without an
    /// intermediate `Vec`.
    pub(crate) fn append_at_end(&mut self, entries: impl IntoIterator<Item = Entry>) {
        let first = self.last_index() + 1;
        let before = self.unstable.len();
        self.unstable.extend(entries);
        debug_assert!(
            self.unstable.iter().skip(before).zip(first..).all(|(e, i)| e.index == i),
            "append_at_end: entries must follow the last one"
        );
    }

    /// Follower side of AppendEntries (§5.3). Returns the index of the last new entry, or `None`
    /// if the log does not contain an entry at `prev_index` with `prev_term`.
    pub(crate) fn maybe_append(
        &mut self,
        prev_index: Index,
        prev_term: Term,
        leader_commit: Index,
        entries: Vec<Entry>,
    ) -> Result<Option<Index>, &'static str> {
        if !self.match_term(prev_index, prev_term) {
            return Ok(None);
        }
        let last_new = prev_index + entries.len() as u64;
        let conflict = entries.iter().position(|e| !self.match_term(e.index, e.term));
        if let Some(pos) = conflict {
            if entries[pos].index <= self.committed {
                return Err("append would overwrite a committed entry");
            }
            self.truncate_and_append(entries.into_iter().skip(pos).collect());
        }
        self.commit_to(leader_commit.min(last_new));
        Ok(Some(last_new))
    }

    pub(crate) fn commit_to(&mut self, index: Index) {
        if index > self.committed {
            debug_assert!(index <= self.last_index());
            self.committed = index.min(self.last_index());
        }
    }

    /// The largest index `<= index` whose term is `<= term` (fast backtracking, §5.3), with the
    /// term found (0 if none).
    pub(crate) fn find_conflict_by_term(&self, index: Index, term: Term) -> (Index, Term) {
        let mut i = index.min(self.last_index());
        loop {
            match self.term(i) {
                Some(t) if t > term => i -= 1,
                Some(t) => return (i, t),
                None => return (i, 0),
            }
        }
    }

    /// Unstable entries not yet handed out for persisting; marks them handed out.
    pub(crate) fn take_unpersisted(&mut self) -> Vec<Entry> {
        let from = self.in_progress + 1;
        if from < self.unstable_offset || self.last_index() < from {
            return Vec::new();
        }
        let skip = (from - self.unstable_offset) as usize;
        let out: Vec<Entry> = self.unstable.iter().skip(skip).cloned().collect();
        self.in_progress = self.last_index();
        out
    }

    pub(crate) fn has_unpersisted(&self) -> bool {
        self.last_index() > self.in_progress
    }

    /// The driver made entries up to `index` (of `term`) durable. Ignored if the log changed
    /// since (the entry was replaced).
    pub(crate) fn stable_to(&mut self, index: Index, term: Term) {
        if index < self.unstable_offset || self.term(index) != Some(term) {
            return;
        }
        let n = (index + 1 - self.unstable_offset) as usize;
        self.unstable.drain(..n);
        self.unstable_offset = index + 1;
        self.persisted = index;
        self.term_cache = (index, term);
    }

    /// Committed, durable entries not yet handed out for applying, up to `max_bytes`.
    /// The next committed (and locally durable) entries to apply, at most `max_bytes` of them
    /// (at least one) and at most `max_unapplied` beyond the applied index.
    pub(crate) fn next_committed(
        &mut self,
        max_bytes: u64,
        max_unapplied: u64,
    ) -> Result<Vec<Entry>, Error> {
        let hi = self.committed.min(self.persisted).min(self.applied.saturating_add(max_unapplied));
        if hi <= self.applying {
            return Ok(Vec::new());
        }
        let out = self.entries(self.applying + 1, hi + 1, max_bytes, usize::MAX)?;
        if let Some(e) = out.last() {
            self.applying = e.index;
        }
        Ok(out)
    }

    pub(crate) fn has_next_committed(&self, max_unapplied: u64) -> bool {
        self.committed.min(self.persisted).min(self.applied.saturating_add(max_unapplied))
            > self.applying
    }
}
