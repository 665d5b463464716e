//! raft-kv: an etcd v3 compatible replicated key-value store built on raft-core, raft-storage and
//! raft-grpc. The binary has three commands: `serve` (one member), `up` (a local 3-member
//! cluster) and `bench` (a load generator speaking the etcd v3 API).
#![deny(missing_docs)]

pub mod bench;
pub mod cli;
pub mod pb;
pub mod server;
pub mod store;
pub mod up;
