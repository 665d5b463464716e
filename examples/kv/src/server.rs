//! `raft-kv serve`: one member of an etcd v3 compatible cluster.
//!
//! ```text
//!  etcd clients ──gRPC──► client URLs: KV, Cluster, Maintenance (Watch, Lease, Auth: Unimplemented)
//!                              │ propose / read / membership
//!                              ▼
//!                  raft_core::runtime::Node ── raft-grpc ──► peers (peer URLs, + Cluster for joiners)
//!                     │                  │
//!          raft-storage (log, fsync)   KvStateMachine (MVCC store on sled)
//! ```
//!
//! Writes are proposed through Raft (followers forward them to the leader); linearizable reads
//! use ReadIndex on any member; serializable reads read the local state. Membership changes map
//! onto Raft's: `member add` adds a learner that the leader promotes once it has caught up
//! (`--learner` keeps it a learner until `member promote`).

mod convert;
mod metrics;
mod services;
mod sm;
mod unimplemented;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use raft_core::runtime::{Node, NodeConfig, NodeError, mailbox};
use raft_core::{ConfState, Config, NodeId};
use raft_grpc::{GrpcTransport, TlsConfig, TransportConfig};
use raft_storage::{SledStorage, StorageOptions};
use tokio::net::TcpListener;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use crate::cli::{ClusterState, ServeConfig, TlsFiles, Url};
use crate::pb::etcdserverpb as pb;
use crate::store::{Store, StoreError};
use services::{ClusterService, Ctx, KvService, MaintenanceService};
use sm::KvStateMachine;

/// Why `serve` stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The Raft log could not be opened (corrupt, wrong member, I/O).
    #[error("cannot open the raft log in {path}: {source}")]
    Storage {
        /// The directory.
        path: String,
        /// Why.
        source: raft_storage::OpenError,
    },
    /// The key-value store could not be opened.
    #[error("cannot open the key-value store: {0}")]
    Store(#[from] StoreError),
    /// The peer transport refused its configuration.
    #[error("peer transport: {0}")]
    Transport(#[from] raft_grpc::Error),
    /// The Raft node did not start or stopped with an error.
    #[error("raft node: {0}")]
    Node(#[from] NodeError),
    /// A listen URL could not be bound.
    #[error("cannot listen on {url}: {source}")]
    Bind {
        /// The URL.
        url: String,
        /// Why.
        source: std::io::Error,
    },
    /// Joining a running cluster (`--initial-cluster-state existing`) failed.
    #[error("cannot join the cluster: {0}")]
    Join(String),
    /// A TLS file could not be read or used.
    #[error("TLS: {0}")]
    Tls(String),
    /// The data directory could not be used.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Who this member is, kept in `<data-dir>/member/identity` after the first start.
#[derive(Clone, Debug)]
struct MemberIdentity {
    cluster_id: u64,
    member_id: u64,
    /// Transport addresses of the members known at first start.
    members: BTreeMap<NodeId, String>,
    /// Voters to bootstrap with (empty when joining a running cluster).
    voters: Vec<NodeId>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ServeError + '_ {
    move |source| ServeError::DataDir { path: path.display().to_string(), source }
}

/// Runs one member until SIGINT/SIGTERM (graceful: leadership is handed over first), or until
/// it is removed from the cluster.
pub async fn serve(cfg: ServeConfig) -> Result<(), ServeError> {
    let member_dir = cfg.data_dir.join("member");
    std::fs::create_dir_all(&member_dir).map_err(io_err(&member_dir))?;
    let ident = identity(&cfg, &member_dir).await?;
    let id = ident.member_id;
    tracing::info!(
        name = cfg.name,
        member = format!("{id:x}"),
        cluster = format!("{:x}", ident.cluster_id),
        data_dir = %cfg.data_dir.display(),
        "starting raft-kv member"
    );

    let raft_dir = member_dir.join("raft");
    let mut options = StorageOptions::new(ident.cluster_id, id);
    options.initial_conf_state = ConfState { voters: ident.voters.clone(), ..ConfState::default() };
    let storage = SledStorage::open(&raft_dir, options)
        .map_err(|source| ServeError::Storage { path: raft_dir.display().to_string(), source })?;
    let store = Store::open(Some(&member_dir.join("kv")))?;

    let mut raft = Config::new(id);
    raft.election_timeout_ticks = u32::try_from(cfg.election_ticks()).unwrap_or(u32::MAX);
    raft.heartbeat_interval_ticks = 1;
    raft.seed = id ^ std::process::id() as u64;
    raft.max_proposal_bytes = cfg.max_request_bytes as u64 + 1024;
    let mut node_cfg = NodeConfig::new(raft);
    node_cfg.tick_interval = cfg.heartbeat_interval;
    node_cfg.snapshot_entries = cfg.snapshot_count;
    // etcd's request timeout is 5 s + 2 election timeouts; raft-kv waits longer for writes so
    // that a delete of a million keys (etcdctl check perf cleans up that way) can finish.
    node_cfg.proposal_timeout = Duration::from_secs(30) + 2 * cfg.election_timeout;
    node_cfg.read_timeout = Duration::from_secs(5) + 2 * cfg.election_timeout;
    node_cfg.initial_members = ident.members.clone();

    let (mb, inbox) = mailbox(node_cfg.inbound_queue);
    let mut tc = TransportConfig::new(ident.cluster_id, id);
    tc.peers = ident.members.clone();
    tc.peers.remove(&id);
    tc.max_message_bytes = tc.max_message_bytes.max(2 * cfg.max_request_bytes + (1 << 20));
    if let Some(files) = &cfg.peer_tls {
        tc.tls = Some(peer_tls(files)?);
    }
    let transport = Arc::new(GrpcTransport::new(tc, mb.events.clone())?);
    let peer_listener = bind(&cfg.listen_peer_urls[0]).await?;

    let sm = KvStateMachine { store };
    let node = Node::start(node_cfg, storage.clone(), transport.clone(), sm, inbox).await?;
    let ctx = Arc::new(Ctx::new(
        node.clone(),
        ident.cluster_id,
        id,
        cfg.initial_cluster_token.clone(),
        cfg.max_txn_ops,
    ));

    // Peers: Raft messages, plus the Cluster service so that new members can learn their id.
    let mut peer_server = server_builder(cfg.peer_tls.as_ref())?;
    let peer_router = peer_server
        .add_service(transport.service(mb.messages.clone()))
        .add_service(pb::cluster_server::ClusterServer::new(ClusterService(ctx.clone())));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(serve_router(peer_router, peer_listener, stop_rx.clone())));

    for url in &cfg.listen_client_urls {
        let listener = bind(url).await?;
        let max = cfg.max_request_bytes + (64 << 10);
        let mut builder = server_builder(cfg.client_tls.as_ref())?;
        let router = builder
            .add_service(
                pb::kv_server::KvServer::new(KvService(ctx.clone()))
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(usize::MAX),
            )
            .add_service(pb::cluster_server::ClusterServer::new(ClusterService(ctx.clone())))
            .add_service(pb::maintenance_server::MaintenanceServer::new(MaintenanceService(
                ctx.clone(),
            )))
            .add_service(unimplemented::WatchService)
            .add_service(unimplemented::LeaseService)
            .add_service(unimplemented::AuthService);
        tasks.push(tokio::spawn(serve_router(router, listener, stop_rx.clone())));
        tracing::info!(url = %url, "serving clients");
    }
    for url in &cfg.listen_metrics_urls {
        let listener = bind(url).await?;
        tasks.push(tokio::spawn(metrics::serve(listener, ctx.clone())));
        tracing::info!(url = %url, "serving /metrics and /health");
    }
    let peer_urls: Vec<String> =
        cfg.initial_advertise_peer_urls.iter().map(Url::to_string).collect();
    let client_urls: Vec<String> = cfg.advertise_client_urls.iter().map(Url::to_string).collect();
    tasks.push(tokio::spawn(services::publish_self(
        ctx.clone(),
        cfg.name.clone(),
        peer_urls,
        client_urls,
    )));

    let outcome = tokio::select! {
        _ = shutdown_signal() => {
            tracing::info!("signal received: handing over leadership and stopping");
            Ok(())
        }
        r = removed(&node) => r,
    };
    node.shutdown().await;
    let _ = stop_tx.send(true);
    for t in tasks {
        t.abort();
        let _ = t.await;
    }
    drop(ctx);
    drop(node);
    if let Err(e) = storage.close() {
        tracing::warn!(error = %e, "closing the raft log");
    }
    tracing::info!("stopped");
    outcome
}

/// Resolves when this member was removed from the cluster (the node says so: it applied its
/// removal, or a member told it, see `NodeStatus::removed`), or the node stopped on its own.
async fn removed(node: &Node) -> Result<(), ServeError> {
    let id = node.id();
    let mut rx = node.watch_status();
    loop {
        {
            let s = rx.borrow_and_update();
            if let Some(reason) = &s.stopped {
                return Err(ServeError::Node(NodeError::Fatal(reason.clone())));
            }
            if s.removed {
                tracing::warn!(
                    member = format!("{id:x}"),
                    "this member was removed from the cluster; stopping"
                );
                return Ok(());
            }
        }
        if rx.changed().await.is_err() {
            return Ok(());
        }
    }
}

/// Asks the member at `url` (a peer or client URL: both serve the Cluster service) for the
/// member list, within `timeout` to connect and twice that to answer.
async fn member_list(
    url: &str,
    linearizable: bool,
    timeout: Duration,
) -> Result<pb::MemberListResponse, String> {
    let endpoint = tonic::transport::Endpoint::from_shared(url.to_string())
        .map_err(|e| e.to_string())?
        .connect_timeout(timeout)
        .timeout(2 * timeout);
    let mut client =
        pb::cluster_client::ClusterClient::connect(endpoint).await.map_err(|e| e.to_string())?;
    let request = pb::MemberListRequest { linearizable };
    let response = client.member_list(request).await.map_err(|e| e.message().to_string())?;
    Ok(response.into_inner())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

async fn serve_router(
    router: tonic::transport::server::Router,
    listener: TcpListener,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let shutdown = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    if let Err(e) = router.serve_with_incoming_shutdown(incoming, shutdown).await {
        tracing::error!(error = %e, "gRPC server failed");
    }
}

async fn bind(url: &Url) -> Result<TcpListener, ServeError> {
    TcpListener::bind((url.host().trim_matches(|c| c == '[' || c == ']'), url.port()))
        .await
        .map_err(|source| ServeError::Bind { url: url.to_string(), source })
}

fn read(path: &Path) -> Result<Vec<u8>, ServeError> {
    std::fs::read(path).map_err(|e| ServeError::Tls(format!("{}: {e}", path.display())))
}

fn server_builder(tls: Option<&TlsFiles>) -> Result<Server, ServeError> {
    let mut builder = Server::builder().tcp_nodelay(true);
    if let Some(files) = tls {
        let mut t = ServerTlsConfig::new()
            .identity(Identity::from_pem(read(&files.cert_file)?, read(&files.key_file)?));
        if let (true, Some(ca)) = (files.client_cert_auth, &files.trusted_ca_file) {
            t = t.client_ca_root(Certificate::from_pem(read(ca)?));
        }
        builder = builder.tls_config(t).map_err(|e| ServeError::Tls(e.to_string()))?;
    }
    Ok(builder)
}

fn peer_tls(files: &TlsFiles) -> Result<TlsConfig, ServeError> {
    let ca = files
        .trusted_ca_file
        .as_ref()
        .ok_or_else(|| ServeError::Tls("--peer-trusted-ca-file is required for peer TLS".into()))?;
    Ok(TlsConfig {
        ca_pem: read(ca)?,
        cert_pem: read(&files.cert_file)?,
        key_pem: read(&files.key_file)?,
        server_name: None,
    })
}

/// This member's identity: from the data directory after the first start; from the flags for a
/// new cluster; from a running member's `MemberList` (matched by peer URLs) when joining.
async fn identity(cfg: &ServeConfig, member_dir: &Path) -> Result<MemberIdentity, ServeError> {
    let file = member_dir.join("identity");
    if let Ok(text) = std::fs::read_to_string(&file) {
        return parse_identity(&text)
            .ok_or_else(|| ServeError::Join(format!("{} is malformed", file.display())));
    }
    let ident = match cfg.initial_cluster_state {
        ClusterState::New => MemberIdentity {
            cluster_id: cfg.cluster_id,
            member_id: cfg.member_id,
            members: cfg
                .initial_cluster
                .iter()
                .map(|m| (m.id, m.peer_urls[0].to_string()))
                .collect(),
            voters: cfg.initial_cluster.iter().map(|m| m.id).collect(),
        },
        ClusterState::Existing => join(cfg).await?,
    };
    let mut text = format!("{:x} {:x}\n", ident.cluster_id, ident.member_id);
    for (id, addr) in &ident.members {
        text.push_str(&format!("{id:x} {addr}\n"));
    }
    text.push_str(&format!(
        "voters {}\n",
        ident.voters.iter().map(|v| format!("{v:x}")).collect::<Vec<_>>().join(",")
    ));
    let tmp = member_dir.join("identity.tmp");
    std::fs::write(&tmp, text).map_err(io_err(&tmp))?;
    std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, &file).map_err(io_err(&file))?;
    std::fs::File::open(member_dir).and_then(|f| f.sync_all()).map_err(io_err(member_dir))?;
    Ok(ident)
}

fn parse_identity(text: &str) -> Option<MemberIdentity> {
    let mut lines = text.lines();
    let mut first = lines.next()?.split_whitespace();
    let cluster_id = u64::from_str_radix(first.next()?, 16).ok()?;
    let member_id = u64::from_str_radix(first.next()?, 16).ok()?;
    let (mut members, mut voters) = (BTreeMap::new(), Vec::new());
    for line in lines {
        let (k, v) = line.split_once(' ')?;
        if k == "voters" {
            for id in v.split(',').filter(|s| !s.is_empty()) {
                voters.push(u64::from_str_radix(id, 16).ok()?);
            }
        } else {
            members.insert(u64::from_str_radix(k, 16).ok()?, v.to_string());
        }
    }
    Some(MemberIdentity { cluster_id, member_id, members, voters })
}

/// Asks the other members listed in `--initial-cluster` (on their peer URLs) for the member
/// list and finds this member in it by its advertised peer URLs.
async fn join(cfg: &ServeConfig) -> Result<MemberIdentity, ServeError> {
    let own: Vec<String> = cfg.initial_advertise_peer_urls.iter().map(Url::to_string).collect();
    let mut errors = Vec::new();
    for m in cfg.initial_cluster.iter().filter(|m| m.name != cfg.name) {
        for url in &m.peer_urls {
            if url.is_tls() {
                errors.push(format!("{url}: joining over TLS peer URLs is not supported yet"));
                continue;
            }
            let resp = match member_list(&url.to_string(), true, Duration::from_secs(3)).await {
                Ok(r) => r,
                Err(e) => {
                    errors.push(format!("{url}: {e}"));
                    continue;
                }
            };
            let cluster_id = resp.header.map(|h| h.cluster_id).unwrap_or(0);
            let Some(me) =
                resp.members.iter().find(|m| m.peer_ur_ls.iter().any(|u| own.contains(u)))
            else {
                return Err(ServeError::Join(format!(
                    "no member of the running cluster has peer URLs {own:?}; add it first with `etcdctl member add {} --peer-urls={}`",
                    cfg.name,
                    own.join(",")
                )));
            };
            let members = resp
                .members
                .iter()
                .filter_map(|m| m.peer_ur_ls.first().map(|u| (m.id, u.clone())))
                .collect();
            return Ok(MemberIdentity {
                cluster_id,
                member_id: me.id,
                members,
                voters: Vec::new(),
            });
        }
    }
    Err(ServeError::Join(format!("no running member answered: {}", errors.join("; "))))
}
