//! Randomized runs: one seed chooses the cluster, its configuration and a fault plan; chaos
//! phases alternate with healed phases in which liveness is required.

use super::RunStats;
use crate::config::{Config, ReadMode};
use crate::testkit::client::WorkloadConfig;
use crate::testkit::invariants::Violation;
use crate::testkit::network::{NetConfig, Partition};
use crate::testkit::rng::{Rng, mix};
use crate::testkit::sim::{Sim, SimConfig, SimError, TICK};
use crate::types::{ConfChange, ConfChangeOp, ConfChangeTransition, NodeId};

/// Clock rates (per mille) of healed phases: a ratio below 1.3 between any two nodes.
const CALM_RATES: (u32, u32) = (900, 1150);

/// Fault rates and pacing of the chaos phases of one seed.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Plan {
    phases: u32,
    chaos_ticks: u64,
    calm_ticks: u64,
    drop_permille: u32,
    duplicate_permille: u32,
    reorder_permille: u32,
    crash_at_persist_permille: u32,
    action_gap_ticks: (u64, u64),
    /// Clock rates allowed for this seed, per mille.
    rate_range: (u32, u32),
    /// Membership changes and leadership transfers are among the faults.
    membership: bool,
}

/// The randomized configuration of seed `seed`: cluster size, Raft settings, clock rates,
/// network, persistence latency and clients.
pub fn random_config(seed: u64) -> SimConfig {
    random_setup(seed).0
}

fn random_setup(seed: u64) -> (SimConfig, Plan) {
    let mut rng = Rng::new(mix(seed, 0xC0F1_6000));
    let nodes = match rng.below(20) {
        0..=1 => 1,
        2..=10 => 3,
        11..=17 => 5,
        _ => 7,
    };
    let raft = random_raft_config(&mut rng);
    let rate_range = random_rate_range(&mut rng, &raft);
    let rates: Vec<u32> =
        (0..nodes).map(|_| rng.range(rate_range.0.into(), rate_range.1.into()) as u32).collect();
    let latency_min = rng.range(30, 300);
    let net = NetConfig {
        latency_min,
        latency_max: latency_min + rng.range(50, 900),
        reorder_delay_max: rng.range(500, 4_000),
        ..NetConfig::default()
    };
    let et = u64::from(raft.election_timeout_ticks) * TICK;
    let workload = WorkloadConfig {
        clients: rng.range(3, 5) as usize,
        keys: rng.range(3, 6),
        auto: true,
        get_permille: rng.range(300, 600) as u32,
        op_timeout: et * rng.range(3, 30) / 10,
        max_attempts: 3,
        think_min: 100,
        think_max: rng.range(1_000, 4_000),
        retry_backoff: et / 4,
        random_node_permille: rng.range(50, 400) as u32,
    };
    let cfg = SimConfig {
        seed,
        nodes,
        raft,
        net,
        persist_latency_min: 0,
        persist_latency_max: rng.range(50, 800),
        tick_rates_permille: rates,
        workload: Some(workload),
        crash_at_persist_permille: 0,
        spare_nodes: if nodes < 7 { rng.range(0, 2) as usize } else { 0 },
        compact_every: if rng.chance(400) { 0 } else { rng.range(5, 100) },
    };
    (cfg, random_plan(&mut rng, rate_range))
}

fn random_raft_config(rng: &mut Rng) -> Config {
    let mut c = Config::new(1);
    let lease = rng.chance(250);
    c.election_timeout_ticks = rng.range(6, 16) as u32;
    c.heartbeat_interval_ticks =
        if c.election_timeout_ticks >= 12 && rng.chance(300) { 2 } else { 1 };
    c.pre_vote = rng.chance(850);
    c.check_quorum = lease || rng.chance(850);
    c.read_mode = if lease { ReadMode::Lease } else { ReadMode::ReadIndex };
    c.lease_clock_drift_percent = if lease { rng.range(5, 40) as u32 } else { 10 };
    c.forward_proposals = rng.chance(700);
    if rng.chance(300) {
        // Tight flow control: exercise probing, pipelining windows and batching limits.
        c.max_inflight_msgs = rng.range(1, 4) as usize;
        c.max_append_entries = rng.range(1, 8) as usize;
        c.max_append_bytes = rng.range(60, 400);
        c.max_inflight_bytes = c.max_append_bytes * rng.range(1, 4);
    }
    if rng.chance(200) {
        c.max_uncommitted_bytes = rng.range(200, 2_000);
        c.max_proposal_bytes = 256.min(c.max_uncommitted_bytes);
    }
    if rng.chance(150) {
        c.max_apply_bytes = rng.range(1, 300);
    }
    c
}

/// Clock rates for a seed. Lease seeds keep the ratio of any two rates below
/// `1 + lease_clock_drift_percent / 100` (with a margin for rounding); other seeds drift freely
/// within 0.5–2.0, bounded so that heartbeats of the slowest clock still arrive well within the
/// election timeout of the fastest one (otherwise liveness could not be required).
fn random_rate_range(rng: &mut Rng, c: &Config) -> (u32, u32) {
    if c.read_mode == ReadMode::Lease {
        return (1000, 1000 + 9 * c.lease_clock_drift_percent);
    }
    if rng.chance(400) {
        return (1000, 1000);
    }
    let lo = rng.range(500, 1000) as u32;
    let ratio_permille = 1000 * c.election_timeout_ticks / (3 * c.heartbeat_interval_ticks);
    let hi = (u64::from(lo) * u64::from(ratio_permille) / 1000).min(2000) as u32;
    (lo, hi.max(lo))
}

fn random_plan(rng: &mut Rng, rate_range: (u32, u32)) -> Plan {
    let pick = |rng: &mut Rng, xs: &[u32]| xs[rng.index(xs.len())];
    Plan {
        phases: rng.range(3, 6) as u32,
        chaos_ticks: rng.range(60, 250),
        calm_ticks: rng.range(10, 30),
        drop_permille: pick(rng, &[0, 0, 10, 50, 150]),
        duplicate_permille: pick(rng, &[0, 10, 50]),
        reorder_permille: pick(rng, &[0, 50, 200]),
        crash_at_persist_permille: pick(rng, &[0, 0, 5, 20]),
        action_gap_ticks: (rng.range(1, 4), rng.range(5, 15)),
        rate_range,
        membership: rng.chance(400),
    }
}

/// Runs seed `seed`: chaos phases (faults of the seed's plan) alternating with healed phases
/// in which a leader must commit a new proposal within the liveness bound, then a final heal,
/// settle, and the acknowledged-write and linearizability checks. Safety invariants are checked
/// after every step.
pub fn run_random(seed: u64) -> Result<RunStats, Violation> {
    let (cfg, plan) = random_setup(seed);
    let mut sim = Sim::new(cfg);
    sim.set_verbose(std::env::var_os("RAFT_SIM_VERBOSE").is_some());
    let rng = Rng::new(mix(seed, 0xC4A0_5000));
    let mut chaos = Chaos { rng, plan, paused: Vec::new(), removed: Vec::new() };
    for _ in 0..chaos.plan.phases {
        chaos.run_phase(&mut sim)?;
        sim.heal_all()?;
        chaos.calm_clocks(&mut sim);
        let bound = sim.liveness_bound();
        sim.check_liveness(bound)?;
        sim.run_for(chaos.plan.calm_ticks * TICK)?;
    }
    sim.finish()?;
    Ok(RunStats::of(&sim))
}

/// The fault injector of one random run.
struct Chaos {
    rng: Rng,
    plan: Plan,
    /// Paused nodes and when to resume them.
    paused: Vec<(u64, NodeId)>,
    /// Nodes a membership change removed (never added again).
    removed: Vec<NodeId>,
}

impl Chaos {
    fn run_phase(&mut self, sim: &mut Sim) -> Result<(), Violation> {
        let p = &self.plan;
        sim.set_drop_rate(p.drop_permille);
        sim.set_duplicate_rate(p.duplicate_permille);
        sim.set_reorder_rate(p.reorder_permille);
        sim.set_crash_at_persist_rate(p.crash_at_persist_permille);
        let (lo, hi) = p.rate_range;
        for id in sim.node_ids().to_vec() {
            sim.set_tick_rate(id, self.rng.range(lo.into(), hi.into()) as u32);
        }
        let end = sim.now() + self.plan.chaos_ticks * TICK;
        while sim.now() < end {
            let gap = self.rng.range(self.plan.action_gap_ticks.0, self.plan.action_gap_ticks.1);
            let next = end.min(sim.now() + gap * TICK);
            self.run_to(sim, next)?;
            if sim.now() < end {
                self.act(sim)?;
            }
        }
        for (_, id) in std::mem::take(&mut self.paused) {
            sim.resume(id)?;
        }
        Ok(())
    }

    /// Healed phases require liveness, which needs clocks that do not drift too far apart (a
    /// node whose clock runs twice as fast can keep resetting the others' election timers):
    /// rates within [`CALM_RATES`], or the seed's own range if it is narrower (lease seeds).
    fn calm_clocks(&mut self, sim: &mut Sim) {
        let (lo, hi) = self.plan.rate_range;
        let (lo, hi) = if hi - lo <= CALM_RATES.1 - CALM_RATES.0 { (lo, hi) } else { CALM_RATES };
        for id in sim.node_ids().to_vec() {
            sim.set_tick_rate(id, self.rng.range(lo.into(), hi.into()) as u32);
        }
    }

    /// Runs until `t`, resuming paused nodes on time.
    fn run_to(&mut self, sim: &mut Sim, t: u64) -> Result<(), Violation> {
        self.paused.sort_unstable();
        while let Some(&(at, id)) = self.paused.first() {
            if at > t {
                break;
            }
            sim.run_for(at.saturating_sub(sim.now()))?;
            sim.resume(id)?;
            self.paused.remove(0);
        }
        sim.run_for(t.saturating_sub(sim.now()))
    }

    fn random_node(&mut self, sim: &Sim, up: bool) -> Option<NodeId> {
        let ids: Vec<NodeId> =
            sim.node_ids().iter().copied().filter(|&id| sim.is_up(id) == up).collect();
        (!ids.is_empty()).then(|| ids[self.rng.index(ids.len())])
    }

    fn act(&mut self, sim: &mut Sim) -> Result<(), Violation> {
        let et = u64::from(sim.config().raft.election_timeout_ticks) * TICK;
        match self.rng.below(if self.plan.membership { 112 } else { 100 }) {
            0..=19 => {
                let p = random_partition(&mut self.rng, sim.node_ids());
                sim.partition(p);
            }
            20..=27 => match sim.leader() {
                Some(l) => {
                    if self.rng.chance(500) {
                        self.worst_case_clocks(sim, l);
                    }
                    sim.isolate(l);
                }
                None => sim.heal(),
            },
            28..=39 => sim.heal(),
            40..=49 => {
                if let Some(id) = self.random_node(sim, true) {
                    sim.crash(id)?;
                }
            }
            50..=53 => {
                if let Some(l) = sim.leader() {
                    sim.crash(l)?;
                }
            }
            54..=68 => {
                if let Some(id) = self.random_node(sim, false) {
                    sim.restart(id)?;
                }
            }
            69..=76 => self.pause(sim, et),
            77..=82 => {
                let (lo, hi) = self.plan.rate_range;
                let id = sim.node_ids()[self.rng.index(sim.node_ids().len())];
                sim.set_tick_rate(id, self.rng.range(lo.into(), hi.into()) as u32);
            }
            83..=89 => {
                let d = [0, 10, 50, 150, 300][self.rng.index(5)];
                sim.set_drop_rate(d);
            }
            90..=99 => {
                if let Some(id) = self.random_node(sim, true) {
                    fatal_only(sim.campaign(id))?;
                }
            }
            100..=107 => self.change_membership(sim)?,
            _ => {
                let voters = sim.leader().map(|l| sim.node(l).conf_state().voters.clone());
                if let (Some(l), Some(vs)) = (sim.leader(), voters) {
                    let at = self.leader_or_member(sim, l);
                    fatal_only(sim.transfer_leader(at, vs[self.rng.index(vs.len())]))?;
                }
            }
        }
        Ok(())
    }

    /// Where to ask for a membership change or a transfer: mostly the leader `l`, sometimes
    /// another member that is up, which forwards it.
    fn leader_or_member(&mut self, sim: &Sim, l: NodeId) -> NodeId {
        if !self.rng.chance(250) {
            return l;
        }
        let conf = sim.node(l).conf_state();
        let up: Vec<NodeId> = conf.members().into_iter().filter(|&id| sim.is_up(id)).collect();
        if up.is_empty() { l } else { up[self.rng.index(up.len())] }
    }

    /// Proposes a random membership change at the leader (or forwarded to it by a member): add
    /// a fresh node as learner or voter,
    /// promote a learner, remove a voter or learner, or replace a voter through a joint
    /// configuration (left automatically or explicitly). Removed ids are never added again.
    fn change_membership(&mut self, sim: &mut Sim) -> Result<(), Violation> {
        let Some(l) = sim.leader() else { return Ok(()) };
        let conf = sim.node(l).conf_state().clone();
        if !conf.voters_outgoing.is_empty() {
            let at = self.leader_or_member(sim, l);
            return fatal_only(sim.propose_conf_change(at, ConfChange::leave_joint()));
        }
        let member = |id: &NodeId| conf.voters.contains(id) || conf.learners.contains(id);
        let fresh: Vec<NodeId> = sim
            .node_ids()
            .iter()
            .copied()
            .filter(|id| !member(id) && !self.removed.contains(id))
            .collect();
        let pick = |rng: &mut Rng, v: &[NodeId]| (!v.is_empty()).then(|| v[rng.index(v.len())]);
        let (new, learner) = (pick(&mut self.rng, &fresh), pick(&mut self.rng, &conf.learners));
        let voter = pick(&mut self.rng, &conf.voters).filter(|_| conf.voters.len() > 1);
        let ops = match self.rng.below(6) {
            0 => new.map(|n| vec![ConfChangeOp::AddLearner(n)]),
            // A fresh node straight to voter is refused by the core (learner first): try it.
            1 => new.map(|n| vec![ConfChangeOp::AddVoter(n)]),
            2 => learner.map(|n| vec![ConfChangeOp::AddVoter(n)]),
            3 => voter.map(|n| vec![ConfChangeOp::Remove(n)]),
            4 => learner.map(|n| vec![ConfChangeOp::Remove(n)]),
            _ => learner
                .zip(voter)
                .map(|(n, v)| vec![ConfChangeOp::AddVoter(n), ConfChangeOp::Remove(v)]),
        };
        let Some(ops) = ops else { return Ok(()) };
        for op in &ops {
            if let ConfChangeOp::Remove(id) = op {
                self.removed.push(*id);
            }
        }
        let transition = if ops.len() > 1 && self.rng.chance(500) {
            ConfChangeTransition::JointExplicit
        } else {
            ConfChangeTransition::Auto
        };
        let at = self.leader_or_member(sim, l);
        fatal_only(sim.propose_conf_change(at, ConfChange { ops, transition }))
    }

    /// The deposed leader's clock at the slowest rate allowed, everyone else's at the fastest:
    /// the worst case for its lease (the others stop honouring it as early as the drift bound
    /// allows).
    fn worst_case_clocks(&mut self, sim: &mut Sim, leader: NodeId) {
        let (lo, hi) = self.plan.rate_range;
        for id in sim.node_ids().to_vec() {
            sim.set_tick_rate(id, if id == leader { lo } else { hi });
        }
    }

    fn pause(&mut self, sim: &mut Sim, et: u64) {
        let Some(id) = self.random_node(sim, true) else {
            return;
        };
        if sim.is_paused(id) {
            return;
        }
        sim.pause(id);
        let until = sim.now() + self.rng.range(et / 2, 3 * et);
        self.paused.push((until, id));
    }
}

/// Ignores an operation's refusal, keeping only a broken invariant.
fn fatal_only(r: Result<(), SimError>) -> Result<(), Violation> {
    match r {
        Err(SimError::Violation(v)) => Err(*v),
        _ => Ok(()),
    }
}

/// A random partition shape over `ids`.
pub fn random_partition(rng: &mut Rng, ids: &[NodeId]) -> Partition {
    let mut s = ids.to_vec();
    rng.shuffle(&mut s);
    let n = s.len();
    match rng.below(6) {
        0 => Partition::Split(vec![s[..n / 2].to_vec(), s[n / 2..].to_vec()]),
        1 => {
            let mut groups = vec![Vec::new(), Vec::new(), Vec::new()];
            for id in s {
                groups[rng.index(3)].push(id);
            }
            Partition::Split(groups)
        }
        2 => Partition::OneWay { from: s[0], to: s[1 % n] },
        3 => Partition::Ring(s),
        4 => {
            let half = 1 + (n - 1) / 2;
            Partition::Bridge { bridge: s[0], left: s[1..half].to_vec(), right: s[half..].to_vec() }
        }
        _ => Partition::Isolate(s[0]),
    }
}
