//! The write path: appends, hard state, membership, group-commit sync, segment rotation,
//! compaction and snapshot installation.
//!
//! Any failed file or catalogue write marks the store failed: after a failed `fdatasync` the state
//! of the page cache is unknown, so the only safe continuation is to reopen and recover from disk.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use raft_core::{ConfState, Entry, HardState, Index, Snapshot, StorageError};

use crate::catalogue::{Identity, Ops, SegmentLen};
use crate::codec::{
    ENTRY_FIXED_LEN, MAX_RECORD_BODY, Seed, SegmentHeader, put_entry, put_generation,
    put_hard_state, put_marker, random_salt, segment_header,
};
use crate::index::Loc;
use crate::snapfile;
use crate::stats::Counters;
use crate::store::{Active, Inner, Layout, SegFile, SledStorage, State};

/// Marks the store failed and returns the error to report.
fn fail(st: &mut State, what: String) -> StorageError {
    tracing::error!(error = %what, "raft-storage: write failed; the store refuses further use until reopened");
    st.failed.get_or_insert_with(|| what.clone());
    StorageError::Io(what)
}

fn fsync_dir(path: &std::path::Path) -> std::io::Result<()> {
    File::open(path)?.sync_all()
}

/// Starts a write: rotates if the active segment is full, and prefixes a sync marker if an
/// fdatasync completed since the last one. Returns the buffer and the offset it will be written at.
fn begin_write(inner: &Inner, st: &mut State) -> Result<(Vec<u8>, u64), StorageError> {
    st.check_usable()?;
    if st.active.len >= inner.options.segment_size_bytes {
        rotate(inner, st)?;
    }
    let mut buf = Vec::new();
    if st.active.synced_len > st.active.marked_len {
        put_marker(&mut buf, st.active.seed, st.active.synced_len);
        st.active.marked_len = st.active.synced_len;
    }
    Ok((buf, st.active.len))
}

/// Writes `buf` at the end of the active segment.
fn finish_write(inner: &Inner, st: &mut State, buf: &[u8]) -> Result<(), StorageError> {
    let at = st.active.len;
    if let Err(e) = st.active.file.write_all_at(buf, at) {
        // Cut off a partial write so that a later open does not meet it in the middle of the file.
        let _ = st.active.file.set_len(at);
        return Err(fail(
            st,
            format!("write to segment {}: {e}", Layout::segment_name(st.active.seq)),
        ));
    }
    st.active.len += buf.len() as u64;
    st.write_seq += 1;
    inner.counters.add(&inner.counters.log_bytes_written, buf.len() as u64);
    Ok(())
}

/// Allocates the first `len` bytes of `file` (`fallocate`, mode 0: the file grows to `len` if
/// shorter, reads as zeros past what was written, and existing data is kept), so that appends
/// up to `len` overwrite allocated blocks and their `fdatasync` has no size or extent change to
/// make durable. Returns `false`, changing nothing, where the file system cannot preallocate:
/// the file then grows with each append, as it would without this.
pub(crate) fn preallocate(file: &File, len: u64) -> std::io::Result<bool> {
    use rustix::fs::{FallocateFlags, fallocate};
    use rustix::io::Errno;
    match fallocate(file, FallocateFlags::empty(), 0, len) {
        Ok(()) => Ok(true),
        Err(e) if e == Errno::OPNOTSUPP || e == Errno::NOSYS => Ok(false),
        Err(e) => Err(e.into()),
    }
}

fn fdatasync(inner: &Inner, file: &File) -> std::io::Result<()> {
    file.sync_data()?;
    inner.counters.add(&inner.counters.log_fsyncs, 1);
    Ok(())
}

/// Creates segment file `seq` holding a header, `hard_state` and `generation`, preallocated to
/// `preallocate_len` bytes (zeros past the creation write), and makes it and its directory
/// durable. Returns the file, its logical length (the end of its records) and its records'
/// checksum seed.
pub(crate) fn new_segment_file(
    layout: &Layout,
    preallocate_len: u64,
    identity: Identity,
    seq: u64,
    hard_state: &HardState,
    generation: u64,
    counters: &Counters,
) -> Result<(File, u64, Seed), StorageError> {
    let path = layout.segment_path(seq);
    let salt = random_salt(seq);
    let header =
        SegmentHeader { cluster_id: identity.cluster_id, node_id: identity.node_id, seq, salt };
    let seed = header.seed();
    let mut buf = segment_header(&header);
    put_hard_state(&mut buf, seed, hard_state);
    put_generation(&mut buf, seed, generation);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .and_then(|f| {
            // Allocate first: a crash before the header is durable leaves zeros, which recovery
            // takes for an interrupted creation.
            preallocate(&f, preallocate_len)?;
            f.write_all_at(&buf, 0)?;
            f.sync_data()?;
            fsync_dir(&layout.wal)?;
            Ok(f)
        })
        .map_err(|e| StorageError::Io(format!("creating segment {}: {e}", path.display())))?;
    counters.add(&counters.log_fsyncs, 1);
    counters.add(&counters.segments_created, 1);
    Ok((file, buf.len() as u64, seed))
}

/// Creates segment `seq` and makes it the active segment.
fn create_segment(inner: &Inner, st: &mut State, seq: u64) -> Result<(), StorageError> {
    let created = new_segment_file(
        &inner.layout,
        inner.options.segment_size_bytes,
        inner.identity,
        seq,
        &st.hard_state,
        st.generation,
        &inner.counters,
    );
    let (file, len, seed) = created.map_err(|e| fail(st, e.to_string()))?;
    let file = Arc::new(file);
    st.segments.insert(seq, SegFile { file: file.clone(), seed });
    st.active = Active { seq, file, seed, len, synced_len: len, marked_len: 0 };
    Ok(())
}

/// Cuts the preallocated space off the active segment, so that the file ends at its last record.
fn trim_preallocation(st: &mut State) -> Result<(), StorageError> {
    let (seq, len) = (st.active.seq, st.active.len);
    if let Err(e) = st.active.file.set_len(len) {
        let name = Layout::segment_name(seq);
        return Err(fail(st, format!("cutting segment {name} to its {len} bytes of records: {e}")));
    }
    Ok(())
}

/// Seals the active segment (cut to its records, fdatasync, then its exact length in the
/// catalogue) and starts the next.
pub(crate) fn rotate(inner: &Inner, st: &mut State) -> Result<(), StorageError> {
    let (seq, len) = (st.active.seq, st.active.len);
    trim_preallocation(st)?;
    if let Err(e) = fdatasync(inner, &st.active.file) {
        return Err(fail(st, format!("fdatasync of segment {}: {e}", Layout::segment_name(seq))));
    }
    st.active.synced_len = len;
    let generation = st.generation + 1;
    let ops = Ops::default().sealed(seq, len).generation(generation);
    inner
        .catalogue
        .commit(ops, &inner.counters)
        .map_err(|e| fail(st, format!("sealing segment {seq}: {e}")))?;
    st.generation = generation;
    create_segment(inner, st, seq + 1)
}

/// Commits `ops` plus a new generation durably, and records the generation in the log.
fn commit_catalogue(
    inner: &Inner,
    st: &mut State,
    ops: Ops,
    what: &str,
) -> Result<(), StorageError> {
    let generation = st.generation + 1;
    let ops = ops.generation(generation);
    inner.catalogue.commit(ops, &inner.counters).map_err(|e| fail(st, format!("{what}: {e}")))?;
    st.generation = generation;
    let (mut buf, _) = begin_write(inner, st)?;
    put_generation(&mut buf, st.active.seed, generation);
    finish_write(inner, st, &buf)
}

pub(crate) fn append_entries(s: &SledStorage, entries: &[Entry]) -> Result<(), StorageError> {
    let Some(first) = entries.first() else { return Ok(()) };
    for w in entries.windows(2) {
        if w[1].index != w[0].index + 1 {
            return Err(StorageError::Corrupt {
                what: format!("append batch at index {}", w[0].index),
                detail: "entries are not contiguous".into(),
            });
        }
    }
    if let Some(e) = entries.iter().find(|e| e.data.len() > MAX_RECORD_BODY - ENTRY_FIXED_LEN) {
        return Err(StorageError::Io(format!(
            "entry {} has {} bytes, more than the {} a record holds",
            e.index,
            e.data.len(),
            MAX_RECORD_BODY - ENTRY_FIXED_LEN
        )));
    }
    let inner = &*s.inner;
    let mut st = s.state()?;
    st.check_usable()?;
    let last = st.index.last_index();
    if first.index < st.index.first_index() {
        return Err(StorageError::Compacted { index: first.index });
    }
    if first.index > last + 1 {
        return Err(StorageError::Unavailable { index: first.index, last_index: last });
    }
    let (mut buf, base) = begin_write(inner, &mut st)?;
    let seq = u32::try_from(st.active.seq)
        .map_err(|_| StorageError::Io("segment numbers exhausted".into()))?;
    let mut locs = Vec::with_capacity(entries.len());
    for e in entries {
        let pos = buf.len();
        put_entry(&mut buf, st.active.seed, e);
        locs.push(Loc { pos: base + pos as u64, seq, len: (buf.len() - pos) as u32 });
    }
    finish_write(inner, &mut st, &buf)?;
    for (e, loc) in entries.iter().zip(locs) {
        st.index.append(e.index, e.term, loc);
    }
    inner.counters.add(&inner.counters.appended_entries, entries.len() as u64);
    Ok(())
}

pub(crate) fn save_hard_state(s: &SledStorage, hs: &HardState) -> Result<(), StorageError> {
    let inner = &*s.inner;
    let mut st = s.state()?;
    st.check_usable()?;
    if st.hard_state == *hs {
        return Ok(());
    }
    let (mut buf, _) = begin_write(inner, &mut st)?;
    put_hard_state(&mut buf, st.active.seed, hs);
    finish_write(inner, &mut st, &buf)?;
    st.hard_state = *hs;
    Ok(())
}

/// Membership lives in the catalogue and is durable when this returns.
pub(crate) fn save_conf_state(s: &SledStorage, cs: &ConfState) -> Result<(), StorageError> {
    let inner = &*s.inner;
    let mut st = s.state()?;
    st.check_usable()?;
    commit_catalogue(inner, &mut st, Ops::default().conf_state(cs), "saving membership")?;
    st.conf_state = cs.clone();
    Ok(())
}

/// Group commit: the first caller to find no sync running becomes the leader and fdatasyncs
/// everything written so far; callers whose writes that covers return with it, later ones lead
/// the next round.
pub(crate) fn sync(s: &SledStorage) -> Result<(), StorageError> {
    let inner = &*s.inner;
    inner.counters.add(&inner.counters.sync_calls, 1);
    let target = {
        let st = s.state()?;
        st.check_usable()?;
        st.write_seq
    };
    let lock = || inner.sync.lock().map_err(|_| StorageError::Io("sync lock poisoned".into()));
    let mut g = lock()?;
    loop {
        if g.synced_seq >= target {
            return Ok(());
        }
        if g.leader {
            g = inner.synced.wait(g).map_err(|_| StorageError::Io("sync lock poisoned".into()))?;
            continue;
        }
        g.leader = true;
        drop(g);
        let result = lead_sync(s);
        g = lock()?;
        g.leader = false;
        if let Ok(seq) = result {
            g.synced_seq = g.synced_seq.max(seq);
        }
        inner.synced.notify_all();
        result?;
    }
}

/// One fdatasync of the active segment covering every write made so far, then the new durable
/// length made durable in the sync watermark file, so that a crash can never make recovery take
/// acknowledged bytes for a torn tail. Older segments were fdatasynced when they were sealed.
/// Runs without the state lock, so appends go on meanwhile; leaders run one at a time.
fn lead_sync(s: &SledStorage) -> Result<u64, StorageError> {
    let inner = &*s.inner;
    let (file, seq, len, write_seq) = {
        let st = s.state()?;
        st.check_usable()?;
        (st.active.file.clone(), st.active.seq, st.active.len, st.write_seq)
    };
    let r = fdatasync(inner, &file);
    let mut st = s.state()?;
    if let Err(e) = r {
        return Err(fail(
            &mut st,
            format!("fdatasync of segment {}: {e}", Layout::segment_name(seq)),
        ));
    }
    if st.active.seq != seq {
        // Rotated meanwhile: sealing fdatasynced the segment and recorded its length durably.
        return Ok(write_seq);
    }
    st.active.synced_len = st.active.synced_len.max(len);
    let durable = SegmentLen { seq, len: st.active.synced_len };
    drop(st);
    let recorded = match inner.watermark.lock() {
        Ok(w) if w.durable() >= durable => return Ok(write_seq),
        Ok(mut w) => w.record(durable),
        Err(_) => Err(StorageError::Io("sync watermark lock poisoned".into())),
    };
    if let Err(e) = recorded {
        return Err(fail(&mut *s.state()?, format!("recording the sync watermark: {e}")));
    }
    inner.counters.add(&inner.counters.watermark_fsyncs, 1);
    Ok(write_seq)
}

pub(crate) fn close(inner: &Arc<Inner>) -> Result<(), StorageError> {
    let mut st = inner.state.lock().map_err(|_| StorageError::Io("state lock poisoned".into()))?;
    st.check_usable()?;
    // A cleanly closed segment is checked for its exact length at the next open.
    trim_preallocation(&mut st)?;
    if let Err(e) = fdatasync(inner, &st.active.file) {
        return Err(fail(&mut st, format!("fdatasync at close: {e}")));
    }
    let clean = SegmentLen { seq: st.active.seq, len: st.active.len };
    inner
        .catalogue
        .commit(Ops::default().clean_close(Some(clean)), &inner.counters)
        .map_err(|e| fail(&mut st, format!("recording clean close: {e}")))?;
    st.closed = true;
    Ok(())
}

fn snapshot_name(index: Index, term: u64, generation: u64) -> String {
    format!("snap-{index:020}-{term:020}-{generation:020}.snap")
}

/// Removes files that the catalogue no longer references (best effort: open() removes leftovers).
fn remove_garbage(inner: &Inner, segments: Vec<u64>, old_snapshot: Option<String>) {
    let mut ops = Ops::default();
    for seq in &segments {
        let path = inner.layout.segment_path(*seq);
        match std::fs::remove_file(&path) {
            Ok(()) => inner.counters.add(&inner.counters.segments_deleted, 1),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "raft-storage: could not remove compacted segment")
            }
        }
        ops = ops.unseal(*seq);
    }
    if let Some(name) = old_snapshot {
        let path = inner.layout.snapshots.join(&name);
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!(path = %path.display(), error = %e, "raft-storage: could not remove old snapshot");
        }
    }
    if !segments.is_empty()
        && let Err(e) = inner.catalogue.apply_lazily(ops)
    {
        tracing::warn!(error = %e, "raft-storage: could not forget compacted segments");
    }
}

/// Checks that `snapshot` may compact the log; returns the file name to write it under.
fn check_compact(st: &State, snapshot: &Snapshot) -> Result<String, StorageError> {
    st.check_usable()?;
    let (index, term) = (snapshot.meta.index, snapshot.meta.term);
    let log_term = st.index.term(index)?;
    if log_term != term {
        return Err(StorageError::Corrupt {
            what: format!("snapshot at index {index}"),
            detail: format!("snapshot term {term} but the log has term {log_term}"),
        });
    }
    Ok(snapshot_name(index, term, st.generation + 1))
}

pub(crate) fn compact(s: &SledStorage, snapshot: &Snapshot) -> Result<(), StorageError> {
    let inner = &*s.inner;
    let _g = inner
        .snapshot_lock
        .lock()
        .map_err(|_| StorageError::Io("snapshot lock poisoned".into()))?;
    let name = check_compact(&*s.state()?, snapshot)?;
    // Write the data without holding the state lock; appends go on meanwhile.
    let sref =
        snapfile::write(&inner.layout.snapshots, &name, inner.identity, snapshot, &inner.counters)?;
    let (garbage, old) = {
        let mut st = s.state()?;
        if let Err(e) = check_compact(&st, snapshot) {
            drop(st);
            let _ = std::fs::remove_file(inner.layout.snapshots.join(&name));
            return Err(e);
        }
        let (index, term) = (snapshot.meta.index, snapshot.meta.term);
        let first_live = if index < st.index.last_index() {
            st.index.loc(index + 1).seq as u64
        } else {
            st.active.seq
        };
        let log_start = first_live.max(st.log_start);
        let ops = Ops::default().snapshot(&sref).log_start(log_start);
        commit_catalogue(inner, &mut st, ops, "recording snapshot")?;
        st.index.compact_to(index, term);
        let old = st.snapshot.replace(sref).map(|r| r.file);
        st.log_start = log_start;
        (take_segments_below(&mut st, log_start), old)
    };
    remove_garbage(inner, garbage, old);
    Ok(())
}

/// Forgets the segments before `log_start` and returns their sequence numbers for deletion.
fn take_segments_below(st: &mut State, log_start: u64) -> Vec<u64> {
    let garbage: Vec<u64> = st.segments.range(..log_start).map(|(&k, _)| k).collect();
    for seq in &garbage {
        st.segments.remove(seq);
    }
    garbage
}

pub(crate) fn install_snapshot(s: &SledStorage, snapshot: &Snapshot) -> Result<(), StorageError> {
    let inner = &*s.inner;
    let _g = inner
        .snapshot_lock
        .lock()
        .map_err(|_| StorageError::Io("snapshot lock poisoned".into()))?;
    let (index, term) = (snapshot.meta.index, snapshot.meta.term);
    let check = |st: &State| -> Result<String, StorageError> {
        st.check_usable()?;
        match &st.snapshot {
            Some(cur) if index < cur.meta.index => Err(StorageError::Compacted { index }),
            _ => Ok(snapshot_name(index, term, st.generation + 1)),
        }
    };
    let name = check(&*s.state()?)?;
    let sref =
        snapfile::write(&inner.layout.snapshots, &name, inner.identity, snapshot, &inner.counters)?;
    let (garbage, old) = {
        let mut st = s.state()?;
        if let Err(e) = check(&st) {
            drop(st);
            let _ = std::fs::remove_file(inner.layout.snapshots.join(&name));
            return Err(e);
        }
        // A fresh segment: every older one becomes garbage once the catalogue says so.
        rotate(inner, &mut st)?;
        let log_start = st.active.seq;
        let ops = Ops::default()
            .snapshot(&sref)
            .conf_state(&snapshot.meta.conf_state)
            .log_start(log_start);
        commit_catalogue(inner, &mut st, ops, "installing snapshot")?;
        st.index.reset(index, term);
        st.conf_state = snapshot.meta.conf_state.clone();
        let old = st.snapshot.replace(sref).map(|r| r.file);
        st.log_start = log_start;
        (take_segments_below(&mut st, log_start), old)
    };
    remove_garbage(inner, garbage, old);
    Ok(())
}
