//! The replicated key-value state machine of the simulator, with client sessions.
//!
//! Commands are proposals whose payload encodes `(client, seq, op)`. The store keeps, per client,
//! the last sequence number applied and its response (Raft dissertation §6.3), so a command that is
//! duplicated in the log (a retried proposal, a re-forwarded one) takes effect at most once and a
//! retry of the latest command gets the cached response.
//!
//! In the simulator the store is *durable*: it survives a crash together with its applied index,
//! updated atomically with every apply, so a node's applied index never goes backwards.

use std::collections::{BTreeMap, BTreeSet};

use bytes::{BufMut, Bytes, BytesMut};

use super::linearizability::{KvOp, KvResult};
use crate::types::{Entry, EntryKind, Index};

const COMMAND_TAG: u8 = 0xC1;
const READ_CTX_TAG: u8 = 0xC2;
const COMMAND_LEN: usize = 1 + 8 + 8 + 1 + 8 + 8;
const READ_CTX_LEN: usize = 1 + 8 + 8 + 8 + 4;

/// A client command as carried in a log entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    /// Client id (non-zero).
    pub client: u64,
    /// The client's sequence number for this command (starts at 1, increases).
    pub seq: u64,
    /// The operation.
    pub op: KvOp,
}

impl Command {
    /// Encodes the command as a proposal payload.
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(COMMAND_LEN);
        b.put_u8(COMMAND_TAG);
        b.put_u64_le(self.client);
        b.put_u64_le(self.seq);
        let (kind, key, value) = match self.op {
            KvOp::Get { key } => (0, key, 0),
            KvOp::Put { key, value } => (1, key, value),
        };
        b.put_u8(kind);
        b.put_u64_le(key);
        b.put_u64_le(value);
        b.freeze()
    }

    /// Decodes a payload; `None` if it is not a client command (other payloads are opaque no-ops).
    pub fn decode(data: &[u8]) -> Option<Command> {
        if data.len() != COMMAND_LEN || data[0] != COMMAND_TAG {
            return None;
        }
        let client = le_u64(&data[1..9]);
        let seq = le_u64(&data[9..17]);
        let key = le_u64(&data[18..26]);
        let value = le_u64(&data[26..34]);
        let op = match data[17] {
            0 => KvOp::Get { key },
            1 => KvOp::Put { key, value },
            _ => return None,
        };
        Some(Command { client, seq, op })
    }
}

/// The context of a client's linearizable read, passed to `read_index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadCtx {
    /// Client id.
    pub client: u64,
    /// The client's sequence number for this read.
    pub seq: u64,
    /// Key to read.
    pub key: u64,
    /// Attempt number (a retried read gets a new context).
    pub attempt: u32,
}

impl ReadCtx {
    /// Encodes the context.
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(READ_CTX_LEN);
        b.put_u8(READ_CTX_TAG);
        b.put_u64_le(self.client);
        b.put_u64_le(self.seq);
        b.put_u64_le(self.key);
        b.put_u32_le(self.attempt);
        b.freeze()
    }

    /// Decodes a context; `None` if it is not a client read context.
    pub fn decode(data: &[u8]) -> Option<ReadCtx> {
        if data.len() != READ_CTX_LEN || data[0] != READ_CTX_TAG {
            return None;
        }
        let mut attempt = [0u8; 4];
        attempt.copy_from_slice(&data[25..29]);
        Some(ReadCtx {
            client: le_u64(&data[1..9]),
            seq: le_u64(&data[9..17]),
            key: le_u64(&data[17..25]),
            attempt: u32::from_le_bytes(attempt),
        })
    }
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// What applying one entry did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// An empty entry or a payload that is not a client command: only the applied index moved.
    NoOp,
    /// The command took effect now.
    Effect {
        /// Client id.
        client: u64,
        /// Sequence number.
        seq: u64,
        /// The response.
        result: KvResult,
    },
    /// The client's latest command again (a retry or a duplicate): no effect, cached response.
    Duplicate {
        /// Client id.
        client: u64,
        /// Sequence number.
        seq: u64,
        /// The cached response of its first application.
        result: KvResult,
    },
    /// An older command of the client: no effect and no response.
    Stale {
        /// Client id.
        client: u64,
        /// Sequence number.
        seq: u64,
    },
}

/// A broken state-machine rule, found while applying.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvError {
    /// Entries must be applied in order, each index once.
    OutOfOrder {
        /// The index that should come next.
        expected: Index,
        /// The index handed in.
        got: Index,
    },
    /// A `(client, seq)` took effect a second time.
    DoubleEffect {
        /// Client id.
        client: u64,
        /// Sequence number.
        seq: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Session {
    last_seq: u64,
    response: KvResult,
}

/// The key-value store with client sessions. Durable in the simulator.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvStore {
    applied_index: Index,
    data: BTreeMap<u64, u64>,
    sessions: BTreeMap<u64, Session>,
    /// Every `(client, seq)` that took effect here (to assert at-most-once).
    effects: BTreeSet<(u64, u64)>,
}

impl KvStore {
    /// An empty store with nothing applied.
    pub fn new() -> KvStore {
        KvStore::default()
    }

    /// Index of the last applied entry.
    pub fn applied_index(&self) -> Index {
        self.applied_index
    }

    /// Current value of `key`.
    pub fn get(&self, key: u64) -> Option<u64> {
        self.data.get(&key).copied()
    }

    /// The highest sequence number of `client` applied so far.
    pub fn last_seq(&self, client: u64) -> Option<u64> {
        self.sessions.get(&client).map(|s| s.last_seq)
    }

    /// Number of commands that took effect.
    pub fn effects(&self) -> usize {
        self.effects.len()
    }

    /// Applies the next entry. It must be at index `applied_index() + 1`.
    pub fn apply(&mut self, entry: &Entry) -> Result<ApplyOutcome, KvError> {
        let expected = self.applied_index + 1;
        if entry.index != expected {
            return Err(KvError::OutOfOrder { expected, got: entry.index });
        }
        self.applied_index = entry.index;
        let cmd = match entry.kind {
            EntryKind::Empty | EntryKind::ConfChange => None,
            EntryKind::Normal => Command::decode(&entry.data),
        };
        let Some(cmd) = cmd else {
            return Ok(ApplyOutcome::NoOp);
        };
        if let Some(s) = self.sessions.get(&cmd.client) {
            if cmd.seq == s.last_seq {
                let result = s.response.clone();
                return Ok(ApplyOutcome::Duplicate { client: cmd.client, seq: cmd.seq, result });
            }
            if cmd.seq < s.last_seq {
                return Ok(ApplyOutcome::Stale { client: cmd.client, seq: cmd.seq });
            }
        }
        if !self.effects.insert((cmd.client, cmd.seq)) {
            return Err(KvError::DoubleEffect { client: cmd.client, seq: cmd.seq });
        }
        let result = match cmd.op {
            KvOp::Get { key } => KvResult::Get(self.get(key)),
            KvOp::Put { key, value } => {
                self.data.insert(key, value);
                KvResult::Put
            }
        };
        let session = Session { last_seq: cmd.seq, response: result.clone() };
        self.sessions.insert(cmd.client, session);
        Ok(ApplyOutcome::Effect { client: cmd.client, seq: cmd.seq, result })
    }
}

impl KvStore {
    /// Serializes the whole state (data, sessions, applied index) for a Raft snapshot.
    pub fn snapshot_data(&self) -> Bytes {
        let mut b = BytesMut::new();
        b.put_u64_le(self.applied_index);
        b.put_u64_le(self.data.len() as u64);
        for (k, v) in &self.data {
            b.put_u64_le(*k);
            b.put_u64_le(*v);
        }
        b.put_u64_le(self.sessions.len() as u64);
        for (client, s) in &self.sessions {
            b.put_u64_le(*client);
            b.put_u64_le(s.last_seq);
            let (tag, value) = match s.response {
                KvResult::Put => (0u8, 0),
                KvResult::Get(None) => (1, 0),
                KvResult::Get(Some(v)) => (2, v),
            };
            b.put_u8(tag);
            b.put_u64_le(value);
        }
        b.put_u64_le(self.effects.len() as u64);
        for (client, seq) in &self.effects {
            b.put_u64_le(*client);
            b.put_u64_le(*seq);
        }
        b.freeze()
    }

    /// Rebuilds a store from [`KvStore::snapshot_data`]; `None` if `data` is not such a state.
    pub fn from_snapshot_data(data: &[u8]) -> Option<KvStore> {
        let mut r = Reader { data, pos: 0 };
        let mut kv = KvStore { applied_index: r.u64()?, ..KvStore::default() };
        for _ in 0..r.len(16)? {
            let (k, v) = (r.u64()?, r.u64()?);
            kv.data.insert(k, v);
        }
        for _ in 0..r.len(25)? {
            let (client, last_seq) = (r.u64()?, r.u64()?);
            let (tag, value) = (r.u8()?, r.u64()?);
            let response = match tag {
                0 => KvResult::Put,
                1 => KvResult::Get(None),
                2 => KvResult::Get(Some(value)),
                _ => return None,
            };
            kv.sessions.insert(client, Session { last_seq, response });
        }
        for _ in 0..r.len(16)? {
            kv.effects.insert((r.u64()?, r.u64()?));
        }
        (r.pos == data.len()).then_some(kv)
    }
}

/// Reads little-endian fields; `None` past the end.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn u8(&mut self) -> Option<u8> {
        let b = *self.data.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    fn u64(&mut self) -> Option<u64> {
        let b = self.data.get(self.pos..self.pos + 8)?;
        self.pos += 8;
        Some(le_u64(b))
    }

    /// A count of records of `record_bytes` each, refused if the input cannot hold them.
    fn len(&mut self, record_bytes: usize) -> Option<u64> {
        let n = self.u64()?;
        let left = (self.data.len() - self.pos) as u64;
        (n.checked_mul(record_bytes as u64)? <= left).then_some(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: Index, cmd: &Command) -> Entry {
        Entry { term: 1, index, kind: EntryKind::Normal, data: cmd.encode() }
    }

    #[test]
    fn commands_and_contexts_round_trip() {
        let c = Command { client: 3, seq: 9, op: KvOp::Put { key: 2, value: 77 } };
        assert_eq!(Command::decode(&c.encode()), Some(c));
        let r = ReadCtx { client: 1, seq: 2, key: 3, attempt: 4 };
        assert_eq!(ReadCtx::decode(&r.encode()), Some(r));
        assert_eq!(Command::decode(b"opaque"), None);
    }

    #[test]
    fn sessions_apply_each_command_once() {
        let mut kv = KvStore::new();
        let put = Command { client: 1, seq: 1, op: KvOp::Put { key: 5, value: 10 } };
        let get = Command { client: 1, seq: 2, op: KvOp::Get { key: 5 } };
        assert!(matches!(kv.apply(&entry(1, &put)), Ok(ApplyOutcome::Effect { .. })));
        assert!(matches!(kv.apply(&entry(2, &put)), Ok(ApplyOutcome::Duplicate { .. })));
        let r = kv.apply(&entry(3, &get)).unwrap();
        assert!(matches!(r, ApplyOutcome::Effect { result: KvResult::Get(Some(10)), .. }));
        assert!(matches!(kv.apply(&entry(4, &put)), Ok(ApplyOutcome::Stale { .. })));
        assert!(matches!(kv.apply(&entry(9, &put)), Err(KvError::OutOfOrder { .. })));
        assert_eq!((kv.applied_index(), kv.effects()), (4, 2));
        let copy = KvStore::from_snapshot_data(&kv.snapshot_data()).unwrap();
        assert_eq!(copy, kv);
        assert_eq!(KvStore::from_snapshot_data(&kv.snapshot_data()[..20]), None);
        assert_eq!(KvStore::from_snapshot_data(b""), None);
    }
}
