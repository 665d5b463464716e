//! Requests and responses, shaped like etcd's `etcdserverpb` messages without protobuf.
//!
//! A response's `revision` is what etcd puts in `header.revision`.

use super::StoreError;

/// A key's state at one revision (etcd's `mvccpb.KeyValue`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: Vec<u8>,
    /// The value (empty in `keys_only` reads).
    pub value: Vec<u8>,
    /// The revision of the put that created the key (since its last delete).
    pub create_revision: i64,
    /// The revision of the last put.
    pub mod_revision: i64,
    /// The number of puts since the key was created; 1 after the creating put.
    pub version: i64,
    /// The lease; always 0 (this store has no leases).
    pub lease: i64,
}

/// How a range sorts its results (etcd's `RangeRequest.SortOrder`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SortOrder {
    /// Key order, unless `sort_target` is not `Key`, in which case ascending.
    #[default]
    None,
    /// Ascending by the target.
    Ascend,
    /// Descending by the target.
    Descend,
}

/// What a range sorts by (etcd's `RangeRequest.SortTarget`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SortTarget {
    /// The key.
    #[default]
    Key,
    /// The version.
    Version,
    /// The create revision.
    Create,
    /// The mod revision.
    Mod,
    /// The value.
    Value,
}

/// Reads keys (etcd's `RangeRequest`).
///
/// `range_end` empty names the single key `key`; `range_end == [0]` names every key `>= key`;
/// anything else names `[key, range_end)`. A prefix `p` is `range_end` = `p` with its last byte
/// incremented. Zero means "unset" for `limit`, `revision` and the four filters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeRequest {
    /// The first key.
    pub key: Vec<u8>,
    /// The end of the range (see the type docs).
    pub range_end: Vec<u8>,
    /// At most this many keys are returned when positive.
    pub limit: i64,
    /// Read at this revision when positive, else at the current one.
    pub revision: i64,
    /// The sort order.
    pub sort_order: SortOrder,
    /// The sort target.
    pub sort_target: SortTarget,
    /// Return keys and metadata without values.
    pub keys_only: bool,
    /// Return only `count`.
    pub count_only: bool,
    /// Drop keys whose mod revision is below this (when nonzero).
    pub min_mod_revision: i64,
    /// Drop keys whose mod revision is above this (when nonzero).
    pub max_mod_revision: i64,
    /// Drop keys whose create revision is below this (when nonzero).
    pub min_create_revision: i64,
    /// Drop keys whose create revision is above this (when nonzero).
    pub max_create_revision: i64,
}

/// The answer to a [`RangeRequest`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeResponse {
    /// The store's current revision (as etcd, also for reads at an older revision).
    pub revision: i64,
    /// The keys read, at most `limit`.
    pub kvs: Vec<KeyValue>,
    /// Whether `limit` cut the result.
    pub more: bool,
    /// How many keys the range holds at the read revision (before `limit` and the filters).
    pub count: i64,
}

/// Writes one key (etcd's `PutRequest`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutRequest {
    /// The key.
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
    /// A lease; must be 0 (any other value fails with `LeaseNotFound`).
    pub lease: i64,
    /// Return the previous key-value.
    pub prev_kv: bool,
    /// Keep the current value (the key must exist and `value` must be empty).
    pub ignore_value: bool,
    /// Keep the current lease (the key must exist and `lease` must be 0).
    pub ignore_lease: bool,
}

/// The answer to a [`PutRequest`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutResponse {
    /// The revision of the put.
    pub revision: i64,
    /// The previous key-value, if requested and the key existed.
    pub prev_kv: Option<KeyValue>,
}

/// Deletes keys (etcd's `DeleteRangeRequest`); `range_end` as in [`RangeRequest`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteRangeRequest {
    /// The first key.
    pub key: Vec<u8>,
    /// The end of the range.
    pub range_end: Vec<u8>,
    /// Return the deleted key-values.
    pub prev_kv: bool,
}

/// The answer to a [`DeleteRangeRequest`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteRangeResponse {
    /// The revision after the delete (unchanged when nothing was deleted).
    pub revision: i64,
    /// How many keys were deleted.
    pub deleted: i64,
    /// The deleted key-values, if requested.
    pub prev_kvs: Vec<KeyValue>,
}

/// What a [`Compare`] looks at, with the operand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompareTarget {
    /// The version (0 for a missing key).
    Version(i64),
    /// The create revision (0 for a missing key).
    CreateRevision(i64),
    /// The mod revision (0 for a missing key).
    ModRevision(i64),
    /// The value (a compare on a missing key is false whatever the result).
    Value(Vec<u8>),
    /// The lease (always 0 here).
    Lease(i64),
}

/// How a [`Compare`] relates the key's field to the operand: `field <result> operand`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompareResult {
    /// `==`
    Equal,
    /// `>`
    Greater,
    /// `<`
    Less,
    /// `!=`
    NotEqual,
}

/// A txn condition (etcd's `Compare`); on a range it must hold for every key in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compare {
    /// The first key.
    pub key: Vec<u8>,
    /// The end of the range, as in [`RangeRequest`].
    pub range_end: Vec<u8>,
    /// The field and the operand.
    pub target: CompareTarget,
    /// The relation.
    pub result: CompareResult,
}

/// One operation of a txn branch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestOp {
    /// A read.
    Range(RangeRequest),
    /// A put.
    Put(PutRequest),
    /// A delete.
    DeleteRange(DeleteRangeRequest),
    /// A nested txn.
    Txn(TxnRequest),
}

/// An atomic compare-and-act (etcd's `TxnRequest`); all its writes share one revision.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnRequest {
    /// Conditions, all evaluated before any operation runs.
    pub compare: Vec<Compare>,
    /// Run in order when every compare holds.
    pub success: Vec<RequestOp>,
    /// Run in order otherwise.
    pub failure: Vec<RequestOp>,
}

/// The answer to one [`RequestOp`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResponseOp {
    /// The answer to a read.
    Range(RangeResponse),
    /// The answer to a put.
    Put(PutResponse),
    /// The answer to a delete.
    DeleteRange(DeleteRangeResponse),
    /// The answer to a nested txn.
    Txn(TxnResponse),
}

/// The answer to a [`TxnRequest`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnResponse {
    /// The revision after the txn; 0 in a nested txn's response, as in etcd 3.4.
    pub revision: i64,
    /// Whether every compare held (the success branch ran).
    pub succeeded: bool,
    /// One answer per operation of the branch that ran.
    pub responses: Vec<ResponseOp>,
}

/// Discards history below a revision (etcd's `CompactionRequest`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactionRequest {
    /// The compaction point; reads below it fail with `Compacted` afterwards.
    pub revision: i64,
}

/// The answer to a [`CompactionRequest`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactionResponse {
    /// The current revision.
    pub revision: i64,
}

/// A state-machine command, as written to the Raft log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// A put.
    Put(PutRequest),
    /// A delete.
    DeleteRange(DeleteRangeRequest),
    /// A txn.
    Txn(TxnRequest),
    /// A compaction.
    Compact(CompactionRequest),
}

/// The answer to a [`Command`] (from `apply`) or to a range query (from `query`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommandResponse {
    /// The answer to a range query.
    Range(RangeResponse),
    /// The answer to a put.
    Put(PutResponse),
    /// The answer to a delete.
    DeleteRange(DeleteRangeResponse),
    /// The answer to a txn.
    Txn(TxnResponse),
    /// The answer to a compaction.
    Compact(CompactionResponse),
    /// A deterministic request error; the state did not change.
    Error(StoreError),
}
