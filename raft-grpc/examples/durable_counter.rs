//! A replicated counter with durable storage (raft-storage) and gRPC (raft-grpc). Run three:
//! `cargo run -p raft-grpc --example durable_counter -- 1` (then `-- 2` and `-- 3`); stop
//! one with Ctrl-C (it hands leadership over first) and start it again: it counts on from disk.
//! Node `id` serves its Prometheus metrics on `http://127.0.0.1:<9100 + id>/metrics`.
use std::{collections::BTreeMap, sync::Arc, time::Duration};

use bytes::Bytes;
use raft_core::runtime::{Command, Node, NodeConfig, StateMachine, StateMachineError, mailbox};
use raft_core::{ConfState, Config};
use raft_grpc::{GrpcTransport, TransportConfig};
use raft_storage::{SledStorage, StorageOptions};

#[derive(Default)]
struct Counter(u64);

impl StateMachine for Counter {
    fn apply(&mut self, commands: &[Command<'_>]) -> Result<Vec<Bytes>, StateMachineError> {
        Ok(commands
            .iter()
            .map(|_| {
                self.0 += 1;
                Bytes::from(self.0.to_string())
            })
            .collect())
    }
    fn query(&self, _query: &[u8]) -> Result<Bytes, StateMachineError> {
        Ok(Bytes::from(self.0.to_string()))
    }
    fn snapshot(&mut self) -> Result<Bytes, StateMachineError> {
        Ok(Bytes::copy_from_slice(&self.0.to_le_bytes()))
    }
    fn restore(&mut self, data: &[u8]) -> Result<(), StateMachineError> {
        self.0 = u64::from_le_bytes(data.try_into()?);
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let id: u64 = std::env::args().nth(1).unwrap_or_else(|| "1".into()).parse()?;
    let (cluster_id, voters) = (0xC0FFEE, vec![1, 2, 3]);
    let addrs: BTreeMap<u64, String> =
        voters.iter().map(|&i| (i, format!("127.0.0.1:{}", 7100 + i))).collect();
    // Durable log, hard state and snapshots; a new store starts with the three voters.
    let mut options = StorageOptions::new(cluster_id, id);
    options.initial_conf_state = ConfState { voters, ..ConfState::default() };
    let storage = SledStorage::open(format!("counter-data-{id}"), options)?;
    // The transport delivers peers' messages (and its own events) to the node's mailbox.
    let mut config = NodeConfig::new(Config::new(id));
    config.initial_members = addrs.clone();
    let (mailbox, inbox) = mailbox(config.inbound_queue);
    let mut transport_config = TransportConfig::new(cluster_id, id);
    transport_config.peers = addrs.clone();
    transport_config.peers.remove(&id);
    let transport = Arc::new(GrpcTransport::new(transport_config, mailbox.events)?);
    let (listener, server) = (tokio::net::TcpListener::bind(&addrs[&id]).await?, transport.clone());
    let serve =
        async move { server.serve(listener, mailbox.messages, std::future::pending()).await };
    tokio::spawn(serve);

    let node = Node::start(config, storage, transport, Counter::default(), inbox).await?;
    let metrics_addr = format!("127.0.0.1:{}", 9100 + id);
    let metrics_listener = tokio::net::TcpListener::bind(&metrics_addr).await?;
    eprintln!("node {id}: metrics on http://{metrics_addr}/metrics");
    let scraped = node.clone();
    tokio::spawn(raft_grpc::serve_metrics(metrics_listener, move || scraped.prometheus_metrics()));
    // Propose once a second until Ctrl-C.
    while tokio::time::timeout(Duration::from_secs(1), tokio::signal::ctrl_c()).await.is_err() {
        match node.propose("add").await {
            Ok(value) => eprintln!("node {id}: counter = {}", String::from_utf8_lossy(&value)),
            Err(e) => eprintln!("node {id}: {e}"),
        }
    }
    node.shutdown().await;
    Ok(())
}
