//! The sync watermark file: how much of the log the last completed `sync` made durable, itself
//! made durable before that `sync` returns.
//!
//! A record checksum cannot tell a record that a crash tore before its fdatasync completed (never
//! acknowledged: trim it) from an acknowledged record damaged afterwards (refuse to start). Only
//! evidence written *after* the fdatasync returned can. So every group-commit round, once the
//! active segment's fdatasync has returned, writes the segment number and the length it covered
//! into this file and fdatasyncs it, and only then acknowledges its callers: one extra fdatasync
//! per round, not per entry. At open every byte of that segment below the recorded length must be
//! present and intact (see `scan.rs`).
//!
//! ```text
//! <dir>/sync-watermark: two 4 KiB pages, each holding one 512-byte slot then zeros; the slots
//! are written alternately (slot = sequence % 2).
//! +----------+-------------+----------------+-------------+--------------+-------------+---------+-------+------------+
//! | magic[8] | version u32 | cluster_id u64 | node_id u64 | sequence u64 | segment u64 | len u64 | zeros | crc32c u32 |
//! +----------+-------------+----------------+-------------+--------------+-------------+---------+-------+------------+
//! ```
//!
//! The crc covers the slot's first 508 bytes. A slot is one sector, alone in its page with bytes
//! that never change, and a sector write is assumed atomic (as PostgreSQL assumes for its control
//! file); the page keeps the two slots apart on disks with 4 KiB physical sectors too. So a crash
//! while one slot is written leaves that slot's old value, and the other slot holds the value
//! before it: both slots always hold valid values with consecutive sequence numbers. Anything else
//! (a checksum mismatch, another store's identity, a wrong file length, a non-zero padding byte, a
//! gap) is damage, and the store refuses to open, naming the file and offset.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use raft_core::StorageError;

use crate::catalogue::{Identity, SegmentLen};
use crate::codec::{Enc, FORMAT_VERSION};

/// File name inside the store's directory.
pub(crate) const WATERMARK_FILE: &str = "sync-watermark";
/// Bytes of one slot (one sector).
const SLOT_LEN: usize = 512;
/// Slot `k` starts at `k * PAGE_LEN`; the rest of its page is zeros.
const PAGE_LEN: usize = 4096;
/// Bytes of the whole file.
const FILE_LEN: usize = 2 * PAGE_LEN;
const MAGIC: &[u8; 8] = b"RAFTWMK1";

fn corrupt(offset: usize, detail: String) -> StorageError {
    StorageError::Corrupt {
        what: format!("sync watermark file {WATERMARK_FILE} at offset {offset}"),
        detail,
    }
}

/// One slot's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Slot {
    sequence: u64,
    at: SegmentLen,
}

fn encode_slot(identity: Identity, slot: Slot) -> Vec<u8> {
    let mut e = Enc::default();
    e.buf.extend_from_slice(MAGIC);
    e.u32(FORMAT_VERSION).u64(identity.cluster_id).u64(identity.node_id);
    e.u64(slot.sequence).u64(slot.at.seq).u64(slot.at.len);
    e.buf.resize(SLOT_LEN - 4, 0);
    let crc = crc32c::crc32c(&e.buf);
    e.u32(crc);
    debug_assert_eq!(e.buf.len(), SLOT_LEN);
    e.buf
}

/// Slot `k` as the whole page written at file creation.
fn encode_page(identity: Identity, slot: Slot) -> Vec<u8> {
    let mut page = encode_slot(identity, slot);
    page.resize(PAGE_LEN, 0);
    page
}

/// Decodes slot `k` from its page.
fn decode_slot(page: &[u8], k: usize, identity: Identity) -> Result<Slot, StorageError> {
    let offset = k * PAGE_LEN;
    if let Some(i) = page[SLOT_LEN..].iter().position(|&b| b != 0) {
        let detail = format!("slot {k}: a byte after the slot, always zero, is not");
        return Err(corrupt(offset + SLOT_LEN + i, detail));
    }
    let buf = &page[..SLOT_LEN];
    let bad = |detail: &str| corrupt(offset, format!("slot {k}: {detail}"));
    let crc = u32::from_le_bytes(buf[SLOT_LEN - 4..].try_into().expect("4 bytes"));
    if crc32c::crc32c(&buf[..SLOT_LEN - 4]) != crc {
        return Err(bad("checksum mismatch"));
    }
    let u64_at = |at: usize| u64::from_le_bytes(buf[at..at + 8].try_into().expect("8 bytes"));
    let (magic, version) = (&buf[..8], u32::from_le_bytes(buf[8..12].try_into().expect("4 bytes")));
    let (cluster_id, node_id, sequence) = (u64_at(12), u64_at(20), u64_at(28));
    let (seq, len) = (u64_at(36), u64_at(44));
    if magic != MAGIC {
        return Err(bad("bad magic"));
    }
    if version != FORMAT_VERSION {
        return Err(bad(&format!("unsupported format version {version}")));
    }
    if (Identity { cluster_id, node_id }) != identity {
        return Err(bad(&format!(
            "written by cluster {cluster_id} node {node_id}, not this store"
        )));
    }
    if sequence % 2 != k as u64 {
        return Err(bad(&format!("holds sequence {sequence}, which belongs in the other slot")));
    }
    Ok(Slot { sequence, at: SegmentLen { seq, len } })
}

/// Decodes a whole watermark file and returns its newer slot (pure, for open and fuzzing).
pub(crate) fn parse(buf: &[u8], identity: Identity) -> Result<(u64, SegmentLen), StorageError> {
    if buf.len() != FILE_LEN {
        let detail = format!("file is {} bytes, not {FILE_LEN}", buf.len());
        return Err(corrupt(buf.len().min(FILE_LEN), detail));
    }
    let a = decode_slot(&buf[..PAGE_LEN], 0, identity)?;
    let b = decode_slot(&buf[PAGE_LEN..], 1, identity)?;
    let (older, newer) = if a.sequence < b.sequence { (a, b) } else { (b, a) };
    // The next write numbers its slot `newer.sequence + 1`, so that must exist too.
    if older.sequence.checked_add(1) != Some(newer.sequence) || newer.sequence == u64::MAX {
        let detail = format!(
            "slots hold sequences {} and {}; a crash leaves consecutive ones",
            a.sequence, b.sequence
        );
        return Err(corrupt(0, detail));
    }
    if newer.at < older.at {
        let detail = format!(
            "newer slot (segment {} length {}) is behind the older one (segment {} length {})",
            newer.at.seq, newer.at.len, older.at.seq, older.at.len
        );
        return Err(corrupt(newer.sequence as usize % 2 * PAGE_LEN, detail));
    }
    Ok((newer.sequence, newer.at))
}

fn io(path: &Path, e: std::io::Error) -> StorageError {
    StorageError::Io(format!("{}: {e}", path.display()))
}

/// The open watermark file. Only the sync leader (one at a time) and `open` write it.
#[derive(Debug)]
pub(crate) struct WatermarkFile {
    file: File,
    path: PathBuf,
    identity: Identity,
    /// Sequence number of the newer slot.
    sequence: u64,
    /// What the newer slot says.
    durable: SegmentLen,
}

impl WatermarkFile {
    /// Creates (or replaces) the file in `root` with both slots saying `at`, and makes it and its
    /// directory entry durable.
    pub(crate) fn create(
        root: &Path,
        identity: Identity,
        at: SegmentLen,
    ) -> Result<WatermarkFile, StorageError> {
        let path = root.join(WATERMARK_FILE);
        let mut buf = encode_page(identity, Slot { sequence: 0, at });
        buf.extend_from_slice(&encode_page(identity, Slot { sequence: 1, at }));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .and_then(|f| {
                f.write_all_at(&buf, 0)?;
                f.sync_all()?;
                File::open(root)?.sync_all()?;
                Ok(f)
            })
            .map_err(|e| io(&path, e))?;
        Ok(WatermarkFile { file, path, identity, sequence: 1, durable: at })
    }

    /// Opens and verifies the file in `root`.
    pub(crate) fn open(root: &Path, identity: Identity) -> Result<WatermarkFile, StorageError> {
        let path = root.join(WATERMARK_FILE);
        let missing = |e: std::io::Error| match e.kind() {
            std::io::ErrorKind::NotFound => corrupt(0, "the file is missing".into()),
            _ => io(&path, e),
        };
        let file = OpenOptions::new().read(true).write(true).open(&path).map_err(missing)?;
        let mut buf = Vec::with_capacity(FILE_LEN);
        // One byte more than a good file holds, so that a longer file is caught.
        (&file).take(FILE_LEN as u64 + 1).read_to_end(&mut buf).map_err(|e| io(&path, e))?;
        let (sequence, durable) = parse(&buf, identity)?;
        Ok(WatermarkFile { file, path, identity, sequence, durable })
    }

    /// What the newer slot says: `durable.len` bytes of segment `durable.seq` are durable.
    pub(crate) fn durable(&self) -> SegmentLen {
        self.durable
    }

    /// Records durably that `at` is durable. `at` never goes backwards.
    pub(crate) fn record(&mut self, at: SegmentLen) -> Result<(), StorageError> {
        assert!(
            at >= self.durable,
            "raft-storage: sync watermark would go back from {:?} to {at:?}",
            self.durable
        );
        let sequence = self.sequence + 1;
        let slot = encode_slot(self.identity, Slot { sequence, at });
        let offset = (sequence % 2) * PAGE_LEN as u64;
        self.file
            .write_all_at(&slot, offset)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| io(&self.path, e))?;
        self.sequence = sequence;
        self.durable = at;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: Identity = Identity { cluster_id: 3, node_id: 4 };

    fn file(a: Slot, b: Slot) -> Vec<u8> {
        let mut buf = encode_page(ID, a);
        buf.extend_from_slice(&encode_page(ID, b));
        buf
    }

    fn slot(sequence: u64, seq: u64, len: u64) -> Slot {
        Slot { sequence, at: SegmentLen { seq, len } }
    }

    #[test]
    fn newer_slot_wins() {
        let buf = file(slot(4, 2, 100), slot(5, 2, 300));
        assert_eq!(parse(&buf, ID).unwrap(), (5, SegmentLen { seq: 2, len: 300 }));
        let buf = file(slot(6, 3, 48), slot(5, 2, 300));
        assert_eq!(parse(&buf, ID).unwrap(), (6, SegmentLen { seq: 3, len: 48 }));
    }

    #[test]
    fn every_bit_flip_and_truncation_is_detected() {
        let buf = file(slot(8, 1, 4096), slot(9, 1, 8192));
        for i in 0..buf.len() {
            for bit in 0..8 {
                let mut b = buf.clone();
                b[i] ^= 1 << bit;
                assert!(parse(&b, ID).is_err(), "flip at {i} bit {bit}");
            }
        }
        for n in 0..buf.len() {
            assert!(parse(&buf[..n], ID).is_err(), "truncated to {n}");
        }
        let mut longer = buf.clone();
        longer.push(0);
        assert!(parse(&longer, ID).is_err());
    }

    #[test]
    fn inconsistent_slots_are_refused() {
        // A gap in the sequence, no sequence left, a slot in the wrong place, a newer slot behind
        // the older one, another store's slot.
        assert!(parse(&file(slot(2, 1, 10), slot(5, 1, 20)), ID).is_err());
        assert!(parse(&file(slot(u64::MAX - 1, 1, 10), slot(u64::MAX, 1, 20)), ID).is_err());
        assert!(parse(&file(slot(3, 1, 10), slot(4, 1, 20)), ID).is_err());
        assert!(parse(&file(slot(4, 1, 30), slot(5, 1, 20)), ID).is_err());
        let mut buf = encode_page(Identity { cluster_id: 3, node_id: 5 }, slot(0, 1, 0));
        buf.extend_from_slice(&encode_page(ID, slot(1, 1, 0)));
        let err = parse(&buf, ID).unwrap_err().to_string();
        assert!(err.contains(WATERMARK_FILE) && err.contains("node 5"), "{err}");
    }

    #[test]
    fn create_record_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = WatermarkFile::create(dir.path(), ID, SegmentLen { seq: 1, len: 48 }).unwrap();
        for len in [100, 200, 300] {
            w.record(SegmentLen { seq: 1, len }).unwrap();
        }
        w.record(SegmentLen { seq: 2, len: 48 }).unwrap();
        let w = WatermarkFile::open(dir.path(), ID).unwrap();
        assert_eq!(w.durable(), SegmentLen { seq: 2, len: 48 });
        // A crash while writing a slot leaves its old value: the other slot then is the newer.
        let path = dir.path().join(WATERMARK_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        let newer = (w.sequence % 2) as usize * PAGE_LEN;
        let old = encode_slot(ID, slot(w.sequence - 2, 1, 200));
        bytes[newer..newer + SLOT_LEN].copy_from_slice(&old);
        std::fs::write(&path, &bytes).unwrap();
        let w = WatermarkFile::open(dir.path(), ID).unwrap();
        assert_eq!(w.durable(), SegmentLen { seq: 1, len: 300 });
        std::fs::remove_file(&path).unwrap();
        let err = WatermarkFile::open(dir.path(), ID).unwrap_err().to_string();
        assert!(err.contains("missing"), "{err}");
    }
}
