//! Snapshot chunking (sender) and reassembly (receiver), without any I/O.
//!
//! A snapshot travels as a [`proto::SnapshotHeader`] (metadata, total length, CRC-32C of the
//! whole) followed by [`proto::SnapshotChunk`]s, each with its offset and its own CRC-32C. The
//! receiver keeps only a verified prefix: a chunk that does not continue it, or whose checksum
//! fails, is refused and leaves the prefix as it was, so a later attempt can resume from
//! [`Reassembly::received`]. The whole-snapshot checksum is checked once the last byte is in.

use bytes::{Bytes, BytesMut};
use raft_core::{Message, MessageBody, NodeId, Snapshot, SnapshotMeta, Term};

use crate::error::WireError;
use crate::proto;
use crate::wire::{meta_from_wire, meta_to_wire};

/// What identifies one snapshot transfer: a transfer resumes only into a partial copy with the
/// same id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SnapshotId {
    /// Sender.
    pub from: NodeId,
    /// Sender's term.
    pub term: Term,
    /// Last log index covered.
    pub index: u64,
    /// Length of the data.
    pub total_bytes: u64,
    /// CRC-32C of the data.
    pub crc32c: u32,
}

impl SnapshotId {
    /// The id a header announces; `None` if it has no metadata.
    pub fn of(header: &proto::SnapshotHeader) -> Option<SnapshotId> {
        Some(SnapshotId {
            from: header.from,
            term: header.term,
            index: header.meta.as_ref()?.index,
            total_bytes: header.total_bytes,
            crc32c: header.crc32c,
        })
    }
}

/// A snapshot being sent: its header and its data, cut into chunks on demand (each chunk is a
/// slice of the data, not a copy).
#[derive(Clone, Debug)]
pub struct OutgoingSnapshot {
    header: proto::SnapshotHeader,
    data: Bytes,
    chunk_bytes: usize,
}

impl OutgoingSnapshot {
    /// Prepares `message`, which must be an `InstallSnapshot`, for sending in chunks of
    /// `chunk_bytes` (non-zero). Computes the whole-snapshot checksum (one pass over the data).
    pub fn new(message: Message, chunk_bytes: usize) -> Result<OutgoingSnapshot, WireError> {
        assert!(chunk_bytes > 0, "snapshot chunk size must be non-zero");
        let Message { from, to, term, body: MessageBody::InstallSnapshot { snapshot } } = message
        else {
            return Err(WireError::Missing("InstallSnapshot body"));
        };
        let Snapshot { meta, data } = snapshot;
        let header = proto::SnapshotHeader {
            from,
            to,
            term,
            meta: Some(meta_to_wire(&meta)),
            total_bytes: data.len() as u64,
            crc32c: crc32c::crc32c(&data),
        };
        Ok(OutgoingSnapshot { header, data, chunk_bytes })
    }

    /// The header frame.
    pub fn header(&self) -> &proto::SnapshotHeader {
        &self.header
    }

    /// Length of the data.
    pub fn total_bytes(&self) -> u64 {
        self.data.len() as u64
    }

    /// The chunk starting at `offset`, or `None` at or past the end.
    pub fn chunk_at(&self, offset: u64) -> Option<proto::SnapshotChunk> {
        let start = usize::try_from(offset).ok().filter(|&s| s < self.data.len())?;
        let end = start.saturating_add(self.chunk_bytes).min(self.data.len());
        let data = self.data.slice(start..end);
        Some(proto::SnapshotChunk { offset, crc32c: crc32c::crc32c(&data), data })
    }
}

/// A snapshot being received: the verified prefix and what it must add up to.
#[derive(Debug)]
pub struct Reassembly {
    id: SnapshotId,
    to: NodeId,
    meta: SnapshotMeta,
    // Invariant: buf.len() <= id.total_bytes, and crc == crc32c(buf).
    buf: BytesMut,
    crc: u32,
}

/// The most a [`Reassembly`] reserves before any chunk arrives (a few default-sized chunks); the
/// buffer then grows with the verified prefix.
const INITIAL_RESERVE_BYTES: usize = 4 << 20;

impl Reassembly {
    /// Starts a reassembly from a header, refusing snapshots larger than `max_snapshot_bytes`.
    /// Memory is reserved as verified chunks arrive (at most [`INITIAL_RESERVE_BYTES`] up front),
    /// so a header alone cannot make the node reserve the whole announced size.
    pub fn new(
        header: proto::SnapshotHeader,
        max_snapshot_bytes: u64,
    ) -> Result<Reassembly, WireError> {
        if header.from == 0 {
            return Err(WireError::ZeroNodeId("SnapshotHeader.from"));
        }
        if header.to == 0 {
            return Err(WireError::ZeroNodeId("SnapshotHeader.to"));
        }
        if header.total_bytes > max_snapshot_bytes {
            return Err(WireError::TooLarge {
                what: "snapshot",
                bytes: header.total_bytes,
                limit: max_snapshot_bytes,
            });
        }
        let meta = meta_from_wire(header.meta.ok_or(WireError::Missing("SnapshotHeader.meta"))?)?;
        let id = SnapshotId {
            from: header.from,
            term: header.term,
            index: meta.index,
            total_bytes: header.total_bytes,
            crc32c: header.crc32c,
        };
        // total_bytes <= max_snapshot_bytes, which config validation keeps addressable.
        let capacity = usize::try_from(header.total_bytes).map_err(|_| WireError::TooLarge {
            what: "snapshot",
            bytes: header.total_bytes,
            limit: usize::MAX as u64,
        })?;
        let buf = BytesMut::with_capacity(capacity.min(INITIAL_RESERVE_BYTES));
        Ok(Reassembly { id, to: header.to, meta, buf, crc: 0 })
    }

    /// The transfer this reassembles.
    pub fn id(&self) -> &SnapshotId {
        &self.id
    }

    /// The recipient named in the header.
    pub fn to(&self) -> NodeId {
        self.to
    }

    /// Length of the verified prefix; a resumed transfer continues from here.
    pub fn received(&self) -> u64 {
        self.buf.len() as u64
    }

    /// Whether every byte is in (the whole checksum is checked by [`Reassembly::finish`]).
    pub fn is_complete(&self) -> bool {
        self.received() == self.id.total_bytes
    }

    /// Appends a chunk if it continues the prefix and matches its checksum; otherwise refuses it
    /// and keeps the prefix unchanged.
    pub fn push(&mut self, chunk: &proto::SnapshotChunk) -> Result<(), WireError> {
        let expected = self.received();
        if chunk.offset != expected {
            return Err(WireError::ChunkOutOfOrder { offset: chunk.offset, expected });
        }
        if chunk.data.is_empty() {
            return Err(WireError::Missing("SnapshotChunk.data"));
        }
        let end = expected.saturating_add(chunk.data.len() as u64);
        if end > self.id.total_bytes {
            return Err(WireError::TooLarge {
                what: "snapshot chunks (past the announced total)",
                bytes: end,
                limit: self.id.total_bytes,
            });
        }
        let actual = crc32c::crc32c(&chunk.data);
        if actual != chunk.crc32c {
            return Err(WireError::Checksum {
                what: format!("chunk at offset {}", chunk.offset),
                expected: chunk.crc32c,
                actual,
            });
        }
        self.buf.extend_from_slice(&chunk.data);
        self.crc = crc32c::crc32c_append(self.crc, &chunk.data);
        Ok(())
    }

    /// Checks the whole snapshot and turns it into the core's `InstallSnapshot` message.
    pub fn finish(self) -> Result<Message, WireError> {
        if !self.is_complete() {
            return Err(WireError::Incomplete {
                received: self.received(),
                total: self.id.total_bytes,
            });
        }
        if self.crc != self.id.crc32c {
            return Err(WireError::Checksum {
                what: "snapshot".into(),
                expected: self.id.crc32c,
                actual: self.crc,
            });
        }
        Ok(Message {
            from: self.id.from,
            to: self.to,
            term: self.id.term,
            body: MessageBody::InstallSnapshot {
                snapshot: Snapshot { meta: self.meta, data: self.buf.freeze() },
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use raft_core::ConfState;

    use super::*;

    fn message(len: usize) -> Message {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        Message {
            from: 1,
            to: 2,
            term: 5,
            body: MessageBody::InstallSnapshot {
                snapshot: Snapshot {
                    meta: SnapshotMeta {
                        index: 10,
                        term: 4,
                        conf_state: ConfState { voters: vec![1, 2, 3], ..Default::default() },
                    },
                    data: Bytes::from(data),
                },
            },
        }
    }

    fn chunks(out: &OutgoingSnapshot, from: u64) -> Vec<proto::SnapshotChunk> {
        let mut v = Vec::new();
        let mut off = from;
        while let Some(c) = out.chunk_at(off) {
            off += c.data.len() as u64;
            v.push(c);
        }
        v
    }

    #[test]
    fn chunks_reassemble_exactly() {
        for (len, chunk) in [(0, 3), (1, 3), (10, 3), (9, 3), (100, 100), (100, 1000)] {
            let m = message(len);
            let out = OutgoingSnapshot::new(m.clone(), chunk).unwrap();
            let cs = chunks(&out, 0);
            assert_eq!(cs.len(), len.div_ceil(chunk));
            let mut r = Reassembly::new(out.header().clone(), 1000).unwrap();
            for c in &cs {
                r.push(c).unwrap();
            }
            assert!(r.is_complete());
            assert_eq!(r.finish().unwrap(), m, "len {len} chunk {chunk}");
        }
    }

    #[test]
    fn header_alone_does_not_reserve_the_announced_size() {
        let out = OutgoingSnapshot::new(message(10), 4).unwrap();
        let mut header = out.header().clone();
        header.total_bytes = 1 << 30;
        let r = Reassembly::new(header, 1 << 30).unwrap();
        assert!(r.buf.capacity() <= INITIAL_RESERVE_BYTES, "{}", r.buf.capacity());
    }

    #[test]
    fn corrupted_chunk_is_refused_and_prefix_kept() {
        let m = message(10);
        let out = OutgoingSnapshot::new(m.clone(), 4).unwrap();
        let cs = chunks(&out, 0);
        let mut r = Reassembly::new(out.header().clone(), 1000).unwrap();
        r.push(&cs[0]).unwrap();
        let mut bad = cs[1].clone();
        let mut data = bad.data.to_vec();
        data[0] ^= 1;
        bad.data = Bytes::from(data);
        assert!(matches!(r.push(&bad), Err(WireError::Checksum { .. })));
        assert_eq!(r.received(), 4);
        // Resume from the verified prefix.
        for c in chunks(&out, r.received()) {
            r.push(&c).unwrap();
        }
        assert_eq!(r.finish().unwrap(), m);
    }

    #[test]
    fn whole_checksum_catches_consistent_corruption() {
        let out = OutgoingSnapshot::new(message(10), 4).unwrap();
        let mut header = out.header().clone();
        header.crc32c ^= 1;
        let mut r = Reassembly::new(header, 1000).unwrap();
        for c in chunks(&out, 0) {
            r.push(&c).unwrap();
        }
        assert!(matches!(r.finish(), Err(WireError::Checksum { what, .. }) if what == "snapshot"));
    }

    #[test]
    fn out_of_order_oversized_and_limits() {
        let out = OutgoingSnapshot::new(message(10), 4).unwrap();
        let cs = chunks(&out, 0);
        let mut r = Reassembly::new(out.header().clone(), 1000).unwrap();
        assert_eq!(r.push(&cs[1]), Err(WireError::ChunkOutOfOrder { offset: 4, expected: 0 }));
        let empty = proto::SnapshotChunk { offset: 0, data: Bytes::new(), crc32c: 0 };
        assert!(r.push(&empty).is_err());
        let big = proto::SnapshotChunk {
            offset: 0,
            data: Bytes::from(vec![0; 11]),
            crc32c: crc32c::crc32c(&[0; 11]),
        };
        assert!(matches!(r.push(&big), Err(WireError::TooLarge { .. })));
        assert!(matches!(
            Reassembly::new(out.header().clone(), 9),
            Err(WireError::TooLarge { bytes: 10, limit: 9, .. })
        ));
        let mut no_meta = out.header().clone();
        no_meta.meta = None;
        assert_eq!(
            Reassembly::new(no_meta, 1000).unwrap_err(),
            WireError::Missing("SnapshotHeader.meta")
        );
        assert!(r.finish().is_err());
    }

    #[test]
    fn non_snapshot_message_is_refused() {
        let m = Message { from: 1, to: 2, term: 1, body: MessageBody::TimeoutNow };
        assert!(OutgoingSnapshot::new(m, 4).is_err());
    }
}
