//! Reading a segment file back: every record is checked, and an invalid record is classified as
//! either a torn tail left by a crash (trimmed) or corruption (refuse to start).
//!
//! The rules, for the last segment after a crash ([`TailPolicy::Recover`]):
//! 1. An invalid record is a torn write only if it looks like one: the file ends inside it, or one
//!    of its 512-byte sector pieces is all zeros (an unwritten sector of an append reads as zeros;
//!    a flipped bit does not). Otherwise it is corruption.
//! 2. Even then, if a valid sync marker anywhere in the file says that a completed fdatasync
//!    covered the bad record, it is corruption. Sync markers are written at the next write after
//!    each fdatasync, so they sit *after* the region they vouch for: the scanner searches past the
//!    bad record for them (records are salted per segment, so payload bytes cannot pose as one).
//!    Valid records after a torn one without such a marker are fine: the page cache writes back
//!    unsynced pages in any order.
//! 3. A record whose checksums pass but whose body does not decode is always corruption.
//!
//! 4. Anything before the *sync watermark* must be intact, and the file at least that long. The
//!    watermark is the length of the last segment that the last completed `sync` covered; it is
//!    made durable in its own file before that `sync` returns (see `watermark.rs`), so every
//!    acknowledged byte lies before it.
//!
//! So after a crash only bytes that no completed `sync` covered, which were never acknowledged,
//! can be trimmed; any damage before the watermark, a truncation included, refuses the open. After
//! a clean close the file must even be exact (see [`TailPolicy::Exact`]).
//!
//! 5. Segments are preallocated (`write::preallocate`): the last segment's records are followed
//!    by zeros up to the preallocated size, so its file length says nothing about where the
//!    records end. At or past the watermark, a position from which the file holds only zeros is
//!    the end of the records (no torn tail); before the watermark, zeros are damage like any
//!    other (rule 4). A zeroed record header followed by non-zero bytes is a torn write (rule 1:
//!    pages are written back in any order), subject to rule 2.
//!
//! Sealed segments, and the last one after a clean close, are cut to their records before their
//! length is recorded, and must be exactly that length of valid records ([`TailPolicy::Exact`]).

use raft_core::StorageError;

use crate::codec::{
    RECORD_HEADER_LEN, Record, RecordAt, SEGMENT_HEADER_LEN, Seed, SegmentHeader,
    parse_segment_header, put_generation, put_hard_state, record_at, segment_header,
};

/// Sector size assumed atomic by the torn-write rule.
const SECTOR: usize = 512;

/// How strictly the end of a segment is judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TailPolicy {
    /// The file must be exactly `len` bytes, all valid records.
    Exact { len: u64 },
    /// The last segment after a crash: a torn tail is tolerated, but not before `durable_len`
    /// (the sync watermark, 0 if it names an earlier segment) nor before a sync marker's claim.
    Recover { durable_len: u64 },
}

/// An invalid tail that the rules classify as a torn (never acknowledged) write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TornTail {
    /// Offset of the first invalid byte; the valid file ends here.
    pub(crate) at: u64,
    /// Bytes from `at` to the end of the file.
    pub(crate) bytes: u64,
    /// Why it counts as torn.
    pub(crate) reason: &'static str,
}

/// The result of a scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Scanned {
    /// The header, or `None` if the whole file is a torn creation (Recover only).
    pub(crate) header: Option<SegmentHeader>,
    /// Bytes of valid header and records.
    pub(crate) valid_len: u64,
    /// The torn tail, if one was found (Recover only).
    pub(crate) torn: Option<TornTail>,
}

/// A record found by [`scan_segment`]: where it is and what it says.
pub(crate) struct Found<'a> {
    pub(crate) pos: u64,
    pub(crate) len: usize,
    pub(crate) record: &'a Record,
}

fn corrupt(name: &str, pos: usize, last_entry: u64, detail: String) -> StorageError {
    StorageError::Corrupt {
        what: format!("segment {name} at offset {pos} (after entry {last_entry})"),
        detail,
    }
}

/// Bytes a segment's creation writes (header, hard state, generation; all fixed-size), which
/// `new_segment_file` makes durable before the segment is used.
fn segment_creation_len() -> usize {
    let h = SegmentHeader { cluster_id: 0, node_id: 0, seq: 0, salt: 0 };
    let mut buf = segment_header(&h);
    put_hard_state(&mut buf, h.seed(), &raft_core::HardState::default());
    put_generation(&mut buf, h.seed(), 0);
    buf.len()
}

/// Offset just past the last non-zero byte of `buf` (0 if it is all zeros): everything from
/// there on was never written, or was preallocated and never written.
fn written_end(buf: &[u8]) -> usize {
    const CHUNK: usize = 64;
    let mut end = buf.len();
    // Whole chunks first: OR-folding a fixed-size chunk vectorizes; a 64 MiB zero tail takes
    // milliseconds.
    while end >= CHUNK && buf[end - CHUNK..end].iter().fold(0u8, |a, &b| a | b) == 0 {
        end -= CHUNK;
    }
    while end > 0 && buf[end - 1] == 0 {
        end -= 1;
    }
    end
}

/// True if a sector-aligned piece of `buf[range]` is all zeros (offsets are file offsets).
fn has_zero_piece(buf: &[u8], start: usize, end: usize) -> bool {
    let end = end.min(buf.len());
    let mut s = start;
    while s < end {
        let piece_end = ((s / SECTOR) + 1) * SECTOR;
        let e = piece_end.min(end);
        if buf[s..e].iter().all(|&b| b == 0) {
            return true;
        }
        s = e;
    }
    false
}

/// Checks every record of the segment in `buf` (the whole file) and hands each valid one to
/// `visit` in file order.
pub(crate) fn scan_segment(
    name: &str,
    buf: &[u8],
    policy: TailPolicy,
    visit: &mut dyn FnMut(Found<'_>) -> Result<(), StorageError>,
) -> Result<Scanned, StorageError> {
    if let TailPolicy::Exact { len } = policy
        && buf.len() as u64 != len
    {
        return Err(corrupt(
            name,
            buf.len().min(len as usize),
            0,
            format!("file is {} bytes but {len} bytes were made durable", buf.len()),
        ));
    }
    let header = match parse_segment_header(buf) {
        Ok(h) => h,
        Err(e) => {
            let torn = buf.len() < SEGMENT_HEADER_LEN || has_zero_piece(buf, 0, SEGMENT_HEADER_LEN);
            // The creation write is made durable before anything else is written to the file, so
            // a file longer than that write had a durable header: its damage is corruption.
            // Preallocated space reads as zeros, so only non-zero bytes count as written.
            let creation_len = segment_creation_len();
            let written = written_end(buf);
            if torn && written > creation_len {
                let detail = format!(
                    "segment header damaged, but the file holds data up to offset {written}, \
                     past its {creation_len} bytes of creation: the header had been made durable"
                );
                return Err(corrupt(name, 0, 0, detail));
            }
            if policy == (TailPolicy::Recover { durable_len: 0 }) && torn {
                let bytes = buf.len() as u64;
                let reason = "segment header never completely written";
                return Ok(Scanned {
                    header: None,
                    valid_len: 0,
                    torn: Some(TornTail { at: 0, bytes, reason }),
                });
            }
            return Err(corrupt(name, 0, 0, e.0));
        }
    };
    let seed = header.seed();
    let written = written_end(buf);
    let mut pos = SEGMENT_HEADER_LEN;
    let mut last_entry = 0;
    while pos < buf.len() {
        if let TailPolicy::Recover { durable_len } = policy
            && pos >= written
            && pos as u64 >= durable_len
        {
            // Only zeros from here on: the end of the records of a preallocated segment (rule 5).
            break;
        }
        let at = record_at(&buf[pos..], seed);
        let short = matches!(at, RecordAt::ShortHeader | RecordAt::ShortBody { .. });
        let (torn, what) = match at {
            RecordAt::Valid { len, record } => {
                match &record {
                    Record::Marker { durable_len: d } if *d > pos as u64 => {
                        let detail =
                            format!("sync marker claims {d} durable bytes ahead of itself");
                        return Err(corrupt(name, pos, last_entry, detail));
                    }
                    Record::Entry { index, .. } => last_entry = *index,
                    _ => {}
                }
                visit(Found { pos: pos as u64, len, record: &shift(record, pos) })?;
                pos += len;
                continue;
            }
            RecordAt::ShortHeader => (true, "file ends inside a record header".to_string()),
            RecordAt::ShortBody { .. } => (true, "file ends inside a record body".to_string()),
            RecordAt::BadHeader => {
                let end = pos + RECORD_HEADER_LEN;
                (has_zero_piece(buf, pos, end), "record header checksum mismatch".to_string())
            }
            RecordAt::BadBody { len } => {
                let zero = has_zero_piece(buf, pos + RECORD_HEADER_LEN, pos + len);
                (zero, "record body checksum mismatch".to_string())
            }
            RecordAt::Malformed(e) => {
                (false, format!("checksummed record does not decode: {}", e.0))
            }
        };
        let TailPolicy::Recover { durable_len } = policy else {
            return Err(corrupt(name, pos, last_entry, what));
        };
        if (pos as u64) < durable_len {
            let detail = format!(
                "{what}, but the sync watermark file says the first {durable_len} bytes were \
                 durable (acknowledged data is damaged)"
            );
            return Err(corrupt(name, pos, last_entry, detail));
        }
        if !torn {
            let detail = format!("{what}, and the record is fully written (not a torn write)");
            return Err(corrupt(name, pos, last_entry, detail));
        }
        if let Some((at, d)) = later_marker_covering(&buf[..written.max(pos)], buf, pos, seed) {
            let detail = format!(
                "{what}; the sync marker at offset {at} says the first {d} bytes were durable"
            );
            return Err(corrupt(name, pos, last_entry, detail));
        }
        let reason = if short {
            "file ends inside the last record"
        } else {
            "an unwritten (all-zero) sector inside the last record"
        };
        let bytes = (buf.len() - pos) as u64;
        let torn = TornTail { at: pos as u64, bytes, reason };
        return Ok(Scanned { header: Some(header), valid_len: pos as u64, torn: Some(torn) });
    }
    if let TailPolicy::Recover { durable_len } = policy
        && (pos as u64) < durable_len
    {
        let detail = format!(
            "file is {pos} bytes, but the sync watermark file says the first {durable_len} bytes \
             were durable (acknowledged data is missing)"
        );
        return Err(corrupt(name, pos, last_entry, detail));
    }
    Ok(Scanned { header: Some(header), valid_len: pos as u64, torn: None })
}

/// Searches past a bad record at `bad` for a valid sync marker whose durable region includes it.
/// A marker starts with its non-zero length, so only starts inside `written` (a prefix of `buf`
/// ending at its last non-zero byte) are tried; records are read from `buf`.
fn later_marker_covering(
    written: &[u8],
    buf: &[u8],
    bad: usize,
    seed: Seed,
) -> Option<(usize, u64)> {
    let mut q = bad + 1;
    while q < written.len() && q + RECORD_HEADER_LEN <= buf.len() {
        match record_at(&buf[q..], seed) {
            RecordAt::Valid { record: Record::Marker { durable_len }, .. }
                if durable_len > bad as u64 && durable_len <= q as u64 =>
            {
                return Some((q, durable_len));
            }
            RecordAt::Valid { len, .. } => q += len,
            _ => q += 1,
        }
    }
    None
}

/// Makes an entry's payload range absolute (file offsets) instead of relative to the record.
fn shift(record: Record, pos: usize) -> Record {
    match record {
        Record::Entry { index, term, kind, data } => {
            Record::Entry { index, term, kind, data: data.start + pos..data.end + pos }
        }
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{put_entry, put_marker, segment_header};
    use bytes::Bytes;
    use raft_core::{Entry, EntryKind};

    fn segment(n: u64, marker_after: Option<u64>) -> Vec<u8> {
        let h = SegmentHeader { cluster_id: 1, node_id: 1, seq: 1, salt: 99 };
        let seed = h.seed();
        let mut buf = segment_header(&h);
        for i in 1..=n {
            if marker_after == Some(i) {
                let d = buf.len() as u64;
                put_marker(&mut buf, seed, d);
            }
            let data = Bytes::from(vec![0xAB; 700]);
            put_entry(&mut buf, seed, &Entry { index: i, term: 1, kind: EntryKind::Normal, data });
        }
        buf
    }

    fn count(buf: &[u8], policy: TailPolicy) -> Result<(usize, Scanned), StorageError> {
        let mut n = 0;
        let s = scan_segment("t", buf, policy, &mut |f| {
            if matches!(f.record, Record::Entry { .. }) {
                n += 1;
            }
            Ok(())
        })?;
        Ok((n, s))
    }

    #[test]
    fn clean_segment_scans_fully() {
        let buf = segment(5, None);
        let (n, s) = count(&buf, TailPolicy::Exact { len: buf.len() as u64 }).unwrap();
        assert_eq!((n, s.valid_len, s.torn), (5, buf.len() as u64, None));
    }

    #[test]
    fn truncated_tail_is_torn_only_when_recovering() {
        let buf = segment(5, None);
        let cut = &buf[..buf.len() - 100];
        let (n, s) = count(cut, TailPolicy::Recover { durable_len: 0 }).unwrap();
        assert_eq!(n, 4);
        assert!(s.torn.is_some());
        assert!(count(cut, TailPolicy::Exact { len: buf.len() as u64 }).is_err());
    }

    #[test]
    fn zeroed_sector_is_torn_but_bit_flip_is_corrupt() {
        let buf = segment(5, None);
        let last_start = buf.len() - (RECORD_HEADER_LEN + 18 + 700);
        let mut zeroed = buf.clone();
        for b in &mut zeroed[last_start + 100..] {
            *b = 0;
        }
        let (n, s) = count(&zeroed, TailPolicy::Recover { durable_len: 0 }).unwrap();
        assert_eq!((n, s.valid_len), (4, last_start as u64));
        let mut flipped = buf.clone();
        flipped[last_start + 300] ^= 1;
        assert!(count(&flipped, TailPolicy::Recover { durable_len: 0 }).is_err());
    }

    #[test]
    fn torn_record_before_marker_is_corrupt() {
        let buf = segment(5, Some(4));
        // Zero the second entry: torn-looking, but a later marker proves it was synced.
        let second = SEGMENT_HEADER_LEN + RECORD_HEADER_LEN + 18 + 700;
        let mut zeroed = buf.clone();
        for b in &mut zeroed[second..second + 300] {
            *b = 0;
        }
        let err = count(&zeroed, TailPolicy::Recover { durable_len: 0 }).unwrap_err();
        assert!(matches!(err, StorageError::Corrupt { .. }));
    }

    #[test]
    fn nothing_before_the_watermark_may_be_missing() {
        let buf = segment(5, None);
        let cut = &buf[..buf.len() - 100];
        let durable_len = buf.len() as u64 - 50;
        assert!(count(cut, TailPolicy::Recover { durable_len }).is_err());
        let last_start = buf.len() - (RECORD_HEADER_LEN + 18 + 700);
        // Cut exactly at a record boundary: every record is valid, but the file is too short.
        let cut = &buf[..last_start];
        assert!(count(cut, TailPolicy::Recover { durable_len }).is_err());
        let durable_len = last_start as u64;
        assert!(count(&buf[..last_start + 5], TailPolicy::Recover { durable_len }).is_ok());
    }

    #[test]
    fn zeros_after_the_records_end_a_preallocated_segment() {
        let buf = segment(5, None);
        let end = buf.len();
        let mut pre = buf.clone();
        pre.resize(end + 8192, 0);
        // At or past the watermark, zeros to the end of the file are the end of the records.
        for durable_len in [0, end as u64] {
            let (n, s) = count(&pre, TailPolicy::Recover { durable_len }).unwrap();
            assert_eq!((n, s.valid_len, s.torn), (5, end as u64, None));
        }
        // Before it they are missing acknowledged data.
        assert!(count(&pre, TailPolicy::Recover { durable_len: end as u64 + 1 }).is_err());
        let last_start = end - (RECORD_HEADER_LEN + 18 + 700);
        let mut zeroed = pre.clone();
        zeroed[last_start..end].fill(0);
        assert!(count(&zeroed, TailPolicy::Recover { durable_len: end as u64 }).is_err());
        // A zeroed record header with written bytes after it is a torn write, trimmed.
        let mut torn = pre.clone();
        torn[last_start..last_start + RECORD_HEADER_LEN].fill(0);
        let (n, s) = count(&torn, TailPolicy::Recover { durable_len: 0 }).unwrap();
        assert_eq!((n, s.valid_len), (4, last_start as u64));
        assert!(s.torn.is_some());
        // Preallocated space is never exact.
        assert!(count(&pre, TailPolicy::Exact { len: end as u64 }).is_err());
        assert_eq!(written_end(&pre), written_end(&buf));
    }

    #[test]
    fn torn_header_means_empty_segment() {
        let buf = segment(0, None);
        let (_, s) = count(&buf[..10], TailPolicy::Recover { durable_len: 0 }).unwrap();
        assert_eq!(s.header, None);
        assert!(
            count(&[0u8; 48], TailPolicy::Recover { durable_len: 0 }).unwrap().1.header.is_none()
        );
        let mut bad = buf.clone();
        bad[3] ^= 1;
        assert!(count(&bad, TailPolicy::Recover { durable_len: 0 }).is_err());
        // A preallocated segment whose creation was interrupted: zeros only.
        assert!(
            count(&[0u8; 4096], TailPolicy::Recover { durable_len: 0 }).unwrap().1.header.is_none()
        );
        // Records after a zeroed header: the header had been durable.
        let mut written = segment(2, None);
        written[..SEGMENT_HEADER_LEN].fill(0);
        written.resize(4096, 0);
        assert!(count(&written, TailPolicy::Recover { durable_len: 0 }).is_err());
    }
}
