//! The handle applications use: [`Node`].

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};

use super::apply::{Applier, members_of};
use super::config::{NodeConfig, NodeError, ReadConsistency};
use super::driver::{Driver, Persister, Reply, Request};
use super::envelope::{Envelope, Member, Origin, SnapshotEnvelope};
use super::metrics::{Metrics, NodeMetrics};
use super::state_machine::StateMachine;
use crate::raft::{PeerProgress, Raft};
use crate::storage::LogStore;
use crate::transport::{Transport, TransportEvent};
use crate::types::{ConfChange, ConfChangeOp, ConfState, Index, Message, NodeId, Role, Term};

/// The sending side of a node's inbound queues: give `messages` to the transport's server (what
/// peers send) and `events` to the transport itself (unreachable peers, snapshot outcomes).
#[derive(Clone, Debug)]
pub struct Mailbox {
    /// Messages from peers.
    pub messages: mpsc::Sender<Message>,
    /// Transport events.
    pub events: mpsc::Sender<TransportEvent>,
}

/// The receiving side of a node's inbound queues, handed to [`Node::start`].
#[derive(Debug)]
pub struct Inbox {
    messages: mpsc::Receiver<Message>,
    events: mpsc::Receiver<TransportEvent>,
}

/// Creates a node's inbound queues, each bounded to `capacity` (use
/// [`NodeConfig::inbound_queue`]). A full message queue makes the transport wait, which
/// backs up into its bounded per-peer queues.
pub fn mailbox(capacity: usize) -> (Mailbox, Inbox) {
    let (mtx, mrx) = mpsc::channel(capacity.max(1));
    let (etx, erx) = mpsc::channel(capacity.max(1));
    (Mailbox { messages: mtx, events: etx }, Inbox { messages: mrx, events: erx })
}

/// What a node is doing, published on every change ([`Node::watch_status`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeStatus {
    /// The node's id.
    pub id: NodeId,
    /// Its role.
    pub role: Role,
    /// Its current term.
    pub term: Term,
    /// The leader it knows of in this term.
    pub leader: Option<NodeId>,
    /// Highest index known committed.
    pub commit_index: Index,
    /// Highest index applied to the state machine.
    pub applied_index: Index,
    /// Last index of its log.
    pub last_index: Index,
    /// Index of the snapshot its log starts after.
    pub snapshot_index: Index,
    /// The membership.
    pub conf_state: ConfState,
    /// On a leader, each follower's replication progress.
    pub progress: Vec<PeerProgress>,
    /// This node knows it was removed from the cluster: it applied a configuration without
    /// itself, or a member told it so (it may never see its removal committed, since the
    /// leader stops replicating to it). It no longer campaigns; stop it.
    pub removed: bool,
    /// `Some(reason)` once the node stopped.
    pub stopped: Option<String>,
}

type Waiter = oneshot::Sender<Result<Bytes, NodeError>>;

/// State shared by the handle and the tasks.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) id: NodeId,
    pub(crate) cfg: NodeConfig,
    /// High bits of this incarnation's proposal numbers, so entries proposed before a restart
    /// never answer a caller of the new incarnation.
    boot: u64,
    next_proposal: AtomicU64,
    waiters: Mutex<BTreeMap<u64, Waiter>>,
    members: RwLock<BTreeMap<NodeId, Member>>,
    pub(crate) metrics: Metrics,
    /// `Some` while a snapshot is being built or stored (one at a time): the callers of
    /// [`Node::snapshot`] waiting for it.
    snapshot_waiters: Mutex<Option<Vec<Reply<Index>>>>,
    /// This node's proposals in the order the driver handed them to the core (which appends
    /// them, or forwards them to the leader, in that order): see [`Shared::settle_dropped`].
    proposed: Mutex<VecDeque<u64>>,
    /// Set once the driver has stopped and failed every waiter.
    stopped: AtomicBool,
}

impl Shared {
    fn lock_waiters(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Waiter>> {
        self.waiters.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a waiter; refuses when too many are waiting.
    fn register(&self) -> Result<(u64, oneshot::Receiver<Result<Bytes, NodeError>>), NodeError> {
        let mut w = self.lock_waiters();
        if w.len() >= self.cfg.max_pending_requests {
            return Err(NodeError::TooBusy(format!(
                "{} requests pending (max_pending_requests)",
                w.len()
            )));
        }
        let n = self.boot | (self.next_proposal.fetch_add(1, Ordering::Relaxed) & 0xFFFF_FFFF);
        let (tx, rx) = oneshot::channel();
        w.insert(n, tx);
        Ok((n, rx))
    }

    fn forget(&self, proposal: u64) {
        self.lock_waiters().remove(&proposal);
    }

    pub(crate) fn resolve(&self, proposal: u64, result: Result<Bytes, NodeError>) {
        if result.is_err() {
            self.metrics.proposals_failed.inc();
        }
        if let Some(w) = self.lock_waiters().remove(&proposal) {
            let _ = w.send(result);
        }
    }

    fn lock_proposed(&self) -> std::sync::MutexGuard<'_, VecDeque<u64>> {
        self.proposed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The driver handed these proposals, in this order, to the core.
    pub(crate) fn proposed(&self, ids: &[u64]) {
        let mut order = self.lock_proposed();
        order.extend(ids);
        // Entries left by proposals that timed out are dropped from the front eventually.
        let cap = 2 * self.cfg.max_pending_requests;
        if order.len() > cap {
            let extra = order.len() - cap;
            order.drain(..extra);
        }
    }

    /// Called once the entries that answered `applied` (this node's proposals) and every entry
    /// before them are applied. The core appends this node's proposals, or forwards them over
    /// the in-order transport to the leader, which appends them, in the order of
    /// [`Shared::proposed`]; so their entries normally reach the log in that order, and a
    /// proposal handed over before the last one applied that is still unanswered was lost on
    /// the way: its caller gets [`NodeError::Overtaken`] now instead of a timeout. (Not a proof:
    /// a forward held up across a reconnect and a change of leader can still land later, which
    /// is why the error, like a timeout, leaves the outcome open.)
    pub(crate) fn settle_dropped(&self, applied: &[u64]) {
        if applied.is_empty() {
            return;
        }
        let applied: HashSet<u64> = applied.iter().copied().collect();
        let dropped: Vec<u64> = {
            let mut order = self.lock_proposed();
            let Some(last) = order.iter().rposition(|id| applied.contains(id)) else { return };
            order.drain(..=last).filter(|id| !applied.contains(id)).collect()
        };
        if dropped.is_empty() {
            return;
        }
        let mut waiters = self.lock_waiters();
        for id in dropped {
            if let Some(w) = waiters.remove(&id) {
                self.metrics.proposals_failed.inc();
                let _ = w.send(Err(NodeError::Overtaken));
            }
        }
    }

    /// A snapshot replaced the state: proposals applied inside it are never answered one by
    /// one, so the order above says nothing any more about the ones handed over so far.
    pub(crate) fn forget_proposed(&self) {
        self.lock_proposed().clear();
    }

    pub(crate) fn fail_all(&self, error: &NodeError) {
        for (_, w) in std::mem::take(&mut *self.lock_waiters()) {
            let _ = w.send(Err(error.clone()));
        }
        self.stopped.store(true, Ordering::Release);
        self.finish_snapshot(Err(error.clone()));
    }

    /// Marks a snapshot as started, unless one is already under way; either way `reply` (if
    /// any) is answered when the one under way is done. Returns whether this call started it.
    pub(crate) fn start_snapshot(&self, reply: Option<Reply<Index>>) -> bool {
        let mut w = self.snapshot_waiters.lock().unwrap_or_else(|e| e.into_inner());
        if self.stopped.load(Ordering::Acquire) {
            // The driver is gone: nobody would ever answer.
            if let Some(reply) = reply {
                let _ = reply.send(Err(NodeError::ShuttingDown));
            }
            return false;
        }
        let started = w.is_none();
        w.get_or_insert_with(Vec::new).extend(reply);
        started
    }

    /// Ends the snapshot under way (if any) and answers its waiters with `result`.
    pub(crate) fn finish_snapshot(&self, result: Result<Index, NodeError>) {
        let waiters = self.snapshot_waiters.lock().unwrap_or_else(|e| e.into_inner()).take();
        for w in waiters.unwrap_or_default() {
            let _ = w.send(result.clone());
        }
    }

    pub(crate) fn set_members(&self, members: &BTreeMap<NodeId, Member>) {
        *self.members.write().unwrap_or_else(|e| e.into_inner()) = members.clone();
    }
}

/// A client session for exactly-once commands (Raft dissertation §6.3), from
/// [`Node::open_session`]. Each [`Session::request`] gets the next sequence number; retrying the
/// same [`ClientRequest`] (on this or another node, after a timeout or a leader change) applies it
/// at most once and answers with the original response.
#[derive(Debug)]
pub struct Session {
    client: u64,
    next_seq: AtomicU64,
}

impl Session {
    /// Resumes a session whose id and last used sequence number the client kept.
    pub fn resume(client: u64, last_seq: u64) -> Session {
        Session { client, next_seq: AtomicU64::new(last_seq + 1) }
    }

    /// The session id (the log index of its opening).
    pub fn client_id(&self) -> u64 {
        self.client
    }

    /// A new request with the next sequence number. Send it with [`Node::propose_request`] and
    /// retry the same value until it is answered. Requests of one session should be sent one at
    /// a time: once a later request is applied, an earlier one's response is forgotten.
    pub fn request(&self, command: impl Into<Bytes>) -> ClientRequest {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        ClientRequest { client: self.client, seq, command: command.into() }
    }
}

/// A command in a session, retry-safe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientRequest {
    /// Session id.
    pub client: u64,
    /// Sequence number within the session (from 1).
    pub seq: u64,
    /// The command.
    pub command: Bytes,
}

/// A running Raft node: a cheap, cloneable handle to the tasks that drive the core, persist, and
/// apply. Dropping every handle stops the node.
#[derive(Clone, Debug)]
pub struct Node {
    shared: Arc<Shared>,
    requests: mpsc::Sender<Request>,
    status: watch::Receiver<NodeStatus>,
}

impl Node {
    /// Starts a node on the current tokio runtime: restores the state machine from the latest
    /// snapshot in `storage` (if any), then spawns the driver, persister and applier tasks. The
    /// log after the snapshot is re-applied as it is committed.
    ///
    /// `storage` must already hold the initial membership for a node that starts a new cluster
    /// (or nothing, for a node that joins one); `transport` sends to peers and `inbox` is where
    /// the transport delivers what it receives (see [`mailbox`]).
    pub async fn start<S, T, M>(
        config: NodeConfig,
        storage: S,
        transport: Arc<T>,
        mut state_machine: M,
        inbox: Inbox,
    ) -> Result<Node, NodeError>
    where
        S: LogStore + Clone + Send + Sync + 'static,
        T: Transport + ?Sized + 'static,
        M: StateMachine,
    {
        config.validate().map_err(|e| NodeError::Raft(e.into()))?;
        let id = config.raft.id;
        let snapshot = storage.snapshot().map_err(|e| NodeError::Fatal(e.to_string()))?;
        let mut tables = SnapshotEnvelope::default();
        for (&mid, addr) in &config.initial_members {
            tables.members.insert(mid, Member { addr: addr.clone(), meta: Bytes::new() });
        }
        let mut conf_members = config.initial_members.keys().copied().collect();
        let applied = snapshot.meta.index;
        if applied > 0 {
            let env = SnapshotEnvelope::decode(&snapshot.data).map_err(|e| {
                NodeError::Fatal(format!("snapshot at index {applied} is invalid: {e}"))
            })?;
            state_machine.restore(&env.app).map_err(|e| NodeError::StateMachine(e.to_string()))?;
            tables = SnapshotEnvelope { app: Bytes::new(), ..env };
            conf_members = members_of(&snapshot.meta.conf_state);
        }
        for (&mid, m) in &tables.members {
            if mid != id {
                transport.add_peer(mid, &m.addr).map_err(|e| {
                    NodeError::Fatal(format!("cannot add peer {mid} at {}: {e}", m.addr))
                })?;
            }
        }
        let hard_state =
            storage.initial_state().map_err(|e| NodeError::Fatal(e.to_string()))?.hard_state;
        let raft = Raft::restart(config.raft.clone(), storage.clone(), applied)?;
        let boot = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            .rotate_left(32)
            & !0xFFFF_FFFF;
        let shared = Arc::new(Shared {
            id,
            boot,
            next_proposal: AtomicU64::new(1),
            waiters: Mutex::new(BTreeMap::new()),
            members: RwLock::new(tables.members.clone()),
            metrics: Metrics::new(id),
            snapshot_waiters: Mutex::new(None),
            proposed: Mutex::new(VecDeque::new()),
            stopped: AtomicBool::new(false),
            cfg: config,
        });
        shared.metrics.applied_index.set(applied);
        let initial = NodeStatus {
            id,
            applied_index: applied,
            conf_state: raft.conf_state().clone(),
            ..NodeStatus::default()
        };
        let (status_tx, status) = watch::channel(initial);
        let (requests_tx, requests) = mpsc::channel(shared.cfg.max_pending_requests);
        let (persist_tx, persist_rx) = mpsc::channel(shared.cfg.max_pending_requests);
        let (persisted_tx, persisted_rx) = mpsc::unbounded_channel();
        let (apply_tx, apply_rx) = mpsc::unbounded_channel();
        let (apply_events_tx, apply_events) = mpsc::unbounded_channel();

        let applier = Applier::new(
            state_machine,
            shared.clone(),
            transport.clone(),
            apply_events_tx.clone(),
            applied,
            tables,
            conf_members,
        );
        let persister = Persister {
            storage: storage.clone(),
            transport: transport.clone(),
            shared: shared.clone(),
            done: persisted_tx,
        };
        let runtime = tokio::runtime::Handle::current();
        if runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread {
            tokio::spawn(applier.run(apply_rx));
            tokio::spawn(persister.run(persist_rx));
        } else {
            // Threads of their own: fsyncs and state machine calls block without holding up
            // (or handing off) a runtime worker. Both end when the driver drops their queues.
            // Each enters the runtime, for `spawn_blocking` and transports that spawn tasks.
            let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
                let runtime = runtime.clone();
                std::thread::Builder::new()
                    .name(format!("raft-{name}"))
                    .spawn(move || {
                        let _runtime = runtime.enter();
                        f()
                    })
                    .map(drop)
                    .map_err(|e| NodeError::Fatal(format!("cannot start the {name} thread: {e}")))
            };
            spawn("apply", Box::new(move || applier.run_blocking(apply_rx)))?;
            spawn("persist", Box::new(move || persister.run_blocking(persist_rx)))?;
        }
        let driver = Driver {
            raft,
            storage,
            transport,
            shared: shared.clone(),
            requests,
            messages: inbox.messages,
            events: inbox.events,
            persist_tx,
            persisted_rx,
            apply_tx,
            apply_events,
            apply_events_tx,
            status_tx,
            reads: BTreeMap::new(),
            next_read: 0,
            applied,
            durable_term_vote: (hard_state.term, hard_state.vote),
            lazy_hard_state: None,
            persisting: std::collections::VecDeque::new(),
        };
        tokio::spawn(driver.run());
        tracing::info!(node = id, applied, "node started");
        Ok(Node { shared, requests: requests_tx, status })
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.shared.id
    }

    /// The latest status (indexes are refreshed once per tick).
    pub fn status(&self) -> NodeStatus {
        self.status.borrow().clone()
    }

    /// The current term (cheap: no copy of the status).
    pub fn term(&self) -> Term {
        self.status.borrow().term
    }

    /// The leader this node knows of (cheap).
    pub fn leader(&self) -> Option<NodeId> {
        self.status.borrow().leader
    }

    /// This node's role (cheap).
    pub fn role(&self) -> Role {
        self.status.borrow().role
    }

    /// A receiver that sees status changes: role, term, leader and membership at once, the
    /// indexes and progress once per tick.
    pub fn watch_status(&self) -> watch::Receiver<NodeStatus> {
        self.status.clone()
    }

    /// The members' addresses and metadata, as applied from the log.
    pub fn members(&self) -> BTreeMap<NodeId, Member> {
        self.shared.members.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Counters since start.
    pub fn metrics(&self) -> NodeMetrics {
        let pending = self.shared.lock_waiters().len() as u64;
        self.shared.metrics.snapshot(pending)
    }

    /// All of this node's metrics (counters, gauges, latency histograms) in the Prometheus text
    /// format 0.0.4, every family named `raft_*` and every sample labelled `node="<id>"`; serve
    /// it as `text/plain; version=0.0.4` or append it to an application's own metrics.
    pub fn prometheus_metrics(&self) -> String {
        // Count first: the waiters' lock is not held while encoding.
        let pending = self.shared.lock_waiters().len() as u64;
        self.shared.metrics.encode(pending)
    }

    async fn send(&self, req: Request) -> Result<(), NodeError> {
        self.requests.send(req).await.map_err(|_| NodeError::ShuttingDown)
    }

    /// Proposes an entry and waits until this node applied it; answers with its result.
    async fn propose_entry(
        &self,
        make: impl FnOnce(Origin) -> Envelope,
    ) -> Result<Bytes, NodeError> {
        let (proposal, rx) = self.shared.register()?;
        let data = make(Origin { node: self.shared.id, proposal }).encode();
        if let Err(e) = self.send(Request::Propose { proposal, data }).await {
            self.shared.forget(proposal);
            return Err(e);
        }
        match tokio::time::timeout(self.shared.cfg.proposal_timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(NodeError::ShuttingDown),
            Err(_) => {
                self.shared.forget(proposal);
                self.shared.metrics.proposals_failed.inc();
                Err(NodeError::Timeout)
            }
        }
    }

    /// Proposes `command` and returns the state machine's response once this node applied it.
    /// On a follower the command is forwarded to the leader (`Config::forward_proposals`). On
    /// [`NodeError::Timeout`] the command may or may not be applied: use a [`Session`] to retry
    /// safely.
    pub async fn propose(&self, command: impl Into<Bytes>) -> Result<Bytes, NodeError> {
        let payload = command.into();
        self.propose_entry(|origin| Envelope::Command { origin, payload }).await
    }

    /// Opens a client session for exactly-once commands.
    pub async fn open_session(&self) -> Result<Session, NodeError> {
        let r = self.propose_entry(|origin| Envelope::OpenSession { origin }).await?;
        let id = r.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes);
        let client = id.ok_or_else(|| NodeError::Fatal("malformed session id".into()))?;
        Ok(Session { client, next_seq: AtomicU64::new(1) })
    }

    /// Proposes a session request: applied at most once however often it is retried; a retry
    /// of an applied request is answered with the original response.
    pub async fn propose_request(&self, request: &ClientRequest) -> Result<Bytes, NodeError> {
        let (client, seq, payload) = (request.client, request.seq, request.command.clone());
        self.propose_entry(|origin| Envelope::SessionCommand { origin, client, seq, payload }).await
    }

    /// Runs a read-only `query` against the state machine with the given consistency (see
    /// [`ReadConsistency`]).
    pub async fn read(
        &self,
        consistency: ReadConsistency,
        query: impl Into<Bytes>,
    ) -> Result<Bytes, NodeError> {
        let (reply, rx) = oneshot::channel();
        let query = query.into();
        self.send(Request::Read { consistency, query, reply }).await?;
        match tokio::time::timeout(self.shared.cfg.read_timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(NodeError::ShuttingDown),
            Err(_) => Err(NodeError::Timeout),
        }
    }

    /// Records (replicates) a member's transport address and application metadata.
    pub async fn set_member(
        &self,
        id: NodeId,
        addr: impl Into<String>,
        meta: impl Into<Bytes>,
    ) -> Result<(), NodeError> {
        let member = Member { addr: addr.into(), meta: meta.into() };
        self.propose_entry(|origin| Envelope::SetMember { origin, id, member }).await.map(drop)
    }

    /// Adds a learner at `addr`: records its address, then changes the membership. Promote it
    /// with [`Node::promote`] once it has caught up.
    pub async fn add_learner(
        &self,
        id: NodeId,
        addr: impl Into<String>,
        meta: impl Into<Bytes>,
    ) -> Result<ConfState, NodeError> {
        self.set_member(id, addr, meta).await?;
        self.change_membership(ConfChange {
            ops: vec![ConfChangeOp::AddLearner(id)],
            ..Default::default()
        })
        .await
    }

    /// Promotes a learner to voter (refused until it has caught up with the leader).
    pub async fn promote(&self, id: NodeId) -> Result<ConfState, NodeError> {
        self.change_membership(ConfChange {
            ops: vec![ConfChangeOp::AddVoter(id)],
            ..Default::default()
        })
        .await
    }

    /// Removes a voter or learner.
    pub async fn remove(&self, id: NodeId) -> Result<ConfState, NodeError> {
        self.change_membership(ConfChange {
            ops: vec![ConfChangeOp::Remove(id)],
            ..Default::default()
        })
        .await
    }

    /// Proposes any membership change (several at once go through a joint configuration) on the
    /// leader and waits until it is applied here; returns the resulting membership.
    pub async fn change_membership(&self, change: ConfChange) -> Result<ConfState, NodeError> {
        let before = self.status().conf_state.index;
        let explicit = change.transition == crate::types::ConfChangeTransition::JointExplicit;
        let (reply, rx) = oneshot::channel();
        self.send(Request::ConfChange { change, reply }).await?;
        rx.await.map_err(|_| NodeError::ShuttingDown)??;
        let status = self
            .wait_for(self.shared.cfg.proposal_timeout, |s| {
                s.conf_state.index > before && (explicit || s.conf_state.voters_outgoing.is_empty())
            })
            .await?;
        Ok(status.conf_state)
    }

    /// Transfers leadership to `to` and waits until this node sees it lead.
    pub async fn transfer_leadership(&self, to: NodeId) -> Result<(), NodeError> {
        let (reply, rx) = oneshot::channel();
        self.send(Request::Transfer { to, reply }).await?;
        rx.await.map_err(|_| NodeError::ShuttingDown)??;
        self.wait_for(self.shared.cfg.proposal_timeout, |s| s.leader == Some(to)).await.map(drop)
    }

    /// Starts an election now (for operators and tests; elections normally start by themselves).
    pub async fn campaign(&self) -> Result<(), NodeError> {
        self.send(Request::Campaign).await
    }

    /// Takes a snapshot at the applied index now and compacts the log; returns its index once it
    /// is stored. If a snapshot is already under way, answers when that one is stored (with its
    /// index); if a snapshot from the leader replaced the state meanwhile, with that one's.
    pub async fn snapshot(&self) -> Result<Index, NodeError> {
        let (reply, rx) = oneshot::channel();
        self.send(Request::Snapshot { reply }).await?;
        rx.await.map_err(|_| NodeError::ShuttingDown)?
    }

    /// Waits until the status satisfies `done`, up to `timeout`.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&NodeStatus) -> bool,
    ) -> Result<NodeStatus, NodeError> {
        let mut rx = self.status.clone();
        let wait = async {
            loop {
                {
                    let s = rx.borrow_and_update();
                    if done(&s) {
                        return Ok(s.clone());
                    }
                    if s.stopped.is_some() {
                        return Err(NodeError::ShuttingDown);
                    }
                }
                if rx.changed().await.is_err() {
                    return Err(NodeError::ShuttingDown);
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.unwrap_or(Err(NodeError::Timeout))
    }

    /// Graceful shutdown: a leader first hands leadership to its most caught-up voter (so
    /// clients see almost no unavailability), then the node stops. Waits for the tasks to finish
    /// what was acknowledged.
    pub async fn shutdown(&self) {
        let s = self.status();
        if s.role == Role::Leader && s.stopped.is_none() {
            let target = s
                .progress
                .iter()
                .filter(|p| s.conf_state.voters.contains(&p.id))
                .filter(|p| {
                    // Only a follower heard from recently can take over.
                    p.ticks_since_heard <= u64::from(self.shared.cfg.raft.election_timeout_ticks)
                })
                .max_by_key(|p| (p.match_index, std::cmp::Reverse(p.ticks_since_heard)))
                .map(|p| p.id);
            if let Some(to) = target {
                let moved = self.transfer_leadership(to);
                // The core abandons a transfer after an election timeout; wait a little longer.
                let cfg = &self.shared.cfg;
                let election = cfg.tick_interval * cfg.raft.election_timeout_ticks;
                let timeout = cfg.shutdown_transfer_timeout.min(2 * election);
                match tokio::time::timeout(timeout, moved).await {
                    Ok(Ok(())) => tracing::info!(node = self.id(), to, "leadership handed over"),
                    _ => tracing::warn!(node = self.id(), to, "leadership transfer did not finish"),
                }
            }
        }
        self.stop().await;
    }

    /// Immediate shutdown: stops the tasks; waiting callers get [`NodeError::ShuttingDown`].
    pub async fn stop(&self) {
        let (reply, rx) = oneshot::channel();
        if self.requests.send(Request::Stop { reply }).await.is_ok() {
            let _ = rx.await;
        }
        // The driver may have been gone already; wait for its final status either way.
        let _ = self.wait_for(Duration::from_secs(3600), |s| s.stopped.is_some()).await;
    }
}
