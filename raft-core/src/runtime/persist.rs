//! The persister: group commit. Every batch that queued up while the previous `sync` ran is
//! covered by one `sync`; then the messages that waited for durability go out and the highest
//! durable batch number is published. On a multi-thread runtime it has a thread of its own, so
//! an fsync neither blocks nor hands off a runtime worker; on a current-thread runtime (the
//! deterministic tests) it is a task.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, watch};

use super::config::NodeError;
use super::metrics::Metrics;
use crate::storage::LogStore;
use crate::transport::Transport;
use crate::types::Message;

/// One `Ready` whose writes the driver made (visible, not yet durable).
pub(crate) struct PersistJob {
    pub(crate) number: u64,
    /// Whether it needs an fsync (`Ready::must_sync`).
    pub(crate) sync: bool,
    /// Messages to send once it is durable.
    pub(crate) messages: Vec<Message>,
}

/// The persister's progress: every batch up to `durable` is durable; `failed` once an fsync
/// failed (the persister stopped). Published as a watch: acknowledgements are cumulative, so
/// the persister never waits for the driver.
#[derive(Clone, Debug, Default)]
pub(crate) struct Durable {
    pub(crate) number: u64,
    pub(crate) failed: Option<NodeError>,
}

pub(crate) struct Persister<S, T: ?Sized> {
    pub(crate) storage: S,
    pub(crate) transport: Arc<T>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) done: watch::Sender<Durable>,
}

impl<S, T> Persister<S, T>
where
    S: LogStore + Send + Sync + 'static,
    T: Transport + ?Sized + 'static,
{
    /// As a task (current-thread runtimes).
    pub(crate) async fn run(self, mut jobs: mpsc::Receiver<PersistJob>) {
        while let Some(first) = jobs.recv().await {
            if !self.round(first, &mut jobs) {
                return;
            }
        }
    }

    /// On a thread of its own (multi-thread runtimes).
    pub(crate) fn run_blocking(self, mut jobs: mpsc::Receiver<PersistJob>) {
        while let Some(first) = jobs.blocking_recv() {
            if !self.round(first, &mut jobs) {
                return;
            }
        }
    }

    /// Syncs, sends and acknowledges `first` and every job queued behind it; false when the
    /// persister must stop.
    fn round(&self, first: PersistJob, jobs: &mut mpsc::Receiver<PersistJob>) -> bool {
        let mut batch = vec![first];
        while let Ok(job) = jobs.try_recv() {
            batch.push(job);
        }
        if batch.iter().any(|j| j.sync) {
            let started = Instant::now();
            if let Err(e) = self.storage.sync() {
                let failed = Some(NodeError::Fatal(format!("fsync failed: {e}")));
                self.done.send_modify(|d| d.failed = failed);
                return false;
            }
            self.metrics.fsyncs.inc();
            self.metrics.observe_fsync(started.elapsed());
        }
        let number = batch.last().map_or(0, |j| j.number);
        let messages: Vec<Message> = batch.into_iter().flat_map(|j| j.messages).collect();
        if !messages.is_empty() {
            self.transport.send(messages);
        }
        self.done.send_modify(|d| d.number = d.number.max(number));
        !self.done.is_closed()
    }
}
