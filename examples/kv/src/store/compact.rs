//! Compaction: etcd's `keyIndex.compact` rules over the history.

use super::layout;
use super::{Store, StoreError};

/// What compaction at one revision does to one key's records.
#[derive(Default)]
struct KeyCompaction {
    /// The key's newest record at or below the compaction revision, if any, and whether it is
    /// a tombstone.
    last_at_or_below: Option<(Vec<u8>, bool)>,
    /// Whether the key has records above the compaction revision.
    has_newer: bool,
}

impl Store {
    /// Builds the batch that compacts history at `revision`: every record at or below it goes,
    /// except each key's newest such record when it is a put (the key's value at `revision`).
    /// Also returns the keys left without records, which lose their index entries, and how many
    /// records go.
    pub(super) fn compaction_batch(
        &self,
        revision: i64,
    ) -> Result<(sled::Batch, Vec<Vec<u8>>, u64), StoreError> {
        let mut batch = sled::Batch::default();
        let mut gone = Vec::new();
        let mut removed = 0u64;
        let mut group: Option<(Vec<u8>, Vec<u8>)> = None; // (shared prefix, user key)
        let mut state = KeyCompaction::default();
        for item in self.db.scan_prefix([layout::HISTORY]) {
            let (hkey, value) = item.map_err(StoreError::sled("history scan"))?;
            let Some((prefix, key, rev)) = layout::split_history_key(&hkey) else {
                return Err(StoreError::Corrupt("bad history key".into()));
            };
            if group.as_ref().is_none_or(|(p, _)| p.as_slice() != prefix) {
                if let Some((_, key)) = group.take() {
                    removed += finish_key(&mut batch, key, std::mem::take(&mut state), &mut gone);
                }
                group = Some((prefix.to_vec(), key.to_vec()));
            }
            if rev > revision {
                state.has_newer = true;
            } else if let Some((older, _)) =
                state.last_at_or_below.replace((hkey.to_vec(), layout::is_tombstone(&value)))
            {
                batch.remove(older);
                removed += 1;
            }
        }
        if let Some((_, key)) = group {
            removed += finish_key(&mut batch, key, state, &mut gone);
        }
        Ok((batch, gone, removed))
    }
}

/// Removes the key's newest record at or below the compaction revision if it is a tombstone,
/// and adds the key to `gone` if no record is left. Returns the number of records removed.
fn finish_key(
    batch: &mut sled::Batch,
    key: Vec<u8>,
    state: KeyCompaction,
    gone: &mut Vec<Vec<u8>>,
) -> u64 {
    match state.last_at_or_below {
        Some((hkey, true)) => {
            batch.remove(hkey);
            if !state.has_newer {
                gone.push(key);
            }
            1
        }
        _ => 0,
    }
}
