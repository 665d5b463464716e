//! The runtime under faults, seeded: clients with sessions retry every request across nodes
//! while a nemesis crashes and restarts nodes, isolates them and moves leadership. Afterwards
//! every node must have applied the same commands in the same order (state machine safety) and
//! every client's counter must equal its number of requests (exactly once), each answered with
//! its own sequence of responses.
//!
//! `RAFT_RT_SEEDS=<n>` runs n seeds (default 32), `RAFT_RT_SEED=<s>` replays one.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use raft_core::NodeId;
use raft_core::runtime::{Node, NodeConfig, NodeError};
use raft_core::testkit::rng::Rng;

use crate::cluster::Cluster;

type Nodes = Arc<Mutex<BTreeMap<NodeId, Node>>>;

fn chaos_config(cfg: &mut NodeConfig) {
    cfg.snapshot_entries = 25;
    cfg.proposal_timeout = Duration::from_millis(500);
    cfg.read_timeout = Duration::from_millis(500);
}

/// One client: `requests` increments of its own counter through a session, each retried on
/// random nodes until answered. Returns the responses in order.
async fn client(nodes: Nodes, id: u64, requests: u64, seed: u64) -> Vec<Bytes> {
    let mut rng = Rng::new(seed ^ id);
    let pick = |rng: &mut Rng| {
        let n = nodes.lock().unwrap();
        let all: Vec<Node> = n.values().cloned().collect();
        all[rng.below(all.len() as u64) as usize].clone()
    };
    let session = loop {
        match pick(&mut rng).open_session().await {
            Ok(s) => break s,
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    let mut responses = Vec::new();
    for _ in 0..requests {
        let req = session.request(format!("incr client{id}"));
        loop {
            match pick(&mut rng).propose_request(&req).await {
                Ok(r) => {
                    responses.push(r);
                    break;
                }
                Err(NodeError::SessionExpired { .. } | NodeError::StaleRequest { .. }) => {
                    panic!("client {id}: session lost (seed {seed})")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(rng.below(30) + 1)).await,
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.below(20))).await;
    }
    responses
}

/// Plain proposals with unique commands, never retried, on random nodes: returns the commands
/// whose proposal was answered [`NodeError::Overtaken`] and how many were applied.
async fn prober(nodes: Nodes, count: u64, seed: u64) -> (Vec<String>, u64) {
    let mut rng = Rng::new(seed ^ 0x9e37);
    let (mut dropped, mut applied) = (Vec::new(), 0);
    for i in 0..count {
        let node = {
            let n = nodes.lock().unwrap();
            let all: Vec<Node> = n.values().cloned().collect();
            all[rng.below(all.len() as u64) as usize].clone()
        };
        let cmd = format!("set probe{i} x");
        match node.propose(cmd.clone()).await {
            Ok(_) => applied += 1,
            Err(NodeError::Overtaken) => dropped.push(cmd),
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(rng.below(40))).await;
    }
    (dropped, applied)
}

async fn run_seed(seed: u64) {
    let n = 3 + 2 * (seed % 2);
    let mut c = Cluster::new(n, seed, chaos_config).await;
    let voters: Vec<NodeId> = (1..=n).collect();
    let nodes: Nodes =
        Arc::new(Mutex::new(c.members.iter().map(|(id, m)| (*id, m.node.clone())).collect()));
    let (clients, requests) = (4u64, 15u64);
    let handles: Vec<_> =
        (1..=clients).map(|id| tokio::spawn(client(nodes.clone(), id, requests, seed))).collect();
    let probes = tokio::spawn(prober(nodes.clone(), 150, seed));

    // The nemesis: one fault at a time, for a while, then heal.
    let mut rng = Rng::new(seed);
    let mut down: Vec<(NodeId, raft_core::MemStorage)> = Vec::new();
    let (mut crashes, mut isolations, mut transfers) = (0, 0, 0);
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(50 + rng.below(200))).await;
        match rng.below(4) {
            0 if down.len() < (n as usize - 1) / 2 => {
                let victim = voters[rng.below(n) as usize];
                if c.members.contains_key(&victim) {
                    nodes.lock().unwrap().remove(&victim);
                    down.push((victim, c.crash(victim).await));
                    crashes += 1;
                }
            }
            1 => {
                if let Some((id, storage)) = down.pop() {
                    c.start(id, storage, &voters).await;
                    nodes.lock().unwrap().insert(id, c.node(id).clone());
                }
            }
            2 => {
                c.net.heal();
                if rng.below(2) == 0 {
                    c.net.isolate(voters[rng.below(n) as usize]);
                    isolations += 1;
                }
            }
            _ => {
                let from = voters[rng.below(n) as usize];
                let to = voters[rng.below(n) as usize];
                if let (Some(m), true) = (c.members.get(&from), from != to) {
                    let _ = m.node.transfer_leadership(to).await;
                    transfers += 1;
                }
            }
        }
    }
    c.net.heal();
    for (id, storage) in down.drain(..) {
        c.start(id, storage, &voters).await;
        nodes.lock().unwrap().insert(id, c.node(id).clone());
    }
    let mut all = Vec::new();
    for h in handles {
        all.push(h.await.expect("client task"));
    }
    let (dropped, probes_applied) = probes.await.expect("prober task");
    let applied = c.converged().await;
    // The in-memory network delivers each peer's messages at once and in order, where the
    // inference behind Overtaken is exact: a proposal answered so must never be applied.
    for cmd in &dropped {
        assert!(
            applied.iter().all(|(_, c)| c != cmd.as_str()),
            "{cmd:?} was answered Overtaken but applied (seed {seed})"
        );
    }
    let commit = c.node(voters[0]).status().commit_index;
    c.assert_same_applied();
    for (i, responses) in all.iter().enumerate() {
        let expected: Vec<Bytes> = (1..=requests).map(|k| Bytes::from(k.to_string())).collect();
        assert_eq!(responses, &expected, "client {} responses (seed {seed})", i + 1);
    }
    let leader = c.leader().await;
    for id in 1..=clients {
        let key = format!("client{id}");
        let got = c.node(leader).read(raft_core::runtime::ReadConsistency::Linearizable, key).await;
        assert_eq!(got.unwrap(), requests.to_string(), "client {id} counter (seed {seed})");
    }
    eprintln!(
        "runtime chaos: seed={seed} nodes={n} commit={commit} crashes={crashes} isolations={isolations} transfers={transfers} probes_applied={probes_applied} probes_dropped={}",
        dropped.len()
    );
    c.shutdown().await;
}

fn seeds() -> Vec<u64> {
    if let Some(s) = std::env::var("RAFT_RT_SEED").ok().and_then(|s| s.parse().ok()) {
        return vec![s];
    }
    let n = std::env::var("RAFT_RT_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(32);
    (1..=n).collect()
}

#[test]
fn runtime_under_faults_applies_each_session_request_once() {
    for seed in seeds() {
        eprintln!("runtime chaos: running seed {seed} (replay with RAFT_RT_SEED={seed})");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("runtime");
        rt.block_on(run_seed(seed));
    }
}
