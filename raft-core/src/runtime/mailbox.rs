//! A node's inbound queues: what the transport delivers to it.

use tokio::sync::mpsc;

use crate::transport::TransportEvent;
use crate::types::Message;

/// The sending side of a node's inbound queues: give `messages` to the transport's server (what
/// peers send) and `events` to the transport itself (unreachable peers, snapshot outcomes).
#[derive(Clone, Debug)]
pub struct Mailbox {
    /// Messages from peers.
    pub messages: mpsc::Sender<Message>,
    /// Transport events.
    pub events: mpsc::Sender<TransportEvent>,
}

/// The receiving side of a node's inbound queues, handed to [`super::Node::start`].
#[derive(Debug)]
pub struct Inbox {
    pub(crate) messages: mpsc::Receiver<Message>,
    pub(crate) events: mpsc::Receiver<TransportEvent>,
}

/// Creates a node's inbound queues, each bounded to `capacity` (use
/// [`super::NodeConfig::inbound_queue`]). A full message queue makes the transport wait, which
/// backs up into its bounded per-peer queues.
pub fn mailbox(capacity: usize) -> (Mailbox, Inbox) {
    let (mtx, mrx) = mpsc::channel(capacity.max(1));
    let (etx, erx) = mpsc::channel(capacity.max(1));
    (Mailbox { messages: mtx, events: etx }, Inbox { messages: mrx, events: erx })
}
