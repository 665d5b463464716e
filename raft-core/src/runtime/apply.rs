//! The apply task: feeds committed entries to the state machine in order, keeps the replicated
//! session and member tables, answers the callers waiting on this node, serves reads once the
//! state is fresh enough, and takes snapshots.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::config::NodeError;
use super::driver::{Reply, offload};
use super::envelope::{Envelope, Origin, SessionCheck, SnapshotEnvelope};
use super::node::Shared;
use super::state_machine::{Command, StateMachine};
use crate::transport::Transport;
use crate::types::{ConfState, Entry, EntryKind, Index, NodeId, Snapshot};

pub(crate) enum ApplyJob {
    Entries(Vec<Entry>),
    Restore(Snapshot),
    /// Answer `query` once the applied index reaches `index` (0: at once).
    Query {
        index: Index,
        query: Bytes,
        reply: Reply<Bytes>,
    },
    SnapshotNow {
        reply: Reply<Index>,
    },
}

pub(crate) enum ApplyEvent {
    Applied(Index),
    /// A snapshot was built at `index`: the driver stores it and compacts the log.
    Snapshot {
        index: Index,
        data: Bytes,
    },
    /// The snapshot under way was dropped (a restore replaced the state it was built from).
    SnapshotAbandoned,
    /// The driver's storage compaction for the snapshot at `index` finished.
    /// (`Ok(false)`: refused as older than the snapshot stored meanwhile.)
    Compacted {
        index: Index,
        result: Result<bool, NodeError>,
    },
    Fatal(NodeError),
}

/// Where a response goes once the batch it belongs to is applied: response `pos` of the
/// current batch, for `origin`, recorded in `session` if any.
struct Pending {
    origin: Origin,
    pos: usize,
    session: Option<(u64, u64, Index)>,
}

pub(crate) struct Applier<M, T: ?Sized> {
    pub(crate) sm: M,
    pub(crate) shared: Arc<Shared>,
    pub(crate) transport: Arc<T>,
    pub(crate) events: mpsc::UnboundedSender<ApplyEvent>,
    pub(crate) applied: Index,
    pub(crate) last_snapshot: Index,
    pub(crate) tables: SnapshotEnvelope,
    /// Members of the configuration as of `applied` (to see who a change removed).
    pub(crate) conf_members: BTreeSet<NodeId>,
    /// Bumped by every restore: a snapshot built from an older state is dropped.
    generation: Arc<AtomicU64>,
    /// Reads waiting for the applied index to reach theirs, by (index, arrival).
    pub(crate) queries: BTreeMap<(Index, u64), (Bytes, Reply<Bytes>)>,
    pub(crate) query_seq: u64,
    // The batch being built: commands and where their responses go.
    batch: Vec<(Index, u64, Bytes)>,
    pending: Vec<Pending>,
    batch_sessions: BTreeSet<u64>,
    /// This node's proposals answered by the entries being applied.
    answered_own: Vec<u64>,
}

impl<M: StateMachine, T: Transport + ?Sized + 'static> Applier<M, T> {
    pub(crate) fn new(
        sm: M,
        shared: Arc<Shared>,
        transport: Arc<T>,
        events: mpsc::UnboundedSender<ApplyEvent>,
        applied: Index,
        tables: SnapshotEnvelope,
        conf_members: BTreeSet<NodeId>,
    ) -> Self {
        Applier {
            sm,
            shared,
            transport,
            events,
            applied,
            last_snapshot: applied,
            tables,
            conf_members,
            generation: Arc::new(AtomicU64::new(0)),
            queries: BTreeMap::new(),
            query_seq: 0,
            batch: Vec::new(),
            pending: Vec::new(),
            batch_sessions: BTreeSet::new(),
            answered_own: Vec::new(),
        }
    }

    /// As a task (current-thread runtimes: the deterministic tests).
    pub(crate) async fn run(mut self, mut jobs: mpsc::UnboundedReceiver<ApplyJob>) {
        while let Some(job) = jobs.recv().await {
            if !self.handle_or_stop(job) {
                return;
            }
        }
    }

    /// On a thread of its own (multi-thread runtimes): state machine calls may block.
    pub(crate) fn run_blocking(mut self, mut jobs: mpsc::UnboundedReceiver<ApplyJob>) {
        while let Some(job) = jobs.blocking_recv() {
            if !self.handle_or_stop(job) {
                return;
            }
        }
    }

    fn handle_or_stop(&mut self, job: ApplyJob) -> bool {
        match self.handle(job) {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(node = self.shared.id, error = %e, "apply failed; stopping");
                let _ = self.events.send(ApplyEvent::Fatal(e));
                false
            }
        }
    }

    fn handle(&mut self, job: ApplyJob) -> Result<(), NodeError> {
        match job {
            ApplyJob::Entries(entries) => {
                let Some(last) = entries.last().map(|e| e.index) else { return Ok(()) };
                self.apply_entries(entries)?;
                self.shared.settle_dropped(&std::mem::take(&mut self.answered_own));
                self.applied = last;
                self.shared.metrics.applied_index.set(last);
                let _ = self.events.send(ApplyEvent::Applied(last));
                self.serve_queries();
                let every = self.shared.cfg.snapshot_entries;
                if every > 0 && self.applied - self.last_snapshot >= every {
                    self.snapshot(None)?;
                }
            }
            ApplyJob::Restore(snapshot) => self.restore(snapshot)?,
            ApplyJob::Query { index, query, reply } => {
                self.query_seq += 1;
                self.queries.insert((index, self.query_seq), (query, reply));
                self.serve_queries();
            }
            ApplyJob::SnapshotNow { reply } => self.snapshot(Some(reply))?,
        }
        Ok(())
    }

    /// Starts a snapshot at the applied index unless one is under way (a caller asking
    /// meanwhile is answered with that one). The state machine's builder runs off the apply task
    /// (see [`StateMachine::snapshot_builder`]); the driver then stores the result and compacts
    /// the log, and answers the callers.
    fn snapshot(&mut self, reply: Option<Reply<Index>>) -> Result<(), NodeError> {
        if !self.shared.start_snapshot(reply) {
            return Ok(());
        }
        let build = match self.sm.snapshot_builder() {
            Ok(build) => build,
            Err(e) => {
                let e = sm_error(e);
                self.shared.finish_snapshot(Err(e.clone()));
                return Err(e);
            }
        };
        let (index, mut env) = (self.applied, self.tables.clone());
        self.last_snapshot = index;
        let (events, generation) = (self.events.clone(), self.generation.clone());
        let started = generation.load(Ordering::Acquire);
        offload(move || {
            let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(build));
            let event = if generation.load(Ordering::Acquire) != started {
                // Built from a state a restore replaced: whatever came out is meaningless.
                ApplyEvent::SnapshotAbandoned
            } else {
                match built {
                    Ok(Ok(app)) => {
                        env.app = app;
                        ApplyEvent::Snapshot { index, data: env.encode() }
                    }
                    Ok(Err(e)) => ApplyEvent::Fatal(sm_error(e)),
                    Err(_) => ApplyEvent::Fatal(NodeError::StateMachine(
                        "the snapshot builder panicked".into(),
                    )),
                }
            };
            let _ = events.send(event);
        });
        Ok(())
    }

    fn restore(&mut self, snapshot: Snapshot) -> Result<(), NodeError> {
        let env = SnapshotEnvelope::decode(&snapshot.data).map_err(|e| {
            NodeError::Fatal(format!("snapshot at index {} is invalid: {e}", snapshot.meta.index))
        })?;
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.answered_own.clear();
        self.shared.forget_proposed();
        self.sm.restore(&env.app).map_err(sm_error)?;
        for (&id, m) in &env.members {
            if id != self.shared.id {
                self.add_peer(id, &m.addr);
            }
        }
        self.tables = SnapshotEnvelope { app: Bytes::new(), ..env };
        self.shared.set_members(&self.tables.members);
        self.conf_members = members_of(&snapshot.meta.conf_state);
        self.applied = snapshot.meta.index;
        self.last_snapshot = snapshot.meta.index;
        self.shared.metrics.applied_index.set(self.applied);
        // The driver's applied index (status, the core's flow control) moves with it; without
        // this the status showed the old index until the next entry was applied.
        let _ = self.events.send(ApplyEvent::Applied(self.applied));
        tracing::info!(node = self.shared.id, index = self.applied, "restored from snapshot");
        self.serve_queries();
        Ok(())
    }

    fn serve_queries(&mut self) {
        while let Some(entry) = self.queries.first_entry() {
            if entry.key().0 > self.applied {
                break;
            }
            let (query, reply) = entry.remove();
            if reply.is_closed() {
                continue;
            }
            let result = self.sm.query(&query).map_err(|e| NodeError::StateMachine(e.to_string()));
            let _ = reply.send(result);
        }
    }

    fn apply_entries(&mut self, entries: Vec<Entry>) -> Result<(), NodeError> {
        let cfg = &self.shared.cfg;
        let (idle, max_sessions) = (cfg.session_idle_entries, cfg.max_sessions);
        for e in entries {
            match e.kind {
                EntryKind::Empty => {}
                EntryKind::ConfChange => {
                    self.flush()?;
                    if let Some(cs) = ConfState::decode(&e.data) {
                        self.on_conf_change(&cs);
                    }
                }
                EntryKind::Normal => {
                    let env = match Envelope::decode(&e.data) {
                        Ok(env) => env,
                        Err(reason) => {
                            // Every node sees the same bytes, so every node skips it alike.
                            tracing::error!(
                                node = self.shared.id,
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
                            match self.tables.sessions.check(client, seq, e.index, idle) {
                                SessionCheck::Fresh => {
                                    self.batch_sessions.insert(client);
                                    let session = Some((client, seq, e.index));
                                    self.push(e.index, e.term, payload, origin, session);
                                }
                                SessionCheck::Duplicate(r) => {
                                    self.shared.metrics.duplicates.inc();
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
                            let id = self.tables.sessions.open(e.index, max_sessions, idle);
                            self.answer(origin, Ok(Bytes::copy_from_slice(&id.to_le_bytes())));
                        }
                        Envelope::SetMember { origin, id, member } => {
                            if id != self.shared.id {
                                self.add_peer(id, &member.addr);
                            }
                            self.tables.members.insert(id, member);
                            self.shared.set_members(&self.tables.members);
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
        let pos = self.batch.len();
        self.batch.push((index, term, payload));
        self.pending.push(Pending { origin, pos, session });
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
        for p in std::mem::take(&mut self.pending) {
            let Pending { origin, pos, session } = p;
            let response = responses[pos].clone();
            if let Some((client, seq, index)) = session {
                self.tables.sessions.record(client, seq, index, response.clone());
            }
            self.answer(origin, Ok(response));
        }
        Ok(())
    }

    fn answer(&mut self, origin: Origin, result: Result<Bytes, NodeError>) {
        if origin.node == self.shared.id {
            self.answered_own.push(origin.proposal);
            self.shared.resolve(origin.proposal, result);
        }
    }

    fn on_conf_change(&mut self, cs: &ConfState) {
        let next = members_of(cs);
        for &gone in self.conf_members.difference(&next) {
            if gone != self.shared.id {
                self.transport.remove_peer(gone);
            }
            self.tables.members.remove(&gone);
        }
        self.shared.set_members(&self.tables.members);
        self.conf_members = next;
    }

    fn add_peer(&self, id: NodeId, addr: &str) {
        if let Err(e) = self.transport.add_peer(id, addr) {
            tracing::warn!(node = self.shared.id, peer = id, addr, error = %e, "cannot add peer");
        }
    }
}

pub(crate) fn members_of(cs: &ConfState) -> BTreeSet<NodeId> {
    cs.members().into_iter().collect()
}

fn sm_error(e: super::state_machine::StateMachineError) -> NodeError {
    NodeError::StateMachine(e.to_string())
}
