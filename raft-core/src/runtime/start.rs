//! Builds a node: restores the state machine from the latest snapshot, then wires and spawns the
//! driver, the persister and the applier (see `driver` for the picture).

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{broadcast, mpsc, watch};
use tracing::Instrument;

use super::apply::{Applied, Applier, ApplierParts};
use super::config::{NodeConfig, NodeError};
use super::driver::{Driver, DriverParts};
use super::envelope::{Member, SnapshotEnvelope};
use super::mailbox::Inbox;
use super::members::{MemberTable, Members};
use super::metrics::Metrics;
use super::persist::{Durable, Persister};
use super::request::Request;
use super::state_machine::StateMachine;
use super::status::{NodeEvent, NodeStatus};
use crate::raft::Raft;
use crate::storage::LogStore;
use crate::transport::Transport;
use crate::types::SnapshotMeta;

/// What a handle needs of a started node.
pub(crate) struct Started {
    pub(crate) cfg: Arc<NodeConfig>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) requests: mpsc::Sender<Request>,
    pub(crate) status: watch::Receiver<NodeStatus>,
    pub(crate) members: watch::Receiver<Arc<MemberTable>>,
    pub(crate) events: broadcast::Sender<NodeEvent>,
}

fn fatal(what: impl std::fmt::Display) -> NodeError {
    NodeError::Fatal(what.to_string())
}

pub(crate) async fn start<S, T, M>(
    config: NodeConfig,
    storage: S,
    transport: Arc<T>,
    mut state_machine: M,
    inbox: Inbox,
) -> Result<Started, NodeError>
where
    S: LogStore + Clone + Send + Sync + 'static,
    T: Transport + ?Sized + 'static,
    M: StateMachine,
{
    config.validate().map_err(|e| NodeError::Raft(e.into()))?;
    let cfg = Arc::new(config);
    let id = cfg.raft.id;
    let snapshot = storage.snapshot().map_err(fatal)?;
    let init = storage.initial_state().map_err(fatal)?;
    let mut tables = SnapshotEnvelope::default();
    for (&mid, addr) in &cfg.initial_members {
        tables.members.insert(mid, Member { addr: addr.clone(), meta: Bytes::new() });
    }
    // The applied index and the term and membership as of it.
    let mut applied = SnapshotMeta { index: 0, term: 0, conf_state: init.conf_state };
    if snapshot.meta.index > 0 {
        let index = snapshot.meta.index;
        let env = SnapshotEnvelope::decode(&snapshot.data)
            .map_err(|e| fatal(format!("snapshot at index {index} is invalid: {e}")))?;
        state_machine.restore(&env.app).map_err(|e| NodeError::StateMachine(e.to_string()))?;
        tables = SnapshotEnvelope { app: Bytes::new(), ..env };
        applied = snapshot.meta.clone();
    }
    drop(snapshot);
    let raft = Raft::restart(cfg.raft.clone(), storage.clone(), applied.index)?;
    let metrics = Arc::new(Metrics::new(id));
    metrics.applied_index.set(applied.index);

    let initial = NodeStatus {
        id,
        applied_index: applied.index,
        conf_state: raft.conf_state().clone(),
        ..NodeStatus::default()
    };
    let (status_tx, status) = watch::channel(initial);
    let (events, _) = broadcast::channel(cfg.event_queue);
    let (requests_tx, requests) = mpsc::channel(cfg.max_pending_requests);
    let (persist_tx, persist_rx) = mpsc::channel(cfg.persist_queue_batches);
    let (durable_tx, durable) = watch::channel(Durable::default());
    let (apply_tx, apply_rx) = mpsc::channel(cfg.apply_queue_batches);
    let (applied_tx, applied_rx) = watch::channel(Applied { index: applied.index, failed: None });
    let table = MemberTable { members: tables.members, promote: tables.promote };
    let (members_tx, members) = watch::channel(Arc::new(table.clone()));
    let members_owner = Members::new(id, table, &applied.conf_state, transport.clone(), members_tx)
        .map_err(fatal)?;

    let apply_on_thread = state_machine.may_block();
    let applier = Applier::new(ApplierParts {
        cfg: cfg.clone(),
        sm: state_machine,
        storage: storage.clone(),
        members: members_owner,
        sessions: tables.sessions,
        metrics: metrics.clone(),
        progress: applied_tx,
        applied,
    });
    let persister = Persister {
        storage: storage.clone(),
        transport: transport.clone(),
        metrics: metrics.clone(),
        done: durable_tx,
    };
    let runtime = tokio::runtime::Handle::current();
    let threads = runtime.runtime_flavor() != tokio::runtime::RuntimeFlavor::CurrentThread;
    // On a multi-thread runtime, stages that block get threads of their own: fsyncs and state
    // machine calls then never hold up (or hand off) a runtime worker. They end when the driver
    // drops their queues, and each enters the runtime, for transports that spawn tasks. Stages
    // that do not block are tasks (a wake-up within the runtime is much cheaper).
    let spawn = |name: &'static str, f: Box<dyn FnOnce() + Send>| {
        let runtime = runtime.clone();
        std::thread::Builder::new()
            .name(format!("raft-{name}"))
            .spawn(move || {
                let _runtime = runtime.enter();
                f()
            })
            .map(drop)
            .map_err(|e| fatal(format!("cannot start the {name} thread: {e}")))
    };
    if threads && apply_on_thread {
        spawn("apply", Box::new(move || applier.run_blocking(apply_rx)))?;
    } else {
        tokio::spawn(applier.run(apply_rx).instrument(tracing::info_span!("applier", node = id)));
    }
    if threads && storage.needs_sync() {
        spawn(
            "persist",
            Box::new(move || {
                let _span = tracing::info_span!("persister", node = id).entered();
                persister.run_blocking(persist_rx)
            }),
        )?;
    } else {
        let span = tracing::info_span!("persister", node = id);
        tokio::spawn(persister.run(persist_rx).instrument(span));
    }
    let driver = Driver::new(DriverParts {
        raft,
        storage,
        transport,
        cfg: cfg.clone(),
        metrics: metrics.clone(),
        requests,
        messages: inbox.messages,
        events: inbox.events,
        persist: persist_tx,
        durable,
        apply: apply_tx,
        applied: applied_rx,
        members: members.clone(),
        status: status_tx,
        node_events: events.clone(),
    });
    tokio::spawn(driver.run().instrument(tracing::info_span!("driver", node = id)));
    tracing::info!(node = id, applied = status.borrow().applied_index, "node started");
    Ok(Started { cfg, metrics, requests: requests_tx, status, members, events })
}
