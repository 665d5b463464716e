//! Snapshots: the whole state (history above the compaction point, revisions, applied index)
//! as one checksummed byte string.
//!
//! ```text
//! "RKVSNAP" 1u8 | revision i64 | compacted i64 | applied u64 | n u64     (little-endian)
//! n × (varint len, history sled key, varint len, history record)       (sled key order)
//! crc32c of everything before, u32 little-endian
//! ```
//!
//! The records are the sled layout's own (`layout.rs`); the index is rebuilt from them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::codec::{Dec, Enc};
use super::layout::{self, IndexEntry, Record};
use super::{Store, StoreError};

const MAGIC: &[u8; 8] = b"RKVSNAP\x01";

/// A decoded, checked snapshot, not yet installed.
struct Decoded {
    revision: i64,
    compacted_revision: i64,
    applied_index: u64,
    live_keys: u64,
    index: BTreeMap<Vec<u8>, IndexEntry>,
    batch: sled::Batch,
}

/// Counts the snapshot builders alive (see [`Store::snapshot_builder`]); compaction removes
/// history only while there are none.
#[derive(Debug, Default)]
pub(super) struct Gate {
    builders: Mutex<usize>,
}

/// A builder's hold on the [`Gate`], released on drop.
pub(super) struct Pass(Arc<Gate>);

impl Gate {
    pub(super) fn enter(self: &Arc<Self>) -> Pass {
        *self.builders.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        Pass(self.clone())
    }

    pub(super) fn is_idle(&self) -> bool {
        *self.builders.lock().unwrap_or_else(|e| e.into_inner()) == 0
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        *self.0.builders.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
    }
}

/// Encodes the state at `revision` from `db`, which may hold newer records (skipped).
pub(super) fn encode(
    db: &sled::Db,
    revision: i64,
    compacted_revision: i64,
    applied_index: u64,
) -> Result<Bytes, StoreError> {
    let mut e = Enc::default();
    e.buf.extend_from_slice(MAGIC);
    e.i64(revision);
    e.i64(compacted_revision);
    e.u64(applied_index);
    let count_at = e.buf.len();
    e.u64(0);
    let mut n = 0u64;
    for item in db.scan_prefix([layout::HISTORY]) {
        let (k, v) = item.map_err(StoreError::sled("snapshot scan"))?;
        let (_, _, rev) = layout::split_history_key(&k)
            .ok_or_else(|| StoreError::Corrupt("bad history key".into()))?;
        if rev > revision {
            continue;
        }
        e.bytes(&k);
        e.bytes(&v);
        n += 1;
    }
    e.buf[count_at..count_at + 8].copy_from_slice(&n.to_le_bytes());
    let crc = crc32c::crc32c(&e.buf);
    e.buf.extend_from_slice(&crc.to_le_bytes());
    Ok(Bytes::from(e.buf))
}

impl Store {
    pub(super) fn install_snapshot(&mut self, data: &[u8]) -> Result<(), StoreError> {
        let decoded = decode(data)?;
        self.db.clear().map_err(StoreError::sled("clear"))?;
        self.db.apply_batch(decoded.batch).map_err(StoreError::sled("restore batch"))?;
        self.revision = decoded.revision;
        self.compacted_revision = decoded.compacted_revision;
        // Whatever an earlier compaction left to remove is gone with the old state.
        self.pending_compaction = None;
        self.applied_index = decoded.applied_index;
        self.live_keys = decoded.live_keys;
        self.index = decoded.index;
        Ok(())
    }
}

fn corrupt(reason: impl Into<String>) -> StoreError {
    StoreError::CorruptSnapshot(reason.into())
}

fn decode(data: &[u8]) -> Result<Decoded, StoreError> {
    let Some((body, crc)) = data.split_last_chunk::<4>() else {
        return Err(corrupt("shorter than its checksum"));
    };
    if crc32c::crc32c(body) != u32::from_le_bytes(*crc) {
        return Err(corrupt("checksum mismatch"));
    }
    let mut d = Dec::new(body, "snapshot");
    decode_body(&mut d).map_err(|e| match e {
        StoreError::Malformed(reason) => corrupt(reason),
        e => e,
    })
}

fn decode_body(d: &mut Dec<'_>) -> Result<Decoded, StoreError> {
    if d.take(MAGIC.len())? != MAGIC {
        return Err(corrupt("not a raft-kv snapshot (bad magic or version)"));
    }
    let revision = d.i64()?;
    let compacted_revision = d.i64()?;
    let applied_index = d.u64()?;
    if !(1..i64::MAX).contains(&revision) || !(-1..=revision).contains(&compacted_revision) {
        return Err(corrupt(format!("bad revisions {revision} (compacted {compacted_revision})")));
    }
    let n = d.u64()?;
    if n > d.remaining() as u64 {
        return Err(corrupt("record count exceeds the bytes left"));
    }
    let mut batch = sled::Batch::default();
    let mut index = BTreeMap::new();
    let mut prev_hkey: Vec<u8> = Vec::new();
    // The key whose records are being read, and its latest record so far.
    let mut last: Option<(Vec<u8>, Vec<u8>, IndexEntry)> = None;
    for _ in 0..n {
        let hkey = d.bytes()?;
        let value = d.bytes()?;
        let (prefix, key, rev) =
            layout::split_history_key(&hkey).ok_or_else(|| corrupt("bad history key"))?;
        let record = layout::decode_record(&value).ok_or_else(|| corrupt("bad history record"))?;
        check_record(&record, rev, revision)?;
        if hkey <= prev_hkey {
            return Err(corrupt("records out of order"));
        }
        if let Some((_, k, entry)) = last.take_if(|(p, _, _)| p.as_slice() != prefix) {
            index.insert(k, entry);
        }
        last = Some((prefix.to_vec(), key.to_vec(), record.index_entry(rev)));
        batch.insert(hkey.as_slice(), value);
        prev_hkey = hkey;
    }
    if let Some((_, k, entry)) = last {
        index.insert(k, entry);
    }
    d.finish()?;
    let live_keys = index.values().filter(|e| matches!(e, IndexEntry::Live(_))).count() as u64;
    Ok(Decoded { revision, compacted_revision, applied_index, live_keys, index, batch })
}

fn check_record(record: &Record, rev: i64, revision: i64) -> Result<(), StoreError> {
    if !(1..=revision).contains(&rev) {
        return Err(corrupt(format!("record at revision {rev} outside 1..={revision}")));
    }
    if let Record::Put { create_revision, version, .. } = record
        && (!(1..=rev).contains(create_revision) || !(1..=rev).contains(version))
    {
        return Err(corrupt(format!("bad put at revision {rev}")));
    }
    Ok(())
}
