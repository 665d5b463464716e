//! The in-memory log index: where each live entry's record is, and the terms as runs.
//!
//! Built from the segment files at open and kept in step with every append, truncation and
//! compaction. About 16 bytes per entry plus one pair per term change.

use std::collections::VecDeque;

use raft_core::{Index, StorageError, Term};

/// Where one entry's record lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Loc {
    /// Byte offset of the record in its segment.
    pub(crate) pos: u64,
    /// Segment sequence number.
    pub(crate) seq: u32,
    /// Whole record length, header included.
    pub(crate) len: u32,
}

/// Live entries `first_index()..=last_index()` and the compaction point before them.
///
/// Invariant: `terms` is sorted by start index, starts at or below `first_index()` when the log is
/// non-empty, never has a start above `last_index()`, and consecutive runs have different terms.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct LogIndex {
    offset_index: Index,
    offset_term: Term,
    locs: VecDeque<Loc>,
    terms: VecDeque<(Index, Term)>,
}

impl LogIndex {
    /// An empty log after `(index, term)`.
    pub(crate) fn new(offset_index: Index, offset_term: Term) -> LogIndex {
        LogIndex { offset_index, offset_term, locs: VecDeque::new(), terms: VecDeque::new() }
    }

    pub(crate) fn first_index(&self) -> Index {
        self.offset_index + 1
    }

    pub(crate) fn last_index(&self) -> Index {
        self.offset_index + self.locs.len() as u64
    }

    #[cfg(test)]
    pub(crate) fn offset(&self) -> (Index, Term) {
        (self.offset_index, self.offset_term)
    }

    /// Term of `index`, for `first_index() - 1 <= index <= last_index()`.
    pub(crate) fn term(&self, index: Index) -> Result<Term, StorageError> {
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
        let run = self.terms.partition_point(|&(start, _)| start <= index);
        Ok(self.terms[run - 1].1)
    }

    /// Location of a live entry.
    pub(crate) fn loc(&self, index: Index) -> Loc {
        assert!(
            index > self.offset_index && index <= self.last_index(),
            "loc({index}) out of range"
        );
        self.locs[(index - self.offset_index - 1) as usize]
    }

    /// Appends entry `index`, first discarding every entry at or after it.
    /// Requires `first_index() <= index <= last_index() + 1`.
    pub(crate) fn append(&mut self, index: Index, term: Term, loc: Loc) {
        assert!(
            index > self.offset_index && index <= self.last_index() + 1,
            "append of {index} outside {}..={}",
            self.first_index(),
            self.last_index() + 1
        );
        self.truncate_from(index);
        self.locs.push_back(loc);
        if self.terms.back().is_none_or(|&(_, t)| t != term) {
            self.terms.push_back((index, term));
        }
    }

    /// Discards every entry at or after `index` (no-op beyond the last).
    pub(crate) fn truncate_from(&mut self, index: Index) {
        let index = index.max(self.offset_index + 1);
        if index > self.last_index() {
            return;
        }
        self.locs.truncate((index - self.offset_index - 1) as usize);
        while self.terms.back().is_some_and(|&(start, _)| start >= index) {
            self.terms.pop_back();
        }
    }

    /// Discards entries up to and including `index` (at most `last_index()`), whose term is
    /// `term`, making `index` the new compaction point.
    pub(crate) fn compact_to(&mut self, index: Index, term: Term) {
        assert!(index <= self.last_index(), "compact_to({index}) beyond {}", self.last_index());
        if index <= self.offset_index {
            return;
        }
        let n = (index - self.offset_index) as usize;
        self.locs.drain(..n);
        self.offset_index = index;
        self.offset_term = term;
        // Drop runs that end at or before the new first index.
        while self.terms.len() >= 2 && self.terms[1].0 <= index + 1 {
            self.terms.pop_front();
        }
        if self.locs.is_empty() {
            self.terms.clear();
        }
    }

    /// Replaces everything with an empty log after `(index, term)`.
    pub(crate) fn reset(&mut self, index: Index, term: Term) {
        *self = LogIndex::new(index, term);
    }

    /// Number of term runs (for memory accounting and tests).
    #[cfg(test)]
    pub(crate) fn term_runs(&self) -> usize {
        self.terms.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(i: u64) -> Loc {
        Loc { pos: i * 10, seq: 1, len: 10 }
    }

    /// A deliberately naive model: a vector of terms.
    #[derive(Default)]
    struct Naive {
        offset: (Index, Term),
        terms: Vec<Term>,
    }

    #[test]
    fn matches_a_naive_model_on_random_operations() {
        let mut rng = raft_core::testkit::rng::Rng::new(7);
        for _ in 0..200 {
            let mut idx = LogIndex::new(0, 0);
            let mut naive = Naive::default();
            for _ in 0..200 {
                let first = idx.first_index();
                let last = idx.last_index();
                match rng.next_u64() % 5 {
                    0..=2 => {
                        let at = first + rng.next_u64() % (last + 2 - first);
                        let term = 1 + rng.next_u64() % 4;
                        idx.append(at, term, loc(at));
                        naive.terms.truncate((at - naive.offset.0 - 1) as usize);
                        naive.terms.push(term);
                    }
                    3 if last >= first => {
                        let at = first + rng.next_u64() % (last + 1 - first);
                        let term = idx.term(at).unwrap();
                        idx.compact_to(at, term);
                        let n = (at - naive.offset.0) as usize;
                        naive.terms.drain(..n);
                        naive.offset = (at, term);
                    }
                    _ => {
                        let at = first + rng.next_u64() % (last + 2 - first);
                        idx.truncate_from(at);
                        naive.terms.truncate((at - naive.offset.0 - 1) as usize);
                    }
                }
                assert_eq!(idx.offset(), naive.offset);
                assert_eq!(idx.last_index(), naive.offset.0 + naive.terms.len() as u64);
                assert_eq!(idx.term(naive.offset.0).unwrap(), naive.offset.1);
                for (k, &t) in naive.terms.iter().enumerate() {
                    assert_eq!(idx.term(naive.offset.0 + 1 + k as u64).unwrap(), t);
                }
                let distinct = naive.terms.windows(2).filter(|w| w[0] != w[1]).count();
                let runs = if naive.terms.is_empty() { 0 } else { distinct + 1 };
                assert!(idx.term_runs() >= runs && idx.term_runs() <= runs + 1);
            }
        }
    }

    #[test]
    fn errors_outside_the_log() {
        let mut idx = LogIndex::new(5, 2);
        idx.append(6, 3, loc(6));
        assert_eq!(idx.term(4), Err(StorageError::Compacted { index: 4 }));
        assert_eq!(idx.term(5), Ok(2));
        assert_eq!(idx.term(7), Err(StorageError::Unavailable { index: 7, last_index: 6 }));
    }
}
