//! The driver task: owns the core, steps it with everything that arrives, and carries out each
//! `Ready` as the core prescribes (it makes no protocol decision: what must be synced is
//! [`crate::Ready::must_sync`]).
//!
//! The pipeline is one-way; each stage owns its state and the queues between them are bounded:
//!
//! ```text
//!  Node handles ──requests──▶ driver ──PersistJob──▶ persister (fsync, then persisted_messages)
//!  transport ──messages────▶   │  ▲                      │
//!                              │  └──── Durable (watch) ─┘
//!                              ├──ApplyJob──▶ applier (state machine, waiters, reads, snapshots)
//!                              │  ▲              │
//!                              │  └─ Applied (watch)
//!                              └──▶ NodeStatus (watch), NodeEvent (broadcast)
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::MissedTickBehavior;

use super::apply::{Applied, ApplyJob};
use super::config::{NodeConfig, NodeError, ReadConsistency};
use super::envelope::Envelope;
use super::members::MemberTable;
use super::metrics::Metrics;
use super::persist::{Durable, PersistJob};
use super::request::{Read, Reply, Request};
use super::status::{NodeEvent, NodeStatus};
use crate::config::ReadMode;
use crate::raft::Raft;
use crate::storage::LogStore;
use crate::transport::{Transport, TransportEvent};
use crate::types::{ConfChange, ConfChangeOp, ConfState, Index, Message, NodeId, Role};

/// Most inbound messages stepped before the driver looks at its other inputs again.
const MAX_MESSAGES_PER_TURN: usize = 1024;
/// Proposals whose commit latency is measured at once (a sample when more are in flight).
const MAX_TIMED_PROPOSALS: usize = 256;

/// Everything the driver starts from (built by `start`).
pub(crate) struct DriverParts<S: LogStore, T: ?Sized> {
    pub(crate) raft: Raft<S>,
    pub(crate) storage: S,
    pub(crate) transport: Arc<T>,
    pub(crate) cfg: Arc<NodeConfig>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) requests: mpsc::Receiver<Request>,
    pub(crate) messages: mpsc::Receiver<Message>,
    pub(crate) events: mpsc::Receiver<TransportEvent>,
    pub(crate) persist: mpsc::Sender<PersistJob>,
    pub(crate) durable: watch::Receiver<Durable>,
    pub(crate) apply: mpsc::Sender<ApplyJob>,
    pub(crate) applied: watch::Receiver<Applied>,
    pub(crate) members: watch::Receiver<Arc<MemberTable>>,
    pub(crate) status: watch::Sender<NodeStatus>,
    pub(crate) node_events: broadcast::Sender<NodeEvent>,
}

/// A membership change waiting to take effect here.
struct ConfWaiter {
    change: ConfChange,
    /// The configuration index when it was proposed: it is in effect once a later one is.
    after: Index,
    reply: Reply<ConfState>,
}

pub(crate) struct Driver<S: LogStore, T: ?Sized> {
    p: DriverParts<S, T>,
    /// Jobs for the applier while its queue is full (bounded in effect: new requests are not
    /// taken while any wait here, committed entries by `Config::max_unapplied_entries`).
    apply_backlog: VecDeque<ApplyJob>,
    /// Linearizable reads waiting for the leader's confirmation, by context.
    reads: BTreeMap<u64, (Read, Instant)>,
    next_read: u64,
    applied: Index,
    /// Ready numbers handed to the persister and not yet durable, in order.
    persisting: VecDeque<u64>,
    conf_waiters: Vec<ConfWaiter>,
    transfer_waiters: Vec<(NodeId, Reply<()>)>,
    /// On the leader: (last index of a proposed batch, when), for the propose → commit latency.
    timed: VecDeque<(Index, Instant)>,
}

impl<S, T> Driver<S, T>
where
    S: LogStore + Clone + Send + Sync + 'static,
    T: Transport + ?Sized + 'static,
{
    pub(crate) fn new(p: DriverParts<S, T>) -> Self {
        let applied = p.applied.borrow().index;
        Driver {
            p,
            apply_backlog: VecDeque::new(),
            reads: BTreeMap::new(),
            next_read: 0,
            applied,
            persisting: VecDeque::new(),
            conf_waiters: Vec::new(),
            transfer_waiters: Vec::new(),
            timed: VecDeque::new(),
        }
    }

    fn id(&self) -> NodeId {
        self.p.cfg.raft.id
    }

    /// Runs until stopped or a fatal error; then lets the persister and the applier finish and
    /// publishes the final status. Callers still waiting see their reply dropped
    /// ([`NodeError::ShuttingDown`]).
    pub(crate) async fn run(mut self) {
        let outcome = self.run_loop().await;
        let clean = outcome.is_ok();
        let (error, stop_reply) = match outcome {
            Ok(reply) => (NodeError::ShuttingDown, reply),
            Err(e) => {
                tracing::error!(node = self.id(), error = %e, "node stopped");
                (e, None)
            }
        };
        let Driver { p, reads, conf_waiters, transfer_waiters, apply_backlog, .. } = self;
        let DriverParts {
            raft,
            storage,
            persist,
            mut durable,
            apply,
            mut applied,
            status,
            node_events,
            ..
        } = p;
        // Let the persister finish what it has (so nothing acknowledged is left unsynced).
        drop(persist);
        while durable.changed().await.is_ok() {}
        // Best effort, on a clean stop: a newer commit index makes the next start faster, nothing
        // more (the core hands out no hard state whose only change is the commit index; every
        // one it handed out, with its term and vote, was written and synced above).
        let hs = raft.hard_state();
        if clean && durable.borrow().failed.is_none() {
            let _ = storage.save_hard_state(&hs).and_then(|()| storage.sync());
        }
        for (_, (read, _)) in reads {
            read.fail(error.clone());
        }
        for w in conf_waiters {
            let _ = w.reply.send(Err(error.clone()));
        }
        for (_, reply) in transfer_waiters {
            let _ = reply.send(Err(error.clone()));
        }
        // The applier ends once its queue is closed; wait for it (nothing may touch the state
        // machine or storage once the node is reported stopped).
        drop(apply_backlog);
        drop(apply);
        while applied.changed().await.is_ok() {}
        let _ = node_events.send(NodeEvent::Stopped(error.to_string()));
        status.send_modify(|s| s.stopped = Some(error.to_string()));
        if let Some(reply) = stop_reply {
            let _ = reply.send(());
        }
    }

    async fn run_loop(&mut self) -> Result<Option<oneshot::Sender<()>>, NodeError> {
        let mut ticker = tokio::time::interval(self.p.cfg.tick_interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ticker.tick().await;
        let mut ticked = false;
        loop {
            let intake = self.apply_backlog.is_empty();
            // Only while jobs wait for room in the applier's queue.
            let backlog = (!intake).then(|| self.p.apply.clone());
            // Biased, in this order: time first (a leader buried in requests must still send
            // heartbeats, or its followers start elections), then what releases work already in
            // flight (durability, applied entries, the applier's queue, peers' messages), and
            // new client requests last, so that under overload they wait in their bounded queue.
            tokio::select! {
                biased;
                _ = ticker.tick() => {
                    self.p.raft.tick();
                    self.on_tick();
                    ticked = true;
                }
                r = self.p.durable.changed() => {
                    let d = self.p.durable.borrow_and_update().clone();
                    if let Some(e) = d.failed {
                        return Err(e);
                    }
                    if r.is_err() {
                        return Err(NodeError::Fatal("the persister stopped".into()));
                    }
                    while self.persisting.front().is_some_and(|&n| n <= d.number) {
                        self.persisting.pop_front();
                    }
                    self.p.raft.on_persisted(d.number)?;
                }
                r = self.p.applied.changed() => {
                    let a = self.p.applied.borrow_and_update().clone();
                    if let Some(e) = a.failed {
                        return Err(e);
                    }
                    if r.is_err() {
                        return Err(NodeError::Fatal("the applier stopped".into()));
                    }
                    if a.index > self.applied {
                        self.applied = a.index;
                        self.p.raft.on_applied(a.index)?;
                    }
                }
                permit = async {
                    match backlog {
                        Some(tx) => tx.reserve_owned().await,
                        None => std::future::pending().await,
                    }
                } => {
                    let permit = permit.map_err(|_| NodeError::Fatal("the applier stopped".into()))?;
                    if let Some(job) = self.apply_backlog.pop_front() {
                        permit.send(job);
                    }
                    // Whatever else fits now, in order.
                    while let Some(job) = self.apply_backlog.pop_front() {
                        if let Err(e) = self.p.apply.try_send(job) {
                            if let mpsc::error::TrySendError::Full(job) = e {
                                self.apply_backlog.push_front(job);
                            }
                            break;
                        }
                    }
                }
                Some(m) = self.p.messages.recv() => {
                    self.step(m);
                    for _ in 1..MAX_MESSAGES_PER_TURN {
                        match self.p.messages.try_recv() {
                            Ok(m) => self.step(m),
                            Err(_) => break,
                        }
                    }
                }
                Some(ev) = self.p.events.recv() => match ev {
                    TransportEvent::Unreachable(peer) => self.p.raft.report_unreachable(peer),
                    TransportEvent::Snapshot(peer, status) => self.p.raft.report_snapshot(peer, status),
                },
                req = self.p.requests.recv(), if intake => match req {
                    // Every handle was dropped: nobody can use the node any more.
                    None => return Ok(None),
                    Some(r) => if let Some(reply) = self.on_request(r) {
                        return Ok(Some(reply));
                    },
                },
            }
            self.handle_ready().await?;
            self.settle_waiters();
            self.publish_status(std::mem::take(&mut ticked));
        }
    }

    fn step(&mut self, m: Message) {
        let from = m.from;
        if let Err(e) = self.p.raft.step(m) {
            tracing::debug!(node = self.id(), peer = from, error = %e, "message dropped");
        }
    }

    fn on_tick(&mut self) {
        self.send_apply(ApplyJob::Tick(tokio::time::Instant::now()));
        self.reads.retain(|_, (read, _)| !read.is_closed());
        self.conf_waiters.retain(|w| !w.reply.is_closed());
        self.transfer_waiters.retain(|(_, r)| !r.is_closed());
        if self.p.raft.role() == Role::Leader {
            self.promote_caught_up();
        }
    }

    /// The leader promotes the learners recorded as "to promote" (`Node::add_voter`) as soon as
    /// the core accepts it (it refuses while a learner lags or another change is pending).
    fn promote_caught_up(&mut self) {
        let table = self.p.members.borrow().clone();
        for &id in &table.promote {
            if !self.p.raft.conf_state().learners.contains(&id) {
                continue;
            }
            let change = ConfChange { ops: vec![ConfChangeOp::AddVoter(id)], ..Default::default() };
            match self.p.raft.propose_conf_change(change) {
                Ok(()) => tracing::info!(node = self.id(), learner = id, "promoting learner"),
                Err(e) => tracing::trace!(node = self.id(), learner = id, error = %e, "not yet"),
            }
        }
    }

    /// Handles a request and whatever else is queued behind it, batching proposals (group
    /// commit). Returns a stop request if one was found.
    fn on_request(&mut self, first: Request) -> Option<oneshot::Sender<()>> {
        let mut batch = Vec::new();
        let mut next = Some(first);
        let mut stop = None;
        while let Some(req) = next.take() {
            match req {
                Request::Propose { proposal, data, reply } => batch.push((proposal, data, reply)),
                Request::Stop { reply } => {
                    stop = Some(reply);
                    break;
                }
                other => {
                    self.propose(std::mem::take(&mut batch));
                    self.on_other_request(other);
                }
            }
            if batch.len() < self.p.cfg.max_batch_commands {
                next = self.p.requests.try_recv().ok();
            }
        }
        self.propose(batch);
        stop
    }

    fn propose(&mut self, batch: Vec<(u64, Bytes, Reply<Bytes>)>) {
        if batch.is_empty() {
            return;
        }
        self.p.metrics.proposals.add(batch.len() as u64);
        let mut data = Vec::with_capacity(batch.len());
        let mut waiters = Vec::with_capacity(batch.len());
        for (id, d, reply) in batch {
            data.push(d);
            waiters.push((id, reply));
        }
        match self.p.raft.propose_batch(data) {
            Ok(()) => {
                if self.p.raft.role() == Role::Leader && self.timed.len() < MAX_TIMED_PROPOSALS {
                    self.timed.push_back((self.p.raft.last_index(), Instant::now()));
                }
                let at = tokio::time::Instant::now();
                self.send_apply(ApplyJob::Proposed { waiters, at });
            }
            Err(e) => {
                let e = NodeError::from(e);
                self.p.metrics.proposals_failed.add(waiters.len() as u64);
                for (_, reply) in waiters {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }

    fn on_other_request(&mut self, req: Request) {
        match req {
            Request::Propose { .. } | Request::Stop { .. } => {}
            Request::Read { consistency, read } => self.read(consistency, read),
            Request::ConfChange { change, reply } => {
                if let Err(e) = self.admin_room() {
                    return drop(reply.send(Err(e)));
                }
                let after = self.p.raft.conf_state().index;
                match self.p.raft.propose_conf_change(change.clone()) {
                    Ok(()) => self.conf_waiters.push(ConfWaiter { change, after, reply }),
                    Err(e) => drop(reply.send(Err(e.into()))),
                }
            }
            Request::Transfer { to, reply } => {
                if self.p.raft.leader_id() == Some(to) {
                    let _ = reply.send(Ok(()));
                    return;
                }
                if let Err(e) = self.admin_room() {
                    return drop(reply.send(Err(e)));
                }
                match self.p.raft.transfer_leader(to) {
                    Ok(()) => self.transfer_waiters.push((to, reply)),
                    Err(e) => drop(reply.send(Err(e.into()))),
                }
            }
            Request::Campaign => self.p.raft.campaign(),
            Request::Snapshot { reply } => self.send_apply(ApplyJob::SnapshotNow { reply }),
        }
    }

    /// Membership changes and transfers waiting to take effect are bounded like reads (their
    /// callers hold no permit: on a follower each is forwarded and accepted).
    fn admin_room(&self) -> Result<(), NodeError> {
        let waiting = self.conf_waiters.len() + self.transfer_waiters.len();
        if waiting >= self.p.cfg.max_pending_requests {
            let why = format!("{waiting} membership changes and transfers waiting");
            return Err(NodeError::TooBusy(why));
        }
        Ok(())
    }

    fn read(&mut self, consistency: ReadConsistency, read: Read) {
        self.p.metrics.reads.inc();
        match consistency {
            ReadConsistency::Stale => self.send_apply(ApplyJob::Read { index: 0, read }),
            ReadConsistency::Lease if self.p.raft.config().read_mode != ReadMode::Lease => {
                read.fail(NodeError::LeaseReadsDisabled);
            }
            ReadConsistency::Lease | ReadConsistency::Linearizable => {
                if self.reads.len() >= self.p.cfg.max_pending_requests {
                    let why = format!("{} reads waiting for the leader", self.reads.len());
                    return read.fail(NodeError::TooBusy(why));
                }
                self.next_read += 1;
                let ctx = self.next_read;
                match self.p.raft.read_index(Bytes::copy_from_slice(&ctx.to_le_bytes())) {
                    Ok(()) => {
                        self.reads.insert(ctx, (read, Instant::now()));
                    }
                    Err(e) => read.fail(e.into()),
                }
            }
        }
    }

    /// Queues a job for the applier without waiting: into its bounded queue, or, while that is
    /// full, into the backlog (which stops the intake of new requests until it drains).
    fn send_apply(&mut self, job: ApplyJob) {
        if !self.apply_backlog.is_empty() {
            self.apply_backlog.push_back(job);
            return;
        }
        match self.p.apply.try_send(job) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(job)) => self.apply_backlog.push_back(job),
            // The applier stopped: its progress says why, and the loop stops on it.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// Carries out every `Ready` the core has.
    async fn handle_ready(&mut self) -> Result<(), NodeError> {
        while self.p.raft.has_ready() {
            let rd = self.p.raft.ready();
            let span = tracing::debug_span!(
                "ready",
                node = self.id(),
                number = rd.number,
                term = self.p.raft.term(),
                index = rd.entries.last().map_or(0, |e| e.index),
            );
            if let Some(job) = span.in_scope(|| self.carry_out(rd))?
                && self.p.persist.send(job).await.is_err()
            {
                return Err(NodeError::Fatal("the persister stopped".into()));
            }
        }
        Ok(())
    }

    /// Carries out one `Ready`, in the order its docs prescribe; returns the job for the
    /// persister if the batch has to wait for it.
    fn carry_out(&mut self, rd: crate::Ready) -> Result<Option<PersistJob>, NodeError> {
        let sync = rd.must_sync() && self.p.storage.needs_sync();
        self.p.metrics.ready_batches.inc();
        if !rd.messages.is_empty() {
            self.p.transport.send(rd.messages);
        }
        let storage = &self.p.storage;
        if let Some(snapshot) = &rd.snapshot {
            storage.install_snapshot(snapshot).map_err(fatal)?;
        }
        if !rd.entries.is_empty() {
            self.p.metrics.observe_append_batch(rd.entries.len());
            storage.append_entries(&rd.entries).map_err(fatal)?;
        }
        if let Some(hs) = &rd.hard_state {
            storage.save_hard_state(hs).map_err(fatal)?;
        }
        if let Some(cs) = &rd.conf_state {
            storage.save_conf_state(cs).map_err(fatal)?;
        }
        if let Some(snapshot) = rd.snapshot {
            self.send_apply(ApplyJob::Restore(snapshot));
        }
        let mut job = None;
        if !sync && self.persisting.is_empty() {
            // Nothing to make durable and nothing ahead of it: acknowledge here.
            self.p.raft.on_persisted(rd.number)?;
            if !rd.persisted_messages.is_empty() {
                self.p.transport.send(rd.persisted_messages);
            }
        } else {
            self.persisting.push_back(rd.number);
            job = Some(PersistJob { number: rd.number, sync, messages: rd.persisted_messages });
        }
        if let Some(last) = rd.committed_entries.last() {
            let last = last.index;
            while self.timed.front().is_some_and(|&(i, _)| i <= last) {
                if let Some((_, at)) = self.timed.pop_front() {
                    self.p.metrics.observe_propose_to_commit(at.elapsed());
                }
            }
            let entries = rd.committed_entries;
            self.send_apply(ApplyJob::Entries { entries, committed: Instant::now() });
        }
        for refused in rd.refused {
            self.on_refused(refused);
        }
        for ctx in rd.aborted_reads {
            if let Some((read, _)) = read_ctx(&ctx).and_then(|c| self.reads.remove(&c)) {
                let leader_hint = self.p.raft.leader_id().filter(|&l| l != self.id());
                read.fail(NodeError::NotLeader { leader_hint });
            }
        }
        for rs in rd.read_states {
            if let Some((read, at)) = read_ctx(&rs.ctx).and_then(|c| self.reads.remove(&c)) {
                self.p.metrics.observe_read_wait(at.elapsed());
                self.send_apply(ApplyJob::Read { index: rs.index, read });
            }
        }
        Ok(job)
    }

    /// The leader refused a request this node forwarded (or the core could not forward it).
    fn on_refused(&mut self, refused: crate::Refused) {
        let error = NodeError::from(refused.error);
        match refused.request {
            crate::Forwarded::Proposals(payloads) => {
                let me = self.id();
                let proposals: Vec<u64> = payloads
                    .iter()
                    .filter_map(Envelope::origin)
                    .filter(|o| o.node == me)
                    .map(|o| o.proposal)
                    .collect();
                if !proposals.is_empty() {
                    self.send_apply(ApplyJob::Refused { proposals, error });
                }
            }
            crate::Forwarded::ConfChange(change) => {
                if let Some(i) = self.conf_waiters.iter().position(|w| w.change == change) {
                    let _ = self.conf_waiters.swap_remove(i).reply.send(Err(error));
                }
            }
            crate::Forwarded::Transfer(to) => {
                if let Some(i) = self.transfer_waiters.iter().position(|(t, _)| *t == to) {
                    let _ = self.transfer_waiters.swap_remove(i).1.send(Err(error));
                }
            }
        }
    }

    /// Answers membership changes now in effect and transfers that happened.
    fn settle_waiters(&mut self) {
        if !self.conf_waiters.is_empty() {
            let conf = self.p.raft.conf_state();
            let mut i = 0;
            while i < self.conf_waiters.len() {
                let w = &self.conf_waiters[i];
                let explicit =
                    w.change.transition == crate::types::ConfChangeTransition::JointExplicit;
                if conf.index > w.after && (explicit || conf.voters_outgoing.is_empty()) {
                    let w = self.conf_waiters.swap_remove(i);
                    let _ = w.reply.send(Ok(conf.clone()));
                } else {
                    i += 1;
                }
            }
        }
        if !self.transfer_waiters.is_empty() {
            let leader = self.p.raft.leader_id();
            let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.transfer_waiters)
                .into_iter()
                .partition(|(to, _)| Some(*to) == leader);
            self.transfer_waiters = waiting;
            for (_, reply) in done {
                let _ = reply.send(Ok(()));
            }
        }
    }

    /// Publishes the status: at once when the role, term, leader or membership changed; the
    /// indexes and followers' progress once per tick (so watchers are not woken per entry).
    fn publish_status(&mut self, ticked: bool) {
        let raft = &self.p.raft;
        let (role, term, leader) = (raft.role(), raft.term(), raft.leader_id());
        let conf_index = raft.conf_state().index;
        let removed = raft.is_removed();
        let (leader_changed, conf_changed, removed_now) = {
            let cur = self.p.status.borrow();
            (
                cur.role != role || cur.term != term || cur.leader != leader,
                cur.conf_state.index != conf_index,
                removed && !cur.removed,
            )
        };
        if !(leader_changed || conf_changed || removed_now || ticked) {
            return;
        }
        let st = raft.status();
        let id = st.id;
        if leader_changed {
            if role == Role::Leader {
                tracing::info!(node = id, term, "became leader");
            } else {
                self.timed.clear();
            }
            let prev = self.p.status.borrow().leader;
            self.p.metrics.leader_changes.add(u64::from(prev != leader));
            let is_self = leader == Some(id);
            let _ = self.p.node_events.send(NodeEvent::Leader { term, leader, is_self });
        }
        if conf_changed {
            let _ = self.p.node_events.send(NodeEvent::Membership(raft.conf_state().clone()));
        }
        if removed_now {
            let _ = self.p.node_events.send(NodeEvent::Removed);
        }
        self.p.metrics.set_gauges(
            term,
            st.commit_index,
            st.last_index,
            role == Role::Leader,
            leader.is_some(),
        );
        let applied = self.applied;
        let progress = if role == Role::Leader { raft.progress() } else { Vec::new() };
        self.p.status.send_if_modified(|s| {
            let next = NodeStatus {
                id,
                role,
                term,
                leader,
                commit_index: st.commit_index,
                applied_index: applied,
                last_index: st.last_index,
                snapshot_index: st.snapshot_index,
                conf_state: if s.conf_state == *raft.conf_state() {
                    std::mem::take(&mut s.conf_state)
                } else {
                    raft.conf_state().clone()
                },
                progress,
                removed,
                stopped: None,
            };
            let changed = *s != next;
            *s = next;
            changed
        });
    }
}

fn read_ctx(ctx: &Bytes) -> Option<u64> {
    ctx.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes)
}

fn fatal(e: crate::error::StorageError) -> NodeError {
    NodeError::Fatal(e.to_string())
}
