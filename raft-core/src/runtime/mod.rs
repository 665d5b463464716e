//! The tokio runtime (feature `runtime`, on by default): run the core as a [`Node`] with a
//! [`StateMachine`] of your own, a [`crate::LogStore`] and a [`crate::Transport`].
//!
//! See the crate documentation for a tutorial, and `driver` for the pipeline: a [`Node`] handle
//! sends requests to the driver task, which steps the core and hands each `Ready`'s writes to the
//! persister and its committed entries to the applier; each stage owns its state, and every queue
//! between them is bounded by [`NodeConfig`].

// Leaves: they import nothing from the stages.
mod config;
mod envelope;
mod mailbox;
mod metrics;
mod request;
mod sessions;
mod state_machine;
mod status;
mod waiters;
// Stages, and the code that wires them.
mod apply;
mod driver;
mod members;
mod persist;
mod start;
// The handle, and an in-memory transport.
mod mem;
mod node;

pub use config::{NodeConfig, NodeError, ReadConsistency};
pub use envelope::Member;
pub use mailbox::{Inbox, Mailbox, mailbox};
pub use mem::{MemNetwork, MemTransport};
pub use metrics::NodeMetrics;
pub use node::{ClientRequest, Node, Session};
pub use state_machine::{Command, SnapshotBuilder, StateMachine, StateMachineError};
pub use status::{NodeEvent, NodeStatus};
