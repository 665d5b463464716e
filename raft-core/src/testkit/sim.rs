//! A seeded, deterministic cluster simulator.
//!
//! [`Sim`] runs `n` [`Raft`] nodes over a simulated [`Network`] with asynchronous persistence and
//! a durable key-value state machine per node, and checks the safety invariants of `TESTING.md`
//! after every step (see [`crate::testkit::invariants`]).
//!
//! # Time
//! Simulated time is counted in units; one nominal tick is [`TICK`] units. Each node has a clock
//! rate in per mille (1000 = nominal); it ticks every `TICK * 1000 / rate` units. Messages,
//! persistence completions, ticks and client actions are events with a due time; [`Sim::step`]
//! runs the earliest one (ties broken at random), so one seed determines the whole run.
//!
//! # Persistence
//! Every `Ready` becomes a pending write of its node, completed later in batch order: the entries
//! and hard state are written to the node's durable [`MemStorage`], `on_persisted` is called and the
//! `persisted_messages` are sent. A crash discards pending writes and all in-memory state; the
//! storage and the state machine (updated atomically with each apply) survive.
//!
//! # Snapshots and membership
//! With [`SimConfig::compact_every`] each node snapshots its state machine and compacts its log
//! as it applies; a snapshot sent by a leader is installed in storage and restores the state
//! machine in one durable step. A `Ready` carrying a snapshot or a membership change holds back
//! its committed entries (and those of later batches) until it is durable. Nodes beyond the
//! initial voters ([`SimConfig::spare_nodes`]) start empty and can be added with
//! [`Sim::propose_conf_change`].
//!
//! # Manual control
//! Besides timed [`Sim::step`]s, every event can be caused explicitly ([`Sim::tick`],
//! [`Sim::deliver`], [`Sim::persist`], …), which scripted tests and the fuzzer use.

mod faults;
mod io;
mod manual;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::fmt;

use super::client::{Workload, WorkloadConfig};
use super::invariants::{Checker, Invariant, Violation};
use super::kv::KvStore;
use super::linearizability::History;
use super::network::{NetConfig, Network};
use super::rng::{FNV_OFFSET, Rng, fnv1a, mix};
use crate::config::Config;
use crate::error::Error;
use crate::raft::Raft;
use crate::storage::MemStorage;
use crate::types::{
    ConfState, Entry, HardState, Index, Message, NodeId, ReadState, Role, Snapshot,
};

/// Simulated time units per nominal tick.
pub const TICK: u64 = 1000;

/// Bound on `ready()` rounds after one input; more means the core never settles.
const MAX_READY_ROUNDS: usize = 1024;
/// Bound on the ticks a resumed node catches up on at once.
const MAX_MISSED_TICKS: u64 = 1_000_000;
/// First byte of a liveness probe payload (followed by the probe number).
const PROBE_TAG: u8 = 0xC3;
/// Liveness bound after healing, in election timeouts.
pub const LIVENESS_ELECTION_TIMEOUTS: u64 = 50;

/// How a simulation is set up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimConfig {
    /// Seed of every random choice of the run.
    pub seed: u64,
    /// Number of voters (ids `1..=nodes`).
    pub nodes: usize,
    /// Configuration template; `id` and `seed` are set per node.
    pub raft: Config,
    /// Network faults and latency.
    pub net: NetConfig,
    /// Smallest delay of a durable write.
    pub persist_latency_min: u64,
    /// Largest delay of a durable write.
    pub persist_latency_max: u64,
    /// Clock rate of each node in per mille (missing entries: 1000).
    pub tick_rates_permille: Vec<u32>,
    /// Client workload, if any.
    pub workload: Option<WorkloadConfig>,
    /// In timed steps, probability (per mille) that a node crashes at a persistence point (just
    /// before a write, after the write but before its acknowledgement, or just after it).
    pub crash_at_persist_permille: u32,
    /// Nodes beyond the initial voters (ids `nodes + 1..=nodes + spare_nodes`): they run from the
    /// start with an empty log and no membership, ready to be added by a membership change.
    pub spare_nodes: usize,
    /// Each node snapshots its state machine and compacts its log once it applied this many
    /// entries past its last snapshot (0: never).
    pub compact_every: u64,
}

impl SimConfig {
    /// `nodes` voters with default Raft settings, a reliable network, no clients.
    pub fn new(seed: u64, nodes: usize) -> SimConfig {
        SimConfig {
            seed,
            nodes,
            raft: Config::new(1),
            net: NetConfig::default(),
            persist_latency_min: 0,
            persist_latency_max: 300,
            tick_rates_permille: Vec::new(),
            workload: None,
            crash_at_persist_permille: 0,
            spare_nodes: 0,
            compact_every: 0,
        }
    }

    /// The configuration of node `id` (incarnation `boot`: a restarted node gets a new seed).
    pub fn node_config(&self, id: NodeId, boot: u64) -> Config {
        let mut c = self.raft.clone();
        c.id = id;
        c.seed = mix(mix(self.seed, id), boot);
        c
    }
}

/// An operation on a node that could not be submitted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SimError {
    /// The node is crashed.
    NodeDown(NodeId),
    /// The node is paused.
    NodePaused(NodeId),
    /// The node refused it.
    Raft(Error),
    /// An invariant broke while the node handled it.
    Violation(Box<Violation>),
}

impl fmt::Display for SimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SimError::NodeDown(id) => write!(f, "node {id} is down"),
            SimError::NodePaused(id) => write!(f, "node {id} is paused"),
            SimError::Raft(e) => write!(f, "{e}"),
            SimError::Violation(v) => write!(f, "{v}"),
        }
    }
}

impl std::error::Error for SimError {}

/// What happened in the simulation so far (network counters are in [`Network::counters`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Steps taken (timed events and manual actions).
    pub steps: u64,
    /// `tick()` calls.
    pub ticks: u64,
    /// Pending writes completed.
    pub writes: u64,
    /// Crashes (including at persistence points).
    pub crashes: u64,
    /// Crashes at persistence points.
    pub crash_points: u64,
    /// Restarts.
    pub restarts: u64,
    /// Pauses.
    pub pauses: u64,
    /// Messages refused by `step` as invalid.
    pub invalid_messages: u64,
    /// Non-client reads served (see [`Sim::served_reads`]).
    pub reads_served: u64,
    /// Entries applied, over all nodes.
    pub applied_entries: u64,
    /// Liveness probes committed.
    pub probes: u64,
    /// Log compactions (state machine snapshots taken).
    pub compactions: u64,
    /// Snapshots installed from a leader.
    pub snapshots_installed: u64,
    /// Membership changes made durable (counted once per configuration, on its first node).
    pub conf_changes: u64,
    /// Leadership transfers a leader accepted (to another node).
    pub transfers: u64,
    /// Forwarded requests handed out as refused (`Ready::refused`), over all nodes.
    pub refused: u64,
    /// Index of the newest configuration made durable anywhere.
    pub last_conf_index: Index,
}

/// A durable write waiting to complete.
#[derive(Clone, Debug)]
struct PendingWrite {
    number: u64,
    snapshot: Option<Snapshot>,
    entries: Vec<Entry>,
    hard_state: Option<HardState>,
    conf_state: Option<ConfState>,
    persisted_messages: Vec<Message>,
    /// Committed entries that may be applied only once this write is durable (they follow a
    /// snapshot or a membership change in it, or an earlier write that holds entries back).
    apply_after: Vec<Entry>,
    /// This write holds committed entries back (so every later one does too).
    gated: bool,
    complete_at: u64,
}

impl PendingWrite {
    fn is_empty(&self) -> bool {
        self.entries.is_empty()
            && self.hard_state.is_none()
            && self.snapshot.is_none()
            && self.conf_state.is_none()
    }
}

/// One simulated machine: the node (if up), its disk and its state machine.
struct SimNode {
    id: NodeId,
    raft: Option<Raft<MemStorage>>,
    /// Durable: survives crashes.
    storage: MemStorage,
    /// Durable: survives crashes with its applied index.
    kv: KvStore,
    pending: VecDeque<PendingWrite>,
    /// Reads waiting for the applied index to reach theirs.
    reads: Vec<ReadState>,
    paused_since: Option<u64>,
    /// Messages that arrived while paused.
    held: Vec<Message>,
    rate_permille: u32,
    next_tick_at: u64,
    boots: u64,
}

impl SimNode {
    fn tick_period(&self) -> u64 {
        (TICK * 1000 / u64::from(self.rate_permille.max(1))).max(1)
    }

    fn runnable(&self) -> bool {
        self.raft.is_some() && self.paused_since.is_none()
    }
}

/// Which kind of event a step ran (for the trace hash).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Event {
    Deliver,
    Persist(usize),
    Tick(usize),
    Client,
}

/// The simulated cluster. See the module documentation.
pub struct Sim {
    cfg: SimConfig,
    now: u64,
    rng: Rng,
    ids: Vec<NodeId>,
    nodes: Vec<SimNode>,
    net: Network,
    checker: Checker,
    workload: Workload,
    counters: Counters,
    trace: u64,
    served_reads: Vec<(NodeId, ReadState)>,
    /// Highest liveness probe number applied by any node.
    probe_applied: u64,
    next_probe: u64,
    verbose: bool,
}

impl Sim {
    /// Builds the cluster: every node starts as a follower with an empty log.
    pub fn new(cfg: SimConfig) -> Sim {
        let mut rng = Rng::new(mix(cfg.seed, 0x5113));
        let voters: Vec<NodeId> = (1..=cfg.nodes.max(1) as NodeId).collect();
        let ids: Vec<NodeId> = (1..=(cfg.nodes.max(1) + cfg.spare_nodes) as NodeId).collect();
        let nodes: Vec<SimNode> =
            ids.iter().map(|&id| new_node(&cfg, &voters, id, &mut rng)).collect();
        let storages = nodes.iter().map(|n| (n.id, n.storage.clone())).collect();
        let net = Network::new(cfg.net.clone(), rng.fork());
        let wcfg =
            cfg.workload.clone().unwrap_or(WorkloadConfig { auto: false, ..Default::default() });
        let workload = Workload::new(wcfg, ids.clone(), rng.fork());
        Sim {
            now: 0,
            rng,
            ids,
            nodes,
            net,
            checker: Checker::new(storages),
            workload,
            counters: Counters::default(),
            trace: FNV_OFFSET,
            served_reads: Vec::new(),
            probe_applied: 0,
            next_probe: 0,
            verbose: false,
            cfg,
        }
    }

    // ------------------------------------------------------------------ observers

    /// The configuration the simulation was built with.
    pub fn config(&self) -> &SimConfig {
        &self.cfg
    }

    /// Current simulated time.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Node ids, ascending.
    pub fn node_ids(&self) -> &[NodeId] {
        &self.ids
    }

    fn idx(&self, id: NodeId) -> usize {
        let i = usize::try_from(id).ok().and_then(|i| i.checked_sub(1));
        match i {
            Some(i) if i < self.nodes.len() => i,
            _ => panic!("no node {id} in a cluster of {}", self.nodes.len()),
        }
    }

    /// Node `id`. Panics if it is down.
    pub fn node(&self, id: NodeId) -> &Raft<MemStorage> {
        self.try_node(id).unwrap_or_else(|| panic!("node {id} is down"))
    }

    /// Node `id`, or `None` while it is down.
    pub fn try_node(&self, id: NodeId) -> Option<&Raft<MemStorage>> {
        self.nodes[self.idx(id)].raft.as_ref()
    }

    /// Whether node `id` is up (not crashed).
    pub fn is_up(&self, id: NodeId) -> bool {
        self.try_node(id).is_some()
    }

    /// Whether node `id` is paused.
    pub fn is_paused(&self, id: NodeId) -> bool {
        self.nodes[self.idx(id)].paused_since.is_some()
    }

    /// Node `id`'s durable storage.
    pub fn storage(&self, id: NodeId) -> &MemStorage {
        &self.nodes[self.idx(id)].storage
    }

    /// Node `id`'s (durable) key-value state machine.
    pub fn kv(&self, id: NodeId) -> &KvStore {
        &self.nodes[self.idx(id)].kv
    }

    /// Number of writes of node `id` waiting to become durable.
    pub fn pending_writes(&self, id: NodeId) -> usize {
        self.nodes[self.idx(id)].pending.len()
    }

    /// Clock rate of node `id`, per mille.
    pub fn tick_rate(&self, id: NodeId) -> u32 {
        self.nodes[self.idx(id)].rate_permille
    }

    /// The membership as the current leader sees it (voters, outgoing voters and learners),
    /// or, without a leader, the initial voters.
    pub fn members(&self) -> Vec<NodeId> {
        let Some(l) = self.leader() else {
            return (1..=self.cfg.nodes.max(1) as NodeId).collect();
        };
        let c = self.node(l).conf_state();
        let mut m: Vec<NodeId> =
            c.voters.iter().chain(&c.voters_outgoing).chain(&c.learners).copied().collect();
        m.sort_unstable();
        m.dedup();
        m
    }

    /// The up node that is leader with the highest term, if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter_map(|n| n.raft.as_ref())
            .filter(|r| r.role() == Role::Leader)
            .max_by_key(|r| r.term())
            .map(|r| r.id())
    }

    /// The network (in-flight messages, counters, link state).
    pub fn network(&self) -> &Network {
        &self.net
    }

    /// Messages in flight.
    pub fn in_flight(&self) -> usize {
        self.net.in_flight()
    }

    /// Counters of the run.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The invariant checker (leaders per term, committed entries, …).
    pub fn checker(&self) -> &Checker {
        &self.checker
    }

    /// The client workload.
    pub fn workload(&self) -> &Workload {
        &self.workload
    }

    /// History of client operations.
    pub fn history(&self) -> &History {
        self.workload.history()
    }

    /// Reads with a non-client context, as `(node, read state)`, in the order they were served.
    pub fn served_reads(&self) -> &[(NodeId, ReadState)] {
        &self.served_reads
    }

    /// Hash of every step taken so far (kind, node, time): equal runs have equal hashes.
    pub fn trace_hash(&self) -> u64 {
        self.trace
    }

    /// Highest index seen committed on any node.
    pub fn committed_index(&self) -> Index {
        self.checker.committed_index()
    }

    /// The election state of every node, for liveness reports.
    pub(crate) fn election_debug(&self) -> String {
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .map(|n| match &n.raft {
                None => format!("{}:down", n.id),
                Some(r) => format!("[{} rate={}]", r.election_debug(), n.rate_permille),
            })
            .collect();
        nodes.join(" ")
    }

    /// Prints every step and every delivered message to stderr (for replaying a failure).
    pub fn set_verbose(&mut self, on: bool) {
        self.verbose = on;
    }

    fn log(&self, what: impl FnOnce() -> String) {
        if self.verbose {
            let nodes: Vec<String> = self
                .nodes
                .iter()
                .map(|n| match &n.raft {
                    None => format!("{}:down", n.id),
                    Some(r) => {
                        let st = r.status();
                        let role = format!("{:?}", st.role);
                        let p = if n.paused_since.is_some() { "(paused)" } else { "" };
                        format!(
                            "{}:{}{p} t{} c{} l{}",
                            n.id,
                            &role[..2],
                            st.term,
                            st.commit_index,
                            st.last_index
                        )
                    }
                })
                .collect();
            eprintln!(
                "[{:>8} #{}] {} | {}",
                self.now,
                self.counters.steps,
                what(),
                nodes.join(" ")
            );
        }
    }

    // ------------------------------------------------------------------ timed steps

    /// Runs the earliest due event (advancing time to it). `Ok(false)`: nothing can happen.
    pub fn step(&mut self) -> Result<bool, Violation> {
        let Some((at, ev)) = self.next_event() else {
            return Ok(false);
        };
        self.now = self.now.max(at);
        match ev {
            Event::Deliver => {
                let Some(env) = self.net.pop_due(self.now) else {
                    return Ok(true);
                };
                self.begin_step(1, env.msg.to);
                self.log(|| format!("deliver {:?}", env.msg));
                self.deliver_message(env.msg)?;
            }
            Event::Persist(i) => {
                self.begin_step(2, self.ids[i]);
                self.log(|| format!("persist node {}", i + 1));
                self.persist_point(self.ids[i])?;
            }
            Event::Tick(i) => {
                self.begin_step(3, self.ids[i]);
                self.tick_node(i)?;
            }
            Event::Client => {
                self.begin_step(4, 0);
                if let Some(a) = self.workload.fire(self.now) {
                    self.log(|| format!("client {:?}", a));
                    self.submit_attempt(a)?;
                }
            }
        }
        self.end_step()?;
        Ok(true)
    }

    fn next_event(&mut self) -> Option<(u64, Event)> {
        let mut best: Option<(u64, Event)> = None;
        let mut ties = 0u64;
        let mut consider = |t: Option<u64>, ev: Event, rng: &mut Rng| {
            let Some(t) = t else { return };
            match best {
                Some((b, _)) if t > b => {}
                Some((b, _)) if t == b => {
                    ties += 1;
                    if rng.below(ties + 1) == 0 {
                        best = Some((t, ev));
                    }
                }
                _ => {
                    best = Some((t, ev));
                    ties = 0;
                }
            }
        };
        consider(self.net.next_due(), Event::Deliver, &mut self.rng);
        for (i, n) in self.nodes.iter().enumerate() {
            if n.runnable() {
                consider(Some(n.next_tick_at), Event::Tick(i), &mut self.rng);
                let w = n.pending.front().map(|w| w.complete_at);
                consider(w, Event::Persist(i), &mut self.rng);
            }
        }
        consider(self.workload.next_due(), Event::Client, &mut self.rng);
        best
    }

    /// Runs timed steps for `duration` units of simulated time.
    pub fn run_for(&mut self, duration: u64) -> Result<(), Violation> {
        let end = self.now.saturating_add(duration);
        self.run_until(|_| false, end.saturating_sub(self.now))?;
        Ok(())
    }

    /// Runs timed steps until `pred` holds (checked before each step) or `max_time` units of
    /// simulated time have passed. Returns whether `pred` came to hold.
    pub fn run_until(
        &mut self,
        mut pred: impl FnMut(&Sim) -> bool,
        max_time: u64,
    ) -> Result<bool, Violation> {
        let end = self.now.saturating_add(max_time);
        loop {
            if pred(self) {
                return Ok(true);
            }
            match self.next_event() {
                Some((at, _)) if at <= end => {
                    self.step()?;
                }
                _ => {
                    self.now = self.now.max(end);
                    return Ok(pred(self));
                }
            }
        }
    }

    fn begin_step(&mut self, kind: u8, node: NodeId) {
        self.counters.steps += 1;
        let mut h = fnv1a(self.trace, &[kind]);
        h = fnv1a(h, &node.to_le_bytes());
        self.trace = fnv1a(h, &self.now.to_le_bytes());
        self.checker.set_clock(self.counters.steps, self.now);
    }

    /// Checks every up node after a step.
    fn end_step(&mut self) -> Result<(), Violation> {
        for n in &self.nodes {
            if let Some(r) = n.raft.as_ref() {
                self.checker.observe(n.id, r)?;
            }
        }
        Ok(())
    }

    fn tick_node(&mut self, i: usize) -> Result<(), Violation> {
        let period = self.nodes[i].tick_period();
        self.nodes[i].next_tick_at += period;
        let Some(r) = self.nodes[i].raft.as_mut() else {
            return Ok(());
        };
        r.tick();
        self.counters.ticks += 1;
        self.drain_ready(self.ids[i])
    }
}

fn new_node(cfg: &SimConfig, voters: &[NodeId], id: NodeId, rng: &mut Rng) -> SimNode {
    let storage = if voters.contains(&id) {
        MemStorage::new_with_voters(voters)
    } else {
        MemStorage::default()
    };
    let raft = Raft::new(cfg.node_config(id, 0), storage.clone())
        .unwrap_or_else(|e| panic!("node {id}: invalid simulator configuration: {e}"));
    let rate = cfg.tick_rates_permille.get((id - 1) as usize).copied().unwrap_or(1000);
    let mut n = SimNode {
        id,
        raft: Some(raft),
        storage,
        kv: KvStore::new(),
        pending: VecDeque::new(),
        reads: Vec::new(),
        paused_since: None,
        held: Vec::new(),
        rate_permille: rate.max(1),
        next_tick_at: 0,
        boots: 0,
    };
    n.next_tick_at = rng.below(n.tick_period());
    n
}

/// A violation of the core's API contract.
fn contract(checker: &Checker, node: NodeId, index: Index, detail: String) -> Violation {
    checker.violation(Invariant::CoreContract, node, 0, index, detail)
}
