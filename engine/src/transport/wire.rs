//! The peer wire format (documented in `docs/wire-format.md`).
//!
//! A connection opens with a fixed 40-byte handshake; then every frame
//! (`crate::framing`: length, CRC32C, body) carries one batch: all messages
//! of one loop iteration for that peer, archived with rkyv. Entry and
//! snapshot payloads sit in one blob, which decoding copies once into memory
//! of its own and hands out as slices. A link encodes with an `Encoder` and a
//! connection decodes with a `Decoder`, which keep their buffers between
//! frames; the archive is written straight behind its frame header.

use bytes::Bytes;
use raftcore::{ConfState, Entry, EntryKind, LogIndex, Message, MessageBody, NodeId, RejectHint, SnapshotMeta, Term};
use rkyv::util::AlignedVec;
use rkyv::{Archive, Serialize};

use crate::framing::{self, begin_frame, finish_frame, take_frame, FrameError};
pub use crate::framing::Decoded;

/// Largest frame body accepted or sent.
pub const FRAME_BYTES_MAX: usize = 64 << 20;
/// Most messages in one frame.
pub const FRAME_MESSAGES_MAX: usize = 1 << 20;
/// A sender starts a new frame once the messages it holds reach about this
/// many bytes. One message adds at most a snapshot chunk or an append of
/// 16 MiB (raftcore's `SNAPSHOT_CHUNK_BYTES_MAX`, `APPEND_BYTES_MAX`), plus
/// an entry's or a membership's overhead, so no frame reaches
/// `FRAME_BYTES_MAX`.
const FRAME_SPLIT_BYTES: usize = FRAME_BYTES_MAX / 2;
const _: () = {
    let message_max = if raftcore::limits::APPEND_BYTES_MAX > raftcore::limits::SNAPSHOT_CHUNK_BYTES_MAX { raftcore::limits::APPEND_BYTES_MAX } else { raftcore::limits::SNAPSHOT_CHUNK_BYTES_MAX };
    assert!(FRAME_SPLIT_BYTES as u64 + 2 * message_max <= FRAME_BYTES_MAX as u64);
};
/// Most deleted groups one frame tells of.
pub const FRAME_DELETED_GROUPS_MAX: usize = 1 << 16;
/// Most ids in one membership list carried by a snapshot.
const CONF_IDS_MAX: usize = 1024;
/// Bytes of the handshake.
pub const HANDSHAKE_BYTES: usize = 40;
const HANDSHAKE_MAGIC: &[u8; 8] = b"MYRIADP\0";

/// Who is dialling: sent once when a peer connection opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handshake {
    pub cluster_id: u64,
    pub node_id: u64,
    pub core: u32,
    pub cores: u32,
    pub version: u16,
}

/// One message of one group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    pub group: u64,
    pub msg: Message,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("not a Myriad peer handshake (magic {0:02x?})")]
    Magic([u8; 8]),
    #[error("the batch does not validate: {0}")]
    Structure(String),
    #[error("{what} out of range in message {message}")]
    Range { message: usize, what: &'static str },
    #[error("{0} messages in one frame exceed {FRAME_MESSAGES_MAX}")]
    TooManyMessages(usize),
    #[error("{0} deleted groups in one frame exceed {FRAME_DELETED_GROUPS_MAX}")]
    TooManyDeletedGroups(usize),
    #[error("message {message} (group {group}) is malformed: {why}")]
    Malformed { message: usize, group: u64, why: raftcore::Malformed },
}

pub fn encode_handshake(h: &Handshake, out: &mut Vec<u8>) {
    out.extend_from_slice(HANDSHAKE_MAGIC);
    out.extend_from_slice(&h.version.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&h.core.to_le_bytes());
    out.extend_from_slice(&h.cores.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&h.cluster_id.to_le_bytes());
    out.extend_from_slice(&h.node_id.to_le_bytes());
}

pub fn decode_handshake(buf: &[u8]) -> Result<Decoded<Handshake>, WireError> {
    if buf.len() < HANDSHAKE_BYTES {
        // Refuse a stranger as soon as its first bytes show it.
        let n = buf.len().min(8);
        if buf[..n] != HANDSHAKE_MAGIC[..n] {
            let mut magic = [0; 8];
            magic[..n].copy_from_slice(&buf[..n]);
            return Err(WireError::Magic(magic));
        }
        return Ok(Decoded::NeedMore);
    }
    let mut r = framing::Reader::new(&buf[..HANDSHAKE_BYTES]);
    let magic: [u8; 8] = r.bytes(8).expect("length checked").try_into().expect("8 bytes");
    if &magic != HANDSHAKE_MAGIC {
        return Err(WireError::Magic(magic));
    }
    let field = "length checked";
    let version = r.u16().expect(field);
    r.u16().expect(field);
    let core = r.u32().expect(field);
    let cores = r.u32().expect(field);
    r.u32().expect(field);
    let cluster_id = r.u64().expect(field);
    let node_id = r.u64().expect(field);
    Ok(Decoded::Frame(Handshake { cluster_id, node_id, core, cores, version }, HANDSHAKE_BYTES))
}

/// An entry's fixed part; its data is `data[offset..offset + len]` of the batch.
#[derive(Archive, Serialize, Clone, Copy, Debug)]
struct WireEntry {
    term: u64,
    index: u64,
    kind: u8,
    data_offset: u32,
    data_len: u32,
}

#[derive(Archive, Serialize, Clone, Debug)]
enum WireBody {
    Append { prev_index: u64, prev_term: u64, commit: u64, entries_start: u32, entries_len: u32 },
    AppendResponse { index: u64, rejected: bool, hint_index: u64, hint_term: u64 },
    RequestVote { pre: bool, transfer: bool, last_index: u64, last_term: u64 },
    VoteResponse { pre: bool, granted: bool },
    Heartbeat { commit: u64, round: u64 },
    HeartbeatResponse { round: u64 },
    SnapshotChunk { index: u64, term: u64, conf: Box<WireConf>, offset: u64, data_offset: u32, data_len: u32, last: bool },
    SnapshotResponse { index: u64, next_offset: u64, done: bool, reject: bool },
    TimeoutNow,
    ReadIndex { request_id: u64 },
    ReadIndexResponse { request_id: u64, index: u64 },
}

#[derive(Archive, Serialize, Clone, Debug, Default)]
struct WireConf {
    voters: Vec<u64>,
    voters_outgoing: Vec<u64>,
    learners: Vec<u64>,
    learners_next: Vec<u64>,
    auto_leave: bool,
}

#[derive(Archive, Serialize, Clone, Debug)]
struct WireMessage {
    group: u64,
    from: u64,
    to: u64,
    term: u64,
    body: WireBody,
}

#[derive(Archive, Serialize, Debug, Default)]
struct WireBatch {
    /// What the sending node says of itself (`FLAG_*`).
    flags: u32,
    messages: Vec<WireMessage>,
    entries: Vec<WireEntry>,
    data: Vec<u8>,
    /// Groups the sender has deleted, told to a peer that may still hold
    /// them (`node::tombstones`).
    deleted_groups: Vec<u64>,
    /// Ids in the membership lists of the snapshot chunks (not sent).
    #[rkyv(with = rkyv::with::Skip)]
    conf_ids: usize,
}

fn ids(list: &[NodeId]) -> Vec<u64> {
    list.iter().map(|n| n.0).collect()
}

impl WireBatch {
    fn clear(&mut self) {
        self.messages.clear();
        self.entries.clear();
        self.data.clear();
        self.deleted_groups.clear();
        self.conf_ids = 0;
    }

    /// About the bytes of its archive (over, not under).
    fn body_bytes_estimate(&self) -> usize {
        use std::mem::size_of;
        let fixed = size_of::<ArchivedWireBatch>() + 64;
        let message = size_of::<ArchivedWireMessage>() + size_of::<ArchivedWireConf>() + 16;
        fixed + self.messages.len() * message + self.entries.len() * size_of::<ArchivedWireEntry>() + self.data.len() + self.conf_ids * 8 + self.deleted_groups.len() * 8
    }

    /// Bytes its vectors hold, used or not.
    fn capacity_bytes(&self) -> usize {
        use std::mem::size_of;
        self.messages.capacity() * size_of::<WireMessage>() + self.entries.capacity() * size_of::<WireEntry>() + self.data.capacity()
    }

    fn push_data(&mut self, bytes: &[u8]) -> (u32, u32) {
        let offset = self.data.len();
        self.data.extend_from_slice(bytes);
        (offset as u32, bytes.len() as u32)
    }

    fn push(&mut self, env: &Envelope) {
        let m = &env.msg;
        let body = match &m.body {
            MessageBody::Append { prev_index, prev_term, entries, commit } => {
                let entries_start = self.entries.len() as u32;
                for e in entries {
                    let (data_offset, data_len) = self.push_data(&e.data);
                    self.entries.push(WireEntry { term: e.term.0, index: e.index.0, kind: e.kind as u8, data_offset, data_len });
                }
                WireBody::Append { prev_index: prev_index.0, prev_term: prev_term.0, commit: commit.0, entries_start, entries_len: entries.len() as u32 }
            }
            MessageBody::AppendResponse { index, reject } => WireBody::AppendResponse {
                index: index.0,
                rejected: reject.is_some(),
                hint_index: reject.map_or(0, |h| h.index.0),
                hint_term: reject.map_or(0, |h| h.term.0),
            },
            &MessageBody::RequestVote { pre, transfer, last_index, last_term } => WireBody::RequestVote { pre, transfer, last_index: last_index.0, last_term: last_term.0 },
            &MessageBody::VoteResponse { pre, granted } => WireBody::VoteResponse { pre, granted },
            &MessageBody::Heartbeat { commit, round } => WireBody::Heartbeat { commit: commit.0, round },
            &MessageBody::HeartbeatResponse { round } => WireBody::HeartbeatResponse { round },
            MessageBody::SnapshotChunk { meta, offset, data, last } => {
                let cs = &meta.conf_state;
                self.conf_ids += cs.voters.len() + cs.voters_outgoing.len() + cs.learners.len() + cs.learners_next.len();
                let conf = Box::new(WireConf {
                    voters: ids(&cs.voters),
                    voters_outgoing: ids(&cs.voters_outgoing),
                    learners: ids(&cs.learners),
                    learners_next: ids(&cs.learners_next),
                    auto_leave: cs.auto_leave,
                });
                let (data_offset, data_len) = self.push_data(data);
                WireBody::SnapshotChunk { index: meta.index.0, term: meta.term.0, conf, offset: *offset, data_offset, data_len, last: *last }
            }
            &MessageBody::SnapshotResponse { index, next_offset, done, reject } => WireBody::SnapshotResponse { index: index.0, next_offset, done, reject },
            MessageBody::TimeoutNow => WireBody::TimeoutNow,
            &MessageBody::ReadIndex { request_id } => WireBody::ReadIndex { request_id },
            &MessageBody::ReadIndexResponse { request_id, index } => WireBody::ReadIndexResponse { request_id, index: index.0 },
        };
        self.messages.push(WireMessage { group: env.group, from: m.from.0, to: m.to.0, term: m.term.0, body });
    }
}

/// A frame's flag: the sending node drains (it hands its leaderships
/// over; none should be handed to it).
const FLAG_DRAINING: u32 = 1;

/// What the sending node says of itself in each frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SenderState {
    pub draining: bool,
}

impl SenderState {
    fn flags(self) -> u32 {
        if self.draining {
            FLAG_DRAINING
        } else {
            0
        }
    }

    fn from_flags(flags: u32) -> Result<SenderState, WireError> {
        if flags & !FLAG_DRAINING != 0 {
            return Err(WireError::Structure(format!("unknown frame flags {flags:#x}")));
        }
        Ok(SenderState { draining: flags & FLAG_DRAINING != 0 })
    }
}

/// One decoded frame.
#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    pub sender: SenderState,
    pub envelopes: Vec<Envelope>,
    /// Groups the sender has deleted (see `Encoder::encode`).
    pub deleted_groups: Vec<u64>,
}

/// Appends one frame holding `batch` (from a node that does not drain) to
/// `out`. A link that sends many frames keeps an `Encoder` instead.
pub fn encode_batch(batch: &[Envelope], out: &mut Vec<u8>) {
    Encoder::default().encode(batch, &[], SenderState::default(), out);
}

/// Decodes the first frame in `buf`: its messages and the bytes it used. A
/// connection that receives many frames keeps a `Decoder` instead.
pub fn decode_batch(buf: &[u8]) -> Result<Decoded<Vec<Envelope>>, WireError> {
    Ok(match Decoder::default().decode(buf)? {
        Decoded::Frame(frame, used) => Decoded::Frame(frame.envelopes, used),
        Decoded::NeedMore => Decoded::NeedMore,
    })
}

/// Encodes frames, keeping its buffers from one frame to the next.
#[derive(Default)]
pub struct Encoder {
    wire: WireBatch,
}

impl Encoder {
    /// Appends the frames holding `batch` to `out` (one, unless the batch
    /// would outgrow `FRAME_SPLIT_BYTES` or `FRAME_MESSAGES_MAX`: a peer
    /// refuses a frame over `FRAME_BYTES_MAX`, and would refuse it again
    /// after every reconnect); returns how many. The first also tells of
    /// `deleted_groups` (at most `FRAME_DELETED_GROUPS_MAX`). An empty
    /// batch makes one frame without messages (a keepalive). Each archive
    /// is written in place behind its frame header, not built apart and
    /// copied.
    pub fn encode(&mut self, batch: &[Envelope], deleted_groups: &[u64], sender: SenderState, out: &mut Vec<u8>) -> usize {
        assert!(deleted_groups.len() <= FRAME_DELETED_GROUPS_MAX, "{} deleted groups for one frame", deleted_groups.len());
        self.wire.clear();
        self.wire.deleted_groups.extend_from_slice(deleted_groups);
        let mut frames = 0;
        for env in batch {
            self.wire.push(env);
            if self.wire.body_bytes_estimate() >= FRAME_SPLIT_BYTES || self.wire.messages.len() >= FRAME_MESSAGES_MAX {
                self.finish(sender, out);
                frames += 1;
            }
        }
        if frames == 0 || !self.wire.messages.is_empty() {
            self.finish(sender, out);
            frames += 1;
        }
        if self.wire.capacity_bytes() > BUFFER_KEPT_BYTES_MAX {
            self.wire = WireBatch::default();
        }
        frames
    }

    /// Appends one frame holding the messages pushed since the last one.
    fn finish(&mut self, sender: SenderState, out: &mut Vec<u8>) {
        self.wire.flags = sender.flags();
        let start = begin_frame(out);
        let body = FrameBody { out, body_start: start + framing::FRAME_HEADER_BYTES };
        rkyv::api::high::to_bytes_in::<_, rkyv::rancor::Error>(&self.wire, body).expect("serializing into memory does not fail");
        finish_frame(out, start);
        self.wire.clear();
    }
}

/// Writes an archive at the end of a buffer of frames: positions count from
/// the frame body's start, as the reader sees them.
struct FrameBody<'a> {
    out: &'a mut Vec<u8>,
    body_start: usize,
}

impl rkyv::ser::Positional for FrameBody<'_> {
    fn pos(&self) -> usize {
        self.out.len() - self.body_start
    }
}

impl<E> rkyv::ser::Writer<E> for FrameBody<'_> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), E> {
        self.out.extend_from_slice(bytes);
        Ok(())
    }
}

/// Decodes frames, keeping its buffer from one frame to the next.
#[derive(Default)]
pub struct Decoder {
    /// rkyv reads archives in place from 16-byte-aligned memory; a frame
    /// sits anywhere in the receive buffer, so its body moves here once.
    aligned: AlignedVec<16>,
}

impl Decoder {
    /// Decodes the first frame in `buf`: its messages and the bytes it used.
    pub fn decode(&mut self, buf: &[u8]) -> Result<Decoded<Frame>, WireError> {
        let (body, used) = match take_frame(buf, FRAME_BYTES_MAX)? {
            Decoded::NeedMore => return Ok(Decoded::NeedMore),
            Decoded::Frame(body, used) => (body, used),
        };
        self.aligned.clear();
        self.aligned.extend_from_slice(body);
        let archived = rkyv::access::<ArchivedWireBatch, rkyv::rancor::Error>(&self.aligned).map_err(|e| WireError::Structure(e.to_string()))?;
        let sender = SenderState::from_flags(archived.flags.to_native())?;
        let envelopes = to_envelopes(archived)?;
        if archived.deleted_groups.len() > FRAME_DELETED_GROUPS_MAX {
            return Err(WireError::TooManyDeletedGroups(archived.deleted_groups.len()));
        }
        let deleted_groups = archived.deleted_groups.iter().map(|g| g.to_native()).collect();
        if self.aligned.capacity() > BUFFER_KEPT_BYTES_MAX {
            self.aligned = AlignedVec::new();
        }
        Ok(Decoded::Frame(Frame { sender, envelopes, deleted_groups }, used))
    }
}

/// An encoder, decoder or connection buffer keeps at most this much between
/// frames: a rare large frame (a snapshot chunk, a catch-up batch, or a
/// stranger's frame of up to `FRAME_BYTES_MAX`) does not hold its size for
/// the link's life.
pub const BUFFER_KEPT_BYTES_MAX: usize = 1 << 20;

fn to_envelopes(b: &ArchivedWireBatch) -> Result<Vec<Envelope>, WireError> {
    if b.messages.len() > FRAME_MESSAGES_MAX {
        return Err(WireError::TooManyMessages(b.messages.len()));
    }
    // The payloads move once more, into memory of their own: a follower's
    // log keeps its entries' payloads until it compacts, and they would pin
    // the whole frame (message headers, entry records, other groups'
    // answers), about three times their size.
    let payloads = Bytes::copy_from_slice(&b.data);
    let data = |message: usize, offset: u32, len: u32| -> Result<Bytes, WireError> {
        let (offset, len) = (offset as usize, len as usize);
        if offset + len > payloads.len() {
            return Err(WireError::Range { message, what: "payload" });
        }
        Ok(payloads.slice(offset..offset + len))
    };
    let mut out = Vec::with_capacity(b.messages.len());
    for (i, m) in b.messages.iter().enumerate() {
        let body = match &m.body {
            ArchivedWireBody::Append { prev_index, prev_term, commit, entries_start, entries_len } => {
                let (start, len) = (entries_start.to_native() as usize, entries_len.to_native() as usize);
                let Some(wire_entries) = b.entries.get(start..start + len) else {
                    return Err(WireError::Range { message: i, what: "entries" });
                };
                let mut entries = Vec::with_capacity(len);
                for e in wire_entries {
                    let kind = EntryKind::from_u8(e.kind).ok_or(WireError::Range { message: i, what: "entry kind" })?;
                    let data = data(i, e.data_offset.to_native(), e.data_len.to_native())?;
                    entries.push(Entry { term: Term(e.term.to_native()), index: LogIndex(e.index.to_native()), kind, data });
                }
                MessageBody::Append { prev_index: LogIndex(prev_index.to_native()), prev_term: Term(prev_term.to_native()), entries, commit: LogIndex(commit.to_native()) }
            }
            ArchivedWireBody::AppendResponse { index, rejected, hint_index, hint_term } => MessageBody::AppendResponse {
                index: LogIndex(index.to_native()),
                reject: rejected.then(|| RejectHint { index: LogIndex(hint_index.to_native()), term: Term(hint_term.to_native()) }),
            },
            ArchivedWireBody::RequestVote { pre, transfer, last_index, last_term } => {
                MessageBody::RequestVote { pre: *pre, transfer: *transfer, last_index: LogIndex(last_index.to_native()), last_term: Term(last_term.to_native()) }
            }
            ArchivedWireBody::VoteResponse { pre, granted } => MessageBody::VoteResponse { pre: *pre, granted: *granted },
            ArchivedWireBody::Heartbeat { commit, round } => MessageBody::Heartbeat { commit: LogIndex(commit.to_native()), round: round.to_native() },
            ArchivedWireBody::HeartbeatResponse { round } => MessageBody::HeartbeatResponse { round: round.to_native() },
            ArchivedWireBody::SnapshotChunk { index, term, conf, offset, data_offset, data_len, last } => {
                let list = |v: &rkyv::vec::ArchivedVec<rkyv::rend::u64_le>| -> Result<Vec<NodeId>, WireError> {
                    if v.len() > CONF_IDS_MAX {
                        return Err(WireError::Range { message: i, what: "membership list" });
                    }
                    Ok(v.iter().map(|id| NodeId(id.to_native())).collect())
                };
                let conf_state = ConfState {
                    voters: list(&conf.voters)?,
                    voters_outgoing: list(&conf.voters_outgoing)?,
                    learners: list(&conf.learners)?,
                    learners_next: list(&conf.learners_next)?,
                    auto_leave: conf.auto_leave,
                };
                MessageBody::SnapshotChunk {
                    meta: Box::new(SnapshotMeta { index: LogIndex(index.to_native()), term: Term(term.to_native()), conf_state }),
                    offset: offset.to_native(),
                    data: data(i, data_offset.to_native(), data_len.to_native())?,
                    last: *last,
                }
            }
            ArchivedWireBody::SnapshotResponse { index, next_offset, done, reject } => {
                MessageBody::SnapshotResponse { index: LogIndex(index.to_native()), next_offset: next_offset.to_native(), done: *done, reject: *reject }
            }
            ArchivedWireBody::TimeoutNow => MessageBody::TimeoutNow,
            ArchivedWireBody::ReadIndex { request_id } => MessageBody::ReadIndex { request_id: request_id.to_native() },
            ArchivedWireBody::ReadIndexResponse { request_id, index } => MessageBody::ReadIndexResponse { request_id: request_id.to_native(), index: LogIndex(index.to_native()) },
        };
        let msg = Message { from: NodeId(m.from.to_native()), to: NodeId(m.to.to_native()), term: Term(m.term.to_native()), body };
        let group = m.group.to_native();
        if let Some(why) = msg.malformed() {
            return Err(WireError::Malformed { message: i, group, why });
        }
        out.push(Envelope { group, msg });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Envelope> {
        let msg = |body| Message { from: NodeId(1), to: NodeId(2), term: Term(7), body };
        let entry = |i: u64, data: &'static [u8]| Entry { term: Term(7), index: LogIndex(i), kind: EntryKind::Normal, data: Bytes::from_static(data) };
        let conf_state = ConfState { voters: vec![NodeId(1), NodeId(2)], learners: vec![NodeId(3)], ..Default::default() };
        vec![
            Envelope { group: 5, msg: msg(MessageBody::Append { prev_index: LogIndex(3), prev_term: Term(6), entries: vec![entry(4, b"four"), entry(5, b"")], commit: LogIndex(3) }) },
            Envelope { group: 6, msg: msg(MessageBody::AppendResponse { index: LogIndex(9), reject: Some(RejectHint { index: LogIndex(4), term: Term(2) }) }) },
            Envelope { group: 6, msg: msg(MessageBody::RequestVote { pre: true, transfer: false, last_index: LogIndex(1), last_term: Term(1) }) },
            Envelope { group: 6, msg: msg(MessageBody::VoteResponse { pre: false, granted: true }) },
            Envelope { group: 7, msg: msg(MessageBody::Heartbeat { commit: LogIndex(2), round: 11 }) },
            Envelope { group: 7, msg: msg(MessageBody::HeartbeatResponse { round: 11 }) },
            Envelope {
                group: 8,
                msg: msg(MessageBody::SnapshotChunk { meta: Box::new(SnapshotMeta { index: LogIndex(100), term: Term(5), conf_state }), offset: 4096, data: Bytes::from_static(b"chunk"), last: true }),
            },
            Envelope { group: 8, msg: msg(MessageBody::SnapshotResponse { index: LogIndex(100), next_offset: 4101, done: true, reject: false }) },
            Envelope { group: 9, msg: msg(MessageBody::TimeoutNow) },
            Envelope { group: 9, msg: msg(MessageBody::ReadIndex { request_id: 77 }) },
            Envelope { group: 9, msg: msg(MessageBody::ReadIndexResponse { request_id: 77, index: LogIndex(12) }) },
        ]
    }

    #[test]
    fn every_message_kind_round_trips_through_split_reads() {
        let batch = sample();
        let mut buf = Vec::new();
        encode_batch(&batch, &mut buf);
        encode_batch(&batch[..2], &mut buf);
        let first_len = match decode_batch(&buf).unwrap() {
            Decoded::Frame(got, used) => {
                assert_eq!(got, batch);
                used
            }
            Decoded::NeedMore => panic!("whole frame present"),
        };
        for cut in 0..first_len {
            assert_eq!(decode_batch(&buf[..cut]).unwrap(), Decoded::NeedMore);
        }
        match decode_batch(&buf[first_len..]).unwrap() {
            Decoded::Frame(got, _) => assert_eq!(got, batch[..2].to_vec()),
            Decoded::NeedMore => panic!("second frame present"),
        }
    }

    /// A link's encoder and a connection's decoder keep their buffers from
    /// frame to frame, through one larger than they keep.
    #[test]
    fn one_encoder_and_one_decoder_carry_frames_of_any_size_in_turn() {
        let entry = |i: u64| Entry { term: Term(7), index: LogIndex(i), kind: EntryKind::Normal, data: Bytes::from(vec![i as u8; 700 << 10]) };
        let append = MessageBody::Append { prev_index: LogIndex(10), prev_term: Term(7), entries: (11..14).map(entry).collect(), commit: LogIndex(9) };
        let big = vec![Envelope { group: 3, msg: Message { from: NodeId(1), to: NodeId(2), term: Term(7), body: append } }];
        // An empty batch is a link's keepalive.
        let frames = [sample()[1..].to_vec(), big.clone(), Vec::new(), sample(), sample()[..1].to_vec(), big, sample(), Vec::new()];
        // The sender's state travels with every frame, keepalives too, and
        // so do the groups it deleted.
        let sender = |i: usize| SenderState { draining: i % 3 == 1 };
        let deleted = |i: usize| if i % 2 == 0 { vec![i as u64 + 1, u64::MAX] } else { Vec::new() };
        let (mut encoder, mut buf) = (Encoder::default(), Vec::new());
        for (i, f) in frames.iter().enumerate() {
            encoder.encode(f, &deleted(i), sender(i), &mut buf);
        }
        let (mut decoder, mut at) = (Decoder::default(), 0);
        for (i, f) in frames.iter().enumerate() {
            match decoder.decode(&buf[at..]).unwrap() {
                Decoded::Frame(got, used) => {
                    assert_eq!((&got.envelopes, got.sender, &got.deleted_groups), (f, sender(i), &deleted(i)));
                    at += used;
                }
                Decoded::NeedMore => panic!("frame present"),
            }
        }
        assert_eq!(at, buf.len());
    }

    /// A batch the receiver would refuse as one frame (snapshot chunks of
    /// many groups, 80 MiB in all) leaves as several, each under
    /// `FRAME_BYTES_MAX`, which decode to the same messages in order.
    #[test]
    fn a_batch_over_the_frame_limit_is_split_into_frames_a_peer_takes() {
        let chunk = Bytes::from(vec![5u8; 1 << 20]);
        let conf_state = ConfState { voters: vec![NodeId(1), NodeId(2), NodeId(3)], ..Default::default() };
        let meta = Box::new(SnapshotMeta { index: LogIndex(40), term: Term(3), conf_state });
        let batch: Vec<Envelope> = (0..80u64)
            .map(|g| {
                let body = MessageBody::SnapshotChunk { meta: meta.clone(), offset: 0, data: chunk.clone(), last: false };
                Envelope { group: g, msg: Message { from: NodeId(1), to: NodeId(2), term: Term(3), body } }
            })
            .collect();
        let mut buf = Vec::new();
        let frames = Encoder::default().encode(&batch, &[], SenderState::default(), &mut buf);
        assert!(frames >= 2, "{frames} frame for {} MiB", buf.len() >> 20);
        let (mut decoder, mut at, mut got) = (Decoder::default(), 0, Vec::new());
        for _ in 0..frames {
            match decoder.decode(&buf[at..]).expect("a frame the peer takes") {
                Decoded::Frame(frame, used) => {
                    assert!(used <= FRAME_BYTES_MAX + framing::FRAME_HEADER_BYTES, "a frame of {used} bytes");
                    got.extend(frame.envelopes);
                    at += used;
                }
                Decoded::NeedMore => panic!("frame present"),
            }
        }
        assert_eq!((at, got), (buf.len(), batch));
    }

    #[test]
    fn handshake_round_trips_and_strangers_are_refused() {
        let h = Handshake { cluster_id: 9, node_id: 2, core: 1, cores: 2, version: 1 };
        let mut buf = Vec::new();
        encode_handshake(&h, &mut buf);
        assert_eq!(decode_handshake(&buf).unwrap(), Decoded::Frame(h, HANDSHAKE_BYTES));
        assert_eq!(decode_handshake(&buf[..10]).unwrap(), Decoded::NeedMore);
        assert!(matches!(decode_handshake(b"GET / HTTP/1.1\r\n"), Err(WireError::Magic(_))));
    }

    /// Bodies with a valid CRC but arbitrary bytes must fail cleanly.
    #[test]
    fn garbage_bodies_with_valid_checksums_never_panic() {
        let mut good = Vec::new();
        encode_batch(&sample(), &mut good);
        let body = good[framing::FRAME_HEADER_BYTES..].to_vec();
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        for round in 0..2000 {
            let mut mutated = body.clone();
            for _ in 0..1 + round % 8 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let at = (seed % mutated.len() as u64) as usize;
                mutated[at] = (seed >> 32) as u8;
            }
            let mut frame = Vec::new();
            let start = begin_frame(&mut frame);
            frame.extend_from_slice(&mutated);
            finish_frame(&mut frame, start);
            let _ = decode_batch(&frame);
        }
    }

    /// A well-formed frame can still carry an append no leader sends (a gap
    /// in its indices); it is refused as a whole, naming the message.
    #[test]
    fn appends_with_gaps_are_refused() {
        let mut batch = sample();
        let MessageBody::Append { entries, .. } = &mut batch[0].msg.body else { panic!("sample starts with an append") };
        entries[1].index = LogIndex(7);
        let mut buf = Vec::new();
        encode_batch(&batch, &mut buf);
        match decode_batch(&buf) {
            Err(WireError::Malformed { message: 0, group: 5, why: raftcore::Malformed::EntryIndex { position: 1, .. } }) => {}
            other => panic!("a gapped append decoded as {other:?}"),
        }
    }

    #[test]
    fn oversized_frames_are_refused_from_the_header() {
        let mut header = Vec::new();
        header.extend_from_slice(&((FRAME_BYTES_MAX + 1) as u32).to_le_bytes());
        header.extend_from_slice(&[0; 4]);
        assert!(matches!(decode_batch(&header), Err(WireError::Frame(FrameError::TooLarge { .. }))));
    }
}
