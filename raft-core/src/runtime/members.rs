//! The member table (addresses and metadata, learners to promote) and the transport's peers,
//! kept in step with what is applied. Owned by the applier; published to the handle and the
//! driver as an immutable [`MemberTable`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use tokio::sync::watch;

use super::envelope::Member;
use crate::transport::Transport;
use crate::types::{ConfState, NodeId};

/// The replicated member table as of the applied index.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct MemberTable {
    /// Every member's transport address and metadata.
    pub(crate) members: BTreeMap<NodeId, Member>,
    /// Learners the leader promotes to voters once they have caught up.
    pub(crate) promote: BTreeSet<NodeId>,
}

/// Keeps the table, the transport's peers and the published copy in step.
pub(crate) struct Members<T: ?Sized> {
    id: NodeId,
    table: MemberTable,
    /// Members of the configuration as of the applied index (to see who a change removed).
    conf_members: BTreeSet<NodeId>,
    transport: Arc<T>,
    published: watch::Sender<Arc<MemberTable>>,
}

impl<T: Transport + ?Sized> Members<T> {
    /// Starts from `table` and the configuration `conf`; adds every other member to the
    /// transport (an address it refuses is an error: the node cannot start).
    pub(crate) fn new(
        id: NodeId,
        table: MemberTable,
        conf: &ConfState,
        transport: Arc<T>,
        published: watch::Sender<Arc<MemberTable>>,
    ) -> Result<Members<T>, String> {
        for (&mid, m) in &table.members {
            if mid != id {
                transport
                    .add_peer(mid, &m.addr)
                    .map_err(|e| format!("cannot add peer {mid} at {}: {e}", m.addr))?;
            }
        }
        let m = Members { id, table, conf_members: members_of(conf), transport, published };
        m.publish();
        Ok(m)
    }

    pub(crate) fn table(&self) -> &MemberTable {
        &self.table
    }

    /// A snapshot replaced the state.
    pub(crate) fn restore(&mut self, table: MemberTable, conf: &ConfState) {
        self.table = table;
        self.conf_members = members_of(conf);
        self.add_all_peers();
        self.publish();
    }

    pub(crate) fn set(&mut self, id: NodeId, member: Member) {
        if id != self.id {
            self.add_peer(id, &member.addr);
        }
        self.table.members.insert(id, member);
        self.publish();
    }

    pub(crate) fn promote_later(&mut self, id: NodeId) {
        self.table.promote.insert(id);
        self.publish();
    }

    /// A configuration change was applied: members it removed leave the table and the
    /// transport; learners it made voters need no promotion any more.
    pub(crate) fn conf_changed(&mut self, cs: &ConfState) {
        let next = members_of(cs);
        for &gone in self.conf_members.difference(&next) {
            if gone != self.id {
                self.transport.remove_peer(gone);
            }
            self.table.members.remove(&gone);
        }
        self.table.promote.retain(|id| next.contains(id) && !cs.voters.contains(id));
        self.conf_members = next;
        self.publish();
    }

    fn add_all_peers(&self) {
        for (&id, m) in &self.table.members {
            if id != self.id {
                self.add_peer(id, &m.addr);
            }
        }
    }

    fn add_peer(&self, id: NodeId, addr: &str) {
        if let Err(e) = self.transport.add_peer(id, addr) {
            tracing::warn!(node = self.id, peer = id, addr, error = %e, "cannot add peer");
        }
    }

    fn publish(&self) {
        self.published.send_replace(Arc::new(self.table.clone()));
    }
}

pub(crate) fn members_of(cs: &ConfState) -> BTreeSet<NodeId> {
    cs.members().into_iter().collect()
}
