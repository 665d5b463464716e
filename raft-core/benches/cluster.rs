//! Throughput of a 3-node cluster in one process: in-memory storage ([`MemStorage`]), an in-memory
//! FIFO network, and a lean synchronous driver (not the test `Harness`, which records every
//! message).
//!
//! A *proposer* is a slot with at most one outstanding proposal. With `P` proposers there are
//! always `P` proposals in flight: when the leader applies a proposal, its proposer proposes again
//! at the top of the next driver loop. The figure reported is committed-and-applied proposals per
//! second on the leader (criterion `Throughput::Elements`).
//!
//! Run: `cargo bench -p raft-core --features testkit`, or with criterion options
//! `cargo bench -p raft-core --features testkit --bench cluster -- --warm-up-time 1 --measurement-time 5`
//! (without `--bench cluster` the library's libtest harness runs first and rejects them).
//! On a machine shared with other work, `RAFT_BENCH_CLOCK=cpu` times the benchmark thread's
//! on-CPU time (Linux `/proc/thread-self/schedstat`) instead of wall-clock time, so time spent
//! descheduled does not count; the driver is single-threaded, so the two agree on an idle machine.
//!
//! Profile one case without criterion's analysis:
//! `cargo bench -p raft-core --features testkit --bench cluster -- --profile-time 10 'propose/8B/256'`.

use std::collections::VecDeque;
use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use raft_core::{Config, EntryKind, MemStorage, Message, NodeId, Raft, Role};

/// Number of nodes (all voters).
const NODES: usize = 3;
/// The driver ticks every node once per this many loops, so heartbeats and CheckQuorum run.
const TICK_EVERY_LOOPS: u64 = 256;
/// Storage is compacted up to the lowest applied index once this many entries could be dropped,
/// so memory stays bounded however long criterion runs.
const COMPACT_EVERY_ENTRIES: u64 = 1 << 16;

/// One proposer slot.
#[derive(Clone, Copy)]
struct Proposer {
    /// Sequence number of the outstanding (or next) proposal.
    seq: u32,
}

struct Cluster {
    nodes: Vec<Raft<MemStorage>>,
    /// Per destination node: messages sent and not yet delivered.
    inbox: Vec<Vec<Message>>,
    /// Spare buffer swapped with an inbox while delivering it.
    delivering: Vec<Message>,
    leader: usize,
    payload_bytes: usize,
    proposers: Vec<Proposer>,
    /// Proposers whose previous proposal completed, to propose again.
    due: Vec<u32>,
    /// With empty payloads: proposer ids in proposal order (the leader applies in that order).
    in_order: VecDeque<u32>,
    /// Proposals applied by the leader so far.
    completed: u64,
    applied: [u64; NODES],
    compacted: u64,
    loops: u64,
}

impl Cluster {
    fn new(proposers: usize, payload_bytes: usize) -> Cluster {
        assert!(payload_bytes == 0 || payload_bytes == 8, "payload is empty or (id, seq)");
        let ids: Vec<NodeId> = (1..=NODES as NodeId).collect();
        let nodes = ids
            .iter()
            .map(|&id| Raft::new(Config::new(id), MemStorage::new_with_voters(&ids)).unwrap())
            .collect();
        let mut c = Cluster {
            nodes,
            inbox: vec![Vec::new(); NODES],
            delivering: Vec::new(),
            leader: 0,
            payload_bytes,
            proposers: vec![Proposer { seq: 0 }; proposers],
            due: (0..proposers as u32).collect(),
            in_order: VecDeque::with_capacity(proposers),
            completed: 0,
            applied: [0; NODES],
            compacted: 0,
            loops: 0,
        };
        c.nodes[0].campaign();
        for _ in 0..100 {
            if c.nodes[0].role() == Role::Leader {
                break;
            }
            c.step_loop(false);
        }
        assert_eq!(c.nodes[0].role(), Role::Leader, "node 1 failed to win");
        // Let the leader commit its empty entry before proposals start.
        for _ in 0..100 {
            c.step_loop(false);
        }
        c
    }

    fn payload(&self, id: u32, seq: u32) -> Bytes {
        if self.payload_bytes == 0 {
            Bytes::new()
        } else {
            let v = (u64::from(id) << 32) | u64::from(seq);
            Bytes::copy_from_slice(&v.to_le_bytes())
        }
    }

    /// Proposes for every due proposer, one `propose` call each (the core batches them into one
    /// append per `ready()`).
    fn propose_due(&mut self) {
        let mut due = std::mem::take(&mut self.due);
        for &id in &due {
            let seq = self.proposers[id as usize].seq;
            let data = self.payload(id, seq);
            self.nodes[self.leader].propose(data).expect("leader accepts proposals");
            if self.payload_bytes == 0 {
                self.in_order.push_back(id);
            }
        }
        due.clear();
        self.due = due;
    }

    /// Drains every node's `Ready`, persisting, acknowledging, queueing messages and applying.
    fn process_readies(&mut self) {
        for i in 0..NODES {
            let node = &mut self.nodes[i];
            while node.has_ready() {
                let rd = node.ready();
                for m in rd.messages {
                    self.inbox[(m.to - 1) as usize].push(m);
                }
                assert!(rd.snapshot.is_none(), "no follower falls behind the compaction point");
                node.storage().append_owned(rd.entries).unwrap();
                if let Some(hs) = rd.hard_state {
                    node.storage().set_hard_state(hs);
                }
                if let Some(cs) = rd.conf_state {
                    node.storage().set_conf_state(cs);
                }
                node.on_persisted(rd.number).unwrap();
                for m in rd.persisted_messages {
                    self.inbox[(m.to - 1) as usize].push(m);
                }
                let Some(last) = rd.committed_entries.last().map(|e| e.index) else {
                    continue;
                };
                if i == self.leader {
                    for e in &rd.committed_entries {
                        if e.kind != EntryKind::Normal {
                            continue;
                        }
                        let id = if self.payload_bytes == 0 {
                            self.in_order.pop_front().expect("an outstanding proposal")
                        } else {
                            let v = u64::from_le_bytes(e.data[..8].try_into().unwrap());
                            let (id, seq) = ((v >> 32) as u32, v as u32);
                            let p = &mut self.proposers[id as usize];
                            assert_eq!(p.seq, seq, "proposals of one proposer apply in order");
                            id
                        };
                        self.proposers[id as usize].seq += 1;
                        self.due.push(id);
                        self.completed += 1;
                    }
                }
                node.on_applied(last).unwrap();
                self.applied[i] = last;
            }
        }
    }

    /// Delivers every queued message (new ones sent while stepping wait for the next loop).
    fn deliver(&mut self) {
        for i in 0..NODES {
            if self.inbox[i].is_empty() {
                continue;
            }
            std::mem::swap(&mut self.inbox[i], &mut self.delivering);
            for m in self.delivering.drain(..) {
                self.nodes[i].step(m).unwrap();
            }
        }
    }

    fn maybe_compact(&mut self) {
        let min_applied = *self.applied.iter().min().unwrap();
        if min_applied >= self.compacted + COMPACT_EVERY_ENTRIES {
            for n in &self.nodes {
                n.storage().compact(min_applied).unwrap();
            }
            self.compacted = min_applied;
        }
    }

    fn step_loop(&mut self, propose: bool) {
        if propose {
            self.propose_due();
        }
        self.process_readies();
        self.deliver();
        self.loops += 1;
        if self.loops.is_multiple_of(TICK_EVERY_LOOPS) {
            for n in &mut self.nodes {
                n.tick();
            }
            self.maybe_compact();
        }
    }

    /// Runs until `n` more proposals completed.
    fn run(&mut self, n: u64) {
        let target = self.completed + n;
        while self.completed < target {
            self.step_loop(true);
        }
        assert_eq!(self.nodes[self.leader].role(), Role::Leader, "leadership must not move");
    }
}

/// On-CPU time of the calling thread so far, if the kernel reports it.
fn thread_cpu_time() -> Option<Duration> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = s.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// Whether to time on-CPU time rather than wall-clock time (`RAFT_BENCH_CLOCK=cpu`).
fn use_cpu_clock() -> bool {
    let cpu = std::env::var("RAFT_BENCH_CLOCK").is_ok_and(|v| v == "cpu");
    assert!(
        !cpu || thread_cpu_time().is_some(),
        "RAFT_BENCH_CLOCK=cpu needs /proc/thread-self/schedstat"
    );
    cpu
}

/// Proposals completed per criterion iteration.
fn per_iter(proposers: usize) -> u64 {
    if proposers == 1 { 2_000 } else { 20_000 }
}

fn bench_cluster(c: &mut Criterion) {
    let cpu_clock = use_cpu_clock();
    let mut group = c.benchmark_group("propose");
    group.sample_size(20);
    for payload in [0usize, 8] {
        for proposers in [1usize, 256] {
            let n = per_iter(proposers);
            group.throughput(Throughput::Elements(n));
            let id = BenchmarkId::new(format!("{payload}B"), proposers);
            group.bench_with_input(id, &proposers, |b, &proposers| {
                let mut cluster = Cluster::new(proposers, payload);
                b.iter_custom(|iters| {
                    let (start, cpu_start) =
                        (Instant::now(), cpu_clock.then(thread_cpu_time).flatten());
                    for _ in 0..iters {
                        cluster.run(n);
                    }
                    black_box(cluster.completed);
                    match cpu_start {
                        Some(t0) => thread_cpu_time().expect("checked by use_cpu_clock") - t0,
                        None => start.elapsed(),
                    }
                });
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_cluster);
criterion_main!(benches);
