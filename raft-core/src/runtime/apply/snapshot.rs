//! Taking snapshots: one at a time, built off the apply task and stored by the builder's thread,
//! with the callers waiting for it kept in one place ([`Build`]). The thread is started with the
//! first snapshot and kept for the next ones (a thread per snapshot cost more than the rest of
//! the snapshot with a small state and frequent snapshots).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use bytes::Bytes;
use tokio::sync::watch;

use super::Applied;
use crate::error::{Error, StorageError};
use crate::runtime::config::NodeError;
use crate::runtime::envelope::SnapshotEnvelope;
use crate::runtime::metrics::Metrics;
use crate::runtime::request::Reply;
use crate::runtime::state_machine::SnapshotBuilder;
use crate::storage::LogStore;
use crate::types::{Index, NodeId, Snapshot, SnapshotMeta};

/// The snapshot under way and the callers waiting for it.
struct Build {
    waiters: Mutex<Vec<Reply<Index>>>,
    /// Set (under the `waiters` lock) once the waiters were answered: later callers start anew.
    done: AtomicBool,
}

impl Build {
    /// Adds a caller; false if the build is already done (the caller was not added).
    fn join(&self, reply: Reply<Index>) -> Result<(), Reply<Index>> {
        let mut w = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        if self.done.load(Ordering::Acquire) {
            return Err(reply);
        }
        w.push(reply);
        Ok(())
    }

    fn finish(&self, result: &Result<Index, NodeError>) {
        let waiters = {
            let mut w = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
            self.done.store(true, Ordering::Release);
            std::mem::take(&mut *w)
        };
        for w in waiters {
            let _ = w.send(result.clone());
        }
    }
}

/// A snapshot job for the builder thread.
type Job = Box<dyn FnOnce() + Send + 'static>;

/// Starts snapshots and keeps track of the one under way.
pub(crate) struct Snapshots<S> {
    id: NodeId,
    storage: S,
    metrics: Arc<Metrics>,
    /// For a storage failure while compacting: the node must stop.
    progress: Arc<watch::Sender<Applied>>,
    current: Option<Arc<Build>>,
    /// The builder thread and its queue (holding at most the one job under way).
    builder: Option<(mpsc::Sender<Job>, std::thread::JoinHandle<()>)>,
    /// Index of the last snapshot taken or restored (for `snapshot_entries`).
    pub(crate) last: Index,
    /// Bumped by every restore: a snapshot built from an older state is dropped. With it, the
    /// index restored (what callers of a dropped build are answered with).
    generation: Arc<(AtomicU64, AtomicU64)>,
}

impl<S: LogStore + Clone + Send + Sync + 'static> Snapshots<S> {
    pub(crate) fn new(
        id: NodeId,
        storage: S,
        metrics: Arc<Metrics>,
        progress: Arc<watch::Sender<Applied>>,
        last: Index,
    ) -> Snapshots<S> {
        let generation = Arc::new((AtomicU64::new(0), AtomicU64::new(last)));
        Snapshots { id, storage, metrics, progress, current: None, builder: None, last, generation }
    }

    /// Whether a snapshot is being built or stored.
    pub(crate) fn under_way(&self) -> bool {
        self.current.as_ref().is_some_and(|b| !b.done.load(Ordering::Acquire))
    }

    /// Adds `reply` to the snapshot under way; gives it back if there is none.
    pub(crate) fn join(&mut self, reply: Option<Reply<Index>>) -> Result<(), Option<Reply<Index>>> {
        let Some(build) = self.current.as_ref().filter(|_| self.under_way()) else {
            return Err(reply);
        };
        match reply {
            None => Ok(()),
            Some(r) => build.join(r).map_err(Some),
        }
    }

    /// The state was replaced by a snapshot at `index` (a build under way is dropped).
    pub(crate) fn restored(&mut self, index: Index) {
        self.generation.1.store(index, Ordering::Release);
        self.generation.0.fetch_add(1, Ordering::AcqRel);
        self.last = index;
    }

    /// Starts a snapshot of the state `build` was taken from, at `meta`, answering `reply` (if
    /// any) once it is stored. `tables` is the runtime's part of the state at that point.
    pub(crate) fn start(
        &mut self,
        meta: SnapshotMeta,
        tables: SnapshotEnvelope,
        build: SnapshotBuilder,
        reply: Option<Reply<Index>>,
    ) {
        let job = Arc::new(Build {
            waiters: Mutex::new(reply.into_iter().collect()),
            done: false.into(),
        });
        self.last = meta.index;
        let run = {
            let (job, storage, metrics) = (job.clone(), self.storage.clone(), self.metrics.clone());
            let (progress, generation, id) =
                (self.progress.clone(), self.generation.clone(), self.id);
            let started = generation.0.load(Ordering::Acquire);
            move || {
                let result =
                    build_and_store(id, meta, tables, build, &storage, &generation, started);
                match &result {
                    Ok(Some(index)) => {
                        metrics.snapshots_taken.inc();
                        tracing::info!(node = id, index, "snapshot taken, log compacted");
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::error!(node = id, error = %e, "snapshot failed; stopping");
                        let e = e.clone();
                        progress.send_modify(|p| p.failed = Some(e));
                    }
                }
                // A build overtaken by a newer snapshot answers with that one's index.
                let restored = generation.1.load(Ordering::Acquire);
                job.finish(&result.map(|i| i.unwrap_or(restored)));
            }
        };
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => {
                if let Err(e) = self.hand_over(Box::new(run)) {
                    let e = NodeError::Fatal(format!("cannot start the snapshot thread: {e}"));
                    job.finish(&Err(e.clone()));
                    self.progress.send_modify(|p| p.failed = Some(e));
                }
            }
            // Current-thread runtimes (the deterministic tests): inline, nothing else could
            // run meanwhile anyway.
            _ => run(),
        }
        self.current = Some(job);
    }

    /// Queues `job` for the builder thread, starting it if there is none (or it ended).
    fn hand_over(&mut self, job: Job) -> std::io::Result<()> {
        let job = match &self.builder {
            Some((tx, _)) => match tx.send(job) {
                Ok(()) => return Ok(()),
                Err(mpsc::SendError(job)) => job,
            },
            None => job,
        };
        self.wait();
        let (tx, rx) = mpsc::channel::<Job>();
        let handle = std::thread::Builder::new().name("raft-snapshot".into()).spawn(move || {
            while let Ok(job) = rx.recv() {
                job();
            }
        })?;
        // The thread holds the receiver until the sender is dropped: this cannot fail.
        let _ = tx.send(job);
        self.builder = Some((tx, handle));
        Ok(())
    }

    /// Waits for the build under way and ends the builder thread (when the applier stops:
    /// nothing may touch storage after).
    pub(crate) fn wait(&mut self) {
        if let Some((tx, handle)) = self.builder.take() {
            drop(tx);
            let _ = handle.join();
        }
    }
}

/// Builds the data, wraps it with the runtime's tables and stores it, compacting the log.
/// `Ok(None)`: dropped, a restore replaced the state (or storage holds a newer snapshot).
fn build_and_store<S: LogStore>(
    id: NodeId,
    meta: SnapshotMeta,
    mut tables: SnapshotEnvelope,
    build: SnapshotBuilder,
    storage: &S,
    generation: &(AtomicU64, AtomicU64),
    started: u64,
) -> Result<Option<Index>, NodeError> {
    let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(build));
    if generation.0.load(Ordering::Acquire) != started {
        // Built from a state a restore replaced: whatever came out is meaningless.
        return Ok(None);
    }
    tables.app = match built {
        Ok(Ok(app)) => app,
        Ok(Err(e)) => return Err(NodeError::StateMachine(e.to_string())),
        Err(_) => return Err(NodeError::StateMachine("the snapshot builder panicked".into())),
    };
    let index = meta.index;
    let data: Bytes = tables.encode();
    let stored = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        storage.compact(&Snapshot { meta, data })
    }));
    match stored {
        Ok(Ok(())) => Ok(Some(index)),
        // A snapshot from the leader was installed meanwhile: that one stands.
        Ok(Err(StorageError::Compacted { .. })) => Ok(None),
        Ok(Err(e)) => {
            Err(NodeError::Fatal(format!("node {id}: storing the snapshot at {index}: {e}")))
        }
        Err(_) => Err(NodeError::Fatal("storage panicked while compacting".into())),
    }
}

/// The error for a snapshot asked at an index whose membership is not known here yet (just
/// after a restart, before the log replay passes the stored configuration).
pub(crate) fn out_of_range(index: Index, first: Index) -> NodeError {
    NodeError::Raft(Error::SnapshotOutOfRange { index, first, applied: index })
}
