//! The applier: feeds committed entries to the state machine in order, keeps the replicated
//! session and member tables, answers the callers waiting on this node, serves reads once the
//! state is fresh enough, and takes snapshots ([`snapshot`]). It owns all of that state; the
//! driver reaches it only through [`ApplyJob`]s, and it reports back only its applied index
//! ([`Applied`], a watch: it never waits for the driver).

mod snapshot;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};

use super::config::{NodeConfig, NodeError};
use super::envelope::{Envelope, Origin, SnapshotEnvelope};
use super::members::{MemberTable, Members};
use super::metrics::Metrics;
use super::request::{Read, Reply};
use super::sessions::{SessionCheck, Sessions};
use super::state_machine::{Command, StateMachine};
use super::waiters::Waiters;
use crate::storage::LogStore;
use crate::transport::Transport;
use crate::types::{ConfState, Entry, EntryKind, Index, NodeId, Snapshot, SnapshotMeta, Term};
use snapshot::Snapshots;

/// What the driver hands the applier, in order.
pub(crate) enum ApplyJob {
    /// Committed entries, and when the driver got them (for the commit → apply latency).
    Entries { entries: Vec<Entry>, committed: Instant },
    /// Restore the state from a snapshot already installed in storage.
    Restore(Snapshot),
    /// These proposals were handed to the core, in this order, at `at`; answer each when its
    /// entry is applied, or with [`NodeError::Timeout`] once `proposal_timeout` has passed. Sent
    /// before any of their entries can be committed.
    Proposed { waiters: Vec<(u64, Reply<Bytes>)>, at: tokio::time::Instant },
    /// The driver's tick: time out the proposals whose deadline is past.
    Tick(tokio::time::Instant),
    /// The leader refused these proposals: answer them with `error`.
    Refused { proposals: Vec<u64>, error: NodeError },
    /// Serve `read` once the applied index reaches `index` (0: at once).
    Read { index: Index, read: Read },
    /// Take a snapshot at the applied index now.
    SnapshotNow { reply: Reply<Index> },
}

/// The applier's progress: everything up to `index` is applied; `failed` once it stopped.
#[derive(Clone, Debug, Default)]
pub(crate) struct Applied {
    pub(crate) index: Index,
    pub(crate) failed: Option<NodeError>,
}

/// Where a response goes once the batch it belongs to is applied (the command at the same
/// position of the batch): to `origin`, recorded in `session` if any.
struct Pending {
    origin: Origin,
    session: Option<(u64, u64, Index)>,
}

/// Everything the applier starts from.
pub(crate) struct ApplierParts<S, M, T: ?Sized> {
    pub(crate) cfg: Arc<NodeConfig>,
    pub(crate) sm: M,
    pub(crate) storage: S,
    pub(crate) members: Members<T>,
    pub(crate) sessions: Sessions,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) progress: watch::Sender<Applied>,
    /// The applied index and the term and membership as of it.
    pub(crate) applied: SnapshotMeta,
}

pub(crate) struct Applier<S, M, T: ?Sized> {
    id: NodeId,
    cfg: Arc<NodeConfig>,
    sm: M,
    members: Members<T>,
    sessions: Sessions,
    waiters: Waiters,
    metrics: Arc<Metrics>,
    progress: Arc<watch::Sender<Applied>>,
    snapshots: Snapshots<S>,
    applied: Index,
    applied_term: Term,
    /// The membership as of `applied` (for snapshots).
    conf: ConfState,
    /// Reads waiting for the applied index to reach theirs, by (index, arrival).
    reads: BTreeMap<(Index, u64), Read>,
    read_seq: u64,
    // The batch being built: commands and where their responses go.
    batch: Vec<(Index, u64, Bytes)>,
    pending: Vec<Pending>,
    batch_sessions: BTreeSet<u64>,
    /// This node's proposals answered by the entries being applied.
    answered_own: Vec<u64>,
}

impl<S, M, T> Applier<S, M, T>
where
    S: LogStore + Clone + Send + Sync + 'static,
    M: StateMachine,
    T: Transport + ?Sized + 'static,
{
    pub(crate) fn new(p: ApplierParts<S, M, T>) -> Self {
        let id = p.cfg.raft.id;
        let progress = Arc::new(p.progress);
        let index = p.applied.index;
        let snapshots = Snapshots::new(id, p.storage, p.metrics.clone(), progress.clone(), index);
        Applier {
            id,
            waiters: Waiters::new(p.cfg.max_pending_requests),
            cfg: p.cfg,
            sm: p.sm,
            members: p.members,
            sessions: p.sessions,
            metrics: p.metrics,
            progress,
            snapshots,
            applied: index,
            applied_term: p.applied.term,
            conf: p.applied.conf_state,
            reads: BTreeMap::new(),
            read_seq: 0,
            batch: Vec::new(),
            pending: Vec::new(),
            batch_sessions: BTreeSet::new(),
            answered_own: Vec::new(),
        }
    }

    /// As a task (current-thread runtimes: the deterministic tests).
    pub(crate) async fn run(mut self, mut jobs: mpsc::Receiver<ApplyJob>) {
        while let Some(job) = jobs.recv().await {
            if !self.handle_or_stop(job) {
                break;
            }
        }
        self.snapshots.wait();
    }

    /// On a thread of its own (multi-thread runtimes): state machine calls may block.
    pub(crate) fn run_blocking(mut self, mut jobs: mpsc::Receiver<ApplyJob>) {
        let span = tracing::info_span!("applier", node = self.id);
        let _span = span.enter();
        while let Some(job) = jobs.blocking_recv() {
            if !self.handle_or_stop(job) {
                break;
            }
        }
        self.snapshots.wait();
    }

    fn handle_or_stop(&mut self, job: ApplyJob) -> bool {
        if self.progress.borrow().failed.is_some() {
            // A snapshot build failed: the node stops.
            return false;
        }
        match self.handle(job) {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(node = self.id, error = %e, "apply failed; stopping");
                self.progress.send_modify(|p| p.failed = Some(e));
                false
            }
        }
    }

    fn handle(&mut self, job: ApplyJob) -> Result<(), NodeError> {
        match job {
            ApplyJob::Entries { entries, committed } => {
                let Some(last) = entries.last().map(|e| (e.index, e.term)) else { return Ok(()) };
                let _span =
                    tracing::debug_span!("apply", index = last.0, n = entries.len()).entered();
                self.apply_entries(entries)?;
                let own = std::mem::take(&mut self.answered_own);
                let overtaken = self.waiters.settle_overtaken(&own);
                self.metrics.proposals_failed.add(overtaken);
                (self.applied, self.applied_term) = last;
                self.metrics.applied_index.set(self.applied);
                self.metrics.observe_commit_to_apply(committed.elapsed());
                self.progress.send_modify(|p| p.index = self.applied);
                self.serve_reads();
                let every = self.cfg.snapshot_entries;
                if every > 0 && self.applied - self.snapshots.last >= every {
                    self.snapshot(None)?;
                }
            }
            ApplyJob::Restore(snapshot) => self.restore(snapshot)?,
            ApplyJob::Proposed { waiters, at } => {
                self.waiters.proposed(waiters, at + self.cfg.proposal_timeout);
            }
            ApplyJob::Tick(now) => {
                let timed_out = self.waiters.expire(now);
                self.metrics.proposals_failed.add(timed_out);
            }
            ApplyJob::Refused { proposals, error } => {
                for id in proposals {
                    if self.waiters.answer(id, Err(error.clone())) {
                        self.metrics.proposals_failed.inc();
                    }
                }
            }
            ApplyJob::Read { index, read } => {
                self.read_seq += 1;
                self.reads.insert((index, self.read_seq), read);
                self.serve_reads();
            }
            ApplyJob::SnapshotNow { reply } => self.snapshot(Some(reply))?,
        }
        Ok(())
    }

    /// Starts a snapshot at the applied index unless one is under way (a caller asking
    /// meanwhile is answered with that one).
    fn snapshot(&mut self, reply: Option<Reply<Index>>) -> Result<(), NodeError> {
        let Err(reply) = self.snapshots.join(reply) else { return Ok(()) };
        if self.conf.index > self.applied {
            // Just after a restart the stored membership may be ahead of what is applied: the
            // membership as of the applied index is known once the replay passes it.
            if let Some(r) = reply {
                let _ = r.send(Err(snapshot::out_of_range(self.applied, self.snapshots.last)));
            }
            return Ok(());
        }
        if self.applied <= self.snapshots.last {
            if let Some(r) = reply {
                let _ = r.send(Ok(self.snapshots.last));
            }
            return Ok(());
        }
        let build = match self.sm.snapshot_builder() {
            Ok(build) => build,
            Err(e) => {
                let e = sm_error(e);
                if let Some(r) = reply {
                    let _ = r.send(Err(e.clone()));
                }
                return Err(e);
            }
        };
        let meta = SnapshotMeta {
            index: self.applied,
            term: self.applied_term,
            conf_state: self.conf.clone(),
        };
        let table = self.members.table();
        let tables = SnapshotEnvelope {
            sessions: self.sessions.clone(),
            members: table.members.clone(),
            promote: table.promote.clone(),
            app: Bytes::new(),
        };
        self.snapshots.start(meta, tables, build, reply);
        Ok(())
    }

    fn restore(&mut self, snapshot: Snapshot) -> Result<(), NodeError> {
        let index = snapshot.meta.index;
        let env = SnapshotEnvelope::decode(&snapshot.data)
            .map_err(|e| NodeError::Fatal(format!("snapshot at index {index} is invalid: {e}")))?;
        self.snapshots.restored(index);
        self.answered_own.clear();
        self.waiters.forget_order();
        self.sm.restore(&env.app).map_err(sm_error)?;
        let table = MemberTable { members: env.members, promote: env.promote };
        self.members.restore(table, &snapshot.meta.conf_state);
        self.sessions = env.sessions;
        self.conf = snapshot.meta.conf_state;
        (self.applied, self.applied_term) = (index, snapshot.meta.term);
        self.metrics.applied_index.set(index);
        self.metrics.snapshots_installed.inc();
        self.progress.send_modify(|p| p.index = index);
        tracing::info!(node = self.id, index, "restored from snapshot");
        self.serve_reads();
        Ok(())
    }

    fn serve_reads(&mut self) {
        while let Some(entry) = self.reads.first_entry() {
            if entry.key().0 > self.applied {
                break;
            }
            match entry.remove() {
                Read::Query { query, reply } => {
                    if !reply.is_closed() {
                        let _ = reply.send(self.sm.query(&query).map_err(sm_error));
                    }
                }
                Read::Barrier { reply } => drop(reply.send(Ok(self.applied))),
            }
        }
    }

    fn apply_entries(&mut self, entries: Vec<Entry>) -> Result<(), NodeError> {
        let (idle, max_sessions) = (self.cfg.session_idle_entries, self.cfg.max_sessions);
        for e in entries {
            match e.kind {
                EntryKind::Empty => {}
                EntryKind::ConfChange => {
                    self.flush()?;
                    if let Some(mut cs) = ConfState::decode(&e.data) {
                        cs.index = e.index;
                        self.members.conf_changed(&cs);
                        self.conf = cs;
                    }
                }
                EntryKind::Normal => {
                    let env = match Envelope::decode(&e.data) {
                        Ok(env) => env,
                        Err(reason) => {
                            // Every node sees the same bytes, so every node skips it alike.
                            tracing::error!(
                                node = self.id,
                                index = e.index,
                                reason,
                                "skipping an entry the runtime cannot decode"
                            );
                            continue;
                        }
                    };
                    match env {
                        Envelope::Command { origin, payload } => {
                            self.push(e.index, e.term, payload, origin, None);
                        }
                        Envelope::SessionCommand { origin, client, seq, payload } => {
                            if self.batch_sessions.contains(&client) {
                                self.flush()?;
                            }
                            match self.sessions.check(client, seq, e.index, idle) {
                                SessionCheck::Fresh => {
                                    self.batch_sessions.insert(client);
                                    let session = Some((client, seq, e.index));
                                    self.push(e.index, e.term, payload, origin, session);
                                }
                                SessionCheck::Duplicate(r) => {
                                    self.metrics.duplicates.inc();
                                    self.answer(origin, Ok(r));
                                }
                                SessionCheck::Stale { last_seq } => {
                                    let err = NodeError::StaleRequest { client, seq, last_seq };
                                    self.answer(origin, Err(err));
                                }
                                SessionCheck::Expired => {
                                    self.answer(origin, Err(NodeError::SessionExpired { client }));
                                }
                            }
                        }
                        Envelope::OpenSession { origin } => {
                            self.flush()?;
                            let id = self.sessions.open(e.index, max_sessions, idle);
                            self.answer(origin, Ok(Bytes::copy_from_slice(&id.to_le_bytes())));
                        }
                        Envelope::SetMember { origin, id, member } => {
                            self.members.set(id, member);
                            self.answer(origin, Ok(Bytes::new()));
                        }
                        Envelope::PromoteLater { origin, id } => {
                            // Only for a learner of the configuration as of this entry (a
                            // voter needs no promotion; a removed node must not come back).
                            if self.conf.learners.contains(&id) {
                                self.members.promote_later(id);
                            }
                            self.answer(origin, Ok(Bytes::new()));
                        }
                    }
                }
            }
        }
        self.flush()
    }

    fn push(
        &mut self,
        index: Index,
        term: u64,
        payload: Bytes,
        origin: Origin,
        session: Option<(u64, u64, Index)>,
    ) {
        self.batch.push((index, term, payload));
        self.pending.push(Pending { origin, session });
    }

    /// Applies the commands gathered so far and routes their responses.
    fn flush(&mut self) -> Result<(), NodeError> {
        self.batch_sessions.clear();
        if self.batch.is_empty() {
            return Ok(());
        }
        let commands: Vec<Command<'_>> = self
            .batch
            .iter()
            .map(|(index, term, data)| Command { index: *index, term: *term, data })
            .collect();
        let responses = self.sm.apply(&commands).map_err(sm_error)?;
        if responses.len() != commands.len() {
            return Err(NodeError::StateMachine(format!(
                "apply returned {} responses for {} commands",
                responses.len(),
                commands.len()
            )));
        }
        drop(commands);
        self.batch.clear();
        // Taken and put back, so its allocation is reused batch after batch.
        let mut pending = std::mem::take(&mut self.pending);
        for (Pending { origin, session }, response) in pending.drain(..).zip(responses) {
            if let Some((client, seq, index)) = session {
                self.sessions.record(client, seq, index, response.clone());
            }
            self.answer(origin, Ok(response));
        }
        self.pending = pending;
        Ok(())
    }

    fn answer(&mut self, origin: Origin, result: Result<Bytes, NodeError>) {
        if origin.node == self.id {
            self.answered_own.push(origin.proposal);
            if result.is_err() {
                self.metrics.proposals_failed.inc();
            }
            self.waiters.answer(origin.proposal, result);
        }
    }
}

fn sm_error(e: super::state_machine::StateMachineError) -> NodeError {
    NodeError::StateMachine(e.to_string())
}
