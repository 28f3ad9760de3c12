//! The client protocol (documented in `docs/client-protocol.md`): a hello in
//! each direction, then pipelined request and response frames
//! (`crate::framing`), matched by request id; responses may come in any order.

use bytes::Bytes;

use crate::framing::{begin_frame, finish_frame, put_blob, put_opt_blob, take_frame, Decoded, FieldError, FrameError, Reader, Truncated};
use crate::kv::{CommandRef, KvError};

pub const CLIENT_PROTOCOL_VERSION: u16 = 1;
/// Bytes of the client's hello.
pub const CLIENT_HELLO_BYTES: usize = 16;
/// Bytes of the server's hello.
pub const SERVER_HELLO_BYTES: usize = 32;
const CLIENT_MAGIC: &[u8; 8] = b"MYRIADC\0";
const SERVER_MAGIC: &[u8; 8] = b"MYRIADS\0";
/// Largest request body (a key, a value and a CAS's expected value).
pub const REQUEST_BYTES_MAX: usize = 3 << 20;
/// Largest response body (a scan's pairs).
pub const RESPONSE_BYTES_MAX: usize = 64 << 20;
/// Most key and value bytes one scan returns (with their lengths): the rest
/// of a response frame is its id, tag and pair count.
pub const SCAN_REPLY_BYTES_MAX: usize = RESPONSE_BYTES_MAX - 64;
/// Most pairs one scan returns.
pub const SCAN_LIMIT_MAX: u32 = 10_000;

/// How fresh a read must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consistency {
    /// Linearizable: the leader serves it under its lease when it holds one,
    /// else after a ReadIndex round with a quorum.
    Linearizable,
    /// Whatever the replica that owns the connection has applied (may be stale).
    Stale,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Put { key: Bytes, value: Bytes },
    Delete { key: Bytes },
    /// Writes `new` (deletes when `None`) if the value is `expected` (absent when `None`).
    Cas { key: Bytes, expected: Option<Bytes>, new: Option<Bytes> },
    Get { key: Bytes, consistency: Consistency },
    Scan { prefix: Bytes, limit: u32, consistency: Consistency },
    /// Creates the group on the receiving node (every node must be asked;
    /// `Client::create_group` does). Idempotent.
    CreateGroup,
    /// Deletes the group and its data on the receiving node. Idempotent.
    DeleteGroup,
    /// The receiving node's counters, summed over its cores: a JSON object
    /// in a `Value` reply. The request's group is not looked at.
    Metrics,
    /// Hands the group's leadership to voter `to`: sent to the leader,
    /// answered `Done` once that replica stepped down with `to` leading,
    /// `Error` if the transfer was abandoned (`to` did not catch up and
    /// take over within an election timeout) or another node took over.
    TransferLeader { to: u64 },
    /// Drains the receiving node without stopping it: every group it leads
    /// is handed to another voter, now and whenever it wins one again,
    /// until `Undrain`. Answered `Done` once it leads none, knows every
    /// group's leader and has answered every request waiting on its
    /// groups; `Error` if that takes longer than `wait_ms`, or no other
    /// voter is up to take what it leads (it goes on draining either way).
    /// The request's group is not looked at.
    Drain { wait_ms: u32 },
    /// Ends a drain: the node may lead again (leader balancing hands it
    /// its share back). The request's group is not looked at.
    Undrain,
}

impl Op {
    pub fn is_write(&self) -> bool {
        matches!(self, Op::Put { .. } | Op::Delete { .. } | Op::Cas { .. })
    }

    /// The log command of a write, borrowed (checking it copies nothing).
    pub fn command(&self) -> Option<CommandRef<'_>> {
        match self {
            Op::Put { key, value } => Some(CommandRef::Put { key, value }),
            Op::Delete { key } => Some(CommandRef::Delete { key }),
            Op::Cas { key, expected, new } => Some(CommandRef::Cas { key, expected: expected.as_deref(), new: new.as_deref() }),
            Op::Get { .. } | Op::Scan { .. } | Op::CreateGroup | Op::DeleteGroup | Op::Metrics | Op::TransferLeader { .. } | Op::Drain { .. } | Op::Undrain => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub id: u64,
    pub group: u64,
    pub op: Op,
}

/// The answer to one request. Only `Done`, `Value`, `Entries` and `CasFailed`
/// mean the operation took effect (or was read) as asked; `NotLeader`,
/// `UnknownGroup`, `WrongCore`, `Busy` and `Error` mean it certainly did not;
/// `Unknown` means it may or may not have been applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Done,
    Value(Option<Bytes>),
    Entries(Vec<(Bytes, Bytes)>),
    CasFailed { current: Option<Bytes> },
    /// This replica does not lead the group; `leader` is the node it believes
    /// does (0: none known).
    NotLeader { leader: u64 },
    UnknownGroup,
    /// The group lives on another core of this node: connect to that core's port.
    WrongCore { core: u32 },
    /// Overloaded: retry later.
    Busy,
    /// The write may or may not have been applied: the replica that proposed
    /// it can no longer tell (a snapshot skipped its index, it leads again
    /// with another entry at that index, or it stopped).
    Unknown,
    Error(String),
    /// Not an answer: a notice, with id `CLOSING_NOTICE_ID`, that the node
    /// is about to stop. Send nothing more on this connection; the replies
    /// to what was sent still come; then close it.
    Closing,
}

/// The id of a `Closing` notice (no request is answered by it).
pub const CLOSING_NOTICE_ID: u64 = 0;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub id: u64,
    pub reply: Reply,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("truncated: {0}")]
    Truncated(#[from] Truncated),
    #[error(transparent)]
    Field(#[from] FieldError),
    #[error("not a Myriad client hello (magic {0:02x?})")]
    Magic([u8; 8]),
    #[error("protocol version {got}, this side speaks {CLIENT_PROTOCOL_VERSION}")]
    Version { got: u16 },
    #[error("unknown {what} tag {tag}")]
    Tag { what: &'static str, tag: u8 },
    #[error("{0} trailing bytes")]
    Trailing(usize),
    #[error("scan limit {0} exceeds {SCAN_LIMIT_MAX}")]
    ScanLimit(u32),
    #[error(transparent)]
    Kv(#[from] KvError),
    #[error("error text is not UTF-8")]
    Utf8,
}

/// Sent by the server after the client's hello.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerHello {
    pub node_id: u64,
    pub core: u32,
    pub cores: u32,
}

pub fn encode_client_hello(out: &mut Vec<u8>) {
    out.extend_from_slice(CLIENT_MAGIC);
    out.extend_from_slice(&CLIENT_PROTOCOL_VERSION.to_le_bytes());
    out.extend_from_slice(&[0; 6]);
}

fn check_magic(buf: &[u8], magic: &[u8; 8]) -> Result<(), ProtoError> {
    let n = buf.len().min(8);
    if buf[..n] != magic[..n] {
        let mut got = [0; 8];
        got[..n].copy_from_slice(&buf[..n]);
        return Err(ProtoError::Magic(got));
    }
    Ok(())
}

pub fn decode_client_hello(buf: &[u8]) -> Result<Decoded<()>, ProtoError> {
    check_magic(buf, CLIENT_MAGIC)?;
    if buf.len() < CLIENT_HELLO_BYTES {
        return Ok(Decoded::NeedMore);
    }
    let got = u16::from_le_bytes([buf[8], buf[9]]);
    if got != CLIENT_PROTOCOL_VERSION {
        return Err(ProtoError::Version { got });
    }
    Ok(Decoded::Frame((), CLIENT_HELLO_BYTES))
}

pub fn encode_server_hello(h: &ServerHello, out: &mut Vec<u8>) {
    out.extend_from_slice(SERVER_MAGIC);
    out.extend_from_slice(&CLIENT_PROTOCOL_VERSION.to_le_bytes());
    out.extend_from_slice(&[0; 2]);
    out.extend_from_slice(&h.core.to_le_bytes());
    out.extend_from_slice(&h.cores.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&h.node_id.to_le_bytes());
}

pub fn decode_server_hello(buf: &[u8]) -> Result<Decoded<ServerHello>, ProtoError> {
    check_magic(buf, SERVER_MAGIC)?;
    if buf.len() < SERVER_HELLO_BYTES {
        return Ok(Decoded::NeedMore);
    }
    let mut r = Reader::new(&buf[8..SERVER_HELLO_BYTES]);
    let got = r.u16()?;
    if got != CLIENT_PROTOCOL_VERSION {
        return Err(ProtoError::Version { got });
    }
    r.u16()?;
    let core = r.u32()?;
    let cores = r.u32()?;
    r.u32()?;
    let node_id = r.u64()?;
    Ok(Decoded::Frame(ServerHello { node_id, core, cores }, SERVER_HELLO_BYTES))
}

const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 2;
const OP_CAS: u8 = 3;
const OP_GET: u8 = 4;
const OP_SCAN: u8 = 5;
const OP_CREATE_GROUP: u8 = 6;
const OP_DELETE_GROUP: u8 = 7;
const OP_METRICS: u8 = 8;
const OP_TRANSFER_LEADER: u8 = 9;
const OP_DRAIN: u8 = 10;
const OP_UNDRAIN: u8 = 11;

fn put_opt(out: &mut Vec<u8>, v: &Option<Bytes>) {
    put_opt_blob(out, v.as_deref());
}

fn read_opt(r: &mut Reader<'_>) -> Result<Option<Bytes>, ProtoError> {
    Ok(r.opt_blob()?.map(Bytes::copy_from_slice))
}

fn consistency_byte(c: Consistency) -> u8 {
    match c {
        Consistency::Linearizable => 0,
        Consistency::Stale => 1,
    }
}

fn read_consistency(r: &mut Reader<'_>) -> Result<Consistency, ProtoError> {
    match r.u8()? {
        0 => Ok(Consistency::Linearizable),
        1 => Ok(Consistency::Stale),
        tag => Err(ProtoError::Tag { what: "consistency", tag }),
    }
}

fn bytes(r: &mut Reader<'_>) -> Result<Bytes, ProtoError> {
    Ok(Bytes::copy_from_slice(r.blob()?))
}

/// Appends one frame holding `req`.
pub fn encode_request(req: &Request, out: &mut Vec<u8>) {
    let start = begin_frame(out);
    out.extend_from_slice(&req.id.to_le_bytes());
    out.extend_from_slice(&req.group.to_le_bytes());
    match &req.op {
        Op::Put { key, value } => {
            out.push(OP_PUT);
            put_blob(out, key);
            put_blob(out, value);
        }
        Op::Delete { key } => {
            out.push(OP_DELETE);
            put_blob(out, key);
        }
        Op::Cas { key, expected, new } => {
            out.push(OP_CAS);
            put_blob(out, key);
            put_opt(out, expected);
            put_opt(out, new);
        }
        Op::Get { key, consistency } => {
            out.push(OP_GET);
            out.push(consistency_byte(*consistency));
            put_blob(out, key);
        }
        Op::Scan { prefix, limit, consistency } => {
            out.push(OP_SCAN);
            out.push(consistency_byte(*consistency));
            out.extend_from_slice(&limit.to_le_bytes());
            put_blob(out, prefix);
        }
        Op::CreateGroup => out.push(OP_CREATE_GROUP),
        Op::DeleteGroup => out.push(OP_DELETE_GROUP),
        Op::Metrics => out.push(OP_METRICS),
        Op::TransferLeader { to } => {
            out.push(OP_TRANSFER_LEADER);
            out.extend_from_slice(&to.to_le_bytes());
        }
        Op::Drain { wait_ms } => {
            out.push(OP_DRAIN);
            out.extend_from_slice(&wait_ms.to_le_bytes());
        }
        Op::Undrain => out.push(OP_UNDRAIN),
    }
    finish_frame(out, start);
}

/// Decodes the first request frame in `buf`. Requests that break the KV
/// limits are refused here, before they reach a group.
pub fn decode_request(buf: &[u8]) -> Result<Decoded<Request>, ProtoError> {
    let (body, used) = match take_frame(buf, REQUEST_BYTES_MAX)? {
        Decoded::NeedMore => return Ok(Decoded::NeedMore),
        Decoded::Frame(body, used) => (body, used),
    };
    let mut r = Reader::new(body);
    let id = r.u64()?;
    let group = r.u64()?;
    let op = match r.u8()? {
        OP_PUT => Op::Put { key: bytes(&mut r)?, value: bytes(&mut r)? },
        OP_DELETE => Op::Delete { key: bytes(&mut r)? },
        OP_CAS => Op::Cas { key: bytes(&mut r)?, expected: read_opt(&mut r)?, new: read_opt(&mut r)? },
        OP_GET => {
            let consistency = read_consistency(&mut r)?;
            Op::Get { key: bytes(&mut r)?, consistency }
        }
        OP_SCAN => {
            let consistency = read_consistency(&mut r)?;
            let limit = r.u32()?;
            if limit > SCAN_LIMIT_MAX {
                return Err(ProtoError::ScanLimit(limit));
            }
            Op::Scan { prefix: bytes(&mut r)?, limit, consistency }
        }
        OP_CREATE_GROUP => Op::CreateGroup,
        OP_DELETE_GROUP => Op::DeleteGroup,
        OP_METRICS => Op::Metrics,
        OP_TRANSFER_LEADER => Op::TransferLeader { to: r.u64()? },
        OP_DRAIN => Op::Drain { wait_ms: r.u32()? },
        OP_UNDRAIN => Op::Undrain,
        tag => return Err(ProtoError::Tag { what: "operation", tag }),
    };
    if r.remaining() != 0 {
        return Err(ProtoError::Trailing(r.remaining()));
    }
    if let Some(cmd) = op.command() {
        cmd.validate()?;
    }
    Ok(Decoded::Frame(Request { id, group, op }, used))
}

const R_DONE: u8 = 0;
const R_VALUE: u8 = 1;
const R_ENTRIES: u8 = 2;
const R_CAS_FAILED: u8 = 3;
const R_NOT_LEADER: u8 = 4;
const R_UNKNOWN_GROUP: u8 = 5;
const R_BUSY: u8 = 6;
const R_UNKNOWN: u8 = 7;
const R_ERROR: u8 = 8;
const R_WRONG_CORE: u8 = 9;
const R_CLOSING: u8 = 10;

pub fn encode_response(resp: &Response, out: &mut Vec<u8>) {
    let start = begin_frame(out);
    out.extend_from_slice(&resp.id.to_le_bytes());
    match &resp.reply {
        Reply::Done => out.push(R_DONE),
        Reply::Value(v) => {
            out.push(R_VALUE);
            put_opt(out, v);
        }
        Reply::Entries(pairs) => {
            out.push(R_ENTRIES);
            out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
            for (k, v) in pairs {
                put_blob(out, k);
                put_blob(out, v);
            }
        }
        Reply::CasFailed { current } => {
            out.push(R_CAS_FAILED);
            put_opt(out, current);
        }
        Reply::NotLeader { leader } => {
            out.push(R_NOT_LEADER);
            out.extend_from_slice(&leader.to_le_bytes());
        }
        Reply::UnknownGroup => out.push(R_UNKNOWN_GROUP),
        Reply::WrongCore { core } => {
            out.push(R_WRONG_CORE);
            out.extend_from_slice(&core.to_le_bytes());
        }
        Reply::Busy => out.push(R_BUSY),
        Reply::Unknown => out.push(R_UNKNOWN),
        Reply::Error(text) => {
            out.push(R_ERROR);
            put_blob(out, text.as_bytes());
        }
        Reply::Closing => out.push(R_CLOSING),
    }
    finish_frame(out, start);
}

pub fn decode_response(buf: &[u8]) -> Result<Decoded<Response>, ProtoError> {
    let (body, used) = match take_frame(buf, RESPONSE_BYTES_MAX)? {
        Decoded::NeedMore => return Ok(Decoded::NeedMore),
        Decoded::Frame(body, used) => (body, used),
    };
    let mut r = Reader::new(body);
    let id = r.u64()?;
    let reply = match r.u8()? {
        R_DONE => Reply::Done,
        R_VALUE => Reply::Value(read_opt(&mut r)?),
        R_ENTRIES => {
            let n = r.u32()?;
            if n > SCAN_LIMIT_MAX {
                return Err(ProtoError::ScanLimit(n));
            }
            let mut pairs = Vec::with_capacity(n as usize);
            for _ in 0..n {
                pairs.push((bytes(&mut r)?, bytes(&mut r)?));
            }
            Reply::Entries(pairs)
        }
        R_CAS_FAILED => Reply::CasFailed { current: read_opt(&mut r)? },
        R_NOT_LEADER => Reply::NotLeader { leader: r.u64()? },
        R_UNKNOWN_GROUP => Reply::UnknownGroup,
        R_WRONG_CORE => Reply::WrongCore { core: r.u32()? },
        R_BUSY => Reply::Busy,
        R_UNKNOWN => Reply::Unknown,
        R_CLOSING => Reply::Closing,
        R_ERROR => Reply::Error(String::from_utf8(r.blob()?.to_vec()).map_err(|_| ProtoError::Utf8)?),
        tag => return Err(ProtoError::Tag { what: "reply", tag }),
    };
    if r.remaining() != 0 {
        return Err(ProtoError::Trailing(r.remaining()));
    }
    Ok(Decoded::Frame(Response { id, reply }, used))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn requests_round_trip() {
        let ops = vec![
            Op::Put { key: b("k"), value: b("v") },
            Op::Delete { key: b("k") },
            Op::Cas { key: b("k"), expected: None, new: Some(b("n")) },
            Op::Cas { key: b("k"), expected: Some(b("o")), new: None },
            Op::Get { key: b("k"), consistency: Consistency::Linearizable },
            Op::Scan { prefix: b("p"), limit: 10, consistency: Consistency::Stale },
            Op::CreateGroup,
            Op::DeleteGroup,
            Op::Metrics,
            Op::TransferLeader { to: 2 },
            Op::Drain { wait_ms: 5000 },
            Op::Undrain,
        ];
        for (i, op) in ops.into_iter().enumerate() {
            let req = Request { id: i as u64, group: 3, op };
            let mut buf = Vec::new();
            encode_request(&req, &mut buf);
            for cut in 0..buf.len() {
                assert_eq!(decode_request(&buf[..cut]).unwrap(), Decoded::NeedMore);
            }
            assert_eq!(decode_request(&buf).unwrap(), Decoded::Frame(req, buf.len()));
        }
    }

    #[test]
    fn responses_round_trip() {
        let replies = vec![
            Reply::Done,
            Reply::Value(None),
            Reply::Value(Some(b("v"))),
            Reply::Entries(vec![(b("a"), b("1")), (b("b"), b("2"))]),
            Reply::CasFailed { current: Some(b("x")) },
            Reply::NotLeader { leader: 2 },
            Reply::UnknownGroup,
            Reply::WrongCore { core: 1 },
            Reply::Busy,
            Reply::Unknown,
            Reply::Error("boom".into()),
            Reply::Closing,
        ];
        for (i, reply) in replies.into_iter().enumerate() {
            let resp = Response { id: i as u64, reply };
            let mut buf = Vec::new();
            encode_response(&resp, &mut buf);
            assert_eq!(decode_response(&buf).unwrap(), Decoded::Frame(resp, buf.len()));
        }
    }

    #[test]
    fn hellos_and_bad_input() {
        let mut buf = Vec::new();
        encode_client_hello(&mut buf);
        assert_eq!(decode_client_hello(&buf).unwrap(), Decoded::Frame((), CLIENT_HELLO_BYTES));
        assert!(matches!(decode_client_hello(b"PRI * HTTP/2.0"), Err(ProtoError::Magic(_))));
        let h = ServerHello { node_id: 3, core: 1, cores: 2 };
        let mut buf = Vec::new();
        encode_server_hello(&h, &mut buf);
        assert_eq!(decode_server_hello(&buf).unwrap(), Decoded::Frame(h, SERVER_HELLO_BYTES));

        let mut req = Vec::new();
        let start = begin_frame(&mut req);
        req.extend_from_slice(&[0; 16]);
        req.push(99);
        finish_frame(&mut req, start);
        assert!(matches!(decode_request(&req), Err(ProtoError::Tag { .. })));
        let long_key = Request { id: 1, group: 1, op: Op::Delete { key: Bytes::from(vec![0; crate::kv::KEY_BYTES_MAX + 1]) } };
        let mut buf = Vec::new();
        encode_request(&long_key, &mut buf);
        assert!(matches!(decode_request(&buf), Err(ProtoError::Kv(KvError::KeyTooLong(_)))));
        let long_value = || Bytes::from(vec![0; crate::kv::VALUE_BYTES_MAX + 1]);
        for op in [Op::Put { key: b("k"), value: long_value() }, Op::Cas { key: b("k"), expected: None, new: Some(long_value()) }, Op::Cas { key: b("k"), expected: Some(long_value()), new: None }] {
            let mut buf = Vec::new();
            encode_request(&Request { id: 2, group: 1, op }, &mut buf);
            assert!(matches!(decode_request(&buf), Err(ProtoError::Kv(KvError::ValueTooLong(_)))));
        }
    }
}
