//! Transport configuration: identities, peers, limits, timing and TLS.

use std::collections::BTreeMap;
use std::time::Duration;

use raft_core::NodeId;

use crate::error::Error;
use crate::tls::TlsConfig;

/// Bytes a [`crate::proto::MessageFrame`] or [`crate::proto::SnapshotFrame`] adds around its
/// payload (tags, lengths, offsets, checksums). Batches and chunks are sized to leave this room
/// under `max_message_bytes`.
pub(crate) const FRAME_OVERHEAD_BYTES: usize = 64;

/// Configuration of one node's transport. All limits live here; [`TransportConfig::validate`]
/// checks them (and [`crate::GrpcTransport::new`] calls it).
#[derive(Clone, Debug)]
pub struct TransportConfig {
    /// Identity of the cluster. Every stream's handshake carries it and a node refuses streams
    /// from another cluster. Non-zero; choose it at random when the cluster is created.
    pub cluster_id: u64,
    /// This node's id (non-zero).
    pub node_id: NodeId,
    /// Initial peers: node id → address (`host:port`, or a full `http://`/`https://` URI). Only
    /// these nodes may connect; change the set with `add_peer`/`remove_peer`.
    pub peers: BTreeMap<NodeId, String>,
    /// Messages queued for one peer; a message beyond is dropped and reported unreachable.
    pub queue_depth: usize,
    /// Most messages in one batch (one gRPC frame).
    pub max_batch_messages: usize,
    /// Largest encoded gRPC frame sent or accepted, in bytes (a batch of messages or a snapshot
    /// chunk with its header). A larger incoming frame closes the stream with `OutOfRange`; a
    /// larger outgoing message is dropped.
    pub max_message_bytes: usize,
    /// Bytes of snapshot data per chunk.
    pub snapshot_chunk_bytes: usize,
    /// Largest snapshot this node accepts (it is reassembled in memory) or sends.
    pub max_snapshot_bytes: u64,
    /// Bound on one whole snapshot transfer, retries included, on both sides.
    pub snapshot_deadline: Duration,
    /// Bound on dialling a peer (TCP, TLS and HTTP/2 setup), and on a peer sending its handshake
    /// after opening a stream.
    pub connect_timeout: Duration,
    /// First reconnect delay; it doubles up to `backoff_max`, with jitter.
    pub backoff_initial: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// While a peer stays unreachable, at most one warning per this interval (the first failure
    /// is always logged).
    pub warn_interval: Duration,
    /// HTTP/2 keep-alive ping interval; a connection that does not answer within
    /// `keepalive_timeout` is closed (this finds dead peers behind half-open TCP connections).
    pub keepalive_interval: Duration,
    /// See `keepalive_interval`.
    pub keepalive_timeout: Duration,
    /// Mutual TLS; `None` for plaintext.
    pub tls: Option<TlsConfig>,
}

impl TransportConfig {
    /// A configuration with default limits and no peers.
    pub fn new(cluster_id: u64, node_id: NodeId) -> TransportConfig {
        TransportConfig {
            cluster_id,
            node_id,
            peers: BTreeMap::new(),
            queue_depth: 4096,
            max_batch_messages: 512,
            max_message_bytes: 4 << 20,
            snapshot_chunk_bytes: 1 << 20,
            max_snapshot_bytes: 1 << 30,
            snapshot_deadline: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(3),
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_secs(5),
            warn_interval: Duration::from_secs(30),
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(10),
            tls: None,
        }
    }

    /// Checks every field and the rules between them.
    pub fn validate(&self) -> Result<(), Error> {
        let fail = |field: &'static str, rule: String| Err(Error::Config { field, rule });
        if self.cluster_id == 0 {
            return fail("cluster_id", "must be non-zero".into());
        }
        if self.node_id == 0 {
            return fail("node_id", "must be non-zero (0 means none)".into());
        }
        for id in self.peers.keys() {
            if *id == 0 || *id == self.node_id {
                return fail("peers", format!("must not contain node {id} (0 or this node)"));
            }
        }
        if !(1..=1 << 20).contains(&self.queue_depth) {
            return fail(
                "queue_depth",
                format!("must be in 1..=1048576, got {}", self.queue_depth),
            );
        }
        if !(1..=1 << 16).contains(&self.max_batch_messages) {
            return fail(
                "max_batch_messages",
                format!("must be in 1..=65536, got {}", self.max_batch_messages),
            );
        }
        if !(4096..=1 << 30).contains(&self.max_message_bytes) {
            return fail(
                "max_message_bytes",
                format!("must be in 4096..=1GiB, got {}", self.max_message_bytes),
            );
        }
        if self.snapshot_chunk_bytes == 0
            || self.snapshot_chunk_bytes + FRAME_OVERHEAD_BYTES > self.max_message_bytes
        {
            return fail(
                "snapshot_chunk_bytes",
                format!(
                    "must be non-zero and leave {FRAME_OVERHEAD_BYTES} bytes of framing under max_message_bytes ({}), got {}",
                    self.max_message_bytes, self.snapshot_chunk_bytes
                ),
            );
        }
        if self.max_snapshot_bytes == 0 || self.max_snapshot_bytes > usize::MAX as u64 {
            return fail("max_snapshot_bytes", "must be non-zero and addressable".into());
        }
        for (field, value) in [
            ("snapshot_deadline", self.snapshot_deadline),
            ("connect_timeout", self.connect_timeout),
            ("backoff_initial", self.backoff_initial),
            ("warn_interval", self.warn_interval),
            ("keepalive_interval", self.keepalive_interval),
            ("keepalive_timeout", self.keepalive_timeout),
        ] {
            if value.is_zero() {
                return fail(field, "must be non-zero".into());
            }
        }
        if self.backoff_max < self.backoff_initial {
            return fail("backoff_max", "must be at least backoff_initial".into());
        }
        if let Some(tls) = &self.tls {
            tls.validate()?;
        }
        Ok(())
    }
}
