//! [`GrpcTransport`]: the client side (one task pair per peer) and the entry points for the
//! server side.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use raft_core::{Message, MessageBody, NodeId, SnapshotStatus, Transport, TransportEvent};
use tokio::net::TcpListener;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tracing::Instrument;

use crate::backoff::OnceLog;
use crate::config::TransportConfig;
use crate::connect::{self, CONNECTION_WINDOW_BYTES, MAX_FRAME_BYTES, STREAM_WINDOW_BYTES};
use crate::error::{Error, error_chain};
use crate::metrics::{Metrics, MetricsSnapshot};
use crate::peer::{PeerState, PeerTask};
use crate::proto::raft_transport_server::RaftTransportServer;
use crate::server::{InboundState, RaftService};
use crate::tls::tls_incoming;

/// Concurrent HTTP/2 streams one connection may open (a peer needs one message stream and, on
/// its other connection, one snapshot stream).
const MAX_STREAMS_PER_CONNECTION: u32 = 16;

/// Most distinct refused identities remembered for "log once".
const REFUSAL_LOG_CAPACITY: usize = 1024;

/// State shared by the transport's peer tasks and its server side.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The configuration (its `peers` field is only the initial set; see `members`).
    pub(crate) config: TransportConfig,
    /// Current peers and their addresses: who we dial, and who may open streams to us.
    members: RwLock<BTreeMap<NodeId, String>>,
    pub(crate) metrics: Metrics,
    events: mpsc::Sender<TransportEvent>,
    /// "Log once" for refused streams.
    pub(crate) refusals: OnceLog,
    /// Inbound streams and partial snapshots.
    pub(crate) inbound: InboundState,
}

impl Shared {
    pub(crate) fn is_member(&self, peer: NodeId) -> bool {
        self.members.read().unwrap_or_else(|e| e.into_inner()).contains_key(&peer)
    }

    /// Tells the core a peer is unreachable, without ever blocking: if the event channel is
    /// full the event is dropped (the core hears it again at the next failure).
    pub(crate) fn report_unreachable(&self, peer: NodeId) {
        if self.events.try_send(TransportEvent::Unreachable(peer)).is_err() {
            Metrics::add(&self.metrics.events_dropped, 1);
        }
    }

    /// Reports a snapshot dropped before it was sent as `Failed`, without ever blocking (`send`
    /// is synchronous); if the event channel is full the event is dropped and counted.
    pub(crate) fn report_snapshot_dropped(&self, peer: NodeId) {
        let event = TransportEvent::Snapshot(peer, SnapshotStatus::Failed);
        if self.events.try_send(event).is_err() {
            Metrics::add(&self.metrics.events_dropped, 1);
        }
    }

    /// Reports an event that must not be lost (a snapshot outcome); waits for room.
    pub(crate) async fn report(&self, event: TransportEvent) {
        // An error means the driver is gone: nobody to tell.
        let _ = self.events.send(event).await;
    }
}

/// What the transport keeps per peer. Dropping it stops the peer's tasks.
#[derive(Debug)]
struct PeerHandle {
    queue: mpsc::Sender<Message>,
    snapshots: mpsc::Sender<Message>,
    state: Arc<PeerState>,
    tasks: [JoinHandle<()>; 2],
}

impl Drop for PeerHandle {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// How one peer's link is doing, for status pages and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerStatus {
    /// The address dialled.
    pub addr: String,
    /// Whether the message stream is open (handshake accepted).
    pub connected: bool,
    /// Messages waiting in the queue.
    pub queue_len: usize,
    /// The queue's bound ([`TransportConfig::queue_depth`]).
    pub queue_depth: usize,
    /// Messages written to the stream.
    pub messages_sent: u64,
    /// Messages dropped (queue full, too large, lost with a broken stream).
    pub messages_dropped: u64,
    /// Successful connections after a failure.
    pub reconnects: u64,
    /// The most recent connection or stream error, kept after recovery.
    pub last_error: Option<String>,
}

/// The gRPC transport of one node: sends to peers through [`Transport::send`], receives through
/// the service from [`GrpcTransport::serve`] or [`GrpcTransport::service`].
///
/// Create it inside a tokio runtime; its tasks run on that runtime and stop when it is dropped.
#[derive(Debug)]
pub struct GrpcTransport {
    shared: Arc<Shared>,
    runtime: tokio::runtime::Handle,
    peers: Mutex<BTreeMap<NodeId, PeerHandle>>,
}

impl GrpcTransport {
    /// Validates `config`, then starts a sender task pair for every peer. Transport events
    /// (unreachable peers, snapshot outcomes) are sent to `events`; give it room (a few times the
    /// number of peers), as `Unreachable` events are dropped when it is full.
    pub fn new(
        config: TransportConfig,
        events: mpsc::Sender<TransportEvent>,
    ) -> Result<GrpcTransport, Error> {
        config.validate()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let tls = config.tls.is_some();
        for (id, addr) in &config.peers {
            connect::peer_uri(*id, addr, tls)?;
        }
        let shared = Arc::new(Shared {
            members: RwLock::new(config.peers.clone()),
            metrics: Metrics::default(),
            events,
            refusals: OnceLog::new(REFUSAL_LOG_CAPACITY),
            inbound: InboundState::default(),
            config,
        });
        let transport = GrpcTransport { shared, runtime, peers: Mutex::new(BTreeMap::new()) };
        let initial = transport.shared.config.peers.clone();
        for (id, addr) in initial {
            transport.start_peer(id, addr);
        }
        Ok(transport)
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.shared.config.node_id
    }

    /// The cluster id carried in every handshake.
    pub fn cluster_id(&self) -> u64 {
        self.shared.config.cluster_id
    }

    /// Adds a peer (or changes its address): it may now connect to us, and we dial it. Call this
    /// when a configuration change that adds the node is applied.
    pub fn add_peer(&self, id: NodeId, addr: impl Into<String>) -> Result<(), Error> {
        let addr = addr.into();
        if id == 0 || id == self.node_id() {
            return Err(Error::InvalidAddress {
                peer: id,
                addr,
                reason: "not a valid peer id".into(),
            });
        }
        connect::peer_uri(id, &addr, self.shared.config.tls.is_some())?;
        self.shared.members.write().unwrap_or_else(|e| e.into_inner()).insert(id, addr.clone());
        self.start_peer(id, addr);
        Ok(())
    }

    /// Removes a peer: its queue is dropped, its tasks stop, its streams to us are refused from
    /// their next frame. Returns whether it was a peer.
    pub fn remove_peer(&self, id: NodeId) -> bool {
        let was =
            self.shared.members.write().unwrap_or_else(|e| e.into_inner()).remove(&id).is_some();
        self.lock_peers().remove(&id);
        self.shared.inbound.forget(id);
        was
    }

    /// The current peers.
    pub fn peer_ids(&self) -> Vec<NodeId> {
        self.lock_peers().keys().copied().collect()
    }

    /// The transport's counters.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.shared.metrics.snapshot()
    }

    /// How the link to `peer` is doing; `None` if it is not a peer.
    pub fn peer_status(&self, peer: NodeId) -> Option<PeerStatus> {
        let peers = self.lock_peers();
        let h = peers.get(&peer)?;
        let depth = h.queue.max_capacity();
        Some(PeerStatus {
            addr: h.state.addr.clone(),
            connected: h.state.connected.load(Ordering::Relaxed),
            queue_len: depth - h.queue.capacity(),
            queue_depth: depth,
            messages_sent: h.state.messages_sent.load(Ordering::Relaxed),
            messages_dropped: h.state.messages_dropped.load(Ordering::Relaxed),
            reconnects: h.state.reconnects.load(Ordering::Relaxed),
            last_error: h.state.last_error(),
        })
    }

    /// Dials `peer` and performs the message-stream handshake, then closes the stream: checks
    /// address, TLS and cluster membership (for a readiness probe or a setup tool). The error
    /// says what failed, e.g. a refused handshake carries the peer's reason.
    pub async fn probe(&self, peer: NodeId) -> Result<(), Error> {
        let addr =
            self.shared.members.read().unwrap_or_else(|e| e.into_inner()).get(&peer).cloned();
        let addr = addr.ok_or(Error::UnknownPeer(peer))?;
        let task = PeerTask::new(self.shared.clone(), peer, Arc::new(PeerState::new(addr)));
        task.open_stream().await.map(drop)
    }

    /// The tonic service for this node, with the configured size limits, for mounting on a
    /// `tonic::transport::Server` of your own (configure TLS on it with
    /// [`crate::TlsConfig::server_tls_config`]). Accepted messages are sent to `inbound`, in
    /// order per peer; when it is full, the peer's stream waits (and its sender's queue fills).
    pub fn service(&self, inbound: mpsc::Sender<Message>) -> RaftTransportServer<RaftService> {
        self.service_with_shutdown(inbound, None)
    }

    fn service_with_shutdown(
        &self,
        inbound: mpsc::Sender<Message>,
        shutdown: Option<tokio::sync::watch::Receiver<bool>>,
    ) -> RaftTransportServer<RaftService> {
        let max = self.shared.config.max_message_bytes;
        RaftTransportServer::new(RaftService::new(self.shared.clone(), inbound, shutdown))
            .max_decoding_message_size(max)
            .max_encoding_message_size(max)
    }

    /// Serves peers on `listener` (with TLS if configured) until `shutdown` completes, then
    /// closes the open streams and returns.
    pub async fn serve(
        &self,
        listener: TcpListener,
        inbound: mpsc::Sender<Message>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), Error> {
        let config = &self.shared.config;
        let mut server = Server::builder()
            .tcp_nodelay(true)
            .initial_stream_window_size(STREAM_WINDOW_BYTES)
            .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
            .max_frame_size(MAX_FRAME_BYTES)
            .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
            .http2_keepalive_interval(Some(config.keepalive_interval))
            .http2_keepalive_timeout(Some(config.keepalive_timeout));
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let signal = async move {
            shutdown.await;
            stop_tx.send_replace(true);
        };
        let local = listener.local_addr().ok();
        let span = tracing::info_span!("raft_server", node = config.node_id, addr = ?local);
        let router = server.add_service(self.service_with_shutdown(inbound, Some(stop_rx)));
        let served = match &config.tls {
            // TLS is terminated by our own accept loop, which reports refused handshakes.
            Some(tls) => {
                let incoming = tls_incoming(listener, tls, self.shared.clone())?;
                router
                    .serve_with_incoming_shutdown(ReceiverStream::new(incoming), signal)
                    .instrument(span)
                    .await
            }
            None => {
                let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
                router.serve_with_incoming_shutdown(incoming, signal).instrument(span).await
            }
        };
        served.map_err(|e| Error::Serve(error_chain(&e)))
    }

    fn start_peer(&self, id: NodeId, addr: String) {
        let config = &self.shared.config;
        let (queue, queue_rx) = mpsc::channel(config.queue_depth);
        // One snapshot in flight and one waiting: the core sends a new one only after it hears
        // how the previous one ended.
        let (snapshots, snapshots_rx) = mpsc::channel(1);
        let state = Arc::new(PeerState::new(addr));
        let task = Arc::new(PeerTask::new(self.shared.clone(), id, state.clone()));
        let span = tracing::info_span!("raft_peer", node = config.node_id, peer = id);
        let tasks = [
            self.runtime.spawn(task.clone().run_messages(queue_rx).instrument(span.clone())),
            self.runtime.spawn(task.run_snapshots(snapshots_rx).instrument(span)),
        ];
        // Replacing an old handle drops it, which stops its tasks.
        self.lock_peers().insert(id, PeerHandle { queue, snapshots, state, tasks });
    }

    fn lock_peers(&self) -> MutexGuard<'_, BTreeMap<NodeId, PeerHandle>> {
        self.peers.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn drop_message(&self, state: Option<&PeerState>, peer: NodeId) {
        Metrics::add(&self.shared.metrics.messages_dropped, 1);
        if let Some(state) = state {
            state.messages_dropped.fetch_add(1, Ordering::Relaxed);
        }
        self.shared.report_unreachable(peer);
    }
}

impl Transport for GrpcTransport {
    /// Queues each message for its peer without blocking. A message to an unknown peer, or one
    /// that finds its peer's queue full, is dropped and reported as
    /// [`TransportEvent::Unreachable`]. `InstallSnapshot` goes to the peer's snapshot stream; one
    /// dropped because that queue is full is also reported as [`TransportEvent::Snapshot`]
    /// `Failed`.
    fn send(&self, messages: Vec<Message>) {
        let peers = self.lock_peers();
        for message in messages {
            let to = message.to;
            let Some(handle) = peers.get(&to) else {
                tracing::debug!(
                    peer = to,
                    kind = message.body.name(),
                    "dropping a message to an unknown peer"
                );
                self.drop_message(None, to);
                continue;
            };
            let is_snapshot = matches!(message.body, MessageBody::InstallSnapshot { .. });
            let queue = if is_snapshot { &handle.snapshots } else { &handle.queue };
            match queue.try_send(message) {
                Ok(()) => {}
                Err(TrySendError::Full(_) | TrySendError::Closed(_)) => {
                    self.drop_message(Some(&handle.state), to);
                    if is_snapshot {
                        // Tell the core this snapshot will not arrive, so it retries promptly.
                        self.shared.report_snapshot_dropped(to);
                    }
                }
            }
        }
    }

    /// [`GrpcTransport::add_peer`], unless the peer is already known at `addr`.
    fn add_peer(&self, id: NodeId, addr: &str) -> Result<(), String> {
        let known = self.shared.members.read().unwrap_or_else(|e| e.into_inner()).get(&id).cloned();
        if known.as_deref() == Some(addr) {
            return Ok(());
        }
        GrpcTransport::add_peer(self, id, addr).map_err(|e| e.to_string())
    }

    fn remove_peer(&self, id: NodeId) {
        GrpcTransport::remove_peer(self, id);
    }
}
