//! Counting over the voters (etcd's `tracker/`): the index a quorum holds, the heartbeat round
//! a quorum acknowledged, whether a quorum was heard from recently, and the votes of a campaign.
//! Every quorum decision of the node goes through here, over one voter configuration (joint
//! while a membership change is in progress: a majority of both halves).

use std::collections::BTreeMap;

use crate::progress::Progress;
use crate::quorum::{JointConfig, VoteResult};
use crate::types::{ConfState, Index, NodeId};

/// The voters, and the votes of the campaign under way.
#[derive(Debug, Default)]
pub(super) struct Tracker {
    voters: JointConfig,
    /// Answers received in the current (pre-)campaign, from voters only.
    votes: BTreeMap<NodeId, bool>,
}

impl Tracker {
    pub(super) fn new(conf: &ConfState) -> Tracker {
        let mut t = Tracker::default();
        t.set_conf(conf);
        t
    }

    /// Counts over the voters of `conf` from now on.
    pub(super) fn set_conf(&mut self, conf: &ConfState) {
        self.voters =
            JointConfig { incoming: conf.voters.clone(), outgoing: conf.voters_outgoing.clone() };
    }

    /// Whether `id` votes (in either half of a joint configuration).
    pub(super) fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(id)
    }

    /// Whether `id` is the only voter.
    pub(super) fn is_only_voter(&self, id: NodeId) -> bool {
        self.voters.is_only(id)
    }

    /// Every voter, ascending.
    pub(super) fn voter_ids(&self) -> Vec<NodeId> {
        self.voters.ids()
    }

    /// The largest index held by a quorum: `me` holds `own` (its durable log), every other voter
    /// its match index (0 if unknown).
    pub(super) fn committed_index(
        &self,
        progress: &BTreeMap<NodeId, Progress>,
        me: NodeId,
        own: Index,
    ) -> Index {
        self.quorum_value(progress, me, own, |p| p.match_index)
    }

    /// The latest heartbeat round acknowledged by a quorum, `me` having sent `own_round`.
    pub(super) fn acked_round(
        &self,
        progress: &BTreeMap<NodeId, Progress>,
        me: NodeId,
        own_round: u64,
    ) -> u64 {
        self.quorum_value(progress, me, own_round, |p| p.acked_round)
    }

    /// The largest value a quorum reached: `own` for `me`, `of(progress)` for every other voter
    /// (0 if unknown).
    fn quorum_value(
        &self,
        progress: &BTreeMap<NodeId, Progress>,
        me: NodeId,
        own: u64,
        of: impl Fn(&Progress) -> u64,
    ) -> u64 {
        self.voters.committed_index(|v| if v == me { own } else { progress.get(&v).map_or(0, &of) })
    }

    /// Whether a quorum (counting `me`) was heard from less than `timeout` ticks before `now`.
    pub(super) fn quorum_active(
        &self,
        progress: &BTreeMap<NodeId, Progress>,
        me: NodeId,
        now: u64,
        timeout: u64,
    ) -> bool {
        let heard =
            |v| progress.get(&v).is_some_and(|p: &Progress| p.last_heard_tick + timeout > now);
        self.voters.vote_result(|v| Some(v == me || heard(v))) == VoteResult::Won
    }

    /// Forgets the votes of an earlier campaign.
    pub(super) fn reset_votes(&mut self) {
        self.votes.clear();
    }

    /// Records `from`'s first answer of this campaign (non-voters' answers do not count).
    pub(super) fn record_vote(&mut self, from: NodeId, granted: bool) {
        if self.voters.contains(from) {
            self.votes.entry(from).or_insert(granted);
        }
    }

    /// The outcome of the campaign so far.
    pub(super) fn tally(&self) -> VoteResult {
        self.voters.vote_result(|v| self.votes.get(&v).copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(voters: &[NodeId], outgoing: &[NodeId]) -> ConfState {
        ConfState {
            voters: voters.to_vec(),
            voters_outgoing: outgoing.to_vec(),
            ..Default::default()
        }
    }

    fn progress(entries: &[(NodeId, Index, u64, u64)]) -> BTreeMap<NodeId, Progress> {
        entries
            .iter()
            .map(|&(id, matched, round, heard)| {
                let mut p = Progress::new(matched + 1, 4, 1 << 20);
                p.match_index = matched;
                p.acked_round = round;
                p.last_heard_tick = heard;
                (id, p)
            })
            .collect()
    }

    #[test]
    fn quorum_index_round_and_activity_count_the_leader_and_both_halves() {
        let t = Tracker::new(&conf(&[1, 2, 3], &[]));
        let pr = progress(&[(2, 7, 4, 10), (3, 5, 2, 3)]);
        assert_eq!(t.committed_index(&pr, 1, 9), 7, "{{1: 9, 2: 7}} hold 7");
        assert_eq!(t.acked_round(&pr, 1, 6), 4);
        assert!(t.quorum_active(&pr, 1, 12, 5), "node 2 heard 2 ticks ago");
        assert!(!t.quorum_active(&pr, 1, 15, 5), "nobody heard within 5 ticks");

        // Joint: a majority of {1, 2, 3} and of {3, 4, 5}.
        let t = Tracker::new(&conf(&[1, 2, 3], &[3, 4, 5]));
        let pr = progress(&[(2, 7, 4, 10), (3, 5, 2, 3), (4, 6, 3, 11), (5, 1, 1, 0)]);
        assert_eq!(t.committed_index(&pr, 1, 9), 5, "min(7, 5)");
        assert_eq!(t.acked_round(&pr, 1, 6), 2);
        assert!(!t.quorum_active(&pr, 1, 12, 5), "only node 4 of {{3, 4, 5}} is active");
    }

    #[test]
    fn votes_count_once_and_only_from_voters() {
        let mut t = Tracker::new(&conf(&[1, 2, 3], &[]));
        t.record_vote(1, true);
        assert_eq!(t.tally(), VoteResult::Pending);
        t.record_vote(9, true);
        assert_eq!(t.tally(), VoteResult::Pending, "a non-voter's grant does not count");
        t.record_vote(2, false);
        t.record_vote(2, true);
        assert_eq!(t.tally(), VoteResult::Pending, "the first answer of a voter stands");
        t.record_vote(3, false);
        assert_eq!(t.tally(), VoteResult::Lost);
        t.reset_votes();
        t.record_vote(1, true);
        t.record_vote(3, true);
        assert_eq!(t.tally(), VoteResult::Won);
    }
}
