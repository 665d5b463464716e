//! The simulated network: per-message drop, duplicate, reorder and delay, and partitions.
//!
//! Messages carry a delivery time; among messages due at the same time the delivery order is
//! randomized (each message gets a random tie-breaker when it is sent). Links are blocked
//! per direction, so every partition shape (symmetric split, one-way, ring, bridge, …) is a set
//! of blocked `(from, to)` pairs. A link blocked while a message is in flight drops it on delivery.

use std::collections::{BTreeMap, BTreeSet};

use super::rng::Rng;
use crate::types::{Message, NodeId};

/// Fault and latency settings of the network. Latencies are in simulated time units
/// (see [`crate::testkit::sim::TICK`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetConfig {
    /// Probability (per mille) that a message is lost.
    pub drop_permille: u32,
    /// Probability (per mille) that a message is delivered twice.
    pub duplicate_permille: u32,
    /// Probability (per mille) that a message gets an extra delay of up to `reorder_delay_max`,
    /// so that later messages overtake it.
    pub reorder_permille: u32,
    /// Smallest delivery latency.
    pub latency_min: u64,
    /// Largest delivery latency (before reordering delay).
    pub latency_max: u64,
    /// Largest extra delay of a reordered message.
    pub reorder_delay_max: u64,
}

impl Default for NetConfig {
    /// A reliable network with a latency of 0.1–0.5 ticks.
    fn default() -> NetConfig {
        NetConfig {
            drop_permille: 0,
            duplicate_permille: 0,
            reorder_permille: 0,
            latency_min: 100,
            latency_max: 500,
            reorder_delay_max: 3_000,
        }
    }
}

/// A partition shape. Applying one replaces every link block currently in place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Partition {
    /// Symmetric split: nodes reach only the nodes of their own group. Nodes named in no group
    /// form one more group together.
    Split(Vec<Vec<NodeId>>),
    /// Messages `from → to` are lost; the other direction still works.
    OneWay {
        /// Sender whose messages are lost.
        from: NodeId,
        /// Recipient that does not hear them.
        to: NodeId,
    },
    /// The node reaches nobody and nobody reaches it.
    Isolate(NodeId),
    /// Nodes in this cyclic order reach only their two neighbours.
    Ring(Vec<NodeId>),
    /// Two halves that cannot reach each other, joined by one node that reaches everyone.
    Bridge {
        /// One half.
        left: Vec<NodeId>,
        /// The node in the middle.
        bridge: NodeId,
        /// The other half.
        right: Vec<NodeId>,
    },
}

impl Partition {
    /// The `(from, to)` links this partition blocks among `all` nodes.
    pub fn blocked_links(&self, all: &[NodeId]) -> BTreeSet<(NodeId, NodeId)> {
        let pairs = all.iter().flat_map(|&a| all.iter().map(move |&b| (a, b)));
        let pairs = pairs.filter(|(a, b)| a != b);
        match self {
            Partition::Split(groups) => {
                let group_of =
                    |n: NodeId| groups.iter().position(|g| g.contains(&n)).unwrap_or(usize::MAX);
                pairs.filter(|&(a, b)| group_of(a) != group_of(b)).collect()
            }
            Partition::OneWay { from, to } => [(*from, *to)].into_iter().collect(),
            Partition::Isolate(n) => pairs.filter(|&(a, b)| a == *n || b == *n).collect(),
            Partition::Ring(order) => {
                let pos = |n: NodeId| order.iter().position(|&x| x == n);
                let len = order.len();
                let neighbours = |a: NodeId, b: NodeId| match (pos(a), pos(b)) {
                    (Some(i), Some(j)) => (i + 1) % len == j || (j + 1) % len == i,
                    _ => false,
                };
                pairs.filter(|&(a, b)| !neighbours(a, b)).collect()
            }
            Partition::Bridge { left, right, .. } => pairs
                .filter(|&(a, b)| {
                    (left.contains(&a) && right.contains(&b))
                        || (right.contains(&a) && left.contains(&b))
                })
                .collect(),
        }
    }
}

/// A message on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// The message.
    pub msg: Message,
    /// Simulated time it was sent.
    pub sent_at: u64,
    /// Simulated time it becomes deliverable.
    pub deliver_at: u64,
}

/// What happened on the network so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetCounters {
    /// Messages handed to the network (duplicates not counted).
    pub sent: u64,
    /// Messages handed to a node.
    pub delivered: u64,
    /// Messages lost by the drop rate.
    pub dropped: u64,
    /// Messages lost to a blocked link (at send or at delivery).
    pub blocked: u64,
    /// Messages lost because the recipient was down.
    pub to_down_node: u64,
    /// Extra copies made by the duplicate rate.
    pub duplicated: u64,
    /// Messages given a reordering delay.
    pub reordered: u64,
    /// Approximate bytes sent ([`crate::MessageBody::size_bytes`]).
    pub bytes_sent: u64,
    /// Messages sent per kind ([`crate::MessageBody::name`]).
    pub sent_by_kind: BTreeMap<&'static str, u64>,
    /// Partitions applied.
    pub partitions: u64,
}

/// The in-flight messages and the link state.
#[derive(Clone, Debug)]
pub struct Network {
    cfg: NetConfig,
    rng: Rng,
    /// Keyed by (delivery time, random tie-breaker, sequence number).
    queue: BTreeMap<(u64, u64, u64), Envelope>,
    blocked: BTreeSet<(NodeId, NodeId)>,
    next_seq: u64,
    counters: NetCounters,
}

impl Network {
    /// An empty network with the given settings and random stream.
    pub fn new(cfg: NetConfig, rng: Rng) -> Network {
        Network {
            cfg,
            rng,
            queue: BTreeMap::new(),
            blocked: BTreeSet::new(),
            next_seq: 0,
            counters: NetCounters::default(),
        }
    }

    /// Current settings.
    pub fn config(&self) -> &NetConfig {
        &self.cfg
    }

    /// Replaces the settings (affects messages sent from now on).
    pub fn set_config(&mut self, cfg: NetConfig) {
        self.cfg = cfg;
    }

    /// Counters so far.
    pub fn counters(&self) -> &NetCounters {
        &self.counters
    }

    /// Sends `msg` at time `now`, applying drop, duplicate, delay and reordering.
    pub fn send(&mut self, msg: Message, now: u64) {
        self.counters.sent += 1;
        self.counters.bytes_sent += msg.body.size_bytes();
        *self.counters.sent_by_kind.entry(msg.body.name()).or_default() += 1;
        if !self.can_reach(msg.from, msg.to) {
            self.counters.blocked += 1;
            return;
        }
        if self.rng.chance(self.cfg.drop_permille) {
            self.counters.dropped += 1;
            return;
        }
        if self.rng.chance(self.cfg.duplicate_permille) {
            self.counters.duplicated += 1;
            let at = self.delivery_time(now);
            self.enqueue(msg.clone(), now, at);
        }
        let at = self.delivery_time(now);
        self.enqueue(msg, now, at);
    }

    fn delivery_time(&mut self, now: u64) -> u64 {
        let mut at = now + self.rng.range(self.cfg.latency_min, self.cfg.latency_max.max(1));
        if self.rng.chance(self.cfg.reorder_permille) {
            self.counters.reordered += 1;
            at += self.rng.range(0, self.cfg.reorder_delay_max);
        }
        at
    }

    /// Puts `msg` on the wire for delivery at `deliver_at`, bypassing the fault model.
    pub fn enqueue(&mut self, msg: Message, sent_at: u64, deliver_at: u64) {
        let key = (deliver_at, self.rng.next_u64(), self.next_seq);
        self.next_seq += 1;
        self.queue.insert(key, Envelope { msg, sent_at, deliver_at });
    }

    /// Whether `from`'s messages currently reach `to`.
    pub fn can_reach(&self, from: NodeId, to: NodeId) -> bool {
        !self.blocked.contains(&(from, to))
    }

    /// Number of messages in flight.
    pub fn in_flight(&self) -> usize {
        self.queue.len()
    }

    /// The messages in flight, in delivery order.
    pub fn envelopes(&self) -> impl Iterator<Item = &Envelope> {
        self.queue.values()
    }

    /// Delivery time of the next message, if any.
    pub fn next_due(&self) -> Option<u64> {
        self.queue.keys().next().map(|k| k.0)
    }

    /// Removes and returns the next message if it is due at `now`.
    pub fn pop_due(&mut self, now: u64) -> Option<Envelope> {
        let key = *self.queue.keys().next()?;
        if key.0 > now {
            return None;
        }
        self.queue.remove(&key)
    }

    /// Removes and returns the `i`-th message in delivery order (`i` is taken modulo the count).
    pub fn take(&mut self, i: usize) -> Option<Envelope> {
        let n = self.queue.len();
        if n == 0 {
            return None;
        }
        let key = *self.queue.keys().nth(i % n)?;
        self.queue.remove(&key)
    }

    /// Counts a message lost at delivery because of a blocked link or a down recipient.
    pub(crate) fn count_undelivered(&mut self, blocked: bool) {
        if blocked {
            self.counters.blocked += 1;
        } else {
            self.counters.to_down_node += 1;
        }
    }

    /// Counts a delivered message.
    pub(crate) fn count_delivered(&mut self) {
        self.counters.delivered += 1;
    }

    /// Counts a message dropped on purpose (e.g. by a schedule).
    pub(crate) fn count_dropped(&mut self) {
        self.counters.dropped += 1;
    }

    /// Duplicates the `i`-th message in delivery order (modulo the count).
    pub fn duplicate(&mut self, i: usize, now: u64) {
        let n = self.queue.len();
        if n == 0 {
            return;
        }
        if let Some(env) = self.queue.values().nth(i % n).cloned() {
            self.counters.duplicated += 1;
            self.enqueue(env.msg, env.sent_at, now);
        }
    }

    /// Replaces every link block by those of `p` among `all` nodes.
    pub fn partition(&mut self, p: &Partition, all: &[NodeId]) {
        self.blocked = p.blocked_links(all);
        self.counters.partitions += 1;
    }

    /// Blocks the link `from → to` in addition to the current blocks.
    pub fn block(&mut self, from: NodeId, to: NodeId) {
        self.blocked.insert((from, to));
    }

    /// Removes every link block.
    pub fn heal(&mut self) {
        self.blocked.clear();
    }

    /// Whether any link is blocked.
    pub fn is_partitioned(&self) -> bool {
        !self.blocked.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [NodeId; 5] = [1, 2, 3, 4, 5];

    #[test]
    fn ring_reaches_only_neighbours() {
        let b = Partition::Ring(ALL.to_vec()).blocked_links(&ALL);
        assert!(!b.contains(&(1, 2)) && !b.contains(&(1, 5)) && !b.contains(&(5, 1)));
        assert!(b.contains(&(1, 3)) && b.contains(&(3, 1)) && b.contains(&(2, 4)));
    }

    #[test]
    fn bridge_and_split_and_one_way() {
        let p = Partition::Bridge { left: vec![1, 2], bridge: 3, right: vec![4, 5] };
        let b = p.blocked_links(&ALL);
        assert!(b.contains(&(1, 4)) && b.contains(&(5, 2)));
        assert!(!b.contains(&(1, 3)) && !b.contains(&(3, 5)) && !b.contains(&(1, 2)));
        let s = Partition::Split(vec![vec![1, 2]]).blocked_links(&ALL);
        assert!(s.contains(&(1, 3)) && !s.contains(&(3, 4)) && !s.contains(&(2, 1)));
        let o = Partition::OneWay { from: 1, to: 2 }.blocked_links(&ALL);
        assert_eq!(o.into_iter().collect::<Vec<_>>(), vec![(1, 2)]);
    }
}
