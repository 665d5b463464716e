//! Snapshot streaming: a large snapshot in chunks, corruption detection, resuming, deadlines.

use std::time::Duration;

use raft_core::{
    ConfState, Message, MessageBody, Snapshot, SnapshotMeta, SnapshotStatus, Transport,
    TransportEvent,
};
use raft_grpc::proto::{self, snapshot_frame::Frame, snapshot_reply::Reply};
use tonic::Code;

use crate::harness::{
    CLUSTER, Node, SNAPSHOT, WAIT, config, encode, heartbeat, listeners, noise, raw_stream,
    stream_error,
};

fn snapshot(from: u64, to: u64, data: bytes::Bytes) -> Message {
    Message {
        from,
        to,
        term: 3,
        body: MessageBody::InstallSnapshot {
            snapshot: Snapshot {
                meta: SnapshotMeta {
                    index: 1000,
                    term: 2,
                    conf_state: ConfState { voters: vec![1, 2, 3], ..Default::default() },
                },
                data,
            },
        },
    }
}

/// 64 MiB in 1 MiB chunks: arrives byte for byte, the sender hears `Finished`, and heartbeats keep
/// flowing on their own connection meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_of_64_mib_streams_in_chunks_and_arrives_intact() {
    const SIZE: usize = 64 << 20;
    let mut nodes = Node::cluster(2, |c| {
        c.snapshot_chunk_bytes = 1 << 20;
        c.max_message_bytes = 2 << 20;
        c.snapshot_deadline = WAIT;
    });
    let (a, b) = nodes.split_at_mut(1);
    let (n1, n2) = (&mut a[0], &mut b[0]);
    n1.deliver(n2, |r| heartbeat(1, 2, r)).await;

    let data = noise(SIZE, 64);
    let sent = snapshot(1, 2, data.clone());
    n1.transport.send(vec![sent.clone(), heartbeat(1, 2, 1_000_000)]);
    let mut got_snapshot = None;
    let mut got_heartbeat = false;
    while got_snapshot.is_none() || !got_heartbeat {
        let m = n2.recv().await;
        match m.body {
            MessageBody::InstallSnapshot { .. } => got_snapshot = Some(m),
            MessageBody::Heartbeat { round: 1_000_000, .. } => got_heartbeat = true,
            _ => {}
        }
    }
    assert!(got_snapshot.unwrap() == sent, "the snapshot arrived changed");
    assert_eq!(
        n1.event(|e| matches!(e, TransportEvent::Snapshot(..))).await,
        TransportEvent::Snapshot(2, SnapshotStatus::Finished)
    );
    let (m1, m2) = (n1.transport.metrics(), n2.transport.metrics());
    assert_eq!(m1.snapshots_sent, 1);
    assert_eq!(m1.snapshot_bytes_sent, SIZE as u64);
    assert_eq!(m2.snapshots_received, 1);
    assert_eq!(m2.snapshot_bytes_received, SIZE as u64);
    for n in nodes {
        n.stop().await;
    }
}

fn frame(f: Frame) -> Vec<u8> {
    encode(&proto::SnapshotFrame { frame: Some(f) })
}

fn opening(header: &proto::SnapshotHeader) -> Vec<Vec<u8>> {
    vec![
        frame(Frame::Handshake(proto::Handshake {
            protocol_version: raft_grpc::PROTOCOL_VERSION,
            cluster_id: CLUSTER,
            from: header.from,
            to: header.to,
        })),
        frame(Frame::Header(header.clone())),
    ]
}

fn reply(bytes: &[u8]) -> Reply {
    <proto::SnapshotReply as prost::Message>::decode(bytes).unwrap().reply.unwrap()
}

async fn next_reply(replies: &mut tonic::Streaming<Vec<u8>>) -> Reply {
    reply(&tokio::time::timeout(WAIT, replies.message()).await.unwrap().unwrap().unwrap())
}

/// A chunk whose checksum does not match is refused with `DataLoss`; the receiver keeps the
/// verified prefix, and the next attempt resumes from it and completes. A snapshot whose chunks
/// are fine but whose whole checksum is wrong is refused too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_chunk_is_detected_and_transfer_resumes() {
    let mut nodes = Node::cluster(2, |_| {});
    let n1 = &mut nodes[0];
    let message = snapshot(2, 1, noise(3000, 7));
    let out = raft_grpc::snapshot::OutgoingSnapshot::new(message.clone(), 1024).unwrap();
    let header = out.header().clone();
    let chunk = |offset| out.chunk_at(offset).unwrap();

    // Attempt 1: chunk 0 fine, chunk 1 corrupted in flight.
    let mut bad = chunk(1024);
    let mut data = bad.data.to_vec();
    data[100] ^= 0x20;
    bad.data = data.into();
    let mut frames = opening(&header);
    frames.push(frame(Frame::Chunk(chunk(0))));
    frames.push(frame(Frame::Chunk(bad)));
    let mut replies = raw_stream(n1.addr, SNAPSHOT, frames).await.unwrap();
    assert_eq!(next_reply(&mut replies).await, Reply::Resume(proto::SnapshotResume { offset: 0 }));
    let status = stream_error(replies).await;
    assert_eq!(status.code(), Code::DataLoss, "{status:?}");
    assert!(status.message().contains("chunk at offset 1024 checksum mismatch"), "{status:?}");

    // Attempt 2: the receiver asks to resume after the verified first chunk.
    let mut frames = opening(&header);
    frames.push(frame(Frame::Chunk(chunk(1024))));
    frames.push(frame(Frame::Chunk(chunk(2048))));
    let mut replies = raw_stream(n1.addr, SNAPSHOT, frames).await.unwrap();
    assert_eq!(
        next_reply(&mut replies).await,
        Reply::Resume(proto::SnapshotResume { offset: 1024 })
    );
    assert_eq!(
        next_reply(&mut replies).await,
        Reply::Done(proto::SnapshotDone { total_bytes: 3000 })
    );
    assert!(n1.recv().await == message);

    // Chunks that check out, but not the whole: refused at the end, nothing delivered.
    let mut wrong_whole = header.clone();
    wrong_whole.crc32c ^= 1;
    let mut frames = opening(&wrong_whole);
    frames.extend([0, 1024, 2048].map(|o| frame(Frame::Chunk(chunk(o)))));
    let mut replies = raw_stream(n1.addr, SNAPSHOT, frames).await.unwrap();
    assert_eq!(next_reply(&mut replies).await, Reply::Resume(proto::SnapshotResume { offset: 0 }));
    let status = stream_error(replies).await;
    assert_eq!(status.code(), Code::DataLoss, "{status:?}");
    assert!(status.message().contains("snapshot checksum mismatch"), "{status:?}");
    assert!(n1.inbound.try_recv().is_err());

    // A chunk that skips ahead.
    let mut frames = opening(&header);
    frames.push(frame(Frame::Chunk(chunk(1024))));
    let mut replies = raw_stream(n1.addr, SNAPSHOT, frames).await.unwrap();
    assert_eq!(next_reply(&mut replies).await, Reply::Resume(proto::SnapshotResume { offset: 0 }));
    let status = stream_error(replies).await;
    assert!(status.message().contains("does not continue the received prefix"), "{status:?}");

    assert!(n1.transport.metrics().frames_rejected >= 3);
    for n in nodes {
        n.stop().await;
    }
}

/// The real sender resumes where an interrupted transfer of the same snapshot stopped: node 2
/// already holds the first chunk (from an attempt cut short by a corrupted chunk), so node 1
/// sends only the rest, and the snapshot still arrives intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_resumes_an_interrupted_transfer() {
    let mut nodes = Node::cluster(2, |c| {
        c.snapshot_chunk_bytes = 1024;
        c.max_message_bytes = 4096;
    });
    let (a, b) = nodes.split_at_mut(1);
    let (n1, n2) = (&mut a[0], &mut b[0]);
    let message = snapshot(1, 2, noise(3000, 9));
    let out = raft_grpc::snapshot::OutgoingSnapshot::new(message.clone(), 1024).unwrap();
    let mut bad = out.chunk_at(1024).unwrap();
    bad.crc32c ^= 1;
    let mut frames = opening(out.header());
    frames.push(frame(Frame::Chunk(out.chunk_at(0).unwrap())));
    frames.push(frame(Frame::Chunk(bad)));
    let status = stream_error(raw_stream(n2.addr, SNAPSHOT, frames).await.unwrap()).await;
    assert_eq!(status.code(), Code::DataLoss);

    n1.transport.send(vec![message.clone()]);
    assert!(n2.recv().await == message);
    assert_eq!(
        n1.event(|e| matches!(e, TransportEvent::Snapshot(..))).await,
        TransportEvent::Snapshot(2, SnapshotStatus::Finished)
    );
    assert_eq!(
        n1.transport.metrics().snapshot_bytes_sent,
        3000 - 1024,
        "only the missing part was sent"
    );
    assert_eq!(n2.transport.metrics().snapshot_bytes_received, 3000);
    for n in nodes {
        n.stop().await;
    }
}

/// A snapshot to a peer that is down is retried until the deadline, then reported `Failed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_to_a_down_peer_fails_by_its_deadline() {
    let ls = listeners(2);
    let addrs: Vec<_> = ls.iter().map(|l| l.local_addr().unwrap()).collect();
    let mut c = config(1, &addrs);
    c.snapshot_deadline = Duration::from_millis(300);
    let mut ls = ls.into_iter();
    let mut n1 = Node::start(c, ls.next().unwrap());
    drop(ls); // node 2 is down
    n1.transport.send(vec![snapshot(1, 2, noise(10_000, 1))]);
    assert_eq!(
        n1.event(|e| matches!(e, TransportEvent::Snapshot(..))).await,
        TransportEvent::Snapshot(2, SnapshotStatus::Failed)
    );
    assert_eq!(n1.transport.metrics().snapshots_failed, 1);
    n1.stop().await;
}
