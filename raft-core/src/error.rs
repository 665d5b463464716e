//! Typed errors of the core.

use crate::ids::{Index, NodeId};

/// Errors returned to callers of the core API. None of them leaves the core half-changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// This node is not the leader and cannot (or is configured not to) forward.
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader {
        /// The leader this node currently knows of, if any.
        leader_hint: Option<NodeId>,
    },
    /// No leader is known, so the request cannot be served or forwarded; retry later.
    #[error("no leader is known; retry after an election")]
    NoLeader,
    /// Accepting the proposal would exceed `Config::max_uncommitted_bytes`.
    #[error(
        "too many uncommitted bytes ({uncommitted_bytes} + {proposal_bytes} > {limit}); retry later"
    )]
    UncommittedLimit {
        /// Bytes of entries appended by this leader but not yet committed.
        uncommitted_bytes: u64,
        /// Size of the refused proposal.
        proposal_bytes: u64,
        /// The configured limit.
        limit: u64,
    },
    /// A single proposal is larger than `Config::max_proposal_bytes`.
    #[error("proposal of {bytes} bytes exceeds max_proposal_bytes={limit}")]
    ProposalTooLarge {
        /// Size of the refused proposal.
        bytes: u64,
        /// The configured limit.
        limit: u64,
    },
    /// Too many reads are waiting (`Config::max_pending_reads`).
    #[error("too many pending reads (limit {limit}); retry later")]
    ReadQueueFull {
        /// The configured limit.
        limit: usize,
    },
    /// A leadership transfer is in progress; proposals resume when it ends or times out.
    #[error("leadership transfer to node {target} in progress; retry shortly")]
    TransferInProgress {
        /// The node leadership is being transferred to.
        target: NodeId,
    },
    /// A leadership transfer that cannot be done.
    #[error("cannot transfer leadership to node {target}: {reason}")]
    InvalidTransfer {
        /// The requested target.
        target: NodeId,
        /// Why not (a `String`: a refusal of a forwarded transfer carries it over the wire).
        reason: String,
    },
    /// Another membership change is not yet applied; only one may be in progress at a time.
    #[error(
        "membership change at index {pending_index} is still in progress; retry after it is applied"
    )]
    ConfChangeInProgress {
        /// Log index of the change in progress.
        pending_index: Index,
    },
    /// A membership change refused as invalid (see the reason), or proposed before this leader
    /// committed an entry of its term.
    #[error("membership change refused: {reason}")]
    ConfChangeRefused {
        /// Why.
        reason: String,
    },
    /// A snapshot asked for at an index that is not applied, or already compacted.
    #[error("no snapshot metadata for index {index}: it must be in [{first}, {applied}]")]
    SnapshotOutOfRange {
        /// The index asked for.
        index: Index,
        /// The lowest possible (the current snapshot index).
        first: Index,
        /// The applied index.
        applied: Index,
    },
    /// A message that does not make sense (wrong recipient, non-contiguous entries, …). The message
    /// is dropped and the node keeps running.
    #[error("invalid message from node {from}: {reason}")]
    InvalidMessage {
        /// Sender named in the message.
        from: NodeId,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A persistence acknowledgement that does not match any outstanding batch.
    #[error("unknown persistence acknowledgement for ready #{number}")]
    UnknownReady {
        /// The batch number acknowledged.
        number: u64,
    },
    /// Applied index acknowledged beyond what was handed out for applying.
    #[error("applied index {applied} is beyond the committed entries handed out ({handed_out})")]
    AppliedBeyondCommitted {
        /// The index acknowledged.
        applied: Index,
        /// The last index handed out in `Ready::committed_entries`.
        handed_out: Index,
    },
    /// The configuration breaks a rule (see [`ConfigError`]).
    #[error(transparent)]
    InvalidConfig(#[from] ConfigError),
    /// Storage failed; see the inner error.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl Error {
    /// Whether this is an error a leader refuses a request with, or that a node answers a
    /// request it cannot carry out with: the errors of `propose`, `propose_conf_change` and
    /// `transfer_leader` other than bad input. These, and only these, are what
    /// [`crate::MessageBody::Refused`] carries.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            Error::NotLeader { .. }
                | Error::NoLeader
                | Error::UncommittedLimit { .. }
                | Error::ProposalTooLarge { .. }
                | Error::TransferInProgress { .. }
                | Error::InvalidTransfer { .. }
                | Error::ConfChangeInProgress { .. }
                | Error::ConfChangeRefused { .. }
        )
    }

    /// Bytes of free text this error carries (for message size estimates).
    pub(crate) fn reason_bytes(&self) -> u64 {
        match self {
            Error::InvalidTransfer { reason, .. } | Error::ConfChangeRefused { reason } => {
                reason.len() as u64
            }
            _ => 0,
        }
    }
}

/// Errors from a [`crate::Storage`] implementation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    /// The requested index was compacted away.
    #[error("log index {index} is compacted")]
    Compacted {
        /// The requested index.
        index: Index,
    },
    /// The requested index is beyond the last index.
    #[error("log index {index} is not available (last index {last_index})")]
    Unavailable {
        /// The requested index.
        index: Index,
        /// The storage's last index.
        last_index: Index,
    },
    /// Stored data failed validation (checksum, sequence). Fatal: the node must not serve it.
    #[error("storage corrupt at {what}: {detail}")]
    Corrupt {
        /// Which record or file.
        what: String,
        /// What was found wrong.
        detail: String,
    },
    /// An I/O error from the underlying medium.
    #[error("storage I/O error: {0}")]
    Io(String),
}

/// A `Config` that breaks a rule; names the field and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid config: {field}: {rule}")]
pub struct ConfigError {
    /// The field (or fields) at fault.
    pub field: &'static str,
    /// The rule it breaks.
    pub rule: String,
}
