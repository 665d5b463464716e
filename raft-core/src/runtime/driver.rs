//! The driver task: owns the core, steps it with everything that arrives, and carries out each
//! `Ready` in the order the core prescribes. It makes no protocol decisions.
//!
//! Stages (joined by queues; on a multi-thread runtime the persister and the applier run on
//! threads of their own, on a current-thread runtime every stage is a task):
//! - **driver** (this file): ticks, messages, client requests → core; writes entries and hard
//!   state to storage (visible, not yet durable) and hands each batch to the persister; hands
//!   committed entries and confirmed reads to the applier.
//! - **persister**: one `sync()` (fsync) for every batch that queued up meanwhile (group commit),
//!   then sends the messages that had to wait for durability and acknowledges the batches.
//! - **applier** ([`super::apply`]): applies committed entries to the state machine, answers the
//!   callers, serves reads, takes snapshots.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::time::MissedTickBehavior;

use super::apply::{ApplyEvent, ApplyJob};
use super::config::{NodeError, ReadConsistency};
use super::node::{NodeStatus, Shared};
use crate::config::ReadMode;
use crate::error::StorageError;
use crate::raft::Raft;
use crate::storage::LogStore;
use crate::transport::{Transport, TransportEvent};
use crate::types::{ConfChange, Index, Message, NodeId, Role, Snapshot};

/// Most inbound messages stepped before the driver looks at its other inputs again.
const MAX_MESSAGES_PER_TURN: usize = 1024;

pub(crate) type Reply<T> = oneshot::Sender<Result<T, NodeError>>;

/// What a [`super::Node`] handle asks of the driver.
pub(crate) enum Request {
    /// Propose an encoded runtime entry; its waiter is registered under `proposal`.
    Propose {
        proposal: u64,
        data: Bytes,
    },
    Read {
        consistency: ReadConsistency,
        query: Bytes,
        reply: Reply<Bytes>,
    },
    ConfChange {
        change: ConfChange,
        reply: Reply<()>,
    },
    Transfer {
        to: NodeId,
        reply: Reply<()>,
    },
    Campaign,
    Snapshot {
        reply: Reply<Index>,
    },
    Stop {
        reply: oneshot::Sender<()>,
    },
}

/// One `Ready` handed to the persister.
pub(crate) struct PersistJob {
    pub(crate) number: u64,
    pub(crate) sync: bool,
    pub(crate) messages: Vec<Message>,
}

pub(crate) struct Driver<S: LogStore, T: ?Sized> {
    pub(crate) raft: Raft<S>,
    pub(crate) storage: S,
    pub(crate) transport: Arc<T>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) requests: mpsc::Receiver<Request>,
    pub(crate) messages: mpsc::Receiver<Message>,
    pub(crate) events: mpsc::Receiver<TransportEvent>,
    pub(crate) persist_tx: mpsc::Sender<PersistJob>,
    pub(crate) persisted_rx: mpsc::UnboundedReceiver<Result<u64, NodeError>>,
    /// Unbounded channel, bounded in effect: committed entries by
    /// `Config::max_unapplied_entries`, reads by `NodeConfig::max_pending_requests`.
    pub(crate) apply_tx: mpsc::UnboundedSender<ApplyJob>,
    pub(crate) apply_events: mpsc::UnboundedReceiver<ApplyEvent>,
    /// For the storage compactions this driver starts off its task.
    pub(crate) apply_events_tx: mpsc::UnboundedSender<ApplyEvent>,
    pub(crate) status_tx: tokio::sync::watch::Sender<NodeStatus>,
    /// Linearizable reads waiting for the leader's confirmation, by context.
    pub(crate) reads: BTreeMap<u64, (Bytes, Reply<Bytes>)>,
    pub(crate) next_read: u64,
    pub(crate) applied: Index,
    /// Term and vote of the last hard state handed to the persister with a sync.
    pub(crate) durable_term_vote: (crate::types::Term, Option<NodeId>),
    /// The latest hard state not yet written (its change was only to `commit`).
    pub(crate) lazy_hard_state: Option<crate::types::HardState>,
    /// Ready numbers handed to the persister and not yet acknowledged, in order.
    pub(crate) persisting: std::collections::VecDeque<u64>,
}

impl<S, T> Driver<S, T>
where
    S: LogStore + Clone + Send + Sync + 'static,
    T: Transport + ?Sized + 'static,
{
    /// Runs until stopped or a fatal error; then fails every waiting caller.
    pub(crate) async fn run(mut self) {
        let outcome = self.run_loop().await;
        let clean = outcome.is_ok();
        let (error, stop_reply) = match outcome {
            Ok(reply) => (NodeError::ShuttingDown, reply),
            Err(e) => {
                tracing::error!(node = self.shared.id, error = %e, "node stopped");
                (e, None)
            }
        };
        // Let the persister finish what it has (so nothing acknowledged is left unsynced).
        drop(self.persist_tx);
        while let Some(r) = self.persisted_rx.recv().await {
            if r.is_err() {
                break;
            }
        }
        // TODO(runtime): the core no longer hands out a hard state whose only change is the
        // commit index (`Ready::hard_state`), so `lazy_hard_state` stays empty; the latest
        // commit index is `Raft::hard_state()`. Written on a clean stop only, and only if its
        // term and vote are the durable ones (every batch handed out was written above).
        let hs = self.raft.hard_state();
        if clean && (hs.term, hs.vote) == self.durable_term_vote {
            // Best effort: a newer commit index makes the next start faster, nothing more.
            let _ = self.storage.save_hard_state(&hs).and_then(|()| self.storage.sync());
        }
        drop(self.apply_tx);
        self.shared.fail_all(&error);
        for (_, (_, reply)) in std::mem::take(&mut self.reads) {
            let _ = reply.send(Err(error.clone()));
        }
        self.status_tx.send_modify(|s| s.stopped = Some(error.to_string()));
        if let Some(reply) = stop_reply {
            let _ = reply.send(());
        }
    }

    async fn run_loop(&mut self) -> Result<Option<oneshot::Sender<()>>, NodeError> {
        let mut ticker = tokio::time::interval(self.shared.cfg.tick_interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ticker.tick().await;
        let mut ticked = false;
        loop {
            // Biased, in this order: time first (a leader buried in requests must still send
            // heartbeats, or its followers start elections), then what releases work already in
            // flight (durability acks, applied entries, peers' messages), and new client
            // requests last, so that under overload they wait in their bounded queue.
            tokio::select! {
                biased;
                _ = ticker.tick() => {
                    self.raft.tick();
                    self.reads.retain(|_, (_, reply)| !reply.is_closed());
                    ticked = true;
                }
                Some(done) = self.persisted_rx.recv() => {
                    let number = done?;
                    while self.persisting.front().is_some_and(|&n| n <= number) {
                        self.persisting.pop_front();
                    }
                    self.raft.on_persisted(number)?;
                }
                Some(ev) = self.apply_events.recv() => self.on_apply_event(ev)?,
                Some(m) = self.messages.recv() => {
                    self.step(m);
                    for _ in 1..MAX_MESSAGES_PER_TURN {
                        match self.messages.try_recv() {
                            Ok(m) => self.step(m),
                            Err(_) => break,
                        }
                    }
                }
                Some(ev) = self.events.recv() => match ev {
                    TransportEvent::Unreachable(peer) => self.raft.report_unreachable(peer),
                    TransportEvent::Snapshot(peer, status) => self.raft.report_snapshot(peer, status),
                },
                req = self.requests.recv() => match req {
                    // Every handle was dropped: nobody can use the node any more.
                    None => return Ok(None),
                    Some(r) => if let Some(reply) = self.on_request(r) {
                        return Ok(Some(reply));
                    },
                },
            }
            self.handle_ready().await?;
            self.publish_status(std::mem::take(&mut ticked));
        }
    }

    fn step(&mut self, m: Message) {
        let from = m.from;
        if let Err(e) = self.raft.step(m) {
            tracing::debug!(node = self.shared.id, peer = from, error = %e, "message dropped");
        }
    }

    fn on_apply_event(&mut self, ev: ApplyEvent) -> Result<(), NodeError> {
        match ev {
            ApplyEvent::Applied(index) => {
                self.applied = self.applied.max(index);
                self.raft.on_applied(index)?;
            }
            ApplyEvent::Snapshot { index, data } => self.compact(index, data),
            // The state was replaced by a newer snapshot from the leader meanwhile: that one
            // is the node's snapshot now.
            ApplyEvent::SnapshotAbandoned => {
                self.shared.finish_snapshot(Ok(self.raft.status().snapshot_index));
            }
            ApplyEvent::Compacted { index, result } => match result {
                Ok(true) => {
                    self.shared.metrics.snapshots_taken.inc();
                    tracing::info!(node = self.shared.id, index, "snapshot taken, log compacted");
                    self.shared.finish_snapshot(Ok(index));
                }
                // A newer snapshot (from the leader) was stored meanwhile: that one stands.
                Ok(false) => self.shared.finish_snapshot(Ok(self.raft.status().snapshot_index)),
                Err(e) => {
                    self.shared.finish_snapshot(Err(e.clone()));
                    return Err(e);
                }
            },
            ApplyEvent::Fatal(e) => return Err(e),
        }
        Ok(())
    }

    /// Stores the snapshot the applier built at `index` and compacts the log up to it, off this
    /// task (writing a large snapshot must not hold up ticks and replication); the outcome comes
    /// back as [`ApplyEvent::Compacted`]. One runs at a time (see `Shared::start_snapshot`).
    fn compact(&mut self, index: Index, data: Bytes) {
        // The core knows where the log starts; reading the stored snapshot (its data too) just
        // to compare indexes would be wasted I/O.
        let current = self.raft.status().snapshot_index;
        if index <= current {
            self.shared.finish_snapshot(Ok(current));
            return;
        }
        let meta = match self.raft.snapshot_meta(index) {
            Ok(meta) => meta,
            // Refused (the log moved past it): not fatal.
            Err(e) => return self.shared.finish_snapshot(Err(e.into())),
        };
        let (storage, events) = (self.storage.clone(), self.apply_events_tx.clone());
        offload(move || {
            let stored = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                storage.compact(&Snapshot { meta, data })
            }));
            let result = match stored {
                Ok(Ok(())) => Ok(true),
                // A snapshot from the leader was installed after the check above.
                Ok(Err(StorageError::Compacted { .. })) => Ok(false),
                Ok(Err(e)) => Err(fatal(e)),
                Err(_) => Err(NodeError::Fatal("storage panicked while compacting".into())),
            };
            let _ = events.send(ApplyEvent::Compacted { index, result });
        });
    }

    /// Handles a request and whatever else is queued behind it, batching proposals (group
    /// commit). Returns a stop request if one was found.
    fn on_request(&mut self, first: Request) -> Option<oneshot::Sender<()>> {
        let mut batch = Vec::new();
        let mut next = Some(first);
        let mut stop = None;
        while let Some(req) = next.take() {
            match req {
                Request::Propose { proposal, data } => batch.push((proposal, data)),
                Request::Stop { reply } => {
                    stop = Some(reply);
                    break;
                }
                other => {
                    self.propose(std::mem::take(&mut batch));
                    self.on_other_request(other);
                }
            }
            if batch.len() < self.shared.cfg.max_batch_commands {
                next = self.requests.try_recv().ok();
            }
        }
        self.propose(batch);
        stop
    }

    fn propose(&mut self, batch: Vec<(u64, Bytes)>) {
        if batch.is_empty() {
            return;
        }
        let (ids, data): (Vec<u64>, Vec<Bytes>) = batch.into_iter().unzip();
        self.shared.metrics.proposals.add(ids.len() as u64);
        match self.raft.propose_batch(data) {
            Ok(()) => self.shared.proposed(&ids),
            Err(e) => {
                let e = NodeError::from(e);
                for id in ids {
                    self.shared.resolve(id, Err(e.clone()));
                }
            }
        }
    }

    fn on_other_request(&mut self, req: Request) {
        match req {
            Request::Propose { .. } | Request::Stop { .. } => {}
            Request::Read { consistency, query, reply } => self.read(consistency, query, reply),
            Request::ConfChange { change, reply } => {
                let _ = reply.send(self.raft.propose_conf_change(change).map_err(NodeError::from));
            }
            Request::Transfer { to, reply } => {
                let _ = reply.send(self.raft.transfer_leader(to).map_err(NodeError::from));
            }
            Request::Campaign => self.raft.campaign(),
            Request::Snapshot { reply } => {
                let _ = self.apply_tx.send(ApplyJob::SnapshotNow { reply });
            }
        }
    }

    fn read(&mut self, consistency: ReadConsistency, query: Bytes, reply: Reply<Bytes>) {
        self.shared.metrics.reads.inc();
        match consistency {
            ReadConsistency::Stale => {
                let _ = self.apply_tx.send(ApplyJob::Query { index: 0, query, reply });
            }
            ReadConsistency::Lease if self.raft.config().read_mode != ReadMode::Lease => {
                let _ = reply.send(Err(NodeError::LeaseReadsDisabled));
            }
            ReadConsistency::Lease | ReadConsistency::Linearizable => {
                if self.reads.len() >= self.shared.cfg.max_pending_requests {
                    let why = format!("{} reads waiting for the leader", self.reads.len());
                    let _ = reply.send(Err(NodeError::TooBusy(why)));
                    return;
                }
                self.next_read += 1;
                let ctx = self.next_read;
                match self.raft.read_index(Bytes::copy_from_slice(&ctx.to_le_bytes())) {
                    Ok(()) => {
                        self.reads.insert(ctx, (query, reply));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.into()));
                    }
                }
            }
        }
    }

    /// Carries out every `Ready` the core has.
    async fn handle_ready(&mut self) -> Result<(), NodeError> {
        while self.raft.has_ready() {
            let rd = self.raft.ready();
            // A hard state that changes only `commit` is neither fsynced nor even written on its
            // own: the commit index is volatile in Raft (a restart may resume from an older one;
            // etcd skips that fsync too). It is written with the next entries or term change.
            // Term and vote changes are fsynced before any message that depends on them.
            let term_or_vote = rd.hard_state.map(|hs| (hs.term, hs.vote));
            let hs_sync = term_or_vote.is_some_and(|tv| tv != self.durable_term_vote);
            if let Some(tv) = term_or_vote {
                self.durable_term_vote = tv;
            }
            let writes_log = !rd.entries.is_empty() || rd.snapshot.is_some();
            let sync = hs_sync || writes_log || rd.conf_state.is_some();
            if let Some(hs) = rd.hard_state {
                self.lazy_hard_state = Some(hs);
            }
            self.shared.metrics.ready_batches.inc();
            if !rd.messages.is_empty() {
                self.transport.send(rd.messages);
            }
            if let Some(snapshot) = rd.snapshot {
                self.storage.install_snapshot(&snapshot).map_err(fatal)?;
                self.shared.metrics.snapshots_installed.inc();
                let _ = self.apply_tx.send(ApplyJob::Restore(snapshot));
            }
            if !rd.entries.is_empty() {
                self.storage.append_entries(&rd.entries).map_err(fatal)?;
            }
            if (hs_sync || writes_log)
                && let Some(hs) = self.lazy_hard_state.take()
            {
                self.storage.save_hard_state(&hs).map_err(fatal)?;
            }
            if let Some(cs) = &rd.conf_state {
                self.storage.save_conf_state(cs).map_err(fatal)?;
            }
            if !sync && self.persisting.is_empty() {
                // Nothing to make durable and nothing ahead of it: acknowledge here.
                self.raft.on_persisted(rd.number)?;
                if !rd.persisted_messages.is_empty() {
                    self.transport.send(rd.persisted_messages);
                }
            } else {
                self.persisting.push_back(rd.number);
                let job = PersistJob { number: rd.number, sync, messages: rd.persisted_messages };
                if self.persist_tx.send(job).await.is_err() {
                    return Err(NodeError::Fatal("the persister stopped".into()));
                }
            }
            if !rd.committed_entries.is_empty() {
                let _ = self.apply_tx.send(ApplyJob::Entries(rd.committed_entries));
            }
            for ctx in rd.aborted_reads {
                let Some(ctx) = ctx.get(..8).and_then(|b| b.try_into().ok()) else { continue };
                if let Some((_, reply)) = self.reads.remove(&u64::from_le_bytes(ctx)) {
                    let leader_hint = self.raft.leader_id().filter(|&l| l != self.shared.id);
                    let _ = reply.send(Err(NodeError::NotLeader { leader_hint }));
                }
            }
            for rs in rd.read_states {
                let Some(ctx) = rs.ctx.get(..8).and_then(|b| b.try_into().ok()) else { continue };
                if let Some((query, reply)) = self.reads.remove(&u64::from_le_bytes(ctx)) {
                    let _ = self.apply_tx.send(ApplyJob::Query { index: rs.index, query, reply });
                }
            }
            // TODO(runtime): answer the callers of `rd.refused` at once with their errors;
            // until then they wait for `proposal_timeout` (or `Overtaken`) as before.
            drop(rd.refused);
        }
        Ok(())
    }

    /// Publishes the status: at once when the role, term, leader or membership changed; the
    /// indexes and followers' progress once per tick (so watchers are not woken per entry).
    fn publish_status(&mut self, ticked: bool) {
        let raft = &self.raft;
        let (role, term, leader) = (raft.role(), raft.term(), raft.leader_id());
        let conf_index = raft.conf_state().index;
        let removed = raft.is_removed();
        let urgent = {
            let cur = self.status_tx.borrow();
            cur.role != role
                || cur.term != term
                || cur.leader != leader
                || cur.conf_state.index != conf_index
                || cur.removed != removed
        };
        if !urgent && !ticked {
            return;
        }
        let st = raft.status();
        let applied = self.applied;
        let progress = if role == Role::Leader { raft.progress() } else { Vec::new() };
        self.status_tx.send_if_modified(|s| {
            if s.role != role || s.term != term || s.leader != leader {
                if role == Role::Leader && s.role != Role::Leader {
                    tracing::info!(node = st.id, term, "became leader");
                }
                self.shared.metrics.leader_changes.add(u64::from(s.leader != leader));
            }
            let next = NodeStatus {
                id: st.id,
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

fn fatal(e: crate::error::StorageError) -> NodeError {
    NodeError::Fatal(e.to_string())
}

/// Runs `f` on a blocking thread on a multi-thread runtime; inline on a current-thread one (the
/// deterministic tests), where no other task could run meanwhile anyway.
pub(crate) fn offload(f: impl FnOnce() + Send + 'static) {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => drop(tokio::task::spawn_blocking(f)),
        _ => f(),
    }
}

/// The persister: group commit. Every job that queued up while the previous `sync` ran is
/// covered by one `sync`; then the messages that waited for durability go out and the batches
/// are acknowledged, in order. On a multi-thread runtime it has its own thread
/// ([`Persister::run_blocking`]), so an fsync neither blocks nor hands off a runtime worker; on a
/// current-thread runtime (the deterministic tests) it is a task ([`Persister::run`]).
pub(crate) struct Persister<S, T: ?Sized> {
    pub(crate) storage: S,
    pub(crate) transport: Arc<T>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) done: mpsc::UnboundedSender<Result<u64, NodeError>>,
}

impl<S, T> Persister<S, T>
where
    S: LogStore + Send + Sync + 'static,
    T: Transport + ?Sized + 'static,
{
    pub(crate) async fn run(self, mut jobs: mpsc::Receiver<PersistJob>) {
        while let Some(first) = jobs.recv().await {
            if !self.round(first, &mut jobs) {
                return;
            }
        }
    }

    pub(crate) fn run_blocking(self, mut jobs: mpsc::Receiver<PersistJob>) {
        while let Some(first) = jobs.blocking_recv() {
            if !self.round(first, &mut jobs) {
                return;
            }
        }
    }

    /// Syncs, sends and acknowledges `first` and every job queued behind it; false when the
    /// persister must stop.
    fn round(&self, first: PersistJob, jobs: &mut mpsc::Receiver<PersistJob>) -> bool {
        let mut batch = vec![first];
        while let Ok(job) = jobs.try_recv() {
            batch.push(job);
        }
        if batch.iter().any(|j| j.sync) {
            if let Err(e) = self.storage.sync() {
                let _ = self.done.send(Err(NodeError::Fatal(format!("fsync failed: {e}"))));
                return false;
            }
            self.shared.metrics.fsyncs.inc();
        }
        let number = batch.last().map_or(0, |j| j.number);
        let messages: Vec<Message> = batch.into_iter().flat_map(|j| j.messages).collect();
        if !messages.is_empty() {
            self.transport.send(messages);
        }
        self.done.send(Ok(number)).is_ok()
    }
}
