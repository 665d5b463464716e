//! Membership change maths: the configuration a [`ConfChange`] leads to, and the rules that keep
//! two configurations from ever having disjoint majorities (§6 of the Raft paper, joint
//! consensus; §4.1 of the dissertation for single-server changes).

use crate::types::{ConfChange, ConfChangeOp, ConfChangeTransition, ConfState, Index, NodeId};

/// Why a membership change is refused. The configuration is left unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ConfChangeError {
    /// Leaving a joint configuration that is not joint, or entering one while joint.
    #[error("{0}")]
    WrongPhase(&'static str),
    /// The resulting configuration would have no voter.
    #[error("the change would remove every voter")]
    NoVoters,
    /// Node id 0 is reserved.
    #[error("node id 0 is not a valid member")]
    InvalidNode,
    /// The same node appears twice in one change.
    #[error("node {0} appears more than once in the change")]
    DuplicateNode(NodeId),
}

fn remove(v: &mut Vec<NodeId>, id: NodeId) {
    v.retain(|&x| x != id);
}

fn insert(v: &mut Vec<NodeId>, id: NodeId) {
    if let Err(pos) = v.binary_search(&id) {
        v.insert(pos, id);
    }
}

/// Whether `cc` is a "simple" change: not joint, and changing the voter set by at most one node,
/// so that any majority of the old and of the new configuration intersect.
fn is_simple(cur: &ConfState, cc: &ConfChange) -> bool {
    if cc.transition != ConfChangeTransition::Auto || cc.ops.is_empty() {
        return false;
    }
    let mut next = cur.voters.clone();
    for op in &cc.ops {
        match *op {
            ConfChangeOp::AddVoter(id) => insert(&mut next, id),
            ConfChangeOp::AddLearner(id) | ConfChangeOp::Remove(id) => remove(&mut next, id),
        }
    }
    let changed = next.iter().filter(|id| !cur.voters.contains(id)).count()
        + cur.voters.iter().filter(|id| !next.contains(id)).count();
    changed <= 1
}

/// The configuration after applying `cc` (an entry at `index`) to `cur`.
pub(crate) fn apply(
    cur: &ConfState,
    cc: &ConfChange,
    index: Index,
) -> Result<ConfState, ConfChangeError> {
    let joint = !cur.voters_outgoing.is_empty();
    let mut seen = Vec::with_capacity(cc.ops.len());
    for op in &cc.ops {
        let (ConfChangeOp::AddVoter(id) | ConfChangeOp::AddLearner(id) | ConfChangeOp::Remove(id)) =
            *op;
        if id == 0 {
            return Err(ConfChangeError::InvalidNode);
        }
        if seen.contains(&id) {
            return Err(ConfChangeError::DuplicateNode(id));
        }
        seen.push(id);
    }
    let mut next = cur.clone();
    next.index = index;
    if cc.ops.is_empty() {
        if !joint {
            return Err(ConfChangeError::WrongPhase(
                "not in a joint configuration, nothing to leave",
            ));
        }
        next.voters_outgoing.clear();
        for id in std::mem::take(&mut next.learners_next) {
            insert(&mut next.learners, id);
        }
        next.auto_leave = false;
        return Ok(next);
    }
    if joint {
        return Err(ConfChangeError::WrongPhase(
            "a joint configuration must be left before the next change",
        ));
    }
    let simple = is_simple(cur, cc);
    if !simple {
        next.voters_outgoing = cur.voters.clone();
        next.auto_leave = cc.transition == ConfChangeTransition::Auto;
    }
    for op in &cc.ops {
        match *op {
            ConfChangeOp::AddVoter(id) => {
                insert(&mut next.voters, id);
                remove(&mut next.learners, id);
                remove(&mut next.learners_next, id);
            }
            ConfChangeOp::AddLearner(id) => {
                remove(&mut next.voters, id);
                if next.voters_outgoing.contains(&id) {
                    // A voter being demoted stays a voter of the outgoing half until we leave.
                    remove(&mut next.learners, id);
                    insert(&mut next.learners_next, id);
                } else {
                    insert(&mut next.learners, id);
                }
            }
            ConfChangeOp::Remove(id) => {
                remove(&mut next.voters, id);
                remove(&mut next.learners, id);
                remove(&mut next.learners_next, id);
            }
        }
    }
    if next.voters.is_empty() {
        return Err(ConfChangeError::NoVoters);
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quorum::{JointConfig, VoteResult};
    use proptest::prelude::*;

    fn cs(voters: &[NodeId]) -> ConfState {
        ConfState { voters: voters.to_vec(), ..ConfState::default() }
    }

    #[test]
    fn single_voter_change_is_direct() {
        let c = apply(
            &cs(&[1, 2, 3]),
            &ConfChange { ops: vec![ConfChangeOp::AddVoter(4)], ..Default::default() },
            7,
        )
        .unwrap();
        assert_eq!(c.voters, vec![1, 2, 3, 4]);
        assert!(c.voters_outgoing.is_empty());
        assert_eq!(c.index, 7);
    }

    #[test]
    fn two_voter_changes_go_through_joint() {
        let cc = ConfChange {
            ops: vec![ConfChangeOp::AddVoter(4), ConfChangeOp::Remove(1)],
            ..Default::default()
        };
        let j = apply(&cs(&[1, 2, 3]), &cc, 5).unwrap();
        assert_eq!(
            (j.voters.clone(), j.voters_outgoing.clone(), j.auto_leave),
            (vec![2, 3, 4], vec![1, 2, 3], true)
        );
        assert!(matches!(apply(&j, &cc, 6), Err(ConfChangeError::WrongPhase(_))));
        let left = apply(&j, &ConfChange::leave_joint(), 6).unwrap();
        assert_eq!((left.voters, left.voters_outgoing), (vec![2, 3, 4], vec![]));
    }

    #[test]
    fn demotion_waits_for_leaving_joint() {
        let cc = ConfChange {
            ops: vec![ConfChangeOp::AddLearner(3), ConfChangeOp::AddVoter(4)],
            transition: ConfChangeTransition::JointExplicit,
        };
        let j = apply(&cs(&[1, 2, 3]), &cc, 2).unwrap();
        assert_eq!(j.learners_next, vec![3]);
        assert!(j.learners.is_empty());
        assert!(!j.auto_leave);
        let left = apply(&j, &ConfChange::leave_joint(), 3).unwrap();
        assert_eq!((left.voters, left.learners), (vec![1, 2, 4], vec![3]));
    }

    #[test]
    fn learner_promotion_and_refusals() {
        let c = apply(
            &cs(&[1]),
            &ConfChange { ops: vec![ConfChangeOp::AddLearner(2)], ..Default::default() },
            1,
        )
        .unwrap();
        assert_eq!(c.learners, vec![2]);
        let p = apply(
            &c,
            &ConfChange { ops: vec![ConfChangeOp::AddVoter(2)], ..Default::default() },
            2,
        )
        .unwrap();
        assert_eq!((p.voters.clone(), p.learners.clone()), (vec![1, 2], vec![]));
        assert_eq!(
            apply(
                &cs(&[1]),
                &ConfChange { ops: vec![ConfChangeOp::Remove(1)], ..Default::default() },
                1
            ),
            Err(ConfChangeError::NoVoters)
        );
        assert!(matches!(
            apply(&cs(&[1]), &ConfChange::leave_joint(), 1),
            Err(ConfChangeError::WrongPhase(_))
        ));
        let dup = ConfChange {
            ops: vec![ConfChangeOp::AddVoter(2), ConfChangeOp::Remove(2)],
            ..Default::default()
        };
        assert_eq!(apply(&cs(&[1]), &dup, 1), Err(ConfChangeError::DuplicateNode(2)));
    }

    /// Two voter sets "admit disjoint majorities" if some majority of one and some majority of
    /// the other share no node. Checked by brute force over subsets.
    fn disjoint_majorities(a: &JointConfig, b: &JointConfig) -> bool {
        let mut all: Vec<NodeId> = a.ids().into_iter().chain(b.ids()).collect();
        all.sort_unstable();
        all.dedup();
        let n = all.len();
        for mask in 0u32..(1 << n) {
            let in_a = |id: NodeId| {
                all.iter().position(|&x| x == id).is_some_and(|i| mask & (1 << i) != 0)
            };
            let in_b = |id: NodeId| {
                all.iter().position(|&x| x == id).is_some_and(|i| mask & (1 << i) == 0)
            };
            if a.vote_result(|id| Some(in_a(id))) == VoteResult::Won
                && b.vote_result(|id| Some(in_b(id))) == VoteResult::Won
            {
                return true;
            }
        }
        false
    }

    fn joint(c: &ConfState) -> JointConfig {
        JointConfig { incoming: c.voters.clone(), outgoing: c.voters_outgoing.clone() }
    }

    fn op_strategy() -> impl Strategy<Value = ConfChangeOp> {
        (0u8..3, 1u64..7).prop_map(|(k, id)| match k {
            0 => ConfChangeOp::AddVoter(id),
            1 => ConfChangeOp::AddLearner(id),
            _ => ConfChangeOp::Remove(id),
        })
    }

    proptest! {
        /// Any accepted change leads from a configuration to one whose majorities all intersect
        /// the old one's: two leaders can never be elected by disjoint majorities across a change.
        #[test]
        fn consecutive_configs_never_have_disjoint_majorities(
            start in prop::collection::btree_set(1u64..7, 1..5),
            changes in prop::collection::vec((prop::collection::vec(op_strategy(), 0..3), any::<bool>()), 1..6),
        ) {
            let mut cur = cs(&start.into_iter().collect::<Vec<_>>());
            for (i, (ops, explicit)) in changes.into_iter().enumerate() {
                let transition = if explicit { ConfChangeTransition::JointExplicit } else { ConfChangeTransition::Auto };
                let cc = ConfChange { ops, transition };
                if let Ok(next) = apply(&cur, &cc, i as Index + 1) {
                    prop_assert!(!disjoint_majorities(&joint(&cur), &joint(&next)), "{cur:?} -> {next:?}");
                    prop_assert!(next.learners.iter().all(|l| !next.voters.contains(l) && !next.voters_outgoing.contains(l)));
                    cur = next;
                }
            }
        }
    }
}
