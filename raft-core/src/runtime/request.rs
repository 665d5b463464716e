//! What a [`super::Node`] handle asks of the driver, and how it is answered: every request
//! carries its own reply channel, so whoever holds the request owns its answer.

use bytes::Bytes;
use tokio::sync::oneshot;

use super::config::{NodeError, ReadConsistency};
use crate::types::{ConfChange, ConfState, Index, NodeId};

/// Where one request's answer goes.
pub(crate) type Reply<T> = oneshot::Sender<Result<T, NodeError>>;

/// A request to the driver.
pub(crate) enum Request {
    /// An encoded runtime entry (see `envelope`), numbered `proposal` by the handle.
    Propose {
        proposal: u64,
        data: Bytes,
        reply: Reply<Bytes>,
    },
    Read {
        consistency: ReadConsistency,
        read: Read,
    },
    /// Propose a membership change (forwarded to the leader by the core on a follower); answered
    /// once the resulting configuration is in effect on this node.
    ConfChange {
        change: ConfChange,
        reply: Reply<ConfState>,
    },
    /// Hand leadership to `to`; answered once this node sees `to` lead.
    Transfer {
        to: NodeId,
        reply: Reply<()>,
    },
    Campaign,
    Snapshot {
        reply: Reply<Index>,
    },
    Stop {
        reply: oneshot::Sender<()>,
    },
}

/// A read: a query of the state machine, or a barrier (nothing to query: answered with the
/// index this node had applied, at least the read index, when it was served).
pub(crate) enum Read {
    Query { query: Bytes, reply: Reply<Bytes> },
    Barrier { reply: Reply<Index> },
}

impl Read {
    pub(crate) fn fail(self, error: NodeError) {
        match self {
            Read::Query { reply, .. } => drop(reply.send(Err(error))),
            Read::Barrier { reply } => drop(reply.send(Err(error))),
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        match self {
            Read::Query { reply, .. } => reply.is_closed(),
            Read::Barrier { reply } => reply.is_closed(),
        }
    }
}
