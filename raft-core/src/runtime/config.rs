//! The runtime's configuration and errors.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::config::Config;
use crate::error::{ConfigError, Error};
use crate::types::NodeId;

/// How a node is run: the core's [`Config`] plus timing, queue bounds and policies of the runtime.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The core's configuration (id, election and heartbeat ticks, limits, read mode).
    pub raft: Config,
    /// Wall-clock length of one tick. Election timeout = `raft.election_timeout_ticks` ticks.
    pub tick_interval: Duration,
    /// How long [`crate::runtime::Node::propose`] and membership calls wait for their entry to be
    /// applied before answering [`NodeError::Timeout`] (the command may still be applied later).
    /// A proposal's deadline is checked on each tick, so its caller hears of it up to one
    /// `tick_interval` later.
    pub proposal_timeout: Duration,
    /// How long a read waits for the leader's confirmation and for the state machine to catch up.
    pub read_timeout: Duration,
    /// Proposals and reads waiting for an answer on this node; more are refused with
    /// [`NodeError::TooBusy`].
    pub max_pending_requests: usize,
    /// Most commands proposed as one batch (one log append and one fsync for all of them).
    pub max_batch_commands: usize,
    /// Jobs queued for the applier (batches of committed entries, reads to serve, proposals to
    /// answer). While it is full the driver takes no new requests (they wait in their own
    /// bounded queue) and the core hands out no more committed entries than
    /// `Config::max_unapplied_entries`.
    pub apply_queue_batches: usize,
    /// Batches queued for the persister (written, waiting for their fsync); the driver waits
    /// when it is full.
    pub persist_queue_batches: usize,
    /// Leadership and membership changes queued for each [`crate::runtime::Node::events`]
    /// receiver; one that falls further behind skips to the latest.
    pub event_queue: usize,
    /// Messages and transport events queued from the transport to the node.
    pub inbound_queue: usize,
    /// Take a snapshot (and compact the log) after this many entries were applied since the last
    /// one; 0 disables automatic snapshots.
    pub snapshot_entries: u64,
    /// Most client sessions kept; opening one more evicts the least recently used.
    pub max_sessions: usize,
    /// A session unused for this many log entries expires (deterministic: measured in the log).
    pub session_idle_entries: u64,
    /// Transport addresses of the initial members (this node included), for nodes that start a
    /// new cluster. Later changes travel through the log.
    pub initial_members: BTreeMap<NodeId, String>,
    /// How long a graceful shutdown of a leader waits for leadership to move (at most two
    /// election timeouts: the core abandons a transfer after one).
    pub shutdown_transfer_timeout: Duration,
}

impl NodeConfig {
    /// Defaults around `raft`: 100 ms ticks (with the core's defaults, a 100 ms heartbeat and a
    /// 1 s election timeout, like etcd), 5 s proposal and read timeouts, 4096 pending requests,
    /// a snapshot every 10 000 entries.
    pub fn new(raft: Config) -> NodeConfig {
        NodeConfig {
            raft,
            tick_interval: Duration::from_millis(100),
            proposal_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(5),
            max_pending_requests: 4096,
            max_batch_commands: 1024,
            apply_queue_batches: 256,
            persist_queue_batches: 1024,
            event_queue: 64,
            inbound_queue: 4096,
            snapshot_entries: 10_000,
            max_sessions: 10_000,
            session_idle_entries: 10_000_000,
            initial_members: BTreeMap::new(),
            shutdown_transfer_timeout: Duration::from_secs(3),
        }
    }

    /// Checks the core's config and every runtime bound.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.raft.validate()?;
        let fail =
            |field: &'static str, rule: &str| Err(ConfigError { field, rule: rule.to_string() });
        if self.tick_interval.is_zero() {
            return fail("tick_interval", "must be positive");
        }
        if self.proposal_timeout.is_zero() || self.read_timeout.is_zero() {
            return fail("proposal_timeout/read_timeout", "must be positive");
        }
        for (field, v) in [
            ("max_pending_requests", self.max_pending_requests),
            ("max_batch_commands", self.max_batch_commands),
            ("apply_queue_batches", self.apply_queue_batches),
            ("persist_queue_batches", self.persist_queue_batches),
            ("event_queue", self.event_queue),
            ("inbound_queue", self.inbound_queue),
            ("max_sessions", self.max_sessions),
        ] {
            if v == 0 {
                return fail(field, "must be at least 1");
            }
        }
        if self.max_batch_commands > self.max_pending_requests {
            return fail("max_batch_commands", "must not exceed max_pending_requests");
        }
        if self.session_idle_entries == 0 {
            return fail("session_idle_entries", "must be at least 1");
        }
        if self.initial_members.contains_key(&0) {
            return fail("initial_members", "node id 0 is reserved");
        }
        Ok(())
    }
}

/// Why a request to a [`crate::runtime::Node`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    /// This node is not the leader (and forwarding is off, or the request cannot be forwarded).
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader {
        /// The leader this node knows of, if any.
        leader_hint: Option<NodeId>,
    },
    /// No answer within the configured timeout. A proposal may still be applied later; use a
    /// session to retry it safely.
    #[error("timed out waiting for the cluster")]
    Timeout,
    /// A proposal this node made later has been applied and this one has not: it was almost
    /// certainly lost on its way into the log (the leader refused it, or the message forwarding
    /// it was dropped under overload or a leader change), and the caller hears so at once
    /// instead of after `proposal_timeout`. As with [`NodeError::Timeout`] the outcome is not
    /// certain: a forwarded message held up in a transport across a reconnect and a change of
    /// leader can still be appended later. Retry through a session for exactly-once.
    #[error(
        "a later proposal was applied first: this one was most likely dropped (outcome unknown)"
    )]
    Overtaken,
    /// Too many requests are waiting on this node, or the core's queues are full; retry later.
    #[error("node is too busy ({0}); retry later")]
    TooBusy(String),
    /// The node is shutting down or has stopped.
    #[error("node is shutting down")]
    ShuttingDown,
    /// The session is unknown or expired: open a new one.
    #[error("client session {client} is unknown or expired")]
    SessionExpired {
        /// The session id.
        client: u64,
    },
    /// A request older than the session's last applied one; its response is no longer kept.
    #[error("request {seq} of session {client} is older than its last request {last_seq}")]
    StaleRequest {
        /// The session id.
        client: u64,
        /// The request's sequence number.
        seq: u64,
        /// The last applied sequence number.
        last_seq: u64,
    },
    /// Lease reads were asked for but the node is not configured for them
    /// (`Config::read_mode`).
    #[error("lease reads are not enabled (set Config::read_mode = ReadMode::Lease)")]
    LeaseReadsDisabled,
    /// The core refused the request (see the inner error).
    #[error(transparent)]
    Raft(Error),
    /// The state machine failed; the node stopped.
    #[error("state machine failed: {0}")]
    StateMachine(String),
    /// The node hit a fatal error (storage) and stopped.
    #[error("node stopped after a fatal error: {0}")]
    Fatal(String),
}

impl From<Error> for NodeError {
    fn from(e: Error) -> NodeError {
        match e {
            Error::NotLeader { leader_hint } => NodeError::NotLeader { leader_hint },
            Error::NoLeader => NodeError::NotLeader { leader_hint: None },
            Error::UncommittedLimit { .. } | Error::ReadQueueFull { .. } => {
                NodeError::TooBusy(e.to_string())
            }
            other => NodeError::Raft(other),
        }
    }
}

/// How fresh a read must be.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ReadConsistency {
    /// Linearizable: the leader confirms it is still the leader (ReadIndex: a heartbeat round
    /// acknowledged by a quorum, or its lease when `Config::read_mode` is `Lease`) and the
    /// read waits until this node applied the leader's commit index. Works on any member.
    #[default]
    Linearizable,
    /// Linearizable through the leader's lease, without a heartbeat round. Needs
    /// `Config::read_mode = ReadMode::Lease` (which requires CheckQuorum and a clock-drift bound).
    Lease,
    /// Whatever this node has applied, with no check: may be stale, even on the leader.
    Stale,
}
