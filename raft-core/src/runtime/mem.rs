//! An in-memory network of nodes in one process, for tests, examples and benchmarks: messages go
//! straight into the destination's [`Mailbox`]. Links can be cut and nodes isolated to test
//! failures.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use super::mailbox::Mailbox;
use crate::transport::{SnapshotStatus, Transport, TransportEvent};
use crate::types::{Message, MessageBody, NodeId};

#[derive(Debug, Default)]
struct NetState {
    mailboxes: BTreeMap<NodeId, Mailbox>,
    /// Directed links that drop everything.
    cut: BTreeSet<(NodeId, NodeId)>,
}

/// A switch connecting in-process nodes. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct MemNetwork {
    state: Arc<Mutex<NetState>>,
}

impl MemNetwork {
    /// An empty network.
    pub fn new() -> MemNetwork {
        MemNetwork::default()
    }

    fn lock(&self) -> MutexGuard<'_, NetState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Connects node `id`: messages to it go to `mailbox` (replacing an earlier one, e.g. after a
    /// restart). Returns its transport.
    pub fn join(&self, id: NodeId, mailbox: Mailbox) -> Arc<MemTransport> {
        self.lock().mailboxes.insert(id, mailbox);
        Arc::new(MemTransport { id, net: self.clone() })
    }

    /// Disconnects node `id` (as if it crashed): messages to it are dropped.
    pub fn leave(&self, id: NodeId) {
        self.lock().mailboxes.remove(&id);
    }

    /// Cuts both directions between `a` and `b`.
    pub fn cut(&self, a: NodeId, b: NodeId) {
        let mut s = self.lock();
        s.cut.insert((a, b));
        s.cut.insert((b, a));
    }

    /// Cuts `id` off from every other node (present and future).
    pub fn isolate(&self, id: NodeId) {
        let mut s = self.lock();
        for other in 0..=64 {
            if other != id {
                s.cut.insert((id, other));
                s.cut.insert((other, id));
            }
        }
    }

    /// Restores every link.
    pub fn heal(&self) {
        self.lock().cut.clear();
    }
}

/// One node's side of a [`MemNetwork`].
#[derive(Debug)]
pub struct MemTransport {
    id: NodeId,
    net: MemNetwork,
}

impl Transport for MemTransport {
    fn send(&self, messages: Vec<Message>) {
        let s = self.net.lock();
        let own = s.mailboxes.get(&self.id).cloned();
        for m in messages {
            let to = m.to;
            let snapshot = matches!(m.body, MessageBody::InstallSnapshot { .. });
            let delivered = !s.cut.contains(&(self.id, to))
                && s.mailboxes.get(&to).is_some_and(|mb| mb.messages.try_send(m).is_ok());
            if let Some(own) = &own {
                let event = match (delivered, snapshot) {
                    (true, true) => Some(TransportEvent::Snapshot(to, SnapshotStatus::Finished)),
                    (false, true) => Some(TransportEvent::Snapshot(to, SnapshotStatus::Failed)),
                    (false, false) => Some(TransportEvent::Unreachable(to)),
                    (true, false) => None,
                };
                if let Some(ev) = event {
                    let _ = own.events.try_send(ev);
                }
            }
        }
    }
}
