//! Nodes on 127.0.0.1 for the transport tests: a transport, its server, and the channels the
//! driver would read. All waits are bounded by [`WAIT`], which only turns a hang into a failure.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes};
use raft_core::{Message, MessageBody, NodeId, TransportEvent};
use raft_grpc::{GrpcTransport, TransportConfig, proto};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

pub(crate) const CLUSTER: u64 = 0x00C1_A57E;
/// Failure bound for anything awaited; never a timing assertion.
pub(crate) const WAIT: Duration = Duration::from_secs(30);

/// Binds `n` listeners on 127.0.0.1 with ports chosen by the kernel.
pub(crate) fn listeners(n: usize) -> Vec<std::net::TcpListener> {
    (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0")).collect()
}

/// A configuration for node `id` of a cluster whose node `i + 1` listens on `addrs[i]`, with
/// short backoffs so reconnection tests are quick.
pub(crate) fn config(id: NodeId, addrs: &[SocketAddr]) -> TransportConfig {
    let mut c = TransportConfig::new(CLUSTER, id);
    c.peers = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| (i as NodeId + 1, a.to_string()))
        .filter(|(p, _)| *p != id)
        .collect::<BTreeMap<_, _>>();
    c.backoff_initial = Duration::from_millis(5);
    c.backoff_max = Duration::from_millis(100);
    c.connect_timeout = Duration::from_secs(10);
    c
}

pub(crate) struct Node {
    pub(crate) id: NodeId,
    pub(crate) addr: SocketAddr,
    pub(crate) transport: Arc<GrpcTransport>,
    pub(crate) inbound: mpsc::Receiver<Message>,
    pub(crate) events: mpsc::Receiver<TransportEvent>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<Result<(), raft_grpc::Error>>>,
}

impl Node {
    /// Starts a node on the current tokio runtime.
    pub(crate) fn start(config: TransportConfig, listener: std::net::TcpListener) -> Node {
        let id = config.node_id;
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let (events_tx, events) = mpsc::channel(4096);
        let (inbound_tx, inbound) = mpsc::channel(4096);
        let transport = Arc::new(GrpcTransport::new(config, events_tx).expect("valid config"));
        let (stop, stop_rx) = oneshot::channel();
        let t = transport.clone();
        let server = tokio::spawn(async move {
            t.serve(listener, inbound_tx, async {
                let _ = stop_rx.await;
            })
            .await
        });
        Node { id, addr, transport, inbound, events, stop: Some(stop), server: Some(server) }
    }

    /// Starts `n` plaintext nodes that know each other, configured by `tweak`.
    pub(crate) fn cluster(n: usize, tweak: impl Fn(&mut TransportConfig)) -> Vec<Node> {
        let ls = listeners(n);
        let addrs: Vec<_> = ls.iter().map(|l| l.local_addr().unwrap()).collect();
        ls.into_iter()
            .enumerate()
            .map(|(i, l)| {
                let mut c = config(i as NodeId + 1, &addrs);
                tweak(&mut c);
                Node::start(c, l)
            })
            .collect()
    }

    /// The next inbound message.
    pub(crate) async fn recv(&mut self) -> Message {
        tokio::time::timeout(WAIT, self.inbound.recv())
            .await
            .unwrap_or_else(|_| panic!("node {} received nothing within {WAIT:?}", self.id))
            .expect("inbound channel open")
    }

    /// Sends `message` again and again until the peer has received one (for links that are
    /// still being set up or were just restored); returns it. Keeps the first that arrives.
    pub(crate) async fn deliver(&self, to: &mut Node, make: impl Fn(u64) -> Message) -> Message {
        let deadline = tokio::time::Instant::now() + WAIT;
        for attempt in 0.. {
            assert!(
                tokio::time::Instant::now() < deadline,
                "node {} never reached node {}",
                self.id,
                to.id
            );
            raft_core::Transport::send(&*self.transport, vec![make(attempt)]);
            if let Ok(Some(m)) =
                tokio::time::timeout(Duration::from_millis(50), to.inbound.recv()).await
            {
                return m;
            }
        }
        unreachable!()
    }

    /// Waits for a transport event matching `want`, skipping others.
    pub(crate) async fn event(&mut self, want: impl Fn(&TransportEvent) -> bool) -> TransportEvent {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(e)) if want(&e) => return e,
                Ok(Some(_)) => {}
                Ok(None) => panic!("event channel closed"),
                Err(_) => panic!("node {}: no matching transport event within {WAIT:?}", self.id),
            }
        }
    }

    /// Stops the server gracefully and drops the transport.
    pub(crate) async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            tokio::time::timeout(WAIT, server).await.expect("server stops").unwrap().unwrap();
        }
    }
}

/// Polls `check` until it holds (bounded by [`WAIT`]).
pub(crate) async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub(crate) fn heartbeat(from: NodeId, to: NodeId, round: u64) -> Message {
    Message { from, to, term: 1, body: MessageBody::Heartbeat { commit: 0, round } }
}

pub(crate) fn round_of(m: &Message) -> u64 {
    match m.body {
        MessageBody::Heartbeat { round, .. } => round,
        ref other => panic!("expected a heartbeat, got {other:?}"),
    }
}

/// Pseudo-random bytes (xorshift), fast enough for tens of MiB.
pub(crate) fn noise(len: usize, seed: u64) -> Bytes {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.put_u64_le(x);
    }
    out.truncate(len);
    Bytes::from(out)
}

/// A gRPC client that sends and receives raw bytes, to put arbitrary frames on the wire.
pub(crate) async fn raw_client(addr: SocketAddr) -> tonic::client::Grpc<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("connect");
    tonic::client::Grpc::new(channel)
}

/// Opens a raw bidirectional stream on `path`, sending `frames` and returning the replies.
pub(crate) async fn raw_stream(
    addr: SocketAddr,
    path: &'static str,
    frames: Vec<Vec<u8>>,
) -> Result<tonic::Streaming<Vec<u8>>, tonic::Status> {
    let mut grpc = raw_client(addr).await;
    grpc.ready().await.expect("ready");
    // Frames, then keep the stream open so the server answers rather than seeing an early end.
    let (tx, rx) = mpsc::channel(frames.len() + 1);
    for f in frames {
        tx.try_send(f).unwrap();
    }
    tokio::spawn(async move {
        tokio::time::sleep(WAIT).await;
        drop(tx);
    });
    let request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(path);
    grpc.streaming(request, path, RawCodec).await.map(tonic::Response::into_inner)
}

/// Reads replies until the stream ends with an error; returns that error.
pub(crate) async fn stream_error(mut replies: tonic::Streaming<Vec<u8>>) -> tonic::Status {
    loop {
        match tokio::time::timeout(WAIT, replies.message()).await.expect("the server answers") {
            Ok(Some(_)) => {}
            Ok(None) => panic!("stream ended without an error"),
            Err(status) => return status,
        }
    }
}

pub(crate) fn encode(m: &impl prost::Message) -> Vec<u8> {
    m.encode_to_vec()
}

pub(crate) fn handshake_frame(cluster_id: u64, from: NodeId, to: NodeId) -> Vec<u8> {
    encode(&proto::MessageFrame {
        frame: Some(proto::message_frame::Frame::Handshake(proto::Handshake {
            protocol_version: raft_grpc::PROTOCOL_VERSION,
            cluster_id,
            from,
            to,
        })),
    })
}

pub(crate) const MESSAGES: &str = "/raft.v1.RaftTransport/Messages";
pub(crate) const SNAPSHOT: &str = "/raft.v1.RaftTransport/Snapshot";

#[derive(Clone, Copy, Default)]
pub(crate) struct RawCodec;

pub(crate) struct RawEncoder;
pub(crate) struct RawDecoder;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        use bytes::Buf;
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

/// Nodes 1 and 2 run; node 3 is a member nobody runs, whose identity the raw tests borrow (so
/// they never displace node 2's stream).
pub(crate) fn pair(tweak: impl Fn(&mut TransportConfig)) -> (Node, Node) {
    let ls = listeners(3);
    let addrs: Vec<_> = ls.iter().map(|l| l.local_addr().unwrap()).collect();
    let mut ls = ls.into_iter();
    let mut start = |id| {
        let mut c = config(id, &addrs);
        tweak(&mut c);
        Node::start(c, ls.next().unwrap())
    };
    let (n1, n2) = (start(1), start(2));
    // Node 3's listener is dropped here: it is down.
    (n1, n2)
}

pub(crate) async fn good_peer_still_served(n1: &mut Node, n2: &Node, round: u64) {
    let m = n2.deliver(n1, |r| heartbeat(2, 1, round + r)).await;
    assert_eq!(m.from, 2);
}

/// A transport with its own identity and peer list, for probing node 1 as someone else.
pub(crate) fn stranger(
    cluster_id: u64,
    node_id: u64,
    peer: u64,
    addr: std::net::SocketAddr,
) -> GrpcTransport {
    let mut c = TransportConfig::new(cluster_id, node_id);
    c.peers.insert(peer, addr.to_string());
    let (tx, _rx) = tokio::sync::mpsc::channel(16);
    GrpcTransport::new(c, tx).unwrap()
}
