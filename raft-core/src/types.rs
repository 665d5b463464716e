//! Wire-independent Raft data: log entries, hard state and messages.
//!
//! These are plain data. Transports convert them to and from their wire format (see `raft-grpc`);
//! storage persists [`Entry`] and [`HardState`].

use bytes::Bytes;

use crate::error::Error;

pub use crate::ids::{Index, NodeId, Term};

/// What a log entry carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// An application command, handed to the state machine when committed.
    Normal,
    /// The empty entry a new leader appends to commit entries of earlier terms (§5.4.2, §8).
    Empty,
    /// A membership change; `data` is the resulting configuration, an encoded [`ConfState`]. It
    /// takes effect when committed.
    ConfChange,
}

/// One step of a membership change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConfChangeOp {
    /// Add a voter, or promote a learner to voter.
    AddVoter(NodeId),
    /// Add a learner (receives the log, does not vote), or demote a voter.
    AddLearner(NodeId),
    /// Remove a voter or learner.
    Remove(NodeId),
}

/// How a membership change moves between configurations (§6 of the Raft paper).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum ConfChangeTransition {
    /// One voter added or removed: applied directly; several changes: through a joint
    /// configuration that the leader leaves automatically once it is committed.
    #[default]
    Auto,
    /// Enter a joint configuration and stay there until an explicit [`ConfChange::leave_joint`].
    JointExplicit,
}

/// A membership change, proposed with `Raft::propose_conf_change`. The leader turns it into the
/// resulting [`ConfState`], which an entry of kind [`EntryKind::ConfChange`] carries.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct ConfChange {
    /// The changes; empty means "leave the joint configuration".
    pub ops: Vec<ConfChangeOp>,
    /// How to move to the new configuration.
    pub transition: ConfChangeTransition,
}

impl ConfChange {
    /// The change that leaves a joint configuration.
    pub fn leave_joint() -> ConfChange {
        ConfChange { ops: Vec::new(), transition: ConfChangeTransition::Auto }
    }

    /// Encodes the change (for transports and clients that forward it).
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(2 + 9 * self.ops.len());
        out.push(match self.transition {
            ConfChangeTransition::Auto => 0,
            ConfChangeTransition::JointExplicit => 1,
        });
        for op in &self.ops {
            let (tag, id) = match *op {
                ConfChangeOp::AddVoter(id) => (0u8, id),
                ConfChangeOp::AddLearner(id) => (1, id),
                ConfChangeOp::Remove(id) => (2, id),
            };
            out.push(tag);
            out.extend_from_slice(&id.to_le_bytes());
        }
        Bytes::from(out)
    }

    /// Decodes an entry payload; `None` if it is not a valid encoding.
    pub fn decode(data: &[u8]) -> Option<ConfChange> {
        let (&t, rest) = data.split_first()?;
        let transition = match t {
            0 => ConfChangeTransition::Auto,
            1 => ConfChangeTransition::JointExplicit,
            _ => return None,
        };
        if rest.len() % 9 != 0 {
            return None;
        }
        let mut ops = Vec::with_capacity(rest.len() / 9);
        for chunk in rest.chunks_exact(9) {
            let id = u64::from_le_bytes(chunk[1..9].try_into().ok()?);
            ops.push(match chunk[0] {
                0 => ConfChangeOp::AddVoter(id),
                1 => ConfChangeOp::AddLearner(id),
                2 => ConfChangeOp::Remove(id),
                _ => return None,
            });
        }
        Some(ConfChange { ops, transition })
    }
}

/// Cluster membership as stored with the log and in snapshots.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ConfState {
    /// Voting members (of the incoming configuration when joint).
    pub voters: Vec<NodeId>,
    /// Non-voting members that receive the log.
    pub learners: Vec<NodeId>,
    /// Voters of the outgoing configuration; non-empty only in a joint configuration.
    pub voters_outgoing: Vec<NodeId>,
    /// Outgoing voters that become learners when the joint configuration is left.
    pub learners_next: Vec<NodeId>,
    /// Leave the joint configuration automatically once it is committed.
    pub auto_leave: bool,
    /// Log index of the entry that produced this configuration (0: the bootstrap configuration).
    pub index: Index,
}

impl ConfState {
    /// Every node the configuration replicates to (voters of both halves and learners),
    /// ascending, without duplicates.
    pub fn members(&self) -> Vec<NodeId> {
        let mut v: Vec<NodeId> = self
            .voters
            .iter()
            .chain(&self.voters_outgoing)
            .chain(&self.learners)
            .chain(&self.learners_next)
            .copied()
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Encodes the configuration (the payload of an [`EntryKind::ConfChange`] entry: entries carry
    /// the whole resulting configuration, so a node replaying the log needs no earlier state).
    pub fn encode(&self) -> Bytes {
        let lists = [&self.voters, &self.learners, &self.voters_outgoing, &self.learners_next];
        let n: usize = lists.iter().map(|l| l.len()).sum();
        let mut out = Vec::with_capacity(2 + 4 * 4 + 8 * n);
        out.push(1); // format version
        out.push(u8::from(self.auto_leave));
        for l in lists {
            out.extend_from_slice(&(l.len() as u32).to_le_bytes());
            for id in l {
                out.extend_from_slice(&id.to_le_bytes());
            }
        }
        Bytes::from(out)
    }

    /// Decodes [`ConfState::encode`]'s output; `index` is left 0 (it is the entry's index).
    /// `None` if the bytes are not a valid encoding.
    pub fn decode(data: &[u8]) -> Option<ConfState> {
        let (&[version, auto_leave], mut rest) = data.split_first_chunk::<2>()?;
        if version != 1 || auto_leave > 1 {
            return None;
        }
        let mut lists: [Vec<NodeId>; 4] = Default::default();
        for l in &mut lists {
            let (len, r) = rest.split_first_chunk::<4>()?;
            let len = u32::from_le_bytes(*len) as usize;
            if r.len() < len.checked_mul(8)? {
                return None;
            }
            *l = r[..len * 8]
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                .collect();
            rest = &r[len * 8..];
        }
        if !rest.is_empty() {
            return None;
        }
        let [voters, learners, voters_outgoing, learners_next] = lists;
        Some(ConfState {
            voters,
            learners,
            voters_outgoing,
            learners_next,
            auto_leave: auto_leave == 1,
            index: 0,
        })
    }
}

/// What a snapshot covers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SnapshotMeta {
    /// Last log index included in the snapshot.
    pub index: Index,
    /// Term of that entry.
    pub term: Term,
    /// Membership as of `index`.
    pub conf_state: ConfState,
}

/// A state machine snapshot: metadata plus the application's opaque data.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// What it covers.
    pub meta: SnapshotMeta,
    /// The application's serialized state.
    pub data: Bytes,
}

/// One entry of the replicated log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Term of the leader that created the entry.
    pub term: Term,
    /// Position in the log.
    pub index: Index,
    /// What the entry carries.
    pub kind: EntryKind,
    /// Opaque application payload (empty for [`EntryKind::Empty`]).
    pub data: Bytes,
}

impl Entry {
    /// Bytes this entry counts for in size limits: its payload plus a fixed overhead for the header.
    pub fn size_bytes(&self) -> u64 {
        ENTRY_OVERHEAD_BYTES + self.data.len() as u64
    }
}

/// Fixed per-entry overhead counted in byte limits (term, index, kind).
pub const ENTRY_OVERHEAD_BYTES: u64 = 24;

/// The state that must be durable before a node answers anyone (Figure 2, "persistent state").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct HardState {
    /// Latest term this node has seen.
    pub term: Term,
    /// Candidate this node voted for in `term`, if any.
    pub vote: Option<NodeId>,
    /// Highest index known committed. Persisting it is an optimisation (faster restart), not a
    /// safety requirement: it may lag behind the truth.
    pub commit: Index,
}

/// A request for a linearizable read, identified by an opaque context chosen by the caller.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ReadState {
    /// The caller's context, as given to `read_index`.
    pub ctx: Bytes,
    /// Apply up to this index, then the read may be served.
    pub index: Index,
}

/// A Raft message between two nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Sender.
    pub from: NodeId,
    /// Recipient.
    pub to: NodeId,
    /// Sender's term. For a pre-vote request this is the term the candidate *would* use.
    pub term: Term,
    /// What the message says.
    pub body: MessageBody,
}

/// The kinds of Raft messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageBody {
    /// Leader → follower: AppendEntries RPC (§5.3). Empty `entries` is a probe.
    Append {
        /// Index of the entry just before `entries`.
        prev_log_index: Index,
        /// Term of that entry.
        prev_log_term: Term,
        /// Entries to append (possibly empty).
        entries: Vec<Entry>,
        /// Leader's commit index.
        leader_commit: Index,
    },
    /// Follower → leader: answer to [`MessageBody::Append`].
    AppendResponse {
        /// `false`: `index` is the follower's last index after appending (its match index).
        /// `true`: the entry at `index` (the request's `prev_log_index`) did not match.
        reject: bool,
        /// See `reject`.
        index: Index,
        /// On reject: the hint for fast backtracking (§5.3, "the follower can include the term of
        /// the conflicting entry"): the largest index `<= index` on the follower whose term is
        /// `<= hint_term`; the leader resumes from there.
        hint_index: Index,
        /// Term of the follower's entry at `hint_index` (0 if none).
        hint_term: Term,
    },
    /// Candidate → voter: RequestVote RPC (§5.2), or a PreVote (§9.6 of the dissertation).
    Vote {
        /// A pre-vote does not change anyone's term or vote.
        pre_vote: bool,
        /// Index of the candidate's last log entry.
        last_log_index: Index,
        /// Term of the candidate's last log entry.
        last_log_term: Term,
        /// Set by a leadership transfer: voters ignore their leader lease.
        force: bool,
    },
    /// Voter → candidate: answer to [`MessageBody::Vote`].
    VoteResponse {
        /// Whether it answers a pre-vote.
        pre_vote: bool,
        /// Whether the vote is granted.
        granted: bool,
        /// The voter's commit index, capped at the candidate's last log index (0: none), with
        /// `commit_term`, the term of the voter's entry there. A commit index is a fact about
        /// the cluster, not about a term: a candidate whose log holds the same entry holds the
        /// same log up to it (Log Matching, §5.3) and may commit up to it. This is how a
        /// candidate learns of a committed membership change it missed (e.g. the leader of
        /// two voters removed itself and stepped down before the commit reached the other).
        commit_index: Index,
        /// Term of the voter's entry at `commit_index` (0 if `commit_index` is 0).
        commit_term: Term,
    },
    /// Leader → follower: keep-alive carrying the commit index the follower can safely use and
    /// the leader's heartbeat round, which ReadIndex and leases use to confirm leadership.
    Heartbeat {
        /// `min(leader commit, follower match)`.
        commit: Index,
        /// Heartbeat round number, increasing within the leader's term.
        round: u64,
    },
    /// Follower → leader: answer to [`MessageBody::Heartbeat`].
    HeartbeatResponse {
        /// Echo of the heartbeat's round.
        round: u64,
    },
    /// Follower → leader: forwarded proposals (all or none are accepted). Like every
    /// forwarded request it carries term 0 and is handled by whatever role the receiver has:
    /// one that cannot carry it out answers [`MessageBody::Refused`].
    Propose {
        /// Application payloads.
        data: Vec<Bytes>,
    },
    /// Follower → leader: a forwarded membership change (`Raft::propose_conf_change`).
    ProposeConfChange {
        /// The change.
        change: ConfChange,
    },
    /// Follower → leader: a forwarded leadership transfer (`Raft::transfer_leader`).
    TransferLeader {
        /// The node to hand leadership to.
        to: NodeId,
    },
    /// Follower → leader: forwarded ReadIndex request.
    ReadIndex {
        /// Caller's context.
        ctx: Bytes,
    },
    /// Leader → follower: answer to a forwarded ReadIndex.
    ReadIndexResponse {
        /// Caller's context.
        ctx: Bytes,
        /// Read index (the leader's commit index when the round started).
        index: Index,
    },
    /// Leader → follower: the follower's next entry was compacted away; install this snapshot
    /// (§7). Transports may stream `snapshot.data` in chunks and reassemble it.
    InstallSnapshot {
        /// The snapshot.
        snapshot: Snapshot,
    },
    /// Leader → transfer target: campaign now, ignoring leases (§3.10 of the dissertation).
    TimeoutNow,
    /// Member → a node it saw removed: a configuration without the receiver is committed (the
    /// sender applied it), so the receiver is no longer a member and must stop taking part.
    /// Sent by the leader that applies the removal, and by any member in answer to a message
    /// from a node it saw removed (which may never see its removal committed: the leader stops
    /// replicating to it at once).
    Removed,
    /// Any node → the node that forwarded a request: the request will not be carried out (the
    /// receiver is not the leader, or the leader refused it as it would refuse a local call).
    /// Informative only: whatever its term, it never changes the receiver's protocol state; the
    /// receiver hands it out in `Ready::refused`. Bounded by the request it answers: it echoes
    /// the request (the refused payloads identify the proposals) and a short error.
    Refused {
        /// The request, as forwarded.
        request: Forwarded,
        /// Why it is refused: one of the errors a local call returns
        /// ([`Error::is_refusal`]; a message carrying another is invalid).
        error: Error,
    },
}

/// A request a follower forwards to its leader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Forwarded {
    /// Proposals (`Raft::propose`, `Raft::propose_batch`): their payloads.
    Proposals(Vec<Bytes>),
    /// A membership change (`Raft::propose_conf_change`).
    ConfChange(ConfChange),
    /// A leadership transfer to this node (`Raft::transfer_leader`).
    Transfer(NodeId),
}

impl Forwarded {
    /// The request `body` forwards, if it forwards one ([`MessageBody::is_forwarded`]).
    pub(crate) fn from_body(body: MessageBody) -> Option<Forwarded> {
        match body {
            MessageBody::Propose { data } => Some(Forwarded::Proposals(data)),
            MessageBody::ProposeConfChange { change } => Some(Forwarded::ConfChange(change)),
            MessageBody::TransferLeader { to } => Some(Forwarded::Transfer(to)),
            _ => None,
        }
    }

    fn size_bytes(&self) -> u64 {
        match self {
            Forwarded::Proposals(data) => payloads_bytes(data),
            Forwarded::ConfChange(change) => conf_change_bytes(change),
            Forwarded::Transfer(_) => 8,
        }
    }
}

/// A request this node forwarded (or was about to) that will not be carried out, from
/// `Ready::refused`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    /// The request, as it was asked of this node.
    pub request: Forwarded,
    /// Why: the error the leader's local call returned, or `NotLeader`/`NoLeader` when the
    /// request found no leader to carry it out.
    pub error: Error,
}

impl MessageBody {
    /// Whether this forwards a request of a [`Forwarded`] kind to the leader.
    pub(crate) fn is_forwarded(&self) -> bool {
        matches!(
            self,
            MessageBody::Propose { .. }
                | MessageBody::ProposeConfChange { .. }
                | MessageBody::TransferLeader { .. }
        )
    }

    /// Short name for logs and counters.
    pub fn name(&self) -> &'static str {
        match self {
            MessageBody::Append { .. } => "Append",
            MessageBody::AppendResponse { .. } => "AppendResponse",
            MessageBody::Vote { pre_vote: true, .. } => "PreVote",
            MessageBody::Vote { .. } => "Vote",
            MessageBody::VoteResponse { pre_vote: true, .. } => "PreVoteResponse",
            MessageBody::VoteResponse { .. } => "VoteResponse",
            MessageBody::Heartbeat { .. } => "Heartbeat",
            MessageBody::HeartbeatResponse { .. } => "HeartbeatResponse",
            MessageBody::Propose { .. } => "Propose",
            MessageBody::ReadIndex { .. } => "ReadIndex",
            MessageBody::ReadIndexResponse { .. } => "ReadIndexResponse",
            MessageBody::InstallSnapshot { .. } => "InstallSnapshot",
            MessageBody::ProposeConfChange { .. } => "ProposeConfChange",
            MessageBody::TransferLeader { .. } => "TransferLeader",
            MessageBody::TimeoutNow => "TimeoutNow",
            MessageBody::Removed => "Removed",
            MessageBody::Refused { .. } => "Refused",
        }
    }

    /// Approximate encoded size in bytes, used for byte limits.
    pub fn size_bytes(&self) -> u64 {
        const HEADER: u64 = 32;
        HEADER
            + match self {
                MessageBody::Append { entries, .. } => entries.iter().map(Entry::size_bytes).sum(),
                MessageBody::InstallSnapshot { snapshot } => snapshot.data.len() as u64 + 64,
                MessageBody::ReadIndex { ctx } | MessageBody::ReadIndexResponse { ctx, .. } => {
                    ctx.len() as u64
                }
                MessageBody::Propose { data } => payloads_bytes(data),
                MessageBody::ProposeConfChange { change } => conf_change_bytes(change),
                MessageBody::TransferLeader { .. } => 8,
                MessageBody::Refused { request, error } => {
                    request.size_bytes() + error.reason_bytes()
                }
                _ => 0,
            }
    }
}

fn payloads_bytes(data: &[Bytes]) -> u64 {
    data.iter().map(|d| d.len() as u64 + 8).sum()
}

fn conf_change_bytes(change: &ConfChange) -> u64 {
    1 + 9 * change.ops.len() as u64
}

/// The role a node plays (§5.1), plus the pre-candidate state of PreVote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Role {
    /// Follows a leader (or waits for one).
    #[default]
    Follower,
    /// Asking for pre-votes without changing its term.
    PreCandidate,
    /// Asking for votes in a new term.
    Candidate,
    /// Leads the cluster for its term.
    Leader,
}
