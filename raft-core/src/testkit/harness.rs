//! A minimal synchronous driver for scripted tests and benchmarks: it persists every `Ready` at
//! once and delivers messages in FIFO order, dropping those between cut nodes. For randomized
//! faults use the simulator instead.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;

use crate::{
    Config, Entry, EntryKind, Index, MemStorage, Message, MessageBody, NodeId, Raft, ReadState,
    Refused, Role, Snapshot, SnapshotStatus,
};

/// A cluster of in-memory nodes on a lossless FIFO network.
pub struct Harness {
    /// The nodes, by id.
    pub nodes: BTreeMap<NodeId, Raft<MemStorage>>,
    /// Messages sent and not yet delivered.
    pub queue: VecDeque<Message>,
    /// Directed links `(from, to)` that drop everything.
    pub cut: BTreeSet<(NodeId, NodeId)>,
    /// Entries each node applied, in order.
    pub applied: BTreeMap<NodeId, Vec<Entry>>,
    /// Read states each node received.
    pub reads: BTreeMap<NodeId, Vec<ReadState>>,
    /// Snapshot indices each node installed from its leader.
    pub installed: BTreeMap<NodeId, Vec<Index>>,
    /// Forwarded requests each node heard refused (`Ready::refused`), in order.
    pub refused: BTreeMap<NodeId, Vec<Refused>>,
    /// Every message ever delivered or dropped, for message-economy assertions.
    pub sent: Vec<Message>,
}

/// The default test configuration of node `id`.
pub fn config(id: NodeId) -> Config {
    Config::new(id)
}

impl Harness {
    /// `n` nodes with ids `1..=n`, all voters, default configuration.
    pub fn new(n: u64) -> Harness {
        Harness::with_config(n, config)
    }

    /// `n` voters with the configuration `cfg(id)`.
    pub fn with_config(n: u64, cfg: impl Fn(NodeId) -> Config) -> Harness {
        let ids: Vec<NodeId> = (1..=n).collect();
        let nodes = ids
            .iter()
            .map(|&id| (id, Raft::new(cfg(id), MemStorage::new_with_voters(&ids)).unwrap()))
            .collect();
        Harness {
            nodes,
            queue: VecDeque::new(),
            cut: BTreeSet::new(),
            applied: BTreeMap::new(),
            reads: BTreeMap::new(),
            installed: BTreeMap::new(),
            refused: BTreeMap::new(),
            sent: Vec::new(),
        }
    }

    /// Node `id`.
    pub fn node(&self, id: NodeId) -> &Raft<MemStorage> {
        &self.nodes[&id]
    }

    /// Node `id`, mutably.
    pub fn node_mut(&mut self, id: NodeId) -> &mut Raft<MemStorage> {
        self.nodes.get_mut(&id).unwrap()
    }

    /// Drives every node's `Ready` once, queueing its messages.
    pub fn process_readies(&mut self) {
        for (&id, node) in self.nodes.iter_mut() {
            while node.has_ready() {
                let rd = node.ready();
                self.queue.extend(rd.messages);
                if let Some(snap) = &rd.snapshot {
                    node.storage().install(snap).unwrap();
                    self.installed.entry(id).or_default().push(snap.meta.index);
                }
                node.storage().append(&rd.entries).unwrap();
                if let Some(hs) = rd.hard_state {
                    node.storage().set_hard_state(hs);
                }
                if let Some(cs) = rd.conf_state {
                    node.storage().set_conf_state(cs);
                }
                node.on_persisted(rd.number).unwrap();
                self.queue.extend(rd.persisted_messages);
                if let Some(last) = rd.committed_entries.last() {
                    let last = last.index;
                    self.applied.entry(id).or_default().extend(rd.committed_entries);
                    node.on_applied(last).unwrap();
                }
                self.reads.entry(id).or_default().extend(rd.read_states);
                if !rd.refused.is_empty() {
                    self.refused.entry(id).or_default().extend(rd.refused);
                }
            }
        }
    }

    /// Delivers messages until the network is quiet.
    pub fn settle(&mut self) {
        self.process_readies();
        let mut budget = 100_000;
        while let Some(m) = self.queue.pop_front() {
            budget -= 1;
            assert!(budget > 0, "network did not settle");
            self.sent.push(m.clone());
            let lost = self.cut.contains(&(m.from, m.to)) || !self.nodes.contains_key(&m.to);
            if let MessageBody::InstallSnapshot { .. } = m.body
                && let Some(sender) = self.nodes.get_mut(&m.from)
            {
                // What a transport reports once the stream ends.
                let status = if lost { SnapshotStatus::Failed } else { SnapshotStatus::Finished };
                sender.report_snapshot(m.to, status);
            }
            if lost {
                continue;
            }
            let _ = self.node_mut(m.to).step(m);
            self.process_readies();
        }
    }

    /// Makes node `id` compact its log up to its applied index with a snapshot whose data names
    /// the index.
    pub fn compact(&mut self, id: NodeId) -> Index {
        let node = self.node(id);
        let index = node.status().applied_index;
        let meta = node.snapshot_meta(index).unwrap();
        let data = Bytes::from(format!("snapshot@{index}"));
        node.storage().compact_with(&Snapshot { meta, data }).unwrap();
        index
    }

    /// Cuts every link to and from `id`.
    pub fn isolate(&mut self, id: NodeId) {
        for &other in self.nodes.keys() {
            if other != id {
                self.cut.insert((id, other));
                self.cut.insert((other, id));
            }
        }
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// Ticks every node `n` times, settling the network after each round.
    pub fn tick_all(&mut self, n: usize) {
        for _ in 0..n {
            for node in self.nodes.values_mut() {
                node.tick();
            }
            self.settle();
        }
    }

    /// Makes `id` campaign and asserts that it wins.
    pub fn elect(&mut self, id: NodeId) {
        self.node_mut(id).campaign();
        self.settle();
        assert_eq!(self.node(id).role(), Role::Leader, "node {id} failed to win");
    }

    /// Ids of the nodes that think they lead.
    pub fn leaders(&self) -> Vec<NodeId> {
        self.nodes.values().filter(|n| n.role() == Role::Leader).map(|n| n.id()).collect()
    }

    /// Payloads of the normal entries `id` applied.
    pub fn applied_data(&self, id: NodeId) -> Vec<Bytes> {
        self.applied
            .get(&id)
            .map(|v| {
                v.iter().filter(|e| e.kind == EntryKind::Normal).map(|e| e.data.clone()).collect()
            })
            .unwrap_or_default()
    }

    /// How many delivered-or-dropped messages match `pred`.
    pub fn count_sent(&self, pred: impl Fn(&MessageBody) -> bool) -> usize {
        self.sent.iter().filter(|m| pred(&m.body)).count()
    }
}
