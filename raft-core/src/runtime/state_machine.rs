//! The trait the application implements.

use bytes::Bytes;

use crate::types::{Index, Term};

/// An error from the application's state machine. Returning one from [`StateMachine::apply`],
/// [`StateMachine::snapshot`] or [`StateMachine::restore`] is fatal for the node: it stops (with
/// [`crate::runtime::NodeError::StateMachine`]) rather than diverge from its peers. Errors that are
/// part of the application's semantics (a failed compare, a missing key) belong in the response.
pub type StateMachineError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Produces a snapshot's data away from the apply task: see
/// [`StateMachine::snapshot_builder`].
pub type SnapshotBuilder = Box<dyn FnOnce() -> Result<Bytes, StateMachineError> + Send + 'static>;

/// One committed command, handed to [`StateMachine::apply`] in log order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Command<'a> {
    /// Log index of the entry that carries it.
    pub index: Index,
    /// Term of that entry.
    pub term: Term,
    /// The bytes the client proposed.
    pub data: &'a [u8],
}

/// The replicated application: a deterministic function of the commands applied to it.
///
/// Contract:
/// - **Deterministic.** `apply` must produce the same state and responses on every node for the
///   same commands: no clocks, no randomness, no iteration over unordered maps.
/// - **Starts empty.** The state machine given to [`crate::runtime::Node::start`] holds no state;
///   the runtime restores it from the latest snapshot (if any) and replays the log after it.
/// - **Snapshots are whole.** `snapshot` serializes everything `apply` has changed so far;
///   `restore` replaces the whole state with a snapshot's data.
/// - Methods run on the runtime's apply task, one at a time, never concurrently with each other;
///   they may block (file I/O is fine) but should not wait on the network. The one exception is
///   the builder [`StateMachine::snapshot_builder`] returns, which runs on its own thread while
///   `apply` goes on.
pub trait StateMachine: Send + 'static {
    /// Applies committed commands in order and returns one response per command, in the same
    /// order. A command a client retried through a session is not applied twice: the runtime
    /// answers the retry with the recorded response.
    fn apply(&mut self, commands: &[Command<'_>]) -> Result<Vec<Bytes>, StateMachineError>;

    /// Answers a read-only query against the current state (after the runtime has made sure the
    /// state is as fresh as the read's consistency asks).
    fn query(&self, query: &[u8]) -> Result<Bytes, StateMachineError>;

    /// Serializes the whole state.
    fn snapshot(&mut self) -> Result<Bytes, StateMachineError>;

    /// Starts a snapshot of the state as it is now, to be serialized without holding up `apply`:
    /// the runtime calls this on the apply task, then runs the returned builder on a blocking
    /// thread while later commands are applied. The builder must produce exactly the state as of
    /// this call (what [`StateMachine::snapshot`] would have returned), whatever is applied
    /// meanwhile; a state machine with cheap point-in-time views (persistent data structures,
    /// MVCC) implements this to keep large snapshots from stalling the node. If the state is
    /// replaced by [`StateMachine::restore`] while a builder runs, the runtime discards what the
    /// builder returns. At most one builder runs at a time.
    ///
    /// The default serializes at once with [`StateMachine::snapshot`].
    fn snapshot_builder(&mut self) -> Result<SnapshotBuilder, StateMachineError> {
        let data = self.snapshot()?;
        Ok(Box::new(move || Ok(data)))
    }

    /// Replaces the whole state with `data` from [`StateMachine::snapshot`] (possibly taken on
    /// another node).
    fn restore(&mut self, data: &[u8]) -> Result<(), StateMachineError>;

    /// Whether these methods may block (file I/O, waiting on a lock): then, on a multi-thread
    /// runtime, the runtime applies on an OS thread of its own, so a slow call never holds up a
    /// runtime worker. A state machine that only computes in memory answers `false` and is
    /// applied on a runtime task instead, which saves a thread wake-up for every batch (about
    /// 10–20 µs each on a busy machine). Asked once, at start. Default `true`.
    fn may_block(&self) -> bool {
        true
    }
}
