//! Store tests; expected values are etcd 3.4's. The wire formats, snapshots and determinism
//! are tested in `tests/wire.rs`.

mod wire;

use super::*;

fn store() -> Store {
    Store::open(None).unwrap()
}

fn b(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

fn put_req(key: &str, value: &str) -> PutRequest {
    PutRequest { key: b(key), value: b(value), ..Default::default() }
}

fn put(s: &mut Store, key: &str, value: &str) -> PutResponse {
    s.put(&put_req(key, value)).unwrap()
}

fn del_req(key: &str, range_end: &[u8]) -> DeleteRangeRequest {
    DeleteRangeRequest { key: b(key), range_end: range_end.to_vec(), prev_kv: false }
}

fn range_req(key: &str, range_end: &[u8]) -> RangeRequest {
    RangeRequest { key: b(key), range_end: range_end.to_vec(), ..Default::default() }
}

fn get_at(s: &Store, key: &str, revision: i64) -> Option<KeyValue> {
    let req = RangeRequest { revision, ..range_req(key, b"") };
    let mut resp = s.range(&req).unwrap();
    assert!(resp.kvs.len() <= 1);
    resp.kvs.pop()
}

fn get(s: &Store, key: &str) -> Option<KeyValue> {
    get_at(s, key, 0)
}

fn kv(key: &str, value: &str, create_revision: i64, mod_revision: i64, version: i64) -> KeyValue {
    KeyValue { key: b(key), value: b(value), create_revision, mod_revision, version, lease: 0 }
}

fn keys(kvs: &[KeyValue]) -> Vec<String> {
    kvs.iter().map(|kv| String::from_utf8(kv.key.clone()).unwrap()).collect()
}

fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = b(prefix);
    *end.last_mut().unwrap() += 1;
    end
}

fn cmp(key: &str, target: CompareTarget, result: CompareResult) -> Compare {
    Compare { key: b(key), range_end: Vec::new(), target, result }
}

fn txn(compare: Vec<Compare>, success: Vec<RequestOp>, failure: Vec<RequestOp>) -> TxnRequest {
    TxnRequest { compare, success, failure }
}

fn op_put(key: &str, value: &str) -> RequestOp {
    RequestOp::Put(put_req(key, value))
}

/// A tiny deterministic PRNG (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn revisions_are_numbered_as_etcd() {
    let mut s = store();
    assert_eq!((s.revision(), s.compacted_revision(), s.len()), (1, -1, 0));
    let empty = s.range(&range_req("a", b"")).unwrap();
    assert_eq!(empty, RangeResponse { revision: 1, kvs: vec![], more: false, count: 0 });

    assert_eq!(put(&mut s, "a", "1"), PutResponse { revision: 2, prev_kv: None });
    assert_eq!(get(&s, "a"), Some(kv("a", "1", 2, 2, 1)));

    let resp = s.put(&PutRequest { prev_kv: true, ..put_req("a", "2") }).unwrap();
    assert_eq!(resp, PutResponse { revision: 3, prev_kv: Some(kv("a", "1", 2, 2, 1)) });
    assert_eq!(get(&s, "a"), Some(kv("a", "2", 2, 3, 2)));

    assert_eq!(put(&mut s, "b", "x").revision, 4);
    assert_eq!((s.revision(), s.len()), (4, 2));
    assert_eq!(s.range(&range_req("a", b"")).unwrap().revision, 4);
}

#[test]
fn delete_then_put_starts_a_new_generation() {
    let mut s = store();
    put(&mut s, "a", "1");
    put(&mut s, "a", "2");
    let req = DeleteRangeRequest { prev_kv: true, ..del_req("a", b"") };
    let resp = s.delete_range(&req).unwrap();
    assert_eq!(
        resp,
        DeleteRangeResponse { revision: 4, deleted: 1, prev_kvs: vec![kv("a", "2", 2, 3, 2)] }
    );
    assert_eq!(get(&s, "a"), None);
    assert!(s.is_empty());

    // Deleting nothing does not move the revision.
    let resp = s.delete_range(&del_req("a", b"")).unwrap();
    assert_eq!(resp, DeleteRangeResponse { revision: 4, deleted: 0, prev_kvs: vec![] });
    assert_eq!(s.revision(), 4);

    assert_eq!(put(&mut s, "a", "3").revision, 5);
    assert_eq!(get(&s, "a"), Some(kv("a", "3", 5, 5, 1)));
    assert_eq!(s.len(), 1);
}

#[test]
fn delete_range_and_prefix() {
    let mut s = store();
    for k in ["a", "foo/1", "foo/2", "fop"] {
        put(&mut s, k, "v");
    }
    let resp = s.delete_range(&del_req("foo/", &prefix_end("foo/"))).unwrap();
    assert_eq!((resp.revision, resp.deleted), (6, 2));
    assert_eq!(keys(&s.range(&range_req("\0", b"\0")).unwrap().kvs), ["a", "fop"]);
    // "\0" as range_end deletes everything from the key on.
    let resp = s.delete_range(&del_req("b", b"\0")).unwrap();
    assert_eq!((resp.revision, resp.deleted), (7, 1));
    assert_eq!(keys(&s.range(&range_req("\0", b"\0")).unwrap().kvs), ["a"]);
    assert_eq!(s.len(), 1);
}

fn range_fixture() -> Store {
    let mut s = store();
    for (k, v) in [("a", "0"), ("foo/1", "1"), ("foo/2", "2"), ("foo/3", "3"), ("fop", "4")] {
        put(&mut s, k, v);
    }
    s
}

#[test]
fn range_prefix_limit_count_keys_only() {
    let s = range_fixture();
    let prefix = range_req("foo/", &prefix_end("foo/"));
    let resp = s.range(&prefix).unwrap();
    assert_eq!(
        resp,
        RangeResponse {
            revision: 6,
            kvs: vec![
                kv("foo/1", "1", 3, 3, 1),
                kv("foo/2", "2", 4, 4, 1),
                kv("foo/3", "3", 5, 5, 1)
            ],
            more: false,
            count: 3,
        }
    );

    let limited = s.range(&RangeRequest { limit: 2, ..prefix.clone() }).unwrap();
    assert_eq!(
        (keys(&limited.kvs), limited.more, limited.count),
        (vec!["foo/1".into(), "foo/2".into()], true, 3)
    );
    let exact = s.range(&RangeRequest { limit: 3, ..prefix.clone() }).unwrap();
    assert_eq!((exact.kvs.len(), exact.more, exact.count), (3, false, 3));

    let keys_only = s.range(&RangeRequest { keys_only: true, ..prefix.clone() }).unwrap();
    assert_eq!(keys_only.kvs[0], kv("foo/1", "", 3, 3, 1));
    assert_eq!(keys_only.count, 3);

    let count_only = s.range(&RangeRequest { count_only: true, limit: 1, ..prefix }).unwrap();
    assert_eq!(count_only, RangeResponse { revision: 6, kvs: vec![], more: false, count: 3 });

    let from = s.range(&range_req("foo/2", b"\0")).unwrap();
    assert_eq!(keys(&from.kvs), ["foo/2", "foo/3", "fop"]);
    let between = s.range(&range_req("a", b"foo/2")).unwrap();
    assert_eq!(keys(&between.kvs), ["a", "foo/1"]);
    let all = s.range(&range_req("\0", b"\0")).unwrap();
    assert_eq!(all.count, 5);
    let backwards = s.range(&range_req("z", b"a")).unwrap();
    assert_eq!((backwards.kvs.len(), backwards.count), (0, 0));
    assert_eq!(get(&s, "foo"), None);
    assert_eq!(s.range(&range_req("", b"")), Err(StoreError::EmptyKey));
}

#[test]
fn range_sort_and_filters() {
    let mut s = range_fixture();
    put(&mut s, "foo/1", "9"); // foo/1: create 3, mod 7, version 2
    let all = range_req("\0", b"\0");

    let desc = RangeRequest { sort_order: SortOrder::Descend, ..all.clone() };
    assert_eq!(keys(&s.range(&desc).unwrap().kvs), ["fop", "foo/3", "foo/2", "foo/1", "a"]);

    let by_mod = RangeRequest { sort_target: SortTarget::Mod, limit: 2, ..all.clone() };
    let resp = s.range(&by_mod).unwrap();
    // SortOrder::None with a non-key target sorts ascending, after fetching limit + 1 by key.
    assert_eq!(
        (keys(&resp.kvs), resp.more, resp.count),
        (vec!["a".into(), "foo/2".into()], true, 5)
    );

    let by_value_desc = RangeRequest {
        sort_target: SortTarget::Value,
        sort_order: SortOrder::Descend,
        keys_only: true,
        limit: 2,
        ..all.clone()
    };
    let resp = s.range(&by_value_desc).unwrap();
    assert_eq!(keys(&resp.kvs), ["foo/1", "fop"]);
    assert!(resp.kvs.iter().all(|kv| kv.value.is_empty()));

    let filtered = RangeRequest { min_mod_revision: 4, max_create_revision: 5, ..all.clone() };
    let resp = s.range(&filtered).unwrap();
    // `count` ignores the filters, as in etcd.
    assert_eq!(
        (keys(&resp.kvs), resp.count),
        (vec!["foo/1".into(), "foo/2".into(), "foo/3".into()], 5)
    );
    let resp =
        s.range(&RangeRequest { min_create_revision: 4, max_mod_revision: 5, ..all }).unwrap();
    assert_eq!(keys(&resp.kvs), ["foo/2", "foo/3"]);
}

fn history_fixture() -> Store {
    let mut s = store();
    put(&mut s, "a", "1"); // 2
    put(&mut s, "a", "2"); // 3
    put(&mut s, "b", "1"); // 4
    s.delete_range(&del_req("a", b"")).unwrap(); // 5
    s
}

#[test]
fn reads_at_old_revisions() {
    let s = history_fixture();
    assert_eq!(get_at(&s, "a", 1), None);
    assert_eq!(get_at(&s, "a", 2), Some(kv("a", "1", 2, 2, 1)));
    assert_eq!(get_at(&s, "a", 3), Some(kv("a", "2", 2, 3, 2)));
    assert_eq!(get_at(&s, "a", 4), Some(kv("a", "2", 2, 3, 2)));
    assert_eq!(get_at(&s, "a", 5), None);
    let at3 = s.range(&RangeRequest { revision: 3, ..range_req("\0", b"\0") }).unwrap();
    // The header revision is the current one, as in etcd.
    assert_eq!(
        at3,
        RangeResponse { revision: 5, kvs: vec![kv("a", "2", 2, 3, 2)], more: false, count: 1 }
    );
    let at4 =
        s.range(&RangeRequest { revision: 4, keys_only: true, ..range_req("a", b"c") }).unwrap();
    assert_eq!((keys(&at4.kvs), at4.count), (vec!["a".into(), "b".into()], 2));
    let future = RangeRequest { revision: 6, ..range_req("a", b"") };
    assert_eq!(s.range(&future), Err(StoreError::FutureRevision));
}

#[test]
fn compaction() {
    let mut s = history_fixture();
    assert_eq!(s.compact(&CompactionRequest { revision: 6 }), Err(StoreError::FutureRevision));
    assert_eq!(
        s.compact(&CompactionRequest { revision: 3 }),
        Ok(CompactionResponse { revision: 5 })
    );
    assert_eq!(s.compacted_revision(), 3);
    assert_eq!(s.compact(&CompactionRequest { revision: 3 }), Err(StoreError::Compacted));
    assert_eq!(s.compact(&CompactionRequest { revision: 2 }), Err(StoreError::Compacted));
    let at2 = RangeRequest { revision: 2, ..range_req("a", b"") };
    assert_eq!(s.range(&at2), Err(StoreError::Compacted));
    // The compaction revision itself stays readable.
    assert_eq!(get_at(&s, "a", 3), Some(kv("a", "2", 2, 3, 2)));
    assert_eq!(get_at(&s, "b", 4), Some(kv("b", "1", 4, 4, 1)));
    // a: put@3, tombstone@5; b: put@4.
    assert_eq!((s.db.len(), s.index.len()), (3, 2));

    assert_eq!(
        s.compact(&CompactionRequest { revision: 5 }),
        Ok(CompactionResponse { revision: 5 })
    );
    // a was deleted at 5: all of it goes. b keeps its live value.
    assert_eq!((s.db.len(), s.index.len()), (1, 1));
    assert_eq!(get_at(&s, "b", 5), Some(kv("b", "1", 4, 4, 1)));
    assert_eq!(get(&s, "a"), None);
    assert_eq!(s.revision(), 5);
    put(&mut s, "a", "new");
    assert_eq!(get(&s, "a"), Some(kv("a", "new", 6, 6, 1)));
}

#[test]
fn compaction_on_a_fresh_store_is_etcd_s() {
    let mut s = store();
    // etcd starts with compacted revision -1, so compacting at 0 or 1 is allowed once.
    assert_eq!(
        s.compact(&CompactionRequest { revision: 0 }),
        Ok(CompactionResponse { revision: 1 })
    );
    assert_eq!(s.compact(&CompactionRequest { revision: 0 }), Err(StoreError::Compacted));
    assert_eq!(s.compact(&CompactionRequest { revision: 2 }), Err(StoreError::FutureRevision));
    assert_eq!(
        s.compact(&CompactionRequest { revision: 1 }),
        Ok(CompactionResponse { revision: 1 })
    );
}

fn succeeded(s: &mut Store, compare: Compare) -> bool {
    let before = s.revision();
    let resp = s.txn(&txn(vec![compare], vec![], vec![])).unwrap();
    assert_eq!(resp.revision, before, "a read-only txn does not move the revision");
    resp.succeeded
}

#[test]
fn txn_compares() {
    use CompareResult::*;
    use CompareTarget::*;
    let mut s = store();
    put(&mut s, "a", "1"); // 2
    put(&mut s, "a", "2"); // 3: a has create 2, mod 3, version 2
    put(&mut s, "b", "x"); // 4

    let cases = [
        (cmp("a", Value(b("2")), Equal), true),
        (cmp("a", Value(b("1")), Equal), false),
        (cmp("a", Value(b("1")), Greater), true),
        (cmp("a", Value(b("3")), Less), true),
        (cmp("a", Value(b("2")), NotEqual), false),
        (cmp("a", Version(2), Equal), true),
        (cmp("a", Version(1), Greater), true),
        (cmp("a", Version(2), Less), false),
        (cmp("a", Version(3), NotEqual), true),
        (cmp("a", CreateRevision(2), Equal), true),
        (cmp("a", CreateRevision(3), Equal), false),
        (cmp("a", ModRevision(3), Equal), true),
        (cmp("a", ModRevision(3), Less), false),
        (cmp("a", ModRevision(4), Less), true),
        (cmp("a", Lease(0), Equal), true),
        // Missing keys compare as zero, except values, which always fail.
        (cmp("zz", Version(0), Equal), true),
        (cmp("zz", CreateRevision(0), Equal), true),
        (cmp("zz", ModRevision(1), Less), true),
        (cmp("zz", Value(b("")), Equal), false),
        (cmp("zz", Value(b("x")), NotEqual), false),
        // A range compare must hold for every key in it.
        (Compare { range_end: b("c"), ..cmp("a", Version(1), Greater) }, false),
        (Compare { range_end: b("c"), ..cmp("a", Version(0), Greater) }, true),
        (Compare { range_end: b("c"), ..cmp("a", ModRevision(5), Less) }, true),
        (Compare { range_end: b("\0"), ..cmp("b", Value(b("x")), Equal) }, true),
        (Compare { range_end: b("z"), ..cmp("c", Value(b("x")), Equal) }, false),
    ];
    for (i, (c, want)) in cases.into_iter().enumerate() {
        assert_eq!(succeeded(&mut s, c), want, "case {i}");
    }

    // Both branches run their own ops.
    let ok = s
        .txn(&txn(
            vec![cmp("a", Value(b("2")), Equal)],
            vec![op_put("t", "yes")],
            vec![op_put("f", "no")],
        ))
        .unwrap();
    assert_eq!(
        ok,
        TxnResponse {
            revision: 5,
            succeeded: true,
            responses: vec![ResponseOp::Put(PutResponse { revision: 5, prev_kv: None })],
        }
    );
    let failed = s
        .txn(&txn(
            vec![cmp("a", Value(b("9")), Equal)],
            vec![op_put("t", "yes")],
            vec![op_put("f", "no")],
        ))
        .unwrap();
    assert_eq!((failed.revision, failed.succeeded), (6, false));
    assert_eq!(get(&s, "t"), Some(kv("t", "yes", 5, 5, 1)));
    assert_eq!(get(&s, "f"), Some(kv("f", "no", 6, 6, 1)));
}

#[test]
fn txn_writes_share_one_revision() {
    let mut s = store();
    put(&mut s, "a", "1"); // 2
    let req = txn(
        vec![],
        vec![
            RequestOp::Range(range_req("a", b"")),
            op_put("x", "1"),
            RequestOp::Range(range_req("\0", b"\0")),
            op_put("y", "1"),
            RequestOp::DeleteRange(DeleteRangeRequest { prev_kv: true, ..del_req("a", b"") }),
            RequestOp::DeleteRange(del_req("nothing", b"")),
        ],
        vec![],
    );
    let resp = s.txn(&req).unwrap();
    let ResponseOp::Range(first) = &resp.responses[0] else { panic!() };
    assert_eq!((first.revision, keys(&first.kvs)), (2, vec!["a".into()]));
    // Reads inside the txn see its own earlier writes, at the txn's revision.
    let ResponseOp::Range(second) = &resp.responses[2] else { panic!() };
    assert_eq!(second.revision, 3);
    assert_eq!(second.kvs, vec![kv("a", "1", 2, 2, 1), kv("x", "1", 3, 3, 1)]);
    assert_eq!(resp.responses[1], ResponseOp::Put(PutResponse { revision: 3, prev_kv: None }));
    assert_eq!(
        resp.responses[4],
        ResponseOp::DeleteRange(DeleteRangeResponse {
            revision: 3,
            deleted: 1,
            prev_kvs: vec![kv("a", "1", 2, 2, 1)]
        })
    );
    assert_eq!(
        resp.responses[5],
        ResponseOp::DeleteRange(DeleteRangeResponse { revision: 3, deleted: 0, prev_kvs: vec![] })
    );
    assert_eq!((resp.revision, s.revision()), (3, 3));
    assert_eq!(get(&s, "x"), Some(kv("x", "1", 3, 3, 1)));
    assert_eq!(get(&s, "y"), Some(kv("y", "1", 3, 3, 1)));
    assert_eq!(get(&s, "a"), None);
    assert_eq!(get_at(&s, "a", 2), Some(kv("a", "1", 2, 2, 1)));
    assert_eq!(s.len(), 2);
}

#[test]
fn nested_txn() {
    use CompareResult::*;
    use CompareTarget::*;
    let mut s = store();
    put(&mut s, "k0", "v"); // 2
    let inner = txn(
        // Compares are evaluated before the outer txn writes: k1 is still missing here.
        vec![cmp("k1", Version(0), Equal)],
        vec![op_put("k2", "then")],
        vec![op_put("k2", "else")],
    );
    let outer = txn(
        vec![cmp("k0", Version(1), Equal)],
        vec![op_put("k1", "v"), RequestOp::Txn(inner), RequestOp::Range(range_req("k", b"l"))],
        vec![],
    );
    let resp = s.txn(&outer).unwrap();
    assert!(resp.succeeded);
    assert_eq!(resp.revision, 3);
    assert_eq!(
        resp.responses[1],
        ResponseOp::Txn(TxnResponse {
            revision: 0,
            succeeded: true,
            responses: vec![ResponseOp::Put(PutResponse { revision: 3, prev_kv: None })],
        })
    );
    let ResponseOp::Range(r) = &resp.responses[2] else { panic!() };
    assert_eq!(keys(&r.kvs), ["k0", "k1", "k2"]);
    assert_eq!(get(&s, "k2"), Some(kv("k2", "then", 3, 3, 1)));

    // The same again: now k1 exists, so the nested failure branch runs (a put of k1 again).
    let inner = txn(vec![cmp("k1", Version(0), Equal)], vec![], vec![op_put("k2", "else")]);
    let outer = txn(vec![], vec![RequestOp::Txn(inner)], vec![]);
    let resp = s.txn(&outer).unwrap();
    let ResponseOp::Txn(inner) = &resp.responses[0] else { panic!() };
    assert!(!inner.succeeded);
    assert_eq!(get(&s, "k2"), Some(kv("k2", "else", 3, 4, 2)));
}

#[test]
fn txn_rejects_duplicate_keys() {
    let mut s = store();
    put(&mut s, "a", "1");
    let nested = |success, failure| RequestOp::Txn(txn(vec![], success, failure));
    let bad = [
        vec![op_put("a", "1"), op_put("a", "2")],
        vec![op_put("a", "1"), RequestOp::DeleteRange(del_req("a", b""))],
        vec![RequestOp::DeleteRange(del_req("a", b"c")), op_put("b", "1")],
        vec![op_put("a", "1"), nested(vec![op_put("a", "2")], vec![])],
        vec![nested(vec![RequestOp::DeleteRange(del_req("a", b""))], vec![]), op_put("a", "1")],
        vec![nested(vec![op_put("a", "1")], vec![]), nested(vec![], vec![op_put("a", "2")])],
    ];
    for (i, ops) in bad.into_iter().enumerate() {
        // Checked on both branches, whichever would run.
        for req in [txn(vec![], ops.clone(), vec![]), txn(vec![], vec![], ops)] {
            assert_eq!(s.txn(&req), Err(StoreError::DuplicateKey), "case {i}");
        }
    }
    assert_eq!(s.revision(), 2);
    let fine = [
        vec![nested(vec![op_put("a", "1")], vec![op_put("a", "2")])],
        vec![RequestOp::DeleteRange(del_req("a", b"")), RequestOp::DeleteRange(del_req("a", b"z"))],
        vec![op_put("a", "1"), RequestOp::Range(range_req("a", b""))],
    ];
    for ops in fine {
        s.txn(&txn(vec![], ops, vec![])).unwrap();
    }
    assert_eq!(
        StoreError::DuplicateKey.to_string(),
        "etcdserver: duplicate key given in txn request"
    );
}

#[test]
fn txn_request_errors_change_nothing() {
    let mut s = store();
    put(&mut s, "a", "1"); // 2
    put(&mut s, "a", "2"); // 3
    s.compact(&CompactionRequest { revision: 3 }).unwrap();
    let with = |op: RequestOp| txn(vec![], vec![op_put("new", "1"), op], vec![]);
    let cases = [
        (
            with(RequestOp::Range(RangeRequest { revision: 4, ..range_req("a", b"") })),
            StoreError::FutureRevision,
        ),
        (
            with(RequestOp::Range(RangeRequest { revision: 2, ..range_req("a", b"") })),
            StoreError::Compacted,
        ),
        (
            with(RequestOp::Put(PutRequest { ignore_value: true, ..put_req("zz", "") })),
            StoreError::KeyNotFound,
        ),
        (
            with(RequestOp::Put(PutRequest { lease: 7, ..put_req("b", "") })),
            StoreError::LeaseNotFound,
        ),
        (with(RequestOp::Put(put_req("", "x"))), StoreError::EmptyKey),
        (
            txn(vec![cmp("", CompareTarget::Version(0), CompareResult::Equal)], vec![], vec![]),
            StoreError::EmptyKey,
        ),
        (
            txn(vec![], (0..=MAX_TXN_OPS).map(|i| op_put(&format!("k{i}"), "")).collect(), vec![]),
            StoreError::TooManyOps,
        ),
    ];
    for (i, (req, err)) in cases.into_iter().enumerate() {
        assert_eq!(s.txn(&req), Err(err), "case {i}");
    }
    assert_eq!((s.revision(), get(&s, "new")), (3, None));
    // Exactly MAX_TXN_OPS is fine.
    let max = txn(vec![], (0..MAX_TXN_OPS).map(|i| op_put(&format!("k{i}"), "")).collect(), vec![]);
    s.txn(&max).unwrap();
    assert_eq!((s.revision(), s.len()), (4, 1 + MAX_TXN_OPS));
}

#[test]
fn put_options() {
    let mut s = store();
    put(&mut s, "a", "1");
    let keep = PutRequest { ignore_value: true, prev_kv: true, ..put_req("a", "") };
    let resp = s.put(&keep).unwrap();
    assert_eq!(resp, PutResponse { revision: 3, prev_kv: Some(kv("a", "1", 2, 2, 1)) });
    assert_eq!(get(&s, "a"), Some(kv("a", "1", 2, 3, 2)));
    let cases = [
        (PutRequest { ignore_value: true, ..put_req("a", "x") }, StoreError::ValueProvided),
        (PutRequest { ignore_value: true, ..put_req("zz", "") }, StoreError::KeyNotFound),
        (PutRequest { ignore_lease: true, ..put_req("zz", "") }, StoreError::KeyNotFound),
        (
            PutRequest { ignore_lease: true, lease: 1, ..put_req("a", "") },
            StoreError::LeaseProvided,
        ),
        (PutRequest { lease: 1, ..put_req("a", "") }, StoreError::LeaseNotFound),
        (put_req("", "x"), StoreError::EmptyKey),
    ];
    for (req, err) in cases {
        assert_eq!(s.put(&req), Err(err));
    }
    assert_eq!(s.delete_range(&del_req("", b"")), Err(StoreError::EmptyKey));
    assert_eq!(s.revision(), 3);
}

#[test]
fn error_messages_are_etcd_s() {
    let cases = [
        (StoreError::Compacted, "etcdserver: mvcc: required revision has been compacted"),
        (StoreError::FutureRevision, "etcdserver: mvcc: required revision is a future revision"),
        (StoreError::DuplicateKey, "etcdserver: duplicate key given in txn request"),
        (StoreError::TooManyOps, "etcdserver: too many operations in txn request"),
        (StoreError::EmptyKey, "etcdserver: key is not provided"),
        (StoreError::KeyNotFound, "etcdserver: key not found"),
        (StoreError::ValueProvided, "etcdserver: value is provided"),
        (StoreError::LeaseProvided, "etcdserver: lease is provided"),
        (StoreError::LeaseNotFound, "etcdserver: requested lease not found"),
    ];
    for (err, msg) in cases {
        assert_eq!(err.to_string(), msg);
        assert!(!err.is_fatal());
    }
}
