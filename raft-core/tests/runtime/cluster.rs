//! An in-process cluster of runtime nodes on a `MemNetwork` with `MemStorage`, and a small KV
//! state machine that records everything it applies.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use raft_core::runtime::{
    Command, MemNetwork, Node, NodeConfig, NodeError, StateMachine, StateMachineError, mailbox,
};
use raft_core::{Config, MemStorage, NodeId, Role};

/// Commands: `set k v` → answers the previous value; `incr k` → answers the new count.
/// Query: `k` → the value.
#[derive(Debug, Default)]
pub(crate) struct Kv {
    map: BTreeMap<String, String>,
    /// Every command applied, `(index, command)`, shared with the test.
    pub(crate) log: Arc<Mutex<Vec<(u64, Bytes)>>>,
}

impl StateMachine for Kv {
    fn apply(&mut self, commands: &[Command<'_>]) -> Result<Vec<Bytes>, StateMachineError> {
        let mut out = Vec::with_capacity(commands.len());
        for c in commands {
            self.log.lock().unwrap().push((c.index, Bytes::copy_from_slice(c.data)));
            let text = std::str::from_utf8(c.data)?;
            let mut parts = text.splitn(3, ' ');
            let resp = match (parts.next(), parts.next(), parts.next()) {
                (Some("set"), Some(k), Some(v)) => {
                    self.map.insert(k.into(), v.into()).unwrap_or_default()
                }
                (Some("incr"), Some(k), None) => {
                    let n: u64 = self.map.get(k).and_then(|v| v.parse().ok()).unwrap_or(0) + 1;
                    self.map.insert(k.into(), n.to_string());
                    n.to_string()
                }
                _ => format!("bad command {text:?}"),
            };
            out.push(Bytes::from(resp));
        }
        Ok(out)
    }

    fn query(&self, query: &[u8]) -> Result<Bytes, StateMachineError> {
        let k = std::str::from_utf8(query)?;
        Ok(Bytes::from(self.map.get(k).cloned().unwrap_or_default()))
    }

    fn snapshot(&mut self) -> Result<Bytes, StateMachineError> {
        let mut s = String::new();
        for (k, v) in &self.map {
            s.push_str(&format!("{k}={v}\n"));
        }
        Ok(Bytes::from(s))
    }

    fn restore(&mut self, data: &[u8]) -> Result<(), StateMachineError> {
        self.map.clear();
        for line in std::str::from_utf8(data)?.lines() {
            let (k, v) = line.split_once('=').ok_or("bad snapshot line")?;
            self.map.insert(k.into(), v.into());
        }
        Ok(())
    }
}

pub(crate) struct Member {
    pub(crate) node: Node,
    pub(crate) storage: MemStorage,
    pub(crate) log: Arc<Mutex<Vec<(u64, Bytes)>>>,
}

pub(crate) struct Cluster {
    pub(crate) net: MemNetwork,
    pub(crate) members: BTreeMap<NodeId, Member>,
    pub(crate) seed: u64,
    pub(crate) tune: fn(&mut NodeConfig),
}

pub(crate) fn node_config(id: NodeId, seed: u64, voters: &[NodeId]) -> NodeConfig {
    let mut raft = Config::new(id);
    raft.seed = seed.wrapping_mul(31).wrapping_add(id);
    let mut cfg = NodeConfig::new(raft);
    cfg.tick_interval = Duration::from_millis(10);
    cfg.proposal_timeout = Duration::from_secs(2);
    cfg.read_timeout = Duration::from_secs(2);
    cfg.initial_members = voters.iter().map(|&v| (v, format!("mem://{v}"))).collect();
    cfg
}

impl Cluster {
    pub(crate) async fn new(n: u64, seed: u64, tune: fn(&mut NodeConfig)) -> Cluster {
        eprintln!("runtime cluster: nodes={n} seed={seed}");
        let mut c = Cluster { net: MemNetwork::new(), members: BTreeMap::new(), seed, tune };
        let voters: Vec<NodeId> = (1..=n).collect();
        for &id in &voters {
            c.start(id, MemStorage::new_with_voters(&voters), &voters).await;
        }
        c
    }

    /// Starts (or restarts) node `id` from `storage` with a fresh state machine.
    pub(crate) async fn start(&mut self, id: NodeId, storage: MemStorage, members: &[NodeId]) {
        let mut cfg = node_config(id, self.seed, members);
        (self.tune)(&mut cfg);
        let (mb, inbox) = mailbox(cfg.inbound_queue);
        let transport = self.net.join(id, mb);
        let kv = Kv::default();
        let log = kv.log.clone();
        let node = Node::start(cfg, storage.clone(), transport, kv, inbox).await.expect("start");
        self.members.insert(id, Member { node, storage, log });
    }

    pub(crate) fn node(&self, id: NodeId) -> &Node {
        &self.members[&id].node
    }

    /// Waits until the running nodes agree on one leader; returns it.
    pub(crate) async fn leader(&self) -> NodeId {
        for _ in 0..2000 {
            let leaders: Vec<NodeId> = self
                .members
                .values()
                .filter(|m| m.node.status().stopped.is_none())
                .filter(|m| m.node.status().role == Role::Leader)
                .map(|m| m.node.id())
                .collect();
            if let [l] = leaders[..] {
                let agreed = self
                    .members
                    .values()
                    .filter(|m| m.node.status().stopped.is_none())
                    .filter(|m| m.node.status().conf_state.voters.contains(&m.node.id()))
                    .all(|m| m.node.status().leader == Some(l));
                if agreed {
                    return l;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no agreed leader (seed {})", self.seed);
    }

    /// Proposes through `id`, retrying while the cluster has no leader.
    pub(crate) async fn propose(&self, id: NodeId, cmd: &str) -> Bytes {
        for _ in 0..200 {
            match self.node(id).propose(Bytes::copy_from_slice(cmd.as_bytes())).await {
                Ok(r) => return r,
                Err(NodeError::NotLeader { .. } | NodeError::Timeout | NodeError::Overtaken) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("propose {cmd:?} on {id}: {e} (seed {})", self.seed),
            }
        }
        panic!("propose {cmd:?} on {id} never succeeded (seed {})", self.seed);
    }

    /// Stops node `id` at once and disconnects it (a crash, storage kept).
    pub(crate) async fn crash(&mut self, id: NodeId) -> MemStorage {
        let m = self.members.remove(&id).expect("member");
        self.net.leave(id);
        m.node.stop().await;
        m.storage
    }

    /// Waits until every running node applied the same commands as `reference`.
    pub(crate) async fn converged(&self) -> Vec<(u64, Bytes)> {
        for _ in 0..2000 {
            let logs: Vec<Vec<(u64, Bytes)>> =
                self.members.values().map(|m| m.log.lock().unwrap().clone()).collect();
            let commits: Vec<u64> =
                self.members.values().map(|m| m.node.status().commit_index).collect();
            let applied: Vec<u64> =
                self.members.values().map(|m| m.node.status().applied_index).collect();
            let snapshots: Vec<u64> =
                self.members.values().map(|m| m.node.status().snapshot_index).collect();
            let reference = logs.iter().max_by_key(|l| l.last().map_or(0, |(i, _)| *i)).unwrap();
            // A node restored from a snapshot after its last individually applied command
            // cannot be compared by that command.
            let same_last = logs.iter().zip(&snapshots).all(|(l, &snap)| {
                l.last() == reference.last() || l.last().map_or(0, |(i, _)| *i) <= snap
            });
            if commits.iter().all(|&c| c == commits[0])
                && applied.iter().all(|&a| a == commits[0])
                && same_last
            {
                return reference.clone();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let state: Vec<String> = self
            .members
            .iter()
            .map(|(id, m)| {
                let s = m.node.status();
                let last = m.log.lock().unwrap().last().cloned();
                format!("{id}: last {last:?} {s:?}")
            })
            .collect();
        panic!("nodes did not converge (seed {}): {state:#?}", self.seed);
    }

    /// Asserts every node's applied commands agree index by index (state machine safety); a node
    /// restored from a snapshot has a suffix only.
    pub(crate) fn assert_same_applied(&self) {
        let logs: Vec<(NodeId, Vec<(u64, Bytes)>)> =
            self.members.iter().map(|(id, m)| (*id, m.log.lock().unwrap().clone())).collect();
        let mut by_index: BTreeMap<u64, (NodeId, Bytes)> = BTreeMap::new();
        for (id, log) in &logs {
            let mut prev = 0;
            for (index, cmd) in log {
                assert!(*index > prev, "node {id} applied index {index} after {prev}");
                prev = *index;
                match by_index.get(index) {
                    Some((other, c)) => assert_eq!(
                        c, cmd,
                        "nodes {other} and {id} applied different commands at {index} (seed {})",
                        self.seed
                    ),
                    None => {
                        by_index.insert(*index, (*id, cmd.clone()));
                    }
                }
            }
        }
    }

    pub(crate) async fn shutdown(self) {
        for m in self.members.values() {
            m.node.stop().await;
        }
    }
}
