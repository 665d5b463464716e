use bytes::Bytes;

use super::{Sim, SimConfig, TICK};
use crate::testkit::client::{OpKind, WorkloadConfig};
use crate::testkit::network::Partition;
use crate::types::Role;

fn cluster(n: usize) -> Sim {
    let mut cfg = SimConfig::new(42, n);
    cfg.workload = Some(WorkloadConfig { auto: false, clients: 2, keys: 2, ..Default::default() });
    Sim::new(cfg)
}

fn elect(sim: &mut Sim) -> u64 {
    assert!(sim.run_until(|s| s.leader().is_some(), 100 * TICK).unwrap(), "no leader");
    sim.leader().unwrap()
}

#[test]
fn elects_commits_and_applies_everywhere() {
    let mut sim = cluster(3);
    let l = elect(&mut sim);
    sim.propose(l, Bytes::from_static(b"hello")).unwrap();
    let all_applied = |s: &Sim| s.node_ids().iter().all(|&id| s.kv(id).applied_index() >= 2);
    assert!(sim.run_until(all_applied, 20 * TICK).unwrap());
    assert_eq!(sim.checker().elections(), 1);
    assert!(sim.network().counters().sent > 0);
}

#[test]
fn clients_complete_and_history_is_linearizable() {
    let mut sim = cluster(3);
    let l = elect(&mut sim);
    sim.client_op(0, OpKind::Put, 1, l).unwrap();
    sim.run_for(5 * TICK).unwrap();
    sim.client_op(1, OpKind::ReadIndexGet, 1, l).unwrap();
    sim.client_op(0, OpKind::LogGet, 1, l).unwrap();
    sim.run_for(5 * TICK).unwrap();
    assert_eq!(sim.workload().counters().completed, 3);
    assert_eq!(sim.workload().acked_puts().len(), 1);
    sim.finish().unwrap();
}

#[test]
fn crash_loses_unsynced_writes_but_keeps_durable_state() {
    let mut sim = cluster(1);
    let l = elect(&mut sim);
    sim.persist_all().unwrap();
    let durable = sim.storage(l).hard_state();
    sim.propose(l, Bytes::from_static(b"x")).unwrap();
    assert!(sim.pending_writes(l) > 0, "the proposal waits for its write");
    sim.crash(l).unwrap();
    assert!(!sim.is_up(l));
    assert_eq!(sim.storage(l).hard_state(), durable);
    sim.restart(l).unwrap();
    assert_eq!(sim.node(l).term(), durable.term);
    elect(&mut sim);
    assert_eq!(sim.counters().crashes, 1);
}

#[test]
fn resumed_node_first_gets_the_ticks_it_missed() {
    let mut sim = cluster(3);
    let l = elect(&mut sim);
    let other = sim.node_ids().iter().copied().find(|&id| id != l).unwrap();
    sim.pause(other);
    sim.run_for(50 * TICK).unwrap();
    let before = sim.counters().ticks;
    sim.resume(other).unwrap();
    assert!(sim.counters().ticks - before >= 49, "missed ticks are delivered on resume");
    assert!(!sim.is_paused(other));
}

#[test]
fn isolated_leader_is_replaced_and_heals() {
    let mut sim = cluster(5);
    let l = elect(&mut sim);
    sim.isolate(l);
    let replaced = |s: &Sim| s.leader().is_some_and(|n| n != l && s.node(n).term() > 1);
    assert!(sim.run_until(replaced, 100 * TICK).unwrap());
    sim.partition(Partition::Ring(vec![1, 2, 3, 4, 5]));
    sim.run_for(30 * TICK).unwrap();
    sim.finish().unwrap();
    assert!(sim.node(l).role() != Role::Leader || sim.leader() == Some(l));
}

#[test]
fn manual_delivery_and_persistence() {
    let mut sim = cluster(3);
    sim.campaign(1).unwrap();
    for _ in 0..50 {
        for id in [1, 2, 3] {
            while sim.persist(id).unwrap() {}
        }
        if !sim.deliver(0).unwrap() {
            break;
        }
    }
    assert_eq!(sim.leader(), Some(1));
    assert_eq!(sim.checker().leaders().get(&sim.node(1).term()), Some(&1));
}
