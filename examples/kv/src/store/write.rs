//! Writes: a request's writes are gathered in an overlay at one revision, then committed (one
//! sled insert per key), so a request error before the commit changes nothing. A sled error
//! during the commit is fatal: the node stops, and the store is rebuilt from the snapshot and
//! the log on the next start.

use super::layout::{self, Record};
use super::read::{KeyRange, Overlay};
use super::types::{
    DeleteRangeRequest, DeleteRangeResponse, KeyValue, PutRequest, PutResponse, RequestOp,
    ResponseOp, TxnRequest, TxnResponse,
};
use super::{Store, StoreError};

/// A write txn in progress over a read-only store (etcd's `storeTxnWrite`).
pub(super) struct WriteTxn<'a> {
    store: &'a Store,
    /// The store's revision when the txn began; writes happen at `begin + 1`.
    begin: i64,
    overlay: Overlay,
    /// Live keys added minus live keys removed so far.
    live_delta: i64,
}

/// The result of a write txn, ready to commit.
pub(super) struct Changes {
    revision: i64,
    writes: Overlay,
    live_delta: i64,
}

impl<'a> WriteTxn<'a> {
    pub(super) fn new(store: &'a Store) -> Self {
        WriteTxn { store, begin: store.revision, overlay: Overlay::new(), live_delta: 0 }
    }

    /// The revision reads see: `begin`, or `begin + 1` once something was written.
    fn revision(&self) -> i64 {
        self.begin + i64::from(!self.overlay.is_empty())
    }

    pub(super) fn finish(self) -> Changes {
        Changes { revision: self.begin + 1, writes: self.overlay, live_delta: self.live_delta }
    }

    /// A put; the request was validated (`check_put`, lease) by the caller.
    pub(super) fn put(&mut self, req: &PutRequest) -> Result<PutResponse, StoreError> {
        let prev = self.store.lookup(&req.key, self.revision(), Some(&self.overlay))?;
        let prev = match prev {
            Some(found) => Some(self.store.materialize(found, req.prev_kv || req.ignore_value)?),
            None => None,
        };
        let revision = self.begin + 1;
        let kv = match &prev {
            Some(p) => KeyValue {
                key: req.key.clone(),
                value: if req.ignore_value { p.value.clone() } else { req.value.clone() },
                create_revision: p.create_revision,
                mod_revision: revision,
                version: p.version + 1,
                lease: p.lease,
            },
            None if req.ignore_value || req.ignore_lease => return Err(StoreError::KeyNotFound),
            None => {
                self.live_delta += 1;
                KeyValue {
                    key: req.key.clone(),
                    value: req.value.clone(),
                    create_revision: revision,
                    mod_revision: revision,
                    version: 1,
                    lease: 0,
                }
            }
        };
        self.overlay.insert(req.key.clone(), Some(kv));
        Ok(PutResponse { revision, prev_kv: prev.filter(|_| req.prev_kv) })
    }

    pub(super) fn delete_range(
        &mut self,
        req: &DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, StoreError> {
        let store = self.store;
        let mut deleted = Vec::new();
        let mut prev_kvs = Vec::new();
        let range = KeyRange::new(&req.key, &req.range_end);
        store.scan(range, self.revision(), Some(&self.overlay), &mut |f| {
            deleted.push(f.key.to_vec());
            if req.prev_kv {
                prev_kvs.push(store.materialize(f, true)?);
            }
            Ok(())
        })?;
        let deleted_count = deleted.len() as i64;
        for key in deleted {
            self.overlay.insert(key, None);
            self.live_delta -= 1;
        }
        Ok(DeleteRangeResponse { revision: self.revision(), deleted: deleted_count, prev_kvs })
    }

    /// etcd's `applyTxn`: runs the branch `path` chose for `req` and its nested txns.
    /// `path` is in pre-order, as built by `Store::compare_to_path`; `pos` walks it.
    fn apply(
        &mut self,
        req: &TxnRequest,
        path: &[bool],
        pos: &mut usize,
    ) -> Result<TxnResponse, StoreError> {
        // Invariant: `path` was built from this very request, so it has an entry here.
        let succeeded = path[*pos];
        *pos += 1;
        let ops = if succeeded { &req.success } else { &req.failure };
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            responses.push(match op {
                RequestOp::Range(r) => ResponseOp::Range(self.store.range_view(
                    r,
                    self.revision(),
                    Some(&self.overlay),
                )?),
                RequestOp::Put(r) => ResponseOp::Put(self.put(r)?),
                RequestOp::DeleteRange(r) => ResponseOp::DeleteRange(self.delete_range(r)?),
                RequestOp::Txn(t) => ResponseOp::Txn(self.apply(t, path, pos)?),
            });
        }
        Ok(TxnResponse { revision: 0, succeeded, responses })
    }
}

/// Which of etcd's per-op apply-time checks to run (`checkRequestPut`, `checkRequestRange`).
#[derive(Clone, Copy)]
enum Check {
    Put,
    Range,
}

impl Store {
    /// Runs a validated txn (etcd's `applierV3backend.Txn`): evaluates every compare on the
    /// state before the txn, checks the chosen ops, then runs them.
    pub(super) fn run_txn(&mut self, req: &TxnRequest) -> Result<TxnResponse, StoreError> {
        let mut path = Vec::new();
        self.compare_to_path(req, &mut path)?;
        self.check_requests(req, &path, &mut 0, Check::Put)?;
        self.check_requests(req, &path, &mut 0, Check::Range)?;
        let mut txn = WriteTxn::new(self);
        let mut resp = txn.apply(req, &path, &mut 0)?;
        let changes = txn.finish();
        self.commit(changes)?;
        resp.revision = self.revision;
        Ok(resp)
    }

    /// etcd's `compareToPath`: whether each txn on the path taken succeeds, in pre-order.
    fn compare_to_path(&self, req: &TxnRequest, path: &mut Vec<bool>) -> Result<(), StoreError> {
        let succeeded = self.compares_hold(&req.compare)?;
        path.push(succeeded);
        for op in if succeeded { &req.success } else { &req.failure } {
            if let RequestOp::Txn(t) = op {
                self.compare_to_path(t, path)?;
            }
        }
        Ok(())
    }

    /// etcd's `checkRequests` with one check over the ops the path will run.
    fn check_requests(
        &self,
        req: &TxnRequest,
        path: &[bool],
        pos: &mut usize,
        check: Check,
    ) -> Result<(), StoreError> {
        let succeeded = path[*pos];
        *pos += 1;
        for op in if succeeded { &req.success } else { &req.failure } {
            match (op, check) {
                (RequestOp::Txn(t), _) => self.check_requests(t, path, pos, check)?,
                (RequestOp::Put(p), Check::Put) => {
                    if (p.ignore_value || p.ignore_lease)
                        && self.lookup(&p.key, self.revision, None)?.is_none()
                    {
                        return Err(StoreError::KeyNotFound);
                    }
                    if p.lease != 0 {
                        return Err(StoreError::LeaseNotFound);
                    }
                }
                (RequestOp::Range(r), Check::Range) if r.revision != 0 => {
                    if r.revision > self.revision {
                        return Err(StoreError::FutureRevision);
                    }
                    if r.revision < self.compacted_revision {
                        return Err(StoreError::Compacted);
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Writes a txn's changes (one sled insert per key), then updates the index and moves to the
    /// txn's revision.
    pub(super) fn commit(&mut self, changes: Changes) -> Result<(), StoreError> {
        let Changes { revision, writes, live_delta } = changes;
        if writes.is_empty() {
            return Ok(());
        }
        assert_eq!(revision, self.revision + 1, "a commit must follow the revision it began at");
        let live_keys = self.live_keys.checked_add_signed(live_delta).ok_or_else(|| {
            StoreError::Corrupt(format!("live key count {} {live_delta:+}", self.live_keys))
        })?;
        let records: Vec<(Vec<u8>, Record)> = writes
            .into_iter()
            .map(|(key, write)| {
                let record = match write {
                    Some(kv) => Record::Put {
                        create_revision: kv.create_revision,
                        version: kv.version,
                        lease: kv.lease,
                        value: kv.value,
                    },
                    None => Record::Tombstone,
                };
                (key, record)
            })
            .collect();
        // Plain inserts, not a sled batch: a batch rolls sled's log buffer and costs ~8x more
        // per key (a txn of two puts ran at ~12k/s, a prefix delete of 480k keys took minutes).
        // Atomicity on disk is not needed: `open` clears the store, which the runtime rebuilds
        // from the snapshot and the log; and no reader runs while a command is applied (`apply`
        // takes `&mut self`, queries run on the same task).
        for (key, record) in &records {
            self.db
                .insert(layout::history_key(key, revision), layout::encode_record(record))
                .map_err(StoreError::sled("insert"))?;
        }
        for (key, record) in records {
            self.index.insert(key, record.index_entry(revision));
        }
        self.revision = revision;
        self.live_keys = live_keys;
        Ok(())
    }
}
