//! Quorum maths: majority and joint (two-majority) configurations.
//!
//! Pure functions over voter sets, checked against a naive reference in the tests below.

use crate::types::{Index, NodeId};

/// Outcome of an election so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VoteResult {
    /// Not decided yet: enough voters have not answered.
    Pending,
    /// A majority granted.
    Won,
    /// A majority can no longer be reached.
    Lost,
}

/// The largest index acknowledged by a majority of `voters`, where `acked(id)` is what voter `id`
/// has acknowledged (0 if nothing). An empty voter set returns `Index::MAX`, so that it is neutral
/// when combined with `min` in a joint configuration.
pub(crate) fn committed_index(voters: &[NodeId], acked: impl Fn(NodeId) -> Index) -> Index {
    let n = voters.len();
    if n == 0 {
        return Index::MAX;
    }
    // Small clusters are the common case: sort on the stack.
    let mut stack = [0 as Index; 16];
    let mut heap;
    let values: &mut [Index] = if n <= stack.len() {
        &mut stack[..n]
    } else {
        heap = vec![0; n];
        &mut heap[..]
    };
    for (slot, &id) in values.iter_mut().zip(voters) {
        *slot = acked(id);
    }
    values.sort_unstable();
    // With values sorted ascending, the element at n - (n/2 + 1) is acked by n/2 + 1 voters.
    values[n - (n / 2 + 1)]
}

/// The election outcome in a majority configuration; `vote(id)` is `Some(granted)` once voter
/// `id` answered. An empty voter set wins (neutral in a joint configuration).
pub(crate) fn vote_result(voters: &[NodeId], vote: impl Fn(NodeId) -> Option<bool>) -> VoteResult {
    if voters.is_empty() {
        return VoteResult::Won;
    }
    let (mut granted, mut missing) = (0, 0);
    for &id in voters {
        match vote(id) {
            Some(true) => granted += 1,
            Some(false) => {}
            None => missing += 1,
        }
    }
    let q = voters.len() / 2 + 1;
    if granted >= q {
        VoteResult::Won
    } else if granted + missing >= q {
        VoteResult::Pending
    } else {
        VoteResult::Lost
    }
}

/// A configuration of one or two voter sets: in a joint configuration (§6 of the Raft paper)
/// every decision needs a majority of *both*.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct JointConfig {
    /// The voters of the configuration being entered (or the only one).
    pub(crate) incoming: Vec<NodeId>,
    /// The voters of the configuration being left; empty when not joint.
    pub(crate) outgoing: Vec<NodeId>,
}

impl JointConfig {
    /// Whether `id` votes in either half.
    pub(crate) fn contains(&self, id: NodeId) -> bool {
        self.incoming.contains(&id) || self.outgoing.contains(&id)
    }

    /// Whether `id` is the only voter (`ids() == [id]`), without allocating.
    pub(crate) fn is_only(&self, id: NodeId) -> bool {
        (!self.incoming.is_empty() || !self.outgoing.is_empty())
            && self.incoming.iter().chain(&self.outgoing).all(|&v| v == id)
    }

    /// Every voter of either half, once, in ascending order.
    pub(crate) fn ids(&self) -> Vec<NodeId> {
        let mut v: Vec<NodeId> = self.incoming.iter().chain(&self.outgoing).copied().collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Largest index acknowledged by a majority of both halves.
    pub(crate) fn committed_index(&self, acked: impl Fn(NodeId) -> Index) -> Index {
        committed_index(&self.incoming, &acked).min(committed_index(&self.outgoing, &acked))
    }

    /// Election outcome: won only if both halves won, lost if either lost.
    pub(crate) fn vote_result(&self, vote: impl Fn(NodeId) -> Option<bool>) -> VoteResult {
        let a = vote_result(&self.incoming, &vote);
        let b = vote_result(&self.outgoing, &vote);
        match (a, b) {
            (VoteResult::Won, VoteResult::Won) => VoteResult::Won,
            (VoteResult::Lost, _) | (_, VoteResult::Lost) => VoteResult::Lost,
            _ => VoteResult::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// Naive reference: the largest candidate index that more than half of the voters acked.
    fn naive_committed(voters: &[NodeId], acked: &BTreeMap<NodeId, Index>) -> Index {
        if voters.is_empty() {
            return Index::MAX;
        }
        let mut best = 0;
        for &cand in acked.values().chain(std::iter::once(&0)) {
            let n = voters.iter().filter(|id| acked.get(id).copied().unwrap_or(0) >= cand).count();
            if 2 * n > voters.len() {
                best = best.max(cand);
            }
        }
        best
    }

    /// Naive reference: enumerate every way the missing voters could still answer.
    fn naive_vote(voters: &[NodeId], votes: &BTreeMap<NodeId, bool>) -> VoteResult {
        if voters.is_empty() {
            return VoteResult::Won;
        }
        let missing: Vec<NodeId> =
            voters.iter().copied().filter(|v| !votes.contains_key(v)).collect();
        let won_with = |extra: &[bool]| {
            let mut granted = voters.iter().filter(|v| votes.get(v) == Some(&true)).count();
            granted += extra.iter().filter(|&&b| b).count();
            2 * granted > voters.len()
        };
        let (mut can_win, mut can_lose) = (false, false);
        for mask in 0..(1u32 << missing.len()) {
            let extra: Vec<bool> = (0..missing.len()).map(|i| mask & (1 << i) != 0).collect();
            if won_with(&extra) { can_win = true } else { can_lose = true }
        }
        match (can_win, can_lose) {
            (true, false) => VoteResult::Won,
            (false, true) => VoteResult::Lost,
            _ => VoteResult::Pending,
        }
    }

    fn voters_strategy() -> impl Strategy<Value = Vec<NodeId>> {
        prop::collection::btree_set(1u64..12, 0..8).prop_map(|s| s.into_iter().collect())
    }

    proptest! {
        #[test]
        fn committed_index_matches_naive_reference(
            voters in voters_strategy(),
            acks in prop::collection::btree_map(1u64..12, 0u64..20, 0..12),
        ) {
            prop_assert_eq!(
                committed_index(&voters, |id| acks.get(&id).copied().unwrap_or(0)),
                naive_committed(&voters, &acks)
            );
        }

        #[test]
        fn vote_result_matches_naive_reference(
            voters in voters_strategy(),
            votes in prop::collection::btree_map(1u64..12, any::<bool>(), 0..12),
        ) {
            prop_assert_eq!(vote_result(&voters, |id| votes.get(&id).copied()), naive_vote(&voters, &votes));
        }

        #[test]
        fn joint_needs_both_majorities(
            incoming in voters_strategy(),
            outgoing in voters_strategy(),
            acks in prop::collection::btree_map(1u64..12, 0u64..20, 0..12),
            votes in prop::collection::btree_map(1u64..12, any::<bool>(), 0..12),
        ) {
            let j = JointConfig { incoming: incoming.clone(), outgoing: outgoing.clone() };
            let ci = j.committed_index(|id| acks.get(&id).copied().unwrap_or(0));
            prop_assert_eq!(ci, naive_committed(&incoming, &acks).min(naive_committed(&outgoing, &acks)));
            let (a, b) = (naive_vote(&incoming, &votes), naive_vote(&outgoing, &votes));
            let expected = if a == VoteResult::Won && b == VoteResult::Won { VoteResult::Won }
                else if a == VoteResult::Lost || b == VoteResult::Lost { VoteResult::Lost }
                else { VoteResult::Pending };
            prop_assert_eq!(j.vote_result(|id| votes.get(&id).copied()), expected);
        }
    }

    #[test]
    fn large_configs_use_the_heap_path() {
        let voters: Vec<NodeId> = (1..=21).collect();
        // Voters 1..=11 acked 5, the rest 0: 11 of 21 is a majority.
        assert_eq!(committed_index(&voters, |id| if id <= 11 { 5 } else { 0 }), 5);
        assert_eq!(committed_index(&voters, |id| if id <= 10 { 5 } else { 0 }), 0);
    }

    #[test]
    fn examples() {
        assert_eq!(committed_index(&[1, 2, 3], |id| [0, 5, 3, 1][id as usize]), 3);
        assert_eq!(vote_result(&[1, 2, 3], |id| (id == 1).then_some(true)), VoteResult::Pending);
        assert_eq!(vote_result(&[1, 2, 3], |id| (id != 3).then_some(false)), VoteResult::Lost);
    }
}
