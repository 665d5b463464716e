//! Requests a follower forwards to its leader: proposals, membership changes and leadership
//! transfers. A forwarded request carries no term: the receiver handles it in whatever role it
//! has now, and a leader handles it exactly as the local call.

use super::Raft;
use crate::error::Error;
use crate::storage::Storage;
use crate::types::MessageBody;

impl<S: Storage> Raft<S> {
    /// Non-leader: sends `body` (a forwarded request) to the leader this node knows, if
    /// `Config::forward_proposals` is set; otherwise the error a non-leader answers with.
    pub(super) fn forward(&mut self, body: MessageBody) -> Result<(), Error> {
        match self.leader_id {
            Some(leader) if self.cfg.forward_proposals => {
                self.send(leader, 0, body);
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
}
