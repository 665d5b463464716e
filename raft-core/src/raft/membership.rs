//! Snapshots (§7), membership changes (§6, joint consensus) and leadership transfer (§3.10 of
//! the dissertation): the parts of `Raft` that change who is in the cluster or where the log
//! starts.

use super::Raft;
use crate::confchange;
use crate::error::Error;
use crate::progress::{Progress, ProgressState};
use crate::storage::Storage;
use crate::transport::SnapshotStatus;
use crate::types::{
    ConfChange, ConfChangeOp, ConfState, Entry, EntryKind, Index, MessageBody, NodeId, Role,
    Snapshot, SnapshotMeta,
};

impl<S: Storage> Raft<S> {
    /// The current membership (as of the last committed change handed out for applying).
    pub fn conf_state(&self) -> &ConfState {
        &self.conf
    }

    /// Proposes a membership change. Only one may be in progress: the next is refused with
    /// [`Error::ConfChangeInProgress`] until the previous is applied. A change that adds or
    /// removes one voter applies directly; others go through a joint configuration (§6).
    ///
    /// On a follower that knows the leader it is forwarded ([`MessageBody::ProposeConfChange`])
    /// when `Config::forward_proposals` is set, and `Ok` only means forwarded: the leader
    /// handles it as if called there, and a refusal comes back in [`super::Ready::refused`].
    pub fn propose_conf_change(&mut self, cc: ConfChange) -> Result<(), Error> {
        if self.role != Role::Leader {
            return self.forward(MessageBody::ProposeConfChange { change: cc });
        }
        if let Some(target) = self.lead_transferee() {
            return Err(Error::TransferInProgress { target });
        }
        let pending_index = self.leader.as_ref().map_or(0, |ls| ls.pending_conf_index);
        if pending_index > self.log.applying {
            return Err(Error::ConfChangeInProgress { pending_index });
        }
        if self.log.term(self.log.committed) != Some(self.term) {
            // A leader must commit an entry of its term before changing membership, or a change
            // from an earlier term could still be overridden (the single-server change bug).
            return Err(Error::ConfChangeRefused {
                reason: "the leader has not committed an entry of its term yet; retry shortly"
                    .into(),
            });
        }
        self.check_new_voters_caught_up(&cc)?;
        let next = confchange::apply(&self.conf, &cc, 0)
            .map_err(|e| Error::ConfChangeRefused { reason: e.to_string() })?;
        self.append_conf_change(&next);
        Ok(())
    }

    /// A node becomes a voter only as a learner that holds the entry that made it one: it then
    /// knows a configuration, so it votes, while a blank (new or wiped) node never does.
    fn check_new_voters_caught_up(&self, cc: &ConfChange) -> Result<(), Error> {
        for op in &cc.ops {
            let ConfChangeOp::AddVoter(id) = *op else { continue };
            if self.conf.voters.contains(&id) || self.conf.voters_outgoing.contains(&id) {
                continue;
            }
            if !self.conf.learners.contains(&id) {
                return Err(Error::ConfChangeRefused {
                    reason: format!("node {id} must join as a learner first and catch up"),
                });
            }
            let matched = self
                .leader
                .as_ref()
                .and_then(|ls| ls.progress.get(&id))
                .map_or(0, |p| p.match_index);
            if matched < self.conf.index {
                return Err(Error::ConfChangeRefused {
                    reason: format!(
                        "learner {id} has not caught up (match {matched} < configuration index {}); retry shortly",
                        self.conf.index
                    ),
                });
            }
        }
        Ok(())
    }

    /// Appends the entry carrying configuration `next` (the result of a validated change).
    fn append_conf_change(&mut self, next: &ConfState) {
        let index = self.log.last_index() + 1;
        let data = next.encode();
        let size = crate::ENTRY_OVERHEAD_BYTES + data.len() as u64;
        let entry = Entry { term: self.term, index, kind: EntryKind::ConfChange, data };
        self.append_entries(vec![entry], size);
        if let Some(ls) = self.leader.as_mut() {
            ls.pending_conf_index = index;
        }
    }

    /// Applies a committed membership change entry as it is handed out for applying.
    pub(super) fn apply_conf_change_entry(&mut self, e: &Entry) {
        if e.index <= self.conf.index {
            return; // Applied before a restart: the stored configuration already has it.
        }
        self.assert_invariant(e.index <= self.log.committed, || {
            format!("membership change at index {} applied before it is committed", e.index)
        });
        // The entry carries the whole configuration; one that does not decode (or has no voter)
        // is skipped on every node alike, so configurations never diverge.
        let Some(mut next) = ConfState::decode(&e.data) else { return };
        if next.voters.is_empty() {
            return;
        }
        next.index = e.index;
        self.set_conf(next);
    }

    /// A joint configuration with `auto_leave` is left as soon as it is committed.
    pub(super) fn maybe_auto_leave_joint(&mut self) {
        if self.leader.as_ref().is_some_and(|ls| ls.pending_conf_index <= self.log.applying)
            && !self.conf.voters_outgoing.is_empty()
            && self.conf.auto_leave
            && let Ok(next) = confchange::apply(&self.conf, &ConfChange::leave_joint(), 0)
        {
            self.append_conf_change(&next);
        }
    }

    fn set_conf(&mut self, next: ConfState) {
        let (before, after) = (self.conf.members(), next.members());
        let gone: Vec<NodeId> = before.iter().copied().filter(|id| !after.contains(id)).collect();
        self.removed.extend(&gone);
        self.removed.retain(|id| !after.contains(id));
        if self.role == Role::Leader {
            // The leader stops replicating to them now: tell them (best effort; a removed
            // voter that missed it hears it again when it campaigns).
            let me = self.cfg.id;
            for &id in gone.iter().filter(|&&id| id != me) {
                self.send(id, self.term, MessageBody::Removed);
            }
        }
        self.tracker.set_conf(&next);
        self.conf_history.push_back(next.clone());
        self.conf_to_persist = Some(next.clone());
        self.conf = next;
        if matches!(self.role, Role::Candidate | Role::PreCandidate) && !self.promotable() {
            // Removed (or demoted) while campaigning: votes still on their way must not make
            // it the leader of a configuration it is not in.
            self.become_follower(self.term, None);
            return;
        }
        if self.role != Role::Leader {
            return;
        }
        let id = self.cfg.id;
        if !self.tracker.is_voter(id) {
            self.step_down_after_removal();
            return;
        }
        let members = self.conf.members();
        let next_index = self.log.last_index() + 1;
        let (max_msgs, max_bytes) = (self.cfg.max_inflight_msgs, self.cfg.max_inflight_bytes);
        let now = self.now_ticks;
        if let Some(ls) = self.leader.as_mut() {
            ls.progress.retain(|p, _| members.contains(p));
            for &m in &members {
                ls.progress.entry(m).or_insert_with(|| {
                    let mut pr = Progress::new(next_index, max_msgs, max_bytes);
                    pr.last_heard_tick = now;
                    pr
                });
            }
        }
        let tracker = &self.tracker;
        if let Some(ls) = self.leader.as_mut()
            && ls.transferee.is_some_and(|t| !tracker.is_voter(t))
        {
            ls.transferee = None;
        }
        // The quorum changed: entries may now be committed.
        self.maybe_commit();
        self.need_append();
    }

    /// Removed (or demoted) leader: tell everyone the change is committed, hand over to a
    /// caught-up voter if there is one, and stop leading. Not promotable any more, it never
    /// campaigns again.
    fn step_down_after_removal(&mut self) {
        let last = self.log.last_index();
        let successor = self.leader.as_ref().and_then(|ls| {
            ls.progress
                .iter()
                .filter(|(p, pr)| self.tracker.is_voter(**p) && pr.match_index == last)
                .map(|(p, _)| *p)
                .next()
        });
        self.broadcast_append();
        if let Some(to) = successor {
            self.send(to, self.term, MessageBody::TimeoutNow);
        }
        self.become_follower(self.term, None);
    }

    /// Asks the leader to hand leadership to `target`: it stops accepting proposals, brings the
    /// target up to date, then tells it to campaign at once. If the target has not taken over
    /// within an election timeout, the transfer is abandoned and proposals resume.
    ///
    /// On a follower that knows the leader it is forwarded ([`MessageBody::TransferLeader`],
    /// `target` may be the follower itself) when `Config::forward_proposals` is set; `Ok` only
    /// means forwarded, and a refusal comes back in [`super::Ready::refused`].
    pub fn transfer_leader(&mut self, target: NodeId) -> Result<(), Error> {
        if self.role != Role::Leader {
            return self.forward(MessageBody::TransferLeader { to: target });
        }
        if target == self.cfg.id || self.lead_transferee() == Some(target) {
            return Ok(());
        }
        if !self.conf.voters.contains(&target) {
            return Err(Error::InvalidTransfer {
                target,
                reason: "not a voter of the configuration".into(),
            });
        }
        if let Some(ls) = self.leader.as_mut() {
            ls.transferee = Some(target);
            ls.transfer_elapsed = 0;
            // The target will ignore leases when it campaigns: ours cannot be trusted this term.
            ls.lease_disabled = true;
        }
        let caught_up = self
            .leader
            .as_ref()
            .and_then(|ls| ls.progress.get(&target))
            .is_some_and(|pr| pr.match_index == self.log.last_index());
        if caught_up {
            self.send(target, self.term, MessageBody::TimeoutNow);
        } else {
            self.send_append(target, true);
        }
        Ok(())
    }

    pub(super) fn handle_timeout_now(&mut self, from: NodeId) {
        // Only the leader we follow may order an election that bypasses leases.
        if !self.promotable() || self.leader_id != Some(from) {
            return;
        }
        // Skip PreVote: the leader asked for this election, and voters ignore their lease.
        self.campaign_forced = true;
        self.become_candidate();
    }

    /// Tells the leader a message to `peer` could not be delivered: it stops pipelining and
    /// probes instead.
    pub fn report_unreachable(&mut self, peer: NodeId) {
        if let Some(pr) = self.progress_mut(peer)
            && pr.state == ProgressState::Replicate
        {
            pr.become_probe();
        }
    }

    /// Tells the leader how a snapshot transfer to `peer` ended. Either way the leader waits
    /// for the follower's answer (or the next heartbeat) before sending more.
    pub fn report_snapshot(&mut self, peer: NodeId, status: SnapshotStatus) {
        if let Some(pr) = self.progress_mut(peer)
            && matches!(pr.state, ProgressState::Snapshot(_))
        {
            pr.become_probe();
            // Finished: the answer is on its way. Failed: retry after the next heartbeat.
            pr.probe_sent = true;
            let _ = status;
        }
    }

    /// Metadata for a snapshot the application makes at `index` (normally its applied index):
    /// the term there and the membership as of that index. Store it with the data through
    /// [`crate::LogStore::compact`].
    pub fn snapshot_meta(&self, index: Index) -> Result<SnapshotMeta, Error> {
        let first = self.log.snapshot_meta().index;
        let applied = self.log.applied;
        let out_of_range = Error::SnapshotOutOfRange { index, first, applied };
        if index < first || index > applied {
            return Err(out_of_range);
        }
        let term = self.log.term(index).ok_or(out_of_range.clone())?;
        let conf_state = self
            .conf_history
            .iter()
            .rev()
            .find(|c| c.index <= index)
            .cloned()
            .ok_or(out_of_range)?;
        Ok(SnapshotMeta { index, term, conf_state })
    }

    /// Leader: sends the latest stored snapshot to `to`, whose next entries were compacted.
    pub(super) fn send_snapshot(&mut self, to: NodeId) -> bool {
        let snapshot = match self.log.storage().snapshot() {
            Ok(s) if s.meta.index > 0 => s,
            _ => return false,
        };
        let index = snapshot.meta.index;
        let Some(pr) = self.progress_mut(to) else { return false };
        pr.become_snapshot(index);
        self.send(to, self.term, MessageBody::InstallSnapshot { snapshot });
        true
    }

    /// Follower: a snapshot from the leader (§7). Stale and duplicate snapshots are answered
    /// with the commit index and otherwise ignored.
    pub(super) fn handle_snapshot(&mut self, from: NodeId, snapshot: Snapshot) {
        let (index, term) = (snapshot.meta.index, snapshot.meta.term);
        if index > self.log.committed && !self.log.match_term(index, term) {
            let conf = snapshot.meta.conf_state.clone();
            self.log.restore(snapshot);
            self.tracker.set_conf(&conf);
            self.conf_history.clear();
            self.conf_history.push_back(conf.clone());
            self.conf = conf;
        } else if index > self.log.committed {
            // We have the entries already: the snapshot only tells us they are committed.
            self.log.commit_to(index);
        }
        self.ack_append(from, self.log.committed);
    }
}
