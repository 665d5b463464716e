//! Actions caused explicitly by a test or a schedule rather than by the clock: ticks, deliveries,
//! persistence completions, proposals, reads, membership changes and client operations.

use bytes::Bytes;

use super::{Sim, SimError};
use crate::error::Error;
use crate::raft::Raft;
use crate::storage::MemStorage;
use crate::testkit::client::OpKind;
use crate::testkit::invariants::Violation;
use crate::types::{ConfChange, NodeId};

impl Sim {
    /// Ticks node `id` once, now (manual). No-op if it is down or paused.
    pub fn tick(&mut self, id: NodeId) -> Result<(), Violation> {
        let i = self.idx(id);
        self.begin_step(5, id);
        if self.nodes[i].runnable() {
            if let Some(r) = self.nodes[i].raft.as_mut() {
                r.tick();
                self.counters.ticks += 1;
            }
            self.drain_ready(id)?;
        }
        self.end_step()
    }

    /// Ticks every up, unpaused node once (manual).
    pub fn tick_all(&mut self) -> Result<(), Violation> {
        for id in self.ids.clone() {
            if self.nodes[self.idx(id)].runnable() {
                self.tick(id)?;
            }
        }
        Ok(())
    }

    /// Delivers the `i`-th in-flight message (in delivery order, modulo the count), whatever its
    /// delivery time. Returns whether there was one.
    pub fn deliver(&mut self, i: usize) -> Result<bool, Violation> {
        let Some(env) = self.net.take(i) else {
            return Ok(false);
        };
        self.begin_step(6, env.msg.to);
        self.deliver_message(env.msg)?;
        self.end_step()?;
        Ok(true)
    }

    /// Delivers in-flight messages in delivery order until none is left or `max` were delivered.
    pub fn deliver_all(&mut self, max: usize) -> Result<usize, Violation> {
        for n in 0..max {
            if !self.deliver(0)? {
                return Ok(n);
            }
        }
        Ok(max)
    }

    /// Loses the `i`-th in-flight message (modulo the count).
    pub fn drop_message(&mut self, i: usize) {
        if self.net.take(i).is_some() {
            self.net.count_dropped();
        }
    }

    /// Duplicates the `i`-th in-flight message (modulo the count); the copy is due now.
    pub fn duplicate_message(&mut self, i: usize) {
        self.net.duplicate(i, self.now);
    }

    /// Completes node `id`'s oldest pending write. Returns whether there was one.
    pub fn persist(&mut self, id: NodeId) -> Result<bool, Violation> {
        let i = self.idx(id);
        if !self.nodes[i].runnable() || self.nodes[i].pending.is_empty() {
            return Ok(false);
        }
        self.begin_step(7, id);
        self.complete_write(id)?;
        self.end_step()?;
        Ok(true)
    }

    /// Completes every pending write of every up, unpaused node.
    pub fn persist_all(&mut self) -> Result<(), Violation> {
        for id in self.ids.clone() {
            while self.persist(id)? {}
        }
        Ok(())
    }

    /// Proposes `data` on node `id` (manual).
    pub fn propose(&mut self, id: NodeId, data: Bytes) -> Result<(), SimError> {
        self.submit_raw(id, |r| r.propose(data))
    }

    /// Proposes several payloads on node `id` at once (all or none are accepted); they are
    /// appended and replicated as one batch, in one `Ready`.
    pub fn propose_batch(&mut self, id: NodeId, data: Vec<Bytes>) -> Result<(), SimError> {
        self.submit_raw(id, |r| r.propose_batch(data))
    }

    /// Asks node `id` for a linearizable read with context `ctx`; it shows up in
    /// [`Sim::served_reads`] once served.
    pub fn read_index(&mut self, id: NodeId, ctx: Bytes) -> Result<(), SimError> {
        self.submit_raw(id, |r| r.read_index(ctx))
    }

    /// Makes node `id` campaign now.
    pub fn campaign(&mut self, id: NodeId) -> Result<(), SimError> {
        self.submit_raw(id, |r| {
            r.campaign();
            Ok(())
        })
    }

    fn submit_raw(
        &mut self,
        id: NodeId,
        f: impl FnOnce(&mut Raft<MemStorage>) -> Result<(), Error>,
    ) -> Result<(), SimError> {
        let i = self.idx(id);
        self.begin_step(8, id);
        if self.nodes[i].paused_since.is_some() {
            return Err(SimError::NodePaused(id));
        }
        let Some(r) = self.nodes[i].raft.as_mut() else {
            return Err(SimError::NodeDown(id));
        };
        let res = f(r).map_err(SimError::Raft);
        self.drain_ready(id)
            .and_then(|()| self.end_step())
            .map_err(|v| SimError::Violation(Box::new(v)))?;
        res
    }

    /// Proposes a membership change on node `id` (the leader, or a follower that forwards it).
    pub fn propose_conf_change(&mut self, id: NodeId, cc: ConfChange) -> Result<(), SimError> {
        self.submit_raw(id, |r| r.propose_conf_change(cc))
    }

    /// Asks node `id` (the leader, or a follower that forwards it) to hand leadership to
    /// `target`.
    pub fn transfer_leader(&mut self, id: NodeId, target: NodeId) -> Result<(), SimError> {
        let leads = self.try_node(id).is_some_and(|r| r.role() == crate::types::Role::Leader);
        let res = self.submit_raw(id, |r| r.transfer_leader(target));
        if res.is_ok() && leads && target != id {
            self.counters.transfers += 1;
        }
        res
    }

    /// Starts a client operation: client index `client` (`0..clients`, taken modulo the count)
    /// sends `kind` on `key` to `node`, giving up its outstanding operation first.
    pub fn client_op(
        &mut self,
        client: usize,
        kind: OpKind,
        key: u64,
        node: NodeId,
    ) -> Result<(), Violation> {
        let n = self.workload.config().clients.max(1);
        if self.workload.config().clients == 0 {
            return Ok(());
        }
        self.begin_step(9, node);
        let a = self.workload.start(client % n, kind, key, Some(node), self.now);
        self.submit_attempt(a)?;
        self.end_step()
    }

    /// Starts or stops automatic client operations.
    pub fn set_workload_issuing(&mut self, on: bool) {
        self.workload.set_issuing(on);
    }
}
