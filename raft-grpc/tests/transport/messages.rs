//! Message streams: exchange, ordering, a killed and restarted peer, queue bounds, membership.

use std::collections::BTreeMap;
use std::time::Duration;

use raft_core::{Transport, TransportEvent};

use crate::harness::{Node, WAIT, config, eventually, heartbeat, listeners, round_of};

/// Three endpoints each send 200 heartbeats to both others; everyone receives all of them, in
/// order per sender (the transport keeps per-peer order).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_exchange_messages_in_order() {
    let mut nodes = Node::cluster(3, |_| {});
    const ROUNDS: u64 = 200;
    for round in 0..ROUNDS {
        for from in 1..=3u64 {
            let out =
                (1..=3u64).filter(|&to| to != from).map(|to| heartbeat(from, to, round)).collect();
            nodes[from as usize - 1].transport.send(out);
        }
    }
    for node in &mut nodes {
        let mut next: BTreeMap<u64, u64> = BTreeMap::new();
        for _ in 0..2 * ROUNDS {
            let m = node.recv().await;
            assert_eq!(m.to, node.id);
            let expected = next.entry(m.from).or_default();
            assert_eq!(
                round_of(&m),
                *expected,
                "node {} got rounds from node {} out of order",
                node.id,
                m.from
            );
            *expected += 1;
        }
        assert_eq!(next.values().copied().collect::<Vec<_>>(), vec![ROUNDS, ROUNDS]);
    }
    // Everything arrived, so everything was sent (the counter is bumped just after the send).
    for node in &nodes {
        eventually("sends counted", || node.transport.metrics().messages_sent == 2 * ROUNDS).await;
        let metrics = node.transport.metrics();
        assert_eq!(metrics.messages_received, 2 * ROUNDS);
        assert_eq!(metrics.messages_dropped, 0);
        assert!(metrics.batches_sent <= metrics.messages_sent);
        assert!(metrics.bytes_sent > 0 && metrics.bytes_received > 0);
    }
    for node in nodes {
        node.stop().await;
    }
}

/// Node 3 runs in its own runtime, which is shut down (a crash: sockets close, nothing is
/// flushed). While it is down node 1's queue to it stays within `queue_depth`, everything beyond
/// is dropped and reported unreachable, and `send` never blocks. When node 3 comes back on the
/// same address, node 1 reconnects by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_peer_is_reconnected_and_queue_bound_holds() {
    const DEPTH: usize = 64;
    let ls = listeners(3);
    let addrs: Vec<_> = ls.iter().map(|l| l.local_addr().unwrap()).collect();
    let tweak = |c: &mut raft_grpc::TransportConfig| {
        c.queue_depth = DEPTH;
        c.max_batch_messages = 16;
    };
    let mut ls = ls.into_iter();
    let mut c1 = config(1, &addrs);
    tweak(&mut c1);
    let mut n1 = Node::start(c1, ls.next().unwrap());
    let mut n2 = Node::start(config(2, &addrs), ls.next().unwrap());

    let rt3 =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let mut n3 = {
        let _enter = rt3.enter();
        Node::start(config(3, &addrs), ls.next().unwrap())
    };
    n1.deliver(&mut n3, |r| heartbeat(1, 3, r)).await;
    n1.deliver(&mut n2, |r| heartbeat(1, 2, r)).await;
    assert!(n1.transport.peer_status(3).unwrap().connected);

    // Kill node 3.
    tokio::task::spawn_blocking(move || {
        drop(n3);
        rt3.shutdown_timeout(WAIT);
    })
    .await
    .unwrap();
    eventually("node 1 notices node 3 is gone", || !n1.transport.peer_status(3).unwrap().connected)
        .await;

    // Flood node 3's queue while it is down.
    const N: u64 = 10_000;
    let dropped_before = n1.transport.metrics().messages_dropped;
    for round in 0..N {
        n1.transport.send(vec![heartbeat(1, 3, round)]);
        let status = n1.transport.peer_status(3).unwrap();
        assert!(status.queue_len <= DEPTH, "queue grew to {} > {DEPTH}", status.queue_len);
    }
    let status = n1.transport.peer_status(3).unwrap();
    let dropped = n1.transport.metrics().messages_dropped - dropped_before;
    // Every message is either still queued, or dropped (one may be in the dialler's hand).
    assert!(
        dropped + status.queue_len as u64 + 1 >= N,
        "dropped {dropped} + queued {} < {N}",
        status.queue_len
    );
    assert!(dropped >= N - DEPTH as u64 - 1);
    n1.event(|e| *e == TransportEvent::Unreachable(3)).await;
    eventually("a redial fails", || n1.transport.metrics().connect_failures >= 1).await;
    let last_error = n1.transport.peer_status(3).unwrap().last_error.expect("recorded");
    assert!(last_error.contains("cannot connect to node 3"), "{last_error}");

    // Node 2 is unaffected.
    n1.deliver(&mut n2, |r| heartbeat(1, 2, 1_000_000 + r)).await;

    // Restart node 3 on the same address.
    let listener = rebind(addrs[2]).await;
    let mut n3 = Node::start(config(3, &addrs), listener);
    let got = n1.deliver(&mut n3, |r| heartbeat(1, 3, 2_000_000 + r)).await;
    assert_eq!(got.from, 1);
    eventually("reconnect counted", || n1.transport.peer_status(3).unwrap().reconnects >= 1).await;
    assert!(n1.transport.metrics().reconnects >= 1);
    // And the other direction works too.
    n3.deliver(&mut n1, |r| heartbeat(3, 1, r)).await;

    for n in [n1, n2, n3] {
        n.stop().await;
    }
}

async fn rebind(addr: std::net::SocketAddr) -> std::net::TcpListener {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match std::net::TcpListener::bind(addr) {
            Ok(l) => return l,
            Err(e) => {
                assert!(tokio::time::Instant::now() < deadline, "cannot rebind {addr}: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Messages to a node that is not a peer are dropped and reported, never queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_destination_is_dropped_and_reported() {
    let mut nodes = Node::cluster(2, |_| {});
    nodes[0].transport.send(vec![heartbeat(1, 9, 0)]);
    nodes[0].event(|e| *e == TransportEvent::Unreachable(9)).await;
    assert_eq!(nodes[0].transport.metrics().messages_dropped, 1);
    for n in nodes {
        n.stop().await;
    }
}

/// Membership changes: a removed peer is no longer dialled and its streams are refused; a peer
/// added later is dialled and accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_can_be_added_and_removed() {
    let mut nodes = Node::cluster(3, |_| {});
    let (a, rest) = nodes.split_at_mut(1);
    let (n1, n2) = (&mut a[0], &mut rest[0]);
    n2.deliver(n1, |r| heartbeat(2, 1, r)).await;

    // Node 1 removes node 2: node 2's stream is refused at its next batch and re-dialling fails.
    assert!(n1.transport.remove_peer(2));
    assert!(!n1.transport.remove_peer(2));
    assert_eq!(n1.transport.peer_ids(), vec![3]);
    let before = n1.transport.metrics().handshakes_rejected;
    // Node 2 learns it when it sends: its stream is closed at the next batch, and its next
    // handshake is refused.
    let deadline = tokio::time::Instant::now() + WAIT;
    for r in 0.. {
        if n1.transport.metrics().handshakes_rejected > before {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "node 2 was never refused");
        n2.transport.send(vec![heartbeat(2, 1, r)]);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let error = n2.transport.probe(1).await.unwrap_err().to_string();
    assert!(error.contains("unknown node id 2"), "{error}");

    // Added back: accepted again.
    n1.transport.add_peer(2, n2.addr.to_string()).unwrap();
    while n1.inbound.try_recv().is_ok() {}
    n2.deliver(n1, |r| heartbeat(2, 1, 100 + r)).await;
    n1.deliver(n2, |r| heartbeat(1, 2, r)).await;
    assert!(n1.transport.add_peer(1, "127.0.0.1:1").is_err(), "a node is not its own peer");
    assert!(n1.transport.add_peer(4, "no port").is_err());
    for n in nodes {
        n.stop().await;
    }
}

/// A message larger than `max_message_bytes` is dropped on the sending side (counted, reported)
/// and the stream goes on with the next one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_outgoing_message_is_dropped_locally() {
    let mut nodes = Node::cluster(2, |c| {
        c.max_message_bytes = 64 << 10;
        c.snapshot_chunk_bytes = 16 << 10;
    });
    let (a, b) = nodes.split_at_mut(1);
    let (n1, n2) = (&mut a[0], &mut b[0]);
    n1.deliver(n2, |r| heartbeat(1, 2, r)).await;
    let big = raft_core::Message {
        from: 1,
        to: 2,
        term: 1,
        body: raft_core::MessageBody::Propose {
            data: vec![bytes::Bytes::from(vec![7u8; 100 << 10])],
        },
    };
    let dropped = n1.transport.metrics().messages_dropped;
    n1.transport.send(vec![big, heartbeat(1, 2, 42)]);
    let m = n2.recv().await;
    assert_eq!(round_of(&m), 42, "the big message was skipped, the next one delivered");
    assert_eq!(n1.transport.metrics().messages_dropped, dropped + 1);
    n1.event(|e| *e == TransportEvent::Unreachable(2)).await;
    for n in nodes {
        n.stop().await;
    }
}

/// Invalid configurations are refused with the field named.
#[tokio::test]
async fn config_is_validated() {
    let (tx, _rx) = tokio::sync::mpsc::channel(1);
    let mut c = raft_grpc::TransportConfig::new(1, 1);
    c.snapshot_chunk_bytes = c.max_message_bytes;
    let e = raft_grpc::GrpcTransport::new(c, tx.clone()).unwrap_err().to_string();
    assert!(e.contains("snapshot_chunk_bytes"), "{e}");
    let e = raft_grpc::GrpcTransport::new(raft_grpc::TransportConfig::new(0, 1), tx.clone())
        .unwrap_err()
        .to_string();
    assert!(e.contains("cluster_id"), "{e}");
    let mut c = raft_grpc::TransportConfig::new(1, 1);
    c.peers.insert(1, "127.0.0.1:1".into());
    assert!(raft_grpc::GrpcTransport::new(c, tx.clone()).is_err());
    let mut c = raft_grpc::TransportConfig::new(1, 1);
    c.queue_depth = 0;
    assert!(raft_grpc::GrpcTransport::new(c, tx).is_err());
}
