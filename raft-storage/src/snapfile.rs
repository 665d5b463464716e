//! Snapshot data files: a checksummed header, then the data in checksummed chunks.
//!
//! ```text
//! magic "RAFTSNP1" | version u32 | cluster_id u64 | node_id u64 | meta_len u32 | meta
//!   | data_len u64 | chunk_len u32 | header crc32c u32
//! chunk k: crc32c(k as u64 ‖ bytes) u32 | bytes (chunk_len, the last one shorter)
//! ```
//!
//! The chunk number is inside each chunk's checksum, so chunks cannot be swapped. A file is
//! written under a temporary name, fsynced, renamed, and the directory fsynced, before the
//! catalogue points at it.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use bytes::Bytes;
use raft_core::{Snapshot, SnapshotMeta, StorageError};

use crate::catalogue::{Identity, SnapshotRef};
use crate::codec::{Dec, Enc, FORMAT_VERSION};
use crate::stats::Counters;

const MAGIC: &[u8; 8] = b"RAFTSNP1";
/// Data bytes per checksummed chunk.
pub(crate) const CHUNK_LEN: usize = 64 << 10;
/// Bound on the encoded metadata (a membership of many thousands of nodes fits).
const MAX_META_LEN: usize = 1 << 20;

fn io(path: &Path, e: std::io::Error) -> StorageError {
    StorageError::Io(format!("snapshot file {}: {e}", path.display()))
}

fn corrupt(name: &str, detail: String) -> StorageError {
    StorageError::Corrupt { what: format!("snapshot file {name}"), detail }
}

fn header(identity: Identity, meta: &SnapshotMeta, data_len: u64) -> Vec<u8> {
    let mut m = Enc::default();
    m.u64(meta.index).u64(meta.term).conf_state(&meta.conf_state);
    let mut e = Enc::default();
    e.buf.extend_from_slice(MAGIC);
    e.u32(FORMAT_VERSION).u64(identity.cluster_id).u64(identity.node_id);
    e.bytes(&m.buf).u64(data_len).u32(CHUNK_LEN as u32);
    let crc = crc32c::crc32c(&e.buf);
    e.u32(crc);
    e.buf
}

fn chunk_crc(k: u64, bytes: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&k.to_le_bytes()), bytes)
}

/// Writes `snapshot` durably to `dir/name` and describes it for the catalogue.
pub(crate) fn write(
    dir: &Path,
    name: &str,
    identity: Identity,
    snapshot: &Snapshot,
    counters: &Counters,
) -> Result<SnapshotRef, StorageError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(|e| io(&tmp, e))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let data = &snapshot.data;
    w.write_all(&header(identity, &snapshot.meta, data.len() as u64)).map_err(|e| io(&tmp, e))?;
    for (k, chunk) in data.chunks(CHUNK_LEN).enumerate() {
        w.write_all(&chunk_crc(k as u64, chunk).to_le_bytes()).map_err(|e| io(&tmp, e))?;
        w.write_all(chunk).map_err(|e| io(&tmp, e))?;
    }
    let file = w.into_inner().map_err(|e| io(&tmp, e.into_error()))?;
    file.sync_all().map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| io(&path, e))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io(dir, e))?;
    counters.add(&counters.snapshot_fsyncs, 2);
    Ok(SnapshotRef {
        meta: snapshot.meta.clone(),
        file: name.to_string(),
        data_len: data.len() as u64,
        data_crc: crc32c::crc32c(data),
    })
}

/// Reads the file of `expected` from `dir` and verifies all of it; returns the data.
pub(crate) fn read_file(
    dir: &Path,
    identity: Identity,
    expected: &SnapshotRef,
) -> Result<Bytes, StorageError> {
    let path = dir.join(&expected.file);
    let file = File::open(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            corrupt(&expected.file, "the file the catalogue names is missing".into())
        }
        _ => io(&path, e),
    })?;
    read(BufReader::with_capacity(1 << 20, file), identity, expected)
}

fn read_exact(
    r: &mut impl Read,
    buf: &mut [u8],
    name: &str,
    what: &str,
) -> Result<(), StorageError> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => corrupt(name, format!("file ends inside the {what}")),
        _ => StorageError::Io(format!("snapshot file {name}: {e}")),
    })
}

/// Verifies a snapshot file read from `r` against the catalogue's `expected` and returns its data.
pub(crate) fn read(
    mut r: impl Read,
    identity: Identity,
    expected: &SnapshotRef,
) -> Result<Bytes, StorageError> {
    let name = expected.file.as_str();
    let mut fixed = [0u8; 32];
    read_exact(&mut r, &mut fixed, name, "header")?;
    let mut d = Dec::new(&fixed);
    let bad_header = |detail: &str| corrupt(name, format!("header: {detail}"));
    if d.take(8).map_err(|e| bad_header(&e.0))? != MAGIC {
        return Err(bad_header("bad magic"));
    }
    let version = d.u32().map_err(|e| bad_header(&e.0))?;
    let found = Identity {
        cluster_id: d.u64().map_err(|e| bad_header(&e.0))?,
        node_id: d.u64().map_err(|e| bad_header(&e.0))?,
    };
    let meta_len = d.u32().map_err(|e| bad_header(&e.0))? as usize;
    if meta_len > MAX_META_LEN {
        return Err(bad_header("metadata length out of range"));
    }
    let mut rest = vec![0u8; meta_len + 16];
    read_exact(&mut r, &mut rest, name, "header")?;
    let mut d = Dec::new(&rest);
    let meta_bytes = d.take(meta_len).map_err(|e| bad_header(&e.0))?;
    let data_len = d.u64().map_err(|e| bad_header(&e.0))?;
    let chunk_len = d.u32().map_err(|e| bad_header(&e.0))? as usize;
    let crc = d.u32().map_err(|e| bad_header(&e.0))?;
    let computed = crc32c::crc32c_append(crc32c::crc32c(&fixed), &rest[..meta_len + 12]);
    if crc != computed {
        return Err(bad_header("checksum mismatch"));
    }
    if version != FORMAT_VERSION || chunk_len != CHUNK_LEN {
        return Err(bad_header("unsupported version or chunk length"));
    }
    if found != identity {
        return Err(bad_header(&format!(
            "written by cluster {} node {}, not this store's cluster {} node {}",
            found.cluster_id, found.node_id, identity.cluster_id, identity.node_id
        )));
    }
    let mut md = Dec::new(meta_bytes);
    let meta = (|| -> Result<SnapshotMeta, crate::codec::DecodeError> {
        let m = SnapshotMeta { index: md.u64()?, term: md.u64()?, conf_state: md.conf_state()? };
        md.finish()?;
        Ok(m)
    })()
    .map_err(|e| bad_header(&e.0))?;
    if meta != expected.meta || data_len != expected.data_len {
        return Err(bad_header("metadata differs from the catalogue's"));
    }
    let data = read_chunks(&mut r, name, data_len)?;
    if crc32c::crc32c(&data) != expected.data_crc {
        return Err(corrupt(name, "data checksum differs from the catalogue's".into()));
    }
    let mut extra = [0u8; 1];
    match r.read(&mut extra) {
        Ok(0) => Ok(Bytes::from(data)),
        Ok(_) => Err(corrupt(name, "trailing bytes after the last chunk".into())),
        Err(e) => Err(StorageError::Io(format!("snapshot file {name}: {e}"))),
    }
}

fn read_chunks(r: &mut impl Read, name: &str, data_len: u64) -> Result<Vec<u8>, StorageError> {
    let mut data = Vec::new();
    let mut k = 0u64;
    let mut crc = [0u8; 4];
    while (data.len() as u64) < data_len {
        let n = (data_len - data.len() as u64).min(CHUNK_LEN as u64) as usize;
        read_exact(r, &mut crc, name, &format!("checksum of chunk {k}"))?;
        let start = data.len();
        data.resize(start + n, 0);
        read_exact(r, &mut data[start..], name, &format!("chunk {k}"))?;
        if chunk_crc(k, &data[start..]) != u32::from_le_bytes(crc) {
            return Err(corrupt(
                name,
                format!("chunk {k} (data bytes {start}..{}) checksum mismatch", start + n),
            ));
        }
        k += 1;
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft_core::ConfState;

    #[test]
    fn write_read_and_every_flip() {
        let dir = tempfile::tempdir().unwrap();
        let id = Identity { cluster_id: 3, node_id: 4 };
        let meta = SnapshotMeta {
            index: 10,
            term: 2,
            conf_state: ConfState { voters: vec![4], ..Default::default() },
        };
        let data: Vec<u8> = (0..CHUNK_LEN * 2 + 100).map(|i| i as u8).collect();
        let snap = Snapshot { meta, data: Bytes::from(data) };
        let r = write(dir.path(), "s1", id, &snap, &Counters::default()).unwrap();
        assert_eq!(read_file(dir.path(), id, &r).unwrap(), snap.data);
        let bytes = std::fs::read(dir.path().join("s1")).unwrap();
        // Every byte position, one flip each, and a sample of truncations.
        for pos in (0..bytes.len()).step_by(97).chain(0..200) {
            let mut b = bytes.clone();
            b[pos] ^= 0x10;
            assert!(read(&b[..], id, &r).is_err(), "flip at {pos} undetected");
            assert!(read(&bytes[..pos], id, &r).is_err(), "truncation at {pos} undetected");
        }
        let other = Identity { cluster_id: 3, node_id: 5 };
        assert!(read(&bytes[..], other, &r).is_err());
    }
}
