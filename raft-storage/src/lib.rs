//! Durable, checksummed Raft log and snapshot storage: a sled catalogue plus append-only segment
//! files, implementing [`raft_core::Storage`] and [`raft_core::LogStore`].
//!
//! # Layout
//!
//! ```text
//! <dir>/catalogue/      sled: identity (cluster, node), bootstrap phase, membership (ConfState),
//!                       snapshot metadata, first live segment, sealed segments and their exact
//!                       lengths, clean-close marker, generation counter. Every value carries a
//!                       crc32c bound to its key.
//! <dir>/wal/            00000000000000000001.seg, ...: append-only segment files of checksummed
//!                       records: entries, hard states, sync markers, catalogue generations.
//!                       The active one is preallocated to `segment_size_bytes` (zeros after
//!                       its records); sealed ones are cut to exactly their records.
//! <dir>/sync-watermark  two checksummed 512-byte slots, written alternately: how much of which
//!                       segment the last completed `sync` made durable.
//! <dir>/snapshots/      snap-<index>-<term>-<generation>.snap: chunked, checksummed snapshot data.
//! ```
//!
//! Reads are served from the segment files (`pread`) through an in-memory index of about 16
//! bytes per live entry; terms are kept as runs, so `term()` never touches the disk.
//!
//! # Durability
//!
//! Every acknowledged write lives in a file this crate fsyncs itself:
//! - Entries and hard states are appended to the active segment;
//!   [`LogStore::sync`](raft_core::LogStore::sync) calls `fdatasync` on it. Concurrent callers
//!   share one `fdatasync` (group commit): one becomes the leader and syncs everything written so
//!   far, the others wait for a sync that covers them. Once that fdatasync has returned, the
//!   leader writes the length it covered into the sync watermark file and fdatasyncs that too
//!   before anyone is acknowledged: two fdatasyncs per group-commit round, whatever its size.
//!   The active segment is preallocated (`fallocate`) when it is created or reopened, so appends
//!   overwrite allocated blocks and its fdatasync has no file size or extent change to make
//!   durable (cheaper on ext4); where the file system cannot preallocate, it grows as it is
//!   written. Its file length is therefore not the end of its records: recovery finds that end
//!   where only zeros follow, at or past the sync watermark.
//! - Catalogue changes (membership, snapshots, sealing a segment) are committed as one sled batch,
//!   then `flush()`, then `fsync` of every sled file and directory: sled 0.34's flush only calls
//!   `sync_file_range`, which does not make data durable against power loss (sled issue 1452).
//!   Catalogue changes are durable when the call returns, before any `sync`.
//! - A segment is sealed by cutting off its preallocated space (`set_len`) and `fdatasync`, before
//!   the catalogue records its length (`close` cuts the active segment the same way); new files
//!   (segments, the watermark file) and directories (sled's included) are fsynced together with
//!   the directory holding them before use.
//! - Snapshot files are written under a temporary name, fsynced, renamed, and the directory
//!   fsynced before the catalogue points at them.
//!
//! # Corruption and torn writes
//!
//! Every record, catalogue value and snapshot chunk has a crc32c (record checksums are salted per
//! segment). At open every byte of every segment and of the snapshot file is checked before
//! anything is repaired or removed; sealed segments must have exactly the length the catalogue
//! recorded, and a catalogue that lost durable changes is caught by comparing its generation with
//! the generations the log recorded. Every acknowledged byte of the last segment lies before the
//! *sync watermark*, so any damage there, a truncation or zeroed records included, refuses the
//! open. Past it, only zeros to the end of the file are the end of the records, and a
//! bad record that looks torn (the file ends inside it, or one of its sectors is all zeros) was
//! never acknowledged and is trimmed with a `tracing` warning, unless a later *sync marker* (a
//! record saying how much of the file an earlier fdatasync covered) proves it durable. Anything
//! else is [`StorageError::Corrupt`], naming the file, offset and entry, and the store refuses to
//! open. After [`SledStorage::close`] even the tail must be exact. See `scan.rs` for the precise
//! rules.
//!
//! # Example
//!
//! ```
//! use raft_core::{Entry, EntryKind, LogStore, Storage};
//! use raft_storage::{SledStorage, StorageOptions};
//!
//! let dir = tempfile::tempdir()?;
//! let store = SledStorage::open(dir.path(), StorageOptions::new(7, 1))?;
//! let e = Entry { index: 1, term: 1, kind: EntryKind::Normal, data: "x".into() };
//! store.append_entries(&[e.clone()])?;
//! store.sync()?; // durable from here on
//! store.close()?;
//! drop(store); // the directory is released when the last clone is dropped
//!
//! let store = SledStorage::open(dir.path(), StorageOptions::new(7, 1))?;
//! assert_eq!(store.entries(1, 2, u64::MAX)?, vec![e]);
//! // Another node's options are refused.
//! drop(store);
//! assert!(SledStorage::open(dir.path(), StorageOptions::new(7, 2)).is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

mod catalogue;
mod codec;
mod index;
mod open;
mod recovery;
mod scan;
mod snapfile;
mod stats;
mod store;
mod watermark;
mod write;

#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;

use raft_core::{ConfState, NodeId, StorageError};

pub use open::RecoveryReport;
pub use stats::StoreStats;
pub use store::SledStorage;

/// How to open a store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageOptions {
    /// The cluster this store belongs to; a store stamped with another is refused.
    pub cluster_id: u64,
    /// This node's id (non-zero); a store stamped with another is refused.
    pub node_id: NodeId,
    /// Size of sled's page cache in bytes.
    pub cache_capacity_bytes: u64,
    /// A segment file is sealed and a new one started once it reaches this size.
    pub segment_size_bytes: u64,
    /// Membership written when a new store is bootstrapped (ignored for an existing store).
    pub initial_conf_state: ConfState,
}

impl StorageOptions {
    /// Defaults for `cluster_id`/`node_id`: 64 MiB segments, 16 MiB sled cache, no voters.
    pub fn new(cluster_id: u64, node_id: NodeId) -> StorageOptions {
        StorageOptions {
            cluster_id,
            node_id,
            cache_capacity_bytes: 16 << 20,
            segment_size_bytes: 64 << 20,
            initial_conf_state: ConfState::default(),
        }
    }

    /// Checks the options; names the field and the rule broken.
    pub fn validate(&self) -> Result<(), OpenError> {
        let bad = |field: &'static str, rule: &str| {
            Err(OpenError::InvalidOptions { field, rule: rule.into() })
        };
        if self.node_id == 0 {
            return bad("node_id", "must be non-zero (0 means none)");
        }
        if !(4 << 10..=1 << 30).contains(&self.segment_size_bytes) {
            return bad("segment_size_bytes", "must be between 4 KiB and 1 GiB");
        }
        if self.cache_capacity_bytes < 64 << 10 {
            return bad("cache_capacity_bytes", "must be at least 64 KiB");
        }
        Ok(())
    }
}

/// Why a store could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// The store was created for another cluster or node.
    #[error(
        "store at {path} belongs to cluster {found_cluster_id} node {found_node_id}, \
         not cluster {cluster_id} node {node_id}; refusing to open it"
    )]
    IdentityMismatch {
        /// The store's directory.
        path: String,
        /// Cluster the store was created for.
        found_cluster_id: u64,
        /// Node the store was created for.
        found_node_id: NodeId,
        /// Cluster asked for.
        cluster_id: u64,
        /// Node asked for.
        node_id: NodeId,
    },
    /// The options break a rule.
    #[error("invalid storage options: {field}: {rule}")]
    InvalidOptions {
        /// The field at fault.
        field: &'static str,
        /// The rule it breaks.
        rule: String,
    },
    /// The data failed validation or could not be read; the node must not start on it.
    #[error(transparent)]
    Storage(#[from] StorageError),
}
