//! The runtime ([`raft_core::runtime::Node`]) in in-process clusters of 1, 3 and 5 nodes on an
//! in-memory network, under tokio's paused clock: time advances only when every task waits, so
//! runs are fast and elections follow the printed seed.

mod api;
mod chaos;
mod cluster;
mod metrics;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cluster::{Cluster, Kv, node_config};
use raft_core::runtime::{
    Command, MemNetwork, Node, NodeConfig, NodeError, ReadConsistency, SnapshotBuilder,
    StateMachine, StateMachineError, mailbox,
};
use raft_core::{MemStorage, ReadMode, Role};

fn defaults(_: &mut NodeConfig) {}

fn seed() -> u64 {
    std::env::var("RAFT_RT_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(7)
}

#[tokio::test(start_paused = true)]
async fn single_node_proposes_and_reads_at_every_consistency() {
    let c = Cluster::new(1, seed(), defaults).await;
    assert_eq!(c.leader().await, 1);
    assert_eq!(c.propose(1, "set a 1").await, Bytes::from_static(b""));
    assert_eq!(c.propose(1, "set a 2").await, Bytes::from_static(b"1"), "previous value");
    let n = c.node(1);
    assert_eq!(n.read(ReadConsistency::Linearizable, "a").await.unwrap(), "2");
    assert_eq!(n.read(ReadConsistency::Stale, "a").await.unwrap(), "2");
    assert_eq!(
        n.read(ReadConsistency::Lease, "a").await,
        Err(NodeError::LeaseReadsDisabled),
        "lease reads need ReadMode::Lease"
    );
    c.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn lease_reads_when_configured() {
    fn lease(cfg: &mut NodeConfig) {
        cfg.raft.read_mode = ReadMode::Lease;
    }
    let c = Cluster::new(3, seed(), lease).await;
    let l = c.leader().await;
    c.propose(l, "set k v").await;
    let f = (1..=3).find(|&i| i != l).unwrap();
    for id in [l, f] {
        assert_eq!(c.node(id).read(ReadConsistency::Lease, "k").await.unwrap(), "v");
        assert_eq!(c.node(id).read(ReadConsistency::Linearizable, "k").await.unwrap(), "v");
    }
    c.shutdown().await;
}

/// Proposals through the leader and through followers (forwarded, §8), reads on every node.
#[tokio::test(start_paused = true)]
async fn three_nodes_replicate_forward_and_read_linearizably() {
    let c = Cluster::new(3, seed(), defaults).await;
    let l = c.leader().await;
    for (i, id) in (1..=3).cycle().take(30).enumerate() {
        c.propose(id, &format!("set k{} {}", i % 5, i)).await;
    }
    assert_eq!(c.propose(l, "incr n").await, "1");
    let f = (1..=3).find(|&i| i != l).unwrap();
    assert_eq!(c.propose(f, "incr n").await, "2", "forwarded by a follower");
    // A linearizable read on any node sees every write acknowledged before it started.
    for id in 1..=3 {
        assert_eq!(c.node(id).read(ReadConsistency::Linearizable, "n").await.unwrap(), "2");
    }
    let applied = c.converged().await;
    assert_eq!(applied.len(), 32);
    c.assert_same_applied();
    c.shutdown().await;
}

/// §5.2: when the leader crashes the others elect a new one and keep serving.
#[tokio::test(start_paused = true)]
async fn five_nodes_survive_leader_crashes() {
    let mut c = Cluster::new(5, seed(), defaults).await;
    let mut crashed = Vec::new();
    for round in 0..2 {
        let l = c.leader().await;
        c.propose(l, &format!("set before{round} x")).await;
        crashed.push((l, c.crash(l).await));
        let l2 = c.leader().await;
        assert_ne!(l, l2);
        assert_eq!(c.propose(l2, "incr after").await, (round + 1).to_string());
        let any = *c.members.keys().next().unwrap();
        let got = c.node(any).read(ReadConsistency::Linearizable, format!("before{round}")).await;
        assert_eq!(got.unwrap(), "x", "a committed write survives its leader");
    }
    // The crashed nodes restart from their storage and catch up.
    for (id, storage) in crashed {
        c.start(id, storage, &[1, 2, 3, 4, 5]).await;
    }
    c.propose(c.leader().await, "set final 1").await;
    c.converged().await;
    c.assert_same_applied();
    c.shutdown().await;
}

/// Leadership transfer (§3.10 of the dissertation) and graceful shutdown of the leader.
#[tokio::test(start_paused = true)]
async fn transfer_and_graceful_shutdown_move_leadership() {
    let mut c = Cluster::new(3, seed(), defaults).await;
    let l = c.leader().await;
    let target = (1..=3).find(|&i| i != l).unwrap();
    c.node(l).transfer_leadership(target).await.unwrap();
    assert_eq!(c.leader().await, target);
    c.propose(l, "set after-transfer 1").await;

    // Graceful shutdown of the new leader: leadership moves before it stops.
    let leader = c.members.remove(&target).unwrap();
    leader.node.shutdown().await;
    c.net.leave(target);
    let next = c.leader().await;
    assert_ne!(next, target);
    let s = c.node(next).status();
    assert!(s.term > 0 && s.role == Role::Leader);
    assert_eq!(c.propose(next, "incr z").await, "1");
    assert!(leader.node.status().stopped.is_some());
    assert_eq!(leader.node.propose("incr z").await, Err(NodeError::ShuttingDown));
    c.shutdown().await;
}

/// Membership (§6): add a learner, which catches up by snapshot because the log was compacted;
/// promote it; remove another member.
#[tokio::test(start_paused = true)]
async fn membership_changes_and_snapshot_catch_up() {
    fn small_snapshots(cfg: &mut NodeConfig) {
        cfg.snapshot_entries = 20;
    }
    let mut c = Cluster::new(3, seed(), small_snapshots).await;
    let l = c.leader().await;
    for i in 0..100 {
        c.propose(l, &format!("set k{i} {i}")).await;
    }
    c.converged().await;
    assert!(c.node(l).metrics().snapshots_taken >= 4, "{:?}", c.node(l).metrics());
    let compacted = c.node(l).wait_for(Duration::from_secs(1), |s| s.snapshot_index >= 80).await;
    assert!(compacted.is_ok(), "log compacted by the snapshots: {:?}", c.node(l).status());

    // A blank node 4 joins as a learner.
    c.start(4, MemStorage::default(), &[1, 2, 3, 4]).await;
    let cs = c.node(l).add_learner(4, "mem://4", Bytes::new()).await.unwrap();
    assert_eq!(cs.learners, vec![4]);
    c.converged().await;
    assert_eq!(c.node(4).metrics().snapshots_installed, 1, "caught up by snapshot");
    assert_eq!(c.node(4).read(ReadConsistency::Stale, "k99").await.unwrap(), "99");
    assert_eq!(c.node(4).read(ReadConsistency::Linearizable, "k5").await.unwrap(), "5");

    // Promote (it is caught up), then remove a follower.
    let cs = c.node(l).promote(4).await.unwrap();
    assert_eq!(cs.voters, vec![1, 2, 3, 4]);
    let gone = (1..=3).find(|&i| i != l).unwrap();
    let cs = c.node(l).remove(gone).await.unwrap();
    assert!(!cs.voters.contains(&gone));
    assert_eq!(c.node(l).members().keys().copied().collect::<Vec<_>>(), cs.voters);
    c.crash(gone).await;
    assert_eq!(c.propose(4, "incr after-membership").await, "1");
    c.converged().await;
    c.assert_same_applied();
    c.shutdown().await;
}

/// Restart from storage: every node stops and restarts with an empty state machine, which is
/// rebuilt from the snapshot and the log.
#[tokio::test(start_paused = true)]
async fn whole_cluster_restarts_from_storage() {
    fn snapshots(cfg: &mut NodeConfig) {
        cfg.snapshot_entries = 15;
    }
    let mut c = Cluster::new(3, seed(), snapshots).await;
    let l = c.leader().await;
    for i in 0..40 {
        c.propose(l, &format!("incr c{}", i % 3)).await;
    }
    c.converged().await;
    let mut storages = Vec::new();
    for id in 1..=3 {
        storages.push((id, c.crash(id).await));
    }
    for (id, storage) in storages {
        c.start(id, storage, &[1, 2, 3]).await;
    }
    let l = c.leader().await;
    for id in 1..=3 {
        // 40 increments over 3 keys: 14, 13, 13.
        let got = c.node(id).read(ReadConsistency::Linearizable, "c0").await.unwrap();
        assert_eq!(got, "14", "node {id}");
    }
    assert_eq!(c.propose(l, "incr c1").await, "14");
    c.shutdown().await;
}

/// Exactly-once (dissertation §6.3): a request retried after a leader change, and retried on
/// several nodes at once, is applied once and always answered with the original response.
#[tokio::test(start_paused = true)]
async fn session_retries_across_leader_changes_apply_once() {
    let mut c = Cluster::new(3, seed(), defaults).await;
    let l = c.leader().await;
    let session = c.node(l).open_session().await.unwrap();
    let first = session.request("incr x");
    assert_eq!(c.node(l).propose_request(&first).await.unwrap(), "1");

    // The client did not hear the answer; the leader crashes; it retries elsewhere.
    c.crash(l).await;
    let l2 = c.leader().await;
    assert_eq!(c.node(l2).propose_request(&first).await.unwrap(), "1", "original response");
    let f = *c.members.keys().find(|&&i| i != l2).unwrap();
    assert_eq!(c.node(f).propose_request(&first).await.unwrap(), "1", "retry via follower");

    // Concurrent retries of a new request on both nodes: applied once.
    let second = session.request("incr x");
    let (a, b) =
        tokio::join!(c.node(l2).propose_request(&second), c.node(f).propose_request(&second));
    assert_eq!((a.unwrap(), b.unwrap()), (Bytes::from("2"), Bytes::from("2")));
    assert_eq!(c.node(l2).read(ReadConsistency::Linearizable, "x").await.unwrap(), "2");
    let applied = c.converged().await;
    let incrs = applied.iter().filter(|(_, cmd)| cmd == "incr x").count();
    assert_eq!(incrs, 2, "each request applied exactly once: {applied:?}");

    // An older request than the last one is refused, an unknown session too.
    assert!(matches!(
        c.node(l2).propose_request(&first).await,
        Err(NodeError::StaleRequest { seq: 1, last_seq: 2, .. })
    ));
    let bogus = raft_core::runtime::Session::resume(999_999, 0).request("incr x");
    assert_eq!(
        c.node(l2).propose_request(&bogus).await,
        Err(NodeError::SessionExpired { client: 999_999 })
    );
    c.shutdown().await;
}

/// Sessions expire through the log: after `session_idle_entries` other entries.
#[tokio::test(start_paused = true)]
async fn sessions_expire_by_log_index() {
    fn short(cfg: &mut NodeConfig) {
        cfg.session_idle_entries = 10;
    }
    let c = Cluster::new(1, seed(), short).await;
    c.leader().await;
    let s = c.node(1).open_session().await.unwrap();
    assert_eq!(c.node(1).propose_request(&s.request("incr y")).await.unwrap(), "1");
    for _ in 0..11 {
        c.propose(1, "incr other").await;
    }
    assert_eq!(
        c.node(1).propose_request(&s.request("incr y")).await,
        Err(NodeError::SessionExpired { client: s.client_id() })
    );
    c.shutdown().await;
}

/// Limits: a node refuses requests beyond `max_pending_requests` with `TooBusy` instead of
/// queueing without bound; a follower without forwarding answers `NotLeader` with a hint.
#[tokio::test(start_paused = true)]
async fn limits_and_not_leader() {
    fn tight(cfg: &mut NodeConfig) {
        cfg.max_pending_requests = 4;
        cfg.max_batch_commands = 4;
        cfg.raft.forward_proposals = false;
    }
    let c = Cluster::new(3, seed(), tight).await;
    let l = c.leader().await;
    let f = (1..=3).find(|&i| i != l).unwrap();
    assert_eq!(
        c.node(f).propose("set a 1").await,
        Err(NodeError::NotLeader { leader_hint: Some(l) })
    );
    // Isolate the leader so nothing commits, then fill its pending requests.
    c.net.isolate(l);
    let node = c.node(l).clone();
    let pending: Vec<_> = (0..4)
        .map(|i| {
            let n = node.clone();
            tokio::spawn(async move { n.propose(format!("set p{i} 1")).await })
        })
        .collect();
    tokio::task::yield_now().await;
    while node.metrics().pending_requests < 4 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(matches!(node.propose("set over 1").await, Err(NodeError::TooBusy(_))));
    for p in pending {
        // The isolated leader steps down (CheckQuorum) or the proposals time out.
        assert!(p.await.unwrap().is_err());
    }
    c.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn invalid_config_is_refused_at_start() {
    let mut cfg = node_config(1, 1, &[1]);
    cfg.max_batch_commands = cfg.max_pending_requests + 1;
    let (mb, inbox) = mailbox(16);
    let t = MemNetwork::new().join(1, mb);
    let r = Node::start(cfg, MemStorage::new_with_voters(&[1]), t, Kv::default(), inbox).await;
    let err = r.expect_err("refused");
    assert!(err.to_string().contains("max_batch_commands"), "{err}");
}

/// Joint consensus (§6): replace two of three voters in one change; the cluster goes through
/// the joint configuration and leaves it by itself.
#[tokio::test(start_paused = true)]
async fn joint_change_replaces_two_voters_at_once() {
    let mut c = Cluster::new(3, seed(), defaults).await;
    let l = c.leader().await;
    c.propose(l, "set a 1").await;
    for id in [4, 5] {
        c.start(id, MemStorage::default(), &[1, 2, 3, 4, 5]).await;
        c.node(l).add_learner(id, format!("mem://{id}"), Bytes::new()).await.unwrap();
    }
    c.converged().await;
    let keep = l;
    let gone: Vec<u64> = (1..=3).filter(|&i| i != keep).collect();
    let change = raft_core::ConfChange {
        ops: vec![
            raft_core::ConfChangeOp::AddVoter(4),
            raft_core::ConfChangeOp::AddVoter(5),
            raft_core::ConfChangeOp::Remove(gone[0]),
            raft_core::ConfChangeOp::Remove(gone[1]),
        ],
        ..Default::default()
    };
    let cs = c.node(l).change_membership(change).await.unwrap();
    let mut expected = vec![keep, 4, 5];
    expected.sort_unstable();
    assert_eq!(cs.voters, expected);
    assert!(cs.voters_outgoing.is_empty(), "left the joint configuration: {cs:?}");
    for id in gone {
        c.crash(id).await;
    }
    let l2 = c.leader().await;
    assert_eq!(c.propose(l2, "incr j").await, "1");
    assert_eq!(c.node(4).read(ReadConsistency::Linearizable, "a").await.unwrap(), "1");
    c.converged().await;
    c.assert_same_applied();
    c.shutdown().await;
}

/// A [`Kv`] whose snapshot builder, run off the apply task, waits until the test opens a gate.
struct SlowSnapshots {
    kv: Kv,
    gate: Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
}

impl StateMachine for SlowSnapshots {
    fn apply(&mut self, commands: &[Command<'_>]) -> Result<Vec<Bytes>, StateMachineError> {
        self.kv.apply(commands)
    }
    fn query(&self, query: &[u8]) -> Result<Bytes, StateMachineError> {
        self.kv.query(query)
    }
    fn snapshot(&mut self) -> Result<Bytes, StateMachineError> {
        self.kv.snapshot()
    }
    fn restore(&mut self, data: &[u8]) -> Result<(), StateMachineError> {
        self.kv.restore(data)
    }
    fn snapshot_builder(&mut self) -> Result<SnapshotBuilder, StateMachineError> {
        let data = self.kv.snapshot()?;
        let gate = self.gate.clone();
        Ok(Box::new(move || {
            let (open, cv) = &*gate;
            let mut open = open.lock().unwrap();
            while !*open {
                open = cv.wait(open).unwrap();
            }
            Ok(data)
        }))
    }
}

/// A snapshot being built does not hold up applying (multi-thread runtime, real time): with the
/// builder stuck, later proposals are still applied; once it finishes the snapshot is stored,
/// the log compacted, and a restart restores from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applying_goes_on_while_a_snapshot_is_built() {
    let gate = Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
    let storage = MemStorage::new_with_voters(&[1]);
    let start = |storage: MemStorage, gate| async move {
        let mut cfg = node_config(1, seed(), &[1]);
        cfg.snapshot_entries = 10;
        cfg.proposal_timeout = Duration::from_secs(60);
        let (mb, inbox) = mailbox(16);
        let t = MemNetwork::new().join(1, mb);
        let sm = SlowSnapshots { kv: Kv::default(), gate };
        Node::start(cfg, storage, t, sm, inbox).await.unwrap()
    };
    let node = start(storage.clone(), gate.clone()).await;
    node.wait_for(Duration::from_secs(60), |s| s.role == Role::Leader).await.unwrap();
    // The first snapshot starts after 10 applied entries and cannot finish yet; a caller of
    // `snapshot()` waits for that one.
    for i in 0..12 {
        node.propose(format!("set k{i} {i}")).await.unwrap();
    }
    let waiting = tokio::spawn({
        let node = node.clone();
        async move { node.snapshot().await }
    });
    for i in 0..50 {
        assert_eq!(node.propose("incr n").await.unwrap(), format!("{}", i + 1));
    }
    assert_eq!(node.status().snapshot_index, 0, "nothing stored while the builder is stuck");
    {
        let (open, cv) = &*gate;
        *open.lock().unwrap() = true;
        cv.notify_all();
    }
    let index = waiting.await.unwrap().unwrap();
    assert!((10..=13).contains(&index), "the snapshot under way, at {index}");
    node.wait_for(Duration::from_secs(60), |s| s.snapshot_index >= index).await.unwrap();
    // Later snapshots go through too (the gate stays open).
    let later = node.snapshot().await.unwrap();
    assert!(later > index + 40, "{later} after {index}");
    node.stop().await;

    let node = start(storage, gate).await;
    node.wait_for(Duration::from_secs(60), |s| s.role == Role::Leader).await.unwrap();
    assert_eq!(node.read(ReadConsistency::Linearizable, "n").await.unwrap(), "50");
    assert_eq!(node.read(ReadConsistency::Linearizable, "k11").await.unwrap(), "11");
    node.stop().await;
}

/// A proposal forwarded by a follower and lost on the way (here: the link to the leader is cut)
/// fails with `Overtaken` as soon as a later proposal of the same follower is applied, instead of
/// waiting out its timeout; and it is indeed never applied.
#[tokio::test(start_paused = true)]
async fn a_forwarded_proposal_lost_on_the_way_fails_fast_as_overtaken() {
    fn slow_timeouts(cfg: &mut NodeConfig) {
        cfg.proposal_timeout = Duration::from_secs(3600);
    }
    let c = Cluster::new(3, seed(), slow_timeouts).await;
    let l = c.leader().await;
    let f = (1..=3).find(|&i| i != l).unwrap();
    c.propose(f, "set before 1").await;
    c.net.cut(f, l);
    let lost = tokio::spawn({
        let node = c.node(f).clone();
        async move { node.propose("set lost 1").await }
    });
    tokio::task::yield_now().await;
    // Let the forward go out (and be dropped) before the link comes back.
    tokio::time::sleep(Duration::from_millis(1)).await;
    c.net.heal();
    assert_eq!(c.propose(f, "set after 1").await, "");
    assert_eq!(lost.await.unwrap(), Err(NodeError::Overtaken));
    let applied = c.converged().await;
    assert!(
        applied.iter().all(|(_, cmd)| cmd != "set lost 1"),
        "a proposal reported dropped was applied: {applied:?}"
    );
    assert_eq!(c.node(f).read(ReadConsistency::Linearizable, "lost").await.unwrap(), "");
    c.shutdown().await;
}

/// Reads waiting for a leader's confirmation when it steps down (on the leader itself, and on
/// a follower whose forwarded read the old leader never answered) are answered at once with
/// `NotLeader`, so the caller retries on the new leader instead of waiting out `read_timeout`.
#[tokio::test(start_paused = true)]
async fn reads_pending_at_step_down_are_answered_not_leader() {
    fn patient(cfg: &mut NodeConfig) {
        cfg.read_timeout = Duration::from_secs(3600);
    }
    let c = Cluster::new(3, seed(), patient).await;
    let l = c.leader().await;
    let f = (1..=3).find(|&i| i != l).unwrap();
    c.propose(l, "set k v").await;
    // Cut off, the leader cannot confirm its read, and CheckQuorum makes it step down; the
    // follower's read, forwarded to it, is lost, and the next term aborts it.
    c.net.isolate(l);
    let read = |id| {
        let node = c.node(id).clone();
        tokio::spawn(async move { node.read(ReadConsistency::Linearizable, "k").await })
    };
    let (on_leader, on_follower) = (read(l), read(f));
    let on_leader = on_leader.await.unwrap();
    assert!(matches!(on_leader, Err(NodeError::NotLeader { .. })), "{on_leader:?}");
    let on_follower = on_follower.await.unwrap();
    assert!(matches!(on_follower, Err(NodeError::NotLeader { .. })), "{on_follower:?}");
    c.net.heal();
    let l2 = c.leader().await;
    assert_eq!(c.node(l2).read(ReadConsistency::Linearizable, "k").await.unwrap(), "v");
    c.shutdown().await;
}

/// A member removed while cut off never sees its removal committed (the leader stops
/// replicating to it at once); once the link is back, the members' answers tell it, and its
/// status says `removed`.
#[tokio::test(start_paused = true)]
async fn a_member_removed_while_cut_off_knows_it_is_removed() {
    let c = Cluster::new(3, seed(), defaults).await;
    let l = c.leader().await;
    let gone = (1..=3).find(|&i| i != l).unwrap();
    c.propose(l, "set k v").await;
    c.net.isolate(gone);
    let conf = c.node(l).remove(gone).await.unwrap();
    assert!(!conf.members().contains(&gone));
    assert!(c.node(gone).status().conf_state.members().contains(&gone), "it never heard");
    assert!(!c.node(gone).status().removed);
    c.net.heal();
    let s = c.node(gone).wait_for(Duration::from_secs(60), |s| s.removed).await.unwrap();
    assert!(s.conf_state.members().contains(&gone), "told, not applied");
    assert_eq!(c.propose(l, "set after 1").await, "");
    c.shutdown().await;
}
