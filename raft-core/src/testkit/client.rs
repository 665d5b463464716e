//! Simulated clients: each has at most one outstanding key-value operation, retries it on errors
//! and timeouts, and records every operation in a linearizability [`History`].
//!
//! A `Put` (unique value) and a `Get` through the log are proposals carrying
//! `(client, seq, op)`; the other `Get`s are linearizable reads through `read_index`, served from
//! the node's state machine once its applied index reaches the read index. An operation completes
//! when a node the client sent it to applies it (or serves the read). After an error or a timeout
//! the client retries the *same* `(client, seq)` on another node, up to a bound; then it gives up
//! and the operation stays pending (unknown outcome) in the history.

use std::collections::BTreeSet;

use bytes::Bytes;

use super::kv::{Command, ReadCtx};
use super::linearizability::{History, KvOp, KvResult, OpId};
use super::rng::Rng;
use crate::types::NodeId;

/// Settings of the client workload. Times are in simulated time units.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadConfig {
    /// Number of clients (ids `1..=clients`).
    pub clients: usize,
    /// Keys are `0..keys`.
    pub keys: u64,
    /// Clients start operations by themselves during timed steps (`false`: only through
    /// [`crate::testkit::sim::Sim::client_op`]).
    pub auto: bool,
    /// Share of `Get`s among automatic operations, per mille.
    pub get_permille: u32,
    /// Time a client waits for an answer before retrying elsewhere.
    pub op_timeout: u64,
    /// Attempts per operation before the client gives up.
    pub max_attempts: u32,
    /// Smallest pause between two operations of a client.
    pub think_min: u64,
    /// Largest pause between two operations of a client.
    pub think_max: u64,
    /// Pause before retrying after an error.
    pub retry_backoff: u64,
    /// Share of attempts sent to a random node rather than the client's guess of the leader,
    /// per mille (reads on followers and on deposed leaders, forwarded proposals).
    pub random_node_permille: u32,
}

impl Default for WorkloadConfig {
    fn default() -> WorkloadConfig {
        WorkloadConfig {
            clients: 3,
            keys: 4,
            auto: true,
            get_permille: 500,
            op_timeout: 40_000,
            max_attempts: 3,
            think_min: 200,
            think_max: 3_000,
            retry_backoff: 1_000,
            random_node_permille: 100,
        }
    }
}

/// How a client operation travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// A `Put` proposed through the log.
    Put,
    /// A `Get` proposed through the log.
    LogGet,
    /// A `Get` confirmed with `read_index` and served from the node's state machine.
    ReadIndexGet,
}

/// What a client asks a node to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// `Raft::propose` with this payload.
    Propose(Bytes),
    /// `Raft::read_index` with this context.
    ReadIndex(Bytes),
}

/// One attempt of a client operation, for the simulator to submit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    /// Client id.
    pub client: u64,
    /// Node to submit to.
    pub node: NodeId,
    /// What to submit.
    pub request: Request,
}

/// Counters of the workload.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkloadCounters {
    /// Operations invoked.
    pub invoked: u64,
    /// Operations completed with an answer.
    pub completed: u64,
    /// Operations given up (unknown outcome).
    pub gave_up: u64,
    /// Attempts submitted.
    pub attempts: u64,
    /// Attempts refused synchronously (not leader, node down, limits…).
    pub refused: u64,
    /// Read attempts the node gave up later (it stopped leading, or the term changed).
    pub reads_aborted: u64,
    /// Proposal attempts the node forwarded and heard refused later (`Ready::refused`).
    pub proposals_refused: u64,
    /// Attempts repeated after a refusal or a timeout.
    pub retries: u64,
}

#[derive(Clone, Debug)]
struct Outstanding {
    seq: u64,
    op: KvOp,
    kind: OpKind,
    hist: OpId,
    attempts: u32,
    nodes: BTreeSet<NodeId>,
    /// The last attempt was refused (rather than left unanswered).
    refused: bool,
}

#[derive(Clone, Debug)]
struct Client {
    id: u64,
    seq: u64,
    /// When the client next acts: starts an operation, or retries / gives up the outstanding one.
    wake_at: u64,
    leader_guess: Option<NodeId>,
    outstanding: Option<Outstanding>,
    next_get_via_log: bool,
}

/// The clients, their history and the writes acknowledged to them.
#[derive(Clone, Debug)]
pub struct Workload {
    cfg: WorkloadConfig,
    rng: Rng,
    nodes: Vec<NodeId>,
    clients: Vec<Client>,
    history: History,
    acked_puts: Vec<(u64, u64)>,
    issuing: bool,
    counters: WorkloadCounters,
}

impl Workload {
    /// Clients for a cluster of `nodes`.
    pub fn new(cfg: WorkloadConfig, nodes: Vec<NodeId>, mut rng: Rng) -> Workload {
        let clients = (1..=cfg.clients as u64)
            .map(|id| Client {
                id,
                seq: 0,
                wake_at: rng.range(cfg.think_min, cfg.think_max),
                leader_guess: None,
                outstanding: None,
                next_get_via_log: id % 2 == 0,
            })
            .collect();
        let issuing = cfg.auto;
        Workload {
            cfg,
            rng,
            nodes,
            clients,
            history: History::new(),
            acked_puts: Vec::new(),
            issuing,
            counters: WorkloadCounters::default(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &WorkloadConfig {
        &self.cfg
    }

    /// The history of all client operations.
    pub fn history(&self) -> &History {
        &self.history
    }

    /// `(client, seq)` of every `Put` acknowledged to its client.
    pub fn acked_puts(&self) -> &[(u64, u64)] {
        &self.acked_puts
    }

    /// Counters so far.
    pub fn counters(&self) -> &WorkloadCounters {
        &self.counters
    }

    /// Whether clients start new operations by themselves.
    pub fn set_issuing(&mut self, on: bool) {
        self.issuing = on && self.cfg.auto;
    }

    /// Whether every client is idle (no outstanding operation).
    pub fn all_idle(&self) -> bool {
        self.clients.iter().all(|c| c.outstanding.is_none())
    }

    /// When the next client wants to act, if any.
    pub fn next_due(&self) -> Option<u64> {
        self.clients
            .iter()
            .filter(|c| c.outstanding.is_some() || self.issuing)
            .map(|c| c.wake_at)
            .min()
    }

    /// Lets the earliest due client act at `now`: start an operation, retry one or give up.
    pub fn fire(&mut self, now: u64) -> Option<Attempt> {
        let due = self.next_due()?;
        if due > now {
            return None;
        }
        let ci = self
            .clients
            .iter()
            .position(|c| c.wake_at == due && (c.outstanding.is_some() || self.issuing))?;
        if self.clients[ci].outstanding.is_some() {
            return self.retry_or_give_up(ci, now);
        }
        let kind = if self.rng.chance(self.cfg.get_permille) {
            let c = &mut self.clients[ci];
            c.next_get_via_log = !c.next_get_via_log;
            if c.next_get_via_log { OpKind::LogGet } else { OpKind::ReadIndexGet }
        } else {
            OpKind::Put
        };
        let key = self.rng.below(self.cfg.keys.max(1));
        Some(self.start(ci, kind, key, None, now))
    }

    /// Starts an operation of client index `ci` (`0..clients`), giving up its outstanding one
    /// first. `node`: where to send it (`None`: the client's guess of the leader, or random).
    pub fn start(
        &mut self,
        ci: usize,
        kind: OpKind,
        key: u64,
        node: Option<NodeId>,
        now: u64,
    ) -> Attempt {
        if self.clients[ci].outstanding.is_some() {
            self.give_up(ci, now);
        }
        let c = &mut self.clients[ci];
        c.seq += 1;
        let op = match kind {
            OpKind::Put => KvOp::Put { key, value: (c.id << 40) | c.seq },
            OpKind::LogGet | OpKind::ReadIndexGet => KvOp::Get { key },
        };
        let hist = self.history.invoke(c.id, op.clone(), now);
        self.counters.invoked += 1;
        let o = Outstanding {
            seq: c.seq,
            op,
            kind,
            hist,
            attempts: 0,
            nodes: BTreeSet::new(),
            refused: false,
        };
        c.outstanding = Some(o);
        self.attempt(ci, node, now)
    }

    fn attempt(&mut self, ci: usize, node: Option<NodeId>, now: u64) -> Attempt {
        let guess = self.clients[ci].leader_guess;
        let guess = guess.filter(|_| !self.rng.chance(self.cfg.random_node_permille));
        let node = node.or(guess).unwrap_or_else(|| self.nodes[self.rng.index(self.nodes.len())]);
        self.counters.attempts += 1;
        let c = &mut self.clients[ci];
        c.wake_at = now + self.cfg.op_timeout;
        let o = c.outstanding.as_mut().expect("attempt without an outstanding operation");
        o.attempts += 1;
        o.nodes.insert(node);
        let request = match o.kind {
            OpKind::Put | OpKind::LogGet => {
                let cmd = Command { client: c.id, seq: o.seq, op: o.op.clone() };
                Request::Propose(cmd.encode())
            }
            OpKind::ReadIndexGet => {
                let key = match o.op {
                    KvOp::Get { key } | KvOp::Put { key, .. } => key,
                };
                let ctx = ReadCtx { client: c.id, seq: o.seq, key, attempt: o.attempts };
                Request::ReadIndex(ctx.encode())
            }
        };
        Attempt { client: c.id, node, request }
    }

    fn retry_or_give_up(&mut self, ci: usize, now: u64) -> Option<Attempt> {
        let attempts = self.clients[ci].outstanding.as_ref().map_or(0, |o| o.attempts);
        if attempts >= self.cfg.max_attempts {
            self.give_up(ci, now);
            return None;
        }
        self.counters.retries += 1;
        let c = &mut self.clients[ci];
        if let Some(o) = c.outstanding.as_mut()
            && !std::mem::take(&mut o.refused)
        {
            // No answer: the guessed leader may be gone; try elsewhere.
            c.leader_guess = None;
        }
        Some(self.attempt(ci, None, now))
    }

    fn give_up(&mut self, ci: usize, now: u64) {
        let c = &mut self.clients[ci];
        if c.outstanding.take().is_some() {
            self.counters.gave_up += 1;
        }
        c.leader_guess = None;
        c.wake_at = now + self.rng.range(self.cfg.think_min, self.cfg.think_max);
    }

    fn client_index(&self, client: u64) -> Option<usize> {
        let ci = usize::try_from(client).ok()?.checked_sub(1)?;
        (ci < self.clients.len()).then_some(ci)
    }

    /// The attempt was refused at once by `node` (`leader_hint`: the leader it named, if any).
    pub fn on_refused(&mut self, client: u64, leader_hint: Option<NodeId>, now: u64) {
        let Some(ci) = self.client_index(client) else {
            return;
        };
        self.counters.refused += 1;
        let c = &mut self.clients[ci];
        c.leader_guess = leader_hint;
        c.wake_at = now + self.cfg.retry_backoff;
        if let Some(o) = c.outstanding.as_mut() {
            o.refused = true;
        }
    }

    /// Node `node` applied command `(client, seq)` with `result` (fresh or cached).
    pub fn on_applied(&mut self, node: NodeId, client: u64, seq: u64, result: KvResult, now: u64) {
        let Some(ci) = self.client_index(client) else {
            return;
        };
        let c = &self.clients[ci];
        let waiting = c.outstanding.as_ref().is_some_and(|o| {
            o.seq == seq && o.kind != OpKind::ReadIndexGet && o.nodes.contains(&node)
        });
        if waiting {
            self.complete(ci, node, result, now);
        }
    }

    /// Node `node` served the read `ctx` with `value`.
    pub fn on_read(&mut self, node: NodeId, ctx: ReadCtx, value: Option<u64>, now: u64) {
        let Some(ci) = self.client_index(ctx.client) else {
            return;
        };
        let c = &self.clients[ci];
        let waiting = c.outstanding.as_ref().is_some_and(|o| {
            o.seq == ctx.seq && o.kind == OpKind::ReadIndexGet && o.nodes.contains(&node)
        });
        if waiting {
            self.complete(ci, node, KvResult::Get(value), now);
        }
    }

    /// Node `node` gave up the read `ctx` (it stopped leading, or the term changed before the
    /// leader answered): if the client still waits for that attempt, it retries after the usual
    /// backoff, towards `leader_hint`.
    pub fn on_read_aborted(
        &mut self,
        node: NodeId,
        ctx: ReadCtx,
        leader_hint: Option<NodeId>,
        now: u64,
    ) {
        let Some(ci) = self.client_index(ctx.client) else {
            return;
        };
        let current = self.clients[ci].outstanding.as_ref().is_some_and(|o| {
            o.seq == ctx.seq
                && o.attempts == ctx.attempt
                && o.kind == OpKind::ReadIndexGet
                && o.nodes.contains(&node)
        });
        if current {
            self.counters.reads_aborted += 1;
            self.on_refused(ctx.client, leader_hint, now);
        }
    }

    /// Node `node` forwarded command `(client, seq)` and heard it refused (`Ready::refused`): if
    /// the client still waits for it there, it retries after the usual backoff, towards
    /// `leader_hint`. The command may still be in the log (a duplicated copy of the forwarded
    /// message): the retry is of the same `(client, seq)`, which takes effect at most once.
    pub fn on_proposal_refused(
        &mut self,
        node: NodeId,
        client: u64,
        seq: u64,
        leader_hint: Option<NodeId>,
        now: u64,
    ) {
        let Some(ci) = self.client_index(client) else {
            return;
        };
        let current = self.clients[ci].outstanding.as_ref().is_some_and(|o| {
            o.seq == seq && o.kind != OpKind::ReadIndexGet && o.nodes.contains(&node)
        });
        if current {
            self.counters.proposals_refused += 1;
            self.on_refused(client, leader_hint, now);
        }
    }

    fn complete(&mut self, ci: usize, node: NodeId, result: KvResult, now: u64) {
        let c = &mut self.clients[ci];
        let Some(o) = c.outstanding.take() else {
            return;
        };
        if matches!(o.op, KvOp::Put { .. }) {
            self.acked_puts.push((c.id, o.seq));
        }
        self.history.complete(o.hist, result, now);
        self.counters.completed += 1;
        c.leader_guess = Some(node);
        c.wake_at = now + self.rng.range(self.cfg.think_min, self.cfg.think_max);
    }
}
