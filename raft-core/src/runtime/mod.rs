//! The tokio runtime (feature `runtime`, on by default): run the core as a [`Node`] with a
//! [`StateMachine`] of your own, a [`crate::LogStore`] and a [`crate::Transport`].
//!
//! See the crate documentation for a tutorial.

mod apply;
mod config;
mod driver;
mod envelope;
mod mem;
mod metrics;
mod node;
mod state_machine;

pub use config::{NodeConfig, NodeError, ReadConsistency};
pub use envelope::Member;
pub use mem::{MemNetwork, MemTransport};
pub use metrics::NodeMetrics;
pub use node::{ClientRequest, Inbox, Mailbox, Node, NodeStatus, Session, mailbox};
pub use state_machine::{Command, SnapshotBuilder, StateMachine, StateMachineError};
