//! [`SledStorage`]: shared state, reads, and the trait implementations.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use bytes::Bytes;
use raft_core::{
    ConfState, ENTRY_OVERHEAD_BYTES, Entry, HardState, Index, InitialState, LogStore, Snapshot,
    Storage, StorageError, Term,
};

use crate::catalogue::{Catalogue, Identity, SnapshotRef};
use crate::codec::{ENTRY_FIXED_LEN, RECORD_HEADER_LEN, Record, RecordAt, Seed, record_at};
use crate::index::{Loc, LogIndex};
use crate::open::RecoveryReport;
use crate::snapfile;
use crate::stats::{Counters, StoreStats};
use crate::watermark::WatermarkFile;
use crate::{OpenError, StorageOptions};

/// Directories of a store.
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    pub(crate) root: PathBuf,
    pub(crate) catalogue: PathBuf,
    pub(crate) wal: PathBuf,
    pub(crate) snapshots: PathBuf,
}

impl Layout {
    pub(crate) fn new(root: &Path) -> Layout {
        Layout {
            root: root.to_path_buf(),
            catalogue: root.join("catalogue"),
            wal: root.join("wal"),
            snapshots: root.join("snapshots"),
        }
    }

    pub(crate) fn segment_name(seq: u64) -> String {
        format!("{seq:020}.seg")
    }

    pub(crate) fn segment_path(&self, seq: u64) -> PathBuf {
        self.wal.join(Layout::segment_name(seq))
    }
}

/// An open segment file and the checksum seed of its records.
#[derive(Clone, Debug)]
pub(crate) struct SegFile {
    pub(crate) file: Arc<File>,
    pub(crate) seed: Seed,
}

/// The segment being appended to.
#[derive(Debug)]
pub(crate) struct Active {
    pub(crate) seq: u64,
    pub(crate) file: Arc<File>,
    pub(crate) seed: Seed,
    /// Bytes written.
    pub(crate) len: u64,
    /// Bytes covered by a completed fdatasync.
    pub(crate) synced_len: u64,
    /// `durable_len` of the last sync marker written.
    pub(crate) marked_len: u64,
}

/// Everything behind the state lock.
///
/// Invariants: `log_start <= active.seq`; `segments` holds exactly the files
/// `log_start..=active.seq`; every live entry's `Loc::seq` is in `segments`.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) index: LogIndex,
    pub(crate) hard_state: HardState,
    pub(crate) conf_state: ConfState,
    pub(crate) snapshot: Option<SnapshotRef>,
    /// Catalogue generation (raised by every durable catalogue commit).
    pub(crate) generation: u64,
    pub(crate) log_start: u64,
    pub(crate) segments: BTreeMap<u64, SegFile>,
    pub(crate) active: Active,
    /// Count of writes; `sync` makes everything up to the value it saw durable.
    pub(crate) write_seq: u64,
    /// Set by a failed write or sync: the store refuses further use (reopen to recover).
    pub(crate) failed: Option<String>,
    pub(crate) closed: bool,
}

impl State {
    pub(crate) fn check_usable(&self) -> Result<(), StorageError> {
        if let Some(why) = &self.failed {
            return Err(StorageError::Io(format!("store failed earlier ({why}); reopen it")));
        }
        if self.closed {
            return Err(StorageError::Io("store is closed".into()));
        }
        Ok(())
    }
}

/// Group-commit bookkeeping.
#[derive(Debug, Default)]
pub(crate) struct SyncState {
    /// Every write with a sequence number up to this is durable.
    pub(crate) synced_seq: u64,
    /// A thread is running an fdatasync for everyone.
    pub(crate) leader: bool,
}

pub(crate) struct Inner {
    pub(crate) layout: Layout,
    pub(crate) identity: Identity,
    pub(crate) options: StorageOptions,
    pub(crate) catalogue: Catalogue,
    /// Written by the sync leader only (and by `open`, before anyone else can).
    pub(crate) watermark: Mutex<WatermarkFile>,
    pub(crate) state: Mutex<State>,
    pub(crate) sync: Mutex<SyncState>,
    pub(crate) synced: Condvar,
    /// Serializes snapshot writers and readers (compact, install_snapshot, snapshot).
    pub(crate) snapshot_lock: Mutex<()>,
    pub(crate) counters: Counters,
    pub(crate) report: RecoveryReport,
}

/// A durable Raft log on sled plus checksummed segment files. Cheap to clone: clones share the
/// store. See the [crate documentation](crate) for the design.
#[derive(Clone)]
pub struct SledStorage {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for SledStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStorage").field("path", &self.inner.layout.root).finish_non_exhaustive()
    }
}

fn poisoned() -> StorageError {
    StorageError::Io("store lock poisoned by a panic; reopen the store".into())
}

/// A contiguous byte range of one segment holding some of the requested entries.
struct Span {
    seq: u64,
    file: SegFile,
    start: u64,
    end: u64,
    items: Vec<(Index, Term, Loc)>,
}

/// Spans closer than this are read in one go.
const SPAN_GAP_BYTES: u64 = 64 << 10;

impl SledStorage {
    /// Opens the store in `path`, creating and bootstrapping it (with
    /// `options.initial_conf_state`) if the directory holds no store. Verifies every checksum,
    /// trims a torn tail left by a crash (with a warning), and refuses a store of another
    /// cluster or node, or one whose acknowledged data is damaged.
    pub fn open(path: impl AsRef<Path>, options: StorageOptions) -> Result<SledStorage, OpenError> {
        crate::open::open(path.as_ref(), options)
    }

    /// Syncs, records a clean close (so the next open also checks the tail strictly), and
    /// refuses further writes through any clone. The directory stays locked until the last clone
    /// is dropped.
    pub fn close(&self) -> Result<(), StorageError> {
        crate::write::close(&self.inner)
    }

    /// What the store has done since it was opened.
    pub fn stats(&self) -> StoreStats {
        self.inner.counters.snapshot()
    }

    /// What the last open found and repaired.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.inner.report
    }

    /// Bytes on disk: segment files, snapshot files, sled's files and the sync watermark file.
    pub fn disk_usage_bytes(&self) -> u64 {
        let l = &self.inner.layout;
        let watermark = std::fs::metadata(l.root.join(crate::watermark::WATERMARK_FILE));
        dir_size(&l.wal)
            + dir_size(&l.snapshots)
            + dir_size(&l.catalogue)
            + watermark.map_or(0, |m| m.len())
    }

    /// The directory the store lives in.
    pub fn path(&self) -> &Path {
        &self.inner.layout.root
    }

    pub(crate) fn state(&self) -> Result<MutexGuard<'_, State>, StorageError> {
        self.inner.state.lock().map_err(|_| poisoned())
    }

    /// Plans the reads for `entries`: bounds checks and the byte limit, under the lock.
    fn plan(&self, low: Index, high: Index, max_bytes: u64) -> Result<Vec<Span>, StorageError> {
        let st = self.state()?;
        let first = st.index.first_index();
        let last = st.index.last_index();
        if low < first {
            return Err(StorageError::Compacted { index: low });
        }
        if high > last + 1 {
            return Err(StorageError::Unavailable { index: high - 1, last_index: last });
        }
        let mut spans: Vec<Span> = Vec::new();
        let mut bytes = 0u64;
        for index in low..high {
            let loc = st.index.loc(index);
            let data_len = loc.len as u64 - (RECORD_HEADER_LEN + ENTRY_FIXED_LEN) as u64;
            bytes += ENTRY_OVERHEAD_BYTES + data_len;
            if index > low && bytes > max_bytes {
                break;
            }
            let term = st.index.term(index)?;
            let seq = u64::from(loc.seq);
            let end = loc.pos + loc.len as u64;
            match spans.last_mut() {
                Some(s)
                    if s.seq == seq && loc.pos >= s.end && loc.pos - s.end <= SPAN_GAP_BYTES =>
                {
                    s.end = end;
                    s.items.push((index, term, loc));
                }
                _ => {
                    let file = st.segments.get(&seq).cloned().ok_or_else(|| {
                        StorageError::Io(format!(
                            "segment {seq} of entry {index} is not open (bug)"
                        ))
                    })?;
                    spans.push(Span {
                        seq,
                        file,
                        start: loc.pos,
                        end,
                        items: vec![(index, term, loc)],
                    });
                }
            }
        }
        Ok(spans)
    }

    fn read_span(&self, span: Span, out: &mut Vec<Entry>) -> Result<(), StorageError> {
        let name = Layout::segment_name(span.seq);
        let mut buf = vec![0u8; (span.end - span.start) as usize];
        span.file.file.read_exact_at(&mut buf, span.start).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => StorageError::Corrupt {
                what: format!("segment {name}"),
                detail: format!(
                    "file is shorter than the indexed entries (ends before {})",
                    span.end
                ),
            },
            _ => StorageError::Io(format!("reading segment {name}: {e}")),
        })?;
        let buf = Bytes::from(buf);
        for (index, term, loc) in span.items {
            let rel = (loc.pos - span.start) as usize;
            let bad = |detail: String| StorageError::Corrupt {
                what: format!("entry {index} in segment {name} at offset {}", loc.pos),
                detail,
            };
            match record_at(&buf[rel..rel + loc.len as usize], span.file.seed) {
                RecordAt::Valid {
                    record: Record::Entry { index: i, term: t, kind, data }, ..
                } if i == index && t == term => {
                    out.push(Entry {
                        index,
                        term,
                        kind,
                        data: buf.slice(rel + data.start..rel + data.end),
                    });
                }
                RecordAt::Valid { record, .. } => {
                    return Err(bad(format!(
                        "record is {record:?}, expected entry {index} of term {term}"
                    )));
                }
                other => return Err(bad(format!("checksum or format failure: {other:?}"))),
            }
        }
        Ok(())
    }
}

fn dir_size(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else { return 0 };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            _ => e.metadata().map(|m| m.len()).unwrap_or(0),
        })
        .sum()
}

impl Storage for SledStorage {
    fn initial_state(&self) -> Result<InitialState, StorageError> {
        let st = self.state()?;
        Ok(InitialState { hard_state: st.hard_state, conf_state: st.conf_state.clone() })
    }

    fn entries(&self, low: Index, high: Index, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        let spans = self.plan(low, high, max_bytes)?;
        let mut out = Vec::with_capacity(spans.iter().map(|s| s.items.len()).sum());
        for span in spans {
            self.read_span(span, &mut out)?;
        }
        Ok(out)
    }

    fn term(&self, index: Index) -> Result<Term, StorageError> {
        self.state()?.index.term(index)
    }

    fn first_index(&self) -> Result<Index, StorageError> {
        Ok(self.state()?.index.first_index())
    }

    fn last_index(&self) -> Result<Index, StorageError> {
        Ok(self.state()?.index.last_index())
    }

    fn snapshot(&self) -> Result<Snapshot, StorageError> {
        let _g = self.inner.snapshot_lock.lock().map_err(|_| poisoned())?;
        let current = self.state()?.snapshot.clone();
        let Some(r) = current else { return Ok(Snapshot::default()) };
        let data = snapfile::read_file(&self.inner.layout.snapshots, self.inner.identity, &r)?;
        Ok(Snapshot { meta: r.meta, data })
    }
}

impl LogStore for SledStorage {
    fn append_entries(&self, entries: &[Entry]) -> Result<(), StorageError> {
        crate::write::append_entries(self, entries)
    }

    fn save_hard_state(&self, hard_state: &HardState) -> Result<(), StorageError> {
        crate::write::save_hard_state(self, hard_state)
    }

    fn save_conf_state(&self, conf_state: &ConfState) -> Result<(), StorageError> {
        crate::write::save_conf_state(self, conf_state)
    }

    fn install_snapshot(&self, snapshot: &Snapshot) -> Result<(), StorageError> {
        crate::write::install_snapshot(self, snapshot)
    }

    fn compact(&self, snapshot: &Snapshot) -> Result<(), StorageError> {
        crate::write::compact(self, snapshot)
    }

    fn sync(&self) -> Result<(), StorageError> {
        crate::write::sync(self)
    }
}
