//! The embedding API on a follower: membership changes, leadership transfer and read barriers
//! are forwarded to the leader and answered where they were asked, and the change stream sees
//! them.

use std::time::Duration;

use bytes::Bytes;
use raft_core::runtime::{NodeError, NodeEvent, ReadConsistency};
use raft_core::{ConfChange, ConfChangeOp, ConfChangeTransition, Error, MemStorage, NodeId};

use super::cluster::Cluster;
use super::{defaults, seed};

fn follower(c: &Cluster, leader: NodeId) -> NodeId {
    c.members.keys().copied().find(|&i| i != leader).expect("a follower")
}

#[tokio::test(start_paused = true)]
async fn add_voter_on_a_follower_adds_a_learner_and_promotes_it_once_caught_up() {
    let mut c = Cluster::new(3, seed(), defaults).await;
    let l = c.leader().await;
    let f = follower(&c, l);
    for i in 0..50 {
        c.propose(l, &format!("set k{i} {i}")).await;
    }
    c.start(4, MemStorage::default(), &[1, 2, 3, 4]).await;
    let mut events = c.node(f).events();
    let conf = c.node(f).add_voter(4, "mem://4", Bytes::from_static(b"four")).await.unwrap();
    assert_eq!(conf.voters, vec![1, 2, 3, 4]);
    assert!(conf.learners.is_empty(), "{conf:?}");
    assert_eq!(c.node(f).members()[&4].meta, "four");
    // The change stream saw the learner first, then the voter.
    let mut seen = Vec::new();
    while let Ok(ev) = events.try_recv() {
        if let NodeEvent::Membership(cs) = ev {
            seen.push((cs.voters.contains(&4), cs.learners.contains(&4)));
        }
    }
    assert_eq!(seen, vec![(false, true), (true, false)]);
    c.converged().await;
    assert_eq!(c.node(4).read(ReadConsistency::Stale, "k49").await.unwrap(), "49");
    c.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn learner_promote_and_remove_on_a_follower() {
    let mut c = Cluster::new(3, seed(), defaults).await;
    let l = c.leader().await;
    let f = follower(&c, l);
    c.propose(l, "set k v").await;
    c.start(4, MemStorage::default(), &[1, 2, 3, 4]).await;
    let conf = c.node(f).add_learner(4, "mem://4", Bytes::new()).await.unwrap();
    assert_eq!(conf.learners, vec![4]);
    c.converged().await;
    let conf = c.node(f).promote(4).await.unwrap();
    assert_eq!(conf.voters, vec![1, 2, 3, 4]);
    let gone = c.members.keys().copied().find(|&i| i != l && i != f).unwrap();
    let conf = c.node(f).remove(gone).await.unwrap();
    assert!(!conf.voters.contains(&gone), "{conf:?}");
    c.crash(gone).await;
    assert_eq!(c.propose(4, "incr n").await, "1");
    c.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn joint_change_on_a_follower() {
    let mut c = Cluster::new(3, seed(), defaults).await;
    let l = c.leader().await;
    let f = follower(&c, l);
    let gone = c.members.keys().copied().find(|&i| i != l && i != f).unwrap();
    c.start(4, MemStorage::default(), &[1, 2, 3, 4]).await;
    // A voter the core does not know yet is refused, at once, with the leader's reason.
    let direct = ConfChange { ops: vec![ConfChangeOp::AddVoter(4)], ..Default::default() };
    let refused = c.node(f).change_membership(direct).await;
    assert!(
        matches!(refused, Err(NodeError::Raft(Error::ConfChangeRefused { .. }))),
        "{refused:?}"
    );
    c.node(f).add_learner(4, "mem://4", Bytes::new()).await.unwrap();
    c.converged().await;
    // Replace `gone` by 4 in one step, through a joint configuration left explicitly.
    let change = ConfChange {
        ops: vec![ConfChangeOp::AddVoter(4), ConfChangeOp::Remove(gone)],
        transition: ConfChangeTransition::JointExplicit,
    };
    let joint = c.node(f).change_membership(change).await.unwrap();
    assert!(!joint.voters_outgoing.is_empty(), "joint: {joint:?}");
    let left = c.node(f).change_membership(ConfChange::leave_joint()).await.unwrap();
    assert!(left.voters_outgoing.is_empty() && left.voters.contains(&4), "{left:?}");
    assert!(!left.voters.contains(&gone));
    c.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn transfer_leadership_asked_of_a_follower() {
    let c = Cluster::new(3, seed(), defaults).await;
    let l = c.leader().await;
    let f = follower(&c, l);
    let to = c.members.keys().copied().find(|&i| i != l && i != f).unwrap();
    let mut events = c.node(f).events();
    c.node(f).transfer_leadership(to).await.unwrap();
    assert_eq!(c.node(f).leader(), Some(to));
    let lead = loop {
        match events.recv().await.unwrap() {
            NodeEvent::Leader { leader: Some(who), is_self, .. } => break (who, is_self),
            _ => continue,
        }
    };
    assert_eq!(lead, (to, false));
    // And to itself.
    c.node(f).transfer_leadership(f).await.unwrap();
    assert_eq!(c.leader().await, f);
    c.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn read_barrier_on_a_follower_covers_every_acknowledged_write() {
    let c = Cluster::new(3, seed(), defaults).await;
    let l = c.leader().await;
    let f = follower(&c, l);
    // The follower misses a write acknowledged by the other two: before the barrier its
    // state lacks it, after the barrier it must have it.
    c.net.cut(l, f);
    c.propose(l, "set k v1").await;
    let acked = c.node(l).read_barrier().await.unwrap();
    assert_ne!(c.node(f).read(ReadConsistency::Stale, "k").await.unwrap(), "v1", "it lags");
    c.net.heal();
    let index = c.node(f).read_barrier().await.unwrap();
    assert!(index >= acked, "barrier at {index}, write applied on the leader at {acked}");
    assert_eq!(c.node(f).read(ReadConsistency::Stale, "k").await.unwrap(), "v1");
    c.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn read_barrier_without_a_leader_fails_fast_or_times_out() {
    let c = Cluster::new(3, seed(), defaults).await;
    let l = c.leader().await;
    let f = follower(&c, l);
    c.net.isolate(f);
    let r = tokio::time::timeout(Duration::from_secs(30), c.node(f).read_barrier()).await;
    assert!(matches!(r, Ok(Err(_))), "{r:?}");
    c.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_proposal_the_leader_refuses_is_answered_with_its_reason() {
    let c = Cluster::new(3, seed(), defaults).await;
    let l = c.leader().await;
    let f = follower(&c, l);
    let to = c.members.keys().copied().find(|&i| i != l && i != f).unwrap();
    c.propose(l, "set k v").await;
    // A transfer to a node that cannot hear it stays in progress for an election timeout; the
    // leader refuses proposals meanwhile, and the follower's caller hears why at once (without
    // the refusal it would wait for `proposal_timeout` and get `Timeout`).
    c.net.isolate(to);
    let leader = c.node(l).clone();
    let transfer = tokio::spawn(async move { leader.transfer_leadership(to).await });
    tokio::task::yield_now().await;
    let r = c.node(f).propose("set k v2").await;
    assert!(matches!(r, Err(NodeError::Raft(Error::TransferInProgress { .. }))), "{r:?}");
    assert!(transfer.await.unwrap().is_err(), "the transfer cannot finish");
    c.net.heal();
    c.shutdown().await;
}
