//! The replicated state machine: the MVCC store behind raft-core's `StateMachine` trait, and the
//! member metadata raft-kv replicates beside it.

use bytes::{BufMut, Bytes, BytesMut};
use raft_core::runtime::{Command, SnapshotBuilder, StateMachine, StateMachineError};

use crate::store::{Store, StoreError};

/// Query kinds (first byte of a query).
pub(crate) const QUERY_RANGE: u8 = 0;
pub(crate) const QUERY_STATS: u8 = 1;

/// The store as a Raft state machine. Commands are encoded `store::Command`s; queries are a
/// kind byte followed by an encoded `store::RangeRequest` (range) or nothing (stats).
pub(crate) struct KvStateMachine {
    pub(crate) store: Store,
}

impl StateMachine for KvStateMachine {
    fn apply(&mut self, commands: &[Command<'_>]) -> Result<Vec<Bytes>, StateMachineError> {
        let mut out = Vec::with_capacity(commands.len());
        for c in commands {
            out.push(self.store.apply(c.index, c.data)?);
        }
        Ok(out)
    }

    fn query(&self, query: &[u8]) -> Result<Bytes, StateMachineError> {
        match query.split_first() {
            Some((&QUERY_RANGE, range)) => Ok(self.store.query(range)?),
            Some((&QUERY_STATS, _)) => Ok(Stats {
                revision: self.store.revision(),
                compacted: self.store.compacted_revision(),
                db_size: self.store.db_size_bytes(),
                keys: self.store.len() as u64,
            }
            .encode()),
            _ => Err(Box::new(StoreError::Malformed("query kind".into()))),
        }
    }

    fn snapshot(&mut self) -> Result<Bytes, StateMachineError> {
        Ok(self.store.snapshot()?)
    }

    fn snapshot_builder(&mut self) -> Result<SnapshotBuilder, StateMachineError> {
        let build = self.store.snapshot_builder();
        Ok(Box::new(move || Ok(build()?)))
    }

    fn restore(&mut self, data: &[u8]) -> Result<(), StateMachineError> {
        Ok(self.store.restore(data)?)
    }
}

/// Store statistics for `Status` and `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Stats {
    pub(crate) revision: i64,
    pub(crate) compacted: i64,
    pub(crate) db_size: u64,
    pub(crate) keys: u64,
}

impl Stats {
    fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(32);
        b.put_i64_le(self.revision);
        b.put_i64_le(self.compacted);
        b.put_u64_le(self.db_size);
        b.put_u64_le(self.keys);
        b.freeze()
    }

    pub(crate) fn decode(b: &[u8]) -> Option<Stats> {
        let word = |i: usize| b.get(i * 8..i * 8 + 8)?.try_into().ok().map(u64::from_le_bytes);
        Some(Stats {
            revision: word(0)? as i64,
            compacted: word(1)? as i64,
            db_size: word(2)?,
            keys: word(3)?,
        })
    }
}

/// What raft-kv records about a member in the log (the runtime's opaque member metadata):
/// its name and URLs, for `MemberList`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct MemberMeta {
    pub(crate) name: String,
    pub(crate) peer_urls: Vec<String>,
    pub(crate) client_urls: Vec<String>,
}

impl MemberMeta {
    pub(crate) fn encode(&self) -> Bytes {
        let mut b = BytesMut::new();
        let mut put = |s: &str| {
            b.put_u32_le(s.len() as u32);
            b.put_slice(s.as_bytes());
        };
        put(&self.name);
        put(&self.peer_urls.join(","));
        put(&self.client_urls.join(","));
        // Formerly "wants voter" (the library keeps learners to promote now): kept empty so the
        // layout stays the same.
        put("");
        b.freeze()
    }

    /// Decodes metadata; anything malformed (or empty) reads as "unknown yet".
    pub(crate) fn decode(mut b: &[u8]) -> MemberMeta {
        let mut take = || -> Option<String> {
            let n = u32::from_le_bytes(b.get(..4)?.try_into().ok()?) as usize;
            let s = String::from_utf8(b.get(4..4 + n)?.to_vec()).ok()?;
            b = &b[4 + n..];
            Some(s)
        };
        let split = |s: String| -> Vec<String> {
            s.split(',').filter(|u| !u.is_empty()).map(String::from).collect()
        };
        match (take(), take(), take(), take()) {
            (Some(name), Some(peers), Some(clients), Some(_reserved)) => {
                MemberMeta { name, peer_urls: split(peers), client_urls: split(clients) }
            }
            _ => MemberMeta::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_meta_round_trips_and_garbage_is_unknown() {
        let m = MemberMeta {
            name: "infra1".into(),
            peer_urls: vec!["http://127.0.0.1:2380".into()],
            client_urls: vec!["http://127.0.0.1:2379".into(), "http://10.0.0.1:2379".into()],
        };
        assert_eq!(MemberMeta::decode(&m.encode()), m);
        assert_eq!(MemberMeta::decode(b"\xff\xff\xff\xff"), MemberMeta::default());
        assert_eq!(MemberMeta::decode(b""), MemberMeta::default());
    }

    #[test]
    fn stats_round_trip() {
        let s = Stats { revision: 9, compacted: 3, db_size: 4096, keys: 7 };
        assert_eq!(Stats::decode(&s.encode()), Some(s));
        assert_eq!(Stats::decode(&[1, 2, 3]), None);
    }
}
