//! raft-grpc over real sockets on 127.0.0.1: message exchange, reconnection, queue bounds,
//! snapshots, refusals (malformed, oversized, foreign cluster, unknown node) and mutual TLS.
//! Assertions never depend on timing; [`harness::WAIT`] only bounds a hang.

mod harness;
mod messages;
mod refusals;
mod snapshots;
mod tls;
