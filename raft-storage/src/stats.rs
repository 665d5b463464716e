//! Counters of what the store did, for tests (group commit, durability) and benchmarks.

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters, shared by every clone of a store.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) sync_calls: AtomicU64,
    pub(crate) log_fsyncs: AtomicU64,
    pub(crate) watermark_fsyncs: AtomicU64,
    pub(crate) catalogue_commits: AtomicU64,
    pub(crate) catalogue_fsyncs: AtomicU64,
    pub(crate) snapshot_fsyncs: AtomicU64,
    pub(crate) appended_entries: AtomicU64,
    pub(crate) log_bytes_written: AtomicU64,
    pub(crate) segments_created: AtomicU64,
    pub(crate) segments_deleted: AtomicU64,
}

impl Counters {
    pub(crate) fn add(&self, c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> StoreStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StoreStats {
            sync_calls: g(&self.sync_calls),
            log_fsyncs: g(&self.log_fsyncs),
            watermark_fsyncs: g(&self.watermark_fsyncs),
            catalogue_commits: g(&self.catalogue_commits),
            catalogue_fsyncs: g(&self.catalogue_fsyncs),
            snapshot_fsyncs: g(&self.snapshot_fsyncs),
            appended_entries: g(&self.appended_entries),
            log_bytes_written: g(&self.log_bytes_written),
            segments_created: g(&self.segments_created),
            segments_deleted: g(&self.segments_deleted),
        }
    }
}

/// What a store has done since it was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Calls to `LogStore::sync`.
    pub sync_calls: u64,
    /// fdatasync calls on segment files (group commit makes this smaller than `sync_calls`).
    pub log_fsyncs: u64,
    /// fdatasync calls on the sync watermark file: one per group-commit round that made new log
    /// bytes durable, after the segment's fdatasync and before any caller is acknowledged.
    pub watermark_fsyncs: u64,
    /// Durable sled commits (flush plus fsync of sled's files).
    pub catalogue_commits: u64,
    /// fsync calls on sled's files and directories.
    pub catalogue_fsyncs: u64,
    /// fsync calls on snapshot files and their directory.
    pub snapshot_fsyncs: u64,
    /// Entries appended.
    pub appended_entries: u64,
    /// Bytes written to segment files.
    pub log_bytes_written: u64,
    /// Segment files created.
    pub segments_created: u64,
    /// Segment files deleted by compaction.
    pub segments_deleted: u64,
}
