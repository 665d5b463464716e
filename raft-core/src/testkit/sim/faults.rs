//! Fault injection (crash, restart, pause, partitions, clock rates, fault rates) and the checks
//! that end a run: liveness after healing, no acknowledged write lost, linearizability.

use bytes::{BufMut, Bytes, BytesMut};

use super::{
    LIVENESS_ELECTION_TIMEOUTS, MAX_MISSED_TICKS, PROBE_TAG, Sim, SimError, TICK, contract,
};
use crate::raft::Raft;
use crate::testkit::invariants::{Invariant, Violation};
use crate::testkit::linearizability::{self, CheckError};
use crate::testkit::network::{NetConfig, Partition};
use crate::types::{Index, NodeId};

impl Sim {
    // ------------------------------------------------------------------ nodes

    /// Crashes node `id`: its in-memory state, pending (unsynced) writes and waiting reads are
    /// lost; its durable storage and state machine survive. No-op if it is down.
    pub fn crash(&mut self, id: NodeId) -> Result<(), Violation> {
        self.begin_step(10, id);
        self.log(|| format!("crash node {id}"));
        self.crash_node(id);
        self.end_step()
    }

    pub(super) fn crash_node(&mut self, id: NodeId) {
        let i = self.idx(id);
        let node = &mut self.nodes[i];
        if node.raft.take().is_none() {
            return;
        }
        node.pending.clear();
        node.reads.clear();
        node.held.clear();
        node.paused_since = None;
        self.checker.on_crash(id, node.kv.applied_index());
        self.counters.crashes += 1;
    }

    /// Restarts node `id` from its durable storage and state machine. No-op if it is up.
    pub fn restart(&mut self, id: NodeId) -> Result<(), Violation> {
        let i = self.idx(id);
        if self.nodes[i].raft.is_some() {
            return Ok(());
        }
        self.begin_step(11, id);
        self.log(|| format!("restart node {id}"));
        let node = &mut self.nodes[i];
        node.boots += 1;
        let cfg = self.cfg.node_config(id, node.boots);
        let applied = node.kv.applied_index();
        let raft = Raft::restart(cfg, node.storage.clone(), applied)
            .map_err(|e| contract(&self.checker, id, applied, format!("restart failed: {e}")))?;
        node.raft = Some(raft);
        node.next_tick_at = self.now + self.rng.below(node.tick_period());
        self.counters.restarts += 1;
        self.drain_ready(id)?;
        self.end_step()
    }

    /// Pauses node `id` (a stalled process): no ticks, deliveries or persistence until
    /// [`Sim::resume`]. No-op if it is down or already paused.
    pub fn pause(&mut self, id: NodeId) {
        let i = self.idx(id);
        if !self.nodes[i].runnable() {
            return;
        }
        self.begin_step(12, id);
        self.log(|| format!("pause node {id}"));
        self.nodes[i].paused_since = Some(self.now);
        self.counters.pauses += 1;
    }

    /// Resumes a paused node: it first gets every tick it missed (as a real clock would), then
    /// the messages that arrived meanwhile, then its pending writes complete as usual.
    pub fn resume(&mut self, id: NodeId) -> Result<(), Violation> {
        let i = self.idx(id);
        if self.nodes[i].paused_since.take().is_none() {
            return Ok(());
        }
        self.begin_step(13, id);
        self.log(|| format!("resume node {id}"));
        let mut missed = 0;
        while self.nodes[i].raft.is_some()
            && self.nodes[i].next_tick_at <= self.now
            && missed < MAX_MISSED_TICKS
        {
            self.tick_node(i)?;
            missed += 1;
        }
        for m in std::mem::take(&mut self.nodes[i].held) {
            self.net.enqueue(m, self.now, self.now);
        }
        self.end_step()
    }

    /// Sets node `id`'s clock rate, per mille of the nominal rate (clock drift).
    pub fn set_tick_rate(&mut self, id: NodeId, permille: u32) {
        let i = self.idx(id);
        self.nodes[i].rate_permille = permille.max(1);
    }

    // ------------------------------------------------------------------ network

    /// Replaces the current link blocks by partition `p`.
    pub fn partition(&mut self, p: Partition) {
        self.begin_step(14, 0);
        self.log(|| format!("partition {p:?}"));
        self.net.partition(&p, &self.ids);
    }

    /// Cuts node `id` off from everyone, both ways.
    pub fn isolate(&mut self, id: NodeId) {
        self.partition(Partition::Isolate(id));
    }

    /// Blocks messages `from → to`, in addition to the current blocks.
    pub fn block(&mut self, from: NodeId, to: NodeId) {
        self.net.block(from, to);
    }

    /// Removes every link block.
    pub fn heal(&mut self) {
        self.begin_step(15, 0);
        self.log(|| "heal".to_string());
        self.net.heal();
    }

    /// Replaces the network's fault and latency settings.
    pub fn set_net_config(&mut self, cfg: NetConfig) {
        self.net.set_config(cfg);
    }

    /// Sets the probability (per mille) that a message is lost.
    pub fn set_drop_rate(&mut self, permille: u32) {
        let cfg = NetConfig { drop_permille: permille, ..self.net.config().clone() };
        self.net.set_config(cfg);
    }

    /// Sets the probability (per mille) that a message is delivered twice.
    pub fn set_duplicate_rate(&mut self, permille: u32) {
        let cfg = NetConfig { duplicate_permille: permille, ..self.net.config().clone() };
        self.net.set_config(cfg);
    }

    /// Sets the probability (per mille) that a message is delayed so that others overtake it.
    pub fn set_reorder_rate(&mut self, permille: u32) {
        let cfg = NetConfig { reorder_permille: permille, ..self.net.config().clone() };
        self.net.set_config(cfg);
    }

    /// Sets the probability (per mille) of crashing at a persistence point in timed steps.
    pub fn set_crash_at_persist_rate(&mut self, permille: u32) {
        self.cfg.crash_at_persist_permille = permille;
    }

    /// Heals everything: network healed, no drops or duplicates, no crashes at persistence
    /// points, paused nodes resumed, crashed nodes restarted.
    pub fn heal_all(&mut self) -> Result<(), Violation> {
        self.heal();
        self.set_drop_rate(0);
        self.set_duplicate_rate(0);
        self.set_crash_at_persist_rate(0);
        for id in self.ids.clone() {
            self.resume(id)?;
            self.restart(id)?;
        }
        Ok(())
    }

    // ------------------------------------------------------------------ end-of-run checks

    /// The liveness bound: [`LIVENESS_ELECTION_TIMEOUTS`] election timeouts of the slowest
    /// clock, in simulated time.
    pub fn liveness_bound(&self) -> u64 {
        let slowest = self.nodes.iter().map(|n| n.tick_period()).max().unwrap_or(TICK);
        LIVENESS_ELECTION_TIMEOUTS * u64::from(self.cfg.raft.election_timeout_ticks) * slowest
    }

    /// Requires a leader to commit a new proposal (a probe) within `bound` simulated time; the
    /// probe is re-proposed to the current leader every two election timeouts. Returns the time
    /// it took.
    pub fn check_liveness(&mut self, bound: u64) -> Result<u64, Violation> {
        let (start, deadline) = (self.now, self.now.saturating_add(bound));
        self.next_probe += 1;
        let target = self.next_probe;
        let mut b = BytesMut::with_capacity(9);
        b.put_u8(PROBE_TAG);
        b.put_u64_le(target);
        let payload: Bytes = b.freeze();
        let retry = 2 * u64::from(self.cfg.raft.election_timeout_ticks) * TICK;
        loop {
            if self.probe_applied >= target {
                self.counters.probes += 1;
                return Ok(self.now - start);
            }
            if self.now >= deadline {
                let d = format!(
                    "no leader committed a proposal within {} ticks after healing (leader now: {:?})",
                    bound / TICK,
                    self.leader()
                );
                let d = format!("{d}; nodes: {}", self.election_debug());
                let (term, index) = (self.checker.max_term(), self.checker.committed_index());
                return Err(self.checker.violation(Invariant::Liveness, 0, term, index, d));
            }
            if let Some(l) = self.leader()
                && let Err(SimError::Violation(v)) = self.propose(l, payload.clone())
            {
                return Err(*v);
            }
            let wait = retry.min(deadline - self.now);
            self.run_until(|s| s.probe_applied >= target, wait)?;
        }
    }

    /// Stops the clients, lets them finish (or give up), commits a last probe and waits until
    /// every member applied everything committed.
    pub fn settle(&mut self) -> Result<(), Violation> {
        let bound = self.liveness_bound();
        self.set_workload_issuing(false);
        let w = self.workload.config();
        let clients_done = w.op_timeout * u64::from(w.max_attempts + 1) + bound;
        self.run_until(|s| s.workload.all_idle(), clients_done)?;
        self.check_liveness(bound)?;
        let members = self.members();
        let caught_up = |s: &Sim| {
            let c = s.checker.committed_index();
            members.iter().all(|&id| s.kv(id).applied_index() >= c)
        };
        // A member far behind (a learner of a one-voter leader that ran ahead during the
        // chaos, say) needs time in proportion to its backlog: see `catch_up_bound`. Within that,
        // every lagging member must apply something in every liveness bound, so a stall is
        // still caught after one bound.
        let c = self.checker.committed_index();
        let applied = |s: &Sim| members.iter().map(|&id| s.kv(id).applied_index()).collect();
        let backlog = members.iter().map(|&id| c - self.kv(id).applied_index().min(c)).max();
        let start = self.now;
        let deadline = start + bound + self.catch_up_bound(backlog.unwrap_or(0));
        let mut before: Vec<Index> = applied(self);
        loop {
            let window = bound.min(deadline.saturating_sub(self.now));
            if self.run_until(caught_up, window)? {
                return Ok(());
            }
            let now: Vec<Index> = applied(self);
            let c = self.checker.committed_index();
            let stalled = members
                .iter()
                .zip(before.iter().zip(&now))
                .find(|&(_, (b, n))| n < &c && n <= b)
                .map(|(&id, _)| id);
            if stalled.is_some() || self.now >= deadline {
                let lagging = stalled
                    .or_else(|| members.iter().copied().find(|&id| self.kv(id).applied_index() < c))
                    .unwrap_or(0);
                let why = if stalled.is_some() {
                    format!("applied nothing for {} ticks", window / TICK)
                } else {
                    format!("was still behind after {} ticks", (self.now - start) / TICK)
                };
                let d = format!(
                    "node did not apply up to the committed index {c}: it {why}; nodes: {}",
                    self.election_debug()
                );
                let term = self.checker.max_term();
                return Err(self.checker.violation(Invariant::Liveness, lagging, term, c, d));
            }
            before = now;
        }
    }

    /// The time the protocol may legitimately need to bring a member `backlog` entries behind
    /// up to date, once a leader is in place: in the worst case (probing after reordered or
    /// rejected appends) one append with one entry is in flight per round trip, and a round
    /// trip is two network delays (latency plus reordering delay) and one durable write of the
    /// follower, plus one tick of the slowest clock for a heartbeat to restart a stalled window.
    fn catch_up_bound(&self, backlog: u64) -> u64 {
        let net = self.net.config();
        let slowest = self.nodes.iter().map(|n| n.tick_period()).max().unwrap_or(TICK);
        let round_trip =
            2 * (net.latency_max + net.reorder_delay_max) + self.cfg.persist_latency_max + slowest;
        backlog.saturating_mul(round_trip)
    }

    /// Every `Put` acknowledged to a client took effect on the state machine of every member
    /// of the cluster.
    pub fn check_acked_writes(&self) -> Result<(), Violation> {
        let members = self.members();
        for &(client, seq) in self.workload.acked_puts() {
            for n in self.nodes.iter().filter(|n| members.contains(&n.id)) {
                if n.kv.last_seq(client).is_some_and(|s| s >= seq) {
                    continue;
                }
                let d = format!(
                    "acknowledged put (client {client}, seq {seq}) is missing (node applied up to {})",
                    n.kv.applied_index()
                );
                let term = self.checker.max_term();
                let index = n.kv.applied_index();
                return Err(self.checker.violation(
                    Invariant::AckedWriteLost,
                    n.id,
                    term,
                    index,
                    d,
                ));
            }
        }
        Ok(())
    }

    /// Checks the client history for linearizability.
    pub fn check_linearizability(&self) -> Result<(), Violation> {
        match linearizability::check(self.history()) {
            Ok(()) => Ok(()),
            Err(e) => {
                let d = match e {
                    CheckError::NotLinearizable(n) => n.to_string(),
                    CheckError::BudgetExceeded { .. } => format!("inconclusive: {e}"),
                };
                let (term, index) = (self.checker.max_term(), self.checker.committed_index());
                Err(self.checker.violation(Invariant::Linearizability, 0, term, index, d))
            }
        }
    }

    /// Ends a run: heals everything, requires liveness, settles the clients and nodes, and
    /// checks acknowledged writes and linearizability.
    pub fn finish(&mut self) -> Result<(), Violation> {
        self.heal_all()?;
        let bound = self.liveness_bound();
        self.check_liveness(bound)?;
        self.settle()?;
        self.check_acked_writes()?;
        self.check_linearizability()
    }
}
