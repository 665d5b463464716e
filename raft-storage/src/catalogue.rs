//! The sled catalogue: identity, membership, snapshot metadata and the segment index.
//!
//! Every value is checksummed with its key (see [`crate::codec::seal_value`]). Changes that must
//! survive a crash go through [`Catalogue::commit`]: one atomic sled batch, `flush()`, then an
//! fsync of every file and directory sled keeps, because sled 0.34's flush only issues
//! `sync_file_range`, which neither flushes the disk cache nor persists the file size.
//! Each durable commit also raises the catalogue *generation*; the segment files record the
//! generations they saw, so a catalogue that went back in time is detected at open.

use std::collections::BTreeMap;
use std::fs::File;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use raft_core::{ConfState, NodeId, SnapshotMeta, StorageError};

use crate::codec::{Dec, DecodeError, Enc, FORMAT_VERSION, open_value, seal_value};
use crate::stats::Counters;

const K_IDENTITY: &[u8] = b"identity";
const K_PHASE: &[u8] = b"phase";
const K_GENERATION: &[u8] = b"generation";
const K_CONF_STATE: &[u8] = b"conf_state";
const K_SNAPSHOT: &[u8] = b"snapshot";
const K_LOG_START: &[u8] = b"log_start";
const K_CLEAN_CLOSE: &[u8] = b"clean_close";
const SEALED_PREFIX: &[u8] = b"sealed/";

/// Which cluster and node a store belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Identity {
    pub(crate) cluster_id: u64,
    pub(crate) node_id: NodeId,
}

/// Bootstrap progress: a store is usable once it is `Ready`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    Bootstrapping,
    Ready,
}

/// The current snapshot: its metadata and the file holding its data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SnapshotRef {
    pub(crate) meta: SnapshotMeta,
    /// File name inside the `snapshots` directory.
    pub(crate) file: String,
    pub(crate) data_len: u64,
    /// crc32c of the whole data.
    pub(crate) data_crc: u32,
}

/// A length of segment `seq`: after a clean close its exact length; in the sync watermark file, a
/// length that an fdatasync had covered. Ordered by segment, then length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct SegmentLen {
    pub(crate) seq: u64,
    pub(crate) len: u64,
}

/// Everything the catalogue holds, decoded and verified.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Loaded {
    pub(crate) identity: Option<Identity>,
    pub(crate) phase: Option<Phase>,
    pub(crate) generation: u64,
    pub(crate) conf_state: Option<ConfState>,
    pub(crate) snapshot: Option<SnapshotRef>,
    /// First segment of the log; older ones are garbage from an interrupted compaction.
    pub(crate) log_start: Option<u64>,
    /// Sealed segments and their exact durable lengths.
    pub(crate) sealed: BTreeMap<u64, u64>,
    pub(crate) clean_close: Option<SegmentLen>,
}

fn bad(key: &[u8], e: DecodeError) -> StorageError {
    StorageError::Corrupt {
        what: format!("sled catalogue key {:?}", String::from_utf8_lossy(key)),
        detail: e.0,
    }
}

impl Loaded {
    /// Decodes raw catalogue pairs (pure, so that fuzzing can feed it arbitrary bytes).
    pub(crate) fn decode<I>(pairs: I) -> Result<Loaded, StorageError>
    where
        I: IntoIterator<Item = (Vec<u8>, Vec<u8>)>,
    {
        let mut l = Loaded::default();
        for (key, value) in pairs {
            let payload = open_value(&key, &value).map_err(|e| bad(&key, e))?;
            l.decode_one(&key, payload).map_err(|e| bad(&key, e))?;
        }
        Ok(l)
    }

    fn decode_one(&mut self, key: &[u8], payload: &[u8]) -> Result<(), DecodeError> {
        let mut d = Dec::new(payload);
        match key {
            K_IDENTITY => {
                let version = d.u32()?;
                if version != FORMAT_VERSION {
                    return Err(DecodeError(format!("unsupported format version {version}")));
                }
                self.identity = Some(Identity { cluster_id: d.u64()?, node_id: d.u64()? });
            }
            K_PHASE => {
                self.phase = Some(match d.u8()? {
                    1 => Phase::Bootstrapping,
                    2 => Phase::Ready,
                    p => return Err(DecodeError(format!("unknown phase {p}"))),
                })
            }
            K_GENERATION => self.generation = d.u64()?,
            K_CONF_STATE => self.conf_state = Some(d.conf_state()?),
            K_SNAPSHOT => {
                let meta =
                    SnapshotMeta { index: d.u64()?, term: d.u64()?, conf_state: d.conf_state()? };
                let file = String::from_utf8(d.bytes()?.to_vec())
                    .map_err(|_| DecodeError("snapshot file name is not UTF-8".into()))?;
                let data_len = d.u64()?;
                let data_crc = d.u32()?;
                self.snapshot = Some(SnapshotRef { meta, file, data_len, data_crc });
            }
            K_LOG_START => self.log_start = Some(d.u64()?),
            K_CLEAN_CLOSE => self.clean_close = Some(SegmentLen { seq: d.u64()?, len: d.u64()? }),
            k if k.starts_with(SEALED_PREFIX) && k.len() == SEALED_PREFIX.len() + 8 => {
                let seq = u64::from_be_bytes(k[SEALED_PREFIX.len()..].try_into().expect("8 bytes"));
                self.sealed.insert(seq, d.u64()?);
            }
            _ => return Err(DecodeError("unknown key".into())),
        }
        d.finish()
    }
}

/// A set of changes applied atomically.
#[derive(Default)]
pub(crate) struct Ops {
    ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl Ops {
    fn put(mut self, key: &[u8], enc: Enc) -> Ops {
        let v = seal_value(key, &enc.buf);
        self.ops.push((key.to_vec(), Some(v)));
        self
    }
    pub(crate) fn identity(self, id: Identity) -> Ops {
        let mut e = Enc::default();
        e.u32(FORMAT_VERSION).u64(id.cluster_id).u64(id.node_id);
        self.put(K_IDENTITY, e)
    }
    pub(crate) fn phase(self, phase: Phase) -> Ops {
        let mut e = Enc::default();
        e.u8(if phase == Phase::Bootstrapping { 1 } else { 2 });
        self.put(K_PHASE, e)
    }
    pub(crate) fn generation(self, generation: u64) -> Ops {
        let mut e = Enc::default();
        e.u64(generation);
        self.put(K_GENERATION, e)
    }
    pub(crate) fn conf_state(self, cs: &ConfState) -> Ops {
        let mut e = Enc::default();
        e.conf_state(cs);
        self.put(K_CONF_STATE, e)
    }
    pub(crate) fn snapshot(self, s: &SnapshotRef) -> Ops {
        let mut e = Enc::default();
        e.u64(s.meta.index).u64(s.meta.term).conf_state(&s.meta.conf_state);
        e.bytes(s.file.as_bytes()).u64(s.data_len).u32(s.data_crc);
        self.put(K_SNAPSHOT, e)
    }
    pub(crate) fn log_start(self, seq: u64) -> Ops {
        let mut e = Enc::default();
        e.u64(seq);
        self.put(K_LOG_START, e)
    }
    pub(crate) fn sealed(self, seq: u64, len: u64) -> Ops {
        let mut e = Enc::default();
        e.u64(len);
        self.put(&sealed_key(seq), e)
    }
    pub(crate) fn unseal(mut self, seq: u64) -> Ops {
        self.ops.push((sealed_key(seq), None));
        self
    }
    pub(crate) fn clean_close(self, c: Option<SegmentLen>) -> Ops {
        match c {
            Some(c) => {
                let mut e = Enc::default();
                e.u64(c.seq).u64(c.len);
                self.put(K_CLEAN_CLOSE, e)
            }
            None => {
                let mut s = self;
                s.ops.push((K_CLEAN_CLOSE.to_vec(), None));
                s
            }
        }
    }
}

fn sealed_key(seq: u64) -> Vec<u8> {
    let mut k = SEALED_PREFIX.to_vec();
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Runs a sled call, turning its errors and panics into storage errors.
fn guard<T>(what: &str, f: impl FnOnce() -> sled::Result<T>) -> Result<T, StorageError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(sled::Error::Io(e))) => Err(StorageError::Io(format!("sled {what}: {e}"))),
        Ok(Err(e @ sled::Error::Corruption { .. })) => Err(StorageError::Corrupt {
            what: format!("sled catalogue ({what})"),
            detail: e.to_string(),
        }),
        Ok(Err(e)) => Err(StorageError::Io(format!("sled {what}: {e}"))),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)");
            Err(StorageError::Corrupt {
                what: format!("sled catalogue ({what})"),
                detail: format!("sled panicked: {msg}"),
            })
        }
    }
}

/// The opened sled database.
pub(crate) struct Catalogue {
    db: sled::Db,
    dir: PathBuf,
}

impl Catalogue {
    /// Opens (or creates) the catalogue in `dir` with a page cache of `cache_capacity_bytes`.
    pub(crate) fn open(dir: &Path, cache_capacity_bytes: u64) -> Result<Catalogue, StorageError> {
        let config = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_capacity_bytes)
            // Changes that must be durable are flushed and fsynced by `commit`; the background
            // flush only carries lazily forgotten segments to disk.
            .flush_every_ms(Some(1000));
        let db = guard("open", || config.open())?;
        Ok(Catalogue { db, dir: dir.to_path_buf() })
    }

    /// Reads and verifies every key.
    pub(crate) fn load(&self) -> Result<Loaded, StorageError> {
        let pairs = guard("scan", || {
            self.db
                .iter()
                .map(|kv| kv.map(|(k, v)| (k.to_vec(), v.to_vec())))
                .collect::<sled::Result<Vec<_>>>()
        })?;
        Loaded::decode(pairs)
    }

    fn apply(&self, ops: Ops) -> Result<(), StorageError> {
        let mut batch = sled::Batch::default();
        for (k, v) in ops.ops {
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        guard("apply_batch", || self.db.apply_batch(batch))
    }

    /// Applies `ops` atomically and makes them durable before returning.
    pub(crate) fn commit(&self, ops: Ops, counters: &Counters) -> Result<(), StorageError> {
        self.apply(ops)?;
        guard("flush", || self.db.flush())?;
        fsync_tree(&self.dir, counters).map_err(|e| {
            StorageError::Io(format!("fsync of sled files in {}: {e}", self.dir.display()))
        })?;
        counters.add(&counters.catalogue_commits, 1);
        Ok(())
    }

    /// Applies `ops` atomically without waiting for durability (garbage collection only).
    pub(crate) fn apply_lazily(&self, ops: Ops) -> Result<(), StorageError> {
        self.apply(ops)
    }
}

/// fsyncs every file under `dir` and every directory, `dir` included.
fn fsync_tree(dir: &Path, counters: &Counters) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let kind = entry.file_type()?;
        let r = if kind.is_dir() {
            fsync_tree(&path, counters)
        } else {
            File::open(&path).and_then(|f| f.sync_all())
        };
        match r {
            // sled may replace a snapshot file under us; the new one is synced by sled.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
            Ok(()) => counters.add(&counters.catalogue_fsyncs, 1),
        }
    }
    File::open(dir)?.sync_all()?;
    counters.add(&counters.catalogue_fsyncs, 1);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_round_trip_and_unknown_keys() {
        let snap = SnapshotRef {
            meta: SnapshotMeta {
                index: 5,
                term: 2,
                conf_state: ConfState { voters: vec![1], ..Default::default() },
            },
            file: "s".into(),
            data_len: 3,
            data_crc: 4,
        };
        let ops = Ops::default()
            .identity(Identity { cluster_id: 9, node_id: 1 })
            .phase(Phase::Ready)
            .generation(3)
            .snapshot(&snap)
            .log_start(2)
            .sealed(2, 100)
            .clean_close(Some(SegmentLen { seq: 3, len: 50 }));
        let pairs: Vec<_> = ops.ops.into_iter().map(|(k, v)| (k, v.unwrap())).collect();
        let l = Loaded::decode(pairs.clone()).unwrap();
        assert_eq!(l.identity, Some(Identity { cluster_id: 9, node_id: 1 }));
        assert_eq!(l.snapshot, Some(snap));
        assert_eq!(l.sealed.get(&2), Some(&100));
        assert_eq!(l.clean_close, Some(SegmentLen { seq: 3, len: 50 }));
        let mut swapped = pairs.clone();
        swapped[0].0 = K_PHASE.to_vec();
        assert!(Loaded::decode(swapped).is_err());
        let mut unknown = pairs;
        unknown.push((b"zzz".to_vec(), seal_value(b"zzz", b"")));
        assert!(Loaded::decode(unknown).is_err());
    }
}
