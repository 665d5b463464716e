//! Fuzzing entry points (feature `testkit`).
//!
//! The targets in the repository's `fuzz/` crate are one-line shims over these functions, so the
//! same code also runs in this module's unit tests and in CI, without a nightly toolchain.
//!
//! [`step_messages`] decodes a byte string into a sequence of actions on one node (id 1 of voters
//! `[1, 2, 3]`) and drives it the way a real driver would: after every action it drains
//! [`Raft::ready`], persists entries and hard state into a [`MemStorage`], acknowledges them with
//! [`Raft::on_persisted`], applies committed entries and acknowledges them with [`Raft::on_applied`].
//! Errors returned by the API are expected (the input is mostly nonsense); a panic, or a broken
//! invariant checked after each action, is a finding.
//!
//! [`sim_schedule`] decodes a byte string into a schedule of cluster operations (deliver, drop,
//! duplicate, tick, persist, crash, restart, partition, client requests, …) for the deterministic
//! simulator of [`crate::testkit::sim`], which checks the safety invariants after every operation
//! and liveness and linearizability once the network is healed.
//!
//! Set `RAFT_FUZZ_TRACE=1` when replaying a crash (`cargo +nightly fuzz run <target> <artifact>`)
//! to print the decoded actions that led to it.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::config::{Config, ReadMode};
use crate::error::Error;
use crate::raft::{Raft, Ready, Status};
use crate::storage::{MemStorage, Storage};
use crate::testkit::schedule::{SimOp, run_schedule};
use crate::types::{
    ConfChange, ConfChangeOp, ConfChangeTransition, Entry, EntryKind, Forwarded, HardState, Index,
    Message, MessageBody, NodeId, Role, Term,
};

/// The node under test.
const ID: NodeId = 1;
/// The cluster it believes in.
const VOTERS: [NodeId; 3] = [1, 2, 3];
/// Bound on the actions decoded from one input.
const MAX_ACTIONS: usize = 2048;
/// Bound on the ticks of one tick action.
const MAX_TICKS_PER_ACTION: u8 = 32;
/// Bound on the messages remembered for the peers to answer.
const MAX_OUTBOX: usize = 64;
/// Bound on the batches waiting for persistence in asynchronous mode; the driver persists the
/// oldest one when more are handed out (back-pressure).
const MAX_PENDING_BATCHES: usize = 8;
/// Bound on the entries of one decoded append message.
const MAX_ENTRIES_PER_APPEND: u8 = 8;
/// Bound on one decoded payload (proposal data, read context, entry data).
const MAX_PAYLOAD_BYTES: u8 = 16;
/// Bound on proposals of exactly the size limit per input (they are expensive with default limits).
const MAX_BIG_PROPOSALS: u32 = 4;
/// Bound on `ready()` rounds after one action; more means the core never settles.
const MAX_READY_ROUNDS: usize = 1024;

/// Runs the node through the actions decoded from `data`, checking invariants after each one.
///
/// Panics on a bug in the core (or on a broken invariant); returns normally otherwise, whatever
/// the input.
pub fn step_messages(data: &[u8]) {
    run(data);
}

/// Runs a three-node simulated cluster through the schedule decoded from `data` (see
/// [`SimOp::decode_all`]) and panics with the violation if a safety, liveness or linearizability
/// check fails.
pub fn sim_schedule(data: &[u8]) {
    let ops = SimOp::decode_all(data);
    if let Err(v) = run_schedule(&ops) {
        if std::env::var_os("RAFT_FUZZ_TRACE").is_some() {
            for (i, op) in ops.iter().enumerate() {
                eprintln!("op {i}: {op:?}");
            }
        }
        panic!("{v} (after a schedule of {} operations)", ops.len());
    }
}

/// [`step_messages`], returning the node's final status (for this module's tests).
fn run(data: &[u8]) -> Status {
    let mut input = Cursor::new(data);
    let (config, async_persist) = decode_config(&mut input);
    let mut h = Harness::new(config, async_persist);
    for _ in 0..MAX_ACTIONS {
        if input.is_empty() {
            break;
        }
        let action = h.decode_action(&mut input);
        h.perform(action);
    }
    h.persist_all();
    h.check_status();
    h.raft.status()
}

/// The first byte chooses the driver's persistence mode and a variant of `Config::new(1)`.
fn decode_config(input: &mut Cursor<'_>) -> (Config, bool) {
    let flags = input.u8();
    let mut c = Config::new(ID);
    c.pre_vote = flags & 0x02 == 0;
    c.check_quorum = flags & 0x04 == 0;
    if flags & 0x08 != 0 {
        c.read_mode = ReadMode::Lease;
    }
    if flags & 0x10 != 0 {
        c.max_inflight_msgs = 2;
        c.max_inflight_bytes = 512;
        c.max_append_bytes = 128;
        c.max_append_entries = 4;
        c.max_uncommitted_bytes = 1024;
        c.max_proposal_bytes = 64;
        c.max_apply_bytes = 96;
        c.max_pending_reads = 4;
    }
    c.forward_proposals = flags & 0x20 == 0;
    if flags & 0x40 != 0 {
        c.election_timeout_ticks = 3;
        c.heartbeat_interval_ticks = 1;
    }
    if c.validate().is_err() {
        c = Config::new(ID);
    }
    (c, flags & 0x01 != 0)
}

/// One step of the driver, decoded from the input.
#[derive(Debug)]
enum Action {
    Tick(u8),
    Campaign,
    Propose(Bytes),
    ReadIndex(Bytes),
    /// A membership change asked of the node (proposed as leader, forwarded as follower).
    ConfChange(ConfChange),
    /// A leadership transfer asked of the node.
    Transfer(NodeId),
    /// Deliver one arbitrary message.
    Step(Message),
    /// Deliver the peers' answers to messages the node sent.
    Reply(Vec<Message>),
    /// Asynchronous mode: persist (and acknowledge) this many of the oldest pending batches.
    Persist(u8),
    /// Crash and restart from what was persisted and applied.
    Restart,
}

/// A tiny decoder over the fuzzer's bytes. Reads past the end yield zeros.
struct Cursor<'a> {
    data: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn new(data: &'a [u8]) -> Self {
        Cursor { data }
    }

    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }

    /// Any `u64`, biased towards small values and values near `u64::MAX`.
    fn wide(&mut self) -> u64 {
        let tag = self.u8();
        match tag {
            0x00..=0x7f => u64::from(tag & 0x0f),
            0x80..=0xbf => u64::from(self.u8()),
            0xc0..=0xdf => u64::MAX - u64::from(tag & 0x0f),
            _ => {
                let mut b = [0u8; 8];
                let t = self.take(8);
                b[..t.len()].copy_from_slice(t);
                u64::from_le_bytes(b)
            }
        }
    }

    /// A value near `base` (a term or index the node knows), sometimes anything at all.
    fn near(&mut self, base: u64) -> u64 {
        match self.u8() % 8 {
            0..=2 => base,
            3 => base.saturating_add(1),
            4 => base.saturating_sub(1),
            5 => base.saturating_add(u64::from(self.u8() % 8)),
            6 => base.saturating_sub(u64::from(self.u8() % 8)),
            _ => self.wide(),
        }
    }

    /// A node id: mostly a peer, sometimes the node itself, 0 ("none") or a stranger.
    fn node(&mut self) -> NodeId {
        match self.u8() % 8 {
            0..=2 => 2,
            3..=5 => 3,
            6 => ID,
            _ => self.wide(),
        }
    }

    fn payload(&mut self) -> Bytes {
        let n = self.u8() % (MAX_PAYLOAD_BYTES + 1);
        Bytes::copy_from_slice(self.take(usize::from(n)))
    }
}

/// The node under test with a model driver, a model of its peers and the checks.
struct Harness {
    config: Config,
    async_persist: bool,
    storage: MemStorage,
    raft: Raft<MemStorage>,
    /// Batches handed out and not yet persisted (asynchronous mode), oldest first.
    pending: VecDeque<Ready>,
    /// Messages the node sent that a peer may answer.
    outbox: VecDeque<Message>,
    /// Last index applied and acknowledged, and the term of that entry.
    applied: (Index, Term),
    /// Number of the last batch handed out.
    last_ready_number: Option<u64>,
    /// Last hard state handed out for persistence.
    last_hard_state: HardState,
    /// Status after the previous action, for monotonicity checks.
    last_status: Status,
    /// Highest heartbeat round the node sent, so that peers can answer near it.
    last_round: u64,
    big_proposals: u32,
    /// Actions performed so far, printed on panic when `RAFT_FUZZ_TRACE` is set.
    trace: Vec<Action>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        if std::thread::panicking() && std::env::var_os("RAFT_FUZZ_TRACE").is_some() {
            eprintln!("config: {:?}\nasync persistence: {}", self.config, self.async_persist);
            for (i, a) in self.trace.iter().enumerate() {
                eprintln!("action {i}: {a:?}");
            }
        }
    }
}

impl Harness {
    fn new(config: Config, async_persist: bool) -> Harness {
        let storage = MemStorage::new_with_voters(&VOTERS);
        let raft = Raft::new(config.clone(), storage.clone())
            .expect("a fresh node on an empty MemStorage must start");
        let last_status = raft.status();
        let mut h = Harness {
            config,
            async_persist,
            storage,
            raft,
            pending: VecDeque::new(),
            outbox: VecDeque::new(),
            applied: (0, 0),
            last_ready_number: None,
            last_hard_state: HardState::default(),
            last_status,
            last_round: 0,
            big_proposals: 0,
            trace: Vec::new(),
        };
        h.check_status();
        h
    }

    fn decode_action(&mut self, input: &mut Cursor<'_>) -> Action {
        match input.u8() % 18 {
            0 => Action::Tick(1),
            1 => Action::Tick(input.u8() % (MAX_TICKS_PER_ACTION + 1)),
            2 => Action::Campaign,
            3 => Action::Propose(self.decode_proposal(input)),
            4 => Action::ReadIndex(input.payload()),
            5..=9 => Action::Step(self.decode_message(input)),
            10 | 11 => {
                let accept = !input.u8().is_multiple_of(4);
                let pick = usize::from(input.u8());
                let reply = match self.outbox.len() {
                    0 => None,
                    n => self.outbox.remove(pick % n).and_then(|m| self.reply_to(&m, accept)),
                };
                Action::Reply(reply.into_iter().collect())
            }
            12 | 13 => {
                let accept = !input.u8().is_multiple_of(4);
                let sent: Vec<Message> = self.outbox.drain(..).collect();
                Action::Reply(sent.iter().filter_map(|m| self.reply_to(m, accept)).collect())
            }
            14 => Action::Persist(input.u8() % 4 + 1),
            15 => Action::Restart,
            16 => Action::ConfChange(decode_conf_change(input)),
            _ => Action::Transfer(input.node()),
        }
    }

    fn decode_proposal(&mut self, input: &mut Cursor<'_>) -> Bytes {
        if input.u8().is_multiple_of(16) && self.big_proposals < MAX_BIG_PROPOSALS {
            self.big_proposals += 1;
            let limit = usize::try_from(self.config.max_proposal_bytes).unwrap_or(usize::MAX);
            let n = limit.saturating_add(usize::from(input.bool()));
            return Bytes::from(vec![0u8; n]);
        }
        input.payload()
    }

    fn decode_message(&self, input: &mut Cursor<'_>) -> Message {
        let s = self.raft.status();
        let from = input.node();
        let to = match input.u8() % 8 {
            0 => input.node(),
            _ => ID,
        };
        let term = input.near(s.term);
        let last_term = self.raft.log_term(s.last_index).unwrap_or(0);
        let body = match input.u8() % 12 {
            0 => {
                let prev_log_index = input.near(s.last_index);
                let prev_log_term = match input.u8() % 4 {
                    0 | 1 => self.raft.log_term(prev_log_index).unwrap_or(0),
                    _ => input.near(term),
                };
                let entries = decode_entries(input, prev_log_index, term);
                let leader_commit = input.near(s.commit_index);
                MessageBody::Append { prev_log_index, prev_log_term, entries, leader_commit }
            }
            1 => {
                let index = input.near(s.last_index);
                MessageBody::AppendResponse {
                    reject: input.bool(),
                    index,
                    hint_index: input.near(index),
                    hint_term: input.near(term),
                }
            }
            2 | 3 => MessageBody::Vote {
                pre_vote: input.bool(),
                last_log_index: input.near(s.last_index),
                last_log_term: input.near(last_term),
                force: input.u8().is_multiple_of(8),
            },
            4 => MessageBody::VoteResponse {
                pre_vote: input.bool(),
                granted: input.bool(),
                commit_index: input.near(s.last_index),
                commit_term: input.near(last_term).min(term),
            },
            5 => MessageBody::Heartbeat { commit: input.near(s.commit_index), round: input.wide() },
            6 => MessageBody::HeartbeatResponse { round: input.near(self.last_round) },
            7 => {
                let n = input.u8() % 4;
                MessageBody::Propose { data: (0..n).map(|_| input.payload()).collect() }
            }
            8 => MessageBody::ReadIndex { ctx: input.payload() },
            9 => MessageBody::ReadIndexResponse {
                ctx: input.payload(),
                index: input.near(s.commit_index),
            },
            10 if input.u8().is_multiple_of(8) => MessageBody::Removed,
            10 => MessageBody::TimeoutNow,
            _ => match input.u8() % 8 {
                0 => MessageBody::ProposeConfChange { change: decode_conf_change(input) },
                1 => MessageBody::TransferLeader { to: input.node() },
                2 => MessageBody::Refused {
                    request: decode_forwarded(input),
                    error: decode_refusal(input),
                },
                _ => MessageBody::HeartbeatResponse { round: self.last_round },
            },
        };
        Message { from, to, term, body }
    }

    /// What a well-behaved peer would answer to `m`, granting or accepting when `accept`.
    fn reply_to(&self, m: &Message, accept: bool) -> Option<Message> {
        if m.to == ID || !VOTERS.contains(&m.to) {
            return None;
        }
        let body = match &m.body {
            MessageBody::Vote { pre_vote, .. } => MessageBody::VoteResponse {
                pre_vote: *pre_vote,
                granted: accept,
                commit_index: 0,
                commit_term: 0,
            },
            MessageBody::Append { prev_log_index, entries, .. } => {
                if accept {
                    let index = prev_log_index.saturating_add(entries.len() as u64);
                    MessageBody::AppendResponse {
                        reject: false,
                        index,
                        hint_index: 0,
                        hint_term: 0,
                    }
                } else {
                    MessageBody::AppendResponse {
                        reject: true,
                        index: *prev_log_index,
                        hint_index: prev_log_index.saturating_sub(1),
                        hint_term: 0,
                    }
                }
            }
            MessageBody::Heartbeat { round, .. } => {
                MessageBody::HeartbeatResponse { round: *round }
            }
            MessageBody::ReadIndex { ctx } => MessageBody::ReadIndexResponse {
                ctx: ctx.clone(),
                index: self.raft.status().commit_index,
            },
            _ => return None,
        };
        Some(Message { from: m.to, to: ID, term: m.term, body })
    }

    fn perform(&mut self, action: Action) {
        match &action {
            Action::Tick(n) => {
                for _ in 0..*n {
                    self.raft.tick();
                    self.drain();
                }
            }
            Action::Campaign => self.raft.campaign(),
            Action::Propose(data) => {
                let _ = self.raft.propose(data.clone());
            }
            Action::ReadIndex(ctx) => {
                let _ = self.raft.read_index(ctx.clone());
            }
            Action::ConfChange(cc) => {
                let _ = self.raft.propose_conf_change(cc.clone());
            }
            Action::Transfer(to) => {
                let _ = self.raft.transfer_leader(*to);
            }
            Action::Step(m) => {
                let _ = self.raft.step(m.clone());
            }
            Action::Reply(ms) => {
                for m in ms {
                    let _ = self.raft.step(m.clone());
                    self.drain();
                }
            }
            Action::Persist(n) => {
                for _ in 0..*n {
                    self.persist_oldest();
                    self.drain();
                }
            }
            Action::Restart => self.restart(),
        }
        self.trace.push(action);
        self.drain();
        self.check_status();
    }

    /// Takes every batch the node has, as a driver would.
    fn drain(&mut self) {
        let mut rounds = 0;
        while self.raft.has_ready() {
            rounds += 1;
            assert!(
                rounds <= MAX_READY_ROUNDS,
                "node {ID}: ready() still has work after {MAX_READY_ROUNDS} rounds (term {})",
                self.raft.term()
            );
            let mut rd = self.raft.ready();
            self.check_ready(&rd);
            let messages = std::mem::take(&mut rd.messages);
            self.send(messages);
            let committed = std::mem::take(&mut rd.committed_entries);
            self.apply(&committed);
            self.pending.push_back(rd);
            if !self.async_persist || self.pending.len() > MAX_PENDING_BATCHES {
                self.persist_oldest();
            }
        }
    }

    /// Persists the oldest pending batch, acknowledges it and sends what waited for it.
    fn persist_oldest(&mut self) {
        let Some(rd) = self.pending.pop_front() else {
            return;
        };
        if let Err(e) = self.storage.append(&rd.entries) {
            panic!("node {ID}: ready #{} has entries storage cannot append: {e}", rd.number);
        }
        if let Some(hs) = rd.hard_state {
            self.storage.set_hard_state(hs);
        }
        if let Err(e) = self.raft.on_persisted(rd.number) {
            panic!("node {ID}: on_persisted(#{}) refused in order: {e}", rd.number);
        }
        self.send(rd.persisted_messages);
    }

    fn persist_all(&mut self) {
        while !self.pending.is_empty() {
            self.persist_oldest();
            self.drain();
        }
    }

    fn send(&mut self, messages: Vec<Message>) {
        for m in messages {
            assert_eq!(m.from, ID, "node {ID} sent a message from someone else: {m:?}");
            assert!(m.to != ID && m.to != 0, "node {ID} sent a message to {}: {m:?}", m.to);
            if let MessageBody::Heartbeat { round, .. } = m.body {
                self.last_round = self.last_round.max(round);
            }
            if self.outbox.len() == MAX_OUTBOX {
                self.outbox.pop_front();
            }
            self.outbox.push_back(m);
        }
    }

    fn apply(&mut self, committed: &[Entry]) {
        let Some(last) = committed.last() else { return };
        for e in committed {
            assert_eq!(
                e.index,
                self.applied.0 + 1,
                "node {ID}: committed entries handed out out of order (term {})",
                self.raft.term()
            );
            assert_eq!(
                self.raft.log_term(e.index),
                Some(e.term),
                "node {ID}: committed entry {} (term {}) is not in the node's log",
                e.index,
                e.term
            );
            self.applied = (e.index, e.term);
        }
        if let Err(e) = self.raft.on_applied(last.index) {
            panic!("node {ID}: on_applied({}) refused after handing it out: {e}", last.index);
        }
    }

    fn restart(&mut self) {
        self.pending.clear();
        let hs = self.storage.hard_state();
        self.raft = match Raft::restart(self.config.clone(), self.storage.clone(), self.applied.0) {
            Ok(raft) => raft,
            Err(e) => panic!(
                "node {ID}: restart from persisted state failed (applied {}, {hs:?}, last index {:?}): {e}",
                self.applied.0,
                self.storage.last_index()
            ),
        };
        let s = self.raft.status();
        assert_eq!((s.term, s.vote), (hs.term, hs.vote), "node {ID}: restart lost the hard state");
        assert_eq!(s.applied_index, self.applied.0, "node {ID}: restart lost the applied index");
        self.last_ready_number = None;
        self.last_hard_state = hs;
        self.last_status = s;
    }

    fn check_ready(&mut self, rd: &Ready) {
        let before = self.last_hard_state;
        if let Some(n) = self.last_ready_number {
            assert!(rd.number > n, "node {ID}: ready #{} handed out after #{n}", rd.number);
        }
        self.last_ready_number = Some(rd.number);
        for w in rd.entries.windows(2) {
            assert_eq!(w[1].index, w[0].index + 1, "node {ID}: ready #{} entries", rd.number);
            assert!(w[1].term >= w[0].term, "node {ID}: ready #{} entry terms", rd.number);
        }
        let term = self.raft.term();
        if let Some(e) = rd.entries.last() {
            assert!(e.term <= term, "node {ID}: entry {} of term {} > {term}", e.index, e.term);
        }
        if let Some(hs) = rd.hard_state {
            let prev = self.last_hard_state;
            assert!(
                hs.term >= prev.term,
                "node {ID}: hard state term went back: {prev:?} -> {hs:?}"
            );
            if hs.term == prev.term && prev.vote.is_some() {
                assert_eq!(hs.vote, prev.vote, "node {ID}: changed its vote in term {}", hs.term);
            }
            self.last_hard_state = hs;
        }
        for m in &rd.persisted_messages {
            assert_eq!(m.from, ID, "node {ID}: persisted message from someone else: {m:?}");
        }
        for r in &rd.refused {
            assert!(r.error.is_refusal(), "node {ID}: ready #{} refuses with {r:?}", rd.number);
        }
        // The core hands out every change of term or vote at once, and never a change of the
        // commit index alone.
        let (now, last) = (self.raft.hard_state(), self.last_hard_state);
        assert_eq!(
            (now.term, now.vote),
            (last.term, last.vote),
            "node {ID}: ready #{} left a term or vote change out",
            rd.number
        );
        if let Some(hs) = rd.hard_state
            && rd.entries.is_empty()
            && rd.snapshot.is_none()
        {
            assert!(
                (hs.term, hs.vote) != (before.term, before.vote),
                "node {ID}: ready #{} hands out a hard state that changes only the commit index",
                rd.number
            );
        }
    }

    /// Invariants of the node between actions.
    fn check_status(&mut self) {
        let s = self.raft.status();
        let p = &self.last_status;
        let at = format!(
            "node {} term {} commit {} last {}",
            s.id, s.term, s.commit_index, s.last_index
        );
        assert_eq!(s.id, ID, "{at}: wrong id");
        assert!(s.commit_index <= s.last_index, "{at}: commit beyond the log");
        assert!(s.applied_index <= s.commit_index, "{at}: applied {} > commit", s.applied_index);
        assert!(s.persisted_index <= s.last_index, "{at}: persisted {} > last", s.persisted_index);
        assert_eq!(
            s.applied_index, self.applied.0,
            "{at}: applied index is not the acknowledged one"
        );
        assert!(s.term >= p.term, "{at}: term went back from {}", p.term);
        assert!(s.commit_index >= p.commit_index, "{at}: commit went back from {}", p.commit_index);
        if s.term == p.term && p.vote.is_some() {
            assert_eq!(s.vote, p.vote, "{at}: vote changed within the term");
        }
        if s.role == Role::Leader {
            assert_eq!(s.leader_id, Some(ID), "{at}: leader that does not know it leads");
        }
        if !self.async_persist && self.pending.is_empty() {
            assert_eq!(s.persisted_index, s.last_index, "{at}: everything was persisted");
        }
        let (index, term) = self.applied;
        if index > 0 {
            assert_eq!(
                self.raft.log_term(index),
                Some(term),
                "{at}: applied entry {index} was replaced"
            );
        }
        self.last_status = s;
    }
}

/// A membership change of up to three operations, mostly on nodes 1–3 (so some are valid).
fn decode_conf_change(input: &mut Cursor<'_>) -> ConfChange {
    let ops = (0..input.u8() % 4)
        .map(|_| {
            let id = input.node();
            match input.u8() % 3 {
                0 => ConfChangeOp::AddVoter(id),
                1 => ConfChangeOp::AddLearner(id),
                _ => ConfChangeOp::Remove(id),
            }
        })
        .collect();
    let transition =
        if input.bool() { ConfChangeTransition::JointExplicit } else { ConfChangeTransition::Auto };
    ConfChange { ops, transition }
}

fn decode_forwarded(input: &mut Cursor<'_>) -> Forwarded {
    match input.u8() % 3 {
        0 => Forwarded::Proposals((0..input.u8() % 4).map(|_| input.payload()).collect()),
        1 => Forwarded::ConfChange(decode_conf_change(input)),
        _ => Forwarded::Transfer(input.node()),
    }
}

/// An error a refusal may carry, or sometimes one it may not (the core must refuse the message).
fn decode_refusal(input: &mut Cursor<'_>) -> Error {
    match input.u8() % 5 {
        0 => Error::NotLeader { leader_hint: input.bool().then(|| input.node()) },
        1 => Error::NoLeader,
        2 => Error::UncommittedLimit {
            uncommitted_bytes: input.wide(),
            proposal_bytes: input.wide(),
            limit: input.wide(),
        },
        3 => Error::ConfChangeRefused { reason: "fuzz".into() },
        _ => Error::UnknownReady { number: input.wide() },
    }
}

/// Decodes the entries of an append message after `prev_log_index`: mostly contiguous entries of
/// the message's term, sometimes any indices and terms.
fn decode_entries(input: &mut Cursor<'_>, prev_log_index: Index, term: Term) -> Vec<Entry> {
    let n = input.u8() % (MAX_ENTRIES_PER_APPEND + 1);
    let contiguous = !input.u8().is_multiple_of(4);
    (0..u64::from(n))
        .map(|i| {
            let natural = prev_log_index.saturating_add(1 + i);
            let index = if contiguous { natural } else { input.near(natural) };
            let term = input.near(term);
            let (kind, data) = match input.u8() % 4 {
                0 => (EntryKind::Empty, Bytes::new()),
                _ => (EntryKind::Normal, input.payload()),
            };
            Entry { term, index, kind, data }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn splitmix64(state: &mut u64) -> u64 {
        *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    #[test]
    fn step_messages_survives_pseudo_random_inputs() {
        let mut state = 0x5eed_u64;
        for case in 0..400 {
            let len = (splitmix64(&mut state) % 2048) as usize;
            let data: Vec<u8> = (0..len).map(|_| splitmix64(&mut state) as u8).collect();
            let result = std::panic::catch_unwind(|| step_messages(&data));
            assert!(result.is_ok(), "case {case} panicked; input: {data:?}");
        }
    }

    #[test]
    fn sim_schedule_survives_pseudo_random_inputs() {
        let mut state = 0x5c4e_d01e_u64;
        for case in 0..40 {
            let len = (splitmix64(&mut state) % 512) as usize;
            let data: Vec<u8> = (0..len).map(|_| splitmix64(&mut state) as u8).collect();
            let result = std::panic::catch_unwind(|| sim_schedule(&data));
            assert!(result.is_ok(), "case {case} panicked; input: {data:?}");
        }
    }

    /// The decoder can drive the node to leadership and commit a proposal, so the fuzzer reaches
    /// the leader's code paths and not only the follower's.
    #[test]
    fn scripted_input_reaches_leadership_and_commits() {
        const CAMPAIGN: u8 = 2;
        const PROPOSE: u8 = 3;
        const REPLY_ALL: u8 = 12;
        const ACCEPT: u8 = 1;
        let data = [
            0x00, // synchronous persistence, default config
            CAMPAIGN, REPLY_ALL, ACCEPT, // pre-votes granted
            REPLY_ALL, ACCEPT, // votes granted: leader; its empty entry goes out
            REPLY_ALL, ACCEPT, // appends accepted: the empty entry commits
            PROPOSE, 1, 3, b'a', b'b', b'c', // propose "abc"
            REPLY_ALL, ACCEPT, // appended and committed
        ];
        let s = run(&data);
        assert_eq!(s.role, Role::Leader, "{s:?}");
        assert_eq!(s.commit_index, 2, "{s:?}");
        assert_eq!(s.applied_index, 2, "{s:?}");
    }
}
