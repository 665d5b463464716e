//! Counters the runtime can export as metrics. Plain relaxed atomics: cheap to bump on every
//! message, read together with [`crate::GrpcTransport::metrics`] (each counter is exact; the set is
//! not one atomic snapshot).

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($( $(#[$doc:meta])* $name:ident ),* $(,)?) => {
        /// The transport's counters, as read at one moment. All are totals since the transport
        /// was created.
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        #[non_exhaustive]
        pub struct MetricsSnapshot {
            $( $(#[$doc])* pub $name: u64, )*
        }

        #[derive(Debug, Default)]
        pub(crate) struct Metrics {
            $( pub(crate) $name: AtomicU64, )*
        }

        impl Metrics {
            pub(crate) fn snapshot(&self) -> MetricsSnapshot {
                MetricsSnapshot { $( $name: self.$name.load(Ordering::Relaxed), )* }
            }
        }
    };
}

counters! {
    /// Messages written to peers' streams.
    messages_sent,
    /// Encoded bytes of the message batches written.
    bytes_sent,
    /// Batches (gRPC frames) written.
    batches_sent,
    /// Messages received from peers and handed to the node.
    messages_received,
    /// Encoded bytes of the message batches received.
    bytes_received,
    /// Messages dropped before sending: queue full, unknown peer, too large, or lost with a
    /// broken stream.
    messages_dropped,
    /// Successful connections to a peer after a previous one failed or ended.
    reconnects,
    /// Failed attempts to connect to a peer or to open a stream.
    connect_failures,
    /// `Unreachable` events dropped because the event channel was full.
    events_dropped,
    /// Snapshots sent and confirmed by the receiver.
    snapshots_sent,
    /// Snapshot transfers that failed (reported `Failed`).
    snapshots_failed,
    /// Snapshot bytes written (retransmissions included).
    snapshot_bytes_sent,
    /// Snapshots received, verified and handed to the node.
    snapshots_received,
    /// Snapshot bytes received and verified.
    snapshot_bytes_received,
    /// Inbound streams refused at the handshake (wrong cluster, unknown node, wrong recipient).
    handshakes_rejected,
    /// Inbound TLS handshakes that failed (wrong or missing certificate, plaintext, timeout).
    tls_handshakes_failed,
    /// Inbound frames refused: undecodable, malformed, oversized, or from the wrong node.
    frames_rejected,
}

impl Metrics {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}
