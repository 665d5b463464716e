//! The sending side of one peer: a task that keeps one message stream open (reconnecting with
//! backoff) and batches the peer's queue onto it, and a task that streams snapshots.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use prost::Message as _;
use raft_core::{Message, NodeId, SnapshotStatus, TransportEvent};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Streaming};
use tracing::{debug, error, info, warn};

use crate::PROTOCOL_VERSION;
use crate::backoff::{Backoff, FailureLog, Loudness, seed};
use crate::config::FRAME_OVERHEAD_BYTES;
use crate::connect::{dial, within};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::proto::raft_transport_client::RaftTransportClient;
use crate::proto::{self, message_frame, message_reply, snapshot_frame, snapshot_reply};
use crate::snapshot::OutgoingSnapshot;
use crate::transport::Shared;
use crate::wire::{message_to_wire, repeated_len};

/// Frames buffered between the batching loop and the HTTP/2 stream. Small: the real queue is the
/// peer's bounded message queue, which fills (and drops) while the network is slow.
const OUTBOUND_FRAMES: usize = 2;
/// Snapshot chunks buffered ahead of the HTTP/2 stream.
const SNAPSHOT_FRAMES: usize = 4;

/// Per-peer counters and link state, shared with [`crate::GrpcTransport::peer_status`].
#[derive(Debug)]
pub(crate) struct PeerState {
    pub(crate) addr: String,
    pub(crate) connected: AtomicBool,
    pub(crate) messages_sent: AtomicU64,
    pub(crate) messages_dropped: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl PeerState {
    pub(crate) fn new(addr: String) -> PeerState {
        PeerState {
            addr,
            connected: AtomicBool::new(false),
            messages_sent: AtomicU64::new(0),
            messages_dropped: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            last_error: Mutex::new(None),
        }
    }

    pub(crate) fn last_error(&self) -> Option<String> {
        self.last_error.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_last_error(&self, error: &Error) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error.to_string());
    }
}

/// An open, accepted message stream.
pub(crate) struct MessageStream {
    // Kept so the connection lives as long as the stream.
    _client: RaftTransportClient<Channel>,
    frames: mpsc::Sender<proto::MessageFrame>,
    replies: Streaming<proto::MessageReply>,
}

/// Everything a peer's tasks need.
#[derive(Debug)]
pub(crate) struct PeerTask {
    shared: Arc<Shared>,
    peer: NodeId,
    state: Arc<PeerState>,
}

impl PeerTask {
    pub(crate) fn new(shared: Arc<Shared>, peer: NodeId, state: Arc<PeerState>) -> PeerTask {
        PeerTask { shared, peer, state }
    }

    fn handshake(&self) -> proto::Handshake {
        proto::Handshake {
            protocol_version: PROTOCOL_VERSION,
            cluster_id: self.shared.config.cluster_id,
            from: self.shared.config.node_id,
            to: self.peer,
        }
    }

    /// Keeps a stream to the peer open while there is something to send, and sends the queue on
    /// it in batches. Ends when the queue's sender is dropped (the peer was removed).
    pub(crate) async fn run_messages(self: Arc<Self>, mut queue: mpsc::Receiver<Message>) {
        let config = &self.shared.config;
        let mut backoff = Backoff::new(
            config.backoff_initial,
            config.backoff_max,
            seed(config.node_id, self.peer),
        );
        let mut down_log = FailureLog::new(config.warn_interval);
        let mut oversize_log = FailureLog::new(config.warn_interval);
        let mut pending: Option<proto::RaftMessage> = None;
        let mut connected_before = false;
        loop {
            // Dial only when there is something to send.
            if pending.is_none() {
                match queue.recv().await {
                    Some(message) => pending = self.to_wire(message, &mut oversize_log),
                    None => return,
                }
                if pending.is_none() {
                    continue;
                }
            }
            let failure = match self.open_stream().await {
                Ok(mut stream) => {
                    backoff.reset();
                    match down_log.success(Instant::now()) {
                        Some(down) => {
                            info!(down_ms = down.as_millis() as u64, "peer reachable again")
                        }
                        None => debug!("message stream open"),
                    }
                    if connected_before {
                        Metrics::add(&self.shared.metrics.reconnects, 1);
                        self.state.reconnects.fetch_add(1, Ordering::Relaxed);
                    }
                    connected_before = true;
                    self.state.connected.store(true, Ordering::Relaxed);
                    let result =
                        self.pump(&mut stream, &mut queue, &mut pending, &mut oversize_log).await;
                    self.state.connected.store(false, Ordering::Relaxed);
                    match result {
                        Some(error) => error,
                        None => return,
                    }
                }
                Err(error) => {
                    Metrics::add(&self.shared.metrics.connect_failures, 1);
                    error
                }
            };
            if pending.take().is_some() {
                self.count_dropped(1);
            }
            self.state.set_last_error(&failure);
            self.shared.report_unreachable(self.peer);
            match down_log.failure(Instant::now()) {
                Loudness::Warn { suppressed } => {
                    warn!(error = %failure, suppressed, "peer unreachable")
                }
                Loudness::Quiet => debug!(error = %failure, "peer still unreachable"),
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }

    /// Dials the peer, opens the message stream and waits for the handshake to be accepted.
    pub(crate) async fn open_stream(&self) -> Result<MessageStream, Error> {
        let config = &self.shared.config;
        let (peer, addr) = (self.peer, self.state.addr.as_str());
        let mut client = dial(config, peer, addr).await?;
        let (frames, frames_rx) = mpsc::channel(OUTBOUND_FRAMES);
        let handshake =
            proto::MessageFrame { frame: Some(message_frame::Frame::Handshake(self.handshake())) };
        frames.try_send(handshake).expect("a new channel has room for the handshake");
        let open = async {
            let response = client.messages(ReceiverStream::new(frames_rx)).await;
            let mut replies = response.map_err(|s| Error::status(peer, &s))?.into_inner();
            match replies.message().await {
                Ok(Some(proto::MessageReply {
                    reply: Some(message_reply::Reply::Accepted(a)),
                })) if a.cluster_id == config.cluster_id && a.node_id == peer => Ok(replies),
                Ok(other) => Err(Error::Protocol {
                    peer,
                    detail: format!("expected HandshakeAccepted, got {other:?}"),
                }),
                Err(status) => Err(Error::status(peer, &status)),
            }
        };
        let replies = within(config.connect_timeout, peer, addr, "handshake", open)
            .await
            .map_err(|e| self.explain_setup_failure(e))?;
        Ok(MessageStream { _client: client, frames, replies })
    }

    /// Sends the queue on an open stream until the stream fails (returns the error) or the
    /// queue is closed (returns `None`).
    async fn pump(
        &self,
        stream: &mut MessageStream,
        queue: &mut mpsc::Receiver<Message>,
        pending: &mut Option<proto::RaftMessage>,
        oversize_log: &mut FailureLog,
    ) -> Option<Error> {
        let config = &self.shared.config;
        let budget = config.max_message_bytes - FRAME_OVERHEAD_BYTES;
        loop {
            let first = match pending.take() {
                Some(first) => first,
                None => tokio::select! {
                    message = queue.recv() => match message {
                        Some(message) => match self.to_wire(message, oversize_log) {
                            Some(first) => first,
                            None => continue,
                        },
                        None => return None,
                    },
                    reply = stream.replies.message() => return Some(self.stream_ended(reply)),
                },
            };
            let mut bytes = repeated_len(&first);
            let mut batch = vec![first];
            while batch.len() < config.max_batch_messages {
                let Ok(message) = queue.try_recv() else { break };
                let Some(wire) = self.to_wire(message, oversize_log) else { continue };
                let len = repeated_len(&wire);
                if bytes + len > budget {
                    *pending = Some(wire);
                    break;
                }
                bytes += len;
                batch.push(wire);
            }
            let count = batch.len() as u64;
            let frame = proto::MessageFrame {
                frame: Some(message_frame::Frame::Batch(proto::MessageBatch { messages: batch })),
            };
            let frame_bytes = frame.encoded_len() as u64;
            tokio::select! {
                permit = stream.frames.reserve() => match permit {
                    Ok(permit) => permit.send(frame),
                    Err(_) => {
                        self.count_dropped(count);
                        return Some(Error::Protocol { peer: self.peer, detail: "the request stream closed".into() });
                    }
                },
                reply = stream.replies.message() => {
                    self.count_dropped(count);
                    return Some(self.stream_ended(reply));
                }
            }
            let metrics = &self.shared.metrics;
            Metrics::add(&metrics.messages_sent, count);
            Metrics::add(&metrics.bytes_sent, frame_bytes);
            Metrics::add(&metrics.batches_sent, 1);
            self.state.messages_sent.fetch_add(count, Ordering::Relaxed);
        }
    }

    /// Encodes a message; drops it (counted, logged at a limited rate, reported unreachable) if
    /// it cannot fit in a frame.
    fn to_wire(
        &self,
        message: Message,
        oversize_log: &mut FailureLog,
    ) -> Option<proto::RaftMessage> {
        let kind = message.body.name();
        let limit = self.shared.config.max_message_bytes - FRAME_OVERHEAD_BYTES;
        let wire = match message_to_wire(message) {
            Ok(wire) => wire,
            Err(e) => {
                error!(error = %e, kind, "dropping a message that cannot be encoded");
                self.count_dropped(1);
                return None;
            }
        };
        let len = repeated_len(&wire);
        if len > limit {
            if let Loudness::Warn { suppressed } = oversize_log.failure(Instant::now()) {
                error!(
                    kind,
                    bytes = len,
                    limit,
                    suppressed,
                    "dropping a message larger than max_message_bytes"
                );
            }
            self.count_dropped(1);
            self.shared.report_unreachable(self.peer);
            return None;
        }
        Some(wire)
    }

    /// A connection dropped during stream setup explains little by itself ("broken pipe"); say
    /// what usually causes it. With TLS 1.3 a server refuses a client certificate only after
    /// the client finished its side of the handshake, so the client sees just the drop.
    fn explain_setup_failure(&self, error: Error) -> Error {
        match error {
            Error::Status { peer, code, message }
                if matches!(
                    code,
                    Code::Unknown | Code::Cancelled | Code::Unavailable | Code::Internal
                ) && (message.contains("transport error")
                    || message.contains("h2 protocol error")) =>
            {
                let hint = if self.shared.config.tls.is_some() {
                    "the peer dropped the connection during setup: it may have refused this node's TLS \
                     certificate (is it signed by the cluster CA?) or may not use TLS"
                } else {
                    "the peer dropped the connection during setup: it may require TLS"
                };
                Error::Status { peer, code, message: format!("{message} ({hint})") }
            }
            other => other,
        }
    }

    fn stream_ended(&self, reply: Result<Option<proto::MessageReply>, tonic::Status>) -> Error {
        match reply {
            Ok(None) => {
                Error::Protocol { peer: self.peer, detail: "the peer closed the stream".into() }
            }
            Ok(Some(reply)) => {
                Error::Protocol { peer: self.peer, detail: format!("unexpected reply {reply:?}") }
            }
            Err(status) => Error::status(self.peer, &status),
        }
    }

    fn count_dropped(&self, n: u64) {
        Metrics::add(&self.shared.metrics.messages_dropped, n);
        self.state.messages_dropped.fetch_add(n, Ordering::Relaxed);
    }

    /// Streams each snapshot handed to it and reports how it ended.
    pub(crate) async fn run_snapshots(self: Arc<Self>, mut queue: mpsc::Receiver<Message>) {
        while let Some(message) = queue.recv().await {
            let status = self.transfer_snapshot(message).await;
            let counter = match status {
                SnapshotStatus::Finished => &self.shared.metrics.snapshots_sent,
                SnapshotStatus::Failed => &self.shared.metrics.snapshots_failed,
            };
            Metrics::add(counter, 1);
            self.shared.report(TransportEvent::Snapshot(self.peer, status)).await;
        }
    }

    /// Sends one snapshot, retrying (and resuming) transient failures until the deadline.
    async fn transfer_snapshot(&self, message: Message) -> SnapshotStatus {
        let config = &self.shared.config;
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + config.snapshot_deadline;
        let snapshot = match OutgoingSnapshot::new(message, config.snapshot_chunk_bytes) {
            Ok(snapshot) => snapshot,
            Err(e) => {
                error!(error = %e, "cannot send snapshot");
                return SnapshotStatus::Failed;
            }
        };
        let (total, index) =
            (snapshot.total_bytes(), snapshot.header().meta.as_ref().map_or(0, |m| m.index));
        if total > config.max_snapshot_bytes {
            error!(
                bytes = total,
                limit = config.max_snapshot_bytes,
                index,
                "snapshot larger than max_snapshot_bytes"
            );
            return SnapshotStatus::Failed;
        }
        let mut backoff =
            Backoff::new(config.backoff_initial, config.backoff_max, seed(index, self.peer));
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let error = match tokio::time::timeout_at(deadline, self.snapshot_attempt(&snapshot))
                .await
            {
                Ok(Ok(())) => {
                    info!(
                        index,
                        bytes = total,
                        attempts,
                        ms = started.elapsed().as_millis() as u64,
                        "snapshot sent"
                    );
                    return SnapshotStatus::Finished;
                }
                Ok(Err(error)) => error,
                Err(_) => {
                    warn!(index, attempts, deadline = ?config.snapshot_deadline, "snapshot transfer missed its deadline");
                    return SnapshotStatus::Failed;
                }
            };
            let delay = backoff.next_delay();
            if !error.is_transient() || tokio::time::Instant::now() + delay >= deadline {
                warn!(index, attempts, error = %error, "snapshot transfer failed");
                return SnapshotStatus::Failed;
            }
            if attempts == 1 {
                warn!(index, error = %error, "snapshot transfer interrupted; retrying");
            } else {
                debug!(index, attempts, error = %error, "snapshot transfer interrupted; retrying");
            }
            tokio::time::sleep(delay).await;
        }
    }

    /// One attempt: dial a fresh connection, send header, learn where to resume, send chunks,
    /// wait for the receiver's confirmation.
    async fn snapshot_attempt(&self, snapshot: &OutgoingSnapshot) -> Result<(), Error> {
        let config = &self.shared.config;
        let (peer, addr) = (self.peer, self.state.addr.as_str());
        let mut client = dial(config, peer, addr).await?;
        let (frames, frames_rx) = mpsc::channel(SNAPSHOT_FRAMES);
        for frame in [
            snapshot_frame::Frame::Handshake(self.handshake()),
            snapshot_frame::Frame::Header(snapshot.header().clone()),
        ] {
            frames
                .try_send(proto::SnapshotFrame { frame: Some(frame) })
                .expect("room for two frames");
        }
        let open = async {
            let response = client.snapshot(ReceiverStream::new(frames_rx)).await;
            let mut replies = response.map_err(|s| Error::status(peer, &s))?.into_inner();
            match replies.message().await {
                Ok(Some(proto::SnapshotReply {
                    reply: Some(snapshot_reply::Reply::Resume(r)),
                })) if r.offset <= snapshot.total_bytes() => Ok((replies, r.offset)),
                other => Err(self.snapshot_reply_error(other)),
            }
        };
        let (mut replies, mut offset) =
            within(config.connect_timeout, peer, addr, "snapshot handshake", open)
                .await
                .map_err(|e| self.explain_setup_failure(e))?;
        if offset > 0 {
            info!(offset, total = snapshot.total_bytes(), "resuming snapshot transfer");
        }
        while let Some(chunk) = snapshot.chunk_at(offset) {
            let len = chunk.data.len() as u64;
            tokio::select! {
                permit = frames.reserve() => match permit {
                    Ok(permit) => permit.send(proto::SnapshotFrame { frame: Some(snapshot_frame::Frame::Chunk(chunk)) }),
                    // The request side closed: the reply says why.
                    Err(_) => break,
                },
                reply = replies.message() => return Err(self.snapshot_reply_error(reply)),
            }
            Metrics::add(&self.shared.metrics.snapshot_bytes_sent, len);
            offset += len;
        }
        drop(frames);
        match replies.message().await {
            Ok(Some(proto::SnapshotReply { reply: Some(snapshot_reply::Reply::Done(d)) }))
                if d.total_bytes == snapshot.total_bytes() =>
            {
                Ok(())
            }
            other => Err(self.snapshot_reply_error(other)),
        }
    }

    fn snapshot_reply_error(
        &self,
        reply: Result<Option<proto::SnapshotReply>, tonic::Status>,
    ) -> Error {
        match reply {
            Err(status) => Error::status(self.peer, &status),
            Ok(None) => Error::Protocol {
                peer: self.peer,
                detail: "snapshot stream ended without SnapshotDone".into(),
            },
            Ok(Some(reply)) => Error::Protocol {
                peer: self.peer,
                detail: format!("unexpected snapshot reply {reply:?}"),
            },
        }
    }
}
