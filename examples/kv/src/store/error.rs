//! The store's error type.

/// Everything that can go wrong in the store.
///
/// Request errors (`Compacted` … `Malformed`) are deterministic: every replica applying the same
/// command hits the same one, so [`super::Store::apply`] answers them inside the encoded
/// [`super::CommandResponse::Error`]. Their messages are etcd's, because etcd clients show them
/// verbatim. The others are fatal for the store ([`StoreError::is_fatal`]) or, for
/// `CorruptSnapshot`, refuse a snapshot without touching the state.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// A read or a compaction names a revision that compaction already discarded.
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    /// A read or a compaction names a revision the store has not reached yet.
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRevision,
    /// A txn writes the same key twice in one branch (etcd's `checkIntervals`).
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    /// A txn level has more than [`super::MAX_TXN_OPS`] compares or operations.
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    /// A request or a compare has an empty key.
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    /// A put with `ignore_value` or `ignore_lease` names a key that does not exist.
    #[error("etcdserver: key not found")]
    KeyNotFound,
    /// A put has both `ignore_value` and a value.
    #[error("etcdserver: value is provided")]
    ValueProvided,
    /// A put has both `ignore_lease` and a lease.
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    /// A put names a lease; this store has no leases, so every lease is unknown.
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    /// Bytes that do not decode as the expected message.
    #[error("malformed {0}")]
    Malformed(String),
    /// A snapshot that fails its checksum or does not decode; the state was not touched.
    #[error("corrupt snapshot: {0}")]
    CorruptSnapshot(String),
    /// sled failed (fatal).
    #[error("store I/O error: {0}")]
    Io(String),
    /// The sled contents break the store's layout (fatal).
    #[error("store state corrupt: {0}")]
    Corrupt(String),
    /// `apply` was called with a raft index at or below the last applied one (fatal).
    #[error("apply out of order: raft index {index} after applied index {applied}")]
    ApplyOrder {
        /// The raft index passed to `apply`.
        index: u64,
        /// The last applied raft index.
        applied: u64,
    },
}

impl StoreError {
    /// Whether the store can no longer be trusted after this error (I/O, corruption, misuse).
    ///
    /// Non-fatal errors leave the state exactly as it was before the call.
    pub fn is_fatal(&self) -> bool {
        matches!(self, StoreError::Io(_) | StoreError::Corrupt(_) | StoreError::ApplyOrder { .. })
    }

    pub(super) fn sled(what: &'static str) -> impl FnOnce(sled::Error) -> StoreError {
        move |e| StoreError::Io(format!("sled {what}: {e}"))
    }
}
