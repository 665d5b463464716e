//! How the store lays its state out: history in one sled tree, the key index in memory.
//!
//! ```text
//! sled:    'h' len(key) key revision  -> the key's record at that revision
//!          (len and revision: u64 big-endian)
//!              Put:       0u8, create_revision, version, lease (i64 big-endian), value...
//!              Tombstone: 1u8
//! memory:  key -> IndexEntry (the key's latest record), ordered by key
//! ```
//!
//! As in etcd (an in-memory `treeIndex` over a bbolt backend), ranges walk the in-memory index
//! and fetch values from sled; a put is then a single sled insert. A history key's length prefix
//! keeps one key's records contiguous and ordered by revision, so "the record at or below
//! revision R" is one reverse range step. A key keeps its index entry while it has any history;
//! compaction removes both together. The index is rebuilt from the history on restore.
//!
//! Invariant: a key's index entry has the revision and the kind (live or tombstone) of the key's
//! last history record, and every key with history has an index entry.

pub(super) const HISTORY: u8 = b'h';
const LIVE: u8 = 0;
const TOMBSTONE: u8 = 1;

/// The metadata of a live key-value (everything but key and value).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Meta {
    pub(super) mod_revision: i64,
    pub(super) create_revision: i64,
    pub(super) version: i64,
    pub(super) lease: i64,
}

/// A key's latest record, as kept in the index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum IndexEntry {
    Live(Meta),
    Tombstone { mod_revision: i64 },
}

impl IndexEntry {
    pub(super) fn mod_revision(&self) -> i64 {
        match self {
            IndexEntry::Live(m) => m.mod_revision,
            IndexEntry::Tombstone { mod_revision } => *mod_revision,
        }
    }
}

/// A history record; the revision is in its sled key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Record {
    Put { create_revision: i64, version: i64, lease: i64, value: Vec<u8> },
    Tombstone,
}

impl Record {
    /// The index entry for this record when it is the key's latest, at `revision`.
    pub(super) fn index_entry(&self, revision: i64) -> IndexEntry {
        match self {
            Record::Put { create_revision, version, lease, .. } => IndexEntry::Live(Meta {
                mod_revision: revision,
                create_revision: *create_revision,
                version: *version,
                lease: *lease,
            }),
            Record::Tombstone => IndexEntry::Tombstone { mod_revision: revision },
        }
    }
}

pub(super) fn history_key(key: &[u8], revision: i64) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + 8 + key.len() + 8);
    k.push(HISTORY);
    k.extend_from_slice(&(key.len() as u64).to_be_bytes());
    k.extend_from_slice(key);
    // Revisions are positive; compaction and reads use 0 as "below every record".
    k.extend_from_slice(&(revision.max(0) as u64).to_be_bytes());
    k
}

/// Splits a history sled key into (the part shared by the key's records, user key, revision).
pub(super) fn split_history_key(hkey: &[u8]) -> Option<(&[u8], &[u8], i64)> {
    let rest = hkey.strip_prefix(&[HISTORY])?;
    let (len, rest) = rest.split_first_chunk::<8>()?;
    let len = usize::try_from(u64::from_be_bytes(*len)).ok()?;
    let (rest, rev) = rest.split_last_chunk::<8>()?;
    if rest.len() != len {
        return None;
    }
    let rev = i64::try_from(u64::from_be_bytes(*rev)).ok()?;
    Some((&hkey[..hkey.len() - 8], rest, rev))
}

fn be_i64(bytes: &[u8], at: usize) -> Option<i64> {
    let chunk = bytes.get(at..at + 8)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(chunk);
    Some(i64::from_be_bytes(a))
}

pub(super) fn encode_record(record: &Record) -> Vec<u8> {
    match record {
        Record::Put { create_revision, version, lease, value } => {
            let mut v = Vec::with_capacity(25 + value.len());
            v.push(LIVE);
            for n in [*create_revision, *version, *lease] {
                v.extend_from_slice(&n.to_be_bytes());
            }
            v.extend_from_slice(value);
            v
        }
        Record::Tombstone => vec![TOMBSTONE],
    }
}

/// Decodes a history record; `None` if it is malformed.
pub(super) fn decode_record(v: &[u8]) -> Option<Record> {
    match v.first() {
        Some(&LIVE) if v.len() >= 25 => Some(Record::Put {
            create_revision: be_i64(v, 1)?,
            version: be_i64(v, 9)?,
            lease: be_i64(v, 17)?,
            value: v[25..].to_vec(),
        }),
        Some(&TOMBSTONE) if v.len() == 1 => Some(Record::Tombstone),
        _ => None,
    }
}

/// Whether an encoded history record is a tombstone, without decoding the value.
pub(super) fn is_tombstone(v: &[u8]) -> bool {
    v.first() == Some(&TOMBSTONE)
}
