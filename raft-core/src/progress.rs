//! What a leader knows about each follower's log (§5.3): match and next index, whether it is
//! probing or replicating, and the bounded window of appends in flight.

use std::collections::VecDeque;

use crate::types::Index;

/// How the leader is sending to a follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ProgressState {
    /// Where the follower's log matches is unknown: one append at a time, then wait.
    Probe,
    /// The follower's log matches up to `match_index`: stream appends, bounded by the window.
    Replicate,
    /// The follower needs entries that were compacted away: a snapshot at this index is being
    /// sent; nothing else is until the transfer ends (one snapshot in flight per follower).
    Snapshot(Index),
}

/// Appends sent and not yet acknowledged, bounded in count and bytes (STYLE: limits on everything).
#[derive(Clone, Debug)]
pub(crate) struct Inflights {
    /// `(last index of the append, bytes of its entries)`, in sending order.
    window: VecDeque<(Index, u64)>,
    bytes: u64,
    max_count: usize,
    max_bytes: u64,
}

impl Inflights {
    pub(crate) fn new(max_count: usize, max_bytes: u64) -> Inflights {
        Inflights { window: VecDeque::new(), bytes: 0, max_count, max_bytes }
    }

    /// Records an append whose last entry is `last_index`.
    pub(crate) fn add(&mut self, last_index: Index, bytes: u64) {
        debug_assert!(!self.full(), "inflight window overflow");
        debug_assert!(self.window.back().is_none_or(|&(i, _)| i < last_index));
        self.window.push_back((last_index, bytes));
        self.bytes += bytes;
    }

    /// Frees every append whose last index is at or below `index` (acknowledged).
    pub(crate) fn free_le(&mut self, index: Index) {
        while let Some(&(i, b)) = self.window.front() {
            if i > index {
                break;
            }
            self.window.pop_front();
            self.bytes -= b;
        }
    }

    /// Frees the oldest append (used when a heartbeat answer shows the follower is alive but the
    /// window stayed full, e.g. because responses were lost).
    pub(crate) fn free_first(&mut self) {
        if let Some((_, b)) = self.window.pop_front() {
            self.bytes -= b;
        }
    }

    pub(crate) fn full(&self) -> bool {
        self.window.len() >= self.max_count || self.bytes >= self.max_bytes
    }

    #[cfg(test)]
    pub(crate) fn count(&self) -> usize {
        self.window.len()
    }

    pub(crate) fn reset(&mut self) {
        self.window.clear();
        self.bytes = 0;
    }
}

/// The leader's view of one follower.
// Invariant: match_index < next_index.
#[derive(Clone, Debug)]
pub(crate) struct Progress {
    pub(crate) match_index: Index,
    pub(crate) next_index: Index,
    pub(crate) state: ProgressState,
    /// In `Probe`: an append was sent and not answered yet; send no other until it is (or until
    /// the next heartbeat answer).
    pub(crate) probe_sent: bool,
    /// The leader's tick when it last heard from this follower (CheckQuorum).
    pub(crate) last_heard_tick: u64,
    /// Highest heartbeat round this follower acknowledged in the current term.
    pub(crate) acked_round: u64,
    /// Ticks since the snapshot in flight was sent (state `Snapshot`).
    pub(crate) snapshot_elapsed: u64,
    pub(crate) inflights: Inflights,
}

impl Progress {
    pub(crate) fn new(
        next_index: Index,
        max_inflight_msgs: usize,
        max_inflight_bytes: u64,
    ) -> Progress {
        Progress {
            match_index: 0,
            next_index,
            state: ProgressState::Probe,
            probe_sent: false,
            last_heard_tick: 0,
            acked_round: 0,
            snapshot_elapsed: 0,
            inflights: Inflights::new(max_inflight_msgs, max_inflight_bytes),
        }
    }

    pub(crate) fn become_probe(&mut self) {
        self.state = ProgressState::Probe;
        self.next_index = self.match_index + 1;
        self.probe_sent = false;
        self.inflights.reset();
    }

    pub(crate) fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.next_index = self.match_index + 1;
        self.probe_sent = false;
        self.inflights.reset();
    }

    /// Starts sending a snapshot at `index`.
    pub(crate) fn become_snapshot(&mut self, index: Index) {
        self.state = ProgressState::Snapshot(index);
        self.snapshot_elapsed = 0;
        self.probe_sent = false;
        self.inflights.reset();
    }

    /// Whether the leader should hold back appends to this follower.
    pub(crate) fn is_paused(&self) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflights.full(),
            ProgressState::Snapshot(_) => true,
        }
    }

    /// Records that an append ending at `last_index` with `bytes` of entries was sent.
    pub(crate) fn sent_append(&mut self, entry_count: usize, last_index: Index, bytes: u64) {
        match self.state {
            ProgressState::Replicate => {
                if entry_count > 0 {
                    self.next_index = last_index + 1;
                    self.inflights.add(last_index, bytes);
                }
            }
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Snapshot(_) => {}
        }
    }

    /// A successful append response for index `n`. Returns whether the match index advanced.
    pub(crate) fn maybe_update(&mut self, n: Index) -> bool {
        let updated = n > self.match_index;
        if updated {
            self.match_index = n;
            self.probe_sent = false;
        }
        self.next_index = self.next_index.max(n + 1);
        updated
    }

    /// A rejected append whose `prev_log_index` was `rejected`; `probe_hint` is where the leader
    /// expects the logs to agree (from the follower's conflict hint). Returns `false` for a stale
    /// rejection that must be ignored.
    pub(crate) fn maybe_decr_to(&mut self, rejected: Index, probe_hint: Index) -> bool {
        match self.state {
            ProgressState::Replicate => {
                if rejected <= self.match_index {
                    return false;
                }
                self.next_index = self.match_index + 1;
                true
            }
            ProgressState::Probe | ProgressState::Snapshot(_) => {
                if self.next_index.checked_sub(1) != Some(rejected) {
                    return false;
                }
                self.next_index = (rejected.min(probe_hint + 1)).max(self.match_index + 1);
                self.probe_sent = false;
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inflights_bounded_by_count_and_bytes() {
        let mut f = Inflights::new(3, 100);
        f.add(1, 10);
        f.add(2, 10);
        assert!(!f.full());
        f.add(3, 10);
        assert!(f.full(), "count bound");
        f.free_le(2);
        assert_eq!(f.count(), 1);
        f.add(4, 90);
        assert!(f.full(), "byte bound");
        f.free_first();
        assert!(!f.full());
    }

    #[test]
    fn probe_sends_one_at_a_time() {
        let mut p = Progress::new(5, 4, 1000);
        assert!(!p.is_paused());
        p.sent_append(1, 5, 10);
        assert!(p.is_paused());
        assert!(p.maybe_update(5));
        assert!(!p.is_paused());
        assert_eq!(p.next_index, 6);
    }

    #[test]
    fn replicate_pipelines_until_window_full() {
        let mut p = Progress::new(1, 2, 1000);
        p.become_replicate();
        p.sent_append(2, 2, 10);
        p.sent_append(2, 4, 10);
        assert_eq!(p.next_index, 5);
        assert!(p.is_paused());
        p.maybe_update(2);
        p.inflights.free_le(2);
        assert!(!p.is_paused());
    }

    #[test]
    fn stale_rejections_are_ignored() {
        let mut p = Progress::new(10, 4, 1000);
        p.match_index = 5;
        p.become_replicate();
        assert!(!p.maybe_decr_to(4, 0), "rejects at or below match are stale");
        assert!(p.maybe_decr_to(7, 0));
        assert_eq!(p.next_index, 6);
        p.become_probe();
        assert!(!p.maybe_decr_to(9, 0), "probe: only a rejection of next-1 counts");
        // next = 6, so a rejection of 5 with hint 2 is current; next never drops to or below match.
        assert!(p.maybe_decr_to(5, 2));
        assert_eq!(p.next_index, 6);
    }
}
