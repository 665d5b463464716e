//! Fuzzing entry points (feature `fuzzing`): the recovery code fed arbitrary bytes.
//!
//! [`recover_from_bytes`] runs what [`crate::SledStorage::open`] runs on the bytes of its files,
//! without the file system: the catalogue decoder, the sync watermark decoder, the segment scanner
//! and replay (torn-tail versus corruption rules), and the snapshot file verifier. Errors are expected; a panic is a finding,
//! and so is a recovered log whose index points at anything but the right entry.
//!
//! Half of the inputs (first byte even) are raw bytes; the other half build a valid log from the
//! input and then damage it (bit flips, zeroed ranges, truncation) as the rest of the input says,
//! which reaches the deep paths quickly.

use bytes::Bytes;
use raft_core::{ConfState, Entry, EntryKind, HardState, SnapshotMeta};

use crate::catalogue::{Identity, Loaded, SnapshotRef};
use crate::codec::{
    Record, RecordAt, SegmentHeader, put_entry, put_hard_state, put_marker, record_at,
    segment_header,
};
use crate::recovery::{SegmentInput, replay};
use crate::scan::TailPolicy;
use crate::snapfile;

const ID: Identity = Identity { cluster_id: 1, node_id: 1 };

/// Splits `data` into length-prefixed parts (u16 little-endian length; the last takes the rest).
fn parts(mut data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n - 1 {
        if data.len() < 2 {
            out.push(&data[..0]);
            continue;
        }
        let len = (u16::from_le_bytes([data[0], data[1]]) as usize).min(data.len() - 2);
        out.push(&data[2..2 + len]);
        data = &data[2 + len..];
    }
    out.push(data);
    out
}

/// Decodes catalogue pairs: `key_len u8, key, value_len u16, value`, repeated.
fn catalogue_pairs(mut data: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut pairs = Vec::new();
    while data.len() >= 3 && pairs.len() < 64 {
        let klen = (data[0] as usize).min(data.len() - 1);
        let key = data[1..1 + klen].to_vec();
        data = &data[1 + klen..];
        if data.len() < 2 {
            break;
        }
        let vlen = (u16::from_le_bytes([data[0], data[1]]) as usize).min(data.len() - 2);
        pairs.push((key, data[2..2 + vlen].to_vec()));
        data = &data[2 + vlen..];
    }
    pairs
}

/// A valid segment built from `spec`, then damaged as `damage` says.
fn damaged_segment(seq: u64, spec: &[u8], damage: &[u8]) -> Vec<u8> {
    let h = SegmentHeader {
        cluster_id: 1,
        node_id: 1,
        seq,
        salt: u64::from(spec.first().copied().unwrap_or(0)),
    };
    let seed = h.seed();
    let mut buf = segment_header(&h);
    put_hard_state(&mut buf, seed, &HardState { term: 1, vote: Some(1), commit: 0 });
    let mut index = 1u64;
    for (k, &b) in spec.iter().take(64).enumerate() {
        if b % 7 == 0 {
            let d = buf.len() as u64;
            put_marker(&mut buf, seed, d);
        }
        // Occasionally rewrite from an earlier index, as a conflicting append does.
        if b % 11 == 0 && index > 2 {
            index -= u64::from(b % 3) + 1;
        }
        let data = Bytes::from(vec![b; (b as usize % 5) * 200]);
        put_entry(
            &mut buf,
            seed,
            &Entry { index, term: 1 + k as u64 / 8, kind: EntryKind::Normal, data },
        );
        index += 1;
    }
    for op in damage.chunks(4).take(8) {
        let [kind, a, b, c] =
            [op[0], *op.get(1).unwrap_or(&0), *op.get(2).unwrap_or(&0), *op.get(3).unwrap_or(&0)];
        if buf.is_empty() {
            break;
        }
        let pos = (u32::from_le_bytes([a, b, c, 0]) as usize) % buf.len();
        match kind % 3 {
            0 => buf[pos] ^= 1 << (kind % 8),
            1 => {
                let end = (pos + 600).min(buf.len());
                buf[pos..end].fill(0)
            }
            _ => buf.truncate(pos),
        }
    }
    buf
}

/// Checks that every live entry of a recovered index points at exactly that entry.
fn check_recovered(segments: &[(u64, Vec<u8>)], r: &crate::recovery::Recovered) {
    let index = &r.index;
    for i in index.first_index()..=index.last_index() {
        let loc = index.loc(i);
        let bytes = &segments.iter().find(|(s, _)| *s == u64::from(loc.seq)).expect("segment").1;
        let at = record_at(&bytes[loc.pos as usize..], r.seeds[&u64::from(loc.seq)]);
        let RecordAt::Valid { len, record: Record::Entry { index: got, term, .. } } = at else {
            panic!("entry {i}: index points at {at:?}");
        };
        assert_eq!((got, term, len), (i, index.term(i).unwrap(), loc.len as usize), "entry {i}");
    }
}

/// Runs recovery on bytes derived from `data`. Never panics on any input (that is the property).
pub fn recover_from_bytes(data: &[u8]) {
    let Some((&mode, data)) = data.split_first() else { return };
    let p = parts(data, 6);
    let loaded = Loaded::decode(catalogue_pairs(p[0]));
    let _ = crate::watermark::parse(p[0], ID);
    let segments: Vec<(u64, Vec<u8>)> = if mode % 2 == 0 {
        vec![(1, p[1].to_vec()), (2, p[2].to_vec()), (3, p[3].to_vec())]
    } else {
        vec![(1, damaged_segment(1, p[1], p[2])), (2, damaged_segment(2, p[3], p[4]))]
    };
    let count = 1 + (mode as usize / 2) % segments.len();
    let segments = &segments[..count];
    let inputs: Vec<SegmentInput<'_>> = segments
        .iter()
        .enumerate()
        .map(|(i, (seq, bytes))| SegmentInput {
            seq: *seq,
            name: format!("{seq}"),
            bytes,
            policy: if i + 1 < count || mode & 0x40 != 0 {
                TailPolicy::Exact { len: bytes.len() as u64 }
            } else {
                TailPolicy::Recover { durable_len: u64::from(mode >> 2) * 64 }
            },
            header_may_be_torn: mode & 0x80 != 0,
        })
        .collect();
    let point = match &loaded {
        Ok(l) => l.snapshot.as_ref().map_or((0, 0), |s| (s.meta.index, s.meta.term)),
        Err(_) => (u64::from(mode >> 4), 1),
    };
    if let Ok(r) = replay(ID, point, &inputs) {
        check_recovered(segments, &r);
    }
    let expected = match loaded {
        Ok(Loaded { snapshot: Some(s), .. }) => s,
        _ => SnapshotRef {
            meta: SnapshotMeta { index: 1, term: 1, conf_state: ConfState::default() },
            file: "f".into(),
            data_len: p[5].len() as u64,
            data_crc: crc32c::crc32c(p[5]),
        },
    };
    let _ = snapfile::read(p[5], ID, &expected);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_inputs_never_panic() {
        let mut rng = raft_core::testkit::rng::Rng::new(0xF022);
        for n in 0..3000 {
            let len = (rng.next_u64() % 4096) as usize;
            let mut data: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            if let Some(m) = data.first_mut() {
                *m = n as u8;
            }
            recover_from_bytes(&data);
        }
    }
}
