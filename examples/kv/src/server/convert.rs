//! Conversions between etcd's protobuf messages and the store's types, and error mapping to
//! gRPC statuses with etcd's messages (clients match on them).

use raft_core::runtime::NodeError;
use tonic::{Code, Status};

use crate::pb::etcdserverpb as pb;
use crate::pb::mvccpb;
use crate::store::{self, StoreError};

pub(crate) fn range_request(r: pb::RangeRequest) -> store::RangeRequest {
    use pb::range_request::{SortOrder as O, SortTarget as T};
    store::RangeRequest {
        sort_order: match O::try_from(r.sort_order).unwrap_or(O::None) {
            O::None => store::SortOrder::None,
            O::Ascend => store::SortOrder::Ascend,
            O::Descend => store::SortOrder::Descend,
        },
        sort_target: match T::try_from(r.sort_target).unwrap_or(T::Key) {
            T::Key => store::SortTarget::Key,
            T::Version => store::SortTarget::Version,
            T::Create => store::SortTarget::Create,
            T::Mod => store::SortTarget::Mod,
            T::Value => store::SortTarget::Value,
        },
        key: r.key,
        range_end: r.range_end,
        limit: r.limit,
        revision: r.revision,
        keys_only: r.keys_only,
        count_only: r.count_only,
        min_mod_revision: r.min_mod_revision,
        max_mod_revision: r.max_mod_revision,
        min_create_revision: r.min_create_revision,
        max_create_revision: r.max_create_revision,
    }
}

pub(crate) fn put_request(r: pb::PutRequest) -> store::PutRequest {
    store::PutRequest {
        key: r.key,
        value: r.value,
        lease: r.lease,
        prev_kv: r.prev_kv,
        ignore_value: r.ignore_value,
        ignore_lease: r.ignore_lease,
    }
}

pub(crate) fn delete_request(r: pb::DeleteRangeRequest) -> store::DeleteRangeRequest {
    store::DeleteRangeRequest { key: r.key, range_end: r.range_end, prev_kv: r.prev_kv }
}

fn compare(c: pb::Compare) -> Result<store::Compare, Status> {
    use pb::compare::{CompareResult as R, CompareTarget as T, TargetUnion as U};
    let result = match R::try_from(c.result) {
        Ok(R::Equal) => store::CompareResult::Equal,
        Ok(R::Greater) => store::CompareResult::Greater,
        Ok(R::Less) => store::CompareResult::Less,
        Ok(R::NotEqual) => store::CompareResult::NotEqual,
        Err(_) => return Err(Status::invalid_argument("etcdserver: unknown compare result")),
    };
    let target = match (T::try_from(c.target), c.target_union) {
        (Ok(T::Version), Some(U::Version(v))) => store::CompareTarget::Version(v),
        (Ok(T::Create), Some(U::CreateRevision(v))) => store::CompareTarget::CreateRevision(v),
        (Ok(T::Mod), Some(U::ModRevision(v))) => store::CompareTarget::ModRevision(v),
        (Ok(T::Value), Some(U::Value(v))) => store::CompareTarget::Value(v),
        (Ok(T::Lease), Some(U::Lease(v))) => store::CompareTarget::Lease(v),
        // proto3 drops zero values: a target without its operand compares against zero.
        (Ok(T::Version), None) => store::CompareTarget::Version(0),
        (Ok(T::Create), None) => store::CompareTarget::CreateRevision(0),
        (Ok(T::Mod), None) => store::CompareTarget::ModRevision(0),
        (Ok(T::Value), None) => store::CompareTarget::Value(Vec::new()),
        (Ok(T::Lease), None) => store::CompareTarget::Lease(0),
        _ => return Err(Status::invalid_argument("etcdserver: compare target mismatch")),
    };
    Ok(store::Compare { key: c.key, range_end: c.range_end, target, result })
}

fn request_op(op: pb::RequestOp) -> Result<store::RequestOp, Status> {
    use pb::request_op::Request as R;
    Ok(match op.request {
        Some(R::RequestRange(r)) => store::RequestOp::Range(range_request(r)),
        Some(R::RequestPut(r)) => store::RequestOp::Put(put_request(r)),
        Some(R::RequestDeleteRange(r)) => store::RequestOp::DeleteRange(delete_request(r)),
        Some(R::RequestTxn(t)) => store::RequestOp::Txn(txn_request(t)?),
        None => return Err(Status::invalid_argument("etcdserver: empty request op in txn")),
    })
}

pub(crate) fn txn_request(t: pb::TxnRequest) -> Result<store::TxnRequest, Status> {
    Ok(store::TxnRequest {
        compare: t.compare.into_iter().map(compare).collect::<Result<_, _>>()?,
        success: t.success.into_iter().map(request_op).collect::<Result<_, _>>()?,
        failure: t.failure.into_iter().map(request_op).collect::<Result<_, _>>()?,
    })
}

pub(crate) fn kv(k: store::KeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: k.key,
        create_revision: k.create_revision,
        mod_revision: k.mod_revision,
        version: k.version,
        value: k.value,
        lease: k.lease,
    }
}

/// Builds response headers: the cluster and member ids and the current Raft term.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Header {
    pub(crate) cluster_id: u64,
    pub(crate) member_id: u64,
    pub(crate) raft_term: u64,
}

impl Header {
    pub(crate) fn at(&self, revision: i64) -> Option<pb::ResponseHeader> {
        Some(pb::ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            revision,
            raft_term: self.raft_term,
        })
    }
}

pub(crate) fn range_response(h: &Header, r: store::RangeResponse) -> pb::RangeResponse {
    pb::RangeResponse {
        header: h.at(r.revision),
        kvs: r.kvs.into_iter().map(kv).collect(),
        more: r.more,
        count: r.count,
    }
}

pub(crate) fn put_response(h: &Header, r: store::PutResponse) -> pb::PutResponse {
    pb::PutResponse { header: h.at(r.revision), prev_kv: r.prev_kv.map(kv) }
}

pub(crate) fn delete_response(
    h: &Header,
    r: store::DeleteRangeResponse,
) -> pb::DeleteRangeResponse {
    pb::DeleteRangeResponse {
        header: h.at(r.revision),
        deleted: r.deleted,
        prev_kvs: r.prev_kvs.into_iter().map(kv).collect(),
    }
}

pub(crate) fn txn_response(h: &Header, r: store::TxnResponse) -> pb::TxnResponse {
    use pb::response_op::Response as R;
    let responses = r
        .responses
        .into_iter()
        .map(|op| pb::ResponseOp {
            response: Some(match op {
                store::ResponseOp::Range(r) => R::ResponseRange(range_response(h, r)),
                store::ResponseOp::Put(r) => R::ResponsePut(put_response(h, r)),
                store::ResponseOp::DeleteRange(r) => R::ResponseDeleteRange(delete_response(h, r)),
                store::ResponseOp::Txn(r) => R::ResponseTxn(txn_response(h, r)),
            }),
        })
        .collect();
    pb::TxnResponse { header: h.at(r.revision), succeeded: r.succeeded, responses }
}

/// A store error as etcd's gRPC status.
pub(crate) fn store_status(e: &StoreError) -> Status {
    let code = match e {
        StoreError::Compacted | StoreError::FutureRevision => Code::OutOfRange,
        StoreError::LeaseNotFound => Code::NotFound,
        StoreError::DuplicateKey
        | StoreError::TooManyOps
        | StoreError::EmptyKey
        | StoreError::KeyNotFound
        | StoreError::ValueProvided
        | StoreError::LeaseProvided
        | StoreError::Malformed(_) => Code::InvalidArgument,
        _ => Code::Internal,
    };
    Status::new(code, e.to_string())
}

/// A node error as etcd's gRPC status (clients retry `Unavailable` on another endpoint).
pub(crate) fn node_status(e: &NodeError) -> Status {
    match e {
        NodeError::NotLeader { .. } => Status::unavailable("etcdserver: no leader"),
        NodeError::Timeout => Status::unavailable("etcdserver: request timed out"),
        NodeError::Overtaken => Status::unavailable(
            "etcdserver: request timed out, possibly lost (a later request was applied first)",
        ),
        NodeError::TooBusy(why) => {
            Status::resource_exhausted(format!("etcdserver: too many requests ({why})"))
        }
        NodeError::ShuttingDown => Status::unavailable("etcdserver: server stopped"),
        NodeError::Raft(raft_core::Error::ProposalTooLarge { .. }) => {
            Status::invalid_argument("etcdserver: request is too large")
        }
        NodeError::Raft(raft_core::Error::TransferInProgress { .. }) => {
            Status::unavailable("etcdserver: leader changed")
        }
        NodeError::Raft(raft_core::Error::ConfChangeInProgress { .. }) => {
            Status::failed_precondition(format!("etcdserver: {e}"))
        }
        NodeError::Raft(raft_core::Error::ConfChangeRefused { reason })
            if reason.contains("caught up") || reason.contains("learner") =>
        {
            Status::failed_precondition(
                "etcdserver: can only promote a learner member which is in sync with leader",
            )
        }
        other => Status::unavailable(format!("etcdserver: {other}")),
    }
}
