//! Tests of the wire formats, snapshots and determinism.

use super::*;

fn decode_resp(bytes: &[u8]) -> CommandResponse {
    CommandResponse::decode(bytes).unwrap()
}

#[test]
fn apply_and_query_speak_the_wire_format() {
    let mut s = store();
    let cmd = Command::Put(put_req("a", "1")).encode();
    let resp = decode_resp(&s.apply(1, &cmd).unwrap());
    assert_eq!(resp, CommandResponse::Put(PutResponse { revision: 2, prev_kv: None }));
    assert_eq!(s.applied_index(), 1);

    // Request errors and garbage are answered, and still advance the applied index.
    let compact = Command::Compact(CompactionRequest { revision: 9 }).encode();
    assert_eq!(
        decode_resp(&s.apply(2, &compact).unwrap()),
        CommandResponse::Error(StoreError::FutureRevision)
    );
    let garbage = decode_resp(&s.apply(5, &[3, 0xff]).unwrap());
    assert!(matches!(garbage, CommandResponse::Error(StoreError::Malformed(_))), "{garbage:?}");
    assert_eq!(s.applied_index(), 5);
    assert_eq!(s.apply(5, &cmd), Err(StoreError::ApplyOrder { index: 5, applied: 5 }));
    assert!(StoreError::ApplyOrder { index: 5, applied: 5 }.is_fatal());

    let query = RangeRequest { revision: 0, ..range_req("a", b"") }.encode();
    let resp = decode_resp(&s.query(&query).unwrap());
    let want =
        RangeResponse { revision: 2, kvs: vec![kv("a", "1", 2, 2, 1)], more: false, count: 1 };
    assert_eq!(resp, CommandResponse::Range(want.clone()));
    assert_eq!(RangeResponse::decode(&want.encode()), Ok(want));
    let future = RangeRequest { revision: 3, ..range_req("a", b"") }.encode();
    assert_eq!(
        decode_resp(&s.query(&future).unwrap()),
        CommandResponse::Error(StoreError::FutureRevision)
    );
    assert!(matches!(
        decode_resp(&s.query(b"").unwrap()),
        CommandResponse::Error(StoreError::Malformed(_))
    ));
}

fn sample_txn() -> TxnRequest {
    use CompareResult::*;
    use CompareTarget::*;
    txn(
        vec![
            cmp("a", Value(b("v")), Equal),
            cmp("b", Version(-1), Greater),
            Compare { range_end: b("\0"), ..cmp("c", CreateRevision(i64::MAX), Less) },
            cmp("d", ModRevision(3), NotEqual),
            cmp("e", Lease(0), Equal),
        ],
        vec![
            RequestOp::Range(RangeRequest {
                limit: 5,
                revision: 2,
                sort_order: SortOrder::Descend,
                sort_target: SortTarget::Value,
                keys_only: true,
                count_only: true,
                min_mod_revision: 1,
                max_mod_revision: 2,
                min_create_revision: 3,
                max_create_revision: 4,
                ..range_req("x", b"y")
            }),
            RequestOp::Put(PutRequest {
                lease: 3,
                prev_kv: true,
                ignore_value: true,
                ignore_lease: true,
                ..put_req("p", "q")
            }),
            RequestOp::Txn(txn(vec![], vec![], vec![op_put("n", "")])),
        ],
        vec![RequestOp::DeleteRange(DeleteRangeRequest { prev_kv: true, ..del_req("d", b"e") })],
    )
}

#[test]
fn codec_round_trips() {
    let commands = [
        Command::Put(put_req("k", "v")),
        Command::DeleteRange(del_req("a", b"\0")),
        Command::Txn(sample_txn()),
        Command::Compact(CompactionRequest { revision: -4 }),
    ];
    for c in commands {
        assert_eq!(Command::decode(&c.encode()), Ok(c));
    }
    let kvs = vec![kv("a", "1", 2, 3, 4), KeyValue { lease: -1, ..kv("", "", 0, 0, 0) }];
    let responses = [
        CommandResponse::Range(RangeResponse {
            revision: 9,
            kvs: kvs.clone(),
            more: true,
            count: 7,
        }),
        CommandResponse::Put(PutResponse { revision: 2, prev_kv: Some(kvs[0].clone()) }),
        CommandResponse::DeleteRange(DeleteRangeResponse {
            revision: 3,
            deleted: 2,
            prev_kvs: kvs,
        }),
        CommandResponse::Txn(TxnResponse {
            revision: 4,
            succeeded: true,
            responses: vec![
                ResponseOp::Txn(TxnResponse { revision: 0, succeeded: false, responses: vec![] }),
                ResponseOp::Put(PutResponse::default()),
                ResponseOp::DeleteRange(DeleteRangeResponse::default()),
                ResponseOp::Range(RangeResponse::default()),
            ],
        }),
        CommandResponse::Compact(CompactionResponse { revision: 5 }),
        CommandResponse::Error(StoreError::Malformed("x".into())),
        CommandResponse::Error(StoreError::ApplyOrder { index: 1, applied: 2 }),
        CommandResponse::Error(StoreError::Compacted),
    ];
    for r in responses {
        assert_eq!(CommandResponse::decode(&r.encode()), Ok(r));
    }
    // A put command is small: tag, two length bytes, key, value, lease, three flags.
    assert_eq!(Command::Put(put_req("k", "v")).encode().len(), 1 + 2 + 2 + 8 + 3);
}

fn decode_everything(data: &[u8]) {
    let _ = Command::decode(data);
    let _ = CommandResponse::decode(data);
    let _ = RangeRequest::decode(data);
    let _ = RangeResponse::decode(data);
}

#[test]
fn garbage_never_panics() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut buf = Vec::new();
    for _ in 0..20_000 {
        buf.clear();
        let len = rng.below(96) as usize;
        buf.extend((0..len).map(|_| rng.next() as u8));
        decode_everything(&buf);
    }
    // Mutations of valid messages reach deeper into the decoders.
    let valid = [
        Command::Txn(sample_txn()).encode(),
        CommandResponse::Range(RangeResponse {
            revision: 1,
            kvs: vec![kv("a", "b", 1, 2, 3)],
            more: true,
            count: 1,
        })
        .encode(),
    ];
    for _ in 0..20_000 {
        let mut m = valid[rng.below(2) as usize].to_vec();
        for _ in 0..=rng.below(3) {
            let i = rng.below(m.len() as u64) as usize;
            m[i] = rng.next() as u8;
        }
        m.truncate(m.len() - rng.below(4) as usize);
        decode_everything(&m);
    }
    // A deeply nested txn is refused instead of overflowing the stack.
    let mut bomb = vec![3u8];
    for _ in 0..100_000 {
        bomb.extend([0, 1, 3]); // no compares, one success op: a txn
    }
    assert!(matches!(Command::decode(&bomb), Err(StoreError::Malformed(_))));
    // A huge length is refused before allocating.
    let huge = [1u8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f];
    assert!(matches!(Command::decode(&huge), Err(StoreError::Malformed(_))));
}

/// A random but reproducible command from a small key space.
fn random_command(rng: &mut Rng, revision: i64) -> Command {
    let key = |rng: &mut Rng| format!("k{}", rng.below(12)).into_bytes();
    let value = |rng: &mut Rng| vec![b'v'; rng.below(40) as usize];
    match rng.below(10) {
        0..=4 => {
            Command::Put(PutRequest { key: key(rng), value: value(rng), ..Default::default() })
        }
        5 | 6 => {
            let k = key(rng);
            let mut end = k.clone();
            end.push(b'~');
            let range_end = if rng.below(2) == 0 { Vec::new() } else { end };
            Command::DeleteRange(DeleteRangeRequest { key: k, range_end, prev_kv: true })
        }
        7 | 8 => {
            let (k1, k2) = (key(rng), key(rng));
            let put = |k: Vec<u8>, v| {
                RequestOp::Put(PutRequest { key: k, value: v, ..Default::default() })
            };
            Command::Txn(TxnRequest {
                compare: vec![Compare {
                    key: k1.clone(),
                    range_end: Vec::new(),
                    target: CompareTarget::Version(rng.below(3) as i64),
                    result: CompareResult::Greater,
                }],
                success: vec![
                    put(k1, value(rng)),
                    RequestOp::Range(RangeRequest {
                        key: b("\0"),
                        range_end: b("\0"),
                        ..Default::default()
                    }),
                ],
                failure: vec![RequestOp::DeleteRange(DeleteRangeRequest {
                    key: k2,
                    range_end: Vec::new(),
                    prev_kv: false,
                })],
            })
        }
        _ => Command::Compact(CompactionRequest { revision: revision - 2 - rng.below(30) as i64 }),
    }
}

/// Ranges over everything at every readable revision.
fn all_reads(s: &Store) -> Vec<Result<RangeResponse, StoreError>> {
    (s.compacted_revision().max(1)..=s.revision())
        .map(|revision| s.range(&RangeRequest { revision, ..range_req("\0", b"\0") }))
        .collect()
}

fn random_store(seed: u64, commands: usize) -> (Store, Vec<Bytes>) {
    let mut s = store();
    let mut rng = Rng(seed);
    let mut responses = Vec::new();
    for i in 0..commands {
        let cmd = random_command(&mut rng, s.revision());
        responses.push(s.apply(i as u64 + 1, &cmd.encode()).unwrap());
    }
    (s, responses)
}

#[test]
fn snapshot_restore_gives_the_same_store() {
    let (mut s, _) = random_store(7, 400);
    for i in 0..20 {
        let cmd = Command::Put(put_req(&format!("k{}", i % 3), &format!("after {i}")));
        s.apply(401 + i, &cmd.encode()).unwrap();
    }
    let (revision, compacted) = (s.revision(), s.compacted_revision());
    assert!(compacted > 1 && revision > compacted + 10, "{revision} {compacted}");
    let snap = s.snapshot().unwrap();
    let mut fresh = store();
    put(&mut fresh, "junk", "gone after restore");
    fresh.restore(&snap).unwrap();
    assert_eq!(
        (fresh.revision(), fresh.compacted_revision(), fresh.applied_index(), fresh.len()),
        (s.revision(), s.compacted_revision(), s.applied_index(), s.len())
    );
    assert_eq!(all_reads(&fresh), all_reads(&s));
    assert_eq!(fresh.snapshot().unwrap(), snap);
    assert_eq!(get(&fresh, "junk"), None);
    assert_eq!(fresh.db.len(), s.db.len());
    assert_eq!(fresh.index, s.index);
}

#[test]
fn a_snapshot_builder_gives_the_snapshot_of_when_it_was_made() {
    // Run while another thread applies random commands (compactions among them, whose records
    // stay while it lives), a builder still produces exactly the snapshot of its moment.
    for seed in 0..8 {
        let (mut s, _) = random_store(100 + seed, 200);
        let want = s.snapshot().unwrap();
        let build = s.snapshot_builder();
        let writer = std::thread::spawn(move || {
            let mut rng = Rng(seed);
            for i in 0..200u64 {
                let cmd = random_command(&mut rng, s.revision());
                s.apply(201 + i, &cmd.encode()).unwrap();
            }
            s
        });
        let got = build().unwrap();
        let s = writer.join().unwrap();
        assert_eq!(got, want, "seed {seed}");
        assert_ne!(s.snapshot().unwrap(), want, "seed {seed}: the writer changed nothing");
    }
}

#[test]
fn a_snapshot_builder_run_after_later_writes_skips_them() {
    // The overlap above depends on scheduling; here every later command (compactions too) is
    // surely applied before the builder runs.
    for seed in 0..8 {
        let (mut s, _) = random_store(200 + seed, 200);
        let want = s.snapshot().unwrap();
        let build = s.snapshot_builder();
        let mut rng = Rng(seed);
        for index in 201..400 {
            let cmd = random_command(&mut rng, s.revision());
            s.apply(index, &cmd.encode()).unwrap();
        }
        assert_ne!(s.snapshot().unwrap(), want, "seed {seed}: the writes changed nothing");
        assert_eq!(build().unwrap(), want, "seed {seed}");
    }
}

#[test]
fn compaction_leaves_history_to_a_snapshot_builder_without_waiting() {
    let (mut s, _) = random_store(5, 300);
    let want = s.snapshot().unwrap();
    let records = s.db.len();
    let build = s.snapshot_builder();
    // The compaction is answered at once and reads below it fail, but the records stay while
    // the builder may still read them.
    let revision = s.revision() - 1;
    s.compact(&CompactionRequest { revision }).unwrap();
    assert_eq!(s.compacted_revision(), revision);
    let below = RangeRequest { revision: revision - 1, ..range_req("\0", b"\0") };
    assert_eq!(s.range(&below), Err(StoreError::Compacted));
    assert_eq!(s.db.len(), records, "history removed under a live builder");
    // What each readable revision shows (the response header carries the current revision).
    let views = |s: &Store| -> Vec<Vec<KeyValue>> {
        (revision..=s.revision())
            .map(|revision| s.range(&RangeRequest { revision, ..range_req("\0", b"\0") }))
            .map(|r| r.unwrap().kvs)
            .collect()
    };
    let reads = views(&s);
    assert_eq!(build().unwrap(), want);
    // The next command applied removes them; reads are the same before and after.
    let cmd = Command::Put(put_req("after", "x"));
    s.apply(s.applied_index() + 1, &cmd.encode()).unwrap();
    assert!(s.db.len() < records + 1, "{} records left of {records}", s.db.len());
    let mut after = views(&s);
    after.pop(); // the view at the put's own revision
    assert_eq!(after, reads);
    // Same state as compacting with no builder around.
    let (mut t, _) = random_store(5, 300);
    t.compact(&CompactionRequest { revision }).unwrap();
    t.apply(t.applied_index() + 1, &cmd.encode()).unwrap();
    assert_eq!(t.snapshot().unwrap(), s.snapshot().unwrap());
}

#[test]
fn corrupt_snapshots_are_refused() {
    let (s, _) = random_store(11, 50);
    let snap = s.snapshot().unwrap().to_vec();
    let mut target = store();
    put(&mut target, "keep", "me");
    let mut flipped = snap.clone();
    flipped[snap.len() / 2] ^= 0x01;
    let mut bad_magic = snap[..snap.len() - 4].to_vec();
    bad_magic[0] = b'X';
    bad_magic.extend_from_slice(&crc32c::crc32c(&bad_magic).to_le_bytes());
    let mut trailing = snap[..snap.len() - 4].to_vec();
    trailing.push(0);
    trailing.extend_from_slice(&crc32c::crc32c(&trailing).to_le_bytes());
    // A record twice (count patched, checksum recomputed).
    let mut one = store();
    put(&mut one, "a", "1");
    let one = one.snapshot().unwrap();
    let (head, entry) = one[..one.len() - 4].split_at(40);
    let mut twice = head.to_vec();
    twice[32..40].copy_from_slice(&2u64.to_le_bytes());
    twice.extend_from_slice(entry);
    twice.extend_from_slice(entry);
    twice.extend_from_slice(&crc32c::crc32c(&twice).to_le_bytes());
    let bads = [flipped, snap[..snap.len() - 1].to_vec(), vec![], bad_magic, trailing, twice];
    for bad in bads {
        assert!(matches!(target.restore(&bad), Err(StoreError::CorruptSnapshot(_))));
    }
    assert_eq!(get(&target, "keep"), Some(kv("keep", "me", 2, 2, 1)));
    assert_eq!(target.revision(), 2);
    // Random bytes with a valid checksum are refused too, without panicking.
    let mut rng = Rng(3);
    for _ in 0..2_000 {
        let mut body = snap[..snap.len() - 4].to_vec();
        let i = rng.below(body.len() as u64) as usize;
        body[i] = rng.next() as u8;
        body.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
        let _ = store().restore(&body);
    }
}

#[test]
fn same_commands_give_the_same_state() {
    let (a, responses_a) = random_store(42, 300);
    let (b, responses_b) = random_store(42, 300);
    assert_eq!(responses_a, responses_b);
    assert_eq!(a.snapshot().unwrap(), b.snapshot().unwrap());
    let (c, _) = random_store(43, 300);
    assert_ne!(a.snapshot().unwrap(), c.snapshot().unwrap());
}

#[test]
fn open_clears_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv");
    {
        let mut s = Store::open(Some(&path)).unwrap();
        put(&mut s, "a", "1");
        assert_eq!(s.len(), 1);
        s.db.flush().unwrap();
        assert!(s.db_size_bytes() > 0);
    }
    let s = Store::open(Some(&path)).unwrap();
    assert_eq!((s.revision(), s.len(), get(&s, "a")), (1, 0, None));
}

/// Put applies per second with 256-byte values:
/// `cargo test --release -- --ignored --nocapture put_apply_rate`.
#[test]
#[ignore = "benchmark"]
fn put_apply_rate() {
    let mut s = store();
    let n = 200_000u64;
    let commands: Vec<Bytes> = (0..n)
        .map(|i| {
            let key = format!("key/{:08}", i % 50_000).into_bytes();
            Command::Put(PutRequest { key, value: vec![7; 256], ..Default::default() }).encode()
        })
        .collect();
    let start = std::time::Instant::now();
    for (i, cmd) in commands.iter().enumerate() {
        s.apply(i as u64 + 1, cmd).unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    eprintln!("{n} put applies in {secs:.2}s: {:.0}/s", n as f64 / secs);
}
