//! raft-core (tutorial to come).
#![deny(missing_docs)]

mod config;
mod error;
mod log;
mod progress;
mod quorum;
mod raft;
mod rng;
mod storage;
mod types;

pub use config::{Config, ReadMode};
pub use error::{ConfigError, Error, StorageError};
pub use raft::{Raft, Ready, Status};
pub use storage::{ConfState, InitialState, MemStorage, Storage};
pub use types::{
    ENTRY_OVERHEAD_BYTES, Entry, EntryKind, HardState, Index, Message, MessageBody, NodeId,
    ReadState, Role, Term,
};

#[cfg(test)]
mod raft_tests;

#[cfg(any(test, feature = "testkit"))]
pub mod testkit;

#[cfg(any(test, feature = "testkit"))]
pub mod fuzzing;
