//! Scripted scenarios for snapshots, membership changes and leadership transfer: rows 21–26 of
//! `shared/TESTING.md`, with exact expectations, on the synchronous `Harness`.

use bytes::Bytes;
use raft_core::testkit::harness::Harness;
use raft_core::{
    ConfChange, ConfChangeOp, ConfChangeTransition, Config, Error, Forwarded, MemStorage, Message,
    MessageBody, NodeId, Raft, Refused, Role, Storage,
};

fn cc(ops: Vec<ConfChangeOp>) -> ConfChange {
    ConfChange { ops, transition: ConfChangeTransition::Auto }
}

fn propose_n(h: &mut Harness, leader: NodeId, n: usize) {
    for i in 0..n {
        h.node_mut(leader).propose(Bytes::from(format!("v{i}"))).unwrap();
    }
    h.settle();
}

/// Adds node `id` (empty storage, no membership of its own) to the harness.
fn add_blank_node(h: &mut Harness, id: NodeId) {
    let node = Raft::new(Config::new(id), MemStorage::default()).unwrap();
    h.nodes.insert(id, node);
}

fn voters(h: &Harness, id: NodeId) -> (Vec<NodeId>, Vec<NodeId>, Vec<NodeId>) {
    let c = h.node(id).conf_state();
    (c.voters.clone(), c.voters_outgoing.clone(), c.learners.clone())
}

/// Row 21: add a learner, promote it, remove a voter; each single change applies directly and
/// every node agrees on the configuration.
#[test]
fn row21_add_learner_promote_and_remove() {
    let mut h = Harness::new(3);
    h.elect(1);
    propose_n(&mut h, 1, 3);
    add_blank_node(&mut h, 4);
    h.node_mut(1).propose_conf_change(cc(vec![ConfChangeOp::AddLearner(4)])).unwrap();
    h.settle();
    for id in 1..=4 {
        assert_eq!(voters(&h, id), (vec![1, 2, 3], vec![], vec![4]), "node {id}");
    }
    // The learner received the log but does not vote: a quorum is still 2 of {1,2,3}.
    assert_eq!(h.node(4).status().commit_index, h.node(1).status().commit_index);
    h.node_mut(1).propose_conf_change(cc(vec![ConfChangeOp::AddVoter(4)])).unwrap();
    h.settle();
    assert_eq!(voters(&h, 2), (vec![1, 2, 3, 4], vec![], vec![]));
    h.node_mut(1).propose_conf_change(cc(vec![ConfChangeOp::Remove(2)])).unwrap();
    h.settle();
    for id in [1, 3, 4] {
        assert_eq!(voters(&h, id), (vec![1, 3, 4], vec![], vec![]), "node {id}");
    }
    // The stored configuration is what a restart uses.
    assert_eq!(h.node(3).storage().initial_state().unwrap().conf_state.voters, vec![1, 3, 4]);
}

/// Row 21: a change of two voters goes through a joint configuration (majorities of both),
/// which the leader leaves automatically; only one change may be in progress at a time.
#[test]
fn row21_joint_consensus_auto_leave_and_one_change_at_a_time() {
    let mut h = Harness::new(3);
    h.elect(1);
    propose_n(&mut h, 1, 1);
    add_blank_node(&mut h, 4);
    add_blank_node(&mut h, 5);
    // New voters join as learners first (a blank node never votes).
    for id in [4, 5] {
        h.node_mut(1).propose_conf_change(cc(vec![ConfChangeOp::AddLearner(id)])).unwrap();
        h.settle();
    }
    let change =
        cc(vec![ConfChangeOp::AddVoter(4), ConfChangeOp::AddVoter(5), ConfChangeOp::Remove(3)]);
    h.node_mut(1).propose_conf_change(change).unwrap();
    // Before anything is applied, a second change is refused with a clear error.
    let second = h.node_mut(1).propose_conf_change(cc(vec![ConfChangeOp::Remove(2)]));
    assert!(matches!(second, Err(Error::ConfChangeInProgress { .. })), "{second:?}");
    // Deliver until the joint configuration is applied on the leader, but not yet left.
    h.process_readies();
    let mut saw_joint = false;
    while let Some(m) = h.queue.pop_front() {
        let to = m.to;
        if h.nodes.contains_key(&to) {
            let _ = h.node_mut(to).step(m);
        }
        h.process_readies();
        if !h.node(1).conf_state().voters_outgoing.is_empty() {
            saw_joint = true;
            assert_eq!(voters(&h, 1).0, vec![1, 2, 4, 5]);
            assert_eq!(voters(&h, 1).1, vec![1, 2, 3]);
        }
    }
    h.settle();
    assert!(saw_joint, "the change went through a joint configuration");
    for id in [1, 2, 4, 5] {
        assert_eq!(voters(&h, id), (vec![1, 2, 4, 5], vec![], vec![]), "node {id}");
    }
    // Node 3 is no longer a member; the next change is accepted once the last one applied.
    h.node_mut(1).propose_conf_change(cc(vec![ConfChangeOp::Remove(5)])).unwrap();
    h.settle();
    assert_eq!(voters(&h, 1).0, vec![1, 2, 4]);
}

/// Explicit joint: stays joint until told to leave; leaving when not joint is refused.
#[test]
fn row21_explicit_joint_needs_leave() {
    let mut h = Harness::new(3);
    h.elect(1);
    propose_n(&mut h, 1, 1);
    add_blank_node(&mut h, 4);
    h.node_mut(1).propose_conf_change(cc(vec![ConfChangeOp::AddLearner(4)])).unwrap();
    h.settle();
    let change = ConfChange {
        ops: vec![ConfChangeOp::AddVoter(4), ConfChangeOp::AddLearner(3)],
        transition: ConfChangeTransition::JointExplicit,
    };
    h.node_mut(1).propose_conf_change(change).unwrap();
    h.settle();
    h.tick_all(3);
    let c = h.node(2).conf_state().clone();
    assert_eq!(
        (c.voters, c.voters_outgoing, c.learners_next),
        (vec![1, 2, 4], vec![1, 2, 3], vec![3])
    );
    h.node_mut(1).propose_conf_change(ConfChange::leave_joint()).unwrap();
    h.settle();
    assert_eq!(voters(&h, 2), (vec![1, 2, 4], vec![], vec![3]));
    let again = h.node_mut(1).propose_conf_change(ConfChange::leave_joint());
    assert!(matches!(again, Err(Error::ConfChangeRefused { .. })), "{again:?}");
}

/// Row 22: removing the leader makes it step down once the change commits; it cannot disrupt
/// the others, who elect a new leader among themselves.
#[test]
fn row22_removed_leader_steps_down_and_cannot_disrupt() {
    let mut h = Harness::new(3);
    h.elect(1);
    propose_n(&mut h, 1, 2);
    h.node_mut(1).propose_conf_change(cc(vec![ConfChangeOp::Remove(1)])).unwrap();
    h.settle();
    assert_eq!(h.node(1).role(), Role::Follower);
    assert_eq!(voters(&h, 2).0, vec![2, 3]);
    let term_before = h.node(2).term();
    // The removed node knows it is out and does not campaign...
    h.node_mut(1).campaign();
    h.settle();
    assert!(h.node(1).role() != Role::Leader);
    // ... and a forged campaign in its name, even one ordered to bypass leases, is ignored by
    // the members that saw it removed: no term change, no vote.
    for to in [2, 3] {
        let vote = raft_core::Message {
            from: 1,
            to,
            term: term_before + 5,
            body: MessageBody::Vote {
                pre_vote: false,
                last_log_index: 1 << 20,
                last_log_term: term_before,
                force: true,
            },
        };
        h.node_mut(to).step(vote).unwrap();
    }
    h.settle();
    assert_eq!(h.node(2).term(), term_before, "the removed node raised a member's term");
    assert_eq!(h.node(3).term(), term_before, "the removed node raised a member's term");
    // The remaining members elect a leader and make progress.
    h.tick_all(40);
    let leaders = h.leaders();
    assert_eq!(leaders.len(), 1);
    assert!(leaders[0] == 2 || leaders[0] == 3);
    propose_n(&mut h, leaders[0], 1);
    assert_eq!(h.node(2).status().commit_index, h.node(3).status().commit_index);
}

/// Row 23: removing a partitioned node, then healing, leaves the cluster stable.
#[test]
fn row23_remove_partitioned_node_then_heal() {
    let mut h = Harness::new(5);
    h.elect(1);
    propose_n(&mut h, 1, 2);
    h.isolate(5);
    h.tick_all(30); // node 5 campaigns alone (PreVote keeps its term down)
    h.node_mut(1).propose_conf_change(cc(vec![ConfChangeOp::Remove(5)])).unwrap();
    h.settle();
    let term = h.node(1).term();
    h.heal();
    h.tick_all(50);
    assert_eq!(h.leaders(), vec![1]);
    assert_eq!(h.node(1).term(), term, "the healed, removed node disrupted the leader");
    assert_eq!(voters(&h, 2).0, vec![1, 2, 3, 4]);
}

/// Row 24: a follower behind the leader's compaction point catches up by snapshot, then by
/// appends; a duplicate (stale) snapshot is ignored.
#[test]
fn row24_follower_behind_compaction_catches_up_by_snapshot() {
    let mut h = Harness::new(3);
    h.elect(1);
    h.isolate(3);
    propose_n(&mut h, 1, 20);
    let snap_index = h.compact(1);
    assert_eq!(h.node(1).storage().first_index().unwrap(), snap_index + 1);
    h.heal();
    h.tick_all(3);
    assert_eq!(h.installed.get(&3), Some(&vec![snap_index]));
    propose_n(&mut h, 1, 2);
    let s1 = h.node(1).status();
    let s3 = h.node(3).status();
    assert_eq!(
        (s3.commit_index, s3.last_index, s3.snapshot_index),
        (s1.commit_index, s1.last_index, snap_index)
    );
    assert_eq!(h.node(3).storage().first_index().unwrap(), snap_index + 1);
    // Entries after the snapshot were applied normally on node 3.
    assert_eq!(h.applied_data(3).last(), Some(&Bytes::from("v1")));
    // Replaying the same snapshot is answered and ignored.
    let snap = h.node(1).storage().snapshot().unwrap();
    let term = h.node(1).term();
    let dup = raft_core::Message {
        from: 1,
        to: 3,
        term,
        body: MessageBody::InstallSnapshot { snapshot: snap },
    };
    h.node_mut(3).step(dup).unwrap();
    h.settle();
    assert_eq!(h.installed[&3], vec![snap_index]);
    assert_eq!(h.node(3).status().commit_index, s1.commit_index);
}

/// Row 25 (core part): a node restarted with a state machine older than its stored snapshot
/// is handed the snapshot to restore first, then only the entries after it: nothing twice.
#[test]
fn row25_restart_behind_snapshot_restores_then_applies_once() {
    let mut h = Harness::new(3);
    h.elect(1);
    propose_n(&mut h, 1, 10);
    let snap_index = h.compact(2);
    propose_n(&mut h, 1, 3); // committed entries after the snapshot
    let storage = h.node(2).storage().clone();
    // The commit of the last entries reached node 2 alone (no entries with it), so it was not
    // written; a clean shutdown writes the latest one.
    assert!(storage.initial_state().unwrap().hard_state.commit < snap_index + 3);
    storage.set_hard_state(h.node(2).hard_state());
    let commit = storage.initial_state().unwrap().hard_state.commit;
    assert_eq!(commit, snap_index + 3);
    let mut node = Raft::restart(Config::new(2), storage, 3).unwrap();
    let rd = node.ready();
    assert_eq!(rd.snapshot.as_ref().map(|s| s.meta.index), Some(snap_index));
    // Exactly the entries after the snapshot, once each.
    let indices: Vec<_> = rd.committed_entries.iter().map(|e| e.index).collect();
    assert_eq!(indices, (snap_index + 1..=commit).collect::<Vec<_>>());
    // A state machine already at the snapshot gets no snapshot again.
    let mut at_snapshot =
        Raft::restart(Config::new(2), h.node(2).storage().clone(), snap_index).unwrap();
    assert_eq!(at_snapshot.ready().snapshot, None);
    assert_eq!(at_snapshot.status().applied_index, snap_index);
}

/// Row 26: leadership transfer to an up-to-date node and to a lagging node; proposals are
/// refused during the transfer.
#[test]
fn row26_transfer_to_up_to_date_and_lagging_node() {
    let mut h = Harness::new(3);
    h.elect(1);
    propose_n(&mut h, 1, 3);
    h.node_mut(1).transfer_leader(2).unwrap();
    h.settle();
    assert_eq!(h.leaders(), vec![2]);
    // Lagging target: node 3 misses entries, then is the target.
    h.cut.insert((2, 3));
    propose_n(&mut h, 2, 5);
    assert!(h.node(3).status().last_index < h.node(2).status().last_index);
    h.heal();
    h.node_mut(2).transfer_leader(3).unwrap();
    let refused = h.node_mut(2).propose(Bytes::from_static(b"x"));
    assert!(matches!(refused, Err(Error::TransferInProgress { target: 3 })), "{refused:?}");
    h.settle();
    assert_eq!(h.leaders(), vec![3]);
    assert_eq!(h.node(3).status().last_index, h.node(2).status().last_index);
}

/// Row 26: a transfer to an unreachable node times out cleanly and proposals resume.
#[test]
fn row26_transfer_times_out_and_resumes() {
    let mut h = Harness::new(3);
    h.elect(1);
    propose_n(&mut h, 1, 1);
    h.isolate(3);
    h.node_mut(1).transfer_leader(3).unwrap();
    h.settle();
    assert_eq!(h.node(1).status().lead_transferee, Some(3));
    h.tick_all(usize::try_from(Config::new(1).election_timeout_ticks).unwrap() + 1);
    assert_eq!(h.leaders(), vec![1]);
    assert_eq!(h.node(1).status().lead_transferee, None);
    h.node_mut(1).propose(Bytes::from_static(b"after")).unwrap();
    h.settle();
    assert_eq!(h.applied_data(2).last(), Some(&Bytes::from_static(b"after")));
    let bad = h.node_mut(1).transfer_leader(9);
    assert!(matches!(bad, Err(Error::InvalidTransfer { target: 9, .. })), "{bad:?}");
}

/// A voter whose disk was wiped comes back blank: it must not vote (its vote could contradict one
/// it gave before), so a candidate lacking a committed entry cannot win with it. A fresh node
/// cannot become a voter without first joining as a caught-up learner.
#[test]
fn wiped_voter_is_not_counted_and_fresh_nodes_join_as_learners() {
    let mut h = Harness::new(3);
    h.elect(1);
    h.isolate(3);
    propose_n(&mut h, 1, 1); // committed on {1, 2} only
    let committed = h.node(1).status().commit_index;
    assert!(h.node(3).status().last_index < committed);
    // Node 2 loses its disk and restarts blank; node 1 is down.
    h.nodes.insert(2, Raft::new(Config::new(2), MemStorage::default()).unwrap());
    h.nodes.remove(&1);
    h.heal();
    h.sent.clear();
    for _ in 0..5 {
        h.node_mut(3).campaign();
        h.settle();
    }
    assert_ne!(h.node(3).role(), Role::Leader, "won with the vote of a wiped node");
    let granted = h.count_sent(|b| matches!(b, MessageBody::VoteResponse { granted: true, .. }));
    assert_eq!(granted, 0, "a blank node granted a (pre-)vote");

    let mut h = Harness::new(3);
    h.elect(1);
    propose_n(&mut h, 1, 1);
    add_blank_node(&mut h, 4);
    let direct = h.node_mut(1).propose_conf_change(cc(vec![ConfChangeOp::AddVoter(4)]));
    assert!(matches!(direct, Err(Error::ConfChangeRefused { .. })), "{direct:?}");
    h.node_mut(1).propose_conf_change(cc(vec![ConfChangeOp::AddLearner(4)])).unwrap();
    h.settle();
    h.node_mut(1).propose_conf_change(cc(vec![ConfChangeOp::AddVoter(4)])).unwrap();
    h.settle();
    assert_eq!(voters(&h, 4).0, vec![1, 2, 3, 4]);
}

/// Delivers queued messages one at a time (dropping those on cut links) until `stop` holds.
fn deliver_until(h: &mut Harness, mut stop: impl FnMut(&Harness) -> bool) {
    h.process_readies();
    while !stop(h) {
        let m = h.queue.pop_front().expect("the network went quiet first");
        if !h.cut.contains(&(m.from, m.to)) && h.nodes.contains_key(&m.to) {
            let to = m.to;
            let _ = h.node_mut(to).step(m);
        }
        h.process_readies();
    }
}

/// Issue 18 (46 of the 51 failing simulator seeds, e.g. 13148, 27531): the leader of two
/// voters removes itself. The other voter acknowledged the change, so it is committed, but the
/// messages that would have told it so are lost, and the removed leader appended one more entry
/// before stepping down. Now the remaining voter still counts the removed node as a voter and
/// needs its vote, while the removed node refuses (its log is longer) and, no longer a voter,
/// never campaigns: no leader, ever. The refusal carries the voter's commit index and term, so
/// the candidate learns that the change is committed, applies it and leads alone.
#[test]
fn remaining_voter_learns_a_committed_removal_of_the_leader_from_a_refused_vote() {
    let mut h = Harness::new(2);
    h.elect(2);
    propose_n(&mut h, 2, 1);
    h.node_mut(2).propose_conf_change(cc(vec![ConfChangeOp::Remove(2)])).unwrap();
    let change_index = h.node(2).status().last_index;
    // Node 1 appends the change and acknowledges it; then everything 2 → 1 is lost.
    deliver_until(&mut h, |h| h.node(1).status().last_index == change_index);
    h.cut.insert((2, 1));
    h.node_mut(2).propose(Bytes::from_static(b"late")).unwrap();
    deliver_until(&mut h, |h| h.node(2).role() != Role::Leader);
    h.settle();
    assert_eq!(voters(&h, 2).0, vec![1], "the removal is committed and applied on node 2");
    assert_eq!(voters(&h, 1).0, vec![1, 2], "node 1 has not heard that it is committed");
    assert!(h.node(2).status().last_index > h.node(1).status().last_index);

    h.heal();
    let et = usize::try_from(Config::new(1).election_timeout_ticks).unwrap();
    h.tick_all(6 * et);
    assert_eq!(h.leaders(), vec![1], "the remaining voter leads");
    assert_eq!(voters(&h, 1).0, vec![1]);
    h.node_mut(1).propose(Bytes::from_static(b"after")).unwrap();
    h.settle();
    assert_eq!(h.applied_data(1).last(), Some(&Bytes::from_static(b"after")));
}

/// The commit index in a vote answer is only taken where the candidate's log holds the same
/// entry: a candidate whose entry at that index is of another term (so its log differs there)
/// commits nothing from it.
#[test]
fn commit_index_in_a_vote_answer_needs_the_same_entry() {
    let mut h = Harness::new(3);
    h.elect(1);
    propose_n(&mut h, 1, 2);
    h.isolate(1);
    h.isolate(2);
    h.isolate(3);
    // Node 1 appends two entries of its term that nobody else gets.
    h.node_mut(1).propose(Bytes::from_static(b"lost-a")).unwrap();
    h.node_mut(1).propose(Bytes::from_static(b"lost-b")).unwrap();
    h.settle();
    let st = h.node(1).status();
    let (term, last, commit) = (st.term, st.last_index, st.commit_index);
    assert!(last > commit);
    let answer = |commit_index, commit_term| Message {
        from: 2,
        to: 1,
        term: term + 5,
        body: MessageBody::VoteResponse {
            pre_vote: false,
            granted: false,
            commit_index,
            commit_term,
        },
    };
    // A higher term makes node 1 a follower (a leader counts its own commits).
    h.node_mut(1).step(answer(0, 0)).unwrap();
    assert_eq!(h.node(1).role(), Role::Follower);
    // Another term at `last`: the logs differ there, nothing is learned.
    h.node_mut(1).step(answer(last, term + 1)).unwrap();
    assert_eq!(h.node(1).status().commit_index, commit, "committed from a different entry");
    // Beyond the log: nothing either.
    h.node_mut(1).step(answer(last + 1, term)).unwrap();
    assert_eq!(h.node(1).status().commit_index, commit);
    // The same entry: everything up to it is committed.
    h.node_mut(1).step(answer(last, term)).unwrap();
    assert_eq!(h.node(1).status().commit_index, last);
}

/// A voter removed while cut off never receives the entry that removes it, so it can never see
/// its removal committed: it would campaign forever (ignored by everyone). The first member it
/// asks answers `Removed`; it then knows (`is_removed`), stops campaigning, and its term stays.
/// A learner removed while cut off hears it from the leader directly.
#[test]
fn a_node_removed_while_cut_off_learns_it_from_the_members() {
    let mut h = Harness::new(3);
    h.elect(1);
    propose_n(&mut h, 1, 1);
    h.isolate(3);
    h.node_mut(1).propose_conf_change(cc(vec![ConfChangeOp::Remove(3)])).unwrap();
    h.settle();
    assert_eq!(voters(&h, 1).0, vec![1, 2]);
    assert_eq!(voters(&h, 3).0, vec![1, 2, 3], "node 3 never got the change");
    assert!(!h.node(3).is_removed());

    h.heal();
    h.sent.clear();
    let et = usize::try_from(Config::new(3).election_timeout_ticks).unwrap();
    h.tick_all(3 * et);
    assert!(h.node(3).is_removed(), "told by a member");
    assert!(h.node(3).status().removed);
    assert!(h.count_sent(|b| *b == MessageBody::Removed) >= 1);
    let term = h.node(3).term();
    let campaigns = |h: &Harness| h.count_sent(|b| matches!(b, MessageBody::Vote { .. }));
    let before = campaigns(&h);
    h.tick_all(5 * et);
    assert_eq!(campaigns(&h), before, "a removed node does not campaign");
    assert_eq!(h.node(3).term(), term);
    assert_eq!(h.leaders(), vec![1]);
    assert!(!h.node(1).is_removed() && !h.node(2).is_removed());

    // A learner never campaigns, so nobody would ever answer it: the leader tells it when it
    // applies its removal (here that message is lost, then delivered by hand).
    let mut h = Harness::new(3);
    h.elect(1);
    add_blank_node(&mut h, 4);
    h.node_mut(1).propose_conf_change(cc(vec![ConfChangeOp::AddLearner(4)])).unwrap();
    h.settle();
    h.cut.insert((1, 4));
    h.sent.clear();
    h.node_mut(1).propose_conf_change(cc(vec![ConfChangeOp::Remove(4)])).unwrap();
    h.settle();
    assert!(!h.node(4).is_removed());
    let told: Vec<_> =
        h.sent.iter().filter(|m| m.to == 4 && m.body == MessageBody::Removed).cloned().collect();
    assert_eq!(told.len(), 1, "the leader tells the learner once");
    h.node_mut(4).step(told[0].clone()).unwrap();
    assert!(h.node(4).is_removed());

    // A stranger's word changes nothing.
    let mut h = Harness::new(3);
    h.elect(1);
    let claim = raft_core::Message { from: 9, to: 2, term: 1, body: MessageBody::Removed };
    h.node_mut(2).step(claim).unwrap();
    assert!(!h.node(2).is_removed());
}

/// A candidate that applies its own removal while votes are on their way stops campaigning: the
/// remaining voters' grants must not make it the leader of a configuration it is not in. (Found
/// by the hand-off assertion in `become_leader`, simulator seed 539.)
#[test]
fn a_candidate_removed_mid_campaign_does_not_become_leader() {
    use raft_core::{ConfState, Entry, EntryKind, HardState};
    let storage = MemStorage::new_with_voters(&[1, 2, 3, 4]);
    let removal = ConfState { voters: vec![1, 2, 4], ..Default::default() };
    storage
        .append(&[
            Entry { term: 1, index: 1, kind: EntryKind::Normal, data: Bytes::new() },
            Entry { term: 1, index: 2, kind: EntryKind::ConfChange, data: removal.encode() },
        ])
        .unwrap();
    storage.set_hard_state(HardState { term: 1, vote: None, commit: 1 });
    let mut cfg = Config::new(3);
    cfg.pre_vote = false;
    let mut r = Raft::new(cfg, storage).unwrap();
    let drive = |r: &mut Raft<MemStorage>| {
        while r.has_ready() {
            let rd = r.ready();
            r.storage().append(&rd.entries).unwrap();
            if let Some(hs) = rd.hard_state {
                r.storage().set_hard_state(hs);
            }
            r.on_persisted(rd.number).unwrap();
            if let Some(e) = rd.committed_entries.last() {
                r.on_applied(e.index).unwrap();
            }
        }
    };
    drive(&mut r);
    r.campaign();
    drive(&mut r);
    assert_eq!((r.role(), r.term()), (Role::Candidate, 2));
    let answer = |from, granted, commit_index| Message {
        from,
        to: 3,
        term: 2,
        body: MessageBody::VoteResponse { pre_vote: false, granted, commit_index, commit_term: 1 },
    };
    // Node 1 refuses, and its answer says index 2 (the removal) is committed.
    r.step(answer(1, false, 2)).unwrap();
    drive(&mut r);
    assert_eq!(r.conf_state().voters, vec![1, 2, 4]);
    assert!(r.is_removed());
    assert_eq!(r.role(), Role::Follower, "removed mid-campaign: no longer a candidate");
    // Grants from a quorum of the new configuration arrive: nothing happens.
    r.step(answer(2, true, 0)).unwrap();
    r.step(answer(4, true, 0)).unwrap();
    drive(&mut r);
    assert_eq!(r.role(), Role::Follower);
}

// ------------------------------------------------------------------------------------------------
// Requests forwarded to the leader, and their refusals

/// A follower that knows the leader forwards a membership change (`ProposeConfChange`); the
/// leader proposes it as if asked itself, and it commits on every node. A node that knows no
/// leader, or does not forward, refuses at once as before.
#[test]
fn conf_change_forwarded_from_a_follower_commits() {
    let mut h = Harness::new(3);
    h.elect(1);
    propose_n(&mut h, 1, 1);
    add_blank_node(&mut h, 4);

    h.node_mut(2).propose_conf_change(cc(vec![ConfChangeOp::AddLearner(4)])).unwrap();
    h.settle();

    for id in 1..=4 {
        assert_eq!(voters(&h, id), (vec![1, 2, 3], vec![], vec![4]), "node {id}");
    }
    let forwarded = h.count_sent(|b| matches!(b, MessageBody::ProposeConfChange { .. }));
    assert_eq!(forwarded, 1);
    assert_eq!(h.refused.get(&2), None);
    // Promoting it, asked of the other follower once it caught up, commits too.
    h.node_mut(3).propose_conf_change(cc(vec![ConfChangeOp::AddVoter(4)])).unwrap();
    h.settle();
    assert_eq!(voters(&h, 1).0, vec![1, 2, 3, 4]);

    let change = || cc(vec![ConfChangeOp::Remove(3)]);
    let mut lone = Raft::new(Config::new(2), MemStorage::new_with_voters(&[1, 2, 3])).unwrap();
    assert_eq!(lone.propose_conf_change(change()), Err(Error::NoLeader));
    let mut cfg = Config::new(2);
    cfg.forward_proposals = false;
    let mut h = Harness::with_config(3, |id| if id == 2 { cfg.clone() } else { Config::new(id) });
    h.elect(1);
    let refused = h.node_mut(2).propose_conf_change(change());
    assert_eq!(refused, Err(Error::NotLeader { leader_hint: Some(1) }));
}

/// A follower forwards a leadership transfer (`TransferLeader`), to another node or to itself,
/// and the leader carries it out as if asked itself.
#[test]
fn transfer_forwarded_from_a_follower_happens() {
    let mut h = Harness::new(3);
    h.elect(1);
    propose_n(&mut h, 1, 2);

    h.node_mut(3).transfer_leader(2).unwrap();
    h.settle();
    assert_eq!(h.leaders(), vec![2]);

    h.node_mut(3).transfer_leader(3).unwrap();
    h.settle();
    assert_eq!(h.leaders(), vec![3]);
    assert_eq!(h.count_sent(|b| matches!(b, MessageBody::TransferLeader { .. })), 2);
    assert_eq!(h.refused.get(&3), None);
}

/// A forwarded proposal the leader refuses (here: `max_uncommitted_bytes`) is answered with
/// `Refused`, which echoes its payload; the follower hands it out in `Ready::refused`, so its
/// caller hears at once instead of waiting for a timeout. The accepted one commits.
#[test]
fn forwarded_proposal_refused_by_the_leader_comes_back_with_its_payload() {
    let mut h = Harness::with_config(3, |id| {
        let mut cfg = Config::new(id);
        cfg.max_uncommitted_bytes = 100;
        cfg.max_proposal_bytes = 100;
        cfg
    });
    h.elect(1);
    let (first, second) = (Bytes::from(vec![b'a'; 50]), Bytes::from(vec![b'b'; 10]));
    h.node_mut(2).propose(first.clone()).unwrap();
    h.node_mut(2).propose(second.clone()).unwrap();
    h.process_readies();
    // Both arrive before anything commits: 74 bytes are in flight, 34 more would exceed 100.
    let forwarded: Vec<Message> = h.queue.drain(..).collect();
    assert_eq!(forwarded.len(), 2);
    for m in forwarded {
        assert!(matches!(m.body, MessageBody::Propose { .. }), "{m:?}");
        h.node_mut(1).step(m).unwrap();
    }

    h.settle();

    let refusal = Refused {
        request: Forwarded::Proposals(vec![second]),
        error: Error::UncommittedLimit { uncommitted_bytes: 74, proposal_bytes: 34, limit: 100 },
    };
    assert_eq!(h.refused.get(&2), Some(&vec![refusal]));
    assert_eq!(h.applied_data(2), vec![first]);
}

/// A forwarded membership change the leader refuses comes back in `Ready::refused` with the
/// leader's error: a blank node made a voter directly, or a change while another is pending; a
/// forwarded transfer to a non-voter likewise.
#[test]
fn forwarded_conf_change_refused_by_the_leader_comes_back() {
    let mut h = Harness::new(3);
    h.elect(1);
    propose_n(&mut h, 1, 1);
    add_blank_node(&mut h, 4);
    let direct = cc(vec![ConfChangeOp::AddVoter(4)]);

    h.node_mut(2).propose_conf_change(direct.clone()).unwrap();
    h.settle();

    let reason = "node 4 must join as a learner first and catch up".to_string();
    let refusal = Refused {
        request: Forwarded::ConfChange(direct),
        error: Error::ConfChangeRefused { reason },
    };
    assert_eq!(h.refused.get(&2), Some(&vec![refusal]));
    assert_eq!(voters(&h, 1), (vec![1, 2, 3], vec![], vec![]));

    // One change at a time: the leader proposed one; the forwarded one arrives before it applied.
    h.node_mut(1).propose_conf_change(cc(vec![ConfChangeOp::AddLearner(4)])).unwrap();
    let pending_index = h.node(1).status().last_index;
    let second = cc(vec![ConfChangeOp::Remove(3)]);
    h.node_mut(3).propose_conf_change(second.clone()).unwrap();
    h.process_readies();
    let forwarded: Vec<Message> = h.queue.iter().filter(|m| m.from == 3).cloned().collect();
    h.queue.retain(|m| m.from != 3);
    for m in forwarded {
        h.node_mut(1).step(m).unwrap();
    }
    h.settle();
    let refusal = Refused {
        request: Forwarded::ConfChange(second),
        error: Error::ConfChangeInProgress { pending_index },
    };
    assert_eq!(h.refused.get(&3), Some(&vec![refusal]));
    assert_eq!(voters(&h, 3), (vec![1, 2, 3], vec![], vec![4]));

    h.node_mut(2).transfer_leader(4).unwrap();
    h.settle();
    let refused = &h.refused[&2][1];
    assert_eq!(refused.request, Forwarded::Transfer(4));
    assert!(matches!(refused.error, Error::InvalidTransfer { target: 4, .. }), "{refused:?}");
    assert_eq!(h.leaders(), vec![1]);
}
