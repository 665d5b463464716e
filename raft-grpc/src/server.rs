//! The receiving side: a tonic service that checks each stream's handshake, decodes batches and
//! reassembles snapshots, and hands the resulting messages to the node.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use prost::Message as _;
use raft_core::{Message, NodeId};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status, Streaming};
use tracing::{Instrument, debug, info, warn};

use crate::PROTOCOL_VERSION;
use crate::error::WireError;
use crate::metrics::Metrics;
use crate::proto::raft_transport_server::RaftTransport;
use crate::proto::{self, message_frame, message_reply, snapshot_frame, snapshot_reply};
use crate::snapshot::{Reassembly, SnapshotId};
use crate::transport::Shared;
use crate::wire::batch_from_wire;

/// Bookkeeping for inbound streams.
#[derive(Debug, Default)]
pub(crate) struct InboundState {
    /// The newest message stream of each peer; older ones end at their next frame (a peer
    /// reconnects only when its old stream is dead to it).
    streams: Mutex<HashMap<NodeId, u64>>,
    next_stream: AtomicU64,
    /// At most one snapshot transfer per peer, and at most one partial snapshot per peer kept
    /// for resuming; partials expire after `snapshot_deadline`.
    snapshots: Mutex<HashMap<NodeId, Slot>>,
}

#[derive(Debug)]
enum Slot {
    /// A transfer is running.
    Busy,
    /// An interrupted transfer's verified prefix.
    Partial { reassembly: Box<Reassembly>, since: Instant },
}

impl InboundState {
    fn claim_stream(&self, peer: NodeId) -> u64 {
        let id = self.next_stream.fetch_add(1, Ordering::Relaxed);
        lock(&self.streams).insert(peer, id);
        id
    }

    fn is_current_stream(&self, peer: NodeId, id: u64) -> bool {
        lock(&self.streams).get(&peer) == Some(&id)
    }

    /// Drops what is kept for a removed peer.
    pub(crate) fn forget(&self, peer: NodeId) {
        lock(&self.streams).remove(&peer);
        lock(&self.snapshots).remove(&peer);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The tonic service. Get one, wrapped with the configured limits, from
/// [`crate::GrpcTransport::service`].
#[derive(Clone, Debug)]
pub struct RaftService {
    shared: Arc<Shared>,
    inbound: mpsc::Sender<Message>,
    shutdown: Option<watch::Receiver<bool>>,
}

impl RaftService {
    pub(crate) fn new(
        shared: Arc<Shared>,
        inbound: mpsc::Sender<Message>,
        shutdown: Option<watch::Receiver<bool>>,
    ) -> RaftService {
        RaftService { shared, inbound, shutdown }
    }

    fn node_id(&self) -> NodeId {
        self.shared.config.node_id
    }

    /// Checks a stream's handshake; returns the peer's id, or the status that refuses it (logged
    /// as a warning the first time for this claimed identity and reason).
    fn check_handshake(
        &self,
        hs: &proto::Handshake,
        stream: &'static str,
        remote: Option<SocketAddr>,
    ) -> Result<NodeId, Status> {
        let config = &self.shared.config;
        let (reason, status) = if hs.protocol_version != PROTOCOL_VERSION {
            let msg = format!(
                "protocol version mismatch: node {} speaks version {PROTOCOL_VERSION}, the peer speaks {}",
                config.node_id, hs.protocol_version
            );
            ("protocol version", Status::failed_precondition(msg))
        } else if hs.cluster_id != config.cluster_id {
            // The expected cluster id stays out of the reply (it is logged here instead).
            let msg = format!(
                "cluster id mismatch: node {} is not in the cluster the peer (node {}) claims, {:#x}",
                config.node_id, hs.from, hs.cluster_id
            );
            ("cluster id", Status::permission_denied(msg))
        } else if hs.to != config.node_id {
            let msg = format!(
                "wrong node: this is node {}, the peer (node {}) meant node {}",
                config.node_id, hs.from, hs.to
            );
            ("wrong node", Status::permission_denied(msg))
        } else if hs.from == 0 || hs.from == config.node_id || !self.shared.is_member(hs.from) {
            let msg = format!("unknown node id {}: not a peer of node {}", hs.from, config.node_id);
            ("unknown node", Status::permission_denied(msg))
        } else {
            return Ok(hs.from);
        };
        Metrics::add(&self.shared.metrics.handshakes_rejected, 1);
        if self.shared.refusals.first(reason, hs.cluster_id, hs.from) {
            warn!(node = config.node_id, stream, remote = ?remote, cluster_id = hs.cluster_id,
                expected_cluster_id = config.cluster_id, from = hs.from, to = hs.to,
                reason = status.message(), "refused a stream");
        } else {
            debug!(node = config.node_id, stream, remote = ?remote, reason = status.message(), "refused a stream again");
        }
        Err(status)
    }

    /// Counts and logs (once per peer and kind) a frame that ends a stream, and passes its
    /// status on to the sender.
    fn refuse_frame(&self, peer: NodeId, status: Status) -> Status {
        Metrics::add(&self.shared.metrics.frames_rejected, 1);
        if self.shared.refusals.first("frame", peer, status.code() as u64) {
            warn!(peer, code = ?status.code(), reason = status.message(), "refused a frame; closing the stream");
        } else {
            debug!(peer, code = ?status.code(), reason = status.message(), "refused a frame again");
        }
        status
    }

    /// A stream error from tonic: a frame that did not decode or was too large is the peer's
    /// fault (refused and logged); anything else is the connection going away.
    fn stream_error(&self, peer: NodeId, status: Status) -> Status {
        match status.code() {
            Code::Internal
            | Code::OutOfRange
            | Code::ResourceExhausted
            | Code::InvalidArgument
            | Code::DeadlineExceeded => self.refuse_frame(peer, status),
            _ => {
                debug!(peer, error = %status, "inbound stream ended");
                status
            }
        }
    }

    async fn closed(shutdown: &mut Option<watch::Receiver<bool>>) {
        match shutdown {
            Some(rx) => {
                // An error means the server is gone: also a reason to stop.
                let _ = rx.wait_for(|stop| *stop).await;
            }
            None => std::future::pending().await,
        }
    }

    fn shutting_down(&self) -> Status {
        Status::unavailable(format!("node {} is shutting down", self.node_id()))
    }

    async fn receive_messages(
        self,
        peer: NodeId,
        stream_id: u64,
        mut frames: Streaming<proto::MessageFrame>,
        replies: mpsc::Sender<Result<proto::MessageReply, Status>>,
    ) {
        let mut shutdown = self.shutdown.clone();
        let result = loop {
            let frame = tokio::select! {
                frame = frames.message() => frame,
                () = replies.closed() => break Ok(()),
                () = Self::closed(&mut shutdown) => break Err(self.shutting_down()),
            };
            let batch = match frame {
                Ok(None) => break Ok(()),
                Err(status) => break Err(self.stream_error(peer, status)),
                Ok(Some(proto::MessageFrame {
                    frame: Some(message_frame::Frame::Batch(batch)),
                })) => batch,
                Ok(Some(_)) => {
                    let status = Status::invalid_argument(
                        "unexpected frame after the handshake: only MessageBatch may follow",
                    );
                    break Err(self.refuse_frame(peer, status));
                }
            };
            if !self.shared.is_member(peer) {
                break Err(Status::permission_denied(format!(
                    "node {peer} is no longer a peer of node {}",
                    self.node_id()
                )));
            }
            if !self.shared.inbound.is_current_stream(peer, stream_id) {
                break Err(Status::aborted(format!(
                    "superseded by a newer stream from node {peer}"
                )));
            }
            if let Err(status) = self.deliver_batch(peer, batch).await {
                break Err(status);
            }
        };
        if let Err(status) = result {
            let _ = replies.send(Err(status)).await;
        }
    }

    /// Decodes and checks a whole batch, then hands its messages to the node in order.
    async fn deliver_batch(&self, peer: NodeId, batch: proto::MessageBatch) -> Result<(), Status> {
        let bytes = batch.encoded_len() as u64;
        let messages = batch_from_wire(batch).map_err(|e| {
            self.refuse_frame(
                peer,
                Status::invalid_argument(format!("malformed message from node {peer}: {e}")),
            )
        })?;
        for m in &messages {
            if m.from != peer || m.to != self.node_id() {
                let msg = format!(
                    "message from node {} to node {} on the stream from node {peer} to node {}",
                    m.from,
                    m.to,
                    self.node_id()
                );
                return Err(self.refuse_frame(peer, Status::invalid_argument(msg)));
            }
        }
        let metrics = &self.shared.metrics;
        Metrics::add(&metrics.bytes_received, bytes);
        Metrics::add(&metrics.messages_received, messages.len() as u64);
        for m in messages {
            self.inbound.send(m).await.map_err(|_| self.shutting_down())?;
        }
        Ok(())
    }

    /// Claims the peer's snapshot slot and returns the reassembly to continue: the kept partial
    /// copy if it is the same snapshot, else a new one.
    fn begin_snapshot(
        &self,
        peer: NodeId,
        header: proto::SnapshotHeader,
    ) -> Result<Reassembly, Status> {
        let config = &self.shared.config;
        if header.from != peer || header.to != config.node_id {
            let msg = format!(
                "snapshot header from node {} to node {} on a stream from node {peer}",
                header.from, header.to
            );
            return Err(self.refuse_frame(peer, Status::invalid_argument(msg)));
        }
        let id = SnapshotId::of(&header);
        let mut slots = lock(&self.shared.inbound.snapshots);
        slots.retain(|_, s| !matches!(s, Slot::Partial { since, .. } if since.elapsed() > config.snapshot_deadline));
        let reassembly = match slots.remove(&peer) {
            Some(Slot::Busy) => {
                slots.insert(peer, Slot::Busy);
                return Err(Status::aborted(format!(
                    "a snapshot transfer from node {peer} is already in progress"
                )));
            }
            Some(Slot::Partial { reassembly, .. }) if Some(*reassembly.id()) == id => *reassembly,
            _ => Reassembly::new(header, config.max_snapshot_bytes).map_err(|e| {
                let status = match e {
                    WireError::TooLarge { .. } => Status::resource_exhausted(e.to_string()),
                    _ => Status::invalid_argument(format!("malformed snapshot header: {e}")),
                };
                self.refuse_frame(peer, status)
            })?,
        };
        slots.insert(peer, Slot::Busy);
        Ok(reassembly)
    }

    async fn receive_snapshot(
        self,
        peer: NodeId,
        reassembly: Reassembly,
        mut frames: Streaming<proto::SnapshotFrame>,
        replies: mpsc::Sender<Result<proto::SnapshotReply, Status>>,
    ) {
        let deadline = tokio::time::Instant::now() + self.shared.config.snapshot_deadline;
        let mut slot = SlotGuard { shared: &self.shared, peer, reassembly: Some(reassembly) };
        let received = tokio::time::timeout_at(
            deadline,
            self.receive_chunks(&mut slot, &mut frames, &replies),
        )
        .await;
        let result = match received {
            Err(_) => Err(Status::deadline_exceeded(format!(
                "snapshot transfer exceeded its deadline of {:?}",
                self.shared.config.snapshot_deadline
            ))),
            Ok(Err(status)) => Err(status),
            Ok(Ok(())) => self.complete_snapshot(peer, slot.take(), deadline).await,
        };
        drop(slot); // keeps a partial copy for resuming, or frees the slot
        let reply = result.map(|total_bytes| proto::SnapshotReply {
            reply: Some(snapshot_reply::Reply::Done(proto::SnapshotDone { total_bytes })),
        });
        let _ = replies.send(reply).await;
    }

    async fn receive_chunks(
        &self,
        slot: &mut SlotGuard<'_>,
        frames: &mut Streaming<proto::SnapshotFrame>,
        replies: &mpsc::Sender<Result<proto::SnapshotReply, Status>>,
    ) -> Result<(), Status> {
        let reassembly =
            slot.reassembly.as_mut().expect("the guard holds the reassembly until taken");
        let peer = slot.peer;
        let mut shutdown = self.shutdown.clone();
        while !reassembly.is_complete() {
            let frame = tokio::select! {
                frame = frames.message() => frame,
                () = replies.closed() => return Err(Status::cancelled("the sender went away")),
                () = Self::closed(&mut shutdown) => return Err(self.shutting_down()),
            };
            let chunk = match frame {
                Ok(Some(proto::SnapshotFrame {
                    frame: Some(snapshot_frame::Frame::Chunk(chunk)),
                })) => chunk,
                Ok(Some(_)) => {
                    let status = Status::invalid_argument(
                        "only SnapshotChunk frames may follow the snapshot header",
                    );
                    return Err(self.refuse_frame(peer, status));
                }
                Ok(None) => {
                    return Err(Status::aborted(format!(
                        "snapshot stream ended after {} of {} bytes",
                        reassembly.received(),
                        reassembly.id().total_bytes
                    )));
                }
                Err(status) => return Err(self.stream_error(peer, status)),
            };
            reassembly.push(&chunk).map_err(|e| {
                let status = match e {
                    WireError::Checksum { .. } => Status::data_loss(e.to_string()),
                    _ => Status::invalid_argument(e.to_string()),
                };
                self.refuse_frame(peer, status)
            })?;
            Metrics::add(&self.shared.metrics.snapshot_bytes_received, chunk.data.len() as u64);
        }
        Ok(())
    }

    /// Verifies the whole snapshot and hands it to the node; returns its size.
    async fn complete_snapshot(
        &self,
        peer: NodeId,
        reassembly: Reassembly,
        deadline: tokio::time::Instant,
    ) -> Result<u64, Status> {
        let (index, total) = (reassembly.id().index, reassembly.id().total_bytes);
        let message = reassembly
            .finish()
            .map_err(|e| self.refuse_frame(peer, Status::data_loss(e.to_string())))?;
        match tokio::time::timeout_at(deadline, self.inbound.send(message)).await {
            Ok(Ok(())) => {
                Metrics::add(&self.shared.metrics.snapshots_received, 1);
                info!(peer, index, bytes = total, "snapshot received");
                Ok(total)
            }
            Ok(Err(_)) => Err(self.shutting_down()),
            Err(_) => Err(Status::deadline_exceeded(
                "the node did not take the snapshot before the deadline",
            )),
        }
    }
}

/// Holds a peer's snapshot slot while a transfer runs. Dropped with the reassembly still inside
/// (the transfer failed), it keeps the verified prefix for a resumed attempt; otherwise it frees
/// the slot.
struct SlotGuard<'a> {
    shared: &'a Shared,
    peer: NodeId,
    reassembly: Option<Reassembly>,
}

impl SlotGuard<'_> {
    fn take(&mut self) -> Reassembly {
        self.reassembly.take().expect("taken once")
    }
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        let mut slots = lock(&self.shared.inbound.snapshots);
        if !matches!(slots.get(&self.peer), Some(Slot::Busy)) {
            return; // the peer was removed meanwhile
        }
        match self.reassembly.take() {
            Some(reassembly) if reassembly.received() > 0 => {
                slots.insert(
                    self.peer,
                    Slot::Partial { reassembly: Box::new(reassembly), since: Instant::now() },
                );
            }
            _ => {
                slots.remove(&self.peer);
            }
        }
    }
}

const NO_HANDSHAKE: &str = "the first frame of a stream must be a Handshake";

/// Reads the first frame(s) of a stream, bounded by `connect_timeout`.
async fn next_frame<T>(
    frames: &mut Streaming<T>,
    limit: std::time::Duration,
    what: &str,
) -> Result<T, Status> {
    match tokio::time::timeout(limit, frames.message()).await {
        Ok(Ok(Some(frame))) => Ok(frame),
        Ok(Ok(None)) => {
            Err(Status::invalid_argument(format!("the stream ended before the {what}")))
        }
        Ok(Err(status)) => Err(status),
        Err(_) => Err(Status::deadline_exceeded(format!("no {what} within {limit:?}"))),
    }
}

#[tonic::async_trait]
impl RaftTransport for RaftService {
    type MessagesStream = ReceiverStream<Result<proto::MessageReply, Status>>;
    type SnapshotStream = ReceiverStream<Result<proto::SnapshotReply, Status>>;

    async fn messages(
        &self,
        request: Request<Streaming<proto::MessageFrame>>,
    ) -> Result<Response<Self::MessagesStream>, Status> {
        let remote = request.remote_addr();
        let mut frames = request.into_inner();
        let limit = self.shared.config.connect_timeout;
        // Refusals before the handshake are counted and logged as from node 0 (unidentified).
        let first = next_frame(&mut frames, limit, "handshake")
            .await
            .map_err(|s| self.stream_error(0, s))?;
        let hs = match first.frame {
            Some(message_frame::Frame::Handshake(hs)) => hs,
            _ => return Err(self.refuse_frame(0, Status::invalid_argument(NO_HANDSHAKE))),
        };
        let peer = self.check_handshake(&hs, "messages", remote)?;
        let stream_id = self.shared.inbound.claim_stream(peer);
        let (replies, replies_rx) = mpsc::channel(1);
        let accepted = proto::HandshakeAccepted {
            cluster_id: self.shared.config.cluster_id,
            node_id: self.node_id(),
        };
        let _ = replies.try_send(Ok(proto::MessageReply {
            reply: Some(message_reply::Reply::Accepted(accepted)),
        }));
        debug!(peer, remote = ?remote, "accepted a message stream");
        let span = tracing::info_span!("raft_inbound", node = self.node_id(), peer);
        tokio::spawn(
            self.clone().receive_messages(peer, stream_id, frames, replies).instrument(span),
        );
        Ok(Response::new(ReceiverStream::new(replies_rx)))
    }

    async fn snapshot(
        &self,
        request: Request<Streaming<proto::SnapshotFrame>>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        let remote = request.remote_addr();
        let mut frames = request.into_inner();
        let limit = self.shared.config.connect_timeout;
        let first = next_frame(&mut frames, limit, "handshake")
            .await
            .map_err(|s| self.stream_error(0, s))?;
        let hs = match first.frame {
            Some(snapshot_frame::Frame::Handshake(hs)) => hs,
            _ => return Err(self.refuse_frame(0, Status::invalid_argument(NO_HANDSHAKE))),
        };
        let peer = self.check_handshake(&hs, "snapshot", remote)?;
        let header = match next_frame(&mut frames, limit, "snapshot header")
            .await
            .map_err(|s| self.stream_error(peer, s))?
            .frame
        {
            Some(snapshot_frame::Frame::Header(header)) => header,
            _ => {
                let status = Status::invalid_argument(
                    "the frame after the handshake must be a SnapshotHeader",
                );
                return Err(self.refuse_frame(peer, status));
            }
        };
        let reassembly = self.begin_snapshot(peer, header)?;
        let offset = reassembly.received();
        let (replies, replies_rx) = mpsc::channel(2);
        let resume = proto::SnapshotResume { offset };
        let _ = replies.try_send(Ok(proto::SnapshotReply {
            reply: Some(snapshot_reply::Reply::Resume(resume)),
        }));
        debug!(peer, offset, total = reassembly.id().total_bytes, "accepted a snapshot stream");
        let span = tracing::info_span!("raft_inbound_snapshot", node = self.node_id(), peer);
        tokio::spawn(
            self.clone().receive_snapshot(peer, reassembly, frames, replies).instrument(span),
        );
        Ok(Response::new(ReceiverStream::new(replies_rx)))
    }
}
