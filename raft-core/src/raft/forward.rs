//! Requests a follower forwards to its leader (proposals, membership changes, leadership
//! transfers) and the refusals that come back, so that no caller waits for a timeout to learn
//! that its request went nowhere.
//!
//! A forwarded request carries no term: the receiver handles it in whatever role it has now. A
//! leader handles it exactly as the local call; any node that cannot carry it out (a refusing
//! leader, a node that is no longer the leader) answers [`MessageBody::Refused`] with the error,
//! which the requester hands out in [`super::Ready::refused`]. A request still waiting in this
//! node's outbox when the leader changed is not sent at all: this node handles it as if it had
//! just arrived (carries it out if it leads now, refuses it otherwise).

use super::Raft;
use crate::error::Error;
use crate::storage::Storage;
use crate::types::{Forwarded, Message, MessageBody, NodeId, Refused, Role};

impl<S: Storage> Raft<S> {
    /// Non-leader: sends `body` (a forwarded request) to the leader this node knows, if
    /// `Config::forward_proposals` is set; otherwise the error a non-leader answers with.
    pub(super) fn forward(&mut self, body: MessageBody) -> Result<(), Error> {
        match self.leader_id {
            Some(leader) if self.cfg.forward_proposals => {
                self.send(leader, 0, body);
                self.forwards_queued = true;
                Ok(())
            }
            _ => Err(self.not_leader_error()),
        }
    }

    /// What a node that is not the leader answers a request for the leader with.
    fn not_leader_error(&self) -> Error {
        match self.leader_id {
            Some(l) => Error::NotLeader { leader_hint: Some(l) },
            None => Error::NoLeader,
        }
    }

    /// A request forwarded by `requester` (`None`: one of this node's own that never left, see
    /// [`Raft::withdraw_stale_forwards`]). A leader handles it as the local call; a refusal goes
    /// back to the requester.
    pub(super) fn handle_forwarded(&mut self, requester: Option<NodeId>, request: Forwarded) {
        if self.role != Role::Leader {
            let error = self.not_leader_error();
            return self.refuse(requester, request, error);
        }
        let result = match request {
            Forwarded::Proposals(data) => match self.admit_batch(&data) {
                Ok(size) => {
                    let count = data.len() as u64;
                    self.append_proposals(data, count, size);
                    Ok(())
                }
                Err(e) => Err((Forwarded::Proposals(data), e)),
            },
            Forwarded::ConfChange(cc) => {
                self.propose_conf_change(cc.clone()).map_err(|e| (Forwarded::ConfChange(cc), e))
            }
            Forwarded::Transfer(to) => {
                self.transfer_leader(to).map_err(|e| (Forwarded::Transfer(to), e))
            }
        };
        if let Err((request, error)) = result {
            self.refuse(requester, request, error);
        }
    }

    /// Tells `requester` (or this node's own driver) that `request` will not be carried out.
    fn refuse(&mut self, requester: Option<NodeId>, request: Forwarded, error: Error) {
        self.assert_invariant(error.is_refusal(), || {
            format!("refusing a forwarded request with {error:?}")
        });
        match requester {
            Some(to) => self.send(to, self.term, MessageBody::Refused { request, error }),
            None => self.refused.push(Refused { request, error }),
        }
    }

    /// Before a `Ready` hands out its messages: a forwarded request still waiting there for a
    /// node that is no longer this node's leader (the term or the leader changed since it was
    /// queued, or this node now leads or campaigns) is not sent. This node handles it as if it
    /// had just arrived: as the leader it carries it out, otherwise it is refused at once with
    /// the current leader hint.
    pub(super) fn withdraw_stale_forwards(&mut self) {
        if !std::mem::take(&mut self.forwards_queued) {
            return;
        }
        let leader = self.leader_id;
        let stale = |m: &Message| m.body.is_forwarded() && Some(m.to) != leader;
        if !self.msgs.iter().any(stale) {
            return;
        }
        let (withdrawn, kept) = std::mem::take(&mut self.msgs).into_iter().partition(stale);
        self.msgs = kept;
        for m in withdrawn {
            if let Some(request) = Forwarded::from_body(m.body) {
                self.handle_forwarded(None, request);
            }
        }
    }
}
