//! What a node publishes about itself: its status (a watch) and its changes (a stream).

use crate::raft::PeerProgress;
use crate::types::{ConfState, Index, NodeId, Role, Term};

/// What a node is doing, published on every change ([`super::Node::watch_status`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeStatus {
    /// The node's id.
    pub id: NodeId,
    /// Its role.
    pub role: Role,
    /// Its current term.
    pub term: Term,
    /// The leader it knows of in this term.
    pub leader: Option<NodeId>,
    /// Highest index known committed.
    pub commit_index: Index,
    /// Highest index applied to the state machine.
    pub applied_index: Index,
    /// Last index of its log.
    pub last_index: Index,
    /// Index of the snapshot its log starts after.
    pub snapshot_index: Index,
    /// The membership.
    pub conf_state: ConfState,
    /// On a leader, each follower's replication progress.
    pub progress: Vec<PeerProgress>,
    /// This node knows it was removed from the cluster: it applied a configuration without
    /// itself, or a member told it so (it may never see its removal committed, since the
    /// leader stops replicating to it). It no longer campaigns; stop it.
    pub removed: bool,
    /// `Some(reason)` once the node stopped.
    pub stopped: Option<String>,
}

/// A change of leadership or membership, in the order the node saw them
/// ([`super::Node::events`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NodeEvent {
    /// The known leader or the term changed (`leader` is `None` while there is none).
    Leader {
        /// The node's term.
        term: Term,
        /// The leader it knows of.
        leader: Option<NodeId>,
        /// Whether that is this node.
        is_self: bool,
    },
    /// A new membership is in effect on this node (committed).
    Membership(ConfState),
    /// This node knows it was removed from the cluster.
    Removed,
    /// The node stopped (the reason).
    Stopped(String),
}
