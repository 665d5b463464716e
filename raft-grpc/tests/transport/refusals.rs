//! Bad peers: malformed bytes, malformed messages, oversized frames, a foreign cluster, an
//! unknown node, a stream meant for another node. Each gets an error that says what is wrong,
//! and the server keeps serving the good peer (node 2) throughout.

use raft_grpc::{Error, GrpcTransport, TransportConfig, proto};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

use crate::harness::{
    CLUSTER, MESSAGES, SNAPSHOT, WAIT, encode, good_peer_still_served, handshake_frame, heartbeat,
    pair, raw_stream, stranger, stream_error,
};

fn batch_frame(messages: Vec<proto::RaftMessage>) -> Vec<u8> {
    encode(&proto::MessageFrame {
        frame: Some(proto::message_frame::Frame::Batch(proto::MessageBatch { messages })),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bytes_and_messages_are_refused() {
    let (mut n1, n2) = pair(|_| {});
    good_peer_still_served(&mut n1, &n2, 0).await;

    // Bytes that are not protobuf, as the first frame and after a good handshake.
    let garbage = vec![0xff, 0xff, 0xff, 0xff, 0x0f, 0x01];
    let status = match raw_stream(n1.addr, MESSAGES, vec![garbage.clone()]).await {
        Err(status) => status,
        Ok(replies) => stream_error(replies).await,
    };
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    assert!(status.message().contains("decode"), "{status:?}");
    let replies =
        raw_stream(n1.addr, MESSAGES, vec![handshake_frame(CLUSTER, 3, 1), garbage]).await.unwrap();
    let status = stream_error(replies).await;
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    good_peer_still_served(&mut n1, &n2, 100).await;

    // Valid protobuf, invalid message: unknown entry kind.
    let bad_entry = proto::RaftMessage {
        from: 3,
        to: 1,
        term: 1,
        body: Some(proto::raft_message::Body::Append(proto::Append {
            entries: vec![proto::Entry { kind: 7, ..Default::default() }],
            ..Default::default()
        })),
    };
    let replies = raw_stream(
        n1.addr,
        MESSAGES,
        vec![handshake_frame(CLUSTER, 3, 1), batch_frame(vec![bad_entry])],
    )
    .await
    .unwrap();
    let status = stream_error(replies).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("malformed message from node 3"), "{status:?}");
    assert!(status.message().contains("Entry.kind"), "{status:?}");

    // A message with no body.
    let no_body = proto::RaftMessage { from: 3, to: 1, term: 1, body: None };
    let replies = raw_stream(
        n1.addr,
        MESSAGES,
        vec![handshake_frame(CLUSTER, 3, 1), batch_frame(vec![no_body])],
    )
    .await
    .unwrap();
    let status = stream_error(replies).await;
    assert!(status.message().contains("missing field `RaftMessage.body`"), "{status:?}");

    // A message whose sender is not the node that opened the stream.
    let spoofed = raft_grpc::wire::message_to_wire(heartbeat(2, 1, 7)).unwrap();
    let replies = raw_stream(
        n1.addr,
        MESSAGES,
        vec![handshake_frame(CLUSTER, 3, 1), batch_frame(vec![spoofed])],
    )
    .await
    .unwrap();
    let status = stream_error(replies).await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("message from node 2 to node 1 on the stream from node 3"),
        "{status:?}"
    );

    // No handshake first.
    let hb = raft_grpc::wire::message_to_wire(heartbeat(3, 1, 7)).unwrap();
    let status = match raw_stream(n1.addr, MESSAGES, vec![batch_frame(vec![hb])]).await {
        Err(status) => status,
        Ok(replies) => stream_error(replies).await,
    };
    assert!(status.message().contains("must be a Handshake"), "{status:?}");

    // Not even HTTP/2: the connection is closed, nothing else happens.
    let mut tcp = tokio::net::TcpStream::connect(n1.addr).await.unwrap();
    tcp.write_all(b"\x16\x03\x01 this is not HTTP/2 at all\r\n\r\n").await.unwrap();
    let mut buf = vec![0; 4096];
    let closed = tokio::time::timeout(WAIT, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the server closes a connection that does not speak HTTP/2");

    assert!(n1.transport.metrics().frames_rejected >= 5, "{:?}", n1.transport.metrics());
    good_peer_still_served(&mut n1, &n2, 200).await;
    n1.stop().await;
    n2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frames_are_refused() {
    let (mut n1, n2) = pair(|c| {
        c.max_message_bytes = 64 << 10;
        c.snapshot_chunk_bytes = 16 << 10;
    });
    good_peer_still_served(&mut n1, &n2, 0).await;
    let big = proto::RaftMessage {
        from: 3,
        to: 1,
        term: 1,
        body: Some(proto::raft_message::Body::Propose(proto::Propose {
            data: vec![vec![1u8; 100 << 10].into()],
        })),
    };
    let replies =
        raw_stream(n1.addr, MESSAGES, vec![handshake_frame(CLUSTER, 3, 1), batch_frame(vec![big])])
            .await
            .unwrap();
    let status = stream_error(replies).await;
    assert!(matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted), "{status:?}");
    assert!(status.message().contains("too large"), "{status:?}");

    // A snapshot larger than the receiver's limit is refused at the header.
    let hs = proto::SnapshotFrame {
        frame: Some(proto::snapshot_frame::Frame::Handshake(proto::Handshake {
            protocol_version: raft_grpc::PROTOCOL_VERSION,
            cluster_id: CLUSTER,
            from: 3,
            to: 1,
        })),
    };
    let header = proto::SnapshotFrame {
        frame: Some(proto::snapshot_frame::Frame::Header(proto::SnapshotHeader {
            from: 3,
            to: 1,
            term: 1,
            meta: Some(proto::SnapshotMeta {
                conf_state: Some(Default::default()),
                ..Default::default()
            }),
            total_bytes: 1 << 40,
            crc32c: 0,
        })),
    };
    let status = match raw_stream(n1.addr, SNAPSHOT, vec![encode(&hs), encode(&header)]).await {
        Err(status) => status,
        Ok(replies) => stream_error(replies).await,
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("exceeds the limit"), "{status:?}");
    good_peer_still_served(&mut n1, &n2, 100).await;
    n1.stop().await;
    n2.stop().await;
}

fn refused(error: Error, code: Code, text: &str) {
    match &error {
        Error::Status { code: c, message, .. } => {
            assert_eq!(*c, code, "{error}");
            assert!(message.contains(text), "expected {text:?} in: {error}");
        }
        other => panic!("expected a refusal, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_cluster_unknown_node_and_wrong_recipient_are_refused() {
    let (mut n1, n2) = pair(|_| {});
    good_peer_still_served(&mut n1, &n2, 0).await;

    // Another cluster (node 3 exists in ours, but this one claims cluster 0xBAD).
    let foreign = stranger(0xBAD, 3, 1, n1.addr);
    let e = foreign.probe(1).await.unwrap_err();
    refused(
        e,
        Code::PermissionDenied,
        "cluster id mismatch: node 1 is not in the cluster the peer (node 3) claims, 0xbad",
    );
    // Its snapshot stream is refused the same way.
    let (events_tx, mut events) = tokio::sync::mpsc::channel(16);
    let mut c = TransportConfig::new(0xBAD, 3);
    c.peers.insert(1, n1.addr.to_string());
    let foreign = GrpcTransport::new(c, events_tx).unwrap();
    raft_core::Transport::send(&foreign, vec![snapshot_message(3, 1)]);
    let event = tokio::time::timeout(WAIT, events.recv()).await.unwrap().unwrap();
    assert_eq!(event, raft_core::TransportEvent::Snapshot(1, raft_core::SnapshotStatus::Failed));

    // Right cluster, unknown node.
    let unknown = stranger(CLUSTER, 9, 1, n1.addr);
    refused(
        unknown.probe(1).await.unwrap_err(),
        Code::PermissionDenied,
        "unknown node id 9: not a peer of node 1",
    );

    // Right cluster and node, but the address is node 1's while the config says node 4.
    let misdirected = stranger(CLUSTER, 2, 4, n1.addr);
    refused(
        misdirected.probe(4).await.unwrap_err(),
        Code::PermissionDenied,
        "wrong node: this is node 1, the peer (node 2) meant node 4",
    );

    let m = n1.transport.metrics();
    assert_eq!(m.handshakes_rejected, 4, "{m:?}");
    good_peer_still_served(&mut n1, &n2, 100).await;
    n1.stop().await;
    n2.stop().await;
}

fn snapshot_message(from: u64, to: u64) -> raft_core::Message {
    raft_core::Message {
        from,
        to,
        term: 1,
        body: raft_core::MessageBody::InstallSnapshot {
            snapshot: raft_core::Snapshot {
                meta: Default::default(),
                data: bytes::Bytes::from_static(b"state"),
            },
        },
    }
}
