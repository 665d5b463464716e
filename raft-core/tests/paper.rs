//! Exact-output tests of the core, one per claim of the Raft paper (and of the extensions the
//! core implements: PreVote, CheckQuorum, leases, ReadIndex, flow control).
//!
//! Every test follows etcd's `raft_paper_test.go` shape: *init* a node in a known state, *act*
//! with a scripted input (`step`, `tick`, `campaign`, `propose`, `read_index`), then *check* the
//! exact [`Ready`] it answers with: messages and their bodies, which of them wait for
//! persistence, entries and hard state to persist, committed entries and read states.
//! Single nodes are driven by hand; the few multi-node tests use the synchronous [`Harness`].
//!
//! Section numbers refer to the extended Raft paper (Ongaro & Ousterhout, 2014); §6.4 reads and
//! §9.6 PreVote refer to Ongaro's dissertation.

use bytes::Bytes;
use raft_core::testkit::harness::Harness;
use raft_core::{
    Config, ENTRY_OVERHEAD_BYTES, Entry, EntryKind, Error, Forwarded, HardState, Index, MemStorage,
    Message, MessageBody, NodeId, Raft, ReadMode, ReadState, Ready, Refused, Role, Storage, Term,
};

// ------------------------------------------------------------------------------------------------
// Builders

type Node = Raft<MemStorage>;

/// A normal entry with an empty payload (as etcd's paper tests use).
fn e(index: Index, term: Term) -> Entry {
    Entry { term, index, kind: EntryKind::Normal, data: Bytes::new() }
}

/// The empty entry a leader appends when it takes office.
fn empty(index: Index, term: Term) -> Entry {
    Entry { term, index, kind: EntryKind::Empty, data: Bytes::new() }
}

/// A normal entry with a payload.
fn data(index: Index, term: Term, payload: &'static [u8]) -> Entry {
    Entry { term, index, kind: EntryKind::Normal, data: Bytes::from_static(payload) }
}

/// A log whose entry `i + 1` has term `terms[i]`.
fn log_of_terms(terms: &[Term]) -> Vec<Entry> {
    terms.iter().zip(1..).map(|(&t, i)| e(i, t)).collect()
}

fn hs(term: Term, vote: Option<NodeId>, commit: Index) -> HardState {
    HardState { term, vote, commit }
}

fn storage_with(voters: &[NodeId], log: &[Entry], hard_state: HardState) -> MemStorage {
    let s = MemStorage::new_with_voters(voters);
    s.append(log).unwrap();
    s.set_hard_state(hard_state);
    s
}

fn node(id: NodeId, voters: &[NodeId]) -> Node {
    Raft::new(Config::new(id), MemStorage::new_with_voters(voters)).unwrap()
}

fn node_with(cfg: Config, storage: MemStorage) -> Node {
    Raft::new(cfg, storage).unwrap()
}

fn m(from: NodeId, to: NodeId, term: Term, body: MessageBody) -> Message {
    Message { from, to, term, body }
}

fn app(
    prev_log_index: Index,
    prev_log_term: Term,
    entries: Vec<Entry>,
    leader_commit: Index,
) -> MessageBody {
    MessageBody::Append { prev_log_index, prev_log_term, entries, leader_commit }
}

fn app_ok(index: Index) -> MessageBody {
    MessageBody::AppendResponse { reject: false, index, hint_index: 0, hint_term: 0 }
}

fn app_rej(index: Index, hint_index: Index, hint_term: Term) -> MessageBody {
    MessageBody::AppendResponse { reject: true, index, hint_index, hint_term }
}

fn vote(last_log_index: Index, last_log_term: Term) -> MessageBody {
    MessageBody::Vote { pre_vote: false, last_log_index, last_log_term, force: false }
}

fn prevote(last_log_index: Index, last_log_term: Term) -> MessageBody {
    MessageBody::Vote { pre_vote: true, last_log_index, last_log_term, force: false }
}

/// A vote answer from a voter that knows of no committed entry the candidate holds.
fn vote_resp(granted: bool) -> MessageBody {
    MessageBody::VoteResponse { pre_vote: false, granted, commit_index: 0, commit_term: 0 }
}

/// A pre-vote answer from a voter that knows of no committed entry the candidate holds.
fn prevote_resp(granted: bool) -> MessageBody {
    MessageBody::VoteResponse { pre_vote: true, granted, commit_index: 0, commit_term: 0 }
}

fn hb(commit: Index, round: u64) -> MessageBody {
    MessageBody::Heartbeat { commit, round }
}

fn hb_resp(round: u64) -> MessageBody {
    MessageBody::HeartbeatResponse { round }
}

fn rs(ctx: &'static [u8], index: Index) -> ReadState {
    ReadState { ctx: Bytes::from_static(ctx), index }
}

fn b(s: &'static [u8]) -> Bytes {
    Bytes::from_static(s)
}

// ------------------------------------------------------------------------------------------------
// Driving

/// Does what the `Ready` contract asks of a driver that persists synchronously: entries and hard
/// state into the node's `MemStorage`, then the acknowledgement.
fn persist(r: &mut Node, rd: &Ready) {
    r.storage().append(&rd.entries).unwrap();
    if let Some(hs) = rd.hard_state {
        r.storage().set_hard_state(hs);
    }
    r.on_persisted(rd.number).unwrap();
}

/// Persists and applies every pending `Ready`; returns them.
fn drain(r: &mut Node) -> Vec<Ready> {
    let mut out = Vec::new();
    while r.has_ready() {
        let rd = r.ready();
        persist(r, &rd);
        if let Some(last) = rd.committed_entries.last() {
            r.on_applied(last.index).unwrap();
        }
        out.push(rd);
    }
    out
}

/// The next `Ready`, persisted and applied.
fn next(r: &mut Node) -> Ready {
    assert!(r.has_ready(), "node {} has no Ready", r.id());
    let rd = r.ready();
    persist(r, &rd);
    if let Some(last) = rd.committed_entries.last() {
        r.on_applied(last.index).unwrap();
    }
    rd
}

fn others(r: &Node) -> Vec<NodeId> {
    r.voters().into_iter().filter(|&v| v != r.id()).collect()
}

/// Campaigns and has every other voter grant the pre-vote, in id order, until it is a candidate
/// (or, alone, the leader).
fn to_candidate(r: &mut Node) {
    let (id, term) = (r.id(), r.term() + 1);
    r.campaign();
    for v in others(r) {
        if r.role() == Role::PreCandidate {
            r.step(m(v, id, term, prevote_resp(true))).unwrap();
        }
    }
    assert!(matches!(r.role(), Role::Candidate | Role::Leader), "node {id}: {:?}", r.role());
}

/// Campaigns and collects every other voter's (pre-)vote until it leads.
fn elect(r: &mut Node) {
    to_candidate(r);
    let (id, term) = (r.id(), r.term());
    for v in others(r) {
        if r.role() == Role::Candidate {
            r.step(m(v, id, term, vote_resp(true))).unwrap();
        }
    }
    assert_eq!(r.role(), Role::Leader);
}

/// Node `cfg.id` elected leader of term 1 of `voters`, everything persisted; its empty entry at
/// index 1 is not committed and its probes are unanswered.
fn elected(cfg: Config, voters: &[NodeId]) -> Node {
    let mut r = node_with(cfg, MemStorage::new_with_voters(voters));
    elect(&mut r);
    drain(&mut r);
    r
}

/// As [`elected`], and every follower acknowledged the empty entry: index 1 is committed and
/// applied and every follower is replicating.
fn established(cfg: Config, voters: &[NodeId]) -> Node {
    let mut r = elected(cfg, voters);
    let (id, term) = (r.id(), r.term());
    for v in others(&r) {
        r.step(m(v, id, term, app_ok(1))).unwrap();
    }
    drain(&mut r);
    assert_eq!(r.status().commit_index, 1);
    r
}

/// Ticks until `done` holds, drains nothing; returns the number of ticks (at most `limit`).
fn ticks_until(r: &mut Node, limit: u64, done: impl Fn(&Node) -> bool) -> u64 {
    for n in 1..=limit {
        r.tick();
        if done(r) {
            return n;
        }
    }
    panic!("node {}: condition not reached within {limit} ticks", r.id());
}

/// A cluster of `logs.len()` voters `1..=n` where node `i + 1` starts from `logs[i]` with hard
/// state `(terms[i], no vote, commit 0)`.
fn cluster_with_logs(logs: &[(Vec<Entry>, Term)]) -> Harness {
    let n = logs.len() as u64;
    let voters: Vec<NodeId> = (1..=n).collect();
    let mut net = Harness::new(n);
    for ((log, term), id) in logs.iter().zip(1..) {
        let r = node_with(Config::new(id), storage_with(&voters, log, hs(*term, None, 0)));
        net.nodes.insert(id, r);
    }
    net
}

fn whole_log(r: &Node) -> Vec<Entry> {
    r.log_entries(1, r.status().last_index + 1).unwrap()
}

/// The replication exchange between leader 1 and follower 2, one line per message:
/// `app (prev index,prev term) +entries`, `ok index`, `rej index hint (index,term)`.
fn exchange(net: &Harness) -> Vec<String> {
    let between = |msg: &&Message| matches!((msg.from, msg.to), (1, 2) | (2, 1));
    net.sent
        .iter()
        .filter(between)
        .filter_map(|msg| match &msg.body {
            MessageBody::Append { prev_log_index: i, prev_log_term: t, entries, .. } => {
                Some(format!("app ({i},{t}) +{}", entries.len()))
            }
            MessageBody::AppendResponse { reject: false, index, .. } => Some(format!("ok {index}")),
            MessageBody::AppendResponse { reject: true, index, hint_index, hint_term } => {
                Some(format!("rej {index} hint ({hint_index},{hint_term})"))
            }
            _ => None,
        })
        .collect()
}

/// The exchange starts with `expected`; whatever follows carries no entries (commit updates).
fn assert_exchange(net: &Harness, expected: &[&str]) {
    let got = exchange(net);
    assert!(got.len() >= expected.len(), "{got:#?}");
    assert_eq!(got[..expected.len()], *expected, "{got:#?}");
    let rest = &got[expected.len()..];
    assert!(rest.iter().all(|l| l.ends_with(" +0") || l.starts_with("ok ")), "{got:#?}");
}

// ------------------------------------------------------------------------------------------------
// §5.1 Raft basics

#[test]
fn s5_1_node_starts_as_follower() {
    let r = node(1, &[1, 2, 3]);
    let st = r.status();
    assert_eq!((st.role, st.term, st.vote, st.leader_id), (Role::Follower, 0, None, None));
    assert_eq!((st.commit_index, st.applied_index, st.last_index), (0, 0, 0));
    assert!(!r.has_ready());
}

/// "If one server's current term is smaller than the other's, then it updates its current term
/// to the larger value. If a candidate or leader discovers that its term is out of date, it
/// immediately reverts to follower state." (etcd `testUpdateTermFromMessage`)
#[test]
fn s5_1_node_with_higher_term_message_becomes_follower() {
    for start in [Role::Follower, Role::PreCandidate, Role::Candidate, Role::Leader] {
        let mut r = node(1, &[1, 2, 3]);
        match start {
            Role::Follower => {}
            Role::PreCandidate => r.campaign(),
            Role::Candidate => to_candidate(&mut r),
            Role::Leader => elect(&mut r),
        }
        drain(&mut r);
        assert_eq!(r.role(), start);

        // A leader of term 5 appears.
        r.step(m(2, 1, 5, app(0, 0, vec![], 0))).unwrap();

        let st = r.status();
        assert_eq!(
            (st.role, st.term, st.vote, st.leader_id),
            (Role::Follower, 5, None, Some(2)),
            "{start:?}"
        );
        let rd = r.ready();
        assert_eq!(
            rd,
            Ready {
                number: rd.number,
                hard_state: Some(hs(5, None, 0)),
                persisted_messages: vec![m(1, 2, 5, app_ok(0))],
                ..Ready::default()
            },
            "{start:?}"
        );
    }

    // An answer carrying a higher term also deposes, without naming a leader.
    let mut r = elected(Config::new(1), &[1, 2, 3]);
    r.step(m(2, 1, 5, app_rej(0, 0, 0))).unwrap();
    let st = r.status();
    assert_eq!((st.role, st.term, st.vote, st.leader_id), (Role::Follower, 5, None, None));
    let rd = r.ready();
    assert_eq!(
        rd,
        Ready { number: rd.number, hard_state: Some(hs(5, None, 0)), ..Ready::default() }
    );

    let mut r = node(1, &[1, 2, 3]);
    to_candidate(&mut r);
    drain(&mut r);
    r.step(m(3, 1, 7, vote_resp(false))).unwrap();
    let st = r.status();
    assert_eq!((st.role, st.term, st.vote, st.leader_id), (Role::Follower, 7, None, None));
}

/// "If a server receives a request with a stale term number, it rejects the request."
/// (etcd `testRejectStaleTermMessage`.) Under PreVote/CheckQuorum a stale leader is told the
/// current term so that it steps down.
#[test]
fn s5_1_stale_term_message_is_rejected() {
    let voters = [1, 2, 3];
    let log = log_of_terms(&[1, 2]);
    let cases: Vec<(MessageBody, Vec<Message>, Vec<Message>)> = vec![
        // (message from node 2 in term 2, messages, persisted_messages)
        (app(2, 2, vec![e(3, 2)], 2), vec![], vec![m(1, 2, 3, app_rej(0, 0, 0))]),
        (hb(2, 1), vec![], vec![m(1, 2, 3, app_rej(0, 0, 0))]),
        (vote(5, 2), vec![], vec![]),
        (prevote(5, 2), vec![m(1, 2, 3, prevote_resp(false))], vec![]),
        (app_ok(2), vec![], vec![]),
        (hb_resp(1), vec![], vec![]),
        (vote_resp(true), vec![], vec![]),
        (MessageBody::ReadIndexResponse { ctx: b(b"r"), index: 2 }, vec![], vec![]),
    ];
    for (body, messages, persisted_messages) in cases {
        let mut r = node_with(Config::new(1), storage_with(&voters, &log, hs(3, None, 0)));
        let name = body.name();

        r.step(m(2, 1, 2, body)).unwrap();

        let st = r.status();
        assert_eq!(
            (st.role, st.term, st.vote, st.leader_id),
            (Role::Follower, 3, None, None),
            "{name}"
        );
        assert_eq!((st.last_index, st.commit_index), (2, 0), "{name}");
        let rd = r.ready();
        assert_eq!(
            rd,
            Ready { number: rd.number, messages, persisted_messages, ..Ready::default() },
            "{name}"
        );
    }
}

// ------------------------------------------------------------------------------------------------
// §5.2 Leader election

/// "If a follower receives no communication over a period of time called the election timeout,
/// then it assumes there is no viable leader and begins an election." With PreVote it first asks
/// whether it could win, at its next term but without changing its own.
#[test]
fn s5_2_follower_starts_prevote_after_election_timeout() {
    let mut r = node(1, &[1, 2, 3]);

    let ticks = ticks_until(&mut r, 100, |r| {
        assert!(r.role() != Role::Follower || !r.has_ready(), "a waiting follower has no work");
        r.role() != Role::Follower
    });

    assert!((10..20).contains(&ticks), "timed out after {ticks} ticks");
    let st = r.status();
    assert_eq!((st.role, st.term, st.vote, st.leader_id), (Role::PreCandidate, 0, None, None));
    let rd = r.ready();
    assert_eq!(
        rd,
        Ready {
            number: rd.number,
            messages: vec![m(1, 2, 1, prevote(0, 0)), m(1, 3, 1, prevote(0, 0))],
            ..Ready::default()
        }
    );
}

/// "To begin an election, a follower increments its current term and transitions to candidate
/// state. It then votes for itself and issues RequestVote RPCs in parallel to each of the other
/// servers." The vote for itself is durable before the requests leave. (etcd
/// `testNonleaderStartElection`)
#[test]
fn s5_2_prevote_quorum_starts_real_election() {
    let log = log_of_terms(&[1, 1, 2]);
    let mut r = node_with(Config::new(1), storage_with(&[1, 2, 3, 4, 5], &log, hs(2, None, 0)));
    r.campaign();
    drain(&mut r);
    r.step(m(2, 1, 3, prevote_resp(true))).unwrap();
    assert_eq!(r.role(), Role::PreCandidate, "one grant and its own are not a quorum of 5");
    assert!(!r.has_ready());

    r.step(m(4, 1, 3, prevote_resp(true))).unwrap();

    let st = r.status();
    assert_eq!((st.role, st.term, st.vote, st.leader_id), (Role::Candidate, 3, Some(1), None));
    let rd = r.ready();
    assert_eq!(
        rd,
        Ready {
            number: rd.number,
            hard_state: Some(hs(3, Some(1), 0)),
            persisted_messages: [2, 3, 4, 5].map(|to| m(1, to, 3, vote(3, 2))).to_vec(),
            ..Ready::default()
        }
    );

    // Late pre-vote answers are no votes.
    persist(&mut r, &rd);
    r.step(m(3, 1, 3, prevote_resp(true))).unwrap();
    r.step(m(5, 1, 3, prevote_resp(true))).unwrap();
    assert_eq!(r.role(), Role::Candidate);
    r.step(m(2, 1, 3, vote_resp(true))).unwrap();
    assert_eq!(r.role(), Role::Candidate, "2 of 5 votes");
    r.step(m(3, 1, 3, vote_resp(true))).unwrap();
    assert_eq!(r.role(), Role::Leader);
}

/// "A candidate wins an election if it receives votes from a majority of the servers in the full
/// cluster for the same term." On winning it appends the empty entry of its term and sends it to
/// every follower at once. (etcd `testLeaderElectionInOneRoundRPC`, first half)
#[test]
fn s5_2_candidate_wins_with_majority() {
    let cases: &[(u64, &[(NodeId, bool)])] = &[
        (1, &[]),
        (3, &[(2, true), (3, true)]),
        (3, &[(2, true)]),
        (3, &[(2, false), (3, true)]),
        (5, &[(2, true), (3, true), (4, true), (5, true)]),
        (5, &[(2, true), (3, true)]),
        (5, &[(2, false), (3, true), (4, false), (5, true)]),
    ];
    for &(size, votes) in cases {
        let voters: Vec<NodeId> = (1..=size).collect();
        let mut r = node(1, &voters);
        to_candidate(&mut r);
        for &(from, granted) in votes {
            r.step(m(from, 1, 1, vote_resp(granted))).unwrap();
        }
        assert_eq!(r.role(), Role::Leader, "size {size}, votes {votes:?}");
        assert_eq!((r.term(), r.leader_id()), (1, Some(1)));
    }

    // The exact output of winning in a cluster of three.
    let mut r = node(1, &[1, 2, 3]);
    to_candidate(&mut r);
    drain(&mut r);

    r.step(m(3, 1, 1, vote_resp(true))).unwrap();

    assert_eq!(r.role(), Role::Leader);
    let rd = r.ready();
    assert_eq!(
        rd,
        Ready {
            number: rd.number,
            messages: vec![
                m(1, 2, 1, app(0, 0, vec![empty(1, 1)], 0)),
                m(1, 3, 1, app(0, 0, vec![empty(1, 1)], 0)),
            ],
            entries: vec![empty(1, 1)],
            ..Ready::default()
        }
    );
}

/// A candidate that can no longer reach a majority gives up and waits as a follower of the same
/// term (it keeps its vote for itself). (etcd `testLeaderElectionInOneRoundRPC`, second half)
#[test]
fn s5_2_candidate_loses() {
    let cases: &[(u64, &[(NodeId, bool)])] = &[
        (3, &[(2, false), (3, false)]),
        (5, &[(2, false), (3, false), (4, false)]),
        (5, &[(2, true), (3, false), (4, false), (5, false)]),
    ];
    for &(size, votes) in cases {
        let voters: Vec<NodeId> = (1..=size).collect();
        let mut r = node(1, &voters);
        to_candidate(&mut r);
        drain(&mut r);

        for &(from, granted) in votes {
            r.step(m(from, 1, 1, vote_resp(granted))).unwrap();
        }

        let st = r.status();
        assert_eq!(
            (st.role, st.term, st.vote, st.leader_id),
            (Role::Follower, 1, Some(1), None),
            "size {size}, votes {votes:?}"
        );
        assert!(!r.has_ready(), "losing changes nothing durable and sends nothing");
    }
}

/// "The third possible outcome is that a candidate neither wins nor loses the election [...]
/// each candidate will time out and start a new election by incrementing its term." With
/// PreVote the new attempt starts with a pre-vote for the next term.
#[test]
fn s5_2_candidate_stays_with_split_vote() {
    let mut r = node(1, &[1, 2, 3, 4, 5]);
    to_candidate(&mut r);
    drain(&mut r);
    // 1 and 2 for node 1; 3 and 4 voted for someone else; 5 is silent.
    r.step(m(2, 1, 1, vote_resp(true))).unwrap();
    r.step(m(3, 1, 1, vote_resp(false))).unwrap();
    r.step(m(4, 1, 1, vote_resp(false))).unwrap();
    assert_eq!(r.role(), Role::Candidate);
    assert!(!r.has_ready());

    let ticks = ticks_until(&mut r, 100, |r| r.role() != Role::Candidate);

    assert!((10..20).contains(&ticks), "new election after {ticks} ticks");
    let st = r.status();
    assert_eq!((st.role, st.term, st.vote), (Role::PreCandidate, 1, Some(1)));
    let rd = next(&mut r);
    assert_eq!(
        rd,
        Ready {
            number: rd.number,
            messages: [2, 3, 4, 5].map(|to| m(1, to, 2, prevote(0, 0))).to_vec(),
            ..Ready::default()
        }
    );
    for from in [2, 3] {
        r.step(m(from, 1, 2, prevote_resp(true))).unwrap();
    }
    assert_eq!((r.role(), r.term(), r.status().vote), (Role::Candidate, 2, Some(1)));
}

/// "A candidate [...] may receive an AppendEntries RPC from another server claiming to be
/// leader. If the leader's term is at least as large as the candidate's current term, then the
/// candidate recognizes the leader as legitimate and returns to follower state."
/// (etcd `testCandidateFallback`)
#[test]
fn s5_2_candidate_falls_back_on_append_from_leader_of_its_term() {
    let mut r = node(1, &[1, 2, 3]);
    to_candidate(&mut r);
    drain(&mut r);

    r.step(m(2, 1, 1, app(0, 0, vec![e(1, 1)], 0))).unwrap();

    let st = r.status();
    assert_eq!((st.role, st.term, st.vote, st.leader_id), (Role::Follower, 1, Some(1), Some(2)));
    let rd = r.ready();
    assert_eq!(
        rd,
        Ready {
            number: rd.number,
            entries: vec![e(1, 1)],
            persisted_messages: vec![m(1, 2, 1, app_ok(1))],
            ..Ready::default()
        }
    );

    // A pre-candidate falls back to a heartbeat of its current term.
    let mut r = node_with(Config::new(1), storage_with(&[1, 2, 3], &[], hs(4, None, 0)));
    r.campaign();
    drain(&mut r);
    assert_eq!(r.role(), Role::PreCandidate);

    r.step(m(3, 1, 4, hb(0, 9))).unwrap();

    let st = r.status();
    assert_eq!((st.role, st.term, st.vote, st.leader_id), (Role::Follower, 4, None, Some(3)));
    let rd = r.ready();
    assert_eq!(
        rd,
        Ready {
            number: rd.number,
            persisted_messages: vec![m(1, 3, 4, hb_resp(9))],
            ..Ready::default()
        }
    );
}

/// "Each server will vote for at most one candidate in a given term, on a first-come-first-served
/// basis." The vote is durable before it is sent: the answer waits for persistence and the same
/// Ready carries the hard state that records it; a restart remembers it. (etcd `testVoter`,
/// `TestVoteFromAnyState`)
#[test]
fn s5_2_vote_granted_once_per_term() {
    let mut r = node(1, &[1, 2, 3]);

    r.step(m(2, 1, 1, vote(0, 0))).unwrap();

    let rd = r.ready();
    assert_eq!(
        rd,
        Ready {
            number: rd.number,
            hard_state: Some(hs(1, Some(2), 0)),
            persisted_messages: vec![m(1, 2, 1, vote_resp(true))],
            ..Ready::default()
        }
    );
    persist(&mut r, &rd);

    // A second candidate of the same term is refused; the first one asking again is not.
    r.step(m(3, 1, 1, vote(0, 0))).unwrap();
    let rd = next(&mut r);
    assert_eq!(
        rd,
        Ready {
            number: rd.number,
            persisted_messages: vec![m(1, 3, 1, vote_resp(false))],
            ..Ready::default()
        }
    );
    r.step(m(2, 1, 1, vote(0, 0))).unwrap();
    let rd = next(&mut r);
    assert_eq!(
        rd,
        Ready {
            number: rd.number,
            persisted_messages: vec![m(1, 2, 1, vote_resp(true))],
            ..Ready::default()
        }
    );

    // The vote survives a restart.
    let mut r = Raft::restart(Config::new(1), r.storage().clone(), 0).unwrap();
    assert_eq!((r.term(), r.status().vote), (1, Some(2)));
    r.step(m(3, 1, 1, vote(0, 0))).unwrap();
    let rd = r.ready();
    assert_eq!(
        rd,
        Ready {
            number: rd.number,
            persisted_messages: vec![m(1, 3, 1, vote_resp(false))],
            ..Ready::default()
        }
    );

    // A new term frees the vote.
    r.step(m(3, 1, 2, vote(0, 0))).unwrap();
    let rd = r.ready();
    assert_eq!(
        rd,
        Ready {
            number: rd.number,
            hard_state: Some(hs(2, Some(3), 0)),
            persisted_messages: vec![m(1, 3, 2, vote_resp(true))],
            ..Ready::default()
        }
    );
}

/// "Raft uses randomized election timeouts [...] chosen randomly from a fixed interval." Every
/// value of `[election_timeout_ticks, 2 * election_timeout_ticks)` occurs, and nodes with
/// different ids draw different sequences. (etcd `testNonleaderElectionTimeoutRandomized`,
/// `testNonleadersElectionTimeoutNonconflict`)
#[test]
fn s5_2_randomized_timeouts_differ_between_nodes() {
    /// The first `n` election timeouts of node `id`, measured between successive pre-votes.
    fn timeouts(id: NodeId, n: usize) -> Vec<u64> {
        let mut r = node(id, &[1, 2, 3, 4, 5]);
        (0..n)
            .map(|_| {
                let t = ticks_until(&mut r, 100, |r| r.has_ready());
                let rd = next(&mut r);
                assert_eq!(rd.messages.len(), 4, "a pre-vote to each peer");
                assert!(rd.messages.iter().all(|msg| msg.body == prevote(0, 0) && msg.term == 1));
                assert_eq!(r.term(), 0, "unanswered pre-votes never raise the term");
                t
            })
            .collect()
    }

    let sequences: Vec<Vec<u64>> = (1..=5).map(|id| timeouts(id, 200)).collect();

    for (seq, id) in sequences.iter().zip(1..) {
        assert!(seq.iter().all(|t| (10..20).contains(t)), "node {id}: {seq:?}");
        for t in 10..20 {
            assert!(seq.contains(&t), "node {id} never drew a timeout of {t} ticks");
        }
    }
    let firsts: Vec<&[u64]> = sequences.iter().map(|s| &s[..10]).collect();
    for i in 0..firsts.len() {
        for j in i + 1..firsts.len() {
            assert_ne!(firsts[i], firsts[j], "nodes {} and {} time out in lockstep", i + 1, j + 1);
        }
    }
}

/// "Leaders send periodic heartbeats (AppendEntries RPCs that carry no log entries) to all
/// followers in order to maintain their authority." (etcd `testLeaderBcastBeat`)
#[test]
fn s5_2_leader_broadcasts_heartbeats() {
    let mut cfg = Config::new(1);
    cfg.heartbeat_interval_ticks = 3;
    let mut r = established(cfg, &[1, 2, 3]);
    r.propose(b(b"x")).unwrap();
    drain(&mut r);
    r.step(m(2, 1, 1, app_ok(2))).unwrap();
    drain(&mut r);
    assert_eq!(r.status().commit_index, 2);

    for _ in 0..2 {
        r.tick();
        assert!(!r.has_ready());
    }
    r.tick();

    // Each follower gets the commit index it can use: at most what it is known to hold.
    let rd = next(&mut r);
    assert_eq!(
        rd,
        Ready {
            number: rd.number,
            messages: vec![m(1, 2, 1, hb(2, 1)), m(1, 3, 1, hb(1, 1))],
            ..Ready::default()
        }
    );
    for _ in 0..3 {
        r.tick();
    }
    let rd = next(&mut r);
    assert_eq!(rd.messages, vec![m(1, 2, 1, hb(2, 2)), m(1, 3, 1, hb(1, 2))]);
}

// ------------------------------------------------------------------------------------------------
// §5.3 Log replication

/// "The leader appends the command to its log as a new entry, then issues AppendEntries RPCs in
/// parallel to each of the other servers [...] When the entry has been safely replicated, the
/// leader applies the entry to its state machine." (etcd `testLeaderStartReplication`,
/// `testLeaderCommitEntry`, `testLeaderAcknowledgeCommit`)
#[test]
fn s5_3_leader_replicates_and_commits() {
    let mut r = elected(Config::new(1), &[1, 2, 3]);

    // Node 2 holds the empty entry: with the leader's own copy that is a majority.
    r.step(m(2, 1, 1, app_ok(1))).unwrap();

    let rd = next(&mut r);
    assert_eq!(
        rd,
        Ready {
            number: rd.number,
            // Node 3 still owes an answer to its probe, so only node 2 learns the commit now.
            messages: vec![m(1, 2, 1, app(1, 1, vec![], 1))],
            // A commit index that moved alone is not written (it is volatile).
            hard_state: None,
            committed_entries: vec![empty(1, 1)],
            ..Ready::default()
        }
    );

    r.propose(b(b"a")).unwrap();

    let rd = next(&mut r);
    assert_eq!(
        rd,
        Ready {
            number: rd.number,
            messages: vec![m(1, 2, 1, app(1, 1, vec![data(2, 1, b"a")], 1))],
            // Entries are written anyway: the commit index rides along.
            hard_state: Some(hs(1, Some(1), 1)),
            entries: vec![data(2, 1, b"a")],
            ..Ready::default()
        }
    );

    r.step(m(2, 1, 1, app_ok(2))).unwrap();

    let rd = next(&mut r);
    assert_eq!(
        rd,
        Ready {
            number: rd.number,
            messages: vec![m(1, 2, 1, app(2, 1, vec![], 2))],
            hard_state: None,
            committed_entries: vec![data(2, 1, b"a")],
            ..Ready::default()
        }
    );

    // Node 3 finally answers its probe: it gets everything it misses, with the commit index.
    r.step(m(3, 1, 1, app_ok(1))).unwrap();
    let rd = next(&mut r);
    assert_eq!(
        rd,
        Ready {
            number: rd.number,
            messages: vec![m(1, 3, 1, app(1, 1, vec![data(2, 1, b"a")], 2))],
            ..Ready::default()
        }
    );
    assert!(!r.has_ready());
}

/// "Once a follower learns that a log entry is committed, it applies the entry to its local state
/// machine." Committed entries are handed out once they are durable locally. (etcd
/// `testFollowerCommitEntry`)
#[test]
fn s5_3_follower_appends_and_commits() {
    let mut r = node(2, &[1, 2, 3]);

    r.step(m(1, 2, 1, app(0, 0, vec![data(1, 1, b"a"), data(2, 1, b"b")], 1))).unwrap();

    let rd = r.ready();
    assert_eq!(
        rd,
        Ready {
            number: rd.number,
            hard_state: Some(hs(1, None, 1)),
            entries: vec![data(1, 1, b"a"), data(2, 1, b"b")],
            persisted_messages: vec![m(2, 1, 1, app_ok(2))],
            ..Ready::default()
        }
    );
    persist(&mut r, &rd);
    let rd = next(&mut r);
    assert_eq!(
        rd,
        Ready { number: rd.number, committed_entries: vec![data(1, 1, b"a")], ..Ready::default() }
    );

    // A heartbeat moves the commit index on, never beyond the follower's log; that alone is
    // not written.
    r.step(m(1, 2, 1, hb(2, 1))).unwrap();
    let rd = next(&mut r);
    assert_eq!(
        rd,
        Ready {
            number: rd.number,
            hard_state: None,
            persisted_messages: vec![m(2, 1, 1, hb_resp(1))],
            committed_entries: vec![data(2, 1, b"b")],
            ..Ready::default()
        }
    );
}

/// "If the follower does not find an entry in its log with the same index and term, then it
/// refuses the new entries." The refusal carries the hint for fast backtracking. (etcd
/// `testFollowerCheckMsgApp`)
#[test]
fn s5_3_follower_rejects_append_with_mismatched_prev() {
    let log = log_of_terms(&[1, 2]);
    // (prev index, prev term, expected answer)
    let cases = [
        (0, 0, app_ok(0)),
        (1, 1, app_ok(1)),
        (2, 2, app_ok(2)),
        (1, 2, app_rej(1, 1, 1)), // term mismatch at index 1
        (2, 3, app_rej(2, 2, 2)), // term mismatch at index 2
        (3, 2, app_rej(3, 2, 2)), // index beyond the log
        (9, 3, app_rej(9, 2, 2)),
    ];
    for (prev_index, prev_term, answer) in cases {
        let mut r = node_with(Config::new(1), storage_with(&[1, 2, 3], &log, hs(3, None, 0)));

        r.step(m(2, 1, 3, app(prev_index, prev_term, vec![], 0))).unwrap();

        let rd = r.ready();
        assert_eq!(
            rd,
            Ready {
                number: rd.number,
                persisted_messages: vec![m(1, 2, 3, answer)],
                ..Ready::default()
            },
            "prev ({prev_index}, {prev_term})"
        );
        persist(&mut r, &rd);
        assert_eq!(whole_log(&r), log, "a refused append changes nothing");
    }
}

/// "If an existing entry conflicts with a new one (same index but different terms), delete the
/// existing entry and all that follow it; append any new entries not already in the log."
/// (etcd `testFollowerAppendEntries`)
#[test]
fn s5_3_follower_truncates_conflicting_suffix() {
    let log = log_of_terms(&[1, 2]);
    // (prev index, prev term, terms of the entries sent, resulting log, first index to persist)
    type Case = (Index, Term, &'static [Term], &'static [Term], Index);
    let cases: &[Case] = &[
        (2, 2, &[3], &[1, 2, 3], 3),
        (1, 1, &[3, 4], &[1, 3, 4], 2),
        (0, 0, &[1], &[1, 2], 3), // Nothing new: nothing to persist.
        (0, 0, &[3], &[3], 1),
        (0, 0, &[1, 2, 4], &[1, 2, 4], 3),
    ];
    for &(prev_index, prev_term, sent, result, first_new) in cases {
        let mut r = node_with(Config::new(1), storage_with(&[1, 2, 3], &log, hs(2, None, 0)));
        let sent: Vec<Entry> = sent.iter().zip(prev_index + 1..).map(|(&t, i)| e(i, t)).collect();
        let last_new = prev_index + sent.len() as u64;
        let result = log_of_terms(result);
        let to_persist = result.get(first_new as usize - 1..).unwrap_or_default().to_vec();

        r.step(m(2, 1, 4, app(prev_index, prev_term, sent, 0))).unwrap();

        let rd = r.ready();
        assert_eq!(
            rd,
            Ready {
                number: rd.number,
                hard_state: Some(hs(4, None, 0)),
                entries: to_persist,
                persisted_messages: vec![m(1, 2, 4, app_ok(last_new))],
                ..Ready::default()
            },
            "prev ({prev_index}, {prev_term})"
        );
        assert_eq!(whole_log(&r), result, "before persistence");
        persist(&mut r, &rd);
        assert_eq!(whole_log(&r), result, "after persistence");
        assert_eq!(r.storage().entries(1, result.len() as u64 + 1, u64::MAX).unwrap(), result);
        assert_eq!(r.storage().last_index().unwrap(), result.len() as u64);
    }
}

/// "If desired, the protocol can be optimized to reduce the number of rejected AppendEntries
/// RPCs [...] the follower can include the term of the conflicting entry and the first index it
/// stores for that term." A divergent or missing suffix of any length costs one rejection (two
/// when the leader's first guess lands on a conflicting entry), never one per entry.
#[test]
fn s5_3_fast_backtracking_uses_conflict_hint() {
    let terms = |prefix: &[Term], term: Term, n: usize| -> Vec<Term> {
        let mut v = prefix.to_vec();
        v.extend(std::iter::repeat_n(term, n));
        v
    };
    // (leader's log terms, follower's log terms and term, exchange between leader and follower)
    type Case = (Vec<Term>, Vec<Term>, Term, &'static [&'static str]);
    let cases: [Case; 4] = [
        // 100 entries of an older term.
        (
            terms(&[1], 3, 100),
            terms(&[1], 2, 100),
            2,
            &["app (101,3) +1", "rej 101 hint (101,2)", "app (1,1) +101", "ok 102"],
        ),
        // A divergent suffix longer than the leader's log.
        (
            terms(&[1], 3, 50),
            terms(&[1], 2, 200),
            2,
            &["app (51,3) +1", "rej 51 hint (51,2)", "app (1,1) +51", "ok 52"],
        ),
        // Far behind.
        (
            terms(&[1], 3, 100),
            terms(&[1], 1, 0),
            1,
            &["app (101,3) +1", "rej 101 hint (1,1)", "app (1,1) +101", "ok 102"],
        ),
        // Behind and divergent: the first guess (index 2, term 1) conflicts too.
        (
            terms(&[1, 1], 3, 100),
            terms(&[1], 2, 30),
            2,
            &[
                "app (102,3) +1",
                "rej 102 hint (31,2)",
                "app (2,1) +101",
                "rej 2 hint (1,1)",
                "app (1,1) +102",
                "ok 103",
            ],
        ),
    ];
    for (leader_terms, follower_terms, follower_term, exchange) in cases {
        let leader_log = log_of_terms(&leader_terms);
        let mut net = cluster_with_logs(&[
            (leader_log.clone(), 3),
            (log_of_terms(&follower_terms), follower_term),
            (leader_log, 3),
        ]);

        net.elect(1);
        net.settle();

        assert_exchange(&net, exchange);
        let expected = whole_log(net.node(1));
        assert_eq!(expected.last(), Some(&empty(leader_terms.len() as u64 + 1, 4)));
        assert_eq!(whole_log(net.node(2)), expected, "{exchange:?}");
    }
}

// ------------------------------------------------------------------------------------------------
// §5.4 Safety

/// "The voter denies its vote if its own log is more up-to-date than that of the candidate [...]
/// If the logs have last entries with different terms, then the log with the later term is more
/// up-to-date. If the logs end with the same term, then whichever log is longer is more
/// up-to-date." Pre-votes follow the same rule without changing anything. (etcd `testVoter`)
#[test]
fn s5_4_1_vote_refused_to_out_of_date_candidate() {
    // (voter's log terms, candidate's last index, last term, granted)
    let cases: &[(&[Term], Index, Term, bool)] = &[
        // Same last term: the index decides.
        (&[1], 1, 1, true),
        (&[1], 2, 1, true),
        (&[1, 1], 1, 1, false),
        // A later last term wins whatever the lengths.
        (&[1], 1, 2, true),
        (&[1], 2, 2, true),
        (&[1, 1], 1, 2, true),
        // An earlier last term loses whatever the lengths.
        (&[2], 1, 1, false),
        (&[2], 2, 1, false),
        (&[2], 9, 1, false),
        (&[2, 1], 1, 1, false),
    ];
    for &(voter_terms, last_index, last_term, granted) in cases {
        let case = format!("voter {voter_terms:?}, candidate last ({last_index}, {last_term})");
        let log = log_of_terms(voter_terms);
        let storage = || storage_with(&[1, 2, 3], &log, hs(2, None, 0));

        let mut r = node_with(Config::new(1), storage());
        r.step(m(2, 1, 3, vote(last_index, last_term))).unwrap();
        let rd = r.ready();
        assert_eq!(
            rd,
            Ready {
                number: rd.number,
                hard_state: Some(hs(3, granted.then_some(2), 0)),
                persisted_messages: vec![m(1, 2, 3, vote_resp(granted))],
                ..Ready::default()
            },
            "vote: {case}"
        );

        // A pre-vote: answered at the candidate's term if granted, at ours otherwise.
        let mut r = node_with(Config::new(1), storage());
        r.step(m(2, 1, 3, prevote(last_index, last_term))).unwrap();
        let rd = r.ready();
        let term = if granted { 3 } else { 2 };
        assert_eq!(
            rd,
            Ready {
                number: rd.number,
                messages: vec![m(1, 2, term, prevote_resp(granted))],
                ..Ready::default()
            },
            "pre-vote: {case}"
        );
        assert_eq!((r.term(), r.status().vote), (2, None));
    }
}

/// Figure 8: "Raft never commits log entries from previous terms by counting replicas. Only log
/// entries from the leader's current term are committed by counting replicas." The term-4
/// leader has the term-2 entry at index 2 on a majority and still must not commit it until its
/// own entry of term 4 is on a majority too. (etcd `testLeaderOnlyCommitsLogFromCurrentTerm`)
#[test]
fn s5_4_2_leader_does_not_commit_old_term_entry_by_counting() {
    let mut cfg = Config::new(1);
    cfg.max_append_entries = 1; // One entry per append, so a follower can hold index 2 only.
    let log = log_of_terms(&[1, 2]);
    // Index 1 is committed and applied.
    let mut r = Raft::restart(cfg, storage_with(&[1, 2, 3], &log, hs(3, None, 1)), 1).unwrap();
    to_candidate(&mut r);
    drain(&mut r);

    r.step(m(3, 1, 4, vote_resp(true))).unwrap();

    assert_eq!((r.role(), r.term()), (Role::Leader, 4));
    let rd = next(&mut r);
    assert_eq!(
        rd,
        Ready {
            number: rd.number,
            messages: vec![
                m(1, 2, 4, app(2, 2, vec![empty(3, 4)], 1)),
                m(1, 3, 4, app(2, 2, vec![empty(3, 4)], 1)),
            ],
            entries: vec![empty(3, 4)],
            ..Ready::default()
        }
    );

    // Node 2 only has index 1 (like S5 in Figure 8): the leader backs up and sends index 2.
    r.step(m(2, 1, 4, app_rej(2, 1, 1))).unwrap();
    let rd = next(&mut r);
    assert_eq!(
        rd,
        Ready {
            number: rd.number,
            messages: vec![m(1, 2, 4, app(1, 1, vec![e(2, 2)], 1))],
            ..Ready::default()
        }
    );

    // Index 2 is now on the leader and node 2, a majority, but is of term 2: no commit.
    r.step(m(2, 1, 4, app_ok(2))).unwrap();
    assert_eq!(r.status().commit_index, 1);
    let rd = next(&mut r);
    assert_eq!(
        rd,
        Ready {
            number: rd.number,
            messages: vec![m(1, 2, 4, app(2, 2, vec![empty(3, 4)], 1))],
            ..Ready::default()
        }
    );

    // Once the term-4 entry is on a majority, it and everything before it commit.
    r.step(m(2, 1, 4, app_ok(3))).unwrap();
    let rd = next(&mut r);
    assert_eq!(
        rd,
        Ready {
            number: rd.number,
            messages: vec![m(1, 2, 4, app(3, 4, vec![], 3))],
            hard_state: None, // Only the commit index moved.
            committed_entries: vec![e(2, 2), empty(3, 4)],
            ..Ready::default()
        }
    );
}

/// Figure 7: a leader of term 8 meets each of the six follower logs (a)–(f) of the paper and
/// brings it to its own log: missing entries are added, extraneous ones removed. (etcd
/// `testLeaderSyncFollowerLog`)
#[test]
fn figure7_leader_repairs_each_follower_log() {
    let leader: &[Term] = &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6];
    // (follower's log terms, follower's current term, exchange between leader and follower)
    let followers: [(&[Term], Term, &[&str]); 6] = [
        (
            &[1, 1, 1, 4, 4, 5, 5, 6, 6],
            6,
            &["app (10,6) +1", "rej 10 hint (9,6)", "app (9,6) +2", "ok 11"],
        ),
        (&[1, 1, 1, 4], 4, &["app (10,6) +1", "rej 10 hint (4,4)", "app (4,4) +7", "ok 11"]),
        (&[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6], 6, &["app (10,6) +1", "ok 11"]),
        (&[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7], 7, &["app (10,6) +1", "ok 11"]),
        (
            &[1, 1, 1, 4, 4, 4, 4],
            4,
            &["app (10,6) +1", "rej 10 hint (7,4)", "app (5,4) +6", "ok 11"],
        ),
        (
            &[1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],
            3,
            &["app (10,6) +1", "rej 10 hint (10,3)", "app (3,1) +8", "ok 11"],
        ),
    ];
    for ((follower, follower_term, exchange), name) in followers.into_iter().zip('a'..) {
        // Node 3 shares the leader's log so that the leader can be elected in term 8.
        let mut net = cluster_with_logs(&[
            (log_of_terms(leader), 7),
            (log_of_terms(follower), follower_term),
            (log_of_terms(leader), 7),
        ]);

        net.elect(1);
        net.settle();

        assert_eq!(net.node(1).term(), 8, "({name})");
        assert_exchange(&net, exchange);
        let mut expected = log_of_terms(leader);
        expected.push(empty(11, 8));
        assert_eq!(whole_log(net.node(1)), expected, "({name}) leader");
        assert_eq!(whole_log(net.node(2)), expected, "({name}) follower");
        let durable = net.node(2).storage().entries(1, 12, u64::MAX).unwrap();
        assert_eq!(durable, expected, "({name}) durable");
        assert_eq!(net.node(2).storage().last_index().unwrap(), 11, "({name}) suffix removed");
        // The next heartbeat tells every follower that index 11 is committed.
        net.tick_all(1);
        for id in 1..=3 {
            assert_eq!(net.node(id).status().commit_index, 11, "({name}) node {id}");
            assert_eq!(net.applied[&id], expected, "({name}) node {id} applied");
        }
    }
}

// ------------------------------------------------------------------------------------------------
// §6.4 (dissertation) Linearizable reads

/// "If the leader has not yet marked an entry from its current term committed, it waits until it
/// has done so." The read index is the commit index *after* that, never the stale one the new
/// leader started with.
#[test]
fn s6_4_read_index_waits_for_commit_in_term() {
    // Indices 1–2 of term 1 are on this node's log, only 1 known committed.
    let log = log_of_terms(&[1, 1]);
    let mut r = node_with(Config::new(1), storage_with(&[1, 2, 3], &log, hs(1, None, 1)));
    elect(&mut r);
    drain(&mut r);
    assert_eq!((r.term(), r.status().commit_index), (2, 1));

    r.read_index(b(b"r")).unwrap();

    assert!(!r.has_ready(), "no heartbeat round, no read state before a commit in term 2");

    // Node 3 holds everything: the empty entry of term 2 (index 3) commits.
    r.step(m(3, 1, 2, app_ok(3))).unwrap();

    let rd = next(&mut r);
    assert_eq!(
        rd,
        Ready {
            number: rd.number,
            // The read's heartbeat round goes out first, then the commit index.
            messages: vec![
                m(1, 2, 2, hb(0, 1)),
                m(1, 3, 2, hb(3, 1)),
                m(1, 3, 2, app(3, 2, vec![], 3))
            ],
            hard_state: None, // Only the commit index moved.
            committed_entries: vec![e(2, 1), empty(3, 2)],
            ..Ready::default()
        }
    );

    r.step(m(3, 1, 2, hb_resp(1))).unwrap();

    let rd = next(&mut r);
    assert_eq!(rd, Ready { number: rd.number, read_states: vec![rs(b"r", 3)], ..Ready::default() });
}

/// "The leader [...] sends heartbeats to the other servers; once a majority has acknowledged the
/// heartbeat, it knows it was still the leader when the read arrived." Reads asked before a round
/// is sent share it; reads asked after it wait for the next one. (etcd `TestReadOnlyOptionSafe`)
#[test]
fn s6_4_read_index_confirmed_by_quorum_heartbeat() {
    let mut r = established(Config::new(1), &[1, 2, 3]);

    r.read_index(b(b"a")).unwrap();
    r.read_index(b(b"b")).unwrap();

    let rd = next(&mut r);
    assert_eq!(
        rd,
        Ready {
            number: rd.number,
            messages: vec![m(1, 2, 1, hb(1, 1)), m(1, 3, 1, hb(1, 1))],
            ..Ready::default()
        }
    );

    // Asked while round 1 is in flight: round 1 cannot vouch for it.
    r.read_index(b(b"c")).unwrap();
    // An acknowledgement of an older round confirms nothing.
    r.step(m(2, 1, 1, hb_resp(0))).unwrap();
    let rd = next(&mut r);
    assert_eq!(
        rd,
        Ready {
            number: rd.number,
            messages: vec![m(1, 2, 1, hb(1, 2)), m(1, 3, 1, hb(1, 2))],
            ..Ready::default()
        }
    );

    r.step(m(2, 1, 1, hb_resp(1))).unwrap();

    let rd = next(&mut r);
    assert_eq!(
        rd,
        Ready {
            number: rd.number,
            read_states: vec![rs(b"a", 1), rs(b"b", 1)],
            ..Ready::default()
        }
    );

    r.step(m(3, 1, 1, hb_resp(2))).unwrap();

    let rd = next(&mut r);
    assert_eq!(rd, Ready { number: rd.number, read_states: vec![rs(b"c", 1)], ..Ready::default() });
}

/// A follower forwards a read to its leader, which confirms it with a heartbeat round and answers
/// with the read index; the follower hands it out as a read state.
#[test]
fn follower_read_index_forwarded() {
    let mut f = node(2, &[1, 2, 3]);
    assert_eq!(f.read_index(b(b"f")), Err(Error::NoLeader));
    assert!(!f.has_ready());
    f.step(m(1, 2, 1, app(0, 0, vec![empty(1, 1)], 1))).unwrap();
    drain(&mut f);

    f.read_index(b(b"f")).unwrap();

    let rd = next(&mut f);
    assert_eq!(
        rd,
        Ready {
            number: rd.number,
            messages: vec![m(2, 1, 0, MessageBody::ReadIndex { ctx: b(b"f") })],
            ..Ready::default()
        }
    );

    let mut l = established(Config::new(1), &[1, 2, 3]);
    l.step(rd.messages[0].clone()).unwrap();
    let rd = next(&mut l);
    assert_eq!(rd.messages, vec![m(1, 2, 1, hb(1, 1)), m(1, 3, 1, hb(1, 1))]);
    l.step(m(3, 1, 1, hb_resp(1))).unwrap();
    let rd = next(&mut l);
    assert_eq!(
        rd,
        Ready {
            number: rd.number,
            messages: vec![m(1, 2, 1, MessageBody::ReadIndexResponse { ctx: b(b"f"), index: 1 })],
            ..Ready::default()
        }
    );

    f.step(rd.messages[0].clone()).unwrap();

    let rd = next(&mut f);
    assert_eq!(rd, Ready { number: rd.number, read_states: vec![rs(b"f", 1)], ..Ready::default() });
}

/// A leader that steps down gives up the reads it could not confirm yet, both those waiting for
/// a heartbeat round and those waiting for the first commit of its term: they come out in
/// `aborted_reads` (the driver answers "not the leader" at once). Reads forwarded by followers
/// are not this node's to answer.
#[test]
fn reads_pending_when_the_leader_steps_down_are_aborted() {
    let mut r = established(Config::new(1), &[1, 2, 3]);
    r.read_index(b(b"waits-for-round")).unwrap();
    r.step(m(2, 1, 0, MessageBody::ReadIndex { ctx: b(b"forwarded") })).unwrap();
    drain(&mut r);

    r.step(m(3, 1, 2, app(1, 1, vec![], 1))).unwrap();

    let rd = next(&mut r);
    assert_eq!(r.role(), Role::Follower);
    assert_eq!(rd.aborted_reads, vec![b(b"waits-for-round")]);
    assert!(rd.read_states.is_empty());

    // A new leader's reads before the first commit of its term are aborted too.
    let log = log_of_terms(&[1, 1]);
    let mut r = node_with(Config::new(1), storage_with(&[1, 2, 3], &log, hs(1, None, 1)));
    elect(&mut r);
    drain(&mut r);
    r.read_index(b(b"before-commit")).unwrap();
    assert!(!r.has_ready());
    r.step(m(2, 1, 3, hb(1, 1))).unwrap();
    let rd = next(&mut r);
    assert_eq!(rd.aborted_reads, vec![b(b"before-commit")]);
}

/// A follower's forwarded read can only be answered by the leader of its term: once the term
/// changes it is aborted, and a late answer of the old term (or a duplicate) serves nothing.
#[test]
fn forwarded_reads_are_aborted_when_the_term_changes() {
    let mut f = node(2, &[1, 2, 3]);
    f.step(m(1, 2, 1, app(0, 0, vec![empty(1, 1)], 1))).unwrap();
    drain(&mut f);
    f.read_index(b(b"f")).unwrap();
    drain(&mut f);

    // Term 2 begins (a new leader's heartbeat) before leader 1 answered.
    f.step(m(3, 2, 2, hb(1, 1))).unwrap();
    let rd = next(&mut f);
    assert_eq!(rd.aborted_reads, vec![b(b"f")]);

    f.step(m(1, 2, 1, MessageBody::ReadIndexResponse { ctx: b(b"f"), index: 1 })).unwrap();
    f.step(m(3, 2, 2, MessageBody::ReadIndexResponse { ctx: b(b"f"), index: 1 })).unwrap();
    assert!(!f.has_ready(), "nothing served for an aborted read");
}

// ------------------------------------------------------------------------------------------------
// Split-brain protection: PreVote (§9.6), CheckQuorum, leader stickiness, leases

/// A pre-vote changes no one's term or vote: neither the pre-candidate's nor the voter's, granted
/// or not. A node cut off from the others can campaign forever without raising its term.
#[test]
fn prevote_does_not_bump_terms() {
    let log = log_of_terms(&[1]);
    let mut r = node_with(Config::new(1), storage_with(&[1, 2, 3], &log, hs(1, None, 0)));

    r.campaign();

    let rd = next(&mut r);
    assert_eq!(
        rd,
        Ready {
            number: rd.number,
            messages: vec![m(1, 2, 2, prevote(1, 1)), m(1, 3, 2, prevote(1, 1))],
            ..Ready::default()
        }
    );
    r.step(m(2, 1, 1, prevote_resp(false))).unwrap();
    assert_eq!(r.role(), Role::PreCandidate);
    r.step(m(3, 1, 1, prevote_resp(false))).unwrap();
    let st = r.status();
    assert_eq!((st.role, st.term, st.vote), (Role::Follower, 1, None));
    assert!(!r.has_ready());

    // Partitioned: nobody answers, for many election timeouts.
    let mut campaigns = 0;
    for _ in 0..500 {
        r.tick();
        for rd in drain(&mut r) {
            assert_eq!(rd.hard_state, None);
            assert!(rd.messages.iter().all(|msg| msg.body == prevote(1, 1) && msg.term == 2));
            campaigns += 1;
        }
    }
    assert!(campaigns >= 25, "{campaigns} pre-campaigns in 500 ticks");
    assert_eq!((r.term(), r.status().vote), (1, None));

    // The voter's side: granting a pre-vote changes nothing durable.
    let mut v = node_with(Config::new(2), storage_with(&[1, 2, 3], &log, hs(1, Some(3), 0)));
    v.step(m(1, 2, 2, prevote(1, 1))).unwrap();
    let rd = v.ready();
    assert_eq!(
        rd,
        Ready {
            number: rd.number,
            messages: vec![m(2, 1, 2, prevote_resp(true))],
            ..Ready::default()
        }
    );
    let st = v.status();
    assert_eq!((st.role, st.term, st.vote), (Role::Follower, 1, Some(3)));
}

/// CheckQuorum: a leader that has not heard from a quorum during an election timeout steps down
/// (it may be on the minority side of a partition). (etcd `TestLeaderStepdownWhenQuorumLost`,
/// `TestLeaderStepdownWhenQuorumActive`)
#[test]
fn check_quorum_leader_steps_down_without_quorum() {
    // No follower ever answered.
    let mut r = elected(Config::new(1), &[1, 2, 3]);
    for t in 1..10 {
        r.tick();
        drain(&mut r);
        assert_eq!(r.role(), Role::Leader, "tick {t}");
    }

    r.tick();

    let st = r.status();
    assert_eq!((st.role, st.term, st.vote, st.leader_id), (Role::Follower, 1, Some(1), None));
    assert!(!r.has_ready(), "stepping down sends nothing and changes nothing durable");

    // Node 2 answers at least once per election timeout: 2 of 3 is a quorum, the leader stays.
    let mut r = established(Config::new(1), &[1, 2, 3]);
    for t in 1..=40 {
        r.tick();
        let rd = next(&mut r);
        let round = rd
            .messages
            .iter()
            .find_map(|msg| match msg.body {
                MessageBody::Heartbeat { round, .. } => Some(round),
                _ => None,
            })
            .expect("a heartbeat every tick");
        assert_eq!(r.role(), Role::Leader, "tick {t}");
        if t % 9 == 4 {
            r.step(m(2, 1, 1, hb_resp(round))).unwrap();
        }
    }
    // Last answer at tick 40: the leader leads through tick 49 and steps down at tick 50, one
    // election timeout after it last heard from a quorum (checked every tick, dissertation 6.2).
    for t in 41..50 {
        r.tick();
        drain(&mut r);
        assert_eq!(r.role(), Role::Leader, "tick {t}");
    }
    r.tick();
    assert_eq!(r.role(), Role::Follower);

    // Alone, a leader is its own quorum.
    let mut r = elected(Config::new(1), &[1]);
    for _ in 0..100 {
        r.tick();
        drain(&mut r);
    }
    assert_eq!(r.role(), Role::Leader);
}

/// A node that heard from a live leader within the election timeout ignores (pre-)vote requests
/// of a higher term, so a rejoining node cannot depose a healthy leader; a leadership transfer
/// (`force`) is exempt. (Dissertation §4.2.3; etcd `TestDisruptiveFollower`.)
#[test]
fn leader_lease_refuses_disruptive_vote() {
    let mut r = node(1, &[1, 2, 3]);
    r.step(m(2, 1, 1, hb(0, 1))).unwrap();
    drain(&mut r);
    for _ in 0..9 {
        r.tick();
    }
    assert!(!r.has_ready());

    r.step(m(3, 1, 2, vote(0, 0))).unwrap();
    r.step(m(3, 1, 2, prevote(0, 0))).unwrap();

    let st = r.status();
    assert_eq!((st.role, st.term, st.vote, st.leader_id), (Role::Follower, 1, None, Some(2)));
    assert!(!r.has_ready(), "ignored: no answer, no term change");

    // A forced vote (leadership transfer) ignores the lease.
    let mut forced = node(1, &[1, 2, 3]);
    forced.step(m(2, 1, 1, hb(0, 1))).unwrap();
    drain(&mut forced);
    forced
        .step(m(
            3,
            1,
            2,
            MessageBody::Vote { pre_vote: false, last_log_index: 0, last_log_term: 0, force: true },
        ))
        .unwrap();
    let rd = forced.ready();
    assert_eq!(
        rd,
        Ready {
            number: rd.number,
            hard_state: Some(hs(2, Some(3), 0)),
            persisted_messages: vec![m(1, 3, 2, vote_resp(true))],
            ..Ready::default()
        }
    );

    // One more tick: a full election timeout without the leader, the lease is over.
    r.tick();
    drain(&mut r); // Possibly its own pre-vote, if its randomized timeout is exactly 10.
    r.step(m(3, 1, 2, vote(0, 0))).unwrap();
    let rd = r.ready();
    assert_eq!(
        rd,
        Ready {
            number: rd.number,
            hard_state: Some(hs(2, Some(3), 0)),
            persisted_messages: vec![m(1, 3, 2, vote_resp(true))],
            ..Ready::default()
        }
    );

    // The leader itself refuses to be deposed while it is in contact with a quorum.
    let mut l = established(Config::new(1), &[1, 2, 3]);
    l.step(m(3, 1, 2, vote(5, 5))).unwrap();
    assert_eq!((l.role(), l.term()), (Role::Leader, 1));
    assert!(!l.has_ready());
}

/// Node 1 of voters `[1, 2, 3]`, a follower of term 1 with log `[1:1, 2:1, 3:1]`, whose
/// configuration came from the entry at index 2 (a membership change) and who has heard from no
/// leader (so no lease shields it).
fn member_after_change() -> Node {
    let s = storage_with(&[1, 2, 3], &log_of_terms(&[1, 1, 1]), hs(1, None, 3));
    s.set_conf_state(raft_core::ConfState {
        voters: vec![1, 2, 3],
        index: 2,
        ..Default::default()
    });
    node_with(Config::new(1), s)
}

/// A campaign from outside the configuration whose log does not reach past the entry that made
/// the configuration cannot know of a newer configuration that includes the candidate (it was
/// removed, or never added): it is ignored — no answer, no term change — so it cannot disrupt
/// the cluster. (Dissertation §4.2.3.)
#[test]
fn campaign_of_a_non_member_behind_the_configuration_is_ignored() {
    for last_log_index in [0, 1, 2] {
        let mut r = member_after_change();
        drain(&mut r);
        r.step(m(9, 1, 5, vote(last_log_index, 1))).unwrap();
        r.step(m(9, 1, 5, prevote(last_log_index, 1))).unwrap();
        let st = r.status();
        assert_eq!((st.role, st.term, st.vote), (Role::Follower, 1, None), "last {last_log_index}");
        assert!(!r.has_ready(), "ignored: no answer (candidate's last index {last_log_index})");
    }
}

/// A candidate outside our configuration whose log reaches past it may hold a newer
/// configuration that includes it (a new voter still catching up, dissertation §4.1), so it is
/// answered as usual; so is any candidate while the configuration is the bootstrap one (index
/// 0), which says nothing about who was added or removed since.
#[test]
fn campaign_of_a_non_member_that_may_know_a_newer_configuration_is_answered() {
    let mut r = member_after_change();
    drain(&mut r);
    r.step(m(9, 1, 5, vote(3, 1))).unwrap();
    let rd = r.ready();
    assert_eq!(
        rd,
        Ready {
            number: rd.number,
            hard_state: Some(hs(5, Some(9), 3)),
            persisted_messages: vec![m(
                1,
                9,
                5,
                MessageBody::VoteResponse {
                    pre_vote: false,
                    granted: true,
                    commit_index: 3,
                    commit_term: 1
                }
            )],
            ..Ready::default()
        }
    );

    let mut boot = node(1, &[1, 2, 3]);
    boot.step(m(9, 1, 5, vote(0, 0))).unwrap();
    let rd = boot.ready();
    assert_eq!(
        rd,
        Ready {
            number: rd.number,
            hard_state: Some(hs(5, Some(9), 0)),
            persisted_messages: vec![m(1, 9, 5, vote_resp(true))],
            ..Ready::default()
        }
    );
}

fn lease_config(id: NodeId) -> Config {
    let mut cfg = Config::new(id);
    cfg.read_mode = ReadMode::Lease;
    cfg
}

/// With lease reads, a node that (re)starts does not know whether it promised a leader its
/// lease before it went down, so it refuses votes for its first election timeout.
#[test]
fn lease_mode_restarted_voter_waits_an_election_timeout() {
    let mut r = node_with(lease_config(1), MemStorage::new_with_voters(&[1, 2, 3]));
    for _ in 0..9 {
        r.tick();
    }
    assert!(!r.has_ready());

    r.step(m(2, 1, 1, vote(0, 0))).unwrap();
    r.step(m(2, 1, 1, prevote(0, 0))).unwrap();

    assert_eq!((r.term(), r.status().vote), (0, None));
    assert!(!r.has_ready(), "ignored");

    r.tick();
    drain(&mut r); // Possibly its own pre-vote, if its randomized timeout is exactly 10.
    r.step(m(2, 1, 1, vote(0, 0))).unwrap();
    let rd = r.ready();
    assert_eq!(
        rd,
        Ready {
            number: rd.number,
            hard_state: Some(hs(1, Some(2), 0)),
            persisted_messages: vec![m(1, 2, 1, vote_resp(true))],
            ..Ready::default()
        }
    );
}

/// With `ReadMode::Lease`, a leader whose last heartbeat round a quorum acknowledged was sent
/// less than `lease_ticks()` ago answers reads at once, without a round of messages.
#[test]
fn lease_read_served_without_round_when_lease_valid() {
    let mut r = established(lease_config(1), &[1, 2, 3]);
    assert_eq!(r.config().lease_ticks(), 8); // 10 * 100 / 110 - 1
    r.tick(); // Round 1 is sent at tick 1.
    let rd = next(&mut r);
    assert_eq!(rd.messages, vec![m(1, 2, 1, hb(1, 1)), m(1, 3, 1, hb(1, 1))]);
    r.step(m(2, 1, 1, hb_resp(1))).unwrap();
    assert!(!r.has_ready());

    r.read_index(b(b"l1")).unwrap();

    let rd = next(&mut r);
    assert_eq!(
        rd,
        Ready { number: rd.number, read_states: vec![rs(b"l1", 1)], ..Ready::default() }
    );

    // Still valid at tick 8 (< 1 + 8), with unanswered rounds 2..=8 in between.
    for _ in 2..=8 {
        r.tick();
        drain(&mut r);
    }
    r.read_index(b(b"l2")).unwrap();
    let rd = next(&mut r);
    assert_eq!(
        rd,
        Ready { number: rd.number, read_states: vec![rs(b"l2", 1)], ..Ready::default() }
    );
}

/// Once the lease has run out the leader falls back to a ReadIndex round, and the answered round
/// renews the lease.
#[test]
fn lease_read_falls_back_after_lease_expiry() {
    let mut r = established(lease_config(1), &[1, 2, 3]);
    r.tick();
    drain(&mut r);
    r.step(m(2, 1, 1, hb_resp(1))).unwrap();
    for _ in 2..=9 {
        r.tick();
        drain(&mut r);
    }

    r.read_index(b(b"x")).unwrap();

    // Tick 9 is not before 1 + 8: a new round (rounds 1..=9 were sent by ticks).
    let rd = next(&mut r);
    assert_eq!(
        rd,
        Ready {
            number: rd.number,
            messages: vec![m(1, 2, 1, hb(1, 10)), m(1, 3, 1, hb(1, 10))],
            ..Ready::default()
        }
    );
    r.step(m(3, 1, 1, hb_resp(9))).unwrap();
    assert!(!r.has_ready(), "round 9 was sent before the read");

    r.step(m(3, 1, 1, hb_resp(10))).unwrap();

    let rd = next(&mut r);
    assert_eq!(rd, Ready { number: rd.number, read_states: vec![rs(b"x", 1)], ..Ready::default() });
    // Round 10 (sent at tick 9) renewed the lease.
    r.read_index(b(b"y")).unwrap();
    let rd = next(&mut r);
    assert_eq!(rd, Ready { number: rd.number, read_states: vec![rs(b"y", 1)], ..Ready::default() });
}

// ------------------------------------------------------------------------------------------------
// Proposals and flow control

/// A follower forwards proposals to the leader it knows; the leader appends and replicates them.
#[test]
fn proposal_forwarded_to_leader() {
    let mut f = node(2, &[1, 2, 3]);
    f.step(m(1, 2, 1, hb(0, 1))).unwrap();
    drain(&mut f);

    f.propose(b(b"p")).unwrap();

    let rd = next(&mut f);
    assert_eq!(
        rd,
        Ready {
            number: rd.number,
            messages: vec![m(2, 1, 0, MessageBody::Propose { data: vec![b(b"p")] })],
            ..Ready::default()
        }
    );

    let mut l = established(Config::new(1), &[1, 2, 3]);
    l.step(rd.messages[0].clone()).unwrap();

    let rd = l.ready();
    assert_eq!(
        rd,
        Ready {
            number: rd.number,
            messages: vec![
                m(1, 2, 1, app(1, 1, vec![data(2, 1, b"p")], 1)),
                m(1, 3, 1, app(1, 1, vec![data(2, 1, b"p")], 1)),
            ],
            hard_state: Some(hs(1, Some(1), 1)),
            entries: vec![data(2, 1, b"p")],
            ..Ready::default()
        }
    );
}

/// A leader refuses a forwarded proposal as it would refuse the local call (here: a leadership
/// transfer is in progress), and answers `Refused` echoing the payloads; so does a node that is
/// no longer the leader, naming the leader it knows. A refusal is handed out whatever its term
/// and changes nothing else; one carrying an error no request is refused with is invalid.
#[test]
fn refused_forwarded_proposals_are_answered() {
    let mut l = established(Config::new(1), &[1, 2, 3]);
    l.transfer_leader(3).unwrap();
    drain(&mut l);

    l.step(m(2, 1, 0, MessageBody::Propose { data: vec![b(b"p"), b(b"q")] })).unwrap();

    let rd = next(&mut l);
    let refused = MessageBody::Refused {
        request: Forwarded::Proposals(vec![b(b"p"), b(b"q")]),
        error: Error::TransferInProgress { target: 3 },
    };
    assert_eq!(
        rd,
        Ready { number: rd.number, messages: vec![m(1, 2, 1, refused)], ..Ready::default() }
    );
    assert_eq!(l.status().last_index, 1);

    // Node 1 follows node 3 in term 2 now; a proposal forwarded to it meanwhile is refused.
    l.step(m(3, 1, 2, hb(1, 1))).unwrap();
    drain(&mut l);
    l.step(m(2, 1, 0, MessageBody::Propose { data: vec![b(b"r")] })).unwrap();
    let rd = next(&mut l);
    let refused = MessageBody::Refused {
        request: Forwarded::Proposals(vec![b(b"r")]),
        error: Error::NotLeader { leader_hint: Some(3) },
    };
    assert_eq!(rd.messages, vec![m(1, 2, 2, refused.clone())]);

    // The requester, at term 5, hands out the refusal of term 2 and changes nothing else.
    let mut f = node_with(Config::new(2), storage_with(&[1, 2, 3], &[], hs(5, None, 0)));
    let before = f.status();
    f.step(m(1, 2, 2, refused)).unwrap();
    assert_eq!(f.status(), before);
    let rd = next(&mut f);
    let expected = Refused {
        request: Forwarded::Proposals(vec![b(b"r")]),
        error: Error::NotLeader { leader_hint: Some(3) },
    };
    assert_eq!(rd, Ready { number: rd.number, refused: vec![expected], ..Ready::default() });

    let bogus = MessageBody::Refused {
        request: Forwarded::Transfer(3),
        error: Error::UnknownReady { number: 1 },
    };
    assert!(matches!(f.step(m(1, 2, 5, bogus)), Err(Error::InvalidMessage { from: 1, .. })));
    assert!(!f.has_ready());
}

/// A request forwarded to the leader but still waiting in this node's outbox when the leader
/// changes is not sent to the old leader (which could only refuse it, or lead a term nobody
/// follows): it is refused at once, naming the new leader.
#[test]
fn forwards_not_yet_sent_when_the_leader_changes_are_refused() {
    let mut f = node(2, &[1, 2, 3]);
    f.step(m(1, 2, 1, hb(0, 1))).unwrap();
    drain(&mut f);
    f.propose(b(b"p")).unwrap();
    f.transfer_leader(3).unwrap();

    // Node 3 leads term 2 before the forwards left.
    f.step(m(3, 2, 2, hb(0, 1))).unwrap();

    let rd = f.ready();
    let not_leader = Error::NotLeader { leader_hint: Some(3) };
    assert_eq!(
        rd,
        Ready {
            number: rd.number,
            hard_state: Some(hs(2, None, 0)),
            persisted_messages: vec![m(2, 3, 2, hb_resp(1))],
            refused: vec![
                Refused { request: Forwarded::Proposals(vec![b(b"p")]), error: not_leader.clone() },
                Refused { request: Forwarded::Transfer(3), error: not_leader },
            ],
            ..Ready::default()
        }
    );
}

#[test]
fn proposal_without_leader_is_no_leader_error() {
    let mut r = node(1, &[1, 2, 3]);
    assert_eq!(r.propose(b(b"p")), Err(Error::NoLeader));
    assert!(!r.has_ready());

    r.campaign();
    drain(&mut r);
    assert_eq!(r.propose(b(b"p")), Err(Error::NoLeader), "pre-candidate");
    let mut c = node(1, &[1, 2, 3]);
    to_candidate(&mut c);
    drain(&mut c);
    assert_eq!(c.propose_batch(vec![b(b"p"), b(b"q")]), Err(Error::NoLeader), "candidate");
    assert!(!c.has_ready());
    assert_eq!(c.status().last_index, 0);
}

#[test]
fn forwarding_disabled_gives_not_leader_with_hint() {
    let mut cfg = Config::new(2);
    cfg.forward_proposals = false;
    let mut f = node_with(cfg, MemStorage::new_with_voters(&[1, 2, 3]));
    assert_eq!(f.propose(b(b"p")), Err(Error::NoLeader));
    f.step(m(3, 2, 1, hb(0, 1))).unwrap();
    drain(&mut f);

    assert_eq!(f.propose(b(b"p")), Err(Error::NotLeader { leader_hint: Some(3) }));

    assert!(!f.has_ready());
    assert_eq!(f.status().last_index, 0);
}

/// A leader refuses proposals while more than `max_uncommitted_bytes` are appended and not yet
/// committed (a lone proposal is always accepted), and accepts them again once they commit.
#[test]
fn uncommitted_limit_refuses_proposals() {
    let mut cfg = Config::new(1);
    cfg.max_uncommitted_bytes = 100;
    cfg.max_proposal_bytes = 100;
    let mut r = established(cfg, &[1, 2, 3]);
    let size = |payload: u64| payload + ENTRY_OVERHEAD_BYTES;

    r.propose(Bytes::from(vec![b'a'; 50])).unwrap(); // 74 bytes
    let refused = r.propose(Bytes::from(vec![b'b'; 10]));
    assert_eq!(
        refused,
        Err(Error::UncommittedLimit {
            uncommitted_bytes: size(50),
            proposal_bytes: size(10),
            limit: 100
        })
    );
    r.propose(Bytes::from(vec![b'c'; 2])).unwrap(); // 74 + 26 = 100: exactly at the limit
    assert_eq!(
        r.propose(Bytes::new()),
        Err(Error::UncommittedLimit {
            uncommitted_bytes: 100,
            proposal_bytes: size(0),
            limit: 100
        })
    );

    let rd = next(&mut r);
    assert_eq!(
        rd.entries.iter().map(|e| (e.index, e.data.len())).collect::<Vec<_>>(),
        vec![(2, 50), (3, 2)]
    );

    // Index 2 commits: its 74 bytes are released, 26 remain.
    r.step(m(2, 1, 1, app_ok(2))).unwrap();
    drain(&mut r);
    assert_eq!(
        r.propose(Bytes::from(vec![b'd'; 51])),
        Err(Error::UncommittedLimit {
            uncommitted_bytes: size(2),
            proposal_bytes: size(51),
            limit: 100
        })
    );
    r.propose(Bytes::from(vec![b'd'; 50])).unwrap();
    assert_eq!(r.status().last_index, 4);
}

#[test]
fn proposal_too_large() {
    let mut cfg = Config::new(1);
    cfg.max_proposal_bytes = 10;
    let mut r = established(cfg.clone(), &[1, 2, 3]);

    assert_eq!(
        r.propose(Bytes::from(vec![0; 11])),
        Err(Error::ProposalTooLarge { bytes: 11, limit: 10 })
    );
    assert_eq!(
        r.propose_batch(vec![b(b"ok"), Bytes::from(vec![0; 11])]),
        Err(Error::ProposalTooLarge { bytes: 11, limit: 10 }),
        "all or none"
    );
    assert!(!r.has_ready());
    assert_eq!(r.status().last_index, 1);
    r.propose(Bytes::from(vec![0; 10])).unwrap();
    assert_eq!(r.status().last_index, 2);

    // A follower refuses it too, instead of forwarding it.
    cfg.id = 2;
    let mut f = node_with(cfg, MemStorage::new_with_voters(&[1, 2, 3]));
    f.step(m(1, 2, 1, hb(0, 1))).unwrap();
    drain(&mut f);
    assert_eq!(
        f.propose(Bytes::from(vec![0; 11])),
        Err(Error::ProposalTooLarge { bytes: 11, limit: 10 })
    );
    assert!(!f.has_ready());
}

/// Replication to one follower is bounded by `max_inflight_msgs` appends and by
/// `max_inflight_bytes` of entries not yet acknowledged; acknowledgements reopen the window.
#[test]
fn inflight_window_bounds_messages_and_bytes() {
    // Count: two appends in flight.
    let mut cfg = Config::new(1);
    cfg.max_inflight_msgs = 2;
    let mut r = established(cfg, &[1, 2, 3]);
    let mut sent_to_2 = Vec::new();
    for (i, payload) in [b"2", b"3", b"4", b"5", b"6"].into_iter().enumerate() {
        r.propose(b(payload)).unwrap();
        let rd = next(&mut r);
        let to_2: Vec<_> = rd.messages.into_iter().filter(|msg| msg.to == 2).collect();
        assert_eq!(to_2.len(), usize::from(i < 2), "proposal {i}");
        sent_to_2.extend(to_2);
    }
    assert_eq!(
        sent_to_2,
        vec![
            m(1, 2, 1, app(1, 1, vec![data(2, 1, b"2")], 1)),
            m(1, 2, 1, app(2, 1, vec![data(3, 1, b"3")], 1)),
        ]
    );

    r.step(m(2, 1, 1, app_ok(2))).unwrap();

    // One slot opens: everything left goes in one append (it is within the size limits).
    let rd = next(&mut r);
    assert_eq!(
        rd,
        Ready {
            number: rd.number,
            messages: vec![m(
                1,
                2,
                1,
                app(3, 1, vec![data(4, 1, b"4"), data(5, 1, b"5"), data(6, 1, b"6")], 2)
            )],
            hard_state: None, // Only the commit index moved.
            committed_entries: vec![data(2, 1, b"2")],
            ..Ready::default()
        }
    );

    // Bytes: 100-byte entries, one per append, 300 bytes in flight.
    let mut cfg = Config::new(1);
    cfg.max_inflight_bytes = 300;
    cfg.max_append_bytes = 100;
    let mut r = established(cfg, &[1, 2]);
    let payload = Bytes::from(vec![b'x'; 100 - ENTRY_OVERHEAD_BYTES as usize]);
    let x = |index| Entry { term: 1, index, kind: EntryKind::Normal, data: payload.clone() };
    r.propose_batch(vec![payload.clone(); 6]).unwrap();
    let rd = next(&mut r);
    assert_eq!(rd.messages, vec![m(1, 2, 1, app(1, 1, vec![x(2)], 1))]);

    r.step(m(2, 1, 1, app_ok(2))).unwrap();

    let rd = next(&mut r);
    assert_eq!(
        rd.messages,
        vec![
            m(1, 2, 1, app(2, 1, vec![x(3)], 2)),
            m(1, 2, 1, app(3, 1, vec![x(4)], 2)),
            m(1, 2, 1, app(4, 1, vec![x(5)], 2)),
        ]
    );
    assert!(!r.has_ready(), "the window is full");

    r.step(m(2, 1, 1, app_ok(3))).unwrap();

    let rd = next(&mut r);
    assert_eq!(rd.messages, vec![m(1, 2, 1, app(5, 1, vec![x(6)], 3))]);

    // A follower still probing gets one append at a time whatever the window.
    let mut cfg = Config::new(1);
    cfg.max_inflight_msgs = 8;
    let mut r = elected(cfg, &[1, 2, 3]);
    for _ in 0..4 {
        r.propose(b(b"p")).unwrap();
        let rd = next(&mut r);
        assert!(rd.messages.is_empty(), "probes to 2 and 3 are unanswered: {:?}", rd.messages);
    }
}

/// At most `max_pending_reads` reads wait for confirmation; more are refused until some are
/// answered.
#[test]
fn read_queue_is_bounded() {
    let mut cfg = Config::new(1);
    cfg.max_pending_reads = 2;
    let mut r = elected(cfg.clone(), &[1, 2, 3]);
    // Waiting for the first commit of the term counts too.
    r.read_index(b(b"a")).unwrap();
    r.read_index(b(b"b")).unwrap();
    assert_eq!(r.read_index(b(b"c")), Err(Error::ReadQueueFull { limit: 2 }));

    r.step(m(2, 1, 1, app_ok(1))).unwrap();
    let rd = next(&mut r);
    assert_eq!(rd.messages[..2], [m(1, 2, 1, hb(1, 1)), m(1, 3, 1, hb(0, 1))]);
    assert_eq!(r.read_index(b(b"c")), Err(Error::ReadQueueFull { limit: 2 }));
    r.step(m(2, 1, 1, hb_resp(1))).unwrap();
    assert_eq!(next(&mut r).read_states, vec![rs(b"a", 1), rs(b"b", 1)]);

    r.read_index(b(b"c")).unwrap();
}

/// One `Ready` hands out at most `max_apply_bytes` of committed entries (at least one entry);
/// the rest follow in the next ones.
#[test]
fn committed_entries_bounded_by_max_apply_bytes() {
    let mut cfg = Config::new(1);
    cfg.max_apply_bytes = 2 * (ENTRY_OVERHEAD_BYTES + 1);
    let mut r = established(cfg, &[1, 2, 3]);
    r.propose_batch([b"2", b"3", b"4", b"5", b"6"].map(|d| b(d)).to_vec()).unwrap();
    drain(&mut r);

    r.step(m(2, 1, 1, app_ok(6))).unwrap();

    let applied: Vec<Vec<Index>> = drain(&mut r)
        .iter()
        .map(|rd| rd.committed_entries.iter().map(|e| e.index).collect())
        .collect();
    assert_eq!(applied, vec![vec![2, 3], vec![4, 5], vec![6]]);
}

/// A follower acknowledges an append only once the entries are durable: the answer is in
/// `persisted_messages`, never in `messages` (§5.3 and Figure 2: "respond after [...] stable
/// storage").
#[test]
fn append_response_sent_only_after_persistence() {
    let mut r = node(2, &[1, 2, 3]);

    r.step(m(1, 2, 1, app(0, 0, vec![empty(1, 1), data(2, 1, b"a")], 0))).unwrap();

    let rd = r.ready();
    assert_eq!(
        rd,
        Ready {
            number: rd.number,
            hard_state: Some(hs(1, None, 0)),
            entries: vec![empty(1, 1), data(2, 1, b"a")],
            persisted_messages: vec![m(2, 1, 1, app_ok(2))],
            ..Ready::default()
        }
    );

    // A second append before the first batch is durable: its own batch, its own answer.
    r.step(m(1, 2, 1, app(2, 1, vec![data(3, 1, b"b")], 2))).unwrap();
    let rd2 = r.ready();
    assert_eq!(
        rd2,
        Ready {
            number: rd2.number,
            hard_state: Some(hs(1, None, 2)),
            entries: vec![data(3, 1, b"b")],
            persisted_messages: vec![m(2, 1, 1, app_ok(3))],
            ..Ready::default()
        }
    );
    assert!(rd2.number > rd.number);
    persist(&mut r, &rd);
    persist(&mut r, &rd2);
    let rd = next(&mut r);
    assert_eq!(
        rd,
        Ready {
            number: rd.number,
            committed_entries: vec![empty(1, 1), data(2, 1, b"a")],
            ..Ready::default()
        }
    );
}

/// Figure 2 lists `commitIndex` as volatile state: a batch in which only the commit index moved
/// hands out no hard state and needs no fsync (`must_sync` is false), while a vote must be
/// durable before its answer leaves (`must_sync` is true; the commit index not written before
/// rides along). A restart from what was written resumes from the older commit index, never
/// below the state machine's applied index, and learns the rest from the leader.
#[test]
fn commit_index_alone_needs_no_sync_but_a_vote_does() {
    let mut f = node(2, &[1, 2, 3]);
    f.step(m(1, 2, 1, app(0, 0, vec![data(1, 1, b"a"), data(2, 1, b"b")], 0))).unwrap();
    let rd = next(&mut f);
    assert_eq!(rd.hard_state, Some(hs(1, None, 0)));
    assert!(rd.must_sync());

    f.step(m(1, 2, 1, hb(2, 1))).unwrap();

    let rd = next(&mut f);
    assert_eq!(
        rd,
        Ready {
            number: rd.number,
            persisted_messages: vec![m(2, 1, 1, hb_resp(1))],
            committed_entries: vec![data(1, 1, b"a"), data(2, 1, b"b")],
            ..Ready::default()
        }
    );
    assert!(!rd.must_sync(), "only the commit index moved");
    assert_eq!(f.hard_state(), hs(1, None, 2), "the latest commit index, for a clean shutdown");
    assert_eq!(f.storage().hard_state(), hs(1, None, 0), "not written");
    let restarted = Raft::restart(Config::new(2), f.storage().clone(), 2).unwrap();
    assert_eq!(restarted.status().commit_index, 2, "never below the applied index");

    // A transfer's forced vote (so leader stickiness does not ignore it).
    let forced =
        MessageBody::Vote { pre_vote: false, last_log_index: 2, last_log_term: 1, force: true };
    f.step(m(3, 2, 2, forced)).unwrap();

    let rd = f.ready();
    let granted = MessageBody::VoteResponse {
        pre_vote: false,
        granted: true,
        commit_index: 2,
        commit_term: 1,
    };
    assert_eq!(
        rd,
        Ready {
            number: rd.number,
            hard_state: Some(hs(2, Some(3), 2)),
            persisted_messages: vec![m(2, 3, 2, granted)],
            ..Ready::default()
        }
    );
    assert!(rd.must_sync());
}

/// A leader may send appends to its followers before its own write is durable (§10.2.1 of the
/// dissertation): they are in `messages`, in the same batch as the entries to persist. It may even
/// commit on its followers' acknowledgements, but hands entries out for applying only once they are
/// durable locally.
#[test]
fn leader_sends_appends_before_own_fsync() {
    let mut r = established(Config::new(1), &[1, 2, 3]);

    r.propose(b(b"x")).unwrap();

    let rd = r.ready();
    assert_eq!(
        rd,
        Ready {
            number: rd.number,
            messages: vec![
                m(1, 2, 1, app(1, 1, vec![data(2, 1, b"x")], 1)),
                m(1, 3, 1, app(1, 1, vec![data(2, 1, b"x")], 1)),
            ],
            // The commit of index 1 (by `established`) rides along with the entries.
            hard_state: Some(hs(1, Some(1), 1)),
            entries: vec![data(2, 1, b"x")],
            ..Ready::default()
        }
    );

    // Both followers hold index 2 before the leader's own fsync finished: a majority.
    r.step(m(2, 1, 1, app_ok(2))).unwrap();
    r.step(m(3, 1, 1, app_ok(2))).unwrap();
    assert_eq!(r.status().commit_index, 2);
    let rd2 = r.ready();
    assert_eq!(
        rd2,
        Ready {
            number: rd2.number,
            messages: vec![m(1, 2, 1, app(2, 1, vec![], 2)), m(1, 3, 1, app(2, 1, vec![], 2))],
            ..Ready::default()
        }
    );

    assert!(!r.has_ready(), "index 2 is committed but not durable here yet");

    persist(&mut r, &rd);

    let rd3 = r.ready();
    assert_eq!(
        rd3,
        Ready { number: rd3.number, committed_entries: vec![data(2, 1, b"x")], ..Ready::default() }
    );
    persist(&mut r, &rd2);
    persist(&mut r, &rd3);
    r.on_applied(2).unwrap();
    assert!(!r.has_ready());
}

/// A node rebuilt from what the `Ready` contract made durable is the node that was persisted:
/// same term, vote, commit and log. Work handed out and not persisted before a crash is lost.
#[test]
fn restart_from_persisted_state_is_exact() {
    let mut r = established(Config::new(1), &[1, 2, 3]);
    r.propose_batch(vec![b(b"a"), b(b"b")]).unwrap();
    drain(&mut r);
    r.step(m(2, 1, 1, app_ok(3))).unwrap();
    r.propose(b(b"c")).unwrap(); // Not committed.
    drain(&mut r);
    r.propose(b(b"lost")).unwrap();
    let unpersisted = r.ready();
    assert_eq!(unpersisted.entries, vec![data(5, 1, b"lost")]);

    let before = r.status();
    let storage = r.storage().clone();
    let restarted = Raft::restart(Config::new(1), storage.clone(), before.applied_index).unwrap();

    let after = restarted.status();
    assert_eq!(
        (before.term, before.vote, before.commit_index, before.applied_index),
        (1, Some(1), 3, 3)
    );
    assert_eq!(
        (after.term, after.vote, after.commit_index, after.applied_index),
        (1, Some(1), 3, 3)
    );
    assert_eq!((after.last_index, after.persisted_index), (4, 4));
    assert_eq!((after.role, after.leader_id), (Role::Follower, None));
    let expected = vec![empty(1, 1), data(2, 1, b"a"), data(3, 1, b"b"), data(4, 1, b"c")];
    assert_eq!(whole_log(&restarted), expected);
    assert_eq!(storage.hard_state(), hs(1, Some(1), 3));
    assert!(!restarted.has_ready(), "nothing to persist, send or apply");

    // Restarted with nothing applied, it hands the committed entries out again.
    let mut fresh = Raft::restart(Config::new(1), storage, 0).unwrap();
    let rd = fresh.ready();
    assert_eq!(
        rd,
        Ready { number: rd.number, committed_entries: expected[..3].to_vec(), ..Ready::default() }
    );
}

/// Malformed input is refused with `Error::InvalidMessage` and leaves the node exactly as it was:
/// no panic, no state change, no output.
#[test]
fn invalid_messages_are_errors_not_panics() {
    let log = log_of_terms(&[1, 1]);
    let fresh = || {
        let mut r = node_with(Config::new(1), storage_with(&[1, 2, 3], &log, hs(1, None, 1)));
        r.step(m(2, 1, 1, hb(1, 1))).unwrap();
        drain(&mut r);
        r
    };
    let big = u64::MAX;
    let cases: Vec<(&str, Message)> = vec![
        ("addressed to another node", m(2, 3, 1, hb(1, 2))),
        ("from node 0", m(0, 1, 1, hb(1, 2))),
        ("from itself", m(1, 1, 1, hb(1, 2))),
        ("huge term", m(2, 1, big, app(2, 1, vec![], 2))),
        ("huge term on a vote", m(3, 1, big, vote(2, 1))),
        ("huge prev index", m(2, 1, 1, app(big, 1, vec![], 2))),
        ("huge commit", m(2, 1, 1, app(2, 1, vec![], big))),
        ("huge heartbeat commit", m(2, 1, 1, hb(big, 2))),
        ("huge vote index", m(3, 1, 2, vote(big, 1))),
        ("gap after prev", m(2, 1, 1, app(2, 1, vec![e(4, 1)], 2))),
        ("gap between entries", m(2, 1, 1, app(2, 1, vec![e(3, 1), e(5, 1)], 2))),
        ("entries out of order", m(2, 1, 1, app(2, 1, vec![e(4, 1), e(3, 1)], 2))),
        ("entry from a later term", m(2, 1, 1, app(2, 1, vec![e(3, 2)], 2))),
        ("entry terms decrease", m(2, 1, 3, app(2, 1, vec![e(3, 3), e(4, 2)], 2))),
        ("entry before prev term", m(2, 1, 3, app(2, 2, vec![e(3, 1)], 2))),
        ("prev term beyond the message term", m(2, 1, 1, app(2, 2, vec![], 2))),
    ];
    for (name, msg) in cases {
        let mut r = fresh();
        let before = r.status();
        let from = msg.from;

        let res = r.step(msg);

        assert!(
            matches!(res, Err(Error::InvalidMessage { from: f, .. }) if f == from),
            "{name}: {res:?}"
        );
        assert_eq!(r.status(), before, "{name}");
        assert_eq!(whole_log(&r), log, "{name}");
        assert!(!r.has_ready(), "{name}");
    }
}

/// A leader's log only grows within its term, so an acknowledgement beyond its last index is a
/// malformed message (no correct follower can send it). Recording it would give node 2 a match
/// index for entries it never received, and the leader would commit them on node 2's word.
#[test]
fn append_ack_beyond_leader_log_is_invalid() {
    let mut r = established(Config::new(1), &[1, 2, 3]);
    let before = r.status();

    let res = r.step(m(2, 1, 1, app_ok(1000)));

    // Entries 2 and 3 are only on the leader: they must not commit.
    r.propose_batch(vec![b(b"a"), b(b"b")]).unwrap();
    let committed: Vec<Entry> =
        drain(&mut r).into_iter().flat_map(|rd| rd.committed_entries).collect();
    assert_eq!(committed, vec![], "committed without a quorum");
    assert!(matches!(res, Err(Error::InvalidMessage { from: 2, .. })), "{res:?}");
    assert_eq!((before.commit_index, r.status().commit_index), (1, 1));
}

/// A heartbeat answer can only echo a round the leader sent. An answer for a round not sent yet
/// is malformed; counting it would confirm reads that no quorum has vouched for.
#[test]
fn heartbeat_ack_of_unsent_round_is_invalid() {
    let mut r = established(Config::new(1), &[1, 2, 3]);
    r.read_index(b(b"r")).unwrap();
    let rd = next(&mut r);
    assert_eq!(rd.messages, vec![m(1, 2, 1, hb(1, 1)), m(1, 3, 1, hb(1, 1))]);
    // Node 2 acknowledges round 1: with the leader, a quorum. The read is confirmed.
    r.step(m(2, 1, 1, hb_resp(1))).unwrap();
    assert_eq!(next(&mut r).read_states, vec![rs(b"r", 1)]);

    // A read whose round (2) is not sent yet; node 3 "acknowledges" round 1000.
    r.read_index(b(b"s")).unwrap();
    let res = r.step(m(3, 1, 1, hb_resp(1000)));
    let rd = next(&mut r);
    assert_eq!(rd.messages, vec![m(1, 2, 1, hb(1, 2)), m(1, 3, 1, hb(1, 2))]);

    // A late duplicate of node 2's answer to round 1 arrives: still nobody received round 2.
    r.step(m(2, 1, 1, hb_resp(1))).unwrap();

    let reads: Vec<ReadState> = drain(&mut r).into_iter().flat_map(|rd| rd.read_states).collect();
    assert_eq!(reads, vec![], "read confirmed by a round no follower received");
    assert!(matches!(res, Err(Error::InvalidMessage { from: 3, .. })), "{res:?}");
}

/// After a follower that was paused (its probe in flight) acknowledges, the leader tells it the
/// commit index it missed, as etcd does (`stepLeader`, `MsgAppResp`: "This node may be missing
/// the latest commit index, so send it"), instead of leaving it to the next heartbeat.
#[test]
fn leader_sends_commit_to_follower_caught_up_after_commit() {
    let mut r = elected(Config::new(1), &[1, 2, 3]);
    r.step(m(3, 1, 1, app_ok(1))).unwrap();
    let rd = next(&mut r);
    // Node 2 is still paused on its probe, sent with commit 0.
    assert_eq!(rd.messages, vec![m(1, 3, 1, app(1, 1, vec![], 1))]);
    assert_eq!(rd.hard_state, None, "only the commit index moved");

    r.step(m(2, 1, 1, app_ok(1))).unwrap();

    let rd = r.ready();
    assert_eq!(
        rd,
        Ready {
            number: rd.number,
            messages: vec![m(1, 2, 1, app(1, 1, vec![], 1))],
            ..Ready::default()
        }
    );
}

/// Misusing the driver API is an error, not a panic or a silent no-op.
#[test]
fn driver_api_misuse_is_an_error() {
    let mut r = elected(Config::new(1), &[1, 2, 3]);
    assert_eq!(r.on_persisted(99), Err(Error::UnknownReady { number: 99 }));
    assert!(matches!(r.on_applied(5), Err(Error::AppliedBeyondCommitted { applied: 5, .. })));
    let mut cfg = Config::new(1);
    cfg.max_inflight_msgs = 0;
    assert!(matches!(
        Raft::new(cfg, MemStorage::new_with_voters(&[1])),
        Err(Error::InvalidConfig(_))
    ));
}
