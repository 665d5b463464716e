//! Byte formats: checksummed log records, segment headers and the little-endian field codec shared
//! by every file kind and by the values stored in sled.
//!
//! A log record is
//!
//! ```text
//! +---------+-----------------+-----------------+------------------+
//! | len u32 | hcrc u32        | bcrc u32        | body (len bytes) |
//! |         | crc(salt ‖ len) | crc(salt ‖ body)| type u8, fields  |
//! +---------+-----------------+-----------------+------------------+
//! ```
//!
//! The header has its own checksum so that a flipped length is never trusted (a wrong length would
//! otherwise make a corrupt record look like a record cut short by a crash). Both checksums are
//! seeded with a random per-segment salt from the segment header, so a record-shaped byte string
//! inside an entry's payload, or a record of another segment, never passes as a record of this
//! one (the scanner searches for records past a bad one, see `scan`). crc is crc32c; all integers
//! are little-endian.

use std::ops::Range;

use raft_core::{ConfState, EntryKind, HardState, Index, NodeId, Term};

/// Bytes before a record's body.
pub(crate) const RECORD_HEADER_LEN: usize = 12;
/// Largest record body accepted, written or read (an entry of up to about 256 MiB).
pub(crate) const MAX_RECORD_BODY: usize = 256 << 20;
/// Bytes of an entry record's body before its payload: type, index, term, kind.
pub(crate) const ENTRY_FIXED_LEN: usize = 1 + 8 + 8 + 1;

const TYPE_ENTRY: u8 = 1;
const TYPE_HARD_STATE: u8 = 2;
const TYPE_MARKER: u8 = 3;
const TYPE_GENERATION: u8 = 4;

/// Magic at the start of every segment file.
pub(crate) const SEGMENT_MAGIC: &[u8; 8] = b"RAFTSEG1";
/// Length of a segment header.
pub(crate) const SEGMENT_HEADER_LEN: usize = 48;
/// Format version written in segment headers, snapshot files, the sync watermark file and the
/// identity record. Version 2 added the sync watermark file. Preallocated segments (zeros after
/// the records of the active segment) did not change it: a segment written before them, which
/// ends at its last record, reads exactly as it did, and is preallocated when reopened.
pub(crate) const FORMAT_VERSION: u32 = 2;

/// A decoded log record. Entry payloads are returned as a range into the scanned buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Record {
    /// A log entry; appending it discards every entry at or after `index`.
    Entry { index: Index, term: Term, kind: EntryKind, data: Range<usize> },
    /// The whole hard state; the last one in the log wins.
    HardState(HardState),
    /// Everything in this segment before this byte offset was covered by a completed fdatasync.
    Marker { durable_len: u64 },
    /// The sled catalogue had reached this generation when the record was written.
    Generation(u64),
}

/// Identity and position stamped at the start of every segment file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    pub(crate) cluster_id: u64,
    pub(crate) node_id: NodeId,
    pub(crate) seq: u64,
    /// Random; seeds every record checksum of the segment.
    pub(crate) salt: u64,
}

impl SegmentHeader {
    /// The crc32c state that record checksums of this segment start from.
    pub(crate) fn seed(&self) -> Seed {
        Seed(crc32c::crc32c(&self.salt.to_le_bytes()))
    }
}

/// Starting crc32c state for the records of one segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Seed(pub(crate) u32);

impl Seed {
    fn crc(self, data: &[u8]) -> u32 {
        crc32c::crc32c_append(self.0, data)
    }
}

/// A fresh random salt for a new segment.
pub(crate) fn random_salt(seq: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(seq);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    h.write_u128(now.map(|d| d.as_nanos()).unwrap_or(0));
    h.write_u32(std::process::id());
    h.finish()
}

/// Why bytes could not be decoded. Callers turn it into a `StorageError` naming the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DecodeError(pub(crate) String);

/// Appends little-endian fields to a buffer.
#[derive(Default)]
pub(crate) struct Enc {
    pub(crate) buf: Vec<u8>,
}

impl Enc {
    pub(crate) fn u8(&mut self, v: u8) -> &mut Enc {
        self.buf.push(v);
        self
    }
    pub(crate) fn u32(&mut self, v: u32) -> &mut Enc {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub(crate) fn u64(&mut self, v: u64) -> &mut Enc {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub(crate) fn bytes(&mut self, v: &[u8]) -> &mut Enc {
        self.u32(v.len() as u32);
        self.buf.extend_from_slice(v);
        self
    }
    pub(crate) fn ids(&mut self, ids: &[NodeId]) -> &mut Enc {
        self.u32(ids.len() as u32);
        for &id in ids {
            self.u64(id);
        }
        self
    }
    pub(crate) fn conf_state(&mut self, cs: &ConfState) -> &mut Enc {
        self.ids(&cs.voters).ids(&cs.learners).ids(&cs.voters_outgoing).ids(&cs.learners_next);
        self.u8(cs.auto_leave as u8).u64(cs.index)
    }
}

/// Reads little-endian fields from a slice; every read is bounds-checked.
pub(crate) struct Dec<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Dec<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Dec<'a> {
        Dec { buf, pos: 0 }
    }
    pub(crate) fn position(&self) -> usize {
        self.pos
    }
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let end =
            end.ok_or_else(|| DecodeError(format!("truncated: need {n} bytes at {}", self.pos)))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    pub(crate) fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(DecodeError(format!("invalid boolean {b}"))),
        }
    }
    pub(crate) fn ids(&mut self) -> Result<Vec<NodeId>, DecodeError> {
        let n = self.u32()? as usize;
        // Bound the allocation by what the buffer can hold.
        if n > (self.buf.len() - self.pos) / 8 {
            return Err(DecodeError(format!("id list of {n} does not fit")));
        }
        (0..n).map(|_| self.u64()).collect()
    }
    pub(crate) fn conf_state(&mut self) -> Result<ConfState, DecodeError> {
        Ok(ConfState {
            voters: self.ids()?,
            learners: self.ids()?,
            voters_outgoing: self.ids()?,
            learners_next: self.ids()?,
            auto_leave: self.bool()?,
            index: self.u64()?,
        })
    }
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(DecodeError(format!("{} trailing bytes", self.buf.len() - self.pos)))
        }
    }
}

/// Appends one record with `body` to `out`.
fn put_record(out: &mut Vec<u8>, seed: Seed, body: impl FnOnce(&mut Enc)) {
    let start = out.len();
    let mut enc = Enc { buf: std::mem::take(out) };
    enc.buf.extend_from_slice(&[0u8; RECORD_HEADER_LEN]);
    body(&mut enc);
    *out = enc.buf;
    let body_len = out.len() - start - RECORD_HEADER_LEN;
    debug_assert!(body_len <= MAX_RECORD_BODY);
    let len = (body_len as u32).to_le_bytes();
    let bcrc = seed.crc(&out[start + RECORD_HEADER_LEN..]);
    out[start..start + 4].copy_from_slice(&len);
    out[start + 4..start + 8].copy_from_slice(&seed.crc(&len).to_le_bytes());
    out[start + 8..start + 12].copy_from_slice(&bcrc.to_le_bytes());
}

fn kind_code(kind: EntryKind) -> u8 {
    match kind {
        EntryKind::Normal => 0,
        EntryKind::Empty => 1,
        EntryKind::ConfChange => 2,
    }
}

fn kind_from_code(code: u8) -> Result<EntryKind, DecodeError> {
    match code {
        0 => Ok(EntryKind::Normal),
        1 => Ok(EntryKind::Empty),
        2 => Ok(EntryKind::ConfChange),
        c => Err(DecodeError(format!("unknown entry kind {c}"))),
    }
}

/// Total record length (header included) of an entry with a payload of `data_len` bytes.
#[cfg(test)]
pub(crate) fn entry_record_len(data_len: usize) -> usize {
    RECORD_HEADER_LEN + ENTRY_FIXED_LEN + data_len
}

pub(crate) fn put_entry(out: &mut Vec<u8>, seed: Seed, e: &raft_core::Entry) {
    put_record(out, seed, |enc| {
        enc.u8(TYPE_ENTRY).u64(e.index).u64(e.term).u8(kind_code(e.kind));
        enc.buf.extend_from_slice(&e.data);
    });
}

pub(crate) fn put_hard_state(out: &mut Vec<u8>, seed: Seed, hs: &HardState) {
    put_record(out, seed, |enc| {
        enc.u8(TYPE_HARD_STATE).u64(hs.term).u8(hs.vote.is_some() as u8);
        enc.u64(hs.vote.unwrap_or(0)).u64(hs.commit);
    });
}

pub(crate) fn put_marker(out: &mut Vec<u8>, seed: Seed, durable_len: u64) {
    put_record(out, seed, |enc| {
        enc.u8(TYPE_MARKER).u64(durable_len);
    });
}

pub(crate) fn put_generation(out: &mut Vec<u8>, seed: Seed, generation: u64) {
    put_record(out, seed, |enc| {
        enc.u8(TYPE_GENERATION).u64(generation);
    });
}

/// What was found at the start of `buf` (a record's first byte).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RecordAt {
    /// A valid record of `len` bytes in total.
    Valid { len: usize, record: Record },
    /// Fewer than a header's bytes remain.
    ShortHeader,
    /// The header checksum fails, or the length is impossible.
    BadHeader,
    /// The header is valid but the body runs past the end of the buffer.
    ShortBody { len: usize },
    /// The body checksum fails.
    BadBody { len: usize },
    /// Both checksums pass but the body does not decode (a writer bug, never a torn write).
    Malformed(DecodeError),
}

/// Decodes the record at the start of `buf`. Payload ranges are relative to `buf`.
pub(crate) fn record_at(buf: &[u8], seed: Seed) -> RecordAt {
    if buf.len() < RECORD_HEADER_LEN {
        return RecordAt::ShortHeader;
    }
    let len_bytes: [u8; 4] = buf[0..4].try_into().expect("4 bytes");
    let hcrc = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes"));
    let bcrc = u32::from_le_bytes(buf[8..12].try_into().expect("4 bytes"));
    let body_len = u32::from_le_bytes(len_bytes) as usize;
    if seed.crc(&len_bytes) != hcrc || body_len == 0 || body_len > MAX_RECORD_BODY {
        return RecordAt::BadHeader;
    }
    let len = RECORD_HEADER_LEN + body_len;
    if buf.len() < len {
        return RecordAt::ShortBody { len };
    }
    let body = &buf[RECORD_HEADER_LEN..len];
    if seed.crc(body) != bcrc {
        return RecordAt::BadBody { len };
    }
    match decode_body(body) {
        Ok(record) => RecordAt::Valid { len, record },
        Err(e) => RecordAt::Malformed(e),
    }
}

fn decode_body(body: &[u8]) -> Result<Record, DecodeError> {
    let mut d = Dec::new(body);
    let record = match d.u8()? {
        TYPE_ENTRY => {
            let index = d.u64()?;
            let term = d.u64()?;
            let kind = kind_from_code(d.u8()?)?;
            let start = RECORD_HEADER_LEN + d.position();
            return Ok(Record::Entry {
                index,
                term,
                kind,
                data: start..RECORD_HEADER_LEN + body.len(),
            });
        }
        TYPE_HARD_STATE => {
            let term = d.u64()?;
            let has_vote = d.bool()?;
            let vote = d.u64()?;
            let commit = d.u64()?;
            if !has_vote && vote != 0 {
                return Err(DecodeError("vote set without its flag".into()));
            }
            Record::HardState(HardState { term, vote: has_vote.then_some(vote), commit })
        }
        TYPE_MARKER => Record::Marker { durable_len: d.u64()? },
        TYPE_GENERATION => Record::Generation(d.u64()?),
        t => return Err(DecodeError(format!("unknown record type {t}"))),
    };
    d.finish()?;
    Ok(record)
}

/// Encodes a segment header.
pub(crate) fn segment_header(h: &SegmentHeader) -> Vec<u8> {
    let mut enc = Enc::default();
    enc.buf.extend_from_slice(SEGMENT_MAGIC);
    enc.u32(FORMAT_VERSION).u64(h.cluster_id).u64(h.node_id).u64(h.seq).u64(h.salt);
    let crc = crc32c::crc32c(&enc.buf);
    enc.u32(crc);
    debug_assert_eq!(enc.buf.len(), SEGMENT_HEADER_LEN);
    enc.buf
}

/// Decodes a segment header from the first [`SEGMENT_HEADER_LEN`] bytes of `buf`.
pub(crate) fn parse_segment_header(buf: &[u8]) -> Result<SegmentHeader, DecodeError> {
    if buf.len() < SEGMENT_HEADER_LEN {
        return Err(DecodeError(format!("segment header needs {SEGMENT_HEADER_LEN} bytes")));
    }
    let body = &buf[..SEGMENT_HEADER_LEN - 4];
    let mut d = Dec::new(&buf[..SEGMENT_HEADER_LEN]);
    if d.take(8)? != SEGMENT_MAGIC {
        return Err(DecodeError("bad segment magic".into()));
    }
    let version = d.u32()?;
    let header =
        SegmentHeader { cluster_id: d.u64()?, node_id: d.u64()?, seq: d.u64()?, salt: d.u64()? };
    if d.u32()? != crc32c::crc32c(body) {
        return Err(DecodeError("segment header checksum mismatch".into()));
    }
    if version != FORMAT_VERSION {
        return Err(DecodeError(format!("unsupported segment format version {version}")));
    }
    Ok(header)
}

/// A value stored in sled: `crc32c(key ‖ payload)` then the payload. Binding the key into the
/// checksum detects a value moved under another key.
pub(crate) fn seal_value(key: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + payload.len());
    out.extend_from_slice(&value_crc(key, payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Checks and strips the checksum of a sled value.
pub(crate) fn open_value<'a>(key: &[u8], value: &'a [u8]) -> Result<&'a [u8], DecodeError> {
    if value.len() < 4 {
        return Err(DecodeError("value shorter than its checksum".into()));
    }
    let crc = u32::from_le_bytes(value[..4].try_into().expect("4 bytes"));
    let payload = &value[4..];
    if value_crc(key, payload) != crc {
        return Err(DecodeError("value checksum mismatch".into()));
    }
    Ok(payload)
}

fn value_crc(key: &[u8], payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(key), payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use raft_core::Entry;

    const S: Seed = Seed(0x1234_5678);

    fn entry(index: Index, data: &'static [u8]) -> Entry {
        Entry { index, term: 7, kind: EntryKind::ConfChange, data: Bytes::from_static(data) }
    }

    #[test]
    fn records_round_trip() {
        let mut buf = Vec::new();
        put_entry(&mut buf, S, &entry(5, b"hello"));
        let hs = HardState { term: 3, vote: Some(2), commit: 4 };
        put_hard_state(&mut buf, S, &hs);
        put_marker(&mut buf, S, 99);
        put_generation(&mut buf, S, 12);
        let RecordAt::Valid { len, record } = record_at(&buf, S) else { panic!("entry") };
        assert_eq!(len, entry_record_len(5));
        let Record::Entry { index: 5, term: 7, kind: EntryKind::ConfChange, data } = record else {
            panic!("{record:?}")
        };
        assert_eq!(&buf[data], b"hello");
        let mut pos = len;
        let mut rest = Vec::new();
        while pos < buf.len() {
            let RecordAt::Valid { len, record } = record_at(&buf[pos..], S) else { panic!() };
            rest.push(record);
            pos += len;
        }
        assert_eq!(
            rest,
            vec![Record::HardState(hs), Record::Marker { durable_len: 99 }, Record::Generation(12)]
        );
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let mut buf = Vec::new();
        put_entry(&mut buf, S, &entry(1, b"payload"));
        for bit in 0..buf.len() * 8 {
            let mut b = buf.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(!matches!(record_at(&b, S), RecordAt::Valid { .. }), "bit {bit} undetected");
        }
    }

    #[test]
    fn short_and_zero_buffers() {
        let mut buf = Vec::new();
        put_entry(&mut buf, S, &entry(1, b"payload"));
        assert_eq!(record_at(&buf[..5], S), RecordAt::ShortHeader);
        assert!(matches!(record_at(&buf[..buf.len() - 1], S), RecordAt::ShortBody { .. }));
        assert_eq!(record_at(&[0u8; 64], S), RecordAt::BadHeader);
        // A record of another segment (another salt) is not a record of this one.
        assert_eq!(record_at(&buf, Seed(1)), RecordAt::BadHeader);
    }

    #[test]
    fn segment_header_and_values() {
        let h = SegmentHeader { cluster_id: 1, node_id: 2, seq: 3, salt: 4 };
        let b = segment_header(&h);
        assert_eq!(parse_segment_header(&b).unwrap(), h);
        let mut bad = b.clone();
        bad[20] ^= 4;
        assert!(parse_segment_header(&bad).is_err());
        let v = seal_value(b"k", b"payload");
        assert_eq!(open_value(b"k", &v).unwrap(), b"payload");
        assert!(open_value(b"other", &v).is_err());
    }

    #[test]
    fn conf_state_round_trip() {
        let cs = ConfState {
            voters: vec![1, 2],
            learners: vec![3],
            voters_outgoing: vec![1],
            learners_next: vec![],
            auto_leave: true,
            index: 9,
        };
        let mut e = Enc::default();
        e.conf_state(&cs);
        let mut d = Dec::new(&e.buf);
        assert_eq!(d.conf_state().unwrap(), cs);
        d.finish().unwrap();
    }
}
