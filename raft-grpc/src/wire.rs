//! Conversions between [`raft_core`] messages and their protobuf form ([`crate::proto`]).
//!
//! Encoding a core message cannot fail except for [`MessageBody::InstallSnapshot`], which has a
//! stream of its own, and a [`MessageBody::Refused`] whose error is not a refusal
//! ([`raft_core::Error::is_refusal`]; the core never sends one). Decoding checks everything the
//! wire format cannot express (a `oneof` that must be set, enum values, reserved node ids) and
//! returns a [`WireError`]; it never panics. Protocol checks (terms, indexes, contiguity) are
//! the core's job.

use raft_core::{
    ConfChange, ConfChangeOp, ConfChangeTransition, ConfState, Entry, EntryKind, Error, Forwarded,
    Message, MessageBody, NodeId, SnapshotMeta,
};

use crate::error::WireError;
use crate::proto;
use crate::proto::raft_message::Body;

/// Encodes a core message for the message stream.
pub fn message_to_wire(message: Message) -> Result<proto::RaftMessage, WireError> {
    let Message { from, to, term, body } = message;
    let body = match body {
        MessageBody::Append { prev_log_index, prev_log_term, entries, leader_commit } => {
            Body::Append(proto::Append {
                prev_log_index,
                prev_log_term,
                entries: entries.into_iter().map(entry_to_wire).collect(),
                leader_commit,
            })
        }
        MessageBody::AppendResponse { reject, index, hint_index, hint_term } => {
            Body::AppendResponse(proto::AppendResponse { reject, index, hint_index, hint_term })
        }
        MessageBody::Vote { pre_vote, last_log_index, last_log_term, force } => {
            Body::Vote(proto::Vote { pre_vote, last_log_index, last_log_term, force })
        }
        MessageBody::VoteResponse { pre_vote, granted, commit_index, commit_term } => {
            Body::VoteResponse(proto::VoteResponse { pre_vote, granted, commit_index, commit_term })
        }
        MessageBody::Heartbeat { commit, round } => {
            Body::Heartbeat(proto::Heartbeat { commit, round })
        }
        MessageBody::HeartbeatResponse { round } => {
            Body::HeartbeatResponse(proto::HeartbeatResponse { round })
        }
        MessageBody::Propose { data } => Body::Propose(proto::Propose { data }),
        MessageBody::ReadIndex { ctx } => Body::ReadIndex(proto::ReadIndex { ctx }),
        MessageBody::ReadIndexResponse { ctx, index } => {
            Body::ReadIndexResponse(proto::ReadIndexResponse { ctx, index })
        }
        MessageBody::TimeoutNow => Body::TimeoutNow(proto::TimeoutNow {}),
        MessageBody::Removed => Body::Removed(proto::Removed {}),
        MessageBody::ProposeConfChange { change } => {
            Body::ProposeConfChange(proto::ProposeConfChange {
                change: Some(conf_change_to_wire(change)),
            })
        }
        MessageBody::TransferLeader { to } => Body::TransferLeader(proto::TransferLeader { to }),
        MessageBody::Refused { request, error } => Body::Refused(proto::Refused {
            request: Some(forwarded_to_wire(request)),
            error: Some(refusal_to_wire(error)?),
        }),
        MessageBody::InstallSnapshot { .. } => return Err(WireError::SnapshotOnMessageStream),
    };
    Ok(proto::RaftMessage { from, to, term, body: Some(body) })
}

/// Decodes a message received on the message stream.
pub fn message_from_wire(message: proto::RaftMessage) -> Result<Message, WireError> {
    let proto::RaftMessage { from, to, term, body } = message;
    let from = node_id(from, "RaftMessage.from")?;
    let to = node_id(to, "RaftMessage.to")?;
    let body = match body.ok_or(WireError::Missing("RaftMessage.body"))? {
        Body::Append(a) => MessageBody::Append {
            prev_log_index: a.prev_log_index,
            prev_log_term: a.prev_log_term,
            entries: a.entries.into_iter().map(entry_from_wire).collect::<Result<_, _>>()?,
            leader_commit: a.leader_commit,
        },
        Body::AppendResponse(r) => MessageBody::AppendResponse {
            reject: r.reject,
            index: r.index,
            hint_index: r.hint_index,
            hint_term: r.hint_term,
        },
        Body::Vote(v) => MessageBody::Vote {
            pre_vote: v.pre_vote,
            last_log_index: v.last_log_index,
            last_log_term: v.last_log_term,
            force: v.force,
        },
        Body::VoteResponse(v) => MessageBody::VoteResponse {
            pre_vote: v.pre_vote,
            granted: v.granted,
            commit_index: v.commit_index,
            commit_term: v.commit_term,
        },
        Body::Heartbeat(h) => MessageBody::Heartbeat { commit: h.commit, round: h.round },
        Body::HeartbeatResponse(h) => MessageBody::HeartbeatResponse { round: h.round },
        Body::Propose(p) => MessageBody::Propose { data: p.data },
        Body::ReadIndex(r) => MessageBody::ReadIndex { ctx: r.ctx },
        Body::ReadIndexResponse(r) => MessageBody::ReadIndexResponse { ctx: r.ctx, index: r.index },
        Body::TimeoutNow(_) => MessageBody::TimeoutNow,
        Body::Removed(_) => MessageBody::Removed,
        Body::ProposeConfChange(p) => MessageBody::ProposeConfChange {
            change: conf_change_from_wire(
                p.change.ok_or(WireError::Missing("ProposeConfChange.change"))?,
            )?,
        },
        Body::TransferLeader(t) => {
            MessageBody::TransferLeader { to: node_id(t.to, "TransferLeader.to")? }
        }
        Body::Refused(r) => MessageBody::Refused {
            request: forwarded_from_wire(r.request.ok_or(WireError::Missing("Refused.request"))?)?,
            error: refusal_from_wire(r.error.ok_or(WireError::Missing("Refused.error"))?)?,
        },
    };
    Ok(Message { from, to, term, body })
}

/// Decodes a whole batch; the first bad message fails it (nothing of a bad batch is delivered).
pub fn batch_from_wire(batch: proto::MessageBatch) -> Result<Vec<Message>, WireError> {
    batch.messages.into_iter().map(message_from_wire).collect()
}

/// Encodes snapshot metadata.
pub fn meta_to_wire(meta: &SnapshotMeta) -> proto::SnapshotMeta {
    let c = &meta.conf_state;
    proto::SnapshotMeta {
        index: meta.index,
        term: meta.term,
        conf_state: Some(proto::ConfState {
            voters: c.voters.clone(),
            learners: c.learners.clone(),
            voters_outgoing: c.voters_outgoing.clone(),
            learners_next: c.learners_next.clone(),
            auto_leave: c.auto_leave,
            index: c.index,
        }),
    }
}

/// Decodes snapshot metadata. Node ids in the configuration must be non-zero.
pub fn meta_from_wire(meta: proto::SnapshotMeta) -> Result<SnapshotMeta, WireError> {
    let c = meta.conf_state.ok_or(WireError::Missing("SnapshotMeta.conf_state"))?;
    for ids in [&c.voters, &c.learners, &c.voters_outgoing, &c.learners_next] {
        if ids.contains(&0) {
            return Err(WireError::ZeroNodeId("ConfState"));
        }
    }
    Ok(SnapshotMeta {
        index: meta.index,
        term: meta.term,
        conf_state: ConfState {
            voters: c.voters,
            learners: c.learners,
            voters_outgoing: c.voters_outgoing,
            learners_next: c.learners_next,
            auto_leave: c.auto_leave,
            index: c.index,
        },
    })
}

/// Decodes one protobuf message of type `T` from bytes; the error names the type.
pub fn decode<T: prost::Message + Default>(
    what: &'static str,
    bytes: &[u8],
) -> Result<T, WireError> {
    T::decode(bytes).map_err(|e| WireError::Decode { what, detail: e.to_string() })
}

#[cfg_attr(not(feature = "transport"), allow(dead_code))]
/// Bytes `message` takes as one element of a `repeated` field (tag, length and body).
pub(crate) fn repeated_len(message: &impl prost::Message) -> usize {
    let len = message.encoded_len();
    1 + prost::length_delimiter_len(len) + len
}

/// Encoded size of a batch frame holding `messages`.
#[cfg(test)]
pub(crate) fn batch_frame_len(messages: &[proto::RaftMessage]) -> usize {
    let batch = messages.iter().map(repeated_len).sum::<usize>();
    1 + prost::length_delimiter_len(batch) + batch
}

fn entry_to_wire(e: Entry) -> proto::Entry {
    let kind = match e.kind {
        EntryKind::Normal => proto::EntryKind::Normal,
        EntryKind::Empty => proto::EntryKind::Empty,
        EntryKind::ConfChange => proto::EntryKind::ConfChange,
    };
    proto::Entry { term: e.term, index: e.index, kind: kind as i32, data: e.data }
}

fn entry_from_wire(e: proto::Entry) -> Result<Entry, WireError> {
    let kind = match proto::EntryKind::try_from(e.kind) {
        Ok(proto::EntryKind::Normal) => EntryKind::Normal,
        Ok(proto::EntryKind::Empty) => EntryKind::Empty,
        Ok(proto::EntryKind::ConfChange) => EntryKind::ConfChange,
        Err(_) => return Err(WireError::UnknownEnum { field: "Entry.kind", value: e.kind }),
    };
    Ok(Entry { term: e.term, index: e.index, kind, data: e.data })
}

fn conf_change_to_wire(cc: ConfChange) -> proto::ConfChange {
    use proto::conf_change_op::Op;
    let ops = cc
        .ops
        .into_iter()
        .map(|op| proto::ConfChangeOp {
            op: Some(match op {
                ConfChangeOp::AddVoter(id) => Op::AddVoter(id),
                ConfChangeOp::AddLearner(id) => Op::AddLearner(id),
                ConfChangeOp::Remove(id) => Op::Remove(id),
            }),
        })
        .collect();
    let transition = match cc.transition {
        ConfChangeTransition::Auto => proto::ConfChangeTransition::Auto,
        ConfChangeTransition::JointExplicit => proto::ConfChangeTransition::JointExplicit,
    };
    proto::ConfChange { ops, transition: transition as i32 }
}

fn conf_change_from_wire(cc: proto::ConfChange) -> Result<ConfChange, WireError> {
    use proto::conf_change_op::Op;
    let ops = cc
        .ops
        .into_iter()
        .map(|op| {
            Ok(match op.op.ok_or(WireError::Missing("ConfChangeOp.op"))? {
                Op::AddVoter(id) => ConfChangeOp::AddVoter(node_id(id, "ConfChangeOp.add_voter")?),
                Op::AddLearner(id) => {
                    ConfChangeOp::AddLearner(node_id(id, "ConfChangeOp.add_learner")?)
                }
                Op::Remove(id) => ConfChangeOp::Remove(node_id(id, "ConfChangeOp.remove")?),
            })
        })
        .collect::<Result<_, WireError>>()?;
    let transition = match proto::ConfChangeTransition::try_from(cc.transition) {
        Ok(proto::ConfChangeTransition::Auto) => ConfChangeTransition::Auto,
        Ok(proto::ConfChangeTransition::JointExplicit) => ConfChangeTransition::JointExplicit,
        Err(_) => {
            let value = cc.transition;
            return Err(WireError::UnknownEnum { field: "ConfChange.transition", value });
        }
    };
    Ok(ConfChange { ops, transition })
}

fn forwarded_to_wire(request: Forwarded) -> proto::refused::Request {
    use proto::refused::Request;
    match request {
        Forwarded::Proposals(data) => Request::Proposals(proto::Propose { data }),
        Forwarded::ConfChange(cc) => Request::ConfChange(conf_change_to_wire(cc)),
        Forwarded::Transfer(to) => Request::Transfer(to),
    }
}

fn forwarded_from_wire(request: proto::refused::Request) -> Result<Forwarded, WireError> {
    use proto::refused::Request;
    Ok(match request {
        Request::Proposals(p) => Forwarded::Proposals(p.data),
        Request::ConfChange(cc) => Forwarded::ConfChange(conf_change_from_wire(cc)?),
        Request::Transfer(to) => Forwarded::Transfer(node_id(to, "Refused.transfer")?),
    })
}

/// Only the errors a request is refused with have a wire form (see the module docs).
fn refusal_to_wire(error: Error) -> Result<proto::Refusal, WireError> {
    use proto::refusal::{self as r, Error as E};
    let error = match error {
        Error::NotLeader { leader_hint } => {
            E::NotLeader(r::NotLeader { leader_hint: leader_hint.unwrap_or(0) })
        }
        Error::NoLeader => E::NoLeader(r::NoLeader {}),
        Error::UncommittedLimit { uncommitted_bytes, proposal_bytes, limit } => {
            E::UncommittedLimit(r::UncommittedLimit { uncommitted_bytes, proposal_bytes, limit })
        }
        Error::ProposalTooLarge { bytes, limit } => {
            E::ProposalTooLarge(r::ProposalTooLarge { bytes, limit })
        }
        Error::TransferInProgress { target } => {
            E::TransferInProgress(r::TransferInProgress { target })
        }
        Error::InvalidTransfer { target, reason } => {
            E::InvalidTransfer(r::InvalidTransfer { target, reason })
        }
        Error::ConfChangeInProgress { pending_index } => {
            E::ConfChangeInProgress(r::ConfChangeInProgress { pending_index })
        }
        Error::ConfChangeRefused { reason } => {
            E::ConfChangeRefused(r::ConfChangeRefused { reason })
        }
        _ => return Err(WireError::Missing("Refusal.error")),
    };
    Ok(proto::Refusal { error: Some(error) })
}

fn refusal_from_wire(refusal: proto::Refusal) -> Result<Error, WireError> {
    use proto::refusal::Error as E;
    Ok(match refusal.error.ok_or(WireError::Missing("Refusal.error"))? {
        E::NotLeader(e) => {
            Error::NotLeader { leader_hint: (e.leader_hint != 0).then_some(e.leader_hint) }
        }
        E::NoLeader(_) => Error::NoLeader,
        E::UncommittedLimit(e) => Error::UncommittedLimit {
            uncommitted_bytes: e.uncommitted_bytes,
            proposal_bytes: e.proposal_bytes,
            limit: e.limit,
        },
        E::ProposalTooLarge(e) => Error::ProposalTooLarge { bytes: e.bytes, limit: e.limit },
        E::TransferInProgress(e) => Error::TransferInProgress { target: e.target },
        E::InvalidTransfer(e) => Error::InvalidTransfer { target: e.target, reason: e.reason },
        E::ConfChangeInProgress(e) => {
            Error::ConfChangeInProgress { pending_index: e.pending_index }
        }
        E::ConfChangeRefused(e) => Error::ConfChangeRefused { reason: e.reason },
    })
}

fn node_id(id: u64, field: &'static str) -> Result<NodeId, WireError> {
    if id == 0 { Err(WireError::ZeroNodeId(field)) } else { Ok(id) }
}

/// Encodes any prost message to a fresh buffer (tests, fuzzing and size checks).
pub fn encode_to_vec(message: &impl prost::Message) -> Vec<u8> {
    message.encode_to_vec()
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use proptest::prelude::*;
    use prost::Message as _;

    use super::*;

    fn arb_bytes() -> impl Strategy<Value = Bytes> {
        proptest::collection::vec(any::<u8>(), 0..16).prop_map(Bytes::from)
    }

    fn arb_entry() -> impl Strategy<Value = Entry> {
        (any::<u64>(), any::<u64>(), 0..3u8, arb_bytes()).prop_map(|(term, index, k, data)| Entry {
            term,
            index,
            kind: [EntryKind::Normal, EntryKind::Empty, EntryKind::ConfChange][k as usize],
            data,
        })
    }

    fn arb_body() -> impl Strategy<Value = MessageBody> {
        prop_oneof![
            (
                any::<u64>(),
                any::<u64>(),
                proptest::collection::vec(arb_entry(), 0..4),
                any::<u64>()
            )
                .prop_map(|(prev_log_index, prev_log_term, entries, leader_commit)| {
                    MessageBody::Append { prev_log_index, prev_log_term, entries, leader_commit }
                }),
            (any::<bool>(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
                |(reject, index, hint_index, hint_term)| {
                    MessageBody::AppendResponse { reject, index, hint_index, hint_term }
                }
            ),
            (any::<bool>(), any::<u64>(), any::<u64>(), any::<bool>()).prop_map(
                |(pre_vote, last_log_index, last_log_term, force)| MessageBody::Vote {
                    pre_vote,
                    last_log_index,
                    last_log_term,
                    force
                }
            ),
            (any::<bool>(), any::<bool>(), any::<u64>(), any::<u64>()).prop_map(
                |(pre_vote, granted, commit_index, commit_term)| MessageBody::VoteResponse {
                    pre_vote,
                    granted,
                    commit_index,
                    commit_term
                }
            ),
            (any::<u64>(), any::<u64>())
                .prop_map(|(commit, round)| MessageBody::Heartbeat { commit, round }),
            any::<u64>().prop_map(|round| MessageBody::HeartbeatResponse { round }),
            proptest::collection::vec(arb_bytes(), 0..4)
                .prop_map(|data| MessageBody::Propose { data }),
            arb_bytes().prop_map(|ctx| MessageBody::ReadIndex { ctx }),
            (arb_bytes(), any::<u64>())
                .prop_map(|(ctx, index)| MessageBody::ReadIndexResponse { ctx, index }),
            Just(MessageBody::TimeoutNow),
            Just(MessageBody::Removed),
            arb_conf_change().prop_map(|change| MessageBody::ProposeConfChange { change }),
            (1..u64::MAX).prop_map(|to| MessageBody::TransferLeader { to }),
            (arb_forwarded(), arb_refusal())
                .prop_map(|(request, error)| MessageBody::Refused { request, error }),
        ]
    }

    fn arb_conf_change() -> impl Strategy<Value = ConfChange> {
        let op = (0..3u8, 1..u64::MAX).prop_map(|(k, id)| match k {
            0 => ConfChangeOp::AddVoter(id),
            1 => ConfChangeOp::AddLearner(id),
            _ => ConfChangeOp::Remove(id),
        });
        (proptest::collection::vec(op, 0..4), any::<bool>()).prop_map(|(ops, explicit)| {
            let transition = if explicit {
                ConfChangeTransition::JointExplicit
            } else {
                ConfChangeTransition::Auto
            };
            ConfChange { ops, transition }
        })
    }

    fn arb_forwarded() -> impl Strategy<Value = Forwarded> {
        prop_oneof![
            proptest::collection::vec(arb_bytes(), 0..4).prop_map(Forwarded::Proposals),
            arb_conf_change().prop_map(Forwarded::ConfChange),
            (1..u64::MAX).prop_map(Forwarded::Transfer),
        ]
    }

    /// Every error a refusal may carry.
    fn arb_refusal() -> impl Strategy<Value = Error> {
        let reason = "[a-z ]{0,12}";
        prop_oneof![
            proptest::option::of(1..u64::MAX)
                .prop_map(|leader_hint| Error::NotLeader { leader_hint }),
            Just(Error::NoLeader),
            (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(u, p, limit)| {
                Error::UncommittedLimit { uncommitted_bytes: u, proposal_bytes: p, limit }
            }),
            (any::<u64>(), any::<u64>())
                .prop_map(|(bytes, limit)| Error::ProposalTooLarge { bytes, limit }),
            any::<u64>().prop_map(|target| Error::TransferInProgress { target }),
            (any::<u64>(), reason)
                .prop_map(|(target, reason)| Error::InvalidTransfer { target, reason }),
            any::<u64>().prop_map(|pending_index| Error::ConfChangeInProgress { pending_index }),
            reason.prop_map(|reason| Error::ConfChangeRefused { reason }),
        ]
    }

    proptest! {
        /// Every core message survives encode → bytes → decode unchanged.
        #[test]
        fn message_round_trips(from in 1..u64::MAX, to in 1..u64::MAX, term in any::<u64>(), body in arb_body()) {
            let m = Message { from, to, term, body };
            let wire = message_to_wire(m.clone()).unwrap();
            let bytes = encode_to_vec(&wire);
            prop_assert_eq!(bytes.len(), wire.encoded_len());
            let back = message_from_wire(decode("RaftMessage", &bytes).unwrap()).unwrap();
            prop_assert_eq!(back, m);
        }

        /// The batch size estimate is exact, so batches never overshoot the frame limit.
        #[test]
        fn batch_frame_len_is_exact(bodies in proptest::collection::vec(arb_body(), 0..8)) {
            let messages: Vec<_> = bodies
                .into_iter()
                .map(|body| message_to_wire(Message { from: 1, to: 2, term: 3, body }).unwrap())
                .collect();
            let frame = proto::MessageFrame {
                frame: Some(proto::message_frame::Frame::Batch(proto::MessageBatch { messages: messages.clone() })),
            };
            prop_assert_eq!(batch_frame_len(&messages), frame.encoded_len());
        }

        /// Arbitrary bytes never panic the decoder.
        #[test]
        fn arbitrary_bytes_do_not_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(m) = decode::<proto::RaftMessage>("RaftMessage", &bytes) {
                let _ = message_from_wire(m);
            }
        }
    }

    /// Every error `arb_refusal` generates is one a refusal may carry, and the others have no
    /// wire form (the core never sends them).
    #[test]
    fn only_refusal_errors_are_encoded() {
        let refused = |error| Message {
            from: 1,
            to: 2,
            term: 1,
            body: MessageBody::Refused { request: Forwarded::Transfer(3), error },
        };
        assert!(Error::NotLeader { leader_hint: None }.is_refusal());
        let not_a_refusal = Error::UnknownReady { number: 1 };
        assert!(!not_a_refusal.is_refusal());
        assert_eq!(
            message_to_wire(refused(not_a_refusal)),
            Err(WireError::Missing("Refusal.error"))
        );
    }

    #[test]
    fn malformed_forwarded_requests_are_errors() {
        let body = |body| proto::RaftMessage { from: 1, to: 2, term: 0, body: Some(body) };
        let zero_op = proto::ConfChange {
            ops: vec![proto::ConfChangeOp { op: Some(proto::conf_change_op::Op::Remove(0)) }],
            transition: 0,
        };
        let cases = [
            (
                body(Body::ProposeConfChange(proto::ProposeConfChange { change: None })),
                WireError::Missing("ProposeConfChange.change"),
            ),
            (
                body(Body::ProposeConfChange(proto::ProposeConfChange { change: Some(zero_op) })),
                WireError::ZeroNodeId("ConfChangeOp.remove"),
            ),
            (
                body(Body::ProposeConfChange(proto::ProposeConfChange {
                    change: Some(proto::ConfChange {
                        ops: vec![proto::ConfChangeOp { op: None }],
                        transition: 0,
                    }),
                })),
                WireError::Missing("ConfChangeOp.op"),
            ),
            (
                body(Body::ProposeConfChange(proto::ProposeConfChange {
                    change: Some(proto::ConfChange { ops: vec![], transition: 9 }),
                })),
                WireError::UnknownEnum { field: "ConfChange.transition", value: 9 },
            ),
            (
                body(Body::TransferLeader(proto::TransferLeader { to: 0 })),
                WireError::ZeroNodeId("TransferLeader.to"),
            ),
            (
                body(Body::Refused(proto::Refused {
                    request: None,
                    error: Some(proto::Refusal::default()),
                })),
                WireError::Missing("Refused.request"),
            ),
            (
                body(Body::Refused(proto::Refused {
                    request: Some(proto::refused::Request::Transfer(3)),
                    error: Some(proto::Refusal { error: None }),
                })),
                WireError::Missing("Refusal.error"),
            ),
            (
                body(Body::Refused(proto::Refused {
                    request: Some(proto::refused::Request::Transfer(0)),
                    error: None,
                })),
                WireError::ZeroNodeId("Refused.transfer"),
            ),
        ];
        for (wire, expected) in cases {
            assert_eq!(message_from_wire(wire), Err(expected));
        }
    }

    #[test]
    fn snapshot_is_refused_on_the_message_stream() {
        let m = Message {
            from: 1,
            to: 2,
            term: 1,
            body: MessageBody::InstallSnapshot { snapshot: Default::default() },
        };
        assert_eq!(message_to_wire(m), Err(WireError::SnapshotOnMessageStream));
    }

    #[test]
    fn malformed_messages_are_errors() {
        let ok =
            message_to_wire(Message { from: 1, to: 2, term: 1, body: MessageBody::TimeoutNow })
                .unwrap();
        assert_eq!(
            message_from_wire(proto::RaftMessage { body: None, ..ok.clone() }),
            Err(WireError::Missing("RaftMessage.body"))
        );
        assert_eq!(
            message_from_wire(proto::RaftMessage { from: 0, ..ok.clone() }),
            Err(WireError::ZeroNodeId("RaftMessage.from"))
        );
        let bad_entry = proto::RaftMessage {
            body: Some(Body::Append(proto::Append {
                entries: vec![proto::Entry { kind: 7, ..Default::default() }],
                ..Default::default()
            })),
            ..ok
        };
        assert_eq!(
            message_from_wire(bad_entry),
            Err(WireError::UnknownEnum { field: "Entry.kind", value: 7 })
        );
        assert!(matches!(
            decode::<proto::RaftMessage>("RaftMessage", &[0xff, 0xff, 0xff]),
            Err(WireError::Decode { what: "RaftMessage", .. })
        ));
        assert_eq!(
            meta_from_wire(proto::SnapshotMeta { conf_state: None, ..Default::default() }),
            Err(WireError::Missing("SnapshotMeta.conf_state"))
        );
    }

    #[test]
    fn meta_round_trips() {
        let meta = SnapshotMeta {
            index: 9,
            term: 4,
            conf_state: ConfState {
                voters: vec![1, 2, 3],
                learners: vec![4],
                voters_outgoing: vec![1, 2],
                learners_next: vec![5],
                auto_leave: true,
                index: 7,
            },
        };
        assert_eq!(meta_from_wire(meta_to_wire(&meta)), Ok(meta));
    }
}
