//! End-to-end throughput and latency of `raft_core::runtime::Node`: three nodes in one process,
//! N concurrent proposers on the leader, each waiting for its command to be applied.
//!
//! ```text
//! cargo run --release -p raft-grpc --example node_bench -- \
//!     [--storage mem|disk] [--transport mem|grpc] [--proposers 1,16,256] [--seconds 5] [--value-bytes 256]
//! ```
//! `disk` is raft-storage (fsync on every group commit) in a temporary directory; `grpc` is
//! GrpcTransport on 127.0.0.1.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use raft_core::runtime::{
    Command, MemNetwork, Node, NodeConfig, StateMachine, StateMachineError, mailbox,
};
use raft_core::{ConfState, Config, MemStorage, Role};
use raft_grpc::{GrpcTransport, TransportConfig};
use raft_storage::{SledStorage, StorageOptions};

/// Counts commands and bytes; answers nothing (so the bench measures the pipeline).
#[derive(Default)]
struct Sink(u64);

impl StateMachine for Sink {
    fn apply(&mut self, commands: &[Command<'_>]) -> Result<Vec<Bytes>, StateMachineError> {
        self.0 += commands.len() as u64;
        Ok(vec![Bytes::new(); commands.len()])
    }
    fn query(&self, _: &[u8]) -> Result<Bytes, StateMachineError> {
        Ok(Bytes::copy_from_slice(&self.0.to_le_bytes()))
    }
    fn snapshot(&mut self) -> Result<Bytes, StateMachineError> {
        Ok(Bytes::copy_from_slice(&self.0.to_le_bytes()))
    }
    fn restore(&mut self, data: &[u8]) -> Result<(), StateMachineError> {
        self.0 = u64::from_le_bytes(data.try_into()?);
        Ok(())
    }
}

struct Args {
    disk: bool,
    grpc: bool,
    proposers: Vec<usize>,
    seconds: u64,
    value_bytes: usize,
}

fn parse() -> Args {
    let mut a = Args {
        disk: false,
        grpc: false,
        proposers: vec![1, 16, 256],
        seconds: 5,
        value_bytes: 256,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let v = pair.get(1).map(String::as_str).unwrap_or("");
        match pair[0].as_str() {
            "--storage" => a.disk = v == "disk",
            "--transport" => a.grpc = v == "grpc",
            "--proposers" => a.proposers = v.split(',').filter_map(|p| p.parse().ok()).collect(),
            "--seconds" => a.seconds = v.parse().unwrap_or(5),
            "--value-bytes" => a.value_bytes = v.parse().unwrap_or(256),
            // Ignore the harness flags cargo passes to benches and examples (e.g. --bench).
            _ => {}
        }
    }
    a
}

async fn cluster(args: &Args, dir: &std::path::Path, run: usize) -> Vec<Node> {
    let voters = [1u64, 2, 3];
    let mut addrs = BTreeMap::new();
    for &id in &voters {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
        addrs.insert(id, l.local_addr().expect("addr").to_string());
    }
    let net = MemNetwork::new();
    let mut nodes = Vec::new();
    for &id in &voters {
        let mut config = NodeConfig::new(Config::new(id));
        config.tick_interval = Duration::from_millis(20);
        config.snapshot_entries = 0;
        config.max_pending_requests = 8192;
        config.initial_members = addrs.clone();
        let (mb, inbox) = mailbox(config.inbound_queue);
        let transport: Arc<dyn raft_core::Transport> = if args.grpc {
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
            Node::start(config, s, transport, Sink::default(), inbox).await
        } else {
            let s = MemStorage::new_with_voters(&voters);
            Node::start(config, s, transport, Sink::default(), inbox).await
        };
        nodes.push(node.expect("start"));
    }
    nodes
}

async fn leader(nodes: &[Node]) -> Node {
    loop {
        if let Some(n) = nodes.iter().find(|n| n.status().role == Role::Leader) {
            return n.clone();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn measure(args: &Args, dir: &std::path::Path, run: usize, proposers: usize) {
    let nodes = cluster(args, dir, run).await;
    let leader = leader(&nodes).await;
    let value = Bytes::from(vec![b'v'; args.value_bytes]);
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let tasks: Vec<_> = (0..proposers)
        .map(|_| {
            let (node, value) = (leader.clone(), value.clone());
            tokio::spawn(async move {
                let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("hist");
                let mut errors = 0u64;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    match node.propose(value.clone()).await {
                        Ok(_) => h.record(t.elapsed().as_micros().max(1) as u64).expect("record"),
                        Err(_) => errors += 1,
                    }
                }
                (h, errors)
            })
        })
        .collect();
    let start = Instant::now();
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("hist");
    let mut errors = 0;
    for t in tasks {
        let (h, e) = t.await.expect("task");
        all.add(h).expect("merge");
        errors += e;
    }
    let secs = start.elapsed().as_secs_f64();
    let m = leader.metrics();
    eprintln!(
        "storage={} transport={} proposers={proposers:>3} value={}B: {:>9.0} ops/s  p50={}us p90={}us p99={}us max={}us  errors={errors} fsyncs={} ready={}",
        if args.disk { "disk" } else { "mem" },
        if args.grpc { "grpc" } else { "mem" },
        args.value_bytes,
        all.len() as f64 / secs,
        all.value_at_quantile(0.5),
        all.value_at_quantile(0.9),
        all.value_at_quantile(0.99),
        all.max(),
        m.fsyncs,
        m.ready_batches,
    );
    for n in &nodes {
        n.stop().await;
    }
}

fn main() {
    let args = parse();
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        for (run, &p) in args.proposers.iter().enumerate() {
            measure(&args, dir.path(), run, p).await;
        }
    });
}
