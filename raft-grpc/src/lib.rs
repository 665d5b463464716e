//! A gRPC transport for [`raft_core`], built on tonic and prost.
//!
//! The network is assumed to be neither reliable, nor fast, nor secure, so:
//!
//! - **One long-lived stream per peer**, carrying batches of messages in order. Each peer has a
//!   bounded queue: [`GrpcTransport::send`](raft_core::Transport::send) never blocks and never
//!   grows memory; a message that does not fit is dropped (Raft retries) and the core is told
//!   [`TransportEvent::Unreachable`](raft_core::TransportEvent::Unreachable).
//! - **Reconnects** with exponential backoff and jitter; one warning when a peer goes down, then
//!   at most one per [`TransportConfig::warn_interval`] until it is back.
//! - **Snapshots** ([`raft_core::MessageBody::InstallSnapshot`]) go on a separate stream over a
//!   separate connection, so heartbeats are not stuck behind them, in chunks of
//!   [`TransportConfig::snapshot_chunk_bytes`] with a CRC-32C per chunk and for the whole. A
//!   broken transfer resumes from the receiver's verified prefix; the whole transfer is bounded by
//!   [`TransportConfig::snapshot_deadline`] and ends in
//!   [`TransportEvent::Snapshot`](raft_core::TransportEvent::Snapshot) `Finished` or `Failed`.
//! - **Every stream starts with a handshake** naming the cluster id and both node ids. A node
//!   from another cluster, an unknown node, or a stream meant for another node is refused with an
//!   error that says so, and logged once. This keeps a misconfigured node out of the wrong
//!   cluster.
//! - **Limits** on everything: message size (both directions), batch size, queue depth, chunk
//!   size, snapshot size, handshake time. See [`TransportConfig`].
//! - **Optional mutual TLS** ([`TlsConfig`]): every node presents a certificate signed by the
//!   cluster CA and checks its peer's.
//! - **Observability**: a tracing span per peer stream (fields `node`, `peer`) and counters in
//!   [`GrpcTransport::metrics`]; [`serve_metrics`] answers Prometheus scrapes of a node's
//!   metrics for a process without an HTTP server of its own.
//!
//! # Security notes
//!
//! - **The handshake's node id is not authenticated.** It guards against misconfiguration, not
//!   attackers: in plaintext, anyone who can connect can claim to be any member; under mutual TLS,
//!   any certificate signed by the cluster CA can claim any member id (certificates are not yet
//!   bound to node ids). Use a CA that signs only this cluster's nodes, and a private network.
//! - **The first frame of a stream is decoded before the handshake is checked**, up to
//!   [`TransportConfig::max_message_bytes`], so an unauthenticated peer can make a node buffer
//!   and decode that much per stream. Keep `max_message_bytes` modest on untrusted networks.
//! - **Refusals say why.** A refused peer learns the reason (and its own claimed ids); the node's
//!   own cluster id is logged locally but not sent back.
//!
//! # Wiring it to a node
//!
//! ```no_run
//! # #[cfg(feature = "transport")]
//! # async fn run() -> Result<(), raft_grpc::Error> {
//! use std::collections::BTreeMap;
//! use raft_core::Transport;
//! use raft_grpc::{GrpcTransport, TransportConfig};
//!
//! let mut config = TransportConfig::new(0xC1u64, 1);
//! config.peers = BTreeMap::from([(2, "10.0.0.2:7000".to_string()), (3, "10.0.0.3:7000".to_string())]);
//!
//! // What the transport observes (unreachable peers, snapshot outcomes) goes to the driver ...
//! let (events_tx, mut events) = tokio::sync::mpsc::channel(1024);
//! // ... and so do the messages other nodes send to this one.
//! let (inbound_tx, mut inbound) = tokio::sync::mpsc::channel(1024);
//!
//! let transport = std::sync::Arc::new(GrpcTransport::new(config, events_tx)?);
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:7000").await.expect("bind");
//! let server = transport.clone();
//! tokio::spawn(async move { server.serve(listener, inbound_tx, std::future::pending()).await });
//!
//! // In the driver loop: `transport.send(ready.messages)`, `node.step(inbound.recv().await)`,
//! // and report `events` to the core.
//! # let _ = (&mut events, &mut inbound);
//! # Ok(()) }
//! ```
//!
//! To mount the service on a tonic `Server` of your own, use [`GrpcTransport::service`] (and
//! [`TlsConfig::server_tls_config`] for TLS).
//!
//! # Wire format
//!
//! `proto/raft.proto` (module [`proto`]) is compiled at build time with `protox`, so no `protoc`
//! is needed. Conversions between wire and core types are in [`wire`]; decoding is fallible and a
//! malformed message is an error, never a panic.
#![deny(missing_docs)]

pub mod proto {
    //! Types generated from `proto/raft.proto` by prost (and tonic, with feature `transport`).
    #![allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic, rust_2018_idioms)]
    include!(concat!(env!("OUT_DIR"), "/raft.v1.rs"));
}

mod error;
pub mod snapshot;
pub mod wire;

#[cfg(feature = "transport")]
mod backoff;
#[cfg(feature = "transport")]
mod config;
#[cfg(feature = "transport")]
mod connect;
#[cfg(feature = "transport")]
mod metrics;
#[cfg(feature = "transport")]
pub mod metrics_http;
#[cfg(feature = "transport")]
mod peer;
#[cfg(feature = "transport")]
mod server;
#[cfg(feature = "transport")]
mod tls;
#[cfg(feature = "transport")]
mod transport;

#[cfg(feature = "fuzzing")]
pub mod fuzzing;

pub use error::WireError;

#[cfg(feature = "transport")]
pub use config::TransportConfig;
#[cfg(feature = "transport")]
pub use error::Error;
#[cfg(feature = "transport")]
pub use metrics::MetricsSnapshot;
#[cfg(feature = "transport")]
pub use metrics_http::serve_metrics;
#[cfg(feature = "transport")]
pub use server::RaftService;
#[cfg(feature = "transport")]
pub use tls::TlsConfig;
#[cfg(feature = "transport")]
pub use transport::{GrpcTransport, PeerStatus};

/// Version of the wire protocol carried in every [`proto::Handshake`].
pub const PROTOCOL_VERSION: u32 = 1;
