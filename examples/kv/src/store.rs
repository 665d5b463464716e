//! The replicated state of raft-kv: a deterministic MVCC key-value store with etcd 3.4
//! semantics, kept in sled.
//!
//! # Semantics
//!
//! * The revision of an empty store is 1; every write request (a put, a delete that deletes
//!   something, a txn with at least one such write) moves it up by one, and all writes of one
//!   txn share it. So the first put gets revision 2, as in etcd.
//! * A put sets `mod_revision` to the new revision and increments `version`; creating (or
//!   re-creating after a delete) sets `create_revision` to the new revision and `version` to 1.
//! * Reads at an older `revision` see the history; below the compacted revision they fail with
//!   [`StoreError::Compacted`], above the current one with [`StoreError::FutureRevision`].
//! * Txn compares all run on the state before the txn (nested txns included), as etcd's
//!   `compareToPath`; reads inside a txn see the txn's earlier writes.
//! * Request validation is etcd's (`v3rpc/key.go`): empty keys, [`MAX_TXN_OPS`], duplicate keys
//!   in a txn branch, `ignore_value`/`ignore_lease` rules. There are no leases: a nonzero lease
//!   fails with [`StoreError::LeaseNotFound`].
//!
//! # Use from the Raft state machine
//!
//! [`Store::apply`] takes an encoded [`Command`] from a committed log entry and returns an
//! encoded [`CommandResponse`]; deterministic request errors come back as
//! [`CommandResponse::Error`], and `apply` itself fails only on fatal errors
//! ([`StoreError::is_fatal`]). [`Store::query`] does the same for an encoded [`RangeRequest`]
//! (answering [`CommandResponse::Range`] or [`CommandResponse::Error`]). A command's writes are
//! plain sled inserts (one per key, see `write.rs`), and `&mut self` keeps readers out while it
//! is applied, so no read sees half a txn. As in etcd, the history lives
//! on disk (sled) and the key index in memory. Nothing is fsynced: the Raft log is the durable copy, and the runtime rebuilds the
//! store from a snapshot ([`Store::snapshot`], [`Store::restore`]) plus log replay, which is
//! why [`Store::open`] clears whatever the path held.
//!
//! The wire formats are length-prefixed binary (`codec.rs`, `snapshot.rs`); the sled layout is
//! described in `layout.rs`.

mod check;
mod codec;
mod compact;
mod error;
mod layout;
mod read;
mod snapshot;
#[cfg(test)]
mod tests;
mod types;
mod write;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

pub use check::MAX_TXN_OPS;
pub use error::StoreError;
pub use types::{
    Command, CommandResponse, CompactionRequest, CompactionResponse, Compare, CompareResult,
    CompareTarget, DeleteRangeRequest, DeleteRangeResponse, KeyValue, PutRequest, PutResponse,
    RangeRequest, RangeResponse, RequestOp, ResponseOp, SortOrder, SortTarget, TxnRequest,
    TxnResponse,
};

/// The MVCC key-value store (see the module docs).
pub struct Store {
    /// The history (see `layout.rs`).
    db: sled::Db,
    /// Every key with history, by key: its latest record (see `layout.rs`).
    index: BTreeMap<Vec<u8>, layout::IndexEntry>,
    // Invariant: 1 <= revision; -1 <= compacted_revision <= revision.
    /// The revision of the last write (1 for an empty store).
    revision: i64,
    /// The last compaction revision; -1 before the first compaction, as etcd.
    compacted_revision: i64,
    /// The raft index of the last applied command (0 before any).
    applied_index: u64,
    /// How many keys are live at `revision`.
    live_keys: u64,
    /// Held by a snapshot being built from `db` off the apply thread; compaction leaves the
    /// history alone meanwhile.
    snapshot_gate: Arc<snapshot::Gate>,
    /// A compaction whose history removal waits for snapshot builders to finish.
    pending_compaction: Option<i64>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("revision", &self.revision)
            .field("compacted_revision", &self.compacted_revision)
            .field("applied_index", &self.applied_index)
            .field("live_keys", &self.live_keys)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens a store at `path`, or in a temporary directory removed on drop when `None`.
    ///
    /// Whatever `path` held is cleared: the runtime always restores from snapshot + log.
    pub fn open(path: Option<&Path>) -> Result<Store, StoreError> {
        let config = match path {
            Some(path) => sled::Config::new().path(path),
            None => sled::Config::new().temporary(true),
        };
        let db = config
            .mode(sled::Mode::HighThroughput)
            // No durability needed (see the module docs); sled writes out as its buffers fill.
            .flush_every_ms(None)
            .open()
            .map_err(StoreError::sled("open"))?;
        let default_tree = db.name();
        for name in db.tree_names() {
            if name != default_tree {
                db.drop_tree(&name).map_err(StoreError::sled("drop tree"))?;
            }
        }
        db.clear().map_err(StoreError::sled("clear"))?;
        Ok(Store {
            db,
            index: BTreeMap::new(),
            revision: 1,
            compacted_revision: -1,
            applied_index: 0,
            live_keys: 0,
            snapshot_gate: Arc::default(),
            pending_compaction: None,
        })
    }

    /// Applies the encoded [`Command`] of the log entry at `raft_index` and returns the encoded
    /// [`CommandResponse`].
    ///
    /// Garbage and request errors are answered with [`CommandResponse::Error`] (every replica
    /// answers the same); `Err` is returned only for fatal errors, including a `raft_index` not
    /// above [`Store::applied_index`].
    pub fn apply(&mut self, raft_index: u64, command: &[u8]) -> Result<Bytes, StoreError> {
        if raft_index <= self.applied_index {
            return Err(StoreError::ApplyOrder { index: raft_index, applied: self.applied_index });
        }
        self.remove_compacted_history()?;
        let resp = Command::decode(command).and_then(|cmd| self.execute(&cmd));
        let resp = match resp {
            Ok(resp) => resp,
            Err(e) if e.is_fatal() => return Err(e),
            Err(e) => CommandResponse::Error(e),
        };
        self.applied_index = raft_index;
        Ok(resp.encode())
    }

    fn execute(&mut self, command: &Command) -> Result<CommandResponse, StoreError> {
        Ok(match command {
            Command::Put(r) => CommandResponse::Put(self.put(r)?),
            Command::DeleteRange(r) => CommandResponse::DeleteRange(self.delete_range(r)?),
            Command::Txn(r) => CommandResponse::Txn(self.txn(r)?),
            Command::Compact(r) => CommandResponse::Compact(self.compact(r)?),
        })
    }

    /// Answers an encoded [`RangeRequest`] with an encoded [`CommandResponse::Range`], or
    /// [`CommandResponse::Error`] for garbage and request errors; `Err` only if fatal.
    pub fn query(&self, query: &[u8]) -> Result<Bytes, StoreError> {
        let resp = match RangeRequest::decode(query).and_then(|req| self.range(&req)) {
            Ok(resp) => CommandResponse::Range(resp),
            Err(e) if e.is_fatal() => return Err(e),
            Err(e) => CommandResponse::Error(e),
        };
        Ok(resp.encode())
    }

    /// The whole state (history above the compaction point, revisions, applied index), with a
    /// crc32c checksum. Stores with the same history produce the same bytes (once the records of
    /// a compaction held back by a snapshot builder are removed, see [`Store::compact`]).
    pub fn snapshot(&self) -> Result<Bytes, StoreError> {
        self.snapshot_builder()()
    }

    /// [`Store::snapshot`] as of now, to be run on another thread while commands go on being
    /// applied: the history is MVCC (applying only adds records above the current revision), so
    /// the builder reads the live tree and skips records above the revision it was made at.
    /// Compaction, which removes records, leaves them until the builder is done or dropped (see
    /// [`Store::compact`]). The result is meaningless if [`Store::restore`] runs meanwhile (the
    /// runtime discards it then).
    pub fn snapshot_builder(&self) -> impl FnOnce() -> Result<Bytes, StoreError> + Send + 'static {
        let pass = self.snapshot_gate.enter();
        let (db, revision) = (self.db.clone(), self.revision);
        let (compacted, applied) = (self.compacted_revision, self.applied_index);
        move || {
            let _pass = pass;
            snapshot::encode(&db, revision, compacted, applied)
        }
    }

    /// Replaces the whole state with a [`Store::snapshot`].
    ///
    /// A snapshot that fails its checksum or its checks is refused with
    /// [`StoreError::CorruptSnapshot`] before anything changes.
    pub fn restore(&mut self, data: &[u8]) -> Result<(), StoreError> {
        self.install_snapshot(data)?;
        tracing::info!(
            revision = self.revision,
            compacted_revision = self.compacted_revision,
            applied_index = self.applied_index,
            keys = self.live_keys,
            "restored snapshot"
        );
        Ok(())
    }

    /// The current revision (1 for an empty store).
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The last compaction revision; -1 before the first compaction (as etcd).
    pub fn compacted_revision(&self) -> i64 {
        self.compacted_revision
    }

    /// The raft index of the last applied command (0 before any; restored by snapshots).
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// The number of live keys.
    pub fn len(&self) -> usize {
        usize::try_from(self.live_keys).unwrap_or(usize::MAX)
    }

    /// Whether no key is live.
    pub fn is_empty(&self) -> bool {
        self.live_keys == 0
    }

    /// The size of the sled files, for etcd's `Status.dbSize` (0 if sled cannot tell). It grows
    /// as sled writes out its buffers (nothing is flushed per command) and leaves out the
    /// in-memory key index.
    pub fn db_size_bytes(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }

    /// Reads keys (etcd's `Range`).
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse, StoreError> {
        check::check_range(req)?;
        self.range_view(req, self.revision, None)
    }

    /// Writes one key (etcd's `Put`).
    pub fn put(&mut self, req: &PutRequest) -> Result<PutResponse, StoreError> {
        check::check_put(req)?;
        if req.lease != 0 {
            return Err(StoreError::LeaseNotFound);
        }
        let mut txn = write::WriteTxn::new(self);
        let resp = txn.put(req)?;
        let changes = txn.finish();
        self.commit(changes)?;
        Ok(resp)
    }

    /// Deletes keys (etcd's `DeleteRange`); the revision moves only if something was deleted.
    pub fn delete_range(
        &mut self,
        req: &DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, StoreError> {
        check::check_delete(req)?;
        let mut txn = write::WriteTxn::new(self);
        let resp = txn.delete_range(req)?;
        let changes = txn.finish();
        self.commit(changes)?;
        Ok(resp)
    }

    /// Runs a txn (etcd's `Txn`): all-or-nothing, all writes at one revision.
    pub fn txn(&mut self, req: &TxnRequest) -> Result<TxnResponse, StoreError> {
        check::check_txn(req)?;
        self.run_txn(req)
    }

    /// Discards history below `req.revision` (etcd's `Compact`), keeping each key's value at
    /// that revision. The revision does not move.
    ///
    /// Reads below the new compacted revision fail at once. The records themselves go now, or,
    /// while a snapshot builder is reading them ([`Store::snapshot_builder`]), with the first
    /// command applied after it is done: applying never waits for a snapshot. Until then they
    /// are unreachable (and a snapshot taken meanwhile carries them; its reads are the same).
    pub fn compact(&mut self, req: &CompactionRequest) -> Result<CompactionResponse, StoreError> {
        if req.revision <= self.compacted_revision {
            return Err(StoreError::Compacted);
        }
        if req.revision > self.revision {
            return Err(StoreError::FutureRevision);
        }
        self.compacted_revision = req.revision;
        self.pending_compaction = Some(req.revision);
        self.remove_compacted_history()?;
        Ok(CompactionResponse { revision: self.revision })
    }

    /// Removes the history the last compaction made unreachable, unless a snapshot builder is
    /// reading it (builders are made on the apply thread, which is this one: none can start
    /// between the check and the removal).
    fn remove_compacted_history(&mut self) -> Result<(), StoreError> {
        let Some(revision) = self.pending_compaction else { return Ok(()) };
        if !self.snapshot_gate.is_idle() {
            return Ok(());
        }
        let (batch, gone, removed) = self.compaction_batch(revision)?;
        self.db.apply_batch(batch).map_err(StoreError::sled("compaction batch"))?;
        for key in gone {
            self.index.remove(&key);
        }
        self.pending_compaction = None;
        tracing::debug!(revision, removed, "compacted");
        Ok(())
    }
}
