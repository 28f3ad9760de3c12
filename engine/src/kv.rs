//! State machines: the `StateMachine` trait the node drives, and the built-in
//! KV store (put, get, delete, compare-and-swap, scan by prefix).
//!
//! Commands and replies travel through the Raft log as bytes; their encoding
//! (little endian) is `tag u8` followed by `u32`-length-prefixed blobs, an
//! optional blob being a `u8` presence flag and then the blob.

mod map;

use bytes::Bytes;
use raftcore::LogIndex;

use self::map::KvMap;
use crate::framing::{put_blob, put_opt_blob, FieldError, Reader, Truncated};

/// Cache lines that one range of `KvStore::hot_memory` spans at most.
pub const HOT_MEMORY_LINES_MAX: usize = map::FINGERPRINTS_BYTES_MAX / 64 + 1;

/// Longest key accepted.
pub const KEY_BYTES_MAX: usize = 64 << 10;
/// Longest value accepted.
pub const VALUE_BYTES_MAX: usize = 1 << 20;

/// A replicated state machine. Entries are applied in log order, each exactly
/// once per incarnation; `snapshot` and `restore` carry the applied index, so a
/// restored machine knows where to resume.
pub trait StateMachine {
    /// Applies the command of entry `index` and returns the reply for its
    /// proposer (empty for none). Must be deterministic.
    fn apply(&mut self, index: LogIndex, command: &[u8]) -> Bytes;
    /// Applies a run of consecutive entries; the default applies one by one.
    fn apply_batch(&mut self, entries: &[(LogIndex, &[u8])], replies: &mut Vec<Bytes>) {
        for &(index, command) in entries {
            replies.push(self.apply(index, command));
        }
    }
    /// The last entry applied (or skipped: membership changes, empty entries).
    fn applied(&self) -> LogIndex;
    fn set_applied(&mut self, index: LogIndex);
    /// The whole state as of `applied()`.
    fn snapshot(&self) -> Bytes;
    /// Replaces the whole state with a snapshot's.
    fn restore(&mut self, data: &[u8]) -> Result<(), KvError>;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    #[error("truncated: {0}")]
    Truncated(#[from] Truncated),
    #[error(transparent)]
    Field(#[from] FieldError),
    #[error("unknown tag {0}")]
    UnknownTag(u8),
    #[error("key of {0} bytes exceeds {KEY_BYTES_MAX}")]
    KeyTooLong(usize),
    #[error("value of {0} bytes exceeds {VALUE_BYTES_MAX}")]
    ValueTooLong(usize),
    #[error("{0} trailing bytes")]
    Trailing(usize),
    #[error("not a KV snapshot (bad magic)")]
    SnapshotMagic,
}

/// What a scanned pair costs a reply beside its key and value (two lengths).
pub const SCAN_PAIR_OVERHEAD_BYTES: usize = 8;

/// A scan whose pairs would not fit `bytes_max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the scan's first {pairs} pairs already fill a reply of {bytes_max} bytes; scan a longer prefix or a lower limit")]
pub struct ScanTooLarge {
    pub pairs: usize,
    pub bytes_max: usize,
}

/// A write to the KV store, as stored in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvCommand {
    Put { key: Bytes, value: Bytes },
    Delete { key: Bytes },
    /// Sets `key` to `new` (deletes it when `None`) only if its current value
    /// is `expected` (absent when `None`).
    Cas { key: Bytes, expected: Option<Bytes>, new: Option<Bytes> },
}

const CMD_PUT: u8 = 1;
const CMD_DELETE: u8 = 2;
const CMD_CAS: u8 = 3;

fn put_opt(out: &mut Vec<u8>, v: &Option<Bytes>) {
    put_opt_blob(out, v.as_deref());
}

fn check_key(key: &[u8]) -> Result<(), KvError> {
    if key.len() > KEY_BYTES_MAX {
        return Err(KvError::KeyTooLong(key.len()));
    }
    Ok(())
}

fn check_value(value: &[u8]) -> Result<(), KvError> {
    if value.len() > VALUE_BYTES_MAX {
        return Err(KvError::ValueTooLong(value.len()));
    }
    Ok(())
}

impl KvCommand {
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(16 + self.len_hint());
        match self {
            KvCommand::Put { key, value } => {
                out.push(CMD_PUT);
                put_blob(&mut out, key);
                put_blob(&mut out, value);
            }
            KvCommand::Delete { key } => {
                out.push(CMD_DELETE);
                put_blob(&mut out, key);
            }
            KvCommand::Cas { key, expected, new } => {
                out.push(CMD_CAS);
                put_blob(&mut out, key);
                put_opt(&mut out, expected);
                put_opt(&mut out, new);
            }
        }
        Bytes::from(out)
    }

    fn len_hint(&self) -> usize {
        let opt = |v: &Option<Bytes>| v.as_ref().map_or(0, Bytes::len);
        match self {
            KvCommand::Put { key, value } => key.len() + value.len(),
            KvCommand::Delete { key } => key.len(),
            KvCommand::Cas { key, expected, new } => key.len() + opt(expected) + opt(new),
        }
    }

}

/// A borrowed command: decoded from an entry (applying one copies only what
/// it stores), or a client's request before it is proposed.
pub enum CommandRef<'a> {
    Put { key: &'a [u8], value: &'a [u8] },
    Delete { key: &'a [u8] },
    Cas { key: &'a [u8], expected: Option<&'a [u8]>, new: Option<&'a [u8]> },
}

impl CommandRef<'_> {
    /// Checks the limits a command must respect to be proposed.
    pub fn validate(&self) -> Result<(), KvError> {
        match *self {
            CommandRef::Put { key, value } => check_key(key).and_then(|()| check_value(value)),
            CommandRef::Delete { key } => check_key(key),
            CommandRef::Cas { key, expected, new } => {
                check_key(key)?;
                [expected, new].into_iter().flatten().try_for_each(check_value)
            }
        }
    }
}

fn decode_command(bytes: &[u8]) -> Result<CommandRef<'_>, KvError> {
    let mut r = Reader::new(bytes);
    let cmd = match r.u8()? {
        CMD_PUT => CommandRef::Put { key: r.blob()?, value: r.blob()? },
        CMD_DELETE => CommandRef::Delete { key: r.blob()? },
        CMD_CAS => CommandRef::Cas { key: r.blob()?, expected: r.opt_blob()?, new: r.opt_blob()? },
        t => return Err(KvError::UnknownTag(t)),
    };
    if r.remaining() != 0 {
        return Err(KvError::Trailing(r.remaining()));
    }
    Ok(cmd)
}

/// What applying a command answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvReply {
    Done,
    CasFailed { current: Option<Bytes> },
    /// The entry did not decode as a command (it changed nothing).
    Invalid,
}

const REPLY_DONE: u8 = 0;
const REPLY_CAS_FAILED: u8 = 1;
const REPLY_INVALID: u8 = 2;

impl KvReply {
    pub fn encode(&self) -> Bytes {
        match self {
            KvReply::Done => Bytes::from_static(&[REPLY_DONE]),
            KvReply::Invalid => Bytes::from_static(&[REPLY_INVALID]),
            KvReply::CasFailed { current } => {
                let mut out = vec![REPLY_CAS_FAILED];
                put_opt(&mut out, current);
                Bytes::from(out)
            }
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<KvReply, KvError> {
        let mut r = Reader::new(bytes);
        let reply = match r.u8()? {
            REPLY_DONE => KvReply::Done,
            REPLY_INVALID => KvReply::Invalid,
            REPLY_CAS_FAILED => KvReply::CasFailed { current: r.opt_blob()?.map(Bytes::copy_from_slice) },
            t => return Err(KvError::UnknownTag(t)),
        };
        if r.remaining() != 0 {
            return Err(KvError::Trailing(r.remaining()));
        }
        Ok(reply)
    }
}

/// The built-in KV state machine of one group: an ordered map.
#[derive(Debug, Default)]
pub struct KvStore {
    map: KvMap,
    applied: LogIndex,
}

const SNAPSHOT_MAGIC: &[u8; 8] = b"MYRKV001";

impl KvStore {
    pub fn new() -> KvStore {
        KvStore::default()
    }

    pub fn get(&self, key: &[u8]) -> Option<&Bytes> {
        self.map.get(key)
    }

    /// Up to `limit` pairs whose key starts with `prefix`, in key order, or
    /// `ScanTooLarge` once their keys and values (with `SCAN_PAIR_OVERHEAD_BYTES`
    /// each) would pass `bytes_max`: a reply must fit one frame.
    pub fn scan_prefix(&self, prefix: &[u8], limit: usize, bytes_max: usize) -> Result<Vec<(Bytes, Bytes)>, ScanTooLarge> {
        let mut bytes = 0usize;
        let mut out = Vec::new();
        for (k, v) in self.map.range_from(prefix).take_while(|(k, _)| k.starts_with(prefix)).take(limit) {
            bytes += k.len() + v.len() + SCAN_PAIR_OVERHEAD_BYTES;
            if bytes > bytes_max {
                return Err(ScanTooLarge { pairs: out.len(), bytes_max });
            }
            out.push((Bytes::copy_from_slice(k), v.clone()));
        }
        Ok(out)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The memory a write or read of this map touches first, as (address,
    /// bytes) pairs; see `KvMap::hot_memory`.
    pub fn hot_memory(&self) -> [(usize, usize); 3] {
        self.map.hot_memory()
    }

    fn apply_command(&mut self, cmd: CommandRef<'_>) -> KvReply {
        match cmd {
            CommandRef::Put { key, value } => {
                self.map.insert(key, Bytes::copy_from_slice(value));
                KvReply::Done
            }
            CommandRef::Delete { key } => {
                self.map.remove(key);
                KvReply::Done
            }
            CommandRef::Cas { key, expected, new } => {
                let current = self.map.get(key);
                if current.map(|v| &v[..]) != expected {
                    return KvReply::CasFailed { current: current.cloned() };
                }
                match new {
                    Some(v) => {
                        self.map.insert(key, Bytes::copy_from_slice(v));
                    }
                    None => {
                        self.map.remove(key);
                    }
                }
                KvReply::Done
            }
        }
    }
}

impl StateMachine for KvStore {
    fn apply(&mut self, index: LogIndex, command: &[u8]) -> Bytes {
        debug_assert!(index > self.applied, "entry {index:?} applied twice (applied {:?})", self.applied);
        self.applied = index;
        match decode_command(command) {
            Ok(cmd) => self.apply_command(cmd).encode(),
            Err(e) => {
                tracing::warn!("entry {} is not a KV command: {e}", index.0);
                KvReply::Invalid.encode()
            }
        }
    }

    fn applied(&self) -> LogIndex {
        self.applied
    }

    fn set_applied(&mut self, index: LogIndex) {
        self.applied = index;
    }

    fn snapshot(&self) -> Bytes {
        let size: usize = self.map.iter().map(|(k, v)| 8 + k.len() + v.len()).sum();
        let mut out = Vec::with_capacity(24 + size);
        out.extend_from_slice(SNAPSHOT_MAGIC);
        out.extend_from_slice(&self.applied.0.to_le_bytes());
        out.extend_from_slice(&(self.map.len() as u64).to_le_bytes());
        for (k, v) in self.map.iter() {
            put_blob(&mut out, k);
            put_blob(&mut out, v);
        }
        Bytes::from(out)
    }

    fn restore(&mut self, data: &[u8]) -> Result<(), KvError> {
        let mut r = Reader::new(data);
        if r.bytes(8)? != SNAPSHOT_MAGIC {
            return Err(KvError::SnapshotMagic);
        }
        let applied = LogIndex(r.u64()?);
        let count = r.u64()?;
        let mut map = KvMap::default();
        for _ in 0..count {
            let key = r.blob()?;
            let value = r.blob()?;
            check_key(key)?;
            check_value(value)?;
            map.insert(key, Bytes::copy_from_slice(value));
        }
        if r.remaining() != 0 {
            return Err(KvError::Trailing(r.remaining()));
        }
        self.map = map;
        self.applied = applied;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn apply(kv: &mut KvStore, cmd: KvCommand) -> KvReply {
        let next = LogIndex(kv.applied().0 + 1);
        KvReply::decode(&kv.apply(next, &cmd.encode())).unwrap()
    }

    /// A scan stops with an error, not a reply too large for a frame.
    #[test]
    fn scans_are_bounded_by_bytes() {
        let mut kv = KvStore::default();
        for i in 0..4u8 {
            apply(&mut kv, KvCommand::Put { key: Bytes::from(vec![b'k', i]), value: Bytes::from(vec![i; 100]) });
        }
        let pair_bytes = 2 + 100 + SCAN_PAIR_OVERHEAD_BYTES;
        assert_eq!(kv.scan_prefix(b"k", 10, 4 * pair_bytes).unwrap().len(), 4);
        assert_eq!(kv.scan_prefix(b"k", 3, 3 * pair_bytes).unwrap().len(), 3);
        assert_eq!(kv.scan_prefix(b"k", 10, 4 * pair_bytes - 1), Err(ScanTooLarge { pairs: 3, bytes_max: 4 * pair_bytes - 1 }));
    }

    #[test]
    fn put_get_delete_cas_scan() {
        let mut kv = KvStore::new();
        assert_eq!(apply(&mut kv, KvCommand::Put { key: b("a/1"), value: b("x") }), KvReply::Done);
        apply(&mut kv, KvCommand::Put { key: b("a/2"), value: b("y") });
        apply(&mut kv, KvCommand::Put { key: b("b/1"), value: b("z") });
        assert_eq!(kv.get(b"a/1"), Some(&b("x")));
        let failed = apply(&mut kv, KvCommand::Cas { key: b("a/1"), expected: Some(b("nope")), new: Some(b("w")) });
        assert_eq!(failed, KvReply::CasFailed { current: Some(b("x")) });
        let ok = apply(&mut kv, KvCommand::Cas { key: b("a/1"), expected: Some(b("x")), new: Some(b("w")) });
        assert_eq!(ok, KvReply::Done);
        assert_eq!(apply(&mut kv, KvCommand::Cas { key: b("c"), expected: None, new: Some(b("new")) }), KvReply::Done);
        assert_eq!(kv.get(b"c"), Some(&b("new")));
        apply(&mut kv, KvCommand::Delete { key: b("a/2") });
        assert_eq!(kv.scan_prefix(b"a/", 10, usize::MAX).unwrap(), vec![(b("a/1"), b("w"))]);
        assert_eq!(kv.scan_prefix(b"", 2, usize::MAX).unwrap().len(), 2);
        assert_eq!(kv.applied(), LogIndex(7));
    }

    #[test]
    fn short_and_long_keys_keep_byte_order() {
        // Keys of 2 to 40 bytes, 23, 24 and 25 among them: inline and on the heap.
        let mut kv = KvStore::new();
        let keys: Vec<String> = [23, 25, 24, 40, 2].iter().map(|&n| format!("p/{}", "k".repeat(n - 2))).collect();
        for (i, k) in keys.iter().enumerate() {
            apply(&mut kv, KvCommand::Put { key: b(k), value: b(&i.to_string()) });
        }
        let mut sorted = keys.clone();
        sorted.sort();
        let scanned: Vec<Bytes> = kv.scan_prefix(b"p/", 10, usize::MAX).unwrap().into_iter().map(|(k, _)| k).collect();
        assert_eq!(scanned, sorted.iter().map(|k| b(k)).collect::<Vec<_>>());
        assert_eq!(kv.get(keys[3].as_bytes()), Some(&b("3")));
        apply(&mut kv, KvCommand::Delete { key: b(&keys[3]) });
        assert_eq!(kv.get(keys[3].as_bytes()), None);
        // The 24- and 25-byte keys start with these 24 bytes; the 40-byte one is gone.
        assert_eq!(kv.scan_prefix(&keys[1].as_bytes()[..24], 10, usize::MAX).unwrap().len(), 2);
    }

    #[test]
    fn snapshot_round_trip_carries_applied_index() {
        let mut kv = KvStore::new();
        for i in 0..100 {
            apply(&mut kv, KvCommand::Put { key: b(&format!("k{i}")), value: b(&format!("v{i}")) });
        }
        let snap = kv.snapshot();
        let mut restored = KvStore::new();
        restored.restore(&snap).unwrap();
        assert_eq!(restored.applied(), LogIndex(100));
        assert_eq!(restored.scan_prefix(b"", 1000, usize::MAX), kv.scan_prefix(b"", 1000, usize::MAX));
        for cut in 0..snap.len() {
            assert!(KvStore::new().restore(&snap[..cut]).is_err(), "a snapshot cut at {cut} restored");
        }
    }

    #[test]
    fn garbage_commands_are_invalid_not_fatal() {
        let mut kv = KvStore::new();
        for bad in [&[][..], &[9], &[CMD_PUT, 200, 0, 0, 0], &[CMD_DELETE, 0, 0, 0, 0, 1]] {
            let next = LogIndex(kv.applied().0 + 1);
            assert_eq!(KvReply::decode(&kv.apply(next, bad)).unwrap(), KvReply::Invalid);
        }
        assert!(kv.is_empty());
    }
}
