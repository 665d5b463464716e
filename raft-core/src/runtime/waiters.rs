//! The callers waiting for their proposals, owned by the applier (which answers them when their
//! entries are applied). The driver hands each proposal's reply over in the order it gave the
//! proposals to the core, before their entries can be committed. Each waits until a deadline
//! (`NodeConfig::proposal_timeout` after the driver took it), checked on the driver's tick: one
//! clock reading per batch and per tick instead of a timer per proposal.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use bytes::Bytes;
use tokio::time::Instant;

use super::config::NodeError;
use super::request::Reply;

/// Hashes a proposal number (distinct low bits: a counter; high bits: the incarnation) with one
/// multiplication, where the default SipHash costs more than the rest of a map lookup. Not
/// exposed to peers' input: only this node numbers its proposals.
#[derive(Default)]
struct ProposalHasher(u64);

impl Hasher for ProposalHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type ProposalMap<V> = HashMap<u64, V, BuildHasherDefault<ProposalHasher>>;

/// Proposals of this node waiting for their entries, and the order they were handed to the core.
pub(crate) struct Waiters {
    /// Each caller's reply and the deadline after which it is answered [`NodeError::Timeout`].
    waiting: ProposalMap<(Reply<Bytes>, Instant)>,
    /// Proposal numbers in the order the driver handed them to the core (which appends them, or
    /// forwards them over the in-order transport to the leader, in that order): see
    /// [`Waiters::settle_overtaken`].
    order: VecDeque<u64>,
    /// Most entries kept in `waiting` and `order` (callers that gave up leave theirs behind
    /// until their entry is applied or overtaken; beyond this they are dropped).
    cap: usize,
    /// Scratch set for [`Waiters::settle_overtaken`] (kept for its allocation).
    applied: HashSet<u64, BuildHasherDefault<ProposalHasher>>,
}

impl Waiters {
    pub(crate) fn new(max_pending: usize) -> Waiters {
        Waiters {
            waiting: ProposalMap::default(),
            order: VecDeque::new(),
            cap: 2 * max_pending.max(1),
            applied: HashSet::default(),
        }
    }

    /// The driver handed these proposals, in this order, to the core; each waits until
    /// `deadline`.
    pub(crate) fn proposed(&mut self, batch: Vec<(u64, Reply<Bytes>)>, deadline: Instant) {
        if self.waiting.len() + batch.len() > self.cap {
            // Callers that gave up left their replies here: drop those first.
            self.waiting.retain(|_, (r, _)| !r.is_closed());
        }
        for (id, reply) in batch {
            self.order.push_back(id);
            self.waiting.insert(id, (reply, deadline));
        }
        if self.order.len() > self.cap {
            let extra = self.order.len() - self.cap;
            self.order.drain(..extra);
        }
    }

    /// Answers proposal `id` (if this node still waits for it).
    pub(crate) fn answer(&mut self, id: u64, result: Result<Bytes, NodeError>) -> bool {
        match self.waiting.remove(&id) {
            Some((reply, _)) => reply.send(result).is_ok(),
            None => false,
        }
    }

    /// Called once the entries that answered `applied` (this node's proposals) and every entry
    /// before them are applied. Proposals normally reach the log in the order of
    /// [`Waiters::proposed`], so one handed over before the last one applied that is still
    /// unanswered was lost on the way: its caller gets [`NodeError::Overtaken`] now instead of a
    /// timeout. Returns how many. (Not a proof: a forward held up across a reconnect and a
    /// change of leader can still land later, which is why the error, like a timeout, leaves
    /// the outcome open. Refusals the leader reports come back as [`Waiters::answer`] with the
    /// leader's error instead.)
    pub(crate) fn settle_overtaken(&mut self, applied: &[u64]) -> u64 {
        if applied.is_empty() {
            return 0;
        }
        self.applied.clear();
        self.applied.extend(applied.iter().copied());
        let set = &self.applied;
        let Some(last) = self.order.iter().rposition(|id| set.contains(id)) else { return 0 };
        let mut n = 0;
        for id in self.order.drain(..=last) {
            if let Some((reply, _)) = self.waiting.remove(&id) {
                n += 1;
                let _ = reply.send(Err(NodeError::Overtaken));
            }
        }
        n
    }

    /// Answers [`NodeError::Timeout`] to every caller whose deadline is past `now` (and drops
    /// the replies of callers that gave up). Returns how many timed out. At most `cap` entries
    /// are looked at.
    pub(crate) fn expire(&mut self, now: Instant) -> u64 {
        let mut n = 0;
        let gone =
            self.waiting.extract_if(|_, (reply, deadline)| reply.is_closed() || *deadline <= now);
        for (_, (reply, _)) in gone {
            n += u64::from(reply.send(Err(NodeError::Timeout)).is_ok());
        }
        n
    }

    /// A snapshot replaced the state: proposals applied inside it are never answered one by
    /// one, so the order says nothing any more about the ones handed over so far.
    pub(crate) fn forget_order(&mut self) {
        self.order.clear();
    }
}
