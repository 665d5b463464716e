//! Opening a store: bootstrap, identity check, verification of every file, torn-tail repair.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use raft_core::{HardState, StorageError};

use crate::catalogue::{Catalogue, Identity, Loaded, Ops, Phase, SegmentLen};
use crate::recovery::{Recovered, Replayer, SegmentInput};
use crate::scan::TailPolicy;
use crate::snapfile;
use crate::stats::Counters;
use crate::store::{Active, Inner, Layout, SegFile, SledStorage, State, SyncState};
use crate::watermark::WatermarkFile;
use crate::write::{new_segment_file, preallocate};
use crate::{OpenError, StorageOptions};

/// What [`SledStorage::open`] found and repaired.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// A new store was created.
    pub bootstrapped: bool,
    /// The store had been closed cleanly (so its tail was checked strictly).
    pub clean_close: bool,
    /// Segment files verified.
    pub segments: usize,
    /// Entry records read (live or superseded).
    pub entry_records: u64,
    /// An unacknowledged torn write that was trimmed.
    pub torn_tail: Option<TornTailReport>,
    /// Files left over by an interrupted compaction or snapshot, removed.
    pub removed_files: Vec<String>,
    /// Time the open took.
    pub duration: Duration,
}

/// A torn tail trimmed at open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTailReport {
    /// Segment file name.
    pub segment: String,
    /// Offset the file was cut at.
    pub offset: u64,
    /// Bytes removed.
    pub bytes: u64,
    /// Why the bytes counted as a torn (never acknowledged) write.
    pub reason: String,
}

fn corrupt(what: impl Into<String>, detail: impl Into<String>) -> StorageError {
    StorageError::Corrupt { what: what.into(), detail: detail.into() }
}

fn io(path: &Path, e: std::io::Error) -> StorageError {
    StorageError::Io(format!("{}: {e}", path.display()))
}

fn fsync_dir(path: &Path) -> Result<(), StorageError> {
    File::open(path).and_then(|d| d.sync_all()).map_err(|e| io(path, e))
}

fn prepare_dirs(layout: &Layout) -> Result<(), StorageError> {
    for dir in [&layout.root, &layout.wal, &layout.snapshots] {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    }
    fsync_dir(&layout.root)?;
    if let Some(parent) = layout.root.parent().filter(|p| !p.as_os_str().is_empty()) {
        fsync_dir(parent)?;
    }
    Ok(())
}

fn has_files(dir: &Path) -> Result<bool, StorageError> {
    Ok(std::fs::read_dir(dir).map_err(|e| io(dir, e))?.next().is_some())
}

/// Segment numbers of the `*.seg` files in `dir`, sorted.
fn list_segments(dir: &Path) -> Result<Vec<u64>, StorageError> {
    let mut seqs = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
        let name = entry.map_err(|e| io(dir, e))?.file_name();
        let name = name.to_string_lossy();
        match name
            .strip_suffix(".seg")
            .filter(|s| s.len() == 20)
            .and_then(|s| s.parse::<u64>().ok())
        {
            Some(seq) => seqs.push(seq),
            None => {
                tracing::warn!(file = %name, dir = %dir.display(), "raft-storage: ignoring unknown file")
            }
        }
    }
    seqs.sort_unstable();
    Ok(seqs)
}

/// Creates the first segment of a store whose catalogue says it is bootstrapping.
///
/// A crash during bootstrap can only have left an empty first segment, which is replaced. Anything
/// else means the catalogue went back in time (sled lost durable changes): refuse, and touch nothing.
fn finish_bootstrap(
    layout: &Layout,
    catalogue: &Catalogue,
    id: Identity,
    loaded: &Loaded,
    options: &StorageOptions,
    counters: &Counters,
) -> Result<(), StorageError> {
    let log_start =
        loaded.log_start.ok_or_else(|| corrupt("sled catalogue", "no first segment recorded"))?;
    let refuse = |what: String| {
        corrupt(
            "sled catalogue",
            format!(
                "it says the store is still being created, but {what}; refusing to overwrite it"
            ),
        )
    };
    if has_files(&layout.snapshots)? {
        return Err(refuse(format!("{} holds files", layout.snapshots.display())));
    }
    let seqs = list_segments(&layout.wal)?;
    for &seq in &seqs {
        let path = layout.segment_path(seq);
        let bytes = std::fs::read(&path).map_err(|e| io(&path, e))?;
        let mut data = false;
        let mut visit = |f: crate::scan::Found<'_>| {
            data |= match f.record {
                crate::codec::Record::Entry { .. } => true,
                crate::codec::Record::HardState(hs) => *hs != Default::default(),
                _ => false,
            };
            Ok(())
        };
        let scanned = crate::scan::scan_segment(
            &Layout::segment_name(seq),
            &bytes,
            TailPolicy::Recover { durable_len: 0 },
            &mut visit,
        );
        if seq != log_start || scanned.is_err() || data {
            return Err(refuse(format!("segment {} holds data", path.display())));
        }
    }
    for seq in seqs {
        // Left by a crash during an earlier bootstrap; nothing in it was acknowledged.
        let path = layout.segment_path(seq);
        std::fs::remove_file(&path).map_err(|e| io(&path, e))?;
    }
    let (_, len, _) = new_segment_file(
        layout,
        options.segment_size_bytes,
        id,
        log_start,
        &Default::default(),
        loaded.generation,
        counters,
    )?;
    WatermarkFile::create(&layout.root, id, SegmentLen { seq: log_start, len })?;
    catalogue.commit(Ops::default().phase(Phase::Ready), counters)
}

/// Loads the catalogue, bootstrapping a new store and checking the identity of an existing one.
fn load_catalogue(
    layout: &Layout,
    catalogue: &Catalogue,
    options: &StorageOptions,
    counters: &Counters,
    report: &mut RecoveryReport,
) -> Result<(Identity, Loaded), OpenError> {
    let expected = Identity { cluster_id: options.cluster_id, node_id: options.node_id };
    let mut loaded = catalogue.load()?;
    match loaded.identity {
        None => {
            for dir in [&layout.wal, &layout.snapshots] {
                if has_files(dir)? {
                    return Err(corrupt(
                        format!("sled catalogue in {}", layout.catalogue.display()),
                        format!("it has no identity, but {} holds files; refusing to bootstrap over them", dir.display()),
                    )
                    .into());
                }
            }
            let ops = Ops::default()
                .identity(expected)
                .phase(Phase::Bootstrapping)
                .generation(1)
                .conf_state(&options.initial_conf_state)
                .log_start(1);
            catalogue.commit(ops, counters)?;
            loaded = catalogue.load()?;
            report.bootstrapped = true;
        }
        Some(found) if found != expected => {
            return Err(OpenError::IdentityMismatch {
                path: layout.root.display().to_string(),
                found_cluster_id: found.cluster_id,
                found_node_id: found.node_id,
                cluster_id: expected.cluster_id,
                node_id: expected.node_id,
            });
        }
        Some(_) => {}
    }
    match loaded.phase {
        Some(Phase::Bootstrapping) => {
            finish_bootstrap(layout, catalogue, expected, &loaded, options, counters)?;
            loaded = catalogue.load()?;
        }
        Some(Phase::Ready) => {}
        None => return Err(corrupt("sled catalogue", "bootstrap phase missing").into()),
    }
    Ok((expected, loaded))
}

/// Removes snapshot files other than `keep` (leftovers of interrupted snapshot writes).
fn clean_snapshot_dir(
    layout: &Layout,
    keep: Option<&str>,
    report: &mut RecoveryReport,
) -> Result<(), StorageError> {
    let dir = &layout.snapshots;
    for entry in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
        let name = entry.map_err(|e| io(dir, e))?.file_name().to_string_lossy().into_owned();
        let ours =
            name.starts_with("snap-") && (name.ends_with(".snap") || name.ends_with(".snap.tmp"));
        if ours && Some(name.as_str()) != keep {
            let path = dir.join(&name);
            std::fs::remove_file(&path).map_err(|e| io(&path, e))?;
            report.removed_files.push(format!("snapshots/{name}"));
        }
    }
    Ok(())
}

/// Opens `root` (see [`SledStorage::open`]).
pub(crate) fn open(root: &Path, options: StorageOptions) -> Result<SledStorage, OpenError> {
    let started = Instant::now();
    options.validate()?;
    let layout = Layout::new(root);
    let counters = Counters::default();
    let mut report = RecoveryReport::default();
    prepare_dirs(&layout)?;
    let catalogue = Catalogue::open(&layout.catalogue, options.cache_capacity_bytes)?;
    // sled may just have created `catalogue/`: make its directory entry durable.
    fsync_dir(&layout.root)?;
    let (identity, loaded) = load_catalogue(&layout, &catalogue, &options, &counters, &mut report)?;
    let mut watermark = WatermarkFile::open(&layout.root, identity)?;
    if let Some(r) = &loaded.snapshot {
        snapfile::read_file(&layout.snapshots, identity, r)?;
    }
    // Verifies every segment before it repairs or removes anything.
    let durable = watermark.durable();
    let state =
        recover_log(&layout, &catalogue, &options, &loaded, durable, &counters, &mut report)?;
    // The active segment was just made durable up to its length: record it, so that damage to
    // what survived the crash is caught from now on.
    let now_durable = SegmentLen { seq: state.active.seq, len: state.active.len };
    if now_durable != durable {
        watermark.record(now_durable)?;
        counters.add(&counters.watermark_fsyncs, 1);
    }
    clean_snapshot_dir(&layout, loaded.snapshot.as_ref().map(|r| r.file.as_str()), &mut report)?;
    if loaded.clean_close.is_some() {
        // From now on a crash may leave a torn tail again.
        catalogue.commit(Ops::default().clean_close(None), &counters)?;
        report.clean_close = true;
    }
    report.duration = started.elapsed();
    tracing::info!(
        path = %root.display(),
        first_index = state.index.first_index(),
        last_index = state.index.last_index(),
        segments = report.segments,
        elapsed_ms = report.duration.as_millis() as u64,
        "raft-storage: opened"
    );
    let inner = Inner {
        layout,
        identity,
        options,
        catalogue,
        watermark: Mutex::new(watermark),
        state: Mutex::new(state),
        sync: Mutex::new(SyncState::default()),
        synced: Condvar::new(),
        snapshot_lock: Mutex::new(()),
        counters,
        report,
    };
    Ok(SledStorage { inner: Arc::new(inner) })
}

/// How strictly each segment is read, per the catalogue and the sync watermark `durable`.
fn policy_for(
    seq: u64,
    last: u64,
    loaded: &Loaded,
    durable: SegmentLen,
) -> Result<TailPolicy, StorageError> {
    if let Some(&len) = loaded.sealed.get(&seq) {
        return Ok(TailPolicy::Exact { len });
    }
    if seq != last {
        return Err(corrupt(
            format!("segment {}", Layout::segment_name(seq)),
            format!("followed by segment {} but never sealed in the catalogue", seq + 1),
        ));
    }
    Ok(match loaded.clean_close {
        Some(c) if c.seq == seq => TailPolicy::Exact { len: c.len },
        _ if durable.seq == seq => TailPolicy::Recover { durable_len: durable.len },
        _ => TailPolicy::Recover { durable_len: 0 },
    })
}

/// Checks the sync watermark `durable` against the catalogue and the last segment `last`: the
/// watermark is never ahead of what the catalogue recorded as durable, nor of the files.
fn check_watermark(loaded: &Loaded, durable: SegmentLen, last: u64) -> Result<(), StorageError> {
    let says = format!(
        "the sync watermark file says the first {} bytes of segment {} were durable",
        durable.len, durable.seq
    );
    if durable.seq > last {
        let what = format!("segment {}", Layout::segment_name(durable.seq));
        return Err(corrupt(what, format!("file is missing, but {says}")));
    }
    let recorded = match loaded.clean_close {
        Some(c) if c.seq == durable.seq => Some(("closed cleanly", c.len)),
        _ => loaded.sealed.get(&durable.seq).map(|&len| ("sealed", len)),
    };
    if let Some((how, len)) = recorded.filter(|&(_, len)| len < durable.len) {
        let detail = format!("segment {} was {how} at {len} bytes, but {says}", durable.seq);
        return Err(corrupt("sled catalogue", detail));
    }
    Ok(())
}

/// The live segments `log_start..=last` (checked contiguous) and the stale ones before them.
fn list_live_segments(
    layout: &Layout,
    loaded: &Loaded,
    durable: SegmentLen,
) -> Result<(Vec<u64>, Vec<u64>), StorageError> {
    let log_start =
        loaded.log_start.ok_or_else(|| corrupt("sled catalogue", "no first segment recorded"))?;
    let (stale, live): (Vec<u64>, Vec<u64>) =
        list_segments(&layout.wal)?.into_iter().partition(|&s| s < log_start);
    for (i, expected) in (log_start..).take(live.len().max(1)).enumerate() {
        if live.get(i) != Some(&expected) {
            let what = format!("segment {}", Layout::segment_name(expected));
            return Err(corrupt(what, "file is missing"));
        }
    }
    let last = *live.last().expect("checked non-empty");
    if let Some(c) = loaded.clean_close.filter(|c| c.seq != last) {
        let detail = format!("clean close names segment {} but the last is {last}", c.seq);
        return Err(corrupt("sled catalogue", detail));
    }
    check_watermark(loaded, durable, last)?;
    Ok((live, stale))
}

/// Reads, verifies and replays `seqs`. One thread reads the next segment while this one checks
/// and replays the current one, so at most two segments are in memory.
fn replay_segments(
    layout: &Layout,
    identity: Identity,
    loaded: &Loaded,
    durable: SegmentLen,
    seqs: &[u64],
) -> Result<Recovered, StorageError> {
    let (first, last) = (seqs[0], seqs[seqs.len() - 1]);
    let point = loaded.snapshot.as_ref().map_or((0, 0), |r| (r.meta.index, r.meta.term));
    let mut replayer = Replayer::new(identity, point);
    std::thread::scope(|scope| -> Result<(), StorageError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let paths: Vec<(u64, PathBuf)> =
            seqs.iter().map(|&s| (s, layout.segment_path(s))).collect();
        scope.spawn(move || {
            for (seq, path) in paths {
                let read = std::fs::read(&path).map_err(|e| io(&path, e));
                if tx.send((seq, read)).is_err() {
                    return;
                }
            }
        });
        for (seq, bytes) in rx {
            let bytes = bytes?;
            let policy = policy_for(seq, last, loaded, durable)?;
            // Only a segment whose creation a crash interrupted, right after sealing the previous.
            let header_may_be_torn = seq == last
                && seq > first
                && policy == (TailPolicy::Recover { durable_len: 0 })
                && loaded.sealed.contains_key(&(seq - 1));
            let name = Layout::segment_name(seq);
            let input = SegmentInput { seq, name, bytes: &bytes, policy, header_may_be_torn };
            replayer.segment(&input)?;
        }
        Ok(())
    })?;
    let rec = replayer.finish();
    if rec.max_generation > loaded.generation {
        return Err(corrupt(
            "sled catalogue",
            format!(
                "generation {} is older than generation {} recorded in the log: \
                 the catalogue lost durable changes",
                loaded.generation, rec.max_generation
            ),
        ));
    }
    Ok(rec)
}

/// Verifies and replays the segments, then (only then) repairs: removes stale segments, trims a
/// torn tail or replaces an interrupted segment creation, and builds the state.
/// `options` are those the catalogue's identity was checked against.
fn recover_log(
    layout: &Layout,
    catalogue: &Catalogue,
    options: &StorageOptions,
    loaded: &Loaded,
    durable: SegmentLen,
    counters: &Counters,
    report: &mut RecoveryReport,
) -> Result<State, StorageError> {
    let identity = Identity { cluster_id: options.cluster_id, node_id: options.node_id };
    let conf_state = loaded
        .conf_state
        .clone()
        .ok_or_else(|| corrupt("sled catalogue", "no membership recorded"))?;
    let (seqs, stale) = list_live_segments(layout, loaded, durable)?;
    let mut rec = replay_segments(layout, identity, loaded, durable, &seqs)?;
    report.segments = seqs.len();
    report.entry_records = rec.entry_records;
    let hard_state =
        rec.hard_state.ok_or_else(|| corrupt("segment files", "no hard state record"))?;

    // Everything is verified: repair from here on.
    let mut forget = Ops::default();
    for seq in stale {
        // Compacted away; the crash came before the file was removed.
        let path = layout.segment_path(seq);
        std::fs::remove_file(&path).map_err(|e| io(&path, e))?;
        report.removed_files.push(format!("wal/{}", Layout::segment_name(seq)));
        forget = forget.unseal(seq);
    }
    catalogue.apply_lazily(forget)?;
    let mut segments = BTreeMap::new();
    for &seq in &seqs[..seqs.len() - 1] {
        segments.insert(seq, open_sealed(layout, seq, &rec)?);
    }
    let segment_size = options.segment_size_bytes;
    let ctx = ActiveCtx { layout, identity, loaded, counters, hard_state, segment_size };
    let active =
        open_active(&ctx, &mut rec, *seqs.last().expect("non-empty"), &mut segments, report)?;
    segments.insert(active.seq, SegFile { file: active.file.clone(), seed: active.seed });
    let log_start = seqs[0].min(active.seq);
    Ok(State {
        index: rec.index,
        hard_state,
        conf_state,
        snapshot: loaded.snapshot.clone(),
        generation: loaded.generation,
        log_start,
        segments,
        active,
        write_seq: 0,
        failed: None,
        closed: false,
    })
}

fn open_sealed(layout: &Layout, seq: u64, rec: &Recovered) -> Result<SegFile, StorageError> {
    let path = layout.segment_path(seq);
    let file = Arc::new(File::open(&path).map_err(|e| io(&path, e))?);
    Ok(SegFile { file, seed: rec.seeds[&seq] })
}

struct ActiveCtx<'a> {
    layout: &'a Layout,
    identity: Identity,
    loaded: &'a Loaded,
    counters: &'a Counters,
    hard_state: HardState,
    /// Length new and reopened active segments are preallocated to.
    segment_size: u64,
}

/// Makes the last segment appendable: trims its torn tail, or replaces it if its creation was
/// interrupted, or starts its successor if it was sealed.
fn open_active(
    c: &ActiveCtx<'_>,
    rec: &mut Recovered,
    last: u64,
    segments: &mut BTreeMap<u64, SegFile>,
    report: &mut RecoveryReport,
) -> Result<Active, StorageError> {
    let scan = rec.last.take().expect("at least one segment was replayed");
    let path = c.layout.segment_path(last);
    let name = Layout::segment_name(last);
    let fresh = |seq: u64| -> Result<Active, StorageError> {
        let (file, len, seed) = new_segment_file(
            c.layout,
            c.segment_size,
            c.identity,
            seq,
            &c.hard_state,
            c.loaded.generation,
            c.counters,
        )?;
        Ok(Active { seq, file: Arc::new(file), seed, len, synced_len: len, marked_len: 0 })
    };
    if scan.header.is_none() {
        tracing::warn!(segment = %name, "raft-storage: removing a segment whose creation a crash interrupted");
        std::fs::remove_file(&path).map_err(|e| io(&path, e))?;
        report.removed_files.push(format!("wal/{name}"));
        return fresh(last);
    }
    if c.loaded.sealed.contains_key(&last) {
        // The crash came between sealing `last` and creating its successor.
        segments.insert(last, open_sealed(c.layout, last, rec)?);
        return fresh(last + 1);
    }
    let f = OpenOptions::new().read(true).write(true).open(&path).map_err(|e| io(&path, e))?;
    if let Some(t) = &scan.torn {
        tracing::warn!(
            segment = %name, offset = t.at, bytes = t.bytes, reason = t.reason,
            "raft-storage: trimming a torn, never-acknowledged tail left by a crash"
        );
        f.set_len(t.at).map_err(|e| io(&path, e))?;
        report.torn_tail = Some(TornTailReport {
            segment: name.clone(),
            offset: t.at,
            bytes: t.bytes,
            reason: t.reason.to_string(),
        });
    }
    // Zeros from the end of the records on (a file cut above, or closed cleanly, or written
    // before segments were preallocated, is extended again; an allocated one is left as is).
    preallocate(&f, c.segment_size).map_err(|e| io(&path, e))?;
    // What survived may still be only in the page cache (the process died, not the machine):
    // make it durable before a sync marker can vouch for it.
    f.sync_data().map_err(|e| io(&path, e))?;
    c.counters.add(&c.counters.log_fsyncs, 1);
    let len = scan.valid_len;
    Ok(Active {
        seq: last,
        file: Arc::new(f),
        seed: rec.seeds[&last],
        len,
        synced_len: len,
        marked_len: 0,
    })
}
