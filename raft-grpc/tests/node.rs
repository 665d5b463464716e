//! The whole stack in one process: `raft_core::runtime::Node` with `raft_storage::SledStorage`
//! on disk and `GrpcTransport` on 127.0.0.1. A leader is stopped and the others keep serving;
//! it restarts from its directory and catches up; a session retry across the leader change is
//! applied once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use raft_core::runtime::{
    Command, Node, NodeConfig, NodeError, ReadConsistency, StateMachine, StateMachineError, mailbox,
};
use raft_core::{ConfState, Config, NodeId, Role};
use raft_grpc::{GrpcTransport, TransportConfig};
use raft_storage::{SledStorage, StorageOptions};

const CLUSTER: u64 = 0x5EED;

/// Appends each command to a list; answers the list's length; query answers the whole list.
#[derive(Default)]
struct Journal(Vec<String>);

impl StateMachine for Journal {
    fn apply(&mut self, commands: &[Command<'_>]) -> Result<Vec<Bytes>, StateMachineError> {
        let mut out = Vec::new();
        for c in commands {
            self.0.push(String::from_utf8(c.data.to_vec())?);
            out.push(Bytes::from(self.0.len().to_string()));
        }
        Ok(out)
    }
    fn query(&self, _: &[u8]) -> Result<Bytes, StateMachineError> {
        Ok(Bytes::from(self.0.join(",")))
    }
    fn snapshot(&mut self) -> Result<Bytes, StateMachineError> {
        Ok(Bytes::from(self.0.join(",")))
    }
    fn restore(&mut self, data: &[u8]) -> Result<(), StateMachineError> {
        let s = std::str::from_utf8(data)?;
        self.0 = if s.is_empty() { Vec::new() } else { s.split(',').map(String::from).collect() };
        Ok(())
    }
}

struct Running {
    node: Node,
    stop_server: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<()>,
}

async fn start(id: NodeId, dir: &std::path::Path, addrs: &BTreeMap<NodeId, String>) -> Running {
    let mut options = StorageOptions::new(CLUSTER, id);
    options.initial_conf_state = ConfState { voters: vec![1, 2, 3], ..ConfState::default() };
    let storage = SledStorage::open(dir.join(format!("node-{id}")), options).expect("open store");
    let mut raft = Config::new(id);
    raft.seed = id * 7919;
    let mut config = NodeConfig::new(raft);
    config.tick_interval = Duration::from_millis(20);
    config.snapshot_entries = 30;
    config.initial_members = addrs.clone();
    let (mb, inbox) = mailbox(config.inbound_queue);
    let mut tc = TransportConfig::new(CLUSTER, id);
    tc.peers = addrs.clone();
    tc.peers.remove(&id);
    let transport = Arc::new(GrpcTransport::new(tc, mb.events).expect("transport"));
    let listener = loop {
        // The port was free a moment ago; a restarting node may race the old socket's release.
        match tokio::net::TcpListener::bind(&addrs[&id]).await {
            Ok(l) => break l,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let (stop_server, stopped) = tokio::sync::oneshot::channel::<()>();
    let t = transport.clone();
    let server = tokio::spawn(async move {
        let _ = t.serve(listener, mb.messages, async { drop(stopped.await) }).await;
    });
    let node =
        Node::start(config, storage, transport, Journal::default(), inbox).await.expect("start");
    Running { node, stop_server, server }
}

async fn leader(nodes: &BTreeMap<NodeId, Running>) -> NodeId {
    for _ in 0..500 {
        let leaders: Vec<NodeId> = nodes
            .iter()
            .filter(|(_, r)| r.node.status().role == Role::Leader)
            .map(|(id, _)| *id)
            .collect();
        if let [l] = leaders[..]
            && nodes.values().all(|r| r.node.status().leader == Some(l))
        {
            return l;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no leader");
}

async fn propose(node: &Node, cmd: &str) -> Bytes {
    for _ in 0..100 {
        match node.propose(cmd.to_string()).await {
            Ok(r) => return r,
            Err(NodeError::NotLeader { .. } | NodeError::Timeout | NodeError::Overtaken) => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("propose {cmd}: {e}"),
        }
    }
    panic!("propose {cmd}: no success");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_grpc_cluster_survives_leader_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut addrs = BTreeMap::new();
    for id in 1..=3 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        addrs.insert(id, l.local_addr().unwrap().to_string());
    }
    let mut nodes = BTreeMap::new();
    for id in 1..=3 {
        nodes.insert(id, start(id, dir.path(), &addrs).await);
    }
    let l = leader(&nodes).await;
    let session = nodes[&l].node.open_session().await.unwrap();
    let req = session.request("s1");
    assert_eq!(nodes[&l].node.propose_request(&req).await.unwrap(), "1");
    for i in 0..50 {
        let via = (i % 3) + 1;
        propose(&nodes[&via].node, &format!("c{i}")).await;
    }

    // Stop the leader (server included); the other two elect a new one and go on.
    let old = nodes.remove(&l).unwrap();
    old.node.stop().await;
    let _ = old.stop_server.send(());
    old.server.await.unwrap();
    let l2 = leader(&nodes).await;
    assert_ne!(l2, l);
    assert_eq!(nodes[&l2].node.propose_request(&req).await.unwrap(), "1", "applied once");
    propose(&nodes[&l2].node, "after").await;

    // The old leader restarts from disk and catches up.
    nodes.insert(l, start(l, dir.path(), &addrs).await);
    let expected = nodes[&l2].node.read(ReadConsistency::Linearizable, "").await.unwrap();
    assert_eq!(expected.split(|&b| b == b',').count(), 52);
    assert!(expected.ends_with(b"after"));
    let mut caught_up = false;
    for _ in 0..500 {
        if nodes[&l].node.read(ReadConsistency::Linearizable, "").await.ok()
            == Some(expected.clone())
        {
            caught_up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(caught_up, "restarted node {l} did not catch up");
    assert!(nodes[&l2].node.metrics().fsyncs > 0);
    for r in nodes.values() {
        r.node.shutdown().await;
    }
}
