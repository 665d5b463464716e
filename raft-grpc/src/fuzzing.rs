//! Fuzzing entry points (feature `fuzzing`); `fuzz/fuzz_targets/grpc_decode.rs`
//! is a one-line shim over [`decode_all`], and the unit tests below run it too.

use bytes::Bytes;
use prost::Message as _;

use crate::proto;
use crate::snapshot::{OutgoingSnapshot, Reassembly};
use crate::wire::{batch_from_wire, decode, message_from_wire, message_to_wire, meta_from_wire};

/// Largest snapshot a fuzz input may announce (reassembly reserves it up front).
const MAX_SNAPSHOT_BYTES: u64 = 1 << 16;

/// Decodes `data` as every wire message of the protocol, and runs what decodes through the same
/// conversions the transport applies. Errors are expected; a panic is a finding. Also checks
/// that a message that converts is re-encoded to something that decodes back to it.
pub fn decode_all(data: &[u8]) {
    if let Ok(proto::MessageFrame { frame: Some(proto::message_frame::Frame::Batch(batch)) }) =
        decode::<proto::MessageFrame>("MessageFrame", data)
    {
        let _ = batch_from_wire(batch);
    }
    if let Ok(m) = decode::<proto::RaftMessage>("RaftMessage", data) {
        round_trip(m);
    }
    if let Ok(batch) = decode::<proto::MessageBatch>("MessageBatch", data) {
        for m in batch.messages {
            round_trip(m);
        }
    }
    let _ = decode::<proto::MessageReply>("MessageReply", data);
    let _ = decode::<proto::Handshake>("Handshake", data);
    let _ = decode::<proto::SnapshotReply>("SnapshotReply", data);
    if let Ok(meta) = decode::<proto::SnapshotMeta>("SnapshotMeta", data) {
        let _ = meta_from_wire(meta);
    }
    if let Ok(frame) = decode::<proto::SnapshotFrame>("SnapshotFrame", data) {
        match frame.frame {
            Some(proto::snapshot_frame::Frame::Header(header)) => reassemble(header, data),
            Some(proto::snapshot_frame::Frame::Chunk(chunk)) => {
                // A chunk against a small snapshot of the input itself.
                let header = proto::SnapshotHeader {
                    from: 1,
                    to: 2,
                    meta: Some(proto::SnapshotMeta {
                        conf_state: Some(Default::default()),
                        ..Default::default()
                    }),
                    total_bytes: chunk
                        .offset
                        .saturating_add(chunk.data.len() as u64)
                        .min(MAX_SNAPSHOT_BYTES),
                    ..Default::default()
                };
                if let Ok(mut r) = Reassembly::new(header, MAX_SNAPSHOT_BYTES) {
                    let _ = r.push(&chunk);
                    let _ = r.finish();
                }
            }
            _ => {}
        }
    }
}

/// Runs a decoded header through reassembly with chunks cut from `data`, then checks that the
/// sender side reproduces a header for the result.
fn reassemble(header: proto::SnapshotHeader, data: &[u8]) {
    let Ok(mut r) = Reassembly::new(header, MAX_SNAPSHOT_BYTES) else { return };
    let mut offset = 0u64;
    for piece in data.chunks(7) {
        let chunk = proto::SnapshotChunk {
            offset,
            data: Bytes::copy_from_slice(piece),
            crc32c: crc32c::crc32c(piece),
        };
        if r.push(&chunk).is_err() {
            break;
        }
        offset += piece.len() as u64;
    }
    if let Ok(message) = r.finish() {
        let again = OutgoingSnapshot::new(message, 7).expect("finish yields an InstallSnapshot");
        assert!(again.total_bytes() <= MAX_SNAPSHOT_BYTES);
    }
}

fn round_trip(m: proto::RaftMessage) {
    let Ok(core) = message_from_wire(m) else { return };
    let wire = message_to_wire(core.clone()).expect("a decoded message is never a snapshot");
    let back = message_from_wire(
        proto::RaftMessage::decode(wire.encode_to_vec().as_slice()).expect("own encoding decodes"),
    )
    .expect("own encoding converts");
    assert_eq!(back, core, "wire round trip changed the message");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_all_survives_noise() {
        let mut x = 0x1234_5678_9abc_def0u64;
        for len in 0..2000usize {
            let bytes: Vec<u8> = (0..len % 97)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            decode_all(&bytes);
        }
    }

    #[test]
    fn decode_all_accepts_real_frames() {
        let m = raft_core::Message {
            from: 1,
            to: 2,
            term: 3,
            body: raft_core::MessageBody::Propose { data: vec![Bytes::from_static(b"x")] },
        };
        let wire = message_to_wire(m).unwrap();
        decode_all(&wire.encode_to_vec());
        let frame = proto::MessageFrame {
            frame: Some(proto::message_frame::Frame::Batch(proto::MessageBatch {
                messages: vec![wire],
            })),
        };
        decode_all(&frame.encode_to_vec());
    }
}
