//! The shared storage conformance suite on `SledStorage`, plus what only a durable store must do:
//! everything reads back the same after a reopen, group commit, identity checks.

use std::sync::{Arc, Barrier};

use raft_core::testkit::storage_suite::{self, assert_same_reads, entries, random_ops_match_model};
use raft_core::{
    ConfState, HardState, LogStore, MemStorage, Snapshot, SnapshotMeta, Storage, StorageError,
};
use raft_storage::{OpenError, SledStorage, StorageOptions};
use tempfile::TempDir;

fn options() -> StorageOptions {
    StorageOptions {
        segment_size_bytes: 16 << 10,
        cache_capacity_bytes: 1 << 20,
        ..StorageOptions::new(42, 1)
    }
}

/// A store in a fresh directory; the directory lives as long as the store.
struct Fresh {
    store: SledStorage,
    _dir: TempDir,
}

impl std::ops::Deref for Fresh {
    type Target = SledStorage;
    fn deref(&self) -> &SledStorage {
        &self.store
    }
}

fn fresh() -> Fresh {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStorage::open(dir.path(), options()).unwrap();
    Fresh { store, _dir: dir }
}

// The suite is generic over `LogStore`; forward the traits through the wrapper.
impl Storage for Fresh {
    fn initial_state(&self) -> Result<raft_core::InitialState, StorageError> {
        self.store.initial_state()
    }
    fn entries(
        &self,
        low: u64,
        high: u64,
        max: u64,
    ) -> Result<Vec<raft_core::Entry>, StorageError> {
        self.store.entries(low, high, max)
    }
    fn term(&self, index: u64) -> Result<u64, StorageError> {
        self.store.term(index)
    }
    fn first_index(&self) -> Result<u64, StorageError> {
        self.store.first_index()
    }
    fn last_index(&self) -> Result<u64, StorageError> {
        self.store.last_index()
    }
    fn snapshot(&self) -> Result<Snapshot, StorageError> {
        self.store.snapshot()
    }
}

impl LogStore for Fresh {
    fn append_entries(&self, e: &[raft_core::Entry]) -> Result<(), StorageError> {
        self.store.append_entries(e)
    }
    fn save_hard_state(&self, hs: &HardState) -> Result<(), StorageError> {
        self.store.save_hard_state(hs)
    }
    fn save_conf_state(&self, cs: &ConfState) -> Result<(), StorageError> {
        self.store.save_conf_state(cs)
    }
    fn install_snapshot(&self, s: &Snapshot) -> Result<(), StorageError> {
        self.store.install_snapshot(s)
    }
    fn compact(&self, s: &Snapshot) -> Result<(), StorageError> {
        self.store.compact(s)
    }
    fn sync(&self) -> Result<(), StorageError> {
        self.store.sync()
    }
}

#[test]
fn sled_storage_passes_the_conformance_suite() {
    storage_suite::run_all(fresh);
}

#[test]
fn random_ops_match_the_model_with_small_segments() {
    for seed in 0..4 {
        random_ops_match_model(&fresh(), 100 + seed, 250);
    }
}

/// Applies random operations to a store and a model, reopening the store now and then (after a
/// sync or a clean close): it must read back exactly like the model every time.
#[test]
fn reopen_reads_back_everything() {
    let dir = tempfile::tempdir().unwrap();
    let model = MemStorage::default();
    let mut store = SledStorage::open(dir.path(), options()).unwrap();
    let mut term = 1;
    for round in 0..12u64 {
        let last = model.last_index().unwrap();
        if round % 3 == 2 {
            term += 1;
            let from = last.saturating_sub(2).max(model.first_index().unwrap());
            let es = entries(from, from + 40, term);
            store.append_entries(&es).unwrap();
            model.append_entries(&es).unwrap();
        } else {
            let es = entries(last + 1, last + 60, term);
            store.append_entries(&es).unwrap();
            model.append_entries(&es).unwrap();
        }
        let hs = HardState { term, vote: Some(1), commit: model.last_index().unwrap() / 2 };
        store.save_hard_state(&hs).unwrap();
        model.save_hard_state(&hs).unwrap();
        if round % 4 == 3 {
            let at = model.last_index().unwrap() - 10;
            let snap = Snapshot {
                meta: SnapshotMeta {
                    index: at,
                    term: model.term(at).unwrap(),
                    conf_state: ConfState::default(),
                },
                data: vec![round as u8; 100_000].into(),
            };
            store.compact(&snap).unwrap();
            LogStore::compact(&model, &snap).unwrap();
        }
        if round % 2 == 0 {
            store.sync().unwrap();
            drop(store);
        } else {
            store.close().unwrap();
            assert!(
                store.append_entries(&entries(1000, 1000, 1)).is_err(),
                "closed stores refuse writes"
            );
            drop(store);
        }
        store = SledStorage::open(dir.path(), options()).unwrap();
        assert_eq!(store.recovery_report().clean_close, round % 2 == 1);
        assert_eq!(store.recovery_report().torn_tail, None);
        assert_same_reads(&store, &model);
    }
    let segments = std::fs::read_dir(dir.path().join("wal")).unwrap().count();
    assert!(segments > 1, "the test crossed segment boundaries ({segments} segments)");
}

#[test]
fn compaction_reclaims_segment_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStorage::open(dir.path(), options()).unwrap();
    for from in (1..2000).step_by(50) {
        store.append_entries(&entries(from, from + 49, 1)).unwrap();
    }
    store.sync().unwrap();
    let wal = || std::fs::read_dir(dir.path().join("wal")).unwrap().count();
    let before = wal();
    assert!(before > 5, "small segments rotate: {before}");
    let snap = Snapshot {
        meta: SnapshotMeta { index: 1990, term: 1, ..Default::default() },
        data: "s".into(),
    };
    store.compact(&snap).unwrap();
    assert!(wal() <= 2, "compaction removed the old segments: {} left", wal());
    assert_eq!(store.entries(1991, 2001, u64::MAX).unwrap(), entries(1991, 2000, 1));
    drop(store);
    let store = SledStorage::open(dir.path(), options()).unwrap();
    assert_eq!(store.first_index().unwrap(), 1991);
    assert_eq!(store.entries(1991, 2001, u64::MAX).unwrap(), entries(1991, 2000, 1));
}

#[test]
fn bootstrap_writes_the_initial_membership() {
    let dir = tempfile::tempdir().unwrap();
    let cs = ConfState { voters: vec![1, 2, 3], ..Default::default() };
    let opts = StorageOptions { initial_conf_state: cs.clone(), ..options() };
    let store = SledStorage::open(dir.path(), opts).unwrap();
    assert!(store.recovery_report().bootstrapped);
    assert_eq!(store.initial_state().unwrap().conf_state, cs);
    drop(store);
    // Reopening with other bootstrap options keeps the stored membership.
    let store = SledStorage::open(dir.path(), options()).unwrap();
    assert!(!store.recovery_report().bootstrapped);
    assert_eq!(store.initial_state().unwrap().conf_state, cs);
}

#[test]
fn a_store_of_another_cluster_or_node_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(SledStorage::open(dir.path(), options()).unwrap());
    for (cluster, node) in [(43, 1), (42, 2)] {
        let err = SledStorage::open(dir.path(), StorageOptions::new(cluster, node)).unwrap_err();
        assert!(
            matches!(
                err,
                OpenError::IdentityMismatch { found_cluster_id: 42, found_node_id: 1, .. }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("refusing"), "{err}");
    }
    SledStorage::open(dir.path(), options()).unwrap();
}

#[test]
fn invalid_options_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let bad = StorageOptions { node_id: 0, ..options() };
    assert!(matches!(
        SledStorage::open(dir.path(), bad),
        Err(OpenError::InvalidOptions { field: "node_id", .. })
    ));
    let bad = StorageOptions { segment_size_bytes: 10, ..options() };
    assert!(SledStorage::open(dir.path(), bad).is_err());
}

/// Many threads appending and syncing at once share fdatasyncs, and every sync that returned
/// covered the caller's own write.
#[test]
fn concurrent_syncs_share_fdatasyncs() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStorage::open(dir.path(), StorageOptions::new(1, 1)).unwrap();
    let threads = 8;
    let rounds = 40;
    let barrier = Arc::new(Barrier::new(threads));
    let next = Arc::new(std::sync::Mutex::new(1u64));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (store, barrier, next) = (store.clone(), barrier.clone(), next.clone());
            std::thread::spawn(move || {
                for _ in 0..rounds {
                    barrier.wait();
                    {
                        let mut n = next.lock().unwrap();
                        store.append_entries(&entries(*n, *n, 1)).unwrap();
                        *n += 1;
                    }
                    store.sync().unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let stats = store.stats();
    let total = (threads * rounds) as u64;
    assert_eq!(store.last_index().unwrap(), total);
    assert_eq!(stats.sync_calls, total);
    assert!(stats.log_fsyncs < total, "group commit shared fdatasyncs: {stats:?}");
    assert!(stats.log_fsyncs >= rounds as u64, "at least one fdatasync per round: {stats:?}");
    assert!(stats.watermark_fsyncs <= stats.log_fsyncs, "one per group at most: {stats:?}");
}

/// One fdatasync of the segment, then one of the sync watermark file, per sync that has something
/// to make durable; none for a sync with nothing new.
#[test]
fn sync_fdatasyncs_once_per_batch() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStorage::open(dir.path(), StorageOptions::new(1, 1)).unwrap();
    let base = store.stats();
    let count = |s: &SledStorage| {
        let now = s.stats();
        (now.log_fsyncs - base.log_fsyncs, now.watermark_fsyncs - base.watermark_fsyncs)
    };
    for i in 1..=10 {
        store.append_entries(&entries(i, i, 1)).unwrap();
        store.sync().unwrap();
    }
    assert_eq!(count(&store), (10, 10));
    store.sync().unwrap();
    assert_eq!(count(&store), (10, 10), "nothing new to sync");
}

#[test]
fn membership_and_snapshots_are_durable_without_sync() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStorage::open(dir.path(), options()).unwrap();
    let cs = ConfState { voters: vec![1, 9], ..Default::default() };
    store.save_conf_state(&cs).unwrap();
    let snap = Snapshot {
        meta: SnapshotMeta { index: 7, term: 2, conf_state: cs.clone() },
        data: vec![5u8; 200_000].into(),
    };
    store.install_snapshot(&snap).unwrap();
    let commits = store.stats().catalogue_commits;
    assert!(commits >= 2, "{:?}", store.stats());
    drop(store);
    let store = SledStorage::open(dir.path(), options()).unwrap();
    assert_eq!(store.snapshot().unwrap(), snap);
    assert_eq!(store.initial_state().unwrap().conf_state, cs);
}
