//! A Raft state machine with split-brain protection, written as a pure, deterministic core.
//!
//! [`Raft`] does no I/O, reads no clock, spawns nothing and has no randomness of its own (the
//! election timeouts come from [`Config::seed`]). Time arrives as [`Raft::tick`], other nodes'
//! messages through [`Raft::step`], client requests through [`Raft::propose`] and
//! [`Raft::read_index`]; everything the node wants done comes out of [`Raft::ready`] as data.
//!
//! Split-brain protection is on by default: PreVote (a candidate first asks whether it could win,
//! so a partitioned node does not inflate terms), CheckQuorum (a leader that has not heard from a
//! quorum for an election timeout steps down), vote refusal while a leader is live, and ReadIndex
//! reads. Lease reads are opt-in ([`ReadMode::Lease`]) and [`Config::validate`] refuses them
//! without CheckQuorum and a clock-drift bound.
//!
//! # Running a replicated service (feature `runtime`, on by default)
//!
//! Most users never touch the core directly. They implement [`runtime::StateMachine`] (apply
//! committed commands, answer queries, snapshot and restore) and start a [`runtime::Node`] with a
//! storage and a transport; the node does elections, replication, persistence (fsync before any
//! acknowledgement), snapshots and reads. Here is a replicated counter on three nodes in one
//! process, with the in-memory storage and network that tests use:
//!
//! ```
//! use std::time::Duration;
//! use bytes::Bytes;
//! use raft_core::runtime::{
//!     Command, MemNetwork, Node, NodeConfig, ReadConsistency, StateMachine, StateMachineError,
//!     mailbox,
//! };
//! use raft_core::{Config, MemStorage, Role};
//!
//! /// The application: a counter. Every command adds one and answers the new value.
//! #[derive(Default)]
//! struct Counter(u64);
//!
//! impl StateMachine for Counter {
//!     fn apply(&mut self, commands: &[Command<'_>]) -> Result<Vec<Bytes>, StateMachineError> {
//!         Ok(commands.iter().map(|_| { self.0 += 1; Bytes::from(self.0.to_string()) }).collect())
//!     }
//!     fn query(&self, _query: &[u8]) -> Result<Bytes, StateMachineError> {
//!         Ok(Bytes::from(self.0.to_string()))
//!     }
//!     fn snapshot(&mut self) -> Result<Bytes, StateMachineError> {
//!         Ok(Bytes::copy_from_slice(&self.0.to_le_bytes()))
//!     }
//!     fn restore(&mut self, data: &[u8]) -> Result<(), StateMachineError> {
//!         self.0 = u64::from_le_bytes(data.try_into()?);
//!         Ok(())
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! tokio::runtime::Runtime::new()?.block_on(async {
//!     let net = MemNetwork::new();
//!     let mut nodes = Vec::new();
//!     for id in 1..=3 {
//!         let mut config = NodeConfig::new(Config::new(id));
//!         config.tick_interval = Duration::from_millis(10); // elections within ~0.2 s
//!         let (mailbox, inbox) = mailbox(config.inbound_queue);
//!         let transport = net.join(id, mailbox);
//!         let storage = MemStorage::new_with_voters(&[1, 2, 3]);
//!         nodes.push(Node::start(config, storage, transport, Counter::default(), inbox).await?);
//!     }
//!     // Wait until every node knows the leader, then propose on any node: followers forward
//!     // to the leader (a node that knows no leader answers `NotLeader`; clients retry).
//!     for node in &nodes {
//!         node.wait_for(Duration::from_secs(10), |s| s.leader.is_some()).await?;
//!     }
//!     assert_eq!(nodes[1].propose("add").await?, "1");
//!     assert_eq!(nodes[2].propose("add").await?, "2");
//!     // A linearizable read on any node sees every acknowledged write.
//!     assert_eq!(nodes[0].read(ReadConsistency::Linearizable, "").await?, "2");
//!     // Graceful shutdown hands leadership over first.
//!     for node in &nodes {
//!         node.shutdown().await;
//!     }
//!     assert!(nodes.iter().all(|n| n.status().role != Role::Leader || n.status().stopped.is_some()));
//!     Ok::<_, Box<dyn std::error::Error>>(())
//! })?;
//! # Ok(()) }
//! ```
//!
//! For production, swap `MemStorage` for `raft_storage::SledStorage` (durable, checksummed,
//! fsynced) and `MemNetwork` for `raft_grpc::GrpcTransport`. The complete program, in under 60
//! lines, is `raft-grpc/examples/durable_counter.rs`:
//!
//! ```ignore
#![doc = include_str!("../../raft-grpc/examples/durable_counter.rs")]
//! ```
//!
//! Retrying a proposal after a timeout may apply it twice. For exactly-once commands open a
//! [`runtime::Session`] ([`runtime::Node::open_session`]) and send its requests with
//! [`runtime::Node::propose_request`]: a retry, on any node, is answered with the original
//! response (Raft dissertation §6.3). Sessions expire after a number of log entries, never by
//! wall clock, so every node agrees.
//!
//! Everything else an embedder needs is on [`runtime::Node`] too, and works on any member
//! (requests made on a follower are forwarded to the leader and answered where they were made):
//! [`runtime::Node::add_voter`] adds a node safely in one call (as a learner, promoted by the
//! leader once it has caught up), [`runtime::Node::add_learner`], [`runtime::Node::promote`],
//! [`runtime::Node::remove`], [`runtime::Node::change_membership`] (several changes through a
//! joint configuration), [`runtime::Node::transfer_leadership`];
//! [`runtime::Node::read_barrier`] (returns once this node applied everything committed before
//! the call: for state the application reads on its own); [`runtime::Node::events`], a stream of
//! leadership and membership changes (and `removed`, when this node learns it was removed);
//! [`runtime::Node::prometheus_metrics`], every counter, gauge and latency histogram in the
//! Prometheus text format.
//!
//! # The driving loop
//!
//! A driver owns the node, its storage, the transport and the state machine. Each time an input
//! arrives it steps the node, then does what the `Ready` says, in this order:
//!
//! ```
//! use bytes::Bytes;
//! use raft_core::{Config, EntryKind, MemStorage, Raft, Role};
//!
//! // A one-node cluster: it elects itself and commits alone.
//! let storage = MemStorage::new_with_voters(&[1]);
//! let mut node = Raft::new(Config::new(1), storage.clone())?;
//! let mut applied = Vec::new();
//!
//! let mut drive = |node: &mut Raft<MemStorage>, applied: &mut Vec<Bytes>| -> Result<(), raft_core::Error> {
//!     while node.has_ready() {
//!         let rd = node.ready();
//!         // 1. Messages that do not depend on this batch being durable go out now
//!         //    (a leader's appends, sent while it persists its own copy).
//!         assert!(rd.messages.is_empty(), "nobody to send to in a one-node cluster");
//!         // 2. Persist durably (one fsync for all of it): first a snapshot received from the
//!         //    leader (the state machine restores from it before applying what follows), then
//!         //    the entries (they replace the log from entries[0].index on), the hard state (its
//!         //    commit may point into these entries) and a changed membership.
//!         //    `rd.must_sync()` says whether anything here needs the fsync at all (a batch
//!         //    that only commits, sends or applies does not: a commit index that moved alone
//!         //    is never handed out, it is volatile in Raft).
//!         if let Some(snapshot) = &rd.snapshot {
//!             storage.install(snapshot)?;
//!         }
//!         storage.append(&rd.entries)?;
//!         if let Some(hs) = rd.hard_state {
//!             storage.set_hard_state(hs);
//!         }
//!         if let Some(cs) = rd.conf_state {
//!             storage.set_conf_state(cs);
//!         }
//!         // 3. ... then acknowledge, and only now send votes and append answers.
//!         node.on_persisted(rd.number)?;
//!         assert!(rd.persisted_messages.is_empty());
//!         // 4. Apply committed entries in order.
//!         for e in &rd.committed_entries {
//!             if e.kind == EntryKind::Normal {
//!                 applied.push(e.data.clone());
//!             }
//!         }
//!         if let Some(e) = rd.committed_entries.last() {
//!             node.on_applied(e.index)?;
//!         }
//!         // 5. Reads in rd.read_states may be served once applied >= their index; reads in
//!         //    rd.aborted_reads will never be confirmed (this node stopped leading, or the
//!         //    term changed): answer "not the leader" at once.
//!         assert!(rd.read_states.is_empty() && rd.aborted_reads.is_empty());
//!         // 6. Requests this node forwarded to a leader that will not be carried out
//!         //    (proposals, membership changes, transfers the leader refused): answer their
//!         //    callers with rd.refused[i].error at once (a proposal's payload says whose).
//!         assert!(rd.refused.is_empty(), "a leader forwards nothing");
//!     }
//!     Ok(())
//! };
//!
//! // Time passes: after an election timeout the node campaigns and wins.
//! while node.role() != Role::Leader {
//!     node.tick();
//!     drive(&mut node, &mut applied)?;
//! }
//! node.propose(Bytes::from_static(b"x = 1"))?;
//! drive(&mut node, &mut applied)?;
//! assert_eq!(applied, vec![Bytes::from_static(b"x = 1")]);
//! # Ok::<(), raft_core::Error>(())
//! ```
//!
//! With more nodes the driver also delivers `messages` to their peers and calls [`Raft::step`]
//! with what arrives. The [`testkit`] module (feature `testkit`) has a synchronous
//! `testkit::harness::Harness` and a deterministic fault-injecting simulator that do exactly
//! that.
//!
//! # Guarantees and their evidence
//!
//! Safety (election safety, log matching, leader completeness, state machine safety, no double
//! vote) is checked after every step of a seeded simulator that drops, duplicates, reorders and
//! delays messages, partitions the network, crashes nodes (losing unsynced writes), pauses them
//! and runs their clocks at different rates; client histories are checked for linearizability.
#![deny(missing_docs)]

mod confchange;
mod config;
mod error;
mod ids;
mod log;
mod progress;
mod quorum;
mod raft;
mod rng;
mod storage;
mod transport;
mod types;

pub use config::{Config, ReadMode};
pub use error::{ConfigError, Error, StorageError};
pub use raft::{PeerProgress, Raft, Ready, ReplicationState, Status};
pub use storage::{InitialState, LogStore, MemStorage, Storage};
pub use transport::{SnapshotStatus, Transport, TransportEvent};
pub use types::{
    ConfChange, ConfChangeOp, ConfChangeTransition, ConfState, ENTRY_OVERHEAD_BYTES, Entry,
    EntryKind, Forwarded, HardState, Index, Message, MessageBody, NodeId, ReadState, Refused, Role,
    Snapshot, SnapshotMeta, Term,
};

#[cfg(feature = "runtime")]
pub mod runtime;

#[cfg(test)]
mod raft_tests;

#[cfg(any(test, feature = "testkit"))]
pub mod testkit;

#[cfg(any(test, feature = "testkit"))]
pub mod fuzzing;
