//! The transport contract: how a driver hands messages to the network and hears back about
//! peers. Implemented by `raft-grpc` and by in-memory transports in tests.

use crate::types::{Message, NodeId};

/// How a snapshot transfer to a peer ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SnapshotStatus {
    /// The peer received the whole snapshot and handed it to its core.
    Finished,
    /// The transfer failed (peer down, deadline passed, checksum mismatch); the leader falls back
    /// to probing and retries later.
    Failed,
}

/// Something the transport observed that the core must be told about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransportEvent {
    /// A message to this peer could not be delivered (connection failed, queue full): the leader
    /// stops pipelining to it and probes instead.
    Unreachable(NodeId),
    /// A snapshot transfer to this peer ended.
    Snapshot(NodeId, SnapshotStatus),
}

/// Sends messages to peers.
///
/// Contract for implementations:
/// - `send` never blocks and never grows without bound: each peer has a bounded queue, and a
///   message that does not fit is dropped (Raft retries) and reported as
///   [`TransportEvent::Unreachable`].
/// - Messages to one peer are delivered in the order given, or not at all.
/// - A [`crate::MessageBody::InstallSnapshot`] may be streamed in chunks; its outcome is reported
///   as [`TransportEvent::Snapshot`].
/// - Messages received from peers are passed to the driver, which steps them into the core; a
///   peer from another cluster or an unknown node is refused before that.
pub trait Transport: Send + Sync {
    /// Queues messages for sending.
    fn send(&self, messages: Vec<Message>);

    /// Starts sending to a new peer at `addr` (or changes its address). Called by the runtime
    /// when a member's address is applied from the log. The default does nothing (for
    /// transports that route by id alone).
    fn add_peer(&self, id: NodeId, addr: &str) -> Result<(), String> {
        let _ = (id, addr);
        Ok(())
    }

    /// Stops sending to a peer that left the cluster, and refuses its messages from now on.
    /// The default does nothing.
    fn remove_peer(&self, id: NodeId) {
        let _ = id;
    }
}
