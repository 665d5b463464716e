//! The Raft state machine. API skeleton; bodies being written.
#![allow(missing_docs, unused_variables, dead_code)]

use bytes::Bytes;

use crate::config::Config;
use crate::error::Error;
use crate::storage::Storage;
use crate::types::{Entry, HardState, Index, Message, NodeId, ReadState, Role, Term};

/// One batch of work the core asks its driver to do. Do it in this order:
/// 1. send `messages` (they do not depend on this batch's persistence);
/// 2. persist `entries` (replacing the stored log from `entries[0].index` on) and `hard_state`,
///    durably (fsync);
/// 3. call [`Raft::on_persisted`] with `number`, then send `persisted_messages`;
/// 4. apply `committed_entries` in order, then call [`Raft::on_applied`];
/// 5. serve each of `read_states` once the applied index reaches its `index`.
///
/// Steps 2–3 and 4 may run concurrently and several batches may be in flight, but persistence
/// acknowledgements must come in batch order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Ready {
    pub number: u64,
    pub messages: Vec<Message>,
    pub hard_state: Option<HardState>,
    pub entries: Vec<Entry>,
    pub persisted_messages: Vec<Message>,
    pub committed_entries: Vec<Entry>,
    pub read_states: Vec<ReadState>,
}

/// A snapshot of a node's state for observers and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub id: NodeId,
    pub role: Role,
    pub term: Term,
    pub vote: Option<NodeId>,
    pub leader_id: Option<NodeId>,
    pub commit_index: Index,
    pub applied_index: Index,
    pub last_index: Index,
    pub persisted_index: Index,
}

pub struct Raft<S: Storage> {
    storage: S,
}

impl<S: Storage> Raft<S> {
    /// Starts a node from `storage` with nothing applied yet.
    pub fn new(config: Config, storage: S) -> Result<Self, Error> { todo!() }
    /// Restarts a node whose state machine durably applied up to `applied`.
    pub fn restart(config: Config, storage: S, applied: Index) -> Result<Self, Error> { todo!() }
    pub fn tick(&mut self) { todo!() }
    pub fn step(&mut self, msg: Message) -> Result<(), Error> { todo!() }
    pub fn propose(&mut self, data: Bytes) -> Result<(), Error> { todo!() }
    pub fn read_index(&mut self, ctx: Bytes) -> Result<(), Error> { todo!() }
    pub fn campaign(&mut self) { todo!() }
    pub fn has_ready(&self) -> bool { todo!() }
    pub fn ready(&mut self) -> Ready { todo!() }
    pub fn on_persisted(&mut self, number: u64) -> Result<(), Error> { todo!() }
    pub fn on_applied(&mut self, index: Index) -> Result<(), Error> { todo!() }
    pub fn status(&self) -> Status { todo!() }
    pub fn id(&self) -> NodeId { todo!() }
    pub fn role(&self) -> Role { todo!() }
    pub fn term(&self) -> Term { todo!() }
    pub fn leader_id(&self) -> Option<NodeId> { todo!() }
    pub fn storage(&self) -> &S { &self.storage }
    /// The node's current log (stable and not yet persisted entries) in `[lo, hi)`.
    pub fn log_entries(&self, lo: Index, hi: Index) -> Result<Vec<Entry>, Error> { todo!() }
    /// Term of the entry at `index` in the node's current log, if it has one.
    pub fn log_term(&self, index: Index) -> Option<Term> { todo!() }
}
