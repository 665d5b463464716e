//! Request validation that needs no state: etcd's `v3rpc/key.go` checks, run before applying.

use std::collections::BTreeSet;

use super::StoreError;
use super::types::{DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest};

/// The most compares or operations one txn level may have (etcd's `--max-txn-ops` default).
pub const MAX_TXN_OPS: usize = 128;

pub(super) fn check_range(req: &RangeRequest) -> Result<(), StoreError> {
    if req.key.is_empty() {
        return Err(StoreError::EmptyKey);
    }
    Ok(())
}

pub(super) fn check_put(req: &PutRequest) -> Result<(), StoreError> {
    if req.key.is_empty() {
        return Err(StoreError::EmptyKey);
    }
    if req.ignore_value && !req.value.is_empty() {
        return Err(StoreError::ValueProvided);
    }
    if req.ignore_lease && req.lease != 0 {
        return Err(StoreError::LeaseProvided);
    }
    Ok(())
}

pub(super) fn check_delete(req: &DeleteRangeRequest) -> Result<(), StoreError> {
    if req.key.is_empty() {
        return Err(StoreError::EmptyKey);
    }
    Ok(())
}

/// etcd's `checkTxnRequest` followed by `checkIntervals` on both branches.
pub(super) fn check_txn(req: &TxnRequest) -> Result<(), StoreError> {
    check_txn_ops(req, MAX_TXN_OPS)?;
    check_intervals(&req.success)?;
    check_intervals(&req.failure)?;
    Ok(())
}

/// Nested txns share the budget: a child gets what its parent level left (etcd 3.4). This also
/// bounds the nesting depth, and so every recursion over a validated txn.
fn check_txn_ops(req: &TxnRequest, max_ops: usize) -> Result<(), StoreError> {
    let ops = req.compare.len().max(req.success.len()).max(req.failure.len());
    if ops > max_ops {
        return Err(StoreError::TooManyOps);
    }
    if req.compare.iter().any(|c| c.key.is_empty()) {
        return Err(StoreError::EmptyKey);
    }
    for op in req.success.iter().chain(&req.failure) {
        match op {
            RequestOp::Range(r) => check_range(r)?,
            RequestOp::Put(r) => check_put(r)?,
            RequestOp::DeleteRange(r) => check_delete(r)?,
            RequestOp::Txn(t) => check_txn_ops(t, max_ops - ops)?,
        }
    }
    Ok(())
}

/// A deleted interval `[begin, end)` as etcd's `adt` compares it: plain byte order, so a
/// `range_end` of `"\0"` makes an interval that contains no key (an etcd quirk kept as is).
struct Interval {
    begin: Vec<u8>,
    end: Vec<u8>,
}

impl Interval {
    fn new(key: &[u8], range_end: &[u8]) -> Interval {
        let end = if range_end.is_empty() {
            let mut end = key.to_vec();
            end.push(0);
            end
        } else {
            range_end.to_vec()
        };
        Interval { begin: key.to_vec(), end }
    }

    fn contains(&self, key: &[u8]) -> bool {
        self.begin.as_slice() <= key && key < self.end.as_slice()
    }
}

fn deleted(dels: &[Interval], key: &[u8]) -> bool {
    dels.iter().any(|iv| iv.contains(key))
}

/// etcd's `checkIntervals`: no key may be put twice, or put and deleted, by one branch
/// (a nested txn's two branches may put the same key, as only one of them runs).
fn check_intervals(reqs: &[RequestOp]) -> Result<(BTreeSet<Vec<u8>>, Vec<Interval>), StoreError> {
    let mut dels: Vec<Interval> = reqs
        .iter()
        .filter_map(|op| match op {
            RequestOp::DeleteRange(d) => Some(Interval::new(&d.key, &d.range_end)),
            _ => None,
        })
        .collect();
    let mut puts = BTreeSet::new();
    for op in reqs {
        let RequestOp::Txn(t) = op else { continue };
        let (puts_then, dels_then) = check_intervals(&t.success)?;
        let (puts_else, dels_else) = check_intervals(&t.failure)?;
        for k in &puts_then {
            if puts.contains(k) || deleted(&dels, k) {
                return Err(StoreError::DuplicateKey);
            }
            puts.insert(k.clone());
        }
        for k in puts_else {
            if (puts.contains(&k) && !puts_then.contains(&k)) || deleted(&dels, &k) {
                return Err(StoreError::DuplicateKey);
            }
            puts.insert(k);
        }
        dels.extend(dels_then);
        dels.extend(dels_else);
    }
    for op in reqs {
        let RequestOp::Put(p) = op else { continue };
        if puts.contains(&p.key) || deleted(&dels, &p.key) {
            return Err(StoreError::DuplicateKey);
        }
        puts.insert(p.key.clone());
    }
    Ok((puts, dels))
}
