//! The Raft state machine: one `step()` for every message, `become_*` transitions, and the
//! leader's replication and read logic. No I/O: everything to do comes out of [`Raft::ready`].

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

mod forward;
mod membership;
mod tracker;

use crate::config::{Config, ReadMode};
use crate::error::Error;
use crate::log::RaftLog;
use crate::progress::{Progress, ProgressState};
use crate::quorum::VoteResult;
use crate::rng::SplitMix64;
use crate::storage::Storage;
use crate::types::{
    ConfState, Entry, EntryKind, Forwarded, HardState, Index, Message, MessageBody, NodeId,
    ReadState, Refused, Role, Snapshot, Term,
};
use tracker::Tracker;

/// One batch of work the core asks its driver to do. Do it in this order:
/// 1. send `messages` (they do not depend on this batch's persistence);
/// 2. persist `entries` (replacing the stored log from `entries[0].index` on), then `hard_state`,
///    durably (fsync) if [`Ready::must_sync`] says so: `hard_state.commit` may point into
///    `entries`, so write the entries first;
/// 3. call [`Raft::on_persisted`] with `number`, then send `persisted_messages`;
/// 4. apply `committed_entries` in order, then call [`Raft::on_applied`];
/// 5. serve each of `read_states` once the applied index reaches its `index`, and answer each of
///    `aborted_reads` at once (not the leader: retry on the new one);
/// 6. answer the callers of each of `refused` at once with its error.
///
/// Steps 2–3 and 4 may run concurrently and several batches may be in flight, but persistence
/// acknowledgements must come in batch order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Ready {
    /// Batch number, to acknowledge with [`Raft::on_persisted`].
    pub number: u64,
    /// Messages to send now (a leader's appends and heartbeats, pre-votes, forwarded requests).
    pub messages: Vec<Message>,
    /// Hard state to persist now, or `None` when nothing needs writing. It is handed out when
    /// the term or the vote changed since the last hard state handed out (they must be durable
    /// before any message of this batch that depends on them leaves), and, carrying the current
    /// commit index, when this batch writes entries or a snapshot anyway and the commit index
    /// moved. A change of the commit index alone is never handed out by itself: the commit index
    /// is volatile in Raft (Figure 2), a node restarted from an older one (never below its
    /// state machine's applied index) learns the rest from the leader again, so writing it is
    /// an optimisation that rides along with writes that happen anyway. For the latest commit
    /// index (to write on a clean shutdown) see [`Raft::hard_state`].
    pub hard_state: Option<HardState>,
    /// A snapshot received from the leader (or left to restore after a restart): install it in
    /// storage durably and restore the state machine from it, before persisting `entries` and
    /// applying `committed_entries` (which follow it).
    pub snapshot: Option<Snapshot>,
    /// Entries to persist; they replace the stored log from `entries[0].index` on.
    pub entries: Vec<Entry>,
    /// The membership changed (a committed change was handed out in `committed_entries`):
    /// persist it with this batch, before the state machine's applied index passes its index.
    pub conf_state: Option<ConfState>,
    /// Messages to send only once this batch is durable (votes, append and heartbeat answers).
    pub persisted_messages: Vec<Message>,
    /// Committed entries to apply, in order.
    pub committed_entries: Vec<Entry>,
    /// Linearizable reads that may be served once the applied index reaches their index.
    pub read_states: Vec<ReadState>,
    /// Contexts of reads asked of this node ([`Raft::read_index`]) that will never be
    /// confirmed: the leader stepped down before a quorum confirmed them, or, on a follower, the
    /// term changed before the leader answered the forwarded request (an answer of the old term
    /// would be refused). Answer them at once (not the leader) so callers retry elsewhere
    /// instead of waiting for a timeout.
    pub aborted_reads: Vec<Bytes>,
    /// Requests this node forwarded to its leader ([`Raft::propose`], [`Raft::propose_batch`],
    /// [`Raft::propose_conf_change`], [`Raft::transfer_leader`] on a follower) that will not be
    /// carried out: the leader refused them ([`MessageBody::Refused`], with the error a local
    /// call there returned), the node they reached was no longer the leader, or the leader
    /// changed before they left this node (they were not sent). Answer their callers at once
    /// with the error instead of letting them wait for a timeout; for proposals, the payloads
    /// say which (put an id in each). A refusal is about the one request it answers: a copy of
    /// it that a network duplicated may still have been accepted, so exactly-once still needs
    /// sessions.
    pub refused: Vec<Refused>,
}

impl Ready {
    /// Whether this batch asks for a durable write, and so an fsync before `on_persisted`: it
    /// has entries, a snapshot, a membership or a hard state to persist. Exact: a hard state is
    /// only handed out when it must be written now (see [`Ready::hard_state`]), so a batch that
    /// only sends messages, applies entries or advances the commit index needs no fsync and may
    /// be acknowledged at once (after the batches before it).
    pub fn must_sync(&self) -> bool {
        self.hard_state.is_some()
            || !self.entries.is_empty()
            || self.snapshot.is_some()
            || self.conf_state.is_some()
    }
}

/// A snapshot of a node's state for observers and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The node's id.
    pub id: NodeId,
    /// Its role.
    pub role: Role,
    /// Its current term.
    pub term: Term,
    /// Whom it voted for in `term`.
    pub vote: Option<NodeId>,
    /// The leader it knows of in `term`.
    pub leader_id: Option<NodeId>,
    /// Highest index known committed.
    pub commit_index: Index,
    /// Highest index the state machine acknowledged.
    pub applied_index: Index,
    /// Last index of its log.
    pub last_index: Index,
    /// Highest index known durable.
    pub persisted_index: Index,
    /// Index of the snapshot the log starts from.
    pub snapshot_index: Index,
    /// Node leadership is being transferred to, on a leader.
    pub lead_transferee: Option<NodeId>,
    /// The node knows it was removed from the cluster ([`Raft::is_removed`]).
    pub removed: bool,
}

/// How a leader is replicating to one follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicationState {
    /// Finding where the follower's log matches: one append at a time.
    Probe,
    /// Streaming appends within the inflight window.
    Replicate,
    /// Sending a snapshot at this index.
    Snapshot(Index),
}

/// A leader's view of one follower, from [`Raft::progress`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerProgress {
    /// The follower's id.
    pub id: NodeId,
    /// Highest index known to match the leader's log.
    pub match_index: Index,
    /// Next index to send.
    pub next_index: Index,
    /// How the leader is sending to it.
    pub state: ReplicationState,
    /// Ticks since the leader last heard from it.
    pub ticks_since_heard: u64,
}

/// A read waiting for the leader to confirm its leadership.
#[derive(Debug, Clone)]
struct PendingRead {
    ctx: Bytes,
    /// `None`: asked locally; `Some(id)`: forwarded by follower `id`.
    requester: Option<NodeId>,
    index: Index,
    /// Heartbeat round whose quorum acknowledgement confirms the read.
    round: u64,
}

/// State only a leader has; dropped when it steps down.
#[derive(Debug)]
struct LeaderState {
    progress: BTreeMap<NodeId, Progress>,
    /// Last heartbeat round broadcast in this term.
    round: u64,
    /// `(round, tick it was sent at)`, oldest first; rounds older than an election timeout are
    /// dropped (they cannot confirm a lease any more).
    round_ticks: VecDeque<(u64, u64)>,
    /// Reads waiting for a heartbeat round acknowledged by a quorum.
    pending_reads: VecDeque<PendingRead>,
    /// Reads asked before this leader committed an entry of its term (§6.4 step 1).
    reads_before_commit: VecDeque<(Bytes, Option<NodeId>)>,
    /// Some read needs a new heartbeat round at the next `ready()`.
    round_needed: bool,
    /// Bytes of entries appended in this term and not yet committed, with `(last index, running
    /// total)` per appended batch so commits can release them.
    appended_total: u64,
    uncommitted_batches: VecDeque<(Index, u64)>,
    committed_total: u64,
    /// Index of the last membership change proposed; no other until it is applied.
    pending_conf_index: Index,
    /// The node leadership is being transferred to, and ticks since the transfer began.
    transferee: Option<NodeId>,
    transfer_elapsed: u64,
    /// Lease reads are off for the rest of the term (a transfer let another node ignore the
    /// lease).
    lease_disabled: bool,
    /// Appends need to go out at the next `ready()` (batching proposals).
    append_needed: bool,
}

/// One Raft node's protocol state.
pub struct Raft<S: Storage> {
    cfg: Config,
    log: RaftLog<S>,
    // Durable state (Figure 2).
    term: Term,
    vote: Option<NodeId>,
    role: Role,
    leader_id: Option<NodeId>,
    /// Membership as of the last committed change handed out for applying.
    conf: ConfState,
    /// Recent configurations, oldest first, so snapshots at applied indices get the right one.
    /// Invariant: the first has index <= applied; pruned in `on_applied`.
    conf_history: VecDeque<ConfState>,
    /// Quorum counting over the voters of `conf`, and the votes of a campaign.
    tracker: Tracker,
    /// Candidate: this campaign was ordered by the leader (TimeoutNow), so voters ignore leases.
    campaign_forced: bool,
    /// Nodes this node saw removed from the configuration since it started (and not re-added).
    removed: std::collections::BTreeSet<NodeId>,
    /// Membership to persist with the next `Ready`.
    conf_to_persist: Option<ConfState>,
    leader: Option<LeaderState>,
    rng: SplitMix64,
    /// Ticks since boot: this node's clock.
    now_ticks: u64,
    election_elapsed: u64,
    heartbeat_elapsed: u64,
    randomized_election_timeout: u64,
    /// Work collected for the next `Ready`.
    msgs: Vec<Message>,
    persisted_msgs: Vec<Message>,
    read_states: Vec<ReadState>,
    aborted_reads: Vec<Bytes>,
    refused: Vec<Refused>,
    /// Some forwarded request may wait in `msgs`: `ready()` checks that it still goes to the
    /// leader (see `withdraw_stale_forwards`).
    forwards_queued: bool,
    /// Follower: contexts of reads forwarded to the leader of the current term and not answered
    /// yet (at most `Config::max_pending_reads`), aborted when the term changes.
    forwarded_reads: VecDeque<Bytes>,
    /// Hard state last handed out in a `Ready` (or read from storage at start).
    prev_hard_state: HardState,
    /// Ready batches handed out and not yet acknowledged.
    unpersisted_readies: VecDeque<UnpersistedReady>,
    next_ready_number: u64,
}

/// Terms and indices above these are refused as malformed: real clusters never get near them, and
/// the bound keeps `term + 1` and `index + n` arithmetic from overflowing.
const MAX_TERM: Term = u64::MAX >> 2;
const MAX_INDEX: Index = u64::MAX >> 2;

/// Most heartbeat rounds remembered for lease checks (older ones only shorten the lease).
const MAX_TRACKED_ROUNDS: usize = 1024;

/// What a handed-out `Ready` asked to persist, to act on its acknowledgement.
#[derive(Debug, Clone, Copy)]
struct UnpersistedReady {
    number: u64,
    /// Last entry handed out (index 0 if none) and its term.
    last_index: Index,
    last_term: Term,
    /// Index of the snapshot handed out, if any.
    snapshot_index: Option<Index>,
}

/// Messages whose sending must wait until the state they describe is durable.
fn needs_persistence(body: &MessageBody) -> bool {
    matches!(
        body,
        MessageBody::Vote { pre_vote: false, .. }
            | MessageBody::VoteResponse { pre_vote: false, .. }
            | MessageBody::AppendResponse { .. }
            | MessageBody::HeartbeatResponse { .. }
    )
}

impl<S: Storage> Raft<S> {
    /// Starts a node from `storage` with nothing applied yet.
    pub fn new(config: Config, storage: S) -> Result<Self, Error> {
        Self::restart(config, storage, 0)
    }

    /// Restarts a node whose state machine durably applied up to `applied`.
    pub fn restart(config: Config, storage: S, applied: Index) -> Result<Self, Error> {
        config.validate()?;
        let init = storage.initial_state()?;
        let hs = init.hard_state;
        let log = RaftLog::new(storage, hs.commit, applied)?;
        if applied > log.last_index() {
            return Err(Error::Storage(crate::StorageError::Corrupt {
                what: "applied index".into(),
                detail: format!(
                    "applied {applied} is beyond the last log index {}",
                    log.last_index()
                ),
            }));
        }
        let mut conf = init.conf_state;
        if log.snapshot_meta().index > conf.index
            && log.snapshot_meta().conf_state != ConfState::default()
        {
            conf = log.snapshot_meta().conf_state.clone();
        }
        for v in [
            &mut conf.voters,
            &mut conf.learners,
            &mut conf.voters_outgoing,
            &mut conf.learners_next,
        ] {
            v.sort_unstable();
            v.dedup();
        }
        let rng = SplitMix64::new(config.seed ^ config.id.rotate_left(32));
        let mut raft = Raft {
            log,
            term: hs.term,
            vote: hs.vote,
            role: Role::Follower,
            leader_id: None,
            tracker: Tracker::new(&conf),
            conf_history: VecDeque::from([conf.clone()]),
            conf,
            campaign_forced: false,
            conf_to_persist: None,
            removed: std::collections::BTreeSet::new(),
            leader: None,
            rng,
            now_ticks: 0,
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_election_timeout: 0,
            msgs: Vec::new(),
            persisted_msgs: Vec::new(),
            read_states: Vec::new(),
            aborted_reads: Vec::new(),
            refused: Vec::new(),
            forwards_queued: false,
            forwarded_reads: VecDeque::new(),
            prev_hard_state: hs,
            unpersisted_readies: VecDeque::new(),
            next_ready_number: 1,
            cfg: config,
        };
        raft.reset_election_timer();
        Ok(raft)
    }

    // ---------------------------------------------------------------- accessors

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.cfg.id
    }
    /// Its role.
    pub fn role(&self) -> Role {
        self.role
    }
    /// Its current term.
    pub fn term(&self) -> Term {
        self.term
    }
    /// Index of the last entry of its log (cheap, unlike [`Raft::status`]).
    pub fn last_index(&self) -> Index {
        self.log.last_index()
    }
    /// The leader it knows of in the current term.
    pub fn leader_id(&self) -> Option<NodeId> {
        self.leader_id
    }
    /// Its configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }
    /// The storage it reads its durable log from.
    pub fn storage(&self) -> &S {
        self.log.storage()
    }
    /// Voting members, ascending.
    pub fn voters(&self) -> Vec<NodeId> {
        self.tracker.voter_ids()
    }

    /// A snapshot of the node's state.
    pub fn status(&self) -> Status {
        Status {
            id: self.cfg.id,
            role: self.role,
            term: self.term,
            vote: self.vote,
            leader_id: self.leader_id,
            commit_index: self.log.committed,
            applied_index: self.log.applied,
            last_index: self.log.last_index(),
            persisted_index: self.log.persisted(),
            snapshot_index: self
                .log
                .snapshot_meta()
                .index
                .max(self.log.storage().first_index().unwrap_or(1).saturating_sub(1)),
            lead_transferee: self.lead_transferee(),
            removed: self.is_removed(),
        }
    }

    /// On a leader, what it knows of each other member's log, ascending by id (empty otherwise).
    pub fn progress(&self) -> Vec<PeerProgress> {
        let Some(ls) = self.leader.as_ref() else { return Vec::new() };
        ls.progress
            .iter()
            .filter(|&(&id, _)| id != self.cfg.id)
            .map(|(&id, p)| PeerProgress {
                id,
                match_index: p.match_index,
                next_index: p.next_index,
                state: match p.state {
                    crate::progress::ProgressState::Probe => ReplicationState::Probe,
                    crate::progress::ProgressState::Replicate => ReplicationState::Replicate,
                    crate::progress::ProgressState::Snapshot(i) => ReplicationState::Snapshot(i),
                },
                ticks_since_heard: self.now_ticks.saturating_sub(p.last_heard_tick),
            })
            .collect()
    }

    /// The node's current log (stable and not yet persisted entries) in `[lo, hi)`.
    pub fn log_entries(&self, lo: Index, hi: Index) -> Result<Vec<Entry>, Error> {
        self.log.entries(lo, hi, u64::MAX, usize::MAX)
    }

    /// Term of the entry at `index` in the node's current log, if it has one.
    pub fn log_term(&self, index: Index) -> Option<Term> {
        self.log.term(index)
    }

    /// One line of the election state, for the simulator's liveness reports.
    #[cfg(any(test, feature = "testkit"))]
    pub(crate) fn election_debug(&self) -> String {
        format!(
            "{}:{:?} t{} vote={:?} lead={:?} last={}/{} commit={} elapsed={}/{} lease={} \
             conf={:?}/{:?} out={:?} idx={} removed={:?} prom={} progress={:?}",
            self.cfg.id,
            self.role,
            self.term,
            self.vote,
            self.leader_id,
            self.log.last_index(),
            self.log.last_term(),
            self.log.committed,
            self.election_elapsed,
            self.randomized_election_timeout,
            self.in_lease(),
            self.conf.voters,
            self.conf.learners,
            self.conf.voters_outgoing,
            self.conf.index,
            self.removed,
            self.promotable(),
            self.leader.as_ref().map(|ls| {
                ls.progress
                    .iter()
                    .map(|(id, p)| {
                        format!(
                            "{id}:{:?} m{} n{} probe_sent={} infl={}",
                            p.state,
                            p.match_index,
                            p.next_index,
                            p.probe_sent,
                            p.inflights.full()
                        )
                    })
                    .collect::<Vec<_>>()
            }),
        )
    }

    /// Crashes loudly, naming the node, its term and log position, when an invariant that the
    /// code relies on is broken (STYLE: assert at hand-offs). Never used for bad input.
    #[track_caller]
    fn assert_invariant(&self, holds: bool, what: impl FnOnce() -> String) {
        if !holds {
            panic!(
                "raft invariant broken on node {} (term {}, role {:?}, commit {}, persisted {}, \
                 last {}): {}",
                self.cfg.id,
                self.term,
                self.role,
                self.log.committed,
                self.log.persisted(),
                self.log.last_index(),
                what()
            );
        }
    }

    /// The current hard state: term, vote and the latest commit index, which may be ahead of
    /// the last one handed out in [`Ready::hard_state`] (a change of the commit index alone is
    /// not handed out). A driver may write it on a clean shutdown, so that a restart resumes
    /// from the latest commit index: once no [`Raft::has_ready`] work is left and every `Ready`
    /// handed out is durable, its term and vote are already durable and its commit index points
    /// into the durable log.
    pub fn hard_state(&self) -> HardState {
        HardState { term: self.term, vote: self.vote, commit: self.log.committed }
    }

    /// Whether the term or the vote changed since the last hard state handed out.
    fn term_or_vote_changed(&self) -> bool {
        (self.term, self.vote) != (self.prev_hard_state.term, self.prev_hard_state.vote)
    }

    fn quorum_is_self(&self) -> bool {
        self.tracker.is_only_voter(self.cfg.id)
    }

    fn promotable(&self) -> bool {
        self.tracker.is_voter(self.cfg.id) && !self.is_removed()
    }

    /// Whether this node knows it was removed from the cluster: it applied a configuration
    /// without itself, or a member told it so ([`MessageBody::Removed`]). A removed node never
    /// campaigns; it learns of a later configuration that adds it again like any learner.
    pub fn is_removed(&self) -> bool {
        self.removed.contains(&self.cfg.id)
    }

    /// A member says a committed configuration no longer has this node. Believed only from a
    /// node that is a member of our configuration (a stranger's word changes nothing).
    fn on_removed(&mut self, from: NodeId) {
        if self.is_removed() || !self.conf.members().contains(&from) {
            return;
        }
        self.removed.insert(self.cfg.id);
        if self.role != Role::Follower {
            self.become_follower(self.term, None);
        }
    }

    // ---------------------------------------------------------------- inputs

    /// Advances this node's clock by one tick.
    pub fn tick(&mut self) {
        self.now_ticks += 1;
        if self.role == Role::Leader {
            self.tick_leader();
        } else {
            self.election_elapsed += 1;
            if self.promotable() && self.election_elapsed >= self.randomized_election_timeout {
                self.campaign();
            }
        }
    }

    fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        self.expire_stuck_snapshots();
        let timeout = u64::from(self.cfg.election_timeout_ticks);
        if let Some(ls) = self.leader.as_mut().filter(|ls| ls.transferee.is_some()) {
            ls.transfer_elapsed += 1;
            if ls.transfer_elapsed >= timeout {
                // The target could not take over in time: resume accepting proposals.
                ls.transferee = None;
            }
        }
        if self.election_elapsed >= u64::from(self.cfg.election_timeout_ticks) {
            self.election_elapsed = 0;
        }
        if self.cfg.check_quorum && !self.quorum_heard_recently() {
            // CheckQuorum: we may be on the minority side of a partition. Checked every tick, so
            // a leader cut off from its quorum steps down one election timeout after it last
            // heard from it.
            self.become_follower(self.term, None);
            return;
        }
        if self.heartbeat_elapsed >= u64::from(self.cfg.heartbeat_interval_ticks) {
            self.heartbeat_elapsed = 0;
            self.broadcast_heartbeat();
        }
    }

    /// A snapshot transfer that was never reported (a lost message, a crashed follower) must not
    /// block a follower forever: after two election timeouts the leader probes again.
    fn expire_stuck_snapshots(&mut self) {
        let limit = 2 * u64::from(self.cfg.election_timeout_ticks);
        let Some(ls) = self.leader.as_mut() else { return };
        for pr in ls.progress.values_mut() {
            if let ProgressState::Snapshot(_) = pr.state {
                pr.snapshot_elapsed += 1;
                if pr.snapshot_elapsed > limit {
                    pr.become_probe();
                }
            }
        }
    }

    /// Whether a quorum of voters (counting this leader) was heard from within the last
    /// election timeout.
    fn quorum_heard_recently(&self) -> bool {
        let (id, now) = (self.cfg.id, self.now_ticks);
        let timeout = u64::from(self.cfg.election_timeout_ticks);
        let Some(ls) = self.leader.as_ref() else { return false };
        self.tracker.quorum_active(&ls.progress, id, now, timeout)
    }

    /// Starts an election now (a pre-vote first if PreVote is on).
    pub fn campaign(&mut self) {
        if !self.promotable() || self.role == Role::Leader {
            return;
        }
        self.campaign_forced = false;
        if self.cfg.pre_vote {
            self.become_pre_candidate();
        } else {
            self.become_candidate();
        }
    }

    /// Proposes one command. On a follower it is forwarded to the leader when
    /// `Config::forward_proposals` is set. `Ok` means accepted for replication, not committed;
    /// on a follower, only forwarded: a refusal comes back in [`Ready::refused`].
    pub fn propose(&mut self, data: Bytes) -> Result<(), Error> {
        if self.role != Role::Leader {
            return self.propose_batch(vec![data]);
        }
        // Leader fast path: no intermediate `Vec`s for a single command.
        let too_large = self.first_too_large(std::slice::from_ref(&data));
        let size = self.admit_proposals(1, data.len() as u64, too_large)?;
        self.append_proposals(std::iter::once(data), 1, size);
        Ok(())
    }

    /// Proposes several commands at once (all or none are accepted).
    pub fn propose_batch(&mut self, data: Vec<Bytes>) -> Result<(), Error> {
        if self.role == Role::Leader {
            return self.leader_propose(data);
        }
        if let Some(bytes) = self.first_too_large(&data) {
            // Refused here rather than forwarded to be refused there.
            return Err(Error::ProposalTooLarge { bytes, limit: self.cfg.max_proposal_bytes });
        }
        self.forward(MessageBody::Propose { data })
    }

    /// Size of the first payload larger than `Config::max_proposal_bytes`, if any.
    fn first_too_large(&self, data: &[Bytes]) -> Option<u64> {
        let limit = self.cfg.max_proposal_bytes;
        data.iter().map(|d| d.len() as u64).find(|&len| len > limit)
    }

    /// Leader: appends a batch of commands, all or none.
    fn leader_propose(&mut self, data: Vec<Bytes>) -> Result<(), Error> {
        let size = self.admit_batch(&data)?;
        let count = data.len() as u64;
        self.append_proposals(data, count, size);
        Ok(())
    }

    /// Leader: [`Raft::admit_proposals`] for a batch.
    fn admit_batch(&self, data: &[Bytes]) -> Result<u64, Error> {
        let bytes = data.iter().map(|d| d.len() as u64).sum();
        self.admit_proposals(data.len() as u64, bytes, self.first_too_large(data))
    }

    /// Leader: whether `count` commands with `bytes` of payload in all (`too_large`: the size
    /// of the first one over `Config::max_proposal_bytes`, if any) may be appended now. Returns
    /// the bytes they count for against `Config::max_uncommitted_bytes`. Changes nothing.
    fn admit_proposals(
        &self,
        count: u64,
        bytes: u64,
        too_large: Option<u64>,
    ) -> Result<u64, Error> {
        if let Some(bytes) = too_large {
            return Err(Error::ProposalTooLarge { bytes, limit: self.cfg.max_proposal_bytes });
        }
        if let Some(target) = self.lead_transferee() {
            return Err(Error::TransferInProgress { target });
        }
        if count == 0 {
            return Ok(0);
        }
        let ls = self.leader.as_ref().expect("leader state on a leader");
        let uncommitted = ls.appended_total - ls.committed_total;
        let size = bytes + crate::ENTRY_OVERHEAD_BYTES * count;
        // A lone proposal is always accepted into an empty pipeline (it fits: max_proposal_bytes
        // <= max_uncommitted_bytes), so a large entry cannot be starved; batches never exceed.
        let lone_into_empty = uncommitted == 0 && count == 1;
        if !lone_into_empty && uncommitted + size > self.cfg.max_uncommitted_bytes {
            return Err(Error::UncommittedLimit {
                uncommitted_bytes: uncommitted,
                proposal_bytes: size,
                limit: self.cfg.max_uncommitted_bytes,
            });
        }
        Ok(size)
    }

    /// Leader: appends `count` admitted commands (counting `size` bytes, from
    /// `admit_proposals`) to its log.
    fn append_proposals(&mut self, data: impl IntoIterator<Item = Bytes>, count: u64, size: u64) {
        if count == 0 {
            return;
        }
        let (term, first) = (self.term, self.log.last_index() + 1);
        let entries = data.into_iter().zip(first..).map(|(data, index)| Entry {
            term,
            index,
            kind: EntryKind::Normal,
            data,
        });
        self.log.append_at_end(entries);
        debug_assert_eq!(self.log.last_index(), first + count - 1, "count matches the commands");
        self.after_leader_append(first + count - 1, size);
    }

    /// Leader: appends entries of its term to its own log and schedules replication.
    fn append_entries(&mut self, entries: Vec<Entry>, bytes: u64) {
        let Some(last) = entries.last().map(|e| e.index) else { return };
        self.log.truncate_and_append(entries);
        self.after_leader_append(last, bytes);
    }

    /// Leader bookkeeping after appending entries up to `last` (`bytes` count against
    /// `Config::max_uncommitted_bytes`).
    fn after_leader_append(&mut self, last: Index, bytes: u64) {
        let ls = self.leader.as_mut().expect("leader state on a leader");
        ls.appended_total += bytes;
        ls.uncommitted_batches.push_back((last, ls.appended_total));
        ls.append_needed = true;
        if self.quorum_is_self() {
            // Nothing to wait for but our own fsync.
            self.maybe_commit();
        }
    }

    /// Asks for a linearizable read. When it is safe, a [`ReadState`] with `ctx` comes out of a
    /// later [`Raft::ready`]: serve the read once the applied index reaches its index.
    pub fn read_index(&mut self, ctx: Bytes) -> Result<(), Error> {
        match self.role {
            Role::Leader => self.leader_read(ctx, None),
            _ => match self.leader_id {
                Some(_) if self.forwarded_reads.len() >= self.cfg.max_pending_reads => {
                    Err(Error::ReadQueueFull { limit: self.cfg.max_pending_reads })
                }
                Some(leader) => {
                    self.forwarded_reads.push_back(ctx.clone());
                    self.send(leader, 0, MessageBody::ReadIndex { ctx });
                    Ok(())
                }
                None => Err(Error::NoLeader),
            },
        }
    }

    fn leader_read(&mut self, ctx: Bytes, requester: Option<NodeId>) -> Result<(), Error> {
        let limit = self.cfg.max_pending_reads;
        let committed_in_term = self.log.term(self.log.committed) == Some(self.term);
        let lease_ok = self.cfg.read_mode == ReadMode::Lease && self.lease_valid();
        let single = self.quorum_is_self();
        let ls = self.leader.as_mut().expect("leader state on a leader");
        if ls.pending_reads.len() + ls.reads_before_commit.len() >= limit {
            return Err(Error::ReadQueueFull { limit });
        }
        if !committed_in_term {
            ls.reads_before_commit.push_back((ctx, requester));
            return Ok(());
        }
        let index = self.log.committed;
        if lease_ok || single {
            self.answer_read(ctx, requester, index);
            return Ok(());
        }
        ls.round_needed = true;
        let round = ls.round + 1;
        ls.pending_reads.push_back(PendingRead { ctx, requester, index, round });
        Ok(())
    }

    fn answer_read(&mut self, ctx: Bytes, requester: Option<NodeId>, index: Index) {
        match requester {
            None => self.read_states.push(ReadState { ctx, index }),
            Some(to) => self.send(to, self.term, MessageBody::ReadIndexResponse { ctx, index }),
        }
    }

    /// Leader: the node leadership is being transferred to.
    fn lead_transferee(&self) -> Option<NodeId> {
        self.leader.as_ref().and_then(|ls| ls.transferee)
    }

    /// Leader: appends (or the new commit index) must go out at the next `ready()`.
    fn need_append(&mut self) {
        if let Some(ls) = self.leader.as_mut() {
            ls.append_needed = true;
        }
    }

    /// Whether the leader lease holds: a quorum acknowledged a heartbeat round sent less than
    /// `Config::lease_ticks()` ago.
    fn lease_valid(&self) -> bool {
        let Some(ls) = self.leader.as_ref() else { return false };
        if ls.lease_disabled || ls.transferee.is_some() {
            return false;
        }
        let id = self.cfg.id;
        let acked = self.tracker.acked_round(&ls.progress, id, ls.round);
        ls.round_ticks
            .iter()
            .find(|&&(r, _)| r == acked)
            .is_some_and(|&(_, sent)| self.now_ticks < sent + self.cfg.lease_ticks())
    }

    // ---------------------------------------------------------------- step

    /// Handles a message from another node. An error means the message was invalid and dropped;
    /// the node is unchanged and keeps running.
    pub fn step(&mut self, m: Message) -> Result<(), Error> {
        self.validate(&m)?;
        if let MessageBody::Refused { request, error } = m.body {
            // About this node's own requests, whoever says it and whatever the term (it may
            // come from a leader deposed or removed since): handed out, nothing else changes.
            self.refused.push(Refused { request, error });
            return Ok(());
        }
        // A removed leader hands over with TimeoutNow as it steps down (membership.rs).
        if self.removed.contains(&m.from) && m.body != MessageBody::TimeoutNow {
            // A committed configuration no longer has the sender: whatever it says is dropped
            // (dropping is always safe), and it hears why, so that a node that never saw its
            // removal committed stops too. One answer per message: no amplification.
            if m.body != MessageBody::Removed {
                self.send(m.from, self.term, MessageBody::Removed);
            }
            return Ok(());
        }
        if m.body == MessageBody::Removed {
            self.on_removed(m.from);
            return Ok(());
        }
        if m.body.is_forwarded() {
            // Forwarded requests carry no term: whatever role this node has now handles them.
            if let Some(request) = Forwarded::from_body(m.body) {
                self.handle_forwarded(Some(m.from), request);
            }
            return Ok(());
        }
        if let MessageBody::Vote { last_log_index, .. } = m.body
            && self.ignores_campaign_of(m.from, last_log_index)
        {
            return Ok(());
        }
        if let MessageBody::VoteResponse { commit_index, commit_term, .. } = m.body {
            // Whatever the answer's term: a commit index holds in every term.
            self.learn_commit(commit_index, commit_term);
        }
        // A forwarded read carries no term either.
        if !matches!(m.body, MessageBody::ReadIndex { .. }) {
            if m.term > self.term {
                if !self.accept_higher_term(&m) {
                    return Ok(());
                }
            } else if m.term < self.term {
                self.answer_stale_term(&m);
                return Ok(());
            }
        }
        match &m.body {
            MessageBody::Vote { pre_vote, last_log_index, last_log_term, .. } => {
                self.handle_vote_request(&m, *pre_vote, *last_log_index, *last_log_term);
                Ok(())
            }
            _ => match self.role {
                Role::Leader => self.step_leader(m),
                Role::Candidate | Role::PreCandidate => self.step_candidate(m),
                Role::Follower => self.step_follower(m),
            },
        }
    }

    fn validate(&self, m: &Message) -> Result<(), Error> {
        let bad = |reason| Err(Error::InvalidMessage { from: m.from, reason });
        if m.to != self.cfg.id {
            return bad("addressed to another node");
        }
        if m.from == 0 || m.from == self.cfg.id {
            return bad("invalid sender id");
        }
        if m.term > MAX_TERM {
            return bad("term out of range");
        }
        let index_field = match &m.body {
            MessageBody::Append { prev_log_index, leader_commit, .. } => {
                (*prev_log_index).max(*leader_commit)
            }
            MessageBody::AppendResponse { index, hint_index, .. } => (*index).max(*hint_index),
            MessageBody::Vote { last_log_index, .. } => *last_log_index,
            MessageBody::Heartbeat { commit, .. } => *commit,
            MessageBody::ReadIndexResponse { index, .. } => *index,
            MessageBody::VoteResponse { commit_index, .. } => *commit_index,
            _ => 0,
        };
        if index_field > MAX_INDEX {
            return bad("log index out of range");
        }
        if let MessageBody::Append { prev_log_index, prev_log_term, entries, .. } = &m.body {
            let mut expect = prev_log_index.checked_add(1);
            let mut prev_term = *prev_log_term;
            for e in entries {
                if Some(e.index) != expect {
                    return bad("append entries are not contiguous after prev_log_index");
                }
                if e.term < prev_term || e.term > m.term {
                    return bad("append entry terms are not ordered within the leader's term");
                }
                expect = e.index.checked_add(1);
                prev_term = e.term;
            }
            if *prev_log_term > m.term {
                return bad("prev_log_term is beyond the leader's term");
            }
        }
        if let MessageBody::VoteResponse { commit_term, .. } = &m.body
            && *commit_term > m.term
        {
            return bad("vote answer's commit term is beyond its term");
        }
        if let MessageBody::Refused { error, .. } = &m.body
            && !error.is_refusal()
        {
            return bad("refusal with an error no request is refused with");
        }
        if let MessageBody::InstallSnapshot { snapshot } = &m.body {
            let meta = &snapshot.meta;
            if meta.index == 0 || meta.index > MAX_INDEX || meta.term == 0 || meta.term > m.term {
                return bad("snapshot index or term out of range");
            }
            if meta.conf_state.voters.is_empty() {
                return bad("snapshot has no voters");
            }
        }
        Ok(())
    }

    /// A message with a higher term. Returns whether to go on handling it.
    fn accept_higher_term(&mut self, m: &Message) -> bool {
        match m.body {
            MessageBody::Vote { pre_vote, force, .. } => {
                if !force && self.in_lease() {
                    // We heard from a live leader recently: a disruptive candidate (§9.6, and
                    // the "leader stickiness" of the dissertation) is ignored.
                    return false;
                }
                if !pre_vote {
                    // Keep our election timer: only granting a vote resets it (Figure 2). A
                    // candidate we end up rejecting (stale log, fast clock) must not be able to
                    // keep everyone else from timing out.
                    let elapsed = self.election_elapsed;
                    self.become_follower(m.term, None);
                    self.election_elapsed = elapsed;
                }
                true
            }
            // A granted pre-vote carries the term the candidate will use, not a newer term.
            MessageBody::VoteResponse { pre_vote: true, granted: true, .. } => true,
            // Everything else is of a newer term. An Append, Heartbeat or InstallSnapshot comes
            // from that term's leader: `step_follower` records it as leader next.
            _ => {
                self.become_follower(m.term, None);
                true
            }
        }
    }

    /// Campaigns that must not disrupt the cluster (a node we saw removed is answered
    /// [`MessageBody::Removed`] before this): from a node outside our configuration whose log
    /// does not reach past our configuration's index (so it cannot know of a newer
    /// configuration that includes it: it was removed, or never added).
    /// A candidate merely absent from an *older* configuration of ours is not ignored (e.g. a new
    /// voter still catching up, §4.1 of the dissertation); leader stickiness covers the rest.
    fn ignores_campaign_of(&self, from: NodeId, last_log_index: Index) -> bool {
        self.conf.index > 0
            && last_log_index <= self.conf.index
            && !self.conf.members().contains(&from)
    }

    /// Whether this node heard from a live leader within the election timeout (and so refuses to
    /// help depose it).
    fn in_lease(&self) -> bool {
        let timeout = u64::from(self.cfg.election_timeout_ticks);
        let boot_guard = self.cfg.read_mode == ReadMode::Lease && self.now_ticks < timeout;
        self.cfg.check_quorum
            && ((self.leader_id.is_some() && self.election_elapsed < timeout) || boot_guard)
    }

    fn answer_stale_term(&mut self, m: &Message) {
        match m.body {
            MessageBody::Append { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::InstallSnapshot { .. }
                if self.cfg.check_quorum || self.cfg.pre_vote =>
            {
                // Tell a stale leader our term so it steps down; without this a node partitioned
                // with a higher term could never rejoin under PreVote/CheckQuorum.
                self.send(
                    m.from,
                    self.term,
                    MessageBody::AppendResponse {
                        reject: true,
                        index: 0,
                        hint_index: 0,
                        hint_term: 0,
                    },
                );
            }
            MessageBody::Vote { pre_vote: true, last_log_index, .. } => {
                let body = self.vote_response(true, false, last_log_index);
                self.send(m.from, self.term, body);
            }
            _ => {}
        }
    }

    fn handle_vote_request(
        &mut self,
        m: &Message,
        pre_vote: bool,
        last_index: Index,
        last_term: Term,
    ) {
        // A node that knows no configuration has no durable history (a new node, or one whose data
        // was wiped): its vote could contradict one it gave before losing its disk, so it gives
        // none until the log or a snapshot brings it a configuration. Voters always join as
        // caught-up learners first, so this never leaves a configuration without its voters.
        let blank = self.conf.voters.is_empty();
        let can_vote = self.vote == Some(m.from)
            || (self.vote.is_none() && self.leader_id.is_none())
            || (pre_vote && m.term > self.term);
        let granted = !blank && can_vote && self.log.is_up_to_date(last_index, last_term);
        // A pre-vote answer uses the candidate's future term when granted, our term otherwise.
        let term = if granted && pre_vote { m.term } else { self.term };
        if granted && !pre_vote {
            self.vote = Some(m.from);
            self.election_elapsed = 0;
        }
        let body = self.vote_response(pre_vote, granted, last_index);
        self.send(m.from, term, body);
    }

    /// An answer to a (pre-)vote of a candidate whose log ends at `candidate_last`, carrying
    /// our commit index as far as the candidate's log reaches (see
    /// [`MessageBody::VoteResponse`]).
    fn vote_response(&self, pre_vote: bool, granted: bool, candidate_last: Index) -> MessageBody {
        let index = self.log.committed.min(candidate_last);
        // Index 0 has term 0; a compacted index has no term here, so nothing is said.
        let (commit_index, commit_term) = match self.log.term(index) {
            Some(t) => (index, t),
            None => (0, 0),
        };
        MessageBody::VoteResponse { pre_vote, granted, commit_index, commit_term }
    }

    /// Another node knows that its entry at `index` (of term `term`) is committed. If our log
    /// holds the same entry, it holds the same log up to there (Log Matching), so everything up
    /// to `index` is committed here too. A leader counts its own commits.
    fn learn_commit(&mut self, index: Index, term: Term) {
        // (`commit_to` ignores an index at or below the commit index.)
        if self.role != Role::Leader
            && index <= self.log.last_index()
            && self.log.term(index) == Some(term)
        {
            self.log.commit_to(index);
        }
    }

    fn step_follower(&mut self, m: Message) -> Result<(), Error> {
        match m.body {
            MessageBody::Append { prev_log_index, prev_log_term, entries, leader_commit } => {
                self.election_elapsed = 0;
                self.leader_id = Some(m.from);
                self.handle_append(m.from, prev_log_index, prev_log_term, entries, leader_commit)
            }
            MessageBody::Heartbeat { commit, round } => {
                self.election_elapsed = 0;
                self.leader_id = Some(m.from);
                self.log.commit_to(commit.min(self.log.last_index()));
                self.send(m.from, self.term, MessageBody::HeartbeatResponse { round });
                Ok(())
            }
            MessageBody::ReadIndexResponse { ctx, index } => {
                // Only answers to reads still waiting (a duplicate, or one for a read aborted
                // meanwhile, is dropped).
                if let Some(i) = self.forwarded_reads.iter().position(|c| *c == ctx) {
                    self.forwarded_reads.remove(i);
                    self.read_states.push(ReadState { ctx, index });
                }
                Ok(())
            }
            MessageBody::InstallSnapshot { snapshot } => {
                self.election_elapsed = 0;
                self.leader_id = Some(m.from);
                self.handle_snapshot(m.from, snapshot);
                Ok(())
            }
            MessageBody::TimeoutNow => {
                self.handle_timeout_now(m.from);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn step_candidate(&mut self, m: Message) -> Result<(), Error> {
        match m.body {
            MessageBody::Append { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::InstallSnapshot { .. } => {
                // A leader exists in our term (§5.2): follow it.
                self.become_follower(m.term, Some(m.from));
                self.step_follower(m)
            }
            MessageBody::VoteResponse { pre_vote, granted, .. } => {
                if pre_vote != (self.role == Role::PreCandidate) {
                    return Ok(());
                }
                self.tracker.record_vote(m.from, granted);
                self.tally_votes();
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn tally_votes(&mut self) {
        match self.tracker.tally() {
            VoteResult::Won if self.role == Role::PreCandidate => self.become_candidate(),
            VoteResult::Won => self.become_leader(),
            VoteResult::Lost => self.become_follower(self.term, None),
            VoteResult::Pending => {}
        }
    }

    fn handle_append(
        &mut self,
        from: NodeId,
        prev_index: Index,
        prev_term: Term,
        entries: Vec<Entry>,
        leader_commit: Index,
    ) -> Result<(), Error> {
        if prev_index < self.log.committed {
            self.ack_append(from, self.log.committed);
            return Ok(());
        }
        match self.log.maybe_append(prev_index, prev_term, leader_commit, entries) {
            Ok(Some(last_new)) => {
                self.ack_append(from, last_new);
                Ok(())
            }
            Ok(None) => {
                let (hint_index, hint_term) = self.log.find_conflict_by_term(prev_index, prev_term);
                let body = MessageBody::AppendResponse {
                    reject: true,
                    index: prev_index,
                    hint_index,
                    hint_term,
                };
                self.send(from, self.term, body);
                Ok(())
            }
            Err(reason) => Err(Error::InvalidMessage { from, reason }),
        }
    }

    /// Follower: tells the leader our log matches its log up to `index`.
    fn ack_append(&mut self, to: NodeId, index: Index) {
        let body =
            MessageBody::AppendResponse { reject: false, index, hint_index: 0, hint_term: 0 };
        self.send(to, self.term, body);
    }

    fn step_leader(&mut self, m: Message) -> Result<(), Error> {
        let from = m.from;
        match m.body {
            MessageBody::AppendResponse { reject, index, hint_index, hint_term } => {
                if index > self.log.last_index() {
                    // Acknowledging entries we never sent would commit them without a quorum.
                    return Err(Error::InvalidMessage {
                        from,
                        reason: "append answer beyond the leader's log",
                    });
                }
                self.handle_append_response(from, reject, index, hint_index, hint_term);
            }
            MessageBody::HeartbeatResponse { round } => {
                if self.leader.as_ref().is_some_and(|ls| round > ls.round) {
                    // Acknowledging a round not sent yet would confirm reads without a quorum.
                    return Err(Error::InvalidMessage {
                        from,
                        reason: "heartbeat answer for a round not sent",
                    });
                }
                self.handle_heartbeat_response(from, round)
            }
            MessageBody::ReadIndex { ctx } => {
                let _ = self.leader_read(ctx, Some(from));
            }
            _ => {}
        }
        Ok(())
    }

    fn handle_append_response(
        &mut self,
        from: NodeId,
        reject: bool,
        index: Index,
        hint_index: Index,
        hint_term: Term,
    ) {
        let probe_hint = if reject && hint_term > 0 {
            self.log.find_conflict_by_term(hint_index, hint_term).0
        } else {
            hint_index
        };
        let now = self.now_ticks;
        let Some(pr) = self.progress_mut(from) else { return };
        pr.last_heard_tick = now;
        if reject {
            if index == 0 {
                return; // Answer to a stale-term message; nothing to repair.
            }
            if pr.maybe_decr_to(index, probe_hint) {
                if pr.state == ProgressState::Replicate {
                    pr.become_probe();
                }
                self.send_append(from, true);
            }
            return;
        }
        let was_paused = pr.is_paused();
        if !pr.maybe_update(index) {
            return;
        }
        match pr.state {
            ProgressState::Probe => pr.become_replicate(),
            ProgressState::Replicate => pr.inflights.free_le(index),
            // The follower installed the snapshot (or caught up otherwise).
            ProgressState::Snapshot(pending) if index >= pending => pr.become_replicate(),
            ProgressState::Snapshot(_) => {}
        }
        let caught_up = pr.match_index == self.log.last_index();
        if caught_up && self.lead_transferee() == Some(from) {
            self.send(from, self.term, MessageBody::TimeoutNow);
        }
        if self.maybe_commit() {
            self.need_append();
        } else if was_paused {
            // The follower may lack the latest commit index: send it even with no new entries.
            self.send_append(from, true);
        }
        // Pipelining: fill the window with what is left.
        while self.send_append(from, false) {}
    }

    fn handle_heartbeat_response(&mut self, from: NodeId, round: u64) {
        let last = self.log.last_index();
        let now = self.now_ticks;
        let Some(pr) = self.progress_mut(from) else { return };
        pr.last_heard_tick = now;
        pr.probe_sent = false;
        pr.acked_round = pr.acked_round.max(round);
        if pr.state == ProgressState::Replicate && pr.inflights.full() {
            pr.inflights.free_first();
        }
        if pr.match_index < last {
            self.send_append(from, true);
        }
        self.release_confirmed_reads();
    }

    fn progress_mut(&mut self, id: NodeId) -> Option<&mut Progress> {
        self.leader.as_mut().and_then(|ls| ls.progress.get_mut(&id))
    }

    // ---------------------------------------------------------------- leader machinery

    /// Sends an append to `to` if it is not paused. With `allow_empty`, sends one even with no
    /// new entries (to carry the commit index or probe). Returns whether something was sent.
    fn send_append(&mut self, to: NodeId, allow_empty: bool) -> bool {
        let (max_bytes, max_count) = (self.cfg.max_append_bytes, self.cfg.max_append_entries);
        let last = self.log.last_index();
        let Some(pr) = self.leader.as_ref().and_then(|ls| ls.progress.get(&to)) else {
            return false;
        };
        if pr.is_paused() {
            return false;
        }
        let next = pr.next_index;
        let (Some(prev_log_term), Ok(entries)) =
            (self.log.term(next - 1), self.log.entries(next, last + 1, max_bytes, max_count))
        else {
            // What the follower needs was compacted away (§7).
            return self.send_snapshot(to);
        };
        if entries.is_empty() && !allow_empty {
            return false;
        }
        let bytes: u64 = entries.iter().map(Entry::size_bytes).sum();
        let (count, sent_last) = (entries.len(), entries.last().map_or(next - 1, |e| e.index));
        let body = MessageBody::Append {
            prev_log_index: next - 1,
            prev_log_term,
            entries,
            leader_commit: self.log.committed,
        };
        self.send(to, self.term, body);
        if let Some(pr) = self.progress_mut(to) {
            pr.sent_append(count, sent_last, bytes);
        }
        true
    }

    fn broadcast_append(&mut self) {
        // Walks the progress map by key rather than collecting the peers into a `Vec` first.
        use std::ops::Bound::{Excluded, Unbounded};
        let id = self.cfg.id;
        let mut after = Unbounded;
        while let Some(to) = self.leader.as_ref().and_then(|ls| {
            ls.progress.range((after, Unbounded)).map(|(&p, _)| p).find(|&p| p != id)
        }) {
            self.send_append(to, true);
            after = Excluded(to);
        }
    }

    fn broadcast_heartbeat(&mut self) {
        let now = self.now_ticks;
        let keep_ticks = u64::from(self.cfg.election_timeout_ticks);
        let commit = self.log.committed;
        let Some(ls) = self.leader.as_mut() else { return };
        ls.round += 1;
        ls.round_needed = false;
        let round = ls.round;
        ls.round_ticks.push_back((round, now));
        while ls.round_ticks.front().is_some_and(|&(_, t)| t + keep_ticks < now)
            || ls.round_ticks.len() > MAX_TRACKED_ROUNDS
        {
            ls.round_ticks.pop_front();
        }
        let targets: Vec<(NodeId, Index)> = ls
            .progress
            .iter()
            .filter(|(p, _)| **p != self.cfg.id)
            .map(|(p, pr)| (*p, commit.min(pr.match_index)))
            .collect();
        for (to, commit) in targets {
            self.send(to, self.term, MessageBody::Heartbeat { commit, round });
        }
    }

    /// Commits the largest index replicated on a quorum, if it is of the current term
    /// (§5.4.2: never by counting replicas of an older term's entry). Returns whether it moved.
    fn maybe_commit(&mut self) -> bool {
        let id = self.cfg.id;
        let persisted = self.log.persisted();
        let Some(ls) = self.leader.as_ref() else { return false };
        let mci = self.tracker.committed_index(&ls.progress, id, persisted);
        if mci <= self.log.committed || self.log.term(mci) != Some(self.term) {
            return false;
        }
        self.assert_invariant(mci <= self.log.last_index(), || {
            format!("a quorum holds index {mci}, beyond the leader's log")
        });
        let first_commit_in_term = self.log.term(self.log.committed) != Some(self.term);
        self.log.commit_to(mci);
        let ls = self.leader.as_mut().expect("checked above");
        while let Some(&(idx, total)) = ls.uncommitted_batches.front() {
            if idx > mci {
                break;
            }
            ls.committed_total = total;
            ls.uncommitted_batches.pop_front();
        }
        if first_commit_in_term {
            // Reads asked before the first commit of the term can proceed now (§6.4).
            let waiting: Vec<_> = ls.reads_before_commit.drain(..).collect();
            for (ctx, requester) in waiting {
                let _ = self.leader_read(ctx, requester);
            }
        }
        true
    }

    /// Answers the reads whose heartbeat round a quorum acknowledged.
    fn release_confirmed_reads(&mut self) {
        let id = self.cfg.id;
        let Some(ls) = self.leader.as_ref() else { return };
        if ls.pending_reads.is_empty() {
            return;
        }
        let acked = self.tracker.acked_round(&ls.progress, id, ls.round);
        let ls = self.leader.as_mut().expect("checked above");
        let mut ready = Vec::new();
        while ls.pending_reads.front().is_some_and(|r| r.round <= acked) {
            ready.extend(ls.pending_reads.pop_front());
        }
        for r in ready {
            self.answer_read(r.ctx, r.requester, r.index);
        }
    }

    // ---------------------------------------------------------------- transitions

    fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        let base = u64::from(self.cfg.election_timeout_ticks);
        self.randomized_election_timeout = base + self.rng.next_u64() % base;
    }

    /// Leaving the leader role or the term: every read asked here that can no longer be
    /// confirmed is handed out in [`Ready::aborted_reads`].
    fn abort_reads(&mut self, term_changes: bool) {
        if let Some(ls) = self.leader.take() {
            let waiting = ls.pending_reads.into_iter().map(|r| (r.ctx, r.requester));
            let local = waiting.chain(ls.reads_before_commit).filter(|(_, by)| by.is_none());
            self.aborted_reads.extend(local.map(|(ctx, _)| ctx));
        }
        if term_changes {
            self.aborted_reads.extend(self.forwarded_reads.drain(..));
        }
    }

    fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        self.abort_reads(term != self.term);
        if term != self.term {
            self.term = term;
            self.vote = None;
        }
        self.role = Role::Follower;
        self.leader_id = leader;
        self.campaign_forced = false;
        self.tracker.reset_votes();
        self.reset_election_timer();
    }

    fn become_pre_candidate(&mut self) {
        // A pre-candidate takes no answers from a leader: forwarded reads are lost.
        self.abort_reads(true);
        self.campaign_forced = false;
        self.role = Role::PreCandidate;
        self.leader_id = None;
        self.tracker.reset_votes();
        self.reset_election_timer();
        self.request_votes(true);
    }

    fn become_candidate(&mut self) {
        self.abort_reads(true);
        self.term += 1;
        self.vote = Some(self.cfg.id);
        self.role = Role::Candidate;
        self.leader_id = None;
        self.tracker.reset_votes();
        self.reset_election_timer();
        self.request_votes(false);
    }

    fn request_votes(&mut self, pre_vote: bool) {
        let id = self.cfg.id;
        let term = if pre_vote { self.term + 1 } else { self.term };
        let (last_log_index, last_log_term) = (self.log.last_index(), self.log.last_term());
        self.tracker.record_vote(id, true);
        for v in self.tracker.voter_ids().into_iter().filter(|&v| v != id) {
            let body = MessageBody::Vote {
                pre_vote,
                last_log_index,
                last_log_term,
                force: self.campaign_forced,
            };
            self.send(v, term, body);
        }
        self.tally_votes();
    }

    fn become_leader(&mut self) {
        let id = self.cfg.id;
        self.assert_invariant(
            self.role == Role::Candidate && self.vote == Some(id) && self.promotable(),
            || {
                format!(
                    "becoming leader of term {} as {:?} with vote {:?}",
                    self.term, self.role, self.vote
                )
            },
        );
        let next = self.log.last_index() + 1;
        let mut progress = BTreeMap::new();
        for p in self.conf.members() {
            let mut pr =
                Progress::new(next, self.cfg.max_inflight_msgs, self.cfg.max_inflight_bytes);
            // The voters just elected us: count them as heard from now.
            pr.last_heard_tick = self.now_ticks;
            if p == id {
                pr.match_index = self.log.persisted();
                pr.become_replicate();
            }
            progress.insert(p, pr);
        }
        self.role = Role::Leader;
        self.leader_id = Some(id);
        self.tracker.reset_votes();
        self.campaign_forced = false;
        self.leader = Some(LeaderState {
            progress,
            round: 0,
            round_ticks: VecDeque::new(),
            pending_reads: VecDeque::new(),
            reads_before_commit: VecDeque::new(),
            round_needed: false,
            appended_total: 0,
            uncommitted_batches: VecDeque::new(),
            committed_total: 0,
            // Entries of earlier terms may hold a membership change not yet applied: be
            // conservative.
            pending_conf_index: self.log.last_index(),
            transferee: None,
            transfer_elapsed: 0,
            lease_disabled: false,
            append_needed: false,
        });
        self.reset_election_timer();
        // The empty entry of the new term lets the leader commit what earlier terms left (§5.4.2).
        let empty =
            Entry { term: self.term, index: next, kind: EntryKind::Empty, data: Bytes::new() };
        self.append_entries(vec![empty], 0);
    }

    // ---------------------------------------------------------------- output

    fn send(&mut self, to: NodeId, term: Term, body: MessageBody) {
        let m = Message { from: self.cfg.id, to, term, body };
        if needs_persistence(&m.body) {
            self.persisted_msgs.push(m);
        } else {
            self.msgs.push(m);
        }
    }

    /// Whether [`Raft::ready`] has anything to hand out.
    pub fn has_ready(&self) -> bool {
        !self.msgs.is_empty()
            || !self.persisted_msgs.is_empty()
            || !self.read_states.is_empty()
            || !self.aborted_reads.is_empty()
            || !self.refused.is_empty()
            || self.leader.as_ref().is_some_and(|ls| ls.round_needed || ls.append_needed)
            || self.log.has_unpersisted()
            || self.term_or_vote_changed()
            || self.log.has_next_committed(self.cfg.max_unapplied_entries)
            || self.log.has_pending_snapshot()
            || self.conf_to_persist.is_some()
    }

    /// Collects the work to do. Call it after inputs, whenever [`Raft::has_ready`] is true.
    pub fn ready(&mut self) -> Ready {
        // Committed membership changes take effect as they are handed out for applying; this may
        // make a removed leader step down or an auto-leaving leader propose, so it comes first.
        let snapshot = self.log.take_pending_snapshot();
        let committed_entries = self
            .log
            .next_committed(self.cfg.max_apply_bytes, self.cfg.max_unapplied_entries)
            .unwrap_or_default();
        for e in committed_entries.iter().filter(|e| e.kind == EntryKind::ConfChange) {
            self.apply_conf_change_entry(e);
        }
        self.maybe_auto_leave_joint();
        self.withdraw_stale_forwards();
        if self.leader.as_ref().is_some_and(|ls| ls.round_needed) {
            self.broadcast_heartbeat();
        }
        if self.leader.as_mut().is_some_and(|ls| std::mem::take(&mut ls.append_needed)) {
            self.broadcast_append();
        }
        let number = self.next_ready_number;
        self.next_ready_number += 1;
        let entries = self.log.take_unpersisted();
        let hard_state = self.hard_state_to_persist(!entries.is_empty() || snapshot.is_some());
        let (last_index, last_term) = entries.last().map_or((0, 0), |e| (e.index, e.term));
        self.unpersisted_readies.push_back(UnpersistedReady {
            number,
            last_index,
            last_term,
            snapshot_index: snapshot.as_ref().map(|s| s.meta.index),
        });
        Ready {
            number,
            messages: std::mem::take(&mut self.msgs),
            hard_state,
            snapshot,
            entries,
            conf_state: self.conf_to_persist.take(),
            persisted_messages: std::mem::take(&mut self.persisted_msgs),
            committed_entries,
            read_states: std::mem::take(&mut self.read_states),
            aborted_reads: std::mem::take(&mut self.aborted_reads),
            refused: std::mem::take(&mut self.refused),
        }
    }

    /// The hard state a `Ready` hands out (see [`Ready::hard_state`]): when the term or vote
    /// changed, or when the batch writes the log anyway (`writes_log`) and the commit index
    /// moved. Never for a commit index that moved alone.
    fn hard_state_to_persist(&mut self, writes_log: bool) -> Option<HardState> {
        let hs = self.hard_state();
        if hs == self.prev_hard_state || !(writes_log || self.term_or_vote_changed()) {
            return None;
        }
        let prev = self.prev_hard_state;
        self.assert_invariant(hs.term >= prev.term && hs.commit >= prev.commit, || {
            format!("hard state {hs:?} handed out after {prev:?}: term or commit went back")
        });
        self.prev_hard_state = hs;
        Some(hs)
    }

    /// The driver made `Ready` number `number` (and every earlier one) durable.
    pub fn on_persisted(&mut self, number: u64) -> Result<(), Error> {
        if !self.unpersisted_readies.iter().any(|r| r.number == number) {
            return Err(Error::UnknownReady { number });
        }
        while let Some(&r) = self.unpersisted_readies.front() {
            if r.number > number {
                break;
            }
            self.unpersisted_readies.pop_front();
            if let Some(index) = r.snapshot_index {
                self.log.snapshot_persisted(index);
            }
            if r.last_index > 0 {
                self.log.stable_to(r.last_index, r.last_term);
            }
        }
        self.assert_invariant(self.log.persisted() <= self.log.last_index(), || {
            format!("ready #{number} acknowledged: persisted beyond the log")
        });
        if self.role == Role::Leader {
            let persisted = self.log.persisted();
            let id = self.cfg.id;
            if let Some(pr) = self.progress_mut(id) {
                pr.maybe_update(persisted);
            }
            if self.maybe_commit() {
                self.need_append();
            }
        }
        Ok(())
    }

    /// The state machine applied every committed entry up to `index`.
    pub fn on_applied(&mut self, index: Index) -> Result<(), Error> {
        if index > self.log.applying {
            return Err(Error::AppliedBeyondCommitted {
                applied: index,
                handed_out: self.log.applying,
            });
        }
        self.log.applied = self.log.applied.max(index);
        let applied = self.log.applied;
        while self.conf_history.len() > 1 && self.conf_history[1].index <= applied {
            self.conf_history.pop_front();
        }
        Ok(())
    }
}
