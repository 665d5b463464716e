//! What the runtime writes into normal log entries, and the replicated tables it keeps beside the
//! application's state (client sessions, member addresses), with their snapshot encoding.
//!
//! Every normal entry the runtime proposes starts with a kind byte, then the proposing node and
//! its proposal number (so that node can answer its waiting caller once the entry is applied):
//!
//! | kind | layout after `origin u64, proposal u64` |
//! |------|------------------------------------------|
//! | 1 command          | payload |
//! | 2 session command  | `client u64, seq u64`, payload |
//! | 3 open session     | (nothing) |
//! | 4 set member       | `id u64, addr_len u32, addr, meta` |
//! | 5 promote later    | `id u64` (promote this learner once it has caught up) |
//!
//! All integers are little-endian. Decoding never panics: a malformed entry is reported.

use std::collections::{BTreeMap, BTreeSet};

use bytes::{BufMut, Bytes, BytesMut};

use super::sessions::{Session, Sessions};
use crate::types::NodeId;

const KIND_COMMAND: u8 = 1;
const KIND_SESSION_COMMAND: u8 = 2;
const KIND_OPEN_SESSION: u8 = 3;
const KIND_SET_MEMBER: u8 = 4;
const KIND_PROMOTE_LATER: u8 = 5;

/// Identifies the caller waiting for an entry: the node that proposed it and its number there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Origin {
    pub(crate) node: NodeId,
    pub(crate) proposal: u64,
}

/// A decoded runtime entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Envelope {
    Command {
        origin: Origin,
        payload: Bytes,
    },
    SessionCommand {
        origin: Origin,
        client: u64,
        seq: u64,
        payload: Bytes,
    },
    OpenSession {
        origin: Origin,
    },
    SetMember {
        origin: Origin,
        id: NodeId,
        member: Member,
    },
    /// The leader is to promote learner `id` to voter once it has caught up.
    PromoteLater {
        origin: Origin,
        id: NodeId,
    },
}

/// A member's transport address and the application's metadata about it (replicated).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Member {
    /// Address the transport dials (e.g. `http://10.0.0.2:2380`).
    pub addr: String,
    /// Opaque application metadata (e.g. a name and client URLs).
    pub meta: Bytes,
}

fn header(kind: u8, origin: Origin, extra: usize) -> BytesMut {
    let mut b = BytesMut::with_capacity(17 + extra);
    b.put_u8(kind);
    b.put_u64_le(origin.node);
    b.put_u64_le(origin.proposal);
    b
}

impl Envelope {
    pub(crate) fn encode(&self) -> Bytes {
        match self {
            Envelope::Command { origin, payload } => {
                let mut b = header(KIND_COMMAND, *origin, payload.len());
                b.put_slice(payload);
                b.freeze()
            }
            Envelope::SessionCommand { origin, client, seq, payload } => {
                let mut b = header(KIND_SESSION_COMMAND, *origin, 16 + payload.len());
                b.put_u64_le(*client);
                b.put_u64_le(*seq);
                b.put_slice(payload);
                b.freeze()
            }
            Envelope::OpenSession { origin } => header(KIND_OPEN_SESSION, *origin, 0).freeze(),
            Envelope::PromoteLater { origin, id } => {
                let mut b = header(KIND_PROMOTE_LATER, *origin, 8);
                b.put_u64_le(*id);
                b.freeze()
            }
            Envelope::SetMember { origin, id, member } => {
                let mut b =
                    header(KIND_SET_MEMBER, *origin, 12 + member.addr.len() + member.meta.len());
                b.put_u64_le(*id);
                b.put_u32_le(member.addr.len() as u32);
                b.put_slice(member.addr.as_bytes());
                b.put_slice(&member.meta);
                b.freeze()
            }
        }
    }

    /// The origin alone (to find the caller of a proposal the leader refused).
    pub(crate) fn origin(data: &Bytes) -> Option<Origin> {
        let mut r = Reader { data, pos: 0 };
        r.u8().ok()?;
        Some(Origin { node: r.u64().ok()?, proposal: r.u64().ok()? })
    }

    /// Decodes an entry; `data` is the entry's payload (sliced without copying).
    pub(crate) fn decode(data: &Bytes) -> Result<Envelope, &'static str> {
        let mut r = Reader { data, pos: 0 };
        let kind = r.u8()?;
        let origin = Origin { node: r.u64()?, proposal: r.u64()? };
        Ok(match kind {
            KIND_COMMAND => Envelope::Command { origin, payload: r.rest() },
            KIND_SESSION_COMMAND => {
                let (client, seq) = (r.u64()?, r.u64()?);
                Envelope::SessionCommand { origin, client, seq, payload: r.rest() }
            }
            KIND_OPEN_SESSION => Envelope::OpenSession { origin },
            KIND_SET_MEMBER => {
                let id = r.u64()?;
                let addr = r.string()?;
                Envelope::SetMember { origin, id, member: Member { addr, meta: r.rest() } }
            }
            KIND_PROMOTE_LATER => Envelope::PromoteLater { origin, id: r.u64()? },
            _ => return Err("unknown entry kind"),
        })
    }
}

struct Reader<'a> {
    data: &'a Bytes,
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], &'static str> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len()).ok_or("truncated")?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, &'static str> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, &'static str> {
        let mut a = [0; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(a))
    }
    fn u64(&mut self) -> Result<u64, &'static str> {
        let mut a = [0; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    fn bytes(&mut self) -> Result<Bytes, &'static str> {
        let n = self.u32()? as usize;
        let start = self.pos;
        self.take(n)?;
        Ok(self.data.slice(start..start + n))
    }
    fn string(&mut self) -> Result<String, &'static str> {
        let n = self.u32()? as usize;
        let s = self.take(n)?;
        String::from_utf8(s.to_vec()).map_err(|_| "address is not UTF-8")
    }
    fn rest(&mut self) -> Bytes {
        let s = self.data.slice(self.pos..);
        self.pos = self.data.len();
        s
    }
}

/// Version 2 added the learners to promote; version 1 snapshots are still read.
const SNAPSHOT_MAGIC: &[u8; 4] = b"RTS2";
const SNAPSHOT_MAGIC_V1: &[u8; 4] = b"RTS1";

/// The runtime's part of a snapshot, wrapped around the application's data.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct SnapshotEnvelope {
    pub(crate) sessions: Sessions,
    pub(crate) members: BTreeMap<NodeId, Member>,
    /// Learners the leader promotes once they have caught up.
    pub(crate) promote: BTreeSet<NodeId>,
    pub(crate) app: Bytes,
}

impl SnapshotEnvelope {
    pub(crate) fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(64 + self.app.len());
        b.put_slice(SNAPSHOT_MAGIC);
        b.put_u32_le(self.sessions.table.len() as u32);
        for (id, s) in &self.sessions.table {
            b.put_u64_le(*id);
            b.put_u64_le(s.last_seq);
            b.put_u64_le(s.last_used);
            b.put_u32_le(s.last_response.len() as u32);
            b.put_slice(&s.last_response);
        }
        b.put_u32_le(self.members.len() as u32);
        for (id, m) in &self.members {
            b.put_u64_le(*id);
            b.put_u32_le(m.addr.len() as u32);
            b.put_slice(m.addr.as_bytes());
            b.put_u32_le(m.meta.len() as u32);
            b.put_slice(&m.meta);
        }
        b.put_u32_le(self.promote.len() as u32);
        for id in &self.promote {
            b.put_u64_le(*id);
        }
        b.put_u64_le(self.app.len() as u64);
        b.put_slice(&self.app);
        b.freeze()
    }

    pub(crate) fn decode(data: &Bytes) -> Result<SnapshotEnvelope, &'static str> {
        let mut r = Reader { data, pos: 0 };
        let v2 = match r.take(4)? {
            m if m == SNAPSHOT_MAGIC => true,
            m if m == SNAPSHOT_MAGIC_V1 => false,
            _ => return Err("not a runtime snapshot (bad magic)"),
        };
        let mut out = SnapshotEnvelope::default();
        for _ in 0..r.u32()? {
            let id = r.u64()?;
            let (last_seq, last_used) = (r.u64()?, r.u64()?);
            let last_response = r.bytes()?;
            out.sessions.table.insert(id, Session { last_seq, last_response, last_used });
        }
        for _ in 0..r.u32()? {
            let id = r.u64()?;
            let addr = r.string()?;
            let meta = r.bytes()?;
            out.members.insert(id, Member { addr, meta });
        }
        if v2 {
            for _ in 0..r.u32()? {
                out.promote.insert(r.u64()?);
            }
        }
        let len = r.u64()?;
        out.app = r.rest();
        if out.app.len() as u64 != len {
            return Err("application data length does not match");
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Origin {
        Origin { node: 7, proposal: 0xABCD }
    }

    #[test]
    fn envelopes_round_trip() {
        let cases = [
            Envelope::Command { origin: origin(), payload: Bytes::from_static(b"x=1") },
            Envelope::SessionCommand {
                origin: origin(),
                client: 42,
                seq: 3,
                payload: Bytes::from_static(b"inc"),
            },
            Envelope::OpenSession { origin: origin() },
            Envelope::PromoteLater { origin: origin(), id: 9 },
            Envelope::SetMember {
                origin: origin(),
                id: 4,
                member: Member { addr: "http://h:1".into(), meta: Bytes::from_static(b"m") },
            },
        ];
        for e in cases {
            assert_eq!(Envelope::origin(&e.encode()), Some(origin()));
            assert_eq!(Envelope::decode(&e.encode()), Ok(e));
        }
    }

    #[test]
    fn truncated_or_unknown_entries_are_errors() {
        let full = Envelope::SetMember {
            origin: origin(),
            id: 4,
            member: Member { addr: "a".repeat(10), meta: Bytes::new() },
        }
        .encode();
        for n in 0..27 {
            assert!(Envelope::decode(&full.slice(..n)).is_err(), "prefix of {n} bytes");
        }
        let mut bad = full.to_vec();
        bad[0] = 99;
        assert_eq!(Envelope::decode(&Bytes::from(bad)), Err("unknown entry kind"));
    }

    #[test]
    fn version_1_snapshots_are_still_read() {
        let mut env = SnapshotEnvelope { app: Bytes::from_static(b"app"), ..Default::default() };
        env.members.insert(2, Member { addr: "b:2".into(), meta: Bytes::new() });
        // Version 1 is version 2 without the (empty here) list of learners to promote.
        let v2 = env.encode().to_vec();
        let promote_at = v2.len() - 8 - 3 - 4;
        assert_eq!(&v2[promote_at..promote_at + 4], &[0, 0, 0, 0]);
        let mut v1 = v2[..promote_at].to_vec();
        v1.extend_from_slice(&v2[promote_at + 4..]);
        v1[..4].copy_from_slice(SNAPSHOT_MAGIC_V1);
        assert_eq!(SnapshotEnvelope::decode(&Bytes::from(v1)), Ok(env));
    }

    #[test]
    fn snapshot_envelope_round_trips_and_refuses_garbage() {
        let mut env =
            SnapshotEnvelope { app: Bytes::from_static(b"app-state"), ..Default::default() };
        env.sessions.open(3, 10, 10);
        env.sessions.record(3, 1, 4, Bytes::from_static(b"resp"));
        env.members.insert(2, Member { addr: "b:2".into(), meta: Bytes::from_static(b"meta") });
        env.promote.insert(5);
        let enc = env.encode();
        assert_eq!(SnapshotEnvelope::decode(&enc), Ok(env));
        assert!(SnapshotEnvelope::decode(&Bytes::from_static(b"junk")).is_err());
        for n in 0..enc.len() {
            assert!(SnapshotEnvelope::decode(&enc.slice(..n)).is_err(), "prefix of {n} bytes");
        }
    }
}
