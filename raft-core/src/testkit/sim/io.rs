//! How the simulator moves data between a node, its disk, its state machine and the network,
//! following the `Ready` contract.

use super::{MAX_READY_ROUNDS, PROBE_TAG, PendingWrite, Sim, contract};
use crate::error::Error;
use crate::raft::Ready;
use crate::storage::Storage;
use crate::testkit::client::{Attempt, Request};
use crate::testkit::invariants::{Invariant, Violation};
use crate::testkit::kv::{ApplyOutcome, Command, KvError, KvStore, ReadCtx};
use crate::types::{Entry, EntryKind, Forwarded, Message, NodeId, Refused, Role, Snapshot};

impl Sim {
    fn try_idx(&self, id: NodeId) -> Option<usize> {
        let i = usize::try_from(id).ok()?.checked_sub(1)?;
        (i < self.nodes.len()).then_some(i)
    }

    /// Hands `msg` to its recipient (or loses it: unknown, unreachable or down recipient; held
    /// while the recipient is paused).
    pub(super) fn deliver_message(&mut self, msg: Message) -> Result<(), Violation> {
        let (from, to) = (msg.from, msg.to);
        let Some(i) = self.try_idx(to) else {
            self.net.count_undelivered(false);
            return Ok(());
        };
        if !self.net.can_reach(from, to) {
            self.net.count_undelivered(true);
            return Ok(());
        }
        let node = &mut self.nodes[i];
        let Some(r) = node.raft.as_mut() else {
            self.net.count_undelivered(false);
            return Ok(());
        };
        if node.paused_since.is_some() {
            node.held.push(msg);
            return Ok(());
        }
        self.net.count_delivered();
        match r.step(msg) {
            Ok(()) => {}
            Err(e @ Error::InvalidMessage { .. }) => {
                self.counters.invalid_messages += 1;
                self.log(|| format!("node {to} refused a message: {e}"));
            }
            Err(e) => {
                return Err(contract(&self.checker, to, 0, format!("step failed: {e}")));
            }
        }
        self.drain_ready(to)
    }

    /// Handles every `Ready` node `id` has.
    pub(super) fn drain_ready(&mut self, id: NodeId) -> Result<(), Violation> {
        let Some(i) = self.try_idx(id) else {
            return Ok(());
        };
        for _ in 0..MAX_READY_ROUNDS {
            let Some(r) = self.nodes[i].raft.as_mut() else {
                return Ok(());
            };
            if !r.has_ready() {
                return Ok(());
            }
            let rd = r.ready();
            self.handle_ready(i, rd)?;
        }
        let d = format!("has_ready() still true after {MAX_READY_ROUNDS} ready() calls");
        Err(contract(&self.checker, id, 0, d))
    }

    fn handle_ready(&mut self, i: usize, rd: Ready) -> Result<(), Violation> {
        for m in rd.messages {
            self.send(m)?;
        }
        // Entries after a snapshot or a membership change are applied only once these are
        // durable (the state machine must not get ahead of them), and so are later ones.
        let gated = rd.snapshot.is_some()
            || rd.conf_state.is_some()
            || self.nodes[i].pending.iter().any(|w| w.gated);
        let (apply_now, apply_after) = if gated {
            (Vec::new(), rd.committed_entries)
        } else {
            (rd.committed_entries, Vec::new())
        };
        let mut w = PendingWrite {
            number: rd.number,
            snapshot: rd.snapshot,
            entries: rd.entries,
            hard_state: rd.hard_state,
            conf_state: rd.conf_state,
            persisted_messages: rd.persisted_messages,
            apply_after,
            gated,
            complete_at: 0,
        };
        if !gated && w.is_empty() && self.nodes[i].pending.is_empty() {
            // Nothing to make durable and nothing before it: acknowledge at once.
            self.ack_write(i, w)?;
        } else {
            let (lo, hi) = (self.cfg.persist_latency_min, self.cfg.persist_latency_max);
            let latency = self.rng.range(lo, hi);
            let after = self.nodes[i].pending.back().map_or(0, |p| p.complete_at);
            w.complete_at = after.max(self.now + latency);
            self.nodes[i].pending.push_back(w);
        }
        self.apply_committed(i, &apply_now)?;
        self.nodes[i].reads.extend(rd.read_states);
        let (id, hint) =
            (self.nodes[i].id, self.nodes[i].raft.as_ref().and_then(|r| r.leader_id()));
        for ctx in rd.aborted_reads.iter().filter_map(|c| ReadCtx::decode(c)) {
            self.workload.on_read_aborted(id, ctx, hint, self.now);
        }
        for r in rd.refused {
            self.on_refused(i, r);
        }
        self.serve_reads(i);
        Ok(())
    }

    /// A request node `i` forwarded will not be carried out: its clients hear so at once.
    fn on_refused(&mut self, i: usize, r: Refused) {
        let id = self.nodes[i].id;
        self.counters.refused += 1;
        self.log(|| format!("node {id}: forwarded {:?} refused: {}", r.request, r.error));
        let Forwarded::Proposals(payloads) = r.request else { return };
        let hint = match r.error {
            Error::NotLeader { leader_hint } => leader_hint,
            _ => self.nodes[i].raft.as_ref().and_then(|r| r.leader_id()),
        };
        for cmd in payloads.iter().filter_map(|p| Command::decode(p)) {
            self.workload.on_proposal_refused(id, cmd.client, cmd.seq, hint, self.now);
        }
    }

    fn send(&mut self, m: Message) -> Result<(), Violation> {
        self.checker.on_send(&m)?;
        self.net.send(m, self.now);
        Ok(())
    }

    /// Completes node `id`'s oldest pending write, at a persistence point where the node may
    /// crash (timed steps only).
    pub(super) fn persist_point(&mut self, id: NodeId) -> Result<(), Violation> {
        let Some(i) = self.try_idx(id) else {
            return Ok(());
        };
        if !self.rng.chance(self.cfg.crash_at_persist_permille) {
            return self.complete_write(id);
        }
        self.counters.crash_points += 1;
        match self.rng.below(3) {
            0 => {} // Just before the write: it is lost.
            1 => {
                // Durable, but the node dies before acknowledging it.
                if let Some(w) = self.nodes[i].pending.pop_front() {
                    self.write_durable(i, &w)?;
                }
            }
            _ => self.complete_write(id)?, // Just after.
        }
        self.crash_node(id);
        Ok(())
    }

    /// Makes node `id`'s oldest pending write durable and acknowledges it.
    pub(super) fn complete_write(&mut self, id: NodeId) -> Result<(), Violation> {
        let Some(i) = self.try_idx(id) else {
            return Ok(());
        };
        let Some(w) = self.nodes[i].pending.pop_front() else {
            return Ok(());
        };
        self.write_durable(i, &w)?;
        self.ack_write(i, w)?;
        self.drain_ready(id)
    }

    fn write_durable(&mut self, i: usize, w: &PendingWrite) -> Result<(), Violation> {
        let id = self.ids[i];
        let storage = self.nodes[i].storage.clone();
        if let Some(s) = &w.snapshot {
            self.install_snapshot(i, s)?;
        }
        if !w.entries.is_empty() {
            storage.append(&w.entries).map_err(|e| {
                let d = format!("ready #{}: appending its entries failed: {e}", w.number);
                contract(&self.checker, id, w.entries[0].index, d)
            })?;
            self.checker.on_persist_entries(id, &w.entries)?;
        }
        if let Some(hs) = w.hard_state {
            self.checker.on_persist_hard_state(id, storage.hard_state(), hs)?;
            storage.set_hard_state(hs);
        }
        if let Some(cs) = &w.conf_state {
            self.log(|| format!("node {id} persists membership {cs:?}"));
            self.checker.on_persist_conf(id, cs)?;
            if cs.index > self.counters.last_conf_index {
                self.counters.last_conf_index = cs.index;
                self.counters.conf_changes += 1;
            }
            storage.set_conf_state(cs.clone());
        }
        self.counters.writes += 1;
        Ok(())
    }

    /// Installs a snapshot in node `i`'s storage and restores its state machine from it, as one
    /// durable step.
    fn install_snapshot(&mut self, i: usize, s: &Snapshot) -> Result<(), Violation> {
        let id = self.ids[i];
        let index = s.meta.index;
        let storage = self.nodes[i].storage.clone();
        let stored = storage.snapshot().map_or(0, |x| x.meta.index);
        if index > stored {
            storage.install(s).map_err(|e| {
                contract(&self.checker, id, index, format!("installing the snapshot failed: {e}"))
            })?;
        }
        self.checker.on_snapshot(id, s)?;
        if self.nodes[i].kv.applied_index() >= index {
            return Ok(());
        }
        match KvStore::from_snapshot_data(&s.data) {
            Some(kv) if kv.applied_index() == index => {
                self.nodes[i].kv = kv;
                self.counters.snapshots_installed += 1;
                Ok(())
            }
            _ => {
                let d = "snapshot data is not a state machine image at its index".to_string();
                Err(contract(&self.checker, id, index, d))
            }
        }
    }

    /// Snapshots node `i`'s state machine and compacts its log, every `compact_every` entries.
    fn maybe_compact(&mut self, i: usize) -> Result<(), Violation> {
        let every = self.cfg.compact_every;
        let node = &self.nodes[i];
        let applied = node.kv.applied_index();
        let stored = node.storage.snapshot().map_or(0, |x| x.meta.index);
        let Some(r) = node.raft.as_ref() else { return Ok(()) };
        if every == 0 || applied < stored + every {
            return Ok(());
        }
        let fail = |e: String| contract(&self.checker, node.id, applied, e);
        let meta = match r.snapshot_meta(applied) {
            Ok(meta) => meta,
            // The core already took a newer snapshot from the leader, which this node has not
            // restored yet: a snapshot at the older applied index is obsolete, not a fault
            // (a runtime skips it the same way).
            Err(Error::SnapshotOutOfRange { first, .. }) if applied < first => {
                return Ok(());
            }
            Err(e) => return Err(fail(format!("snapshot_meta: {e}"))),
        };
        let snapshot = Snapshot { meta, data: node.kv.snapshot_data() };
        node.storage
            .compact_with(&snapshot)
            .map_err(|e| fail(format!("compacting the log failed: {e}")))?;
        self.counters.compactions += 1;
        self.checker.on_snapshot(node.id, &snapshot)
    }

    fn ack_write(&mut self, i: usize, w: PendingWrite) -> Result<(), Violation> {
        let id = self.ids[i];
        let Some(r) = self.nodes[i].raft.as_mut() else {
            return Ok(());
        };
        if let Err(e) = r.on_persisted(w.number) {
            let d = format!("on_persisted({}) failed: {e}", w.number);
            return Err(contract(&self.checker, id, 0, d));
        }
        for m in w.persisted_messages {
            self.send(m)?;
        }
        self.apply_committed(i, &w.apply_after)?;
        self.serve_reads(i);
        Ok(())
    }

    fn apply_committed(&mut self, i: usize, entries: &[Entry]) -> Result<(), Violation> {
        let Some(last) = entries.last().map(|e| e.index) else {
            return Ok(());
        };
        let id = self.ids[i];
        let Some(r) = self.nodes[i].raft.as_ref() else {
            return Ok(());
        };
        let (term, leader) = (r.term(), r.role() == Role::Leader);
        let conf = r.conf_state().clone();
        for e in entries {
            self.checker.on_apply(id, e, term, leader, &conf)?;
            let out = self.nodes[i].kv.apply(e).map_err(|err| {
                let (inv, d) = match err {
                    KvError::OutOfOrder { expected, got } => (
                        Invariant::StateMachineSafety,
                        format!("applied out of order: expected index {expected}, got {got}"),
                    ),
                    KvError::DoubleEffect { client, seq } => (
                        Invariant::AtMostOnce,
                        format!("command (client {client}, seq {seq}) took effect twice"),
                    ),
                };
                self.checker.violation(inv, id, term, e.index, d)
            })?;
            self.counters.applied_entries += 1;
            match out {
                ApplyOutcome::Effect { client, seq, result }
                | ApplyOutcome::Duplicate { client, seq, result } => {
                    self.workload.on_applied(id, client, seq, result, self.now);
                }
                ApplyOutcome::NoOp => self.note_probe(e),
                ApplyOutcome::Stale { .. } => {}
            }
        }
        let Some(r) = self.nodes[i].raft.as_mut() else {
            return Ok(());
        };
        if let Err(e) = r.on_applied(last) {
            return Err(contract(&self.checker, id, last, format!("on_applied failed: {e}")));
        }
        self.maybe_compact(i)
    }

    fn note_probe(&mut self, e: &Entry) {
        if e.kind == EntryKind::Normal && e.data.len() == 9 && e.data[0] == PROBE_TAG {
            let mut b = [0u8; 8];
            b.copy_from_slice(&e.data[1..9]);
            self.probe_applied = self.probe_applied.max(u64::from_le_bytes(b));
        }
    }

    /// Serves node `i`'s reads whose index its state machine reached.
    pub(super) fn serve_reads(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if node.reads.is_empty() {
            return;
        }
        let applied = node.kv.applied_index();
        let (ready, waiting): (Vec<_>, Vec<_>) =
            std::mem::take(&mut node.reads).into_iter().partition(|rs| rs.index <= applied);
        node.reads = waiting;
        for rs in ready {
            let node = &self.nodes[i];
            match ReadCtx::decode(&rs.ctx) {
                Some(ctx) => {
                    let value = node.kv.get(ctx.key);
                    self.workload.on_read(node.id, ctx, value, self.now);
                }
                None => {
                    self.counters.reads_served += 1;
                    self.served_reads.push((node.id, rs));
                }
            }
        }
    }

    /// Submits a client attempt to its node; a refusal goes back to the client.
    pub(super) fn submit_attempt(&mut self, a: Attempt) -> Result<(), Violation> {
        let Some(i) = self.try_idx(a.node) else {
            return Ok(());
        };
        let node = &mut self.nodes[i];
        let r = match node.raft.as_mut() {
            Some(r) if node.paused_since.is_none() => r,
            _ => {
                self.workload.on_refused(a.client, None, self.now);
                return Ok(());
            }
        };
        let res = match a.request {
            Request::Propose(data) => r.propose(data),
            Request::ReadIndex(ctx) => r.read_index(ctx),
        };
        if let Err(e) = res {
            let hint = match e {
                Error::NotLeader { leader_hint } => leader_hint,
                Error::NoLeader => None,
                _ => r.leader_id(),
            };
            self.workload.on_refused(a.client, hint, self.now);
        }
        self.drain_ready(a.node)
    }
}
