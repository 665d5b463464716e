//! Errors of the wire layer and of the transport.

#[cfg(feature = "transport")]
use raft_core::NodeId;

/// A wire message that does not decode into a valid core message. Never fatal: the frame is
/// refused and the stream that carried it is closed with an `InvalidArgument` status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// A required field is absent (a `oneof` with no variant, a missing sub-message).
    #[error("missing field `{0}`")]
    Missing(&'static str),
    /// An enum field holds a value this version does not know.
    #[error("field `{field}` has unknown value {value}")]
    UnknownEnum {
        /// The field.
        field: &'static str,
        /// The value found.
        value: i32,
    },
    /// A node id field is 0, which is reserved for "none".
    #[error("field `{0}` is node id 0, which is reserved")]
    ZeroNodeId(&'static str),
    /// `InstallSnapshot` cannot be put on the message stream; it has a stream of its own.
    #[error("InstallSnapshot travels on the snapshot stream, not in a message batch")]
    SnapshotOnMessageStream,
    /// Something is larger than a configured limit.
    #[error("{what} of {bytes} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// What is too large.
        what: &'static str,
        /// Its size.
        bytes: u64,
        /// The limit.
        limit: u64,
    },
    /// A snapshot chunk does not continue the verified prefix.
    #[error(
        "snapshot chunk at offset {offset} does not continue the received prefix of {expected} bytes"
    )]
    ChunkOutOfOrder {
        /// The chunk's offset.
        offset: u64,
        /// The offset expected.
        expected: u64,
    },
    /// A snapshot chunk, or the reassembled snapshot, does not match its CRC-32C.
    #[error("{what} checksum mismatch: expected crc32c {expected:#010x}, computed {actual:#010x}")]
    Checksum {
        /// `"chunk at offset N"` or `"snapshot"`.
        what: String,
        /// The checksum the sender stated.
        expected: u32,
        /// The checksum of the bytes received.
        actual: u32,
    },
    /// The stream ended before the whole snapshot arrived.
    #[error("snapshot incomplete: {received} of {total} bytes received")]
    Incomplete {
        /// Bytes received.
        received: u64,
        /// Bytes announced.
        total: u64,
    },
    /// Protobuf decoding failed.
    #[error("undecodable {what}: {detail}")]
    Decode {
        /// The message type.
        what: &'static str,
        /// The decoder's explanation.
        detail: String,
    },
}

/// Errors of the transport's API and of its connections.
#[cfg(feature = "transport")]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration breaks a rule.
    #[error("invalid transport config: {field}: {rule}")]
    Config {
        /// The field at fault.
        field: &'static str,
        /// The rule it breaks.
        rule: String,
    },
    /// The transport was created outside a tokio runtime.
    #[error("no tokio runtime: create the transport from inside one")]
    NoRuntime,
    /// A peer address that cannot be dialled.
    #[error("invalid address {addr:?} for node {peer}: {reason}")]
    InvalidAddress {
        /// The peer.
        peer: NodeId,
        /// The address given.
        addr: String,
        /// What is wrong.
        reason: String,
    },
    /// The node is not a configured peer.
    #[error("node {0} is not a peer of this node")]
    UnknownPeer(NodeId),
    /// TLS material that does not load.
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// The connection to a peer could not be made (refused, timed out, TLS handshake failed).
    #[error("cannot connect to node {peer} at {addr}: {detail}")]
    Connect {
        /// The peer.
        peer: NodeId,
        /// Its address.
        addr: String,
        /// The cause, with its chain of sources.
        detail: String,
    },
    /// The peer answered with an error status: it refused the handshake (wrong cluster, unknown
    /// node), a frame, or the stream broke.
    #[error("node {peer} answered {code:?}: {message}")]
    Status {
        /// The peer.
        peer: NodeId,
        /// The gRPC status code.
        code: tonic::Code,
        /// The status message (for a refused handshake it says why).
        message: String,
    },
    /// The peer broke the protocol (an unexpected reply).
    #[error("protocol error with node {peer}: {detail}")]
    Protocol {
        /// The peer.
        peer: NodeId,
        /// What was unexpected.
        detail: String,
    },
    /// A message or snapshot could not be encoded within the limits.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The server could not start or stopped with an error.
    #[error("server failed: {0}")]
    Serve(String),
}

#[cfg(feature = "transport")]
impl Error {
    /// Builds [`Error::Status`] from a status a peer returned.
    pub(crate) fn status(peer: NodeId, status: &tonic::Status) -> Error {
        let mut message = status.message().to_string();
        append_sources(&mut message, std::error::Error::source(status));
        Error::Status { peer, code: status.code(), message }
    }

    /// Whether retrying later may succeed without anyone changing a configuration.
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            Error::Status { code, .. } => !matches!(
                code,
                tonic::Code::PermissionDenied
                    | tonic::Code::FailedPrecondition
                    | tonic::Code::ResourceExhausted
                    | tonic::Code::InvalidArgument
                    | tonic::Code::OutOfRange
                    | tonic::Code::Unauthenticated
            ),
            Error::Connect { .. } | Error::Protocol { .. } => true,
            _ => false,
        }
    }
}

/// Appends `": cause"` for every error in a source chain, so a log line says what really failed
/// (tonic's own `Display` often says only "transport error").
#[cfg(feature = "transport")]
pub(crate) fn append_sources(
    out: &mut String,
    mut source: Option<&(dyn std::error::Error + 'static)>,
) {
    let mut depth = 0;
    while let Some(err) = source {
        let text = err.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = err.source();
        depth += 1;
        if depth == 16 {
            break;
        }
    }
}

/// Display of an error with its whole source chain.
#[cfg(feature = "transport")]
pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    append_sources(&mut out, err.source());
    out
}
