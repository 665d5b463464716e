//! The handle applications use: [`Node`]. It sends requests to the driver and awaits their
//! answers; it owns no node state beyond the proposal numbering and the pending-request permits.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use super::config::{NodeConfig, NodeError, ReadConsistency};
use super::envelope::{Envelope, Member, Origin};
use super::mailbox::Inbox;
use super::members::MemberTable;
use super::metrics::{Metrics, NodeMetrics};
use super::request::{Read, Reply, Request};
use super::start::start;
use super::state_machine::StateMachine;
use super::status::{NodeEvent, NodeStatus};
use crate::storage::LogStore;
use crate::transport::Transport;
use crate::types::{ConfChange, ConfChangeOp, ConfState, Index, NodeId, Role, Term};

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
///
/// Every call works on any member: proposals, membership changes and leadership transfers made
/// on a follower are forwarded to the leader by the core (`Config::forward_proposals`, on by
/// default), and answered here once their effect is visible here.
#[derive(Clone, Debug)]
pub struct Node {
    cfg: Arc<NodeConfig>,
    metrics: Arc<Metrics>,
    requests: mpsc::Sender<Request>,
    status: watch::Receiver<NodeStatus>,
    members: watch::Receiver<Arc<MemberTable>>,
    events: broadcast::Sender<NodeEvent>,
    /// Proposals and reads waiting for their answer (at most `max_pending_requests`). A plain
    /// counter: nobody waits for a permit, and a semaphore's release takes a lock.
    pending: Arc<AtomicUsize>,
    /// High bits: this incarnation (so entries proposed before a restart never answer a caller
    /// of the new one); low bits: the next proposal number.
    proposals: Arc<(u64, AtomicU64)>,
}

/// One request counted in [`Node::pending`] until it is answered (or its caller gives up).
struct Permit<'a>(&'a AtomicUsize);

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Node {
    /// Starts a node on the current tokio runtime: restores the state machine from the latest
    /// snapshot in `storage` (if any), then spawns the driver, persister and applier. The log
    /// after the snapshot is re-applied as it is committed.
    ///
    /// `storage` must already hold the initial membership for a node that starts a new cluster
    /// (or nothing, for a node that joins one); `transport` sends to peers and `inbox` is where
    /// the transport delivers what it receives (see [`super::mailbox`]).
    pub async fn start<S, T, M>(
        config: NodeConfig,
        storage: S,
        transport: Arc<T>,
        state_machine: M,
        inbox: Inbox,
    ) -> Result<Node, NodeError>
    where
        S: LogStore + Clone + Send + Sync + 'static,
        T: Transport + ?Sized + 'static,
        M: StateMachine,
    {
        let s = start(config, storage, transport, state_machine, inbox).await?;
        let boot = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            .rotate_left(32)
            & !0xFFFF_FFFF;
        Ok(Node {
            pending: Arc::new(AtomicUsize::new(0)),
            cfg: s.cfg,
            metrics: s.metrics,
            requests: s.requests,
            status: s.status,
            members: s.members,
            events: s.events,
            proposals: Arc::new((boot, AtomicU64::new(1))),
        })
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.cfg.raft.id
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

    /// The changes of leadership and membership from now on, in order (bounded by
    /// `NodeConfig::event_queue`: a receiver that falls further behind gets
    /// [`broadcast::error::RecvError::Lagged`] and then the latest; the status has the current
    /// state at any time).
    pub fn events(&self) -> broadcast::Receiver<NodeEvent> {
        self.events.subscribe()
    }

    /// The members' addresses and metadata, as applied from the log.
    pub fn members(&self) -> BTreeMap<NodeId, Member> {
        self.members.borrow().members.clone()
    }

    /// Counters since start.
    pub fn metrics(&self) -> NodeMetrics {
        self.metrics.snapshot(self.pending())
    }

    /// Every metric of this node (counters, gauges and latency histograms, each sample labelled
    /// `node="<id>"`) in the Prometheus text format, ready to serve on `/metrics` (see
    /// `raft_grpc::serve_metrics`).
    pub fn prometheus_metrics(&self) -> String {
        self.metrics.encode(self.pending())
    }

    /// Proposals and reads waiting for their answer on this node.
    fn pending(&self) -> u64 {
        self.pending.load(Ordering::Relaxed) as u64
    }

    /// A permit for one more request waiting on this node.
    fn permit(&self) -> Result<Permit<'_>, NodeError> {
        let max = self.cfg.max_pending_requests;
        if self.pending.fetch_add(1, Ordering::Relaxed) >= max {
            self.pending.fetch_sub(1, Ordering::Relaxed);
            return Err(NodeError::TooBusy(format!(
                "{max} requests pending (max_pending_requests)"
            )));
        }
        Ok(Permit(&self.pending))
    }

    async fn send(&self, req: Request) -> Result<(), NodeError> {
        self.requests.send(req).await.map_err(|_| NodeError::ShuttingDown)
    }

    /// Sends `make(reply)` and waits for the answer up to `timeout`.
    async fn ask<R>(
        &self,
        timeout: Duration,
        make: impl FnOnce(Reply<R>) -> Request,
    ) -> Result<R, NodeError> {
        let (reply, rx) = oneshot::channel();
        self.send(make(reply)).await?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(NodeError::ShuttingDown),
            Err(_) => Err(NodeError::Timeout),
        }
    }

    /// Proposes an entry and waits until this node applied it; answers with its result. The
    /// applier answers [`NodeError::Timeout`] once `proposal_timeout` has passed (checked on
    /// each tick), so no timer is armed per proposal.
    async fn propose_entry(
        &self,
        make: impl FnOnce(Origin) -> Envelope,
    ) -> Result<Bytes, NodeError> {
        let _permit = self.permit()?;
        let (boot, next) = &*self.proposals;
        let proposal = boot | (next.fetch_add(1, Ordering::Relaxed) & 0xFFFF_FFFF);
        let data = make(Origin { node: self.id(), proposal }).encode();
        let (reply, rx) = oneshot::channel();
        self.send(Request::Propose { proposal, data, reply }).await?;
        rx.await.unwrap_or(Err(NodeError::ShuttingDown))
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
        let _permit = self.permit()?;
        let query = query.into();
        self.ask(self.cfg.read_timeout, |reply| Request::Read {
            consistency,
            read: Read::Query { query, reply },
        })
        .await
    }

    /// A linearizable barrier: returns once this node has applied everything committed before
    /// the call (the leader confirms its leadership with a quorum, as for a linearizable read),
    /// with the index applied here. Reads of the application's own view of the state machine
    /// after it see every write acknowledged before the call.
    pub async fn read_barrier(&self) -> Result<Index, NodeError> {
        let _permit = self.permit()?;
        self.ask(self.cfg.read_timeout, |reply| Request::Read {
            consistency: ReadConsistency::Linearizable,
            read: Read::Barrier { reply },
        })
        .await
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
    /// with [`Node::promote`] once it has caught up, or use [`Node::add_voter`].
    pub async fn add_learner(
        &self,
        id: NodeId,
        addr: impl Into<String>,
        meta: impl Into<Bytes>,
    ) -> Result<ConfState, NodeError> {
        self.set_member(id, addr, meta).await?;
        let conf = self.status().conf_state;
        if conf.learners.contains(&id) || conf.voters.contains(&id) {
            return Ok(conf);
        }
        self.change_membership(ConfChange {
            ops: vec![ConfChangeOp::AddLearner(id)],
            ..Default::default()
        })
        .await
    }

    /// Adds a voter the safe way, in one call: records its address, adds it as a learner, and
    /// returns once the leader has promoted it (the leader does so as soon as the learner has
    /// caught up, so a new node never weakens the quorum while it copies the log). Waits up to
    /// `proposal_timeout` for the promotion; on [`NodeError::Timeout`] the promotion still
    /// happens later (it is recorded in the log, and any later leader carries it out).
    pub async fn add_voter(
        &self,
        id: NodeId,
        addr: impl Into<String>,
        meta: impl Into<Bytes>,
    ) -> Result<ConfState, NodeError> {
        self.add_voter_later(id, addr, meta).await?;
        let status =
            self.wait_for(self.cfg.proposal_timeout, |s| s.conf_state.voters.contains(&id)).await?;
        Ok(status.conf_state)
    }

    /// [`Node::add_voter`] without waiting for the promotion: returns once the learner is in
    /// the configuration and its promotion is recorded (what etcd's `member add` needs, since
    /// the new member starts only after that call returns). Watch [`Node::events`] or the
    /// status for the promotion.
    pub async fn add_voter_later(
        &self,
        id: NodeId,
        addr: impl Into<String>,
        meta: impl Into<Bytes>,
    ) -> Result<ConfState, NodeError> {
        let conf = self.add_learner(id, addr, meta).await?;
        if conf.voters.contains(&id) {
            return Ok(conf);
        }
        self.propose_entry(|origin| Envelope::PromoteLater { origin, id }).await?;
        Ok(self.status().conf_state)
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

    /// Proposes any membership change (several at once go through a joint configuration) and
    /// waits until it is in effect here (for an automatic joint change: until the joint
    /// configuration was left); returns the resulting membership. A refusal by the leader (a
    /// change already pending, a learner not caught up) is answered with its error.
    pub async fn change_membership(&self, change: ConfChange) -> Result<ConfState, NodeError> {
        self.ask(self.cfg.proposal_timeout, |reply| Request::ConfChange { change, reply }).await
    }

    /// Transfers leadership to `to` and waits until this node sees it lead.
    pub async fn transfer_leadership(&self, to: NodeId) -> Result<(), NodeError> {
        self.ask(self.cfg.proposal_timeout, |reply| Request::Transfer { to, reply }).await
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
                    p.ticks_since_heard <= u64::from(self.cfg.raft.election_timeout_ticks)
                })
                .max_by_key(|p| (p.match_index, std::cmp::Reverse(p.ticks_since_heard)))
                .map(|p| p.id);
            if let Some(to) = target {
                let moved = self.transfer_leadership(to);
                // The core abandons a transfer after an election timeout; wait a little longer.
                let election = self.cfg.tick_interval * self.cfg.raft.election_timeout_ticks;
                let timeout = self.cfg.shutdown_transfer_timeout.min(2 * election);
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
