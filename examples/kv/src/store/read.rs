//! Reads: key ranges, visibility at a revision, etcd's range options, txn compares.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::ops::Bound;

use super::layout::{self, IndexEntry, Meta, Record};
use super::types::{
    Compare, CompareResult, CompareTarget, KeyValue, RangeRequest, RangeResponse, SortOrder,
    SortTarget,
};
use super::{Store, StoreError};

/// A write txn's own writes at its revision, by key; `None` is a delete.
pub(super) type Overlay = BTreeMap<Vec<u8>, Option<KeyValue>>;

/// The keys a request names, per etcd's `range_end` rules.
#[derive(Clone, Copy, Debug)]
pub(super) enum KeyRange<'a> {
    /// `range_end` empty: just `key`.
    Single(&'a [u8]),
    /// `range_end == "\0"`: every key `>= key`.
    From(&'a [u8]),
    /// `[key, range_end)`; empty when `range_end <= key`.
    Between(&'a [u8], &'a [u8]),
}

impl<'a> KeyRange<'a> {
    pub(super) fn new(key: &'a [u8], range_end: &'a [u8]) -> Self {
        match range_end {
            [] => KeyRange::Single(key),
            [0] => KeyRange::From(key),
            end => KeyRange::Between(key, end),
        }
    }

    fn is_empty(&self) -> bool {
        matches!(self, KeyRange::Between(key, end) if end <= key)
    }

    fn bounds(&self) -> (Bound<&'a [u8]>, Bound<&'a [u8]>) {
        match *self {
            KeyRange::Single(key) => (Bound::Included(key), Bound::Included(key)),
            KeyRange::From(key) => (Bound::Included(key), Bound::Unbounded),
            KeyRange::Between(key, end) => (Bound::Included(key), Bound::Excluded(end)),
        }
    }
}

/// A key visible at the read revision. `value` is `None` when it still has to be loaded from
/// history at `meta.mod_revision`.
#[derive(Debug)]
pub(super) struct Found<'a> {
    pub(super) key: &'a [u8],
    pub(super) meta: Meta,
    pub(super) value: Option<Vec<u8>>,
}

impl<'a> Found<'a> {
    fn from_kv(kv: &'a KeyValue) -> Found<'a> {
        Found {
            key: &kv.key,
            meta: Meta {
                mod_revision: kv.mod_revision,
                create_revision: kv.create_revision,
                version: kv.version,
                lease: kv.lease,
            },
            value: Some(kv.value.clone()),
        }
    }
}

impl Store {
    /// The key's newest history record at or below `revision`.
    fn history_at(&self, key: &[u8], revision: i64) -> Result<Option<(i64, Record)>, StoreError> {
        let lo = layout::history_key(key, 0);
        let hi = layout::history_key(key, revision);
        let Some(item) = self.db.range(lo..=hi).next_back() else {
            return Ok(None);
        };
        let (hkey, v) = item.map_err(StoreError::sled("history seek"))?;
        let rev = layout::split_history_key(&hkey).map(|(_, _, rev)| rev);
        match (rev, layout::decode_record(&v)) {
            (Some(rev), Some(record)) => Ok(Some((rev, record))),
            _ => Err(StoreError::Corrupt("bad history record".into())),
        }
    }

    /// What `key`, whose index entry is `entry`, holds at `revision` (`None`: absent).
    fn visible<'a>(
        &self,
        key: &'a [u8],
        entry: &IndexEntry,
        revision: i64,
    ) -> Result<Option<Found<'a>>, StoreError> {
        if entry.mod_revision() <= revision {
            return Ok(match *entry {
                IndexEntry::Live(meta) => Some(Found { key, meta, value: None }),
                IndexEntry::Tombstone { .. } => None,
            });
        }
        Ok(match self.history_at(key, revision)? {
            Some((rev, Record::Put { create_revision, version, lease, value })) => Some(Found {
                key,
                meta: Meta { mod_revision: rev, create_revision, version, lease },
                value: Some(value),
            }),
            Some((_, Record::Tombstone)) | None => None,
        })
    }

    /// What `key` holds at `revision`, with a txn's own writes in `overlay` on top.
    pub(super) fn lookup<'a>(
        &self,
        key: &'a [u8],
        revision: i64,
        overlay: Option<&'a Overlay>,
    ) -> Result<Option<Found<'a>>, StoreError> {
        if let Some(write) = overlay.and_then(|o| o.get(key)) {
            return Ok(write.as_ref().map(Found::from_kv));
        }
        match self.index.get(key) {
            Some(entry) => self.visible(key, entry, revision),
            None => Ok(None),
        }
    }

    /// Calls `f` for every key of `range` visible at `revision`, in key order, with a txn's own
    /// writes in `overlay` on top (only valid when `revision` is the txn's revision).
    pub(super) fn scan<'a>(
        &'a self,
        range: KeyRange<'a>,
        revision: i64,
        overlay: Option<&'a Overlay>,
        f: &mut dyn FnMut(Found<'a>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        if range.is_empty() {
            return Ok(());
        }
        if let KeyRange::Single(key) = range {
            return match self.lookup(key, revision, overlay)? {
                Some(found) => f(found),
                None => Ok(()),
            };
        }
        let mut base = self.index.range::<[u8], _>(range.bounds()).peekable();
        let mut writes = overlay.into_iter().flat_map(|o| o.range::<[u8], _>(range.bounds()));
        let mut next_write = writes.next();
        loop {
            let from_base = match (base.peek(), &next_write) {
                (None, None) => return Ok(()),
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some((bk, _)), Some((wk, _))) => bk < wk,
            };
            if from_base {
                let Some((key, entry)) = base.next() else { return Ok(()) };
                if let Some(found) = self.visible(key, entry, revision)? {
                    f(found)?;
                }
                continue;
            }
            let Some((key, write)) = next_write.take() else { return Ok(()) };
            // The txn's write replaces the key's stored state.
            if base.peek().is_some_and(|(bk, _)| *bk == key) {
                base.next();
            }
            if let Some(kv) = write {
                f(Found::from_kv(kv))?;
            }
            next_write = writes.next();
        }
    }

    /// Turns a visible key into a `KeyValue`, loading its value only if `with_value`.
    pub(super) fn materialize(
        &self,
        found: Found<'_>,
        with_value: bool,
    ) -> Result<KeyValue, StoreError> {
        let value = match (with_value, found.value) {
            (false, _) => Vec::new(),
            (true, Some(v)) => v,
            (true, None) => self.load_value(found.key, found.meta.mod_revision)?,
        };
        Ok(KeyValue {
            key: found.key.to_vec(),
            value,
            create_revision: found.meta.create_revision,
            mod_revision: found.meta.mod_revision,
            version: found.meta.version,
            lease: found.meta.lease,
        })
    }

    fn load_value(&self, key: &[u8], revision: i64) -> Result<Vec<u8>, StoreError> {
        let v = self
            .db
            .get(layout::history_key(key, revision))
            .map_err(StoreError::sled("history get"))?;
        match v.as_deref().and_then(layout::decode_record) {
            Some(Record::Put { value, .. }) => Ok(value),
            _ => Err(StoreError::Corrupt(format!("index names a missing put at {revision}"))),
        }
    }

    /// etcd's `applierV3backend.Range` over a view whose revision is `current` (the store's, or a
    /// txn's with its own writes in `overlay`).
    pub(super) fn range_view(
        &self,
        req: &RangeRequest,
        current: i64,
        overlay: Option<&Overlay>,
    ) -> Result<RangeResponse, StoreError> {
        if req.revision > current {
            return Err(StoreError::FutureRevision);
        }
        let revision = if req.revision <= 0 { current } else { req.revision };
        if revision < self.compacted_revision {
            return Err(StoreError::Compacted);
        }
        let overlay = overlay.filter(|_| revision == current);
        let filtered = req.min_mod_revision != 0
            || req.max_mod_revision != 0
            || req.min_create_revision != 0
            || req.max_create_revision != 0;
        // As etcd: fetch one extra key to learn `more`, or everything when sorting or filtering.
        let fetch = match usize::try_from(req.limit) {
            _ if req.count_only => 0,
            Ok(limit) if limit > 0 && req.sort_order == SortOrder::None && !filtered => {
                limit.saturating_add(1)
            }
            _ => usize::MAX,
        };
        let with_value = !req.keys_only || req.sort_target == SortTarget::Value;
        let mut count = 0i64;
        let mut kvs = Vec::new();
        let range = KeyRange::new(&req.key, &req.range_end);
        self.scan(range, revision, overlay, &mut |found| {
            count += 1;
            if kvs.len() < fetch {
                kvs.push(self.materialize(found, with_value)?);
            }
            Ok(())
        })?;
        prune(&mut kvs, req);
        sort(&mut kvs, req);
        let mut more = false;
        if let Ok(limit) = usize::try_from(req.limit)
            && limit > 0
            && kvs.len() > limit
        {
            kvs.truncate(limit);
            more = true;
        }
        if req.keys_only {
            kvs.iter_mut().for_each(|kv| kv.value.clear());
        }
        Ok(RangeResponse { revision: current, kvs, more, count })
    }

    /// Whether every compare holds at the current revision (etcd's `applyCompares`).
    pub(super) fn compares_hold(&self, compares: &[Compare]) -> Result<bool, StoreError> {
        for c in compares {
            if !self.compare_holds(c)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn compare_holds(&self, c: &Compare) -> Result<bool, StoreError> {
        let mut found = Vec::new();
        let range = KeyRange::new(&c.key, &c.range_end);
        self.scan(range, self.revision, None, &mut |f| {
            found.push(f);
            Ok(())
        })?;
        let with_value = matches!(c.target, CompareTarget::Value(_));
        if found.is_empty() {
            // A missing value cannot be told from an empty one, so etcd fails value compares on
            // missing keys; the other targets compare against zero.
            return Ok(!with_value && compare_kv(c, &KeyValue::default()));
        }
        for f in found {
            if !compare_kv(c, &self.materialize(f, with_value)?) {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

fn compare_kv(c: &Compare, kv: &KeyValue) -> bool {
    let ord = match &c.target {
        CompareTarget::Version(v) => kv.version.cmp(v),
        CompareTarget::CreateRevision(v) => kv.create_revision.cmp(v),
        CompareTarget::ModRevision(v) => kv.mod_revision.cmp(v),
        CompareTarget::Value(v) => kv.value.as_slice().cmp(v.as_slice()),
        CompareTarget::Lease(v) => kv.lease.cmp(v),
    };
    match c.result {
        CompareResult::Equal => ord == Ordering::Equal,
        CompareResult::NotEqual => ord != Ordering::Equal,
        CompareResult::Greater => ord == Ordering::Greater,
        CompareResult::Less => ord == Ordering::Less,
    }
}

/// etcd's `pruneKVs` for the four revision filters (0 = unset).
fn prune(kvs: &mut Vec<KeyValue>, req: &RangeRequest) {
    kvs.retain(|kv| {
        !((req.max_mod_revision != 0 && kv.mod_revision > req.max_mod_revision)
            || (req.min_mod_revision != 0 && kv.mod_revision < req.min_mod_revision)
            || (req.max_create_revision != 0 && kv.create_revision > req.max_create_revision)
            || (req.min_create_revision != 0 && kv.create_revision < req.min_create_revision))
    });
}

/// etcd's sort step. Stable, so ties keep key order (etcd's sort is unstable).
fn sort(kvs: &mut [KeyValue], req: &RangeRequest) {
    let order = match (req.sort_order, req.sort_target) {
        (SortOrder::None, SortTarget::Key) => return,
        (SortOrder::None, _) => SortOrder::Ascend,
        (order, _) => order,
    };
    let by = |a: &KeyValue, b: &KeyValue| match req.sort_target {
        SortTarget::Key => a.key.cmp(&b.key),
        SortTarget::Version => a.version.cmp(&b.version),
        SortTarget::Create => a.create_revision.cmp(&b.create_revision),
        SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
        SortTarget::Value => a.value.cmp(&b.value),
    };
    match order {
        SortOrder::Descend => kvs.sort_by(|a, b| by(b, a)),
        _ => kvs.sort_by(by),
    }
}
