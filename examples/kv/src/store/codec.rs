//! The binary encoding of commands, queries and responses.
//!
//! Length-prefixed and deterministic: integers are fixed 8-byte little-endian, lengths and counts
//! are LEB128 varints, booleans are one byte (0 or 1), enums are a one-byte tag. Decoding checks
//! every length against the bytes left, refuses trailing bytes, bounds txn nesting at
//! [`MAX_DECODE_DEPTH`], and never panics.

use bytes::Bytes;

use super::types::{
    Command, CommandResponse, CompactionRequest, CompactionResponse, Compare, CompareResult,
    CompareTarget, DeleteRangeRequest, DeleteRangeResponse, KeyValue, PutRequest, PutResponse,
    RangeRequest, RangeResponse, RequestOp, ResponseOp, SortOrder, SortTarget, TxnRequest,
    TxnResponse,
};
use super::{MAX_TXN_OPS, StoreError};

/// The deepest txn nesting a message may have. etcd's op budget allows at most
/// [`MAX_TXN_OPS`] + 1 levels; anything deeper could only fail validation anyway.
pub(super) const MAX_DECODE_DEPTH: usize = MAX_TXN_OPS + 2;

/// An append-only encoder.
#[derive(Default)]
pub(super) struct Enc {
    pub(super) buf: Vec<u8>,
}

impl Enc {
    pub(super) fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    pub(super) fn bool(&mut self, v: bool) {
        self.buf.push(u8::from(v));
    }

    pub(super) fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub(super) fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub(super) fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    pub(super) fn bytes(&mut self, b: &[u8]) {
        self.varint(b.len() as u64);
        self.buf.extend_from_slice(b);
    }

    fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }
}

/// A decoder over a borrowed buffer; every error names `what` is being decoded.
pub(super) struct Dec<'a> {
    buf: &'a [u8],
    what: &'static str,
    depth: usize,
}

impl<'a> Dec<'a> {
    pub(super) fn new(buf: &'a [u8], what: &'static str) -> Self {
        Dec { buf, what, depth: 0 }
    }

    pub(super) fn error(&self, reason: &str) -> StoreError {
        StoreError::Malformed(format!("{}: {reason}", self.what))
    }

    pub(super) fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        if n > self.buf.len() {
            return Err(self.error("truncated"));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn array8(&mut self) -> Result<[u8; 8], StoreError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(a)
    }

    pub(super) fn u8(&mut self) -> Result<u8, StoreError> {
        Ok(self.take(1)?[0])
    }

    pub(super) fn bool(&mut self) -> Result<bool, StoreError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(self.error("bad boolean")),
        }
    }

    pub(super) fn i64(&mut self) -> Result<i64, StoreError> {
        Ok(i64::from_le_bytes(self.array8()?))
    }

    pub(super) fn u64(&mut self) -> Result<u64, StoreError> {
        Ok(u64::from_le_bytes(self.array8()?))
    }

    pub(super) fn varint(&mut self) -> Result<u64, StoreError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            let bits = u64::from(b & 0x7f);
            if shift == 63 && bits > 1 {
                return Err(self.error("varint overflow"));
            }
            v |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.error("varint too long"))
    }

    /// A count of items that each take at least one byte, so at most the bytes left.
    pub(super) fn count(&mut self) -> Result<usize, StoreError> {
        let n = self.varint()?;
        match usize::try_from(n) {
            Ok(n) if n <= self.buf.len() => Ok(n),
            _ => Err(self.error("count exceeds the bytes left")),
        }
    }

    pub(super) fn bytes(&mut self) -> Result<Vec<u8>, StoreError> {
        let n = self.count()?;
        Ok(self.take(n)?.to_vec())
    }

    fn string(&mut self) -> Result<String, StoreError> {
        let b = self.bytes()?;
        String::from_utf8(b).map_err(|_| self.error("bad UTF-8"))
    }

    pub(super) fn finish(&self) -> Result<(), StoreError> {
        if self.buf.is_empty() { Ok(()) } else { Err(self.error("trailing bytes")) }
    }

    fn enter(&mut self) -> Result<(), StoreError> {
        self.depth += 1;
        if self.depth > MAX_DECODE_DEPTH {
            return Err(self.error("txn nested too deeply"));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }
}

/// A type with a wire form.
trait Codec: Sized {
    fn enc(&self, e: &mut Enc);
    fn dec(d: &mut Dec<'_>) -> Result<Self, StoreError>;
}

fn encode_to_bytes<T: Codec>(v: &T) -> Bytes {
    let mut e = Enc::default();
    v.enc(&mut e);
    Bytes::from(e.buf)
}

fn decode_all<T: Codec>(data: &[u8], what: &'static str) -> Result<T, StoreError> {
    let mut d = Dec::new(data, what);
    let v = T::dec(&mut d)?;
    d.finish()?;
    Ok(v)
}

macro_rules! public_codec {
    ($ty:ty, $what:literal) => {
        impl $ty {
            #[doc = concat!("Encodes this ", $what, " (deterministic, length-prefixed binary).")]
            pub fn encode(&self) -> Bytes {
                encode_to_bytes(self)
            }

            #[doc = concat!("Decodes a ", $what, "; garbage is a `StoreError::Malformed`.")]
            pub fn decode(data: &[u8]) -> Result<Self, StoreError> {
                decode_all(data, $what)
            }
        }
    };
}

public_codec!(Command, "command");
public_codec!(CommandResponse, "command response");
public_codec!(RangeRequest, "range request");
public_codec!(RangeResponse, "range response");

impl<T: Codec> Codec for Vec<T> {
    fn enc(&self, e: &mut Enc) {
        e.varint(self.len() as u64);
        for v in self {
            v.enc(e);
        }
    }

    fn dec(d: &mut Dec<'_>) -> Result<Self, StoreError> {
        let n = d.count()?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(T::dec(d)?);
        }
        Ok(out)
    }
}

impl<T: Codec> Codec for Option<T> {
    fn enc(&self, e: &mut Enc) {
        match self {
            None => e.u8(0),
            Some(v) => {
                e.u8(1);
                v.enc(e);
            }
        }
    }

    fn dec(d: &mut Dec<'_>) -> Result<Self, StoreError> {
        match d.u8()? {
            0 => Ok(None),
            1 => Ok(Some(T::dec(d)?)),
            _ => Err(d.error("bad option tag")),
        }
    }
}

impl Codec for KeyValue {
    fn enc(&self, e: &mut Enc) {
        e.bytes(&self.key);
        e.bytes(&self.value);
        e.i64(self.create_revision);
        e.i64(self.mod_revision);
        e.i64(self.version);
        e.i64(self.lease);
    }

    fn dec(d: &mut Dec<'_>) -> Result<Self, StoreError> {
        Ok(KeyValue {
            key: d.bytes()?,
            value: d.bytes()?,
            create_revision: d.i64()?,
            mod_revision: d.i64()?,
            version: d.i64()?,
            lease: d.i64()?,
        })
    }
}

impl Codec for RangeRequest {
    fn enc(&self, e: &mut Enc) {
        e.bytes(&self.key);
        e.bytes(&self.range_end);
        e.i64(self.limit);
        e.i64(self.revision);
        e.u8(match self.sort_order {
            SortOrder::None => 0,
            SortOrder::Ascend => 1,
            SortOrder::Descend => 2,
        });
        e.u8(match self.sort_target {
            SortTarget::Key => 0,
            SortTarget::Version => 1,
            SortTarget::Create => 2,
            SortTarget::Mod => 3,
            SortTarget::Value => 4,
        });
        e.bool(self.keys_only);
        e.bool(self.count_only);
        e.i64(self.min_mod_revision);
        e.i64(self.max_mod_revision);
        e.i64(self.min_create_revision);
        e.i64(self.max_create_revision);
    }

    fn dec(d: &mut Dec<'_>) -> Result<Self, StoreError> {
        let key = d.bytes()?;
        let range_end = d.bytes()?;
        let limit = d.i64()?;
        let revision = d.i64()?;
        let sort_order = match d.u8()? {
            0 => SortOrder::None,
            1 => SortOrder::Ascend,
            2 => SortOrder::Descend,
            _ => return Err(d.error("bad sort order")),
        };
        let sort_target = match d.u8()? {
            0 => SortTarget::Key,
            1 => SortTarget::Version,
            2 => SortTarget::Create,
            3 => SortTarget::Mod,
            4 => SortTarget::Value,
            _ => return Err(d.error("bad sort target")),
        };
        Ok(RangeRequest {
            key,
            range_end,
            limit,
            revision,
            sort_order,
            sort_target,
            keys_only: d.bool()?,
            count_only: d.bool()?,
            min_mod_revision: d.i64()?,
            max_mod_revision: d.i64()?,
            min_create_revision: d.i64()?,
            max_create_revision: d.i64()?,
        })
    }
}

impl Codec for RangeResponse {
    fn enc(&self, e: &mut Enc) {
        e.i64(self.revision);
        self.kvs.enc(e);
        e.bool(self.more);
        e.i64(self.count);
    }

    fn dec(d: &mut Dec<'_>) -> Result<Self, StoreError> {
        Ok(RangeResponse {
            revision: d.i64()?,
            kvs: Vec::dec(d)?,
            more: d.bool()?,
            count: d.i64()?,
        })
    }
}

impl Codec for PutRequest {
    fn enc(&self, e: &mut Enc) {
        e.bytes(&self.key);
        e.bytes(&self.value);
        e.i64(self.lease);
        e.bool(self.prev_kv);
        e.bool(self.ignore_value);
        e.bool(self.ignore_lease);
    }

    fn dec(d: &mut Dec<'_>) -> Result<Self, StoreError> {
        Ok(PutRequest {
            key: d.bytes()?,
            value: d.bytes()?,
            lease: d.i64()?,
            prev_kv: d.bool()?,
            ignore_value: d.bool()?,
            ignore_lease: d.bool()?,
        })
    }
}

impl Codec for PutResponse {
    fn enc(&self, e: &mut Enc) {
        e.i64(self.revision);
        self.prev_kv.enc(e);
    }

    fn dec(d: &mut Dec<'_>) -> Result<Self, StoreError> {
        Ok(PutResponse { revision: d.i64()?, prev_kv: Option::dec(d)? })
    }
}

impl Codec for DeleteRangeRequest {
    fn enc(&self, e: &mut Enc) {
        e.bytes(&self.key);
        e.bytes(&self.range_end);
        e.bool(self.prev_kv);
    }

    fn dec(d: &mut Dec<'_>) -> Result<Self, StoreError> {
        Ok(DeleteRangeRequest { key: d.bytes()?, range_end: d.bytes()?, prev_kv: d.bool()? })
    }
}

impl Codec for DeleteRangeResponse {
    fn enc(&self, e: &mut Enc) {
        e.i64(self.revision);
        e.i64(self.deleted);
        self.prev_kvs.enc(e);
    }

    fn dec(d: &mut Dec<'_>) -> Result<Self, StoreError> {
        Ok(DeleteRangeResponse { revision: d.i64()?, deleted: d.i64()?, prev_kvs: Vec::dec(d)? })
    }
}

impl Codec for Compare {
    fn enc(&self, e: &mut Enc) {
        e.bytes(&self.key);
        e.bytes(&self.range_end);
        match &self.target {
            CompareTarget::Version(v) => {
                e.u8(0);
                e.i64(*v);
            }
            CompareTarget::CreateRevision(v) => {
                e.u8(1);
                e.i64(*v);
            }
            CompareTarget::ModRevision(v) => {
                e.u8(2);
                e.i64(*v);
            }
            CompareTarget::Value(v) => {
                e.u8(3);
                e.bytes(v);
            }
            CompareTarget::Lease(v) => {
                e.u8(4);
                e.i64(*v);
            }
        }
        e.u8(match self.result {
            CompareResult::Equal => 0,
            CompareResult::Greater => 1,
            CompareResult::Less => 2,
            CompareResult::NotEqual => 3,
        });
    }

    fn dec(d: &mut Dec<'_>) -> Result<Self, StoreError> {
        let key = d.bytes()?;
        let range_end = d.bytes()?;
        let target = match d.u8()? {
            0 => CompareTarget::Version(d.i64()?),
            1 => CompareTarget::CreateRevision(d.i64()?),
            2 => CompareTarget::ModRevision(d.i64()?),
            3 => CompareTarget::Value(d.bytes()?),
            4 => CompareTarget::Lease(d.i64()?),
            _ => return Err(d.error("bad compare target")),
        };
        let result = match d.u8()? {
            0 => CompareResult::Equal,
            1 => CompareResult::Greater,
            2 => CompareResult::Less,
            3 => CompareResult::NotEqual,
            _ => return Err(d.error("bad compare result")),
        };
        Ok(Compare { key, range_end, target, result })
    }
}

impl Codec for RequestOp {
    fn enc(&self, e: &mut Enc) {
        match self {
            RequestOp::Range(r) => {
                e.u8(0);
                r.enc(e);
            }
            RequestOp::Put(r) => {
                e.u8(1);
                r.enc(e);
            }
            RequestOp::DeleteRange(r) => {
                e.u8(2);
                r.enc(e);
            }
            RequestOp::Txn(r) => {
                e.u8(3);
                r.enc(e);
            }
        }
    }

    fn dec(d: &mut Dec<'_>) -> Result<Self, StoreError> {
        Ok(match d.u8()? {
            0 => RequestOp::Range(RangeRequest::dec(d)?),
            1 => RequestOp::Put(PutRequest::dec(d)?),
            2 => RequestOp::DeleteRange(DeleteRangeRequest::dec(d)?),
            3 => RequestOp::Txn(TxnRequest::dec(d)?),
            _ => return Err(d.error("bad request op tag")),
        })
    }
}

impl Codec for TxnRequest {
    fn enc(&self, e: &mut Enc) {
        self.compare.enc(e);
        self.success.enc(e);
        self.failure.enc(e);
    }

    fn dec(d: &mut Dec<'_>) -> Result<Self, StoreError> {
        d.enter()?;
        let req =
            TxnRequest { compare: Vec::dec(d)?, success: Vec::dec(d)?, failure: Vec::dec(d)? };
        d.leave();
        Ok(req)
    }
}

impl Codec for ResponseOp {
    fn enc(&self, e: &mut Enc) {
        match self {
            ResponseOp::Range(r) => {
                e.u8(0);
                r.enc(e);
            }
            ResponseOp::Put(r) => {
                e.u8(1);
                r.enc(e);
            }
            ResponseOp::DeleteRange(r) => {
                e.u8(2);
                r.enc(e);
            }
            ResponseOp::Txn(r) => {
                e.u8(3);
                r.enc(e);
            }
        }
    }

    fn dec(d: &mut Dec<'_>) -> Result<Self, StoreError> {
        Ok(match d.u8()? {
            0 => ResponseOp::Range(RangeResponse::dec(d)?),
            1 => ResponseOp::Put(PutResponse::dec(d)?),
            2 => ResponseOp::DeleteRange(DeleteRangeResponse::dec(d)?),
            3 => ResponseOp::Txn(TxnResponse::dec(d)?),
            _ => return Err(d.error("bad response op tag")),
        })
    }
}

impl Codec for TxnResponse {
    fn enc(&self, e: &mut Enc) {
        e.i64(self.revision);
        e.bool(self.succeeded);
        self.responses.enc(e);
    }

    fn dec(d: &mut Dec<'_>) -> Result<Self, StoreError> {
        d.enter()?;
        let resp =
            TxnResponse { revision: d.i64()?, succeeded: d.bool()?, responses: Vec::dec(d)? };
        d.leave();
        Ok(resp)
    }
}

impl Codec for Command {
    fn enc(&self, e: &mut Enc) {
        match self {
            Command::Put(r) => {
                e.u8(1);
                r.enc(e);
            }
            Command::DeleteRange(r) => {
                e.u8(2);
                r.enc(e);
            }
            Command::Txn(r) => {
                e.u8(3);
                r.enc(e);
            }
            Command::Compact(r) => {
                e.u8(4);
                e.i64(r.revision);
            }
        }
    }

    fn dec(d: &mut Dec<'_>) -> Result<Self, StoreError> {
        Ok(match d.u8()? {
            1 => Command::Put(PutRequest::dec(d)?),
            2 => Command::DeleteRange(DeleteRangeRequest::dec(d)?),
            3 => Command::Txn(TxnRequest::dec(d)?),
            4 => Command::Compact(CompactionRequest { revision: d.i64()? }),
            _ => return Err(d.error("bad command tag")),
        })
    }
}

impl Codec for StoreError {
    fn enc(&self, e: &mut Enc) {
        match self {
            StoreError::Compacted => e.u8(1),
            StoreError::FutureRevision => e.u8(2),
            StoreError::DuplicateKey => e.u8(3),
            StoreError::TooManyOps => e.u8(4),
            StoreError::EmptyKey => e.u8(5),
            StoreError::KeyNotFound => e.u8(6),
            StoreError::ValueProvided => e.u8(7),
            StoreError::LeaseProvided => e.u8(8),
            StoreError::LeaseNotFound => e.u8(9),
            StoreError::Malformed(s) => {
                e.u8(10);
                e.str(s);
            }
            StoreError::CorruptSnapshot(s) => {
                e.u8(11);
                e.str(s);
            }
            StoreError::Io(s) => {
                e.u8(12);
                e.str(s);
            }
            StoreError::Corrupt(s) => {
                e.u8(13);
                e.str(s);
            }
            StoreError::ApplyOrder { index, applied } => {
                e.u8(14);
                e.u64(*index);
                e.u64(*applied);
            }
        }
    }

    fn dec(d: &mut Dec<'_>) -> Result<Self, StoreError> {
        Ok(match d.u8()? {
            1 => StoreError::Compacted,
            2 => StoreError::FutureRevision,
            3 => StoreError::DuplicateKey,
            4 => StoreError::TooManyOps,
            5 => StoreError::EmptyKey,
            6 => StoreError::KeyNotFound,
            7 => StoreError::ValueProvided,
            8 => StoreError::LeaseProvided,
            9 => StoreError::LeaseNotFound,
            10 => StoreError::Malformed(d.string()?),
            11 => StoreError::CorruptSnapshot(d.string()?),
            12 => StoreError::Io(d.string()?),
            13 => StoreError::Corrupt(d.string()?),
            14 => StoreError::ApplyOrder { index: d.u64()?, applied: d.u64()? },
            _ => return Err(d.error("bad error tag")),
        })
    }
}

impl Codec for CommandResponse {
    fn enc(&self, e: &mut Enc) {
        match self {
            CommandResponse::Range(r) => {
                e.u8(0);
                r.enc(e);
            }
            CommandResponse::Put(r) => {
                e.u8(1);
                r.enc(e);
            }
            CommandResponse::DeleteRange(r) => {
                e.u8(2);
                r.enc(e);
            }
            CommandResponse::Txn(r) => {
                e.u8(3);
                r.enc(e);
            }
            CommandResponse::Compact(r) => {
                e.u8(4);
                e.i64(r.revision);
            }
            CommandResponse::Error(err) => {
                e.u8(5);
                err.enc(e);
            }
        }
    }

    fn dec(d: &mut Dec<'_>) -> Result<Self, StoreError> {
        Ok(match d.u8()? {
            0 => CommandResponse::Range(RangeResponse::dec(d)?),
            1 => CommandResponse::Put(PutResponse::dec(d)?),
            2 => CommandResponse::DeleteRange(DeleteRangeResponse::dec(d)?),
            3 => CommandResponse::Txn(TxnResponse::dec(d)?),
            4 => CommandResponse::Compact(CompactionResponse { revision: d.i64()? }),
            5 => CommandResponse::Error(StoreError::dec(d)?),
            _ => return Err(d.error("bad response tag")),
        })
    }
}
