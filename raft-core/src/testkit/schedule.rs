//! Entry points over the simulator: [`run_random`] (one seed → a randomized run with chaos and
//! healed phases, used by `tests/simulation.rs`) and [`run_schedule`] (an explicit list of
//! [`SimOp`]s decoded from bytes, used by the fuzzer).

use bytes::Bytes;

use super::client::{OpKind, WorkloadConfig};
use super::invariants::Violation;
use super::network::Partition;
use super::sim::{Sim, SimConfig, SimError, TICK};

mod random;

use crate::config::ReadMode;
pub use random::{random_config, random_partition, run_random};

/// Most operations [`SimOp::decode_all`] decodes from one input.
pub const MAX_SCHEDULE_OPS: usize = 4096;

/// Summary of one run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Seed of the run (0 for schedules).
    pub seed: u64,
    /// Cluster size.
    pub nodes: usize,
    /// Whether reads used leases.
    pub lease: bool,
    /// Steps taken.
    pub steps: u64,
    /// Simulated time, in nominal ticks.
    pub sim_ticks: u64,
    /// Elections won (distinct terms with a leader).
    pub elections: u64,
    /// Partitions applied.
    pub partitions: u64,
    /// Crashes.
    pub crashes: u64,
    /// Pauses.
    pub pauses: u64,
    /// Client operations invoked.
    pub client_ops: u64,
    /// Client operations that got an answer.
    pub client_ops_ok: u64,
    /// Messages sent.
    pub messages: u64,
    /// Approximate bytes sent.
    pub bytes: u64,
    /// Highest committed index.
    pub committed: u64,
    /// Messages the core refused as invalid.
    pub invalid_messages: u64,
    /// Log compactions (state machine snapshots taken).
    pub compactions: u64,
    /// Snapshots installed from a leader.
    pub snapshots_installed: u64,
    /// Membership changes made durable.
    pub conf_changes: u64,
    /// Leadership transfers accepted by a leader.
    pub transfers: u64,
    /// Client reads a node gave up because it stopped leading or the term changed.
    pub reads_aborted: u64,
    /// Forwarded requests handed out as refused (proposals, membership changes, transfers).
    pub refused: u64,
    /// Hash of the whole trace of steps.
    pub trace_hash: u64,
}

impl RunStats {
    /// The summary of `sim` so far.
    pub fn of(sim: &Sim) -> RunStats {
        let c = sim.counters();
        let net = sim.network().counters();
        RunStats {
            seed: sim.config().seed,
            nodes: sim.node_ids().len(),
            lease: sim.config().raft.read_mode == ReadMode::Lease,
            steps: c.steps,
            sim_ticks: sim.now() / TICK,
            elections: sim.checker().elections(),
            partitions: net.partitions,
            crashes: c.crashes,
            pauses: c.pauses,
            client_ops: sim.workload().counters().invoked,
            client_ops_ok: sim.workload().counters().completed,
            messages: net.sent,
            bytes: net.bytes_sent,
            committed: sim.committed_index(),
            invalid_messages: c.invalid_messages,
            compactions: c.compactions,
            snapshots_installed: c.snapshots_installed,
            conf_changes: c.conf_changes,
            transfers: c.transfers,
            reads_aborted: sim.workload().counters().reads_aborted,
            refused: c.refused,
            trace_hash: sim.trace_hash(),
        }
    }
}

// ---------------------------------------------------------------------- schedules

/// One explicit action of a schedule. Node arguments are taken modulo the cluster size (node
/// `1 + arg % n`), message arguments modulo the number of messages in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SimOp {
    /// Deliver the `i`-th message in flight, now.
    Deliver(u8),
    /// Lose the `i`-th message in flight.
    Drop(u8),
    /// Duplicate the `i`-th message in flight.
    Duplicate(u8),
    /// Tick one node.
    Tick(u8),
    /// Tick every up node.
    TickAll,
    /// Complete a node's oldest pending write.
    Persist(u8),
    /// A client writes a key through a node.
    Put {
        /// Client index (modulo the number of clients).
        client: u8,
        /// Node argument.
        node: u8,
        /// Key (modulo the key space).
        key: u8,
    },
    /// A client reads a key through a node.
    Get {
        /// Client index (modulo the number of clients).
        client: u8,
        /// Node argument.
        node: u8,
        /// Key (modulo the key space).
        key: u8,
        /// Through `read_index` (otherwise through the log).
        read_index: bool,
    },
    /// Propose an opaque payload on a node.
    Propose(u8),
    /// Make a node campaign.
    Campaign(u8),
    /// Crash a node.
    Crash(u8),
    /// Restart a node.
    Restart(u8),
    /// Pause a node.
    Pause(u8),
    /// Resume a node.
    Resume(u8),
    /// Isolate a node.
    Isolate(u8),
    /// Block messages from one node to another.
    OneWay {
        /// Node argument of the sender.
        from: u8,
        /// Node argument of the recipient.
        to: u8,
    },
    /// Split into a minority (the first `1 + arg % (n / 2)` nodes after rotating by `arg`) and
    /// a majority.
    SplitMajority(u8),
    /// Ring partition, in id order rotated by `arg`.
    Ring(u8),
    /// Bridge partition around a node.
    Bridge(u8),
    /// Heal the network.
    Heal,
    /// Run timed steps for `(arg % 16 + 1) / 4` ticks.
    Advance(u8),
}

/// A cursor over fuzzer input; reads past the end give zeros.
struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }
}

impl SimOp {
    /// Decodes a schedule from arbitrary bytes (total: every input decodes; at most
    /// [`MAX_SCHEDULE_OPS`] operations).
    pub fn decode_all(data: &[u8]) -> Vec<SimOp> {
        let mut input = Input { data, pos: 0 };
        let mut ops = Vec::new();
        while input.pos < data.len() && ops.len() < MAX_SCHEDULE_OPS {
            let code = input.byte() % 32;
            ops.push(SimOp::decode_one(code, &mut input));
        }
        ops
    }

    fn decode_one(code: u8, i: &mut Input<'_>) -> SimOp {
        match code {
            0..=7 => SimOp::Deliver(i.byte()),
            8..=9 => SimOp::TickAll,
            10..=11 => SimOp::Tick(i.byte()),
            12..=14 => SimOp::Persist(i.byte()),
            15 => SimOp::Drop(i.byte()),
            16 => SimOp::Duplicate(i.byte()),
            17 => SimOp::Put { client: i.byte(), node: i.byte(), key: i.byte() },
            18 => {
                let (client, node, key, flags) = (i.byte(), i.byte(), i.byte(), i.byte());
                SimOp::Get { client, node, key, read_index: flags & 1 == 1 }
            }
            19 => SimOp::Propose(i.byte()),
            20 => SimOp::Campaign(i.byte()),
            21 => SimOp::Crash(i.byte()),
            22 => SimOp::Restart(i.byte()),
            23 => SimOp::Pause(i.byte()),
            24 => SimOp::Resume(i.byte()),
            25 => SimOp::Isolate(i.byte()),
            26 => SimOp::OneWay { from: i.byte(), to: i.byte() },
            27 => SimOp::SplitMajority(i.byte()),
            28 => SimOp::Ring(i.byte()),
            29 => SimOp::Bridge(i.byte()),
            30 => SimOp::Heal,
            _ => SimOp::Advance(i.byte()),
        }
    }
}

/// The configuration [`run_schedule`] uses: 3 nodes, election timeout 6 ticks, log compaction
/// every 8 entries, three clients on three keys that act only when told to.
pub fn schedule_config() -> SimConfig {
    let mut cfg = SimConfig::new(0, 3);
    cfg.raft.election_timeout_ticks = 6;
    cfg.compact_every = 8;
    let et = u64::from(cfg.raft.election_timeout_ticks) * TICK;
    let workload = WorkloadConfig {
        clients: 3,
        keys: 3,
        auto: false,
        op_timeout: 3 * et,
        retry_backoff: et / 4,
        ..WorkloadConfig::default()
    };
    cfg.workload = Some(workload);
    cfg
}

/// Runs `ops` on a [`schedule_config`] cluster, then [`Sim::finish`]es (heal, liveness,
/// linearizability). Safety invariants are checked after every operation.
pub fn run_schedule(ops: &[SimOp]) -> Result<RunStats, Violation> {
    run_schedule_with(schedule_config(), ops)
}

/// [`run_schedule`] on a cluster configured by `cfg`.
pub fn run_schedule_with(cfg: SimConfig, ops: &[SimOp]) -> Result<RunStats, Violation> {
    let mut sim = Sim::new(cfg);
    for (k, op) in ops.iter().enumerate() {
        apply(&mut sim, *op, k as u64)?;
    }
    sim.finish()?;
    Ok(RunStats::of(&sim))
}

fn apply(sim: &mut Sim, op: SimOp, k: u64) -> Result<(), Violation> {
    let ids = sim.node_ids().to_vec();
    let n = ids.len();
    let node = |a: u8| ids[usize::from(a) % n];
    let rotated = |a: u8| {
        let mut v = ids.clone();
        v.rotate_left(usize::from(a) % n);
        v
    };
    let keys = sim.workload().config().keys.max(1);
    let ignore = |r: Result<(), SimError>| match r {
        Err(SimError::Violation(v)) => Err(*v),
        _ => Ok(()),
    };
    match op {
        SimOp::Deliver(i) => sim.deliver(usize::from(i)).map(|_| ())?,
        SimOp::Drop(i) => sim.drop_message(usize::from(i)),
        SimOp::Duplicate(i) => sim.duplicate_message(usize::from(i)),
        SimOp::Tick(a) => sim.tick(node(a))?,
        SimOp::TickAll => sim.tick_all()?,
        SimOp::Persist(a) => sim.persist(node(a)).map(|_| ())?,
        SimOp::Put { client, node: a, key } => {
            sim.client_op(client.into(), OpKind::Put, u64::from(key) % keys, node(a))?;
        }
        SimOp::Get { client, node: a, key, read_index } => {
            let kind = if read_index { OpKind::ReadIndexGet } else { OpKind::LogGet };
            sim.client_op(client.into(), kind, u64::from(key) % keys, node(a))?;
        }
        SimOp::Propose(a) => {
            let data = Bytes::from(format!("schedule op {k}").into_bytes());
            ignore(sim.propose(node(a), data))?;
        }
        SimOp::Campaign(a) => ignore(sim.campaign(node(a)))?,
        SimOp::Crash(a) => sim.crash(node(a))?,
        SimOp::Restart(a) => sim.restart(node(a))?,
        SimOp::Pause(a) => sim.pause(node(a)),
        SimOp::Resume(a) => sim.resume(node(a))?,
        SimOp::Isolate(a) => sim.isolate(node(a)),
        SimOp::OneWay { from, to } => sim.block(node(from), node(to)),
        SimOp::SplitMajority(a) => {
            let v = rotated(a);
            let k = 1 + usize::from(a) % (n / 2).max(1);
            sim.partition(Partition::Split(vec![v[..k.min(n)].to_vec()]));
        }
        SimOp::Ring(a) => sim.partition(Partition::Ring(rotated(a))),
        SimOp::Bridge(a) => {
            let v = rotated(a);
            let half = 1 + (n - 1) / 2;
            let p = Partition::Bridge {
                bridge: v[0],
                left: v[1..half].to_vec(),
                right: v[half..].to_vec(),
            };
            sim.partition(p);
        }
        SimOp::Heal => sim.heal(),
        SimOp::Advance(a) => sim.run_for((u64::from(a) % 16 + 1) * TICK / 4)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::rng::Rng;

    #[test]
    fn every_input_decodes_and_runs() {
        let mut rng = Rng::new(5);
        for len in [0usize, 1, 7, 64, 300] {
            let data: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            let ops = SimOp::decode_all(&data);
            assert!(ops.len() <= len);
            run_schedule(&ops).unwrap_or_else(|v| panic!("input {data:?}: {v}"));
        }
    }

    #[test]
    fn schedule_with_faults_passes() {
        let ops = [
            SimOp::Advance(15),
            SimOp::Put { client: 0, node: 0, key: 1 },
            SimOp::Advance(15),
            SimOp::Isolate(0),
            SimOp::Get { client: 1, node: 1, key: 1, read_index: true },
            SimOp::Advance(15),
            SimOp::Crash(2),
            SimOp::Heal,
            SimOp::Restart(2),
            SimOp::Advance(15),
        ];
        let stats = run_schedule(&ops).unwrap();
        assert!(stats.client_ops == 2 && stats.crashes == 1);
    }

    #[test]
    fn decode_is_bounded() {
        let ops = SimOp::decode_all(&vec![8u8; 3 * MAX_SCHEDULE_OPS]);
        assert_eq!(ops.len(), MAX_SCHEDULE_OPS);
        assert!(ops.iter().all(|o| *o == SimOp::TickAll));
    }

    #[test]
    fn random_configs_are_valid_and_lease_drift_is_bounded() {
        for seed in 0..300 {
            let cfg = random_config(seed);
            cfg.raft.validate().unwrap();
            if cfg.raft.read_mode == ReadMode::Lease {
                let lo = *cfg.tick_rates_permille.iter().min().unwrap();
                let hi = *cfg.tick_rates_permille.iter().max().unwrap();
                let bound = 100 + cfg.raft.lease_clock_drift_percent;
                assert!(u64::from(hi) * 100 < u64::from(lo) * u64::from(bound), "seed {seed}");
            }
        }
    }
}
