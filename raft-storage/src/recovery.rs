//! Replaying segment files into the log index (pure: bytes in, state out).
//!
//! Replay follows the write semantics exactly: an entry record at index `i` discards every entry at
//! or after `i`, the last hard-state record wins, and entries at or below the snapshot point are
//! below the log (but still discard the entries after them, as they did when written).

use std::collections::BTreeMap;

use raft_core::{HardState, Index, StorageError, Term};

use crate::catalogue::Identity;
use crate::codec::{Record, Seed, SegmentHeader};
use crate::index::{Loc, LogIndex};
use crate::scan::{Found, Scanned, TailPolicy, scan_segment};

/// One segment file to replay.
pub(crate) struct SegmentInput<'a> {
    pub(crate) seq: u64,
    /// File name for error messages.
    pub(crate) name: String,
    pub(crate) bytes: &'a [u8],
    pub(crate) policy: TailPolicy,
    /// Whether a torn (never completely written) header is acceptable for this segment.
    pub(crate) header_may_be_torn: bool,
}

/// The state the segments describe.
#[derive(Debug)]
pub(crate) struct Recovered {
    pub(crate) index: LogIndex,
    pub(crate) hard_state: Option<HardState>,
    /// Highest catalogue generation any record mentions.
    pub(crate) max_generation: u64,
    /// The scan of the last segment (torn tail, valid length).
    pub(crate) last: Option<Scanned>,
    /// Entry records read, live or not.
    pub(crate) entry_records: u64,
    /// Record checksum seed of each segment with a valid header.
    pub(crate) seeds: BTreeMap<u64, Seed>,
}

fn corrupt(what: String, detail: String) -> StorageError {
    StorageError::Corrupt { what, detail }
}

/// Replays segments one at a time, in sequence order, on top of a snapshot point.
pub(crate) struct Replayer {
    identity: Identity,
    offset: Index,
    r: Recovered,
}

impl Replayer {
    /// Starts from the snapshot point `(index, term)`.
    pub(crate) fn new(identity: Identity, snapshot_point: (Index, Term)) -> Replayer {
        let (offset, offset_term) = snapshot_point;
        let r = Recovered {
            index: LogIndex::new(offset, offset_term),
            hard_state: None,
            max_generation: 0,
            last: None,
            entry_records: 0,
            seeds: BTreeMap::new(),
        };
        Replayer { identity, offset, r }
    }

    /// Verifies and replays the next segment.
    pub(crate) fn segment(&mut self, seg: &SegmentInput<'_>) -> Result<(), StorageError> {
        let seq32 = u32::try_from(seg.seq).map_err(|_| {
            corrupt(format!("segment {}", seg.name), "sequence number out of range".into())
        })?;
        let (r, offset) = (&mut self.r, self.offset);
        // A record that does not follow the log (a gap) is corruption unless a later record of
        // the same segment supersedes it. Compaction keeps the log from the segment holding live
        // entry `snapshot + 1`, and that segment may begin with since-overwritten entries whose
        // predecessors were in the removed segments; the live entry after them discards them.
        let mut gap: Option<StorageError> = None;
        let mut visit = |f: Found<'_>| -> Result<(), StorageError> {
            match f.record {
                Record::Entry { index, term, .. } => {
                    r.entry_records += 1;
                    let (index, term) = (*index, *term);
                    if index <= offset {
                        // Below the snapshot; it still discarded everything after it when written.
                        r.index.truncate_from(offset + 1);
                        gap = None;
                        return Ok(());
                    }
                    let last = r.index.last_index();
                    if index > last + 1 {
                        // Not in the log (yet): only a later record at or below `last + 1`,
                        // which discards it, makes this consistent.
                        gap.get_or_insert_with(|| {
                            corrupt(
                                format!("segment {} at offset {} (entry {index})", seg.name, f.pos),
                                format!("gap in the log: entry {index} follows entry {last}"),
                            )
                        });
                        return Ok(());
                    }
                    gap = None;
                    let len =
                        u32::try_from(f.len).expect("records are at most MAX_RECORD_BODY long");
                    r.index.append(index, term, Loc { pos: f.pos, seq: seq32, len });
                }
                Record::HardState(hs) => r.hard_state = Some(*hs),
                Record::Generation(g) => r.max_generation = r.max_generation.max(*g),
                Record::Marker { .. } => {}
            }
            Ok(())
        };
        let scanned = scan_segment(&seg.name, seg.bytes, seg.policy, &mut visit)?;
        if let Some(e) = gap {
            return Err(e);
        }
        match scanned.header {
            Some(h) => {
                check_header(self.identity, seg, h)?;
                self.r.seeds.insert(seg.seq, h.seed());
            }
            None if seg.header_may_be_torn => {}
            None => {
                return Err(corrupt(
                    format!("segment {}", seg.name),
                    "header missing or zeroed, and this segment had been made durable".into(),
                ));
            }
        }
        self.r.last = Some(scanned);
        Ok(())
    }

    pub(crate) fn finish(self) -> Recovered {
        self.r
    }
}

/// Replays `segments` (in sequence order) on top of the snapshot point `(index, term)`.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn replay(
    identity: Identity,
    snapshot_point: (Index, Term),
    segments: &[SegmentInput<'_>],
) -> Result<Recovered, StorageError> {
    let mut replayer = Replayer::new(identity, snapshot_point);
    for seg in segments {
        replayer.segment(seg)?;
    }
    Ok(replayer.finish())
}

fn check_header(
    identity: Identity,
    seg: &SegmentInput<'_>,
    h: SegmentHeader,
) -> Result<(), StorageError> {
    if h.cluster_id != identity.cluster_id || h.node_id != identity.node_id {
        return Err(corrupt(
            format!("segment {}", seg.name),
            format!(
                "written by cluster {} node {}, but this store is cluster {} node {}",
                h.cluster_id, h.node_id, identity.cluster_id, identity.node_id
            ),
        ));
    }
    if h.seq != seg.seq {
        return Err(corrupt(
            format!("segment {}", seg.name),
            format!("header says segment {} (file renamed or copied?)", h.seq),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{put_entry, put_hard_state, segment_header};
    use bytes::Bytes;
    use raft_core::{Entry, EntryKind};

    const ID: Identity = Identity { cluster_id: 1, node_id: 1 };

    fn seg(seq: u64, entries: &[(Index, Term)]) -> Vec<u8> {
        let h = SegmentHeader { cluster_id: 1, node_id: 1, seq, salt: seq * 31 };
        let mut buf = segment_header(&h);
        put_hard_state(&mut buf, h.seed(), &HardState { term: seq, vote: None, commit: 0 });
        for &(index, term) in entries {
            let e = Entry { index, term, kind: EntryKind::Normal, data: Bytes::from_static(b"d") };
            put_entry(&mut buf, h.seed(), &e);
        }
        buf
    }

    fn input(seq: u64, bytes: &[u8]) -> SegmentInput<'_> {
        SegmentInput {
            seq,
            name: format!("{seq}"),
            bytes,
            policy: TailPolicy::Recover { durable_len: 0 },
            header_may_be_torn: false,
        }
    }

    #[test]
    fn truncation_below_the_snapshot_point_discards_later_entries() {
        // 1..=10, then a conflicting 5..=6; compacted at 6: nothing after 6 is live.
        let a: Vec<_> = (1..=10).map(|i| (i, 1)).collect();
        let b = seg(1, &[a.as_slice(), &[(5, 2), (6, 2)]].concat());
        let r = replay(ID, (6, 2), &[input(1, &b)]).unwrap();
        assert_eq!((r.index.first_index(), r.index.last_index()), (7, 6));
        let r = replay(ID, (0, 0), &[input(1, &b)]).unwrap();
        assert_eq!(r.index.last_index(), 6);
        assert_eq!(r.index.term(6).unwrap(), 2);
        assert_eq!(r.hard_state.unwrap().term, 1);
    }

    #[test]
    fn overwritten_entries_ahead_of_the_kept_log_are_skipped() {
        // Compacted at 7: the kept segment starts with 9..=10 (term 1), whose predecessor was in a
        // removed segment, then 8..=9 (term 2) overwrite them.
        let b = seg(2, &[(9, 1), (10, 1), (8, 2), (9, 2)]);
        let r = replay(ID, (7, 1), &[input(2, &b)]).unwrap();
        assert_eq!((r.index.first_index(), r.index.last_index()), (8, 9));
        assert_eq!(r.index.term(9).unwrap(), 2);
        // Not superseded within the segment: a gap.
        let b = seg(2, &[(9, 1), (10, 1)]);
        assert!(matches!(replay(ID, (7, 1), &[input(2, &b)]), Err(StorageError::Corrupt { .. })));
        // Superseded only by a later segment: still a gap.
        let c = seg(3, &[(8, 2)]);
        let r = replay(ID, (7, 1), &[input(2, &b), input(3, &c)]);
        assert!(matches!(r, Err(StorageError::Corrupt { .. })));
    }

    #[test]
    fn gaps_and_foreign_segments_are_corrupt() {
        let b = seg(1, &[(1, 1), (3, 1)]);
        assert!(matches!(replay(ID, (0, 0), &[input(1, &b)]), Err(StorageError::Corrupt { .. })));
        let b = seg(2, &[(1, 1)]);
        assert!(replay(ID, (0, 0), &[input(1, &b)]).is_err(), "sequence mismatch");
        let other = Identity { cluster_id: 2, node_id: 1 };
        let b = seg(1, &[(1, 1)]);
        assert!(replay(other, (0, 0), &[input(1, &b)]).is_err());
    }
}
