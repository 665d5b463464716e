//! End-to-end throughput and latency of `raft_core::runtime::Node`: three nodes in one process,
//! N concurrent proposers on the leader, each waiting for its command to be applied there before
//! proposing again.
//!
//! ```text
//! cargo run --release -p raft-grpc --example node_bench -- \
//!     [--shape openraft] [--storage mem|disk] [--transport mem|grpc] [--proposers 1,16,256]
//!     [--seconds 5 | --ops 1000000] [--value-bytes 256] [--server-workers N] [--client-workers N]
//!     [--tick-ms 20] [--snapshot-entries 0] [--decompose] [--io-driver]
//! ```
//! - `disk` is raft-storage (fsync on every group commit) in a temporary directory; `grpc` is
//!   GrpcTransport on 127.0.0.1.
//! - `--ops N`: N operations in all, split evenly between the proposers, timed from the first
//!   proposal to the last answer (openraft's `-n`); without it each proposer runs `--seconds`.
//! - `--server-workers N`: the nodes run on a tokio runtime of their own with N workers (0: a
//!   current-thread runtime on one thread, where the runtime's persister and applier are tasks
//!   instead of threads). `--client-workers N`: the proposers run on a second runtime with N
//!   workers (0, the default: on the nodes' runtime).
//! - `--shape openraft` is openraft's `benchmarks/minimal` (see `scripts/bench-openraft`):
//!   memory storage and transport, empty commands, `--server-workers 2 --client-workers 1`,
//!   50 ms ticks (openraft's heartbeat) and a snapshot every 5,000 entries (openraft's default
//!   `snapshot_policy`). Flags after it override it.
//! - The runtimes get tokio's timer and, for gRPC or with `--io-driver`, its I/O driver.
//! - `--decompose` (1 proposer): times each stage of one proposal's life through probes in the
//!   storage, the transport and the state machine, and prints each stage's p50, p90 and p99.
//!
//! One result line per proposer count, on stderr, starting with `node_bench`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use raft_core::runtime::{
    Command, MemNetwork, Node, NodeConfig, StateMachine, StateMachineError, mailbox,
};
use raft_core::{
    ConfState, Config, Entry, HardState, Index, InitialState, LogStore, MemStorage, Message,
    MessageBody, NodeId, Role, Snapshot, Storage, StorageError, Term, Transport,
};
use raft_grpc::{GrpcTransport, TransportConfig};
use raft_storage::{SledStorage, StorageOptions};
use tokio::runtime::{Builder, Handle, Runtime};

#[derive(Clone, Debug)]
struct Args {
    shape: &'static str,
    disk: bool,
    grpc: bool,
    proposers: Vec<usize>,
    seconds: u64,
    ops: Option<u64>,
    value_bytes: usize,
    /// `None`: one runtime with tokio's default worker count for everything (the old shape).
    server_workers: Option<usize>,
    client_workers: usize,
    tick_ms: u64,
    snapshot_entries: u64,
    decompose: bool,
    /// Enable tokio's I/O driver even without gRPC (`--io-driver`).
    io_driver: bool,
}

impl Default for Args {
    fn default() -> Args {
        Args {
            shape: "custom",
            disk: false,
            grpc: false,
            proposers: vec![1, 16, 256],
            seconds: 5,
            ops: None,
            value_bytes: 256,
            server_workers: None,
            client_workers: 0,
            tick_ms: 20,
            snapshot_entries: 0,
            decompose: false,
            io_driver: false,
        }
    }
}

fn parse() -> Args {
    let mut a = Args::default();
    let mut argv = std::env::args().skip(1);
    while let Some(flag) = argv.next() {
        // Flags without a value (cargo passes `--bench` to benches and examples).
        match flag.as_str() {
            "--decompose" => {
                a.decompose = true;
                continue;
            }
            "--io-driver" => {
                a.io_driver = true;
                continue;
            }
            "--bench" => continue,
            _ => {}
        }
        let v = argv.next().unwrap_or_default();
        let num = |v: &str| -> u64 {
            v.replace('_', "").parse().unwrap_or_else(|_| panic!("{flag}: not a number: {v}"))
        };
        match flag.as_str() {
            "--shape" if v == "openraft" => {
                a.shape = "openraft";
                a.disk = false;
                a.grpc = false;
                a.value_bytes = 0;
                a.server_workers = Some(2);
                a.client_workers = 1;
                a.tick_ms = 50;
                a.snapshot_entries = 5000;
            }
            "--storage" => a.disk = v == "disk",
            "--transport" => a.grpc = v == "grpc",
            "--proposers" | "--clients" => {
                a.proposers = v.split(',').map(|p| num(p) as usize).collect();
            }
            "--seconds" => a.seconds = num(&v),
            "--ops" => a.ops = Some(num(&v)),
            "--value-bytes" => a.value_bytes = num(&v) as usize,
            "--server-workers" => a.server_workers = Some(num(&v) as usize),
            "--client-workers" => a.client_workers = num(&v) as usize,
            "--tick-ms" => a.tick_ms = num(&v).max(1),
            "--snapshot-entries" => a.snapshot_entries = num(&v),
            other => panic!("unknown flag {other} (see the comment at the top of node_bench.rs)"),
        }
    }
    a
}

// ---------------------------------------------------------------------------------------------
// The state machine: answers nothing, like openraft's no-op state machine.

/// Counts commands; answers nothing (so the bench measures the pipeline).
#[derive(Default)]
struct Sink {
    applied: u64,
    /// `Some` with `--decompose`: stamps the leader's applies.
    probe: Option<(NodeId, Arc<Probe>)>,
}

impl StateMachine for Sink {
    fn apply(&mut self, commands: &[Command<'_>]) -> Result<Vec<Bytes>, StateMachineError> {
        self.applied += commands.len() as u64;
        if let Some((id, probe)) = &self.probe
            && probe.is_leader(*id)
        {
            for c in commands {
                probe.stamp(c.index, Stage::LeaderApply);
            }
            if let Some(last) = commands.last() {
                probe.last_leader_apply.store(last.index, Ordering::Release);
            }
        }
        Ok(vec![Bytes::new(); commands.len()])
    }
    fn query(&self, _: &[u8]) -> Result<Bytes, StateMachineError> {
        Ok(Bytes::copy_from_slice(&self.applied.to_le_bytes()))
    }
    fn snapshot(&mut self) -> Result<Bytes, StateMachineError> {
        Ok(Bytes::copy_from_slice(&self.applied.to_le_bytes()))
    }
    fn restore(&mut self, data: &[u8]) -> Result<(), StateMachineError> {
        self.applied = u64::from_le_bytes(data.try_into()?);
        Ok(())
    }
    fn may_block(&self) -> bool {
        false // counts in memory: applied on a runtime task
    }
}

// ---------------------------------------------------------------------------------------------
// `--decompose`: where one proposal's time goes.

/// Stages of one proposal, in the order they happen on the critical path.
#[derive(Clone, Copy, Debug)]
enum Stage {
    /// The leader's driver writes the entry to its store (the handle → driver hop is before).
    LeaderAppend,
    /// The leader's persister starts the `sync` covering it (driver → persister thread hop).
    LeaderSync,
    /// The first follower writes it (transport + follower driver).
    FollowerAppend,
    /// That follower's persister starts syncing it (follower driver → persister hop).
    FollowerSync,
    /// The first follower's response covering it is sent (by its persister, after the sync).
    FollowerResponse,
    /// The leader sends a commit index covering it (the response stepped: it is committed).
    LeaderCommit,
    /// The leader's state machine applies it (driver → applier thread hop).
    LeaderApply,
}

const STAGES: usize = 7;
const STAGE_NAMES: [&str; STAGES + 2] = [
    "propose -> leader append (handle -> driver task, core propose)",
    "leader append -> leader sync starts (driver -> persister thread)",
    "leader append -> follower append (transport, follower driver)",
    "follower append -> follower sync starts (driver -> persister)",
    "follower sync starts -> response sent (the sync itself)",
    "follower response -> leader commit (leader driver steps it)",
    "leader commit -> leader apply (driver -> applier thread)",
    "leader apply -> caller resumes (oneshot, client task)",
    "propose -> caller resumes (total)",
];

/// Timestamps (ns since `epoch`, 0: not yet) of each stage, by log index. Only used with one
/// proposer, where the index of the proposal in flight is unambiguous.
struct Probe {
    epoch: Instant,
    leader: AtomicU64,
    stamps: Mutex<HashMap<Index, [u64; STAGES]>>,
    /// Highest index a follower's response (or the leader's commit index) already stamped.
    responded: AtomicU64,
    committed: AtomicU64,
    last_leader_apply: AtomicU64,
}

impl Probe {
    fn new() -> Probe {
        Probe {
            epoch: Instant::now(),
            leader: AtomicU64::new(0),
            stamps: Mutex::new(HashMap::new()),
            responded: AtomicU64::new(0),
            committed: AtomicU64::new(0),
            last_leader_apply: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn is_leader(&self, id: NodeId) -> bool {
        self.leader.load(Ordering::Acquire) == id
    }

    /// Records the first time `index` reached `stage`.
    fn stamp(&self, index: Index, stage: Stage) {
        let now = self.now();
        let mut stamps = self.stamps.lock().unwrap_or_else(|e| e.into_inner());
        let slot = &mut stamps.entry(index).or_default()[stage as usize];
        if *slot == 0 {
            *slot = now;
        }
    }

    /// Stamps every index in `(previous high-water mark, upto]`, at most 4,096 of them.
    fn stamp_upto(&self, mark: &AtomicU64, upto: Index, stage: Stage) {
        let from = mark.fetch_max(upto, Ordering::AcqRel);
        for index in (from + 1..=upto).rev().take(4096) {
            self.stamp(index, stage);
        }
    }

    fn take(&self, index: Index) -> Option<[u64; STAGES]> {
        self.stamps.lock().unwrap_or_else(|e| e.into_inner()).remove(&index)
    }
}

/// A store that stamps the probe when entries are written and synced.
#[derive(Clone)]
struct ProbedStore<S> {
    inner: S,
    id: NodeId,
    probe: Arc<Probe>,
    /// Written and synced high-water marks of this node's log.
    written: Arc<AtomicU64>,
    synced: Arc<AtomicU64>,
}

impl<S: Storage> Storage for ProbedStore<S> {
    fn initial_state(&self) -> Result<InitialState, StorageError> {
        self.inner.initial_state()
    }
    fn entries(&self, low: Index, high: Index, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        self.inner.entries(low, high, max_bytes)
    }
    fn term(&self, index: Index) -> Result<Term, StorageError> {
        self.inner.term(index)
    }
    fn first_index(&self) -> Result<Index, StorageError> {
        self.inner.first_index()
    }
    fn last_index(&self) -> Result<Index, StorageError> {
        self.inner.last_index()
    }
    fn snapshot(&self) -> Result<Snapshot, StorageError> {
        self.inner.snapshot()
    }
}

impl<S: LogStore> LogStore for ProbedStore<S> {
    fn append_entries(&self, entries: &[Entry]) -> Result<(), StorageError> {
        let stage =
            if self.probe.is_leader(self.id) { Stage::LeaderAppend } else { Stage::FollowerAppend };
        for e in entries {
            self.probe.stamp(e.index, stage);
        }
        if let Some(last) = entries.last() {
            self.written.store(last.index, Ordering::Release);
        }
        self.inner.append_entries(entries)
    }
    fn save_hard_state(&self, hard_state: &HardState) -> Result<(), StorageError> {
        self.inner.save_hard_state(hard_state)
    }
    fn save_conf_state(&self, conf_state: &ConfState) -> Result<(), StorageError> {
        self.inner.save_conf_state(conf_state)
    }
    fn install_snapshot(&self, snapshot: &Snapshot) -> Result<(), StorageError> {
        self.inner.install_snapshot(snapshot)
    }
    fn compact(&self, snapshot: &Snapshot) -> Result<(), StorageError> {
        self.inner.compact(snapshot)
    }
    fn needs_sync(&self) -> bool {
        self.inner.needs_sync()
    }
    fn sync(&self) -> Result<(), StorageError> {
        let stage =
            if self.probe.is_leader(self.id) { Stage::LeaderSync } else { Stage::FollowerSync };
        let upto = self.written.load(Ordering::Acquire);
        let from = self.synced.swap(upto, Ordering::AcqRel);
        for index in (from + 1..=upto).rev().take(4096) {
            self.probe.stamp(index, stage);
        }
        self.inner.sync()
    }
}

/// A transport that stamps followers' responses and the leader's commit index on their way out.
struct ProbedTransport {
    inner: Arc<dyn Transport>,
    id: NodeId,
    probe: Arc<Probe>,
}

impl Transport for ProbedTransport {
    fn send(&self, messages: Vec<Message>) {
        let leader = self.probe.is_leader(self.id);
        for m in &messages {
            match m.body {
                MessageBody::AppendResponse { reject: false, index, .. } if !leader => {
                    self.probe.stamp_upto(&self.probe.responded, index, Stage::FollowerResponse);
                }
                MessageBody::Append { leader_commit: commit, .. }
                | MessageBody::Heartbeat { commit, .. }
                    if leader =>
                {
                    self.probe.stamp_upto(&self.probe.committed, commit, Stage::LeaderCommit);
                }
                _ => {}
            }
        }
        self.inner.send(messages);
    }
    fn add_peer(&self, id: NodeId, addr: &str) -> Result<(), String> {
        self.inner.add_peer(id, addr)
    }
    fn remove_peer(&self, id: NodeId) {
        self.inner.remove_peer(id);
    }
}

/// Per-stage latency histograms (ns) of the proposals a `--decompose` run timed.
struct Decomposition {
    stages: Vec<Histogram<u64>>,
}

impl Decomposition {
    fn new() -> Decomposition {
        Decomposition { stages: (0..STAGES + 2).map(|_| histogram()).collect() }
    }

    /// Records one proposal that started at `t0` and resumed its caller at `t5` (probe time).
    fn record(&mut self, t0: u64, mut s: [u64; STAGES], t5: u64) {
        use Stage::*;
        // A store whose writes need no sync may never be synced: that hop then takes no time.
        for (sync, append) in [(LeaderSync, LeaderAppend), (FollowerSync, FollowerAppend)] {
            if s[sync as usize] == 0 {
                s[sync as usize] = s[append as usize];
            }
        }
        let at = |st: Stage| s[st as usize];
        if s.contains(&0) || t5 < at(LeaderApply) {
            return; // A stage was missed (e.g. the leader changed): skip this one.
        }
        let spans = [
            (t0, at(LeaderAppend)),
            (at(LeaderAppend), at(LeaderSync)),
            (at(LeaderAppend), at(FollowerAppend)),
            (at(FollowerAppend), at(FollowerSync)),
            (at(FollowerSync), at(FollowerResponse)),
            (at(FollowerResponse), at(LeaderCommit)),
            (at(LeaderCommit), at(LeaderApply)),
            (at(LeaderApply), t5),
            (t0, t5),
        ];
        for (h, (a, b)) in self.stages.iter_mut().zip(spans) {
            h.saturating_record(b.saturating_sub(a).max(1));
        }
    }

    fn print(&self) {
        let n = self.stages[STAGES + 1].len();
        eprintln!("decomposition of {n} proposals (1 proposer), ns: p50 / p90 / p99");
        for (name, h) in STAGE_NAMES.iter().zip(&self.stages) {
            let q = |q| h.value_at_quantile(q);
            eprintln!("  {name:<66} {:>8} {:>8} {:>8}", q(0.5), q(0.9), q(0.99));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Runtimes and the cluster.

/// Where the nodes run and where the proposers run.
struct Runtimes {
    server: Handle,
    client: Handle,
    /// Owned multi-thread runtimes (kept alive until the end).
    _owned: Vec<Runtime>,
}

/// A runtime with the drivers the run needs: timers always, the I/O driver only for gRPC (or
/// `--io-driver`). Like
/// openraft's bench (whose tokio has no `net` feature), an idle worker then parks on a futex
/// instead of in `epoll_wait`, and waking it is one `futex` call instead of an `eventfd` write.
fn enable(b: &mut Builder, args: &Args) -> Runtime {
    if args.grpc || args.io_driver {
        b.enable_all();
    } else {
        b.enable_time();
    }
    b.build().expect("runtime")
}

fn multi_thread(args: &Args, workers: usize, name: &str) -> Runtime {
    let mut b = Builder::new_multi_thread();
    if workers > 0 {
        b.worker_threads(workers);
    }
    enable(b.thread_name(name), args)
}

fn runtimes(args: &Args) -> Runtimes {
    let mut owned = Vec::new();
    let server = match args.server_workers {
        None => {
            owned.push(multi_thread(args, 0, "bench"));
            owned[0].handle().clone()
        }
        Some(0) => {
            // A current-thread runtime driven by a thread of its own for the whole run.
            let rt = enable(&mut Builder::new_current_thread(), args);
            let handle = rt.handle().clone();
            std::thread::Builder::new()
                .name("bench-server".into())
                .spawn(move || rt.block_on(std::future::pending::<()>()))
                .expect("server thread");
            handle
        }
        Some(n) => {
            owned.push(multi_thread(args, n, "bench-server"));
            owned[0].handle().clone()
        }
    };
    let client = if args.client_workers == 0 {
        server.clone()
    } else {
        owned.push(multi_thread(args, args.client_workers, "bench-client"));
        owned.last().expect("client runtime").handle().clone()
    };
    Runtimes { server, client, _owned: owned }
}

fn node_config(args: &Args, id: NodeId, addrs: &BTreeMap<NodeId, String>) -> NodeConfig {
    let mut config = NodeConfig::new(Config::new(id));
    config.tick_interval = Duration::from_millis(args.tick_ms);
    config.snapshot_entries = args.snapshot_entries;
    config.max_pending_requests = 8192;
    config.initial_members = addrs.clone();
    config
}

/// Starts one node with `storage`, wrapped in the probe if there is one.
async fn start<S>(
    config: NodeConfig,
    storage: S,
    transport: Arc<dyn Transport>,
    probe: Option<&Arc<Probe>>,
    inbox: raft_core::runtime::Inbox,
) -> Node
where
    S: LogStore + Clone + Send + Sync + 'static,
{
    let id = config.raft.id;
    let node = match probe {
        None => Node::start(config, storage, transport, Sink::default(), inbox).await,
        Some(p) => {
            let (probe, inner) = (p.clone(), transport);
            let transport = Arc::new(ProbedTransport { inner, id, probe });
            let storage = ProbedStore {
                inner: storage,
                id,
                probe: p.clone(),
                written: Arc::default(),
                synced: Arc::default(),
            };
            let sink = Sink { applied: 0, probe: Some((id, p.clone())) };
            Node::start(config, storage, transport, sink, inbox).await
        }
    };
    node.expect("start")
}

async fn cluster(args: Args, dir: PathBuf, run: usize, probe: Option<Arc<Probe>>) -> Vec<Node> {
    let voters = [1u64, 2, 3];
    let mut addrs = BTreeMap::new();
    for &id in &voters {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
        addrs.insert(id, l.local_addr().expect("addr").to_string());
    }
    let net = MemNetwork::new();
    let mut nodes = Vec::new();
    for &id in &voters {
        let config = node_config(&args, id, &addrs);
        let (mb, inbox) = mailbox(config.inbound_queue);
        let transport: Arc<dyn Transport> = if args.grpc {
            let mut tc = TransportConfig::new(9, id);
            tc.peers = addrs.clone();
            tc.peers.remove(&id);
            let t = Arc::new(GrpcTransport::new(tc, mb.events.clone()).expect("transport"));
            let listener = tokio::net::TcpListener::bind(&addrs[&id]).await.expect("bind");
            let (server, messages) = (t.clone(), mb.messages.clone());
            tokio::spawn(
                async move { server.serve(listener, messages, std::future::pending()).await },
            );
            t
        } else {
            net.join(id, mb)
        };
        let node = if args.disk {
            let mut o = StorageOptions::new(9, id);
            o.initial_conf_state = ConfState { voters: voters.to_vec(), ..ConfState::default() };
            let s = SledStorage::open(dir.join(format!("run{run}-node{id}")), o).expect("open");
            start(config, s, transport, probe.as_ref(), inbox).await
        } else {
            let s = MemStorage::new_with_voters(&voters);
            start(config, s, transport, probe.as_ref(), inbox).await
        };
        nodes.push(node);
    }
    // Like openraft's `initialize`, which makes node 0 leader at once: no election timeout.
    let _ = nodes[0].campaign().await;
    nodes
}

async fn leader(nodes: &[Node]) -> Node {
    loop {
        if let Some(n) = nodes.iter().find(|n| n.status().role == Role::Leader) {
            return n.clone();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Measuring.

/// Latencies in ns, 100 ns to 100 s, 3 significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(100, 100_000_000_000, 3).expect("histogram")
}

/// What one proposer did: each proposal's latency (ns) in order, errors, and its decomposition
/// (`--decompose`). A plain vector: writing to it is sequential, while recording into 256
/// histograms of 216 KiB each missed the cache and took 8% of the CPU at 256 proposers.
struct Outcome {
    latency_ns: Vec<u64>,
    errors: u64,
    decomposition: Option<Decomposition>,
}

/// One proposer: proposes `ops` commands (or until `deadline`) one after another. Reads the
/// clock once per proposal: one's end is the next one's start.
async fn proposer(
    node: Node,
    value: Bytes,
    ops: Option<u64>,
    deadline: Instant,
    probe: Option<Arc<Probe>>,
) -> Outcome {
    let mut out = Outcome {
        latency_ns: Vec::with_capacity(ops.unwrap_or(1 << 16).min(1 << 24) as usize),
        errors: 0,
        decomposition: probe.as_ref().map(|_| Decomposition::new()),
    };
    let mut t = Instant::now();
    let mut done = 0u64;
    while ops.map_or(t < deadline, |n| done < n) {
        let t0 = probe.as_ref().map_or(0, |p| p.now());
        let result = node.propose(value.clone()).await;
        let now = Instant::now();
        match result {
            Ok(_) => {
                out.latency_ns.push(now.duration_since(t).as_nanos() as u64);
                if let (Some(p), Some(d)) = (&probe, &mut out.decomposition) {
                    let t5 = p.now();
                    let index = p.last_leader_apply.load(Ordering::Acquire);
                    if let Some(stamps) = p.take(index) {
                        d.record(t0, stamps, t5);
                    }
                }
            }
            Err(_) => out.errors += 1,
        }
        t = now;
        done += 1;
    }
    out
}

async fn measure(args: &Args, rts: &Runtimes, dir: &Path, run: usize, proposers: usize) {
    let probe = (args.decompose && proposers == 1).then(|| Arc::new(Probe::new()));
    let started = rts.server.spawn(cluster(args.clone(), dir.to_owned(), run, probe.clone()));
    let nodes = started.await.expect("cluster");
    let leader = leader(&nodes).await;
    if let Some(p) = &probe {
        p.leader.store(leader.id(), Ordering::Release);
    }
    let value = Bytes::from(vec![b'v'; args.value_bytes]);
    let per_proposer = args.ops.map(|n| (n / proposers as u64).max(1));
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.seconds);
    let tasks: Vec<_> = (0..proposers)
        .map(|_| {
            let task =
                proposer(leader.clone(), value.clone(), per_proposer, deadline, probe.clone());
            rts.client.spawn(task)
        })
        .collect();
    let mut all = histogram();
    let (mut errors, mut decomposition) = (0, None);
    for t in tasks {
        let out = t.await.expect("proposer");
        for ns in out.latency_ns {
            all.saturating_record(ns);
        }
        errors += out.errors;
        decomposition = decomposition.or(out.decomposition);
    }
    let secs = start.elapsed().as_secs_f64();
    report(args, proposers, &all, errors, secs, &leader);
    if let Some(d) = decomposition {
        d.print();
    }
    for n in &nodes {
        n.stop().await;
    }
}

fn report(args: &Args, proposers: usize, all: &Histogram<u64>, errors: u64, secs: f64, l: &Node) {
    let us = |q: f64| all.value_at_quantile(q) as f64 / 1000.0;
    let workers = |w: Option<usize>| w.map_or("default".to_string(), |w| w.to_string());
    let m = l.metrics();
    let ops = all.len() + errors;
    eprintln!(
        "node_bench shape={} storage={} transport={} server_workers={} client_workers={} \
         proposers={proposers} value={}B ops={ops} secs={secs:.3}: {:.0} ops/s  \
         p50={:.1}us p90={:.1}us p99={:.1}us max={:.1}us  errors={errors} fsyncs={} ready={}",
        args.shape,
        if args.disk { "disk" } else { "mem" },
        if args.grpc { "grpc" } else { "mem" },
        workers(args.server_workers),
        args.client_workers,
        args.value_bytes,
        all.len() as f64 / secs,
        us(0.5),
        us(0.9),
        us(0.99),
        all.max() as f64 / 1000.0,
        m.fsyncs,
        m.ready_batches,
    );
}

fn main() {
    let args = parse();
    let dir = tempfile::tempdir().expect("tempdir");
    let rts = runtimes(&args);
    // The main thread only waits (like openraft's `client_rt.block_on`, whose future is polled
    // on the calling thread, not on a worker).
    let control = Builder::new_current_thread().enable_all().build().expect("runtime");
    control.block_on(async {
        for (run, &p) in args.proposers.iter().enumerate() {
            measure(&args, &rts, dir.path(), run, p).await;
        }
    });
}
