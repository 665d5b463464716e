//! Safety invariants of `TESTING.md`, checked by the simulator after every step.
//!
//! The [`Checker`] is fed observations by the simulator: node states after each step, durable
//! writes, messages leaving a node and entries being applied. Each check is incremental, so the
//! cost per step does not grow with the length of the run:
//! - *election safety*: a map `term → leader` filled whenever a node is seen as leader;
//! - *log matching*: every entry ever written to a durable log is recorded as
//!   `(index, term) → (data hash, term at index - 1)`; two writes of the same `(index, term)` with a
//!   different hash or a different previous term break the property (by induction, equal
//!   `(index, term)` then means equal prefixes);
//! - *leader completeness*: each committed index records the term in which it was first seen
//!   committed; a node that becomes leader of a later term must hold all of them, and while it
//!   leads its log must keep the latest one;
//! - *state machine safety*: the first entry applied at an index is remembered; every later apply
//!   at that index must be the same entry; applies are in order (checked by the KV store);
//! - *monotonicity*: per node floors for term, commit and applied index, reset on a crash to the
//!   durable hard state (term, commit) and kept for applied (the KV store is durable);
//! - *no double vote*: `(voter, term) → candidate` from granted votes sent and from durable hard
//!   states, across restarts;
//! - *bounds*: `applied <= commit <= last_index`, and an entry is applied only once it is durable in
//!   the node's own log;
//! - *durable before ack*: a granted vote or an append acknowledgement leaves a node only once the
//!   vote or the entries are durable; a committed entry is durable on a quorum when first seen.

use std::collections::BTreeMap;
use std::fmt;

use super::rng::{FNV_OFFSET, fnv1a};
use crate::raft::{Raft, Status};
use crate::storage::{MemStorage, Storage};
use crate::types::{
    ConfState, Entry, EntryKind, HardState, Index, Message, MessageBody, NodeId, Role, Snapshot,
    Term,
};

/// The property a [`Violation`] breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Invariant {
    /// At most one leader per term.
    ElectionSafety,
    /// Same index and term ⇒ same entry and same prefix.
    LogMatching,
    /// A committed entry is in the log of every leader of a later term.
    LeaderCompleteness,
    /// No two nodes apply different entries at one index; applies in order, each index once.
    StateMachineSafety,
    /// A node's term never decreases (across restarts: never below its durable term).
    MonotonicTerm,
    /// A node's commit index never decreases (across restarts: never below its durable commit).
    MonotonicCommit,
    /// A node's applied index never decreases, across restarts too.
    MonotonicApplied,
    /// A node never grants two different candidates its vote in one term.
    DoubleVote,
    /// `applied <= commit <= last_index`; only locally durable entries are applied.
    Bounds,
    /// A vote or an append acknowledgement was sent before it was durable.
    DurableBeforeAck,
    /// A committed entry was not durable on a quorum of nodes.
    CommitDurability,
    /// A client command took effect twice.
    AtMostOnce,
    /// An acknowledged write is missing from the state machine.
    AckedWriteLost,
    /// The client history is not linearizable.
    Linearizability,
    /// No leader or no progress within the bound after healing.
    Liveness,
    /// Two nodes persisted different configurations for one index, or two consecutive
    /// configurations admit disjoint majorities (two leaders could be elected).
    ConfigSafety,
    /// The core broke its API contract (an unexpected error, a bad batch, a failed restart).
    CoreContract,
}

/// A broken invariant: which one, where, and what was seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The broken property.
    pub invariant: Invariant,
    /// The node where it was seen (`0` for a cluster-wide property).
    pub node: NodeId,
    /// The term involved.
    pub term: Term,
    /// The log index involved (`0` if none).
    pub index: Index,
    /// What exactly was seen.
    pub detail: String,
    /// Simulator step at which it was found.
    pub step: u64,
    /// Simulated time at which it was found.
    pub time: u64,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} violated on node {} at term {} index {}: {} (step {}, time {})",
            self.invariant, self.node, self.term, self.index, self.detail, self.step, self.time
        )
    }
}

impl std::error::Error for Violation {}

/// Whether some majority of configuration `a` and some majority of `b` share no node (each
/// configuration's majority needs a majority of both halves when joint). Brute force over the
/// subsets of the nodes involved (a handful in the simulator).
fn disjoint_majorities(a: &(Vec<NodeId>, Vec<NodeId>), b: &(Vec<NodeId>, Vec<NodeId>)) -> bool {
    let mut all: Vec<NodeId> = a.0.iter().chain(&a.1).chain(&b.0).chain(&b.1).copied().collect();
    all.sort_unstable();
    all.dedup();
    if all.len() > 16 {
        return false; // Not generated by the simulator; too many subsets to enumerate.
    }
    let majority = |set: &[NodeId], mask: u32| {
        set.is_empty()
            || 2 * set
                .iter()
                .filter(|id| {
                    all.iter().position(|x| x == *id).is_some_and(|i| mask & (1 << i) != 0)
                })
                .count()
                > set.len()
    };
    let full = (1u32 << all.len()) - 1;
    (0..=full).any(|m| {
        majority(&a.0, m)
            && majority(&a.1, m)
            && majority(&b.0, full & !m)
            && majority(&b.1, full & !m)
    })
}

/// Hash of an entry's kind and payload.
pub fn entry_hash(e: &Entry) -> u64 {
    let kind = match e.kind {
        EntryKind::Normal => 1u8,
        EntryKind::Empty => 2u8,
        EntryKind::ConfChange => 3u8,
    };
    fnv1a(fnv1a(FNV_OFFSET, &[kind]), &e.data)
}

#[derive(Clone, Copy, Debug)]
struct Committed {
    term: Term,
    hash: u64,
    /// Term in which the entry was first seen committed (an upper bound of the real one).
    commit_term: Term,
}

#[derive(Clone, Debug, Default)]
struct NodeTrack {
    term_floor: Term,
    commit_floor: Index,
    applied_floor: Index,
    /// Term in which the node was last seen as leader, while it still is.
    leader_term: Option<Term>,
}

/// Incremental checker of the safety invariants over one simulated cluster.
#[derive(Debug)]
pub struct Checker {
    storages: BTreeMap<NodeId, MemStorage>,
    /// Each node's membership at its previous observation.
    confs: BTreeMap<NodeId, ConfState>,
    /// Hash and term of the state machine image at each snapshot index.
    snapshots: BTreeMap<Index, (u64, Term)>,
    nodes: BTreeMap<NodeId, NodeTrack>,
    leaders: BTreeMap<Term, NodeId>,
    persisted: BTreeMap<(Index, Term), (u64, Term)>,
    /// `committed[i - 1]` describes committed index `i`.
    committed: Vec<Committed>,
    votes: BTreeMap<(NodeId, Term), NodeId>,
    /// Voter sets `(incoming, outgoing)` of every configuration persisted anywhere, by index.
    configs: BTreeMap<Index, (Vec<NodeId>, Vec<NodeId>)>,
    max_term: Term,
    step: u64,
    time: u64,
}

impl Checker {
    /// A checker for the nodes with durable `storages` (shared with the simulator).
    pub fn new(storages: BTreeMap<NodeId, MemStorage>) -> Checker {
        let nodes = storages.keys().map(|&id| (id, NodeTrack::default())).collect();
        let configs = storages
            .values()
            .filter_map(|s| s.initial_state().ok())
            .map(|st| st.conf_state)
            .find(|c| !c.voters.is_empty())
            .map(|c| (c.index, (c.voters, c.voters_outgoing)))
            .into_iter()
            .collect();
        Checker {
            configs,
            storages,
            confs: BTreeMap::new(),
            snapshots: BTreeMap::new(),
            nodes,
            leaders: BTreeMap::new(),
            persisted: BTreeMap::new(),
            committed: Vec::new(),
            votes: BTreeMap::new(),
            max_term: 0,
            step: 0,
            time: 0,
        }
    }

    /// Node `id` persists configuration `cs`: every node must agree on the configuration at each
    /// index, and consecutive configurations must not admit disjoint majorities (§6).
    pub fn on_persist_conf(&mut self, id: NodeId, cs: &ConfState) -> Result<(), Violation> {
        let sets = (cs.voters.clone(), cs.voters_outgoing.clone());
        if let Some(seen) = self.configs.get(&cs.index) {
            if *seen != sets {
                let d = format!("configuration {sets:?} differs from {seen:?} seen at this index");
                return Err(self.violation(Invariant::ConfigSafety, id, 0, cs.index, d));
            }
            return Ok(());
        }
        let prev = self.configs.range(..cs.index).next_back().map(|(_, c)| c.clone());
        let next = self.configs.range(cs.index + 1..).next().map(|(_, c)| c.clone());
        for other in [prev, next].into_iter().flatten() {
            if disjoint_majorities(&sets, &other) {
                let d = format!("configurations {sets:?} and {other:?} admit disjoint majorities");
                return Err(self.violation(Invariant::ConfigSafety, id, 0, cs.index, d));
            }
        }
        self.configs.insert(cs.index, sets);
        Ok(())
    }

    /// Sets the step and time reported in violations.
    pub fn set_clock(&mut self, step: u64, time: u64) {
        self.step = step;
        self.time = time;
    }

    /// Builds a violation stamped with the current step and time.
    pub fn violation(
        &self,
        invariant: Invariant,
        node: NodeId,
        term: Term,
        index: Index,
        detail: impl Into<String>,
    ) -> Violation {
        let (step, time) = (self.step, self.time);
        Violation { invariant, node, term, index, detail: detail.into(), step, time }
    }

    /// Leaders seen so far, by term.
    pub fn leaders(&self) -> &BTreeMap<Term, NodeId> {
        &self.leaders
    }

    /// Number of elections won (distinct terms with a leader).
    pub fn elections(&self) -> u64 {
        self.leaders.len() as u64
    }

    /// Highest index known committed.
    pub fn committed_index(&self) -> Index {
        self.committed.len() as Index
    }

    /// Term of the committed entry at `index`, if known.
    pub fn committed_term(&self, index: Index) -> Option<Term> {
        let i = usize::try_from(index).ok()?.checked_sub(1)?;
        self.committed.get(i).map(|c| c.term)
    }

    /// Highest term seen on any node.
    pub fn max_term(&self) -> Term {
        self.max_term
    }

    /// Checks a node's state after a step: bounds, monotonicity, commit tracking, election
    /// safety and leader completeness.
    pub fn observe(&mut self, id: NodeId, raft: &Raft<MemStorage>) -> Result<(), Violation> {
        let st = raft.status();
        self.max_term = self.max_term.max(st.term);
        if st.applied_index > st.commit_index || st.commit_index > st.last_index {
            let d = format!(
                "applied {} <= commit {} <= last_index {} does not hold",
                st.applied_index, st.commit_index, st.last_index
            );
            return Err(self.violation(Invariant::Bounds, id, st.term, st.commit_index, d));
        }
        self.check_floors(id, &st)?;
        self.record_commits(id, raft, &st)?;
        if st.role == Role::Leader {
            self.check_leader(id, raft, &st)?;
        } else if let Some(t) = self.nodes.get_mut(&id) {
            t.leader_term = None;
        }
        // A configuration is identified by the index of the entry that produced it.
        let conf = raft.conf_state();
        if self.confs.get(&id).map(|c| (c.index, c.voters.len()))
            != Some((conf.index, conf.voters.len()))
        {
            self.confs.insert(id, conf.clone());
        }
        Ok(())
    }

    fn check_floors(&mut self, id: NodeId, st: &Status) -> Result<(), Violation> {
        let t = self.nodes.entry(id).or_default().clone();
        let (inv, floor, now) = if st.term < t.term_floor {
            (Invariant::MonotonicTerm, t.term_floor, st.term)
        } else if st.commit_index < t.commit_floor {
            (Invariant::MonotonicCommit, t.commit_floor, st.commit_index)
        } else if st.applied_index < t.applied_floor {
            (Invariant::MonotonicApplied, t.applied_floor, st.applied_index)
        } else {
            let t = self.nodes.entry(id).or_default();
            t.term_floor = st.term;
            t.commit_floor = st.commit_index;
            t.applied_floor = st.applied_index;
            return Ok(());
        };
        let d = format!("went back from {floor} to {now}");
        Err(self.violation(inv, id, st.term, st.commit_index, d))
    }

    /// Records indices newly seen committed on `id` and checks they are durable on a quorum.
    fn record_commits(
        &mut self,
        id: NodeId,
        raft: &Raft<MemStorage>,
        st: &Status,
    ) -> Result<(), Violation> {
        let known = self.committed_index();
        if st.commit_index <= known {
            return Ok(());
        }
        let entries = raft.log_entries(known + 1, st.commit_index + 1).map_err(|e| {
            let d = format!("log_entries({}, {}) failed: {e}", known + 1, st.commit_index + 1);
            self.violation(Invariant::CoreContract, id, st.term, known + 1, d)
        })?;
        let commit_term = if st.role == Role::Leader { st.term } else { self.max_term };
        for (k, e) in entries.iter().enumerate() {
            if e.index != known + 1 + k as Index {
                let d = format!("log_entries returned index {} at position {k}", e.index);
                return Err(self.violation(Invariant::CoreContract, id, st.term, e.index, d));
            }
            self.push_committed(id, e, commit_term, raft.conf_state())?;
        }
        Ok(())
    }

    /// Whether the nodes in `durable` form a quorum of `conf` (of both halves when joint).
    fn is_quorum(conf: &ConfState, durable: &[NodeId]) -> bool {
        let majority = |voters: &[NodeId]| {
            let n = voters.iter().filter(|v| durable.contains(v)).count();
            voters.is_empty() || n > voters.len() / 2
        };
        majority(&conf.voters) && majority(&conf.voters_outgoing)
    }

    fn push_committed(
        &mut self,
        id: NodeId,
        e: &Entry,
        commit_term: Term,
        conf: &ConfState,
    ) -> Result<(), Violation> {
        let durable: Vec<NodeId> = self
            .storages
            .iter()
            .filter(|(_, s)| s.term(e.index) == Ok(e.term))
            .map(|(&n, _)| n)
            .collect();
        // The membership may have changed in the step that committed the entry.
        let prev = self.confs.get(&id).unwrap_or(conf);
        if !Checker::is_quorum(conf, &durable) && !Checker::is_quorum(prev, &durable) {
            let d = format!(
                "committed entry (term {}) is durable only on {durable:?}, not a quorum of \
                 voters {:?} (outgoing {:?})",
                e.term, conf.voters, conf.voters_outgoing
            );
            return Err(self.violation(Invariant::CommitDurability, id, e.term, e.index, d));
        }
        let hash = entry_hash(e);
        self.committed.push(Committed { term: e.term, hash, commit_term });
        Ok(())
    }

    fn check_leader(
        &mut self,
        id: NodeId,
        raft: &Raft<MemStorage>,
        st: &Status,
    ) -> Result<(), Violation> {
        let term = st.term;
        match self.leaders.get(&term) {
            Some(&other) if other != id => {
                let d = format!("nodes {other} and {id} are both leader");
                return Err(self.violation(Invariant::ElectionSafety, id, term, st.last_index, d));
            }
            Some(_) => {}
            None => {
                self.leaders.insert(term, id);
            }
        }
        let newly = self.nodes.get(&id).and_then(|t| t.leader_term) != Some(term);
        if newly {
            self.nodes.entry(id).or_default().leader_term = Some(term);
            for i in 1..=self.committed_index() {
                self.check_leader_has(id, raft, term, i)?;
            }
        } else {
            // While leading: the latest entry committed before its term must still be there.
            let latest = (1..=self.committed_index())
                .rev()
                .take(4)
                .find(|&i| self.committed[(i - 1) as usize].commit_term < term);
            if let Some(i) = latest {
                self.check_leader_has(id, raft, term, i)?;
            }
        }
        Ok(())
    }

    fn check_leader_has(
        &self,
        id: NodeId,
        raft: &Raft<MemStorage>,
        term: Term,
        index: Index,
    ) -> Result<(), Violation> {
        let c = self.committed[(index - 1) as usize];
        // `Status::snapshot_index` does not follow compactions the driver made through storage;
        // the storage's first index does.
        let first = raft.storage().first_index().unwrap_or(1);
        if c.commit_term >= term || index + 1 < first {
            // Not required yet, or covered by the snapshot the leader's log starts from.
            return Ok(());
        }
        let has = raft.log_term(index);
        if has == Some(c.term) {
            return Ok(());
        }
        let d = format!(
            "leader lacks the entry committed in term {} (entry term {}, leader has {:?})",
            c.commit_term, c.term, has
        );
        Err(self.violation(Invariant::LeaderCompleteness, id, term, index, d))
    }

    /// Checks an entry that `id` (in term `term`, as leader or not) is about to apply:
    /// it must be durable locally and equal to whatever any node applied at that index.
    pub fn on_apply(
        &mut self,
        id: NodeId,
        e: &Entry,
        term: Term,
        is_leader: bool,
        conf: &ConfState,
    ) -> Result<(), Violation> {
        let local = self.storages.get(&id).map(|s| s.term(e.index));
        if local != Some(Ok(e.term)) {
            let d = format!(
                "applying an entry (term {}) that is not durable in its own log (durable: {:?}); \
                 a crash would leave applied > last_index",
                e.term, local
            );
            return Err(self.violation(Invariant::Bounds, id, term, e.index, d));
        }
        let known = self.committed_index();
        if e.index == known + 1 {
            let commit_term = if is_leader { term } else { self.max_term.max(term) };
            return self.push_committed(id, e, commit_term, conf);
        }
        if e.index > known {
            let d = format!("applying index {} beyond any index seen committed ({known})", e.index);
            return Err(self.violation(Invariant::CoreContract, id, term, e.index, d));
        }
        let c = self.committed[(e.index - 1) as usize];
        if c.term != e.term || c.hash != entry_hash(e) {
            let d = format!(
                "applies entry (term {}, hash {:x}) where (term {}, hash {:x}) was committed",
                e.term,
                entry_hash(e),
                c.term,
                c.hash
            );
            return Err(self.violation(Invariant::StateMachineSafety, id, term, e.index, d));
        }
        Ok(())
    }

    /// Checks entries just written to `id`'s durable log (log matching).
    pub fn on_persist_entries(&mut self, id: NodeId, entries: &[Entry]) -> Result<(), Violation> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let storage = &self.storages[&id];
        let mut prev_term = match storage.term(first.index - 1) {
            Ok(t) => t,
            Err(e) => {
                let d = format!("durable log has no term before the write: {e}");
                return Err(self.violation(
                    Invariant::CoreContract,
                    id,
                    first.term,
                    first.index,
                    d,
                ));
            }
        };
        for e in entries {
            let rec = (entry_hash(e), prev_term);
            if let Some(&old) = self.persisted.get(&(e.index, e.term)) {
                if old != rec {
                    let d = format!(
                        "entry differs from another log's entry with the same index and term \
                         (hash {:x} vs {:x}, previous term {} vs {})",
                        rec.0, old.0, rec.1, old.1
                    );
                    return Err(self.violation(Invariant::LogMatching, id, e.term, e.index, d));
                }
            } else {
                self.persisted.insert((e.index, e.term), rec);
            }
            prev_term = e.term;
        }
        Ok(())
    }

    /// Checks a hard state about to replace `old` in `id`'s durable storage.
    pub fn on_persist_hard_state(
        &mut self,
        id: NodeId,
        old: HardState,
        new: HardState,
    ) -> Result<(), Violation> {
        let bad = if new.term < old.term {
            Some((Invariant::MonotonicTerm, format!("durable term {} → {}", old.term, new.term)))
        } else if new.term == old.term && old.vote.is_some() && new.vote != old.vote {
            let d = format!("durable vote changed {:?} → {:?} within a term", old.vote, new.vote);
            Some((Invariant::DoubleVote, d))
        } else if new.commit < old.commit {
            let d = format!("durable commit {} → {}", old.commit, new.commit);
            Some((Invariant::MonotonicCommit, d))
        } else {
            None
        };
        if let Some((inv, d)) = bad {
            return Err(self.violation(inv, id, new.term, new.commit, d));
        }
        match new.vote {
            Some(c) => self.record_vote(id, new.term, c),
            None => Ok(()),
        }
    }

    fn record_vote(&mut self, voter: NodeId, term: Term, cand: NodeId) -> Result<(), Violation> {
        match self.votes.get(&(voter, term)) {
            Some(&prev) if prev != cand => {
                let d = format!("voted for {prev} and then for {cand}");
                Err(self.violation(Invariant::DoubleVote, voter, term, 0, d))
            }
            Some(_) => Ok(()),
            None => {
                self.votes.insert((voter, term), cand);
                Ok(())
            }
        }
    }

    /// Checks a message as it leaves node `msg.from`: granted votes and append acknowledgements
    /// must already be durable, and a node grants one vote per term.
    pub fn on_send(&mut self, msg: &Message) -> Result<(), Violation> {
        let id = msg.from;
        let Some(storage) = self.storages.get(&id) else {
            return Ok(());
        };
        match msg.body {
            MessageBody::VoteResponse { pre_vote: false, granted: true, .. } => {
                let hs = storage.hard_state();
                if hs.term < msg.term || (hs.term == msg.term && hs.vote != Some(msg.to)) {
                    let d =
                        format!("vote for {} sent while the durable hard state is {hs:?}", msg.to);
                    return Err(self.violation(Invariant::DurableBeforeAck, id, msg.term, 0, d));
                }
                self.record_vote(id, msg.term, msg.to)
            }
            MessageBody::AppendResponse { reject: false, index, .. } => {
                let last = storage.last_index().unwrap_or(0);
                if last < index {
                    let d =
                        format!("acknowledges index {index} while its durable log ends at {last}");
                    return Err(self.violation(
                        Invariant::DurableBeforeAck,
                        id,
                        msg.term,
                        index,
                        d,
                    ));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// A node crashed: its in-memory floors fall back to its durable hard state and to the
    /// applied index of its durable state machine.
    pub fn on_crash(&mut self, id: NodeId, durable_applied: Index) {
        let hs = self.storages.get(&id).map(MemStorage::hard_state).unwrap_or_default();
        let t = self.nodes.entry(id).or_default();
        t.term_floor = hs.term;
        t.commit_floor = hs.commit;
        t.applied_floor = durable_applied;
        t.leader_term = None;
    }

    /// A snapshot taken or installed by `id`: every snapshot at one index must hold the same
    /// state machine image (state machine safety across snapshots), and its term must be the
    /// committed entry's.
    pub fn on_snapshot(&mut self, id: NodeId, s: &Snapshot) -> Result<(), Violation> {
        let (index, term) = (s.meta.index, s.meta.term);
        let hash = fnv1a(FNV_OFFSET, &s.data);
        if let Some(t) = self.committed_term(index)
            && t != term
        {
            let d = format!("snapshot has term {term} where the committed entry has term {t}");
            return Err(self.violation(Invariant::StateMachineSafety, id, term, index, d));
        }
        match self.snapshots.get(&index) {
            Some(&(h, t)) if (h, t) != (hash, term) => {
                let d = "snapshot differs from another node's snapshot at the same index";
                Err(self.violation(Invariant::StateMachineSafety, id, term, index, d))
            }
            Some(_) => Ok(()),
            None => {
                self.snapshots.insert(index, (hash, term));
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn disjoint_majorities_detects_unsafe_config_pairs() {
        let c = |v: &[NodeId], o: &[NodeId]| (v.to_vec(), o.to_vec());
        assert!(super::disjoint_majorities(&c(&[1, 2, 3], &[]), &c(&[4, 5, 6], &[])));
        assert!(super::disjoint_majorities(&c(&[1, 2, 3], &[]), &c(&[3, 4, 5], &[])));
        assert!(!super::disjoint_majorities(&c(&[1, 2, 3], &[]), &c(&[1, 2, 3, 4], &[])));
        // Joint {3,4,5}/{1,2,3} overlaps both neighbours.
        assert!(!super::disjoint_majorities(&c(&[1, 2, 3], &[]), &c(&[3, 4, 5], &[1, 2, 3])));
        assert!(!super::disjoint_majorities(&c(&[3, 4, 5], &[1, 2, 3]), &c(&[3, 4, 5], &[])));
    }

    use super::*;
    use bytes::Bytes;

    fn ent(index: Index, term: Term, data: &'static [u8]) -> Entry {
        Entry { index, term, kind: EntryKind::Normal, data: Bytes::from_static(data) }
    }

    fn conf3() -> ConfState {
        ConfState { voters: vec![1, 2, 3], ..ConfState::default() }
    }

    fn checker(n: u64) -> (Checker, Vec<MemStorage>) {
        let ids: Vec<NodeId> = (1..=n).collect();
        let stores: Vec<MemStorage> =
            ids.iter().map(|_| MemStorage::new_with_voters(&ids)).collect();
        let map = ids.iter().zip(&stores).map(|(&id, s)| (id, s.clone())).collect();
        (Checker::new(map), stores)
    }

    fn persist(c: &mut Checker, s: &MemStorage, id: NodeId, es: &[Entry]) -> Result<(), Violation> {
        s.append(es).unwrap();
        c.on_persist_entries(id, es)
    }

    #[test]
    fn same_index_and_term_with_other_data_breaks_log_matching() {
        let (mut c, s) = checker(2);
        persist(&mut c, &s[0], 1, &[ent(1, 1, b"a"), ent(2, 1, b"b")]).unwrap();
        let err = persist(&mut c, &s[1], 2, &[ent(1, 1, b"a"), ent(2, 1, b"c")]).unwrap_err();
        assert_eq!((err.invariant, err.node, err.index), (Invariant::LogMatching, 2, 2));
    }

    #[test]
    fn same_entry_after_another_prefix_breaks_log_matching() {
        let (mut c, s) = checker(2);
        persist(&mut c, &s[0], 1, &[ent(1, 1, b"a"), ent(2, 2, b"b")]).unwrap();
        persist(&mut c, &s[1], 2, &[ent(1, 3, b"x")]).unwrap();
        let err = persist(&mut c, &s[1], 2, &[ent(2, 2, b"b")]).unwrap_err();
        assert_eq!((err.invariant, err.index), (Invariant::LogMatching, 2));
    }

    #[test]
    fn votes_must_be_durable_and_single_per_term() {
        let (mut c, s) = checker(3);
        let vote = |to| Message {
            from: 1,
            to,
            term: 2,
            body: MessageBody::VoteResponse {
                pre_vote: false,
                granted: true,
                commit_index: 0,
                commit_term: 0,
            },
        };
        let err = c.on_send(&vote(2)).unwrap_err();
        assert_eq!(err.invariant, Invariant::DurableBeforeAck);
        let hs = HardState { term: 2, vote: Some(2), commit: 0 };
        c.on_persist_hard_state(1, HardState::default(), hs).unwrap();
        s[0].set_hard_state(hs);
        c.on_send(&vote(2)).unwrap();
        let other = HardState { vote: Some(3), ..hs };
        let err = c.on_persist_hard_state(1, hs, other).unwrap_err();
        assert_eq!((err.invariant, err.node, err.term), (Invariant::DoubleVote, 1, 2));
    }

    #[test]
    fn applying_a_different_entry_at_a_committed_index_is_caught() {
        let (mut c, s) = checker(3);
        for (k, st) in s.iter().enumerate() {
            let data: &'static [u8] = if k == 2 { b"other" } else { b"a" };
            persist(&mut c, st, k as NodeId + 1, &[ent(1, 1, data)]).ok();
        }
        c.on_apply(1, &ent(1, 1, b"a"), 1, true, &conf3()).unwrap();
        assert_eq!(c.committed_term(1), Some(1));
        let err = c.on_apply(3, &ent(1, 1, b"other"), 1, false, &conf3()).unwrap_err();
        assert_eq!(err.invariant, Invariant::StateMachineSafety);
        let err = c.on_apply(2, &ent(2, 1, b"z"), 1, false, &conf3()).unwrap_err();
        assert_eq!(err.invariant, Invariant::Bounds, "not durable locally");
    }

    #[test]
    fn a_commit_not_durable_on_a_quorum_is_caught() {
        let (mut c, s) = checker(3);
        persist(&mut c, &s[0], 1, &[ent(1, 1, b"a")]).unwrap();
        let err = c.on_apply(1, &ent(1, 1, b"a"), 1, true, &conf3()).unwrap_err();
        assert_eq!((err.invariant, err.index), (Invariant::CommitDurability, 1));
    }
}
