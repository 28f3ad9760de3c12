//! Durable state-machine snapshots, one file per group: written before the
//! WAL is told to forget the entries they cover, read at start before the
//! WAL's entries are replayed on top.
//!
//! Layout (little endian): magic `MYRSNAP1` (8) · group u64 · index u64 ·
//! term u64 · five id lists (voters, voters_outgoing, learners,
//! learners_next: u32 count + u64 ids each; then auto_leave u8) · data
//! length u64 · data · CRC32C u32 of everything before it. Written to a
//! temporary name, fsynced, renamed, and the directory fsynced, so a crash
//! leaves either the old file or the new one.
//!
//! The calls block: a core's own compactions save through its
//! `SnapshotWriter` on the executor's blocking thread, which also keeps a
//! save or removal made on the core (a leader's snapshot installed, a group
//! deleted) after any save of that group it has in progress.

use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use raftcore::{ConfState, LogIndex, NodeId, Snapshot, SnapshotMeta, Term};

const MAGIC: &[u8; 8] = b"MYRSNAP1";
/// Largest snapshot file read back (the state of one group).
pub const SNAPSHOT_FILE_BYTES_MAX: u64 = 4 << 30;
/// Most ids in one membership list.
const IDS_MAX: u32 = 1024;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotFileError {
    #[error("{op} {path}: {source}")]
    Io { op: &'static str, path: PathBuf, source: std::io::Error },
    #[error("{path}: corrupt snapshot file ({why})")]
    Corrupt { path: PathBuf, why: &'static str },
}

/// A core's snapshot directory.
#[derive(Clone)]
pub struct SnapshotDir {
    dir: PathBuf,
}

impl SnapshotDir {
    pub fn open(dir: PathBuf) -> Result<SnapshotDir, SnapshotFileError> {
        std::fs::create_dir_all(&dir).map_err(|source| SnapshotFileError::Io { op: "creating", path: dir.clone(), source })?;
        Ok(SnapshotDir { dir })
    }

    fn path(&self, group: u64) -> PathBuf {
        self.dir.join(format!("g{group:016x}.snap"))
    }

    /// Durably replaces the snapshot of `group`.
    pub fn save(&self, group: u64, snapshot: &Snapshot) -> Result<(), SnapshotFileError> {
        self.save_all([(group, snapshot)]).pop().expect("one result per snapshot")
    }

    /// Durably replaces the snapshot of each group, one result per snapshot
    /// in order: each file is written, fsynced and renamed, then the
    /// directory is fsynced once for all of them.
    pub fn save_all<'a>(&self, snapshots: impl IntoIterator<Item = (u64, &'a Snapshot)>) -> Vec<Result<(), SnapshotFileError>> {
        let mut results: Vec<_> = snapshots.into_iter().map(|(group, snapshot)| self.replace(group, snapshot)).collect();
        if results.iter().any(Result::is_ok) {
            let synced = std::fs::File::open(&self.dir).and_then(|dir| dir.sync_all());
            if let Err(e) = synced {
                let kind = e.kind();
                for r in results.iter_mut().filter(|r| r.is_ok()) {
                    let source = std::io::Error::new(kind, e.to_string());
                    *r = Err(SnapshotFileError::Io { op: "syncing", path: self.dir.clone(), source });
                }
            }
        }
        results
    }

    /// Writes, fsyncs and renames one file; the directory is not synced.
    fn replace(&self, group: u64, snapshot: &Snapshot) -> Result<(), SnapshotFileError> {
        let path = self.path(group);
        let tmp = path.with_extension("snap.tmp");
        let io = |op, source| SnapshotFileError::Io { op, path: tmp.clone(), source };
        let bytes = encode(group, snapshot);
        let mut file = std::fs::File::create(&tmp).map_err(|e| io("creating", e))?;
        file.write_all(&bytes).map_err(|e| io("writing", e))?;
        file.sync_all().map_err(|e| io("syncing", e))?;
        std::fs::rename(&tmp, &path).map_err(|e| io("renaming", e))
    }

    /// The snapshot of `group`, if one was saved.
    pub fn load(&self, group: u64) -> Result<Option<Snapshot>, SnapshotFileError> {
        let path = self.path(group);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(SnapshotFileError::Io { op: "reading", path, source }),
        };
        decode(group, &bytes).map(Some).map_err(|why| SnapshotFileError::Corrupt { path, why })
    }

    pub fn remove(&self, group: u64) -> Result<(), SnapshotFileError> {
        let path = self.path(group);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(SnapshotFileError::Io { op: "removing", path, source: e }),
            _ => Ok(()),
        }
    }

    /// Groups that have a snapshot file.
    pub fn groups(&self) -> Result<Vec<u64>, SnapshotFileError> {
        let entries = std::fs::read_dir(&self.dir).map_err(|source| SnapshotFileError::Io { op: "listing", path: self.dir.clone(), source })?;
        let mut groups = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| SnapshotFileError::Io { op: "listing", path: self.dir.clone(), source })?;
            let name = entry.file_name();
            let parsed = name.to_str().and_then(|n| n.strip_prefix('g')).and_then(|n| n.strip_suffix(".snap")).and_then(|hex| u64::from_str_radix(hex, 16).ok());
            groups.extend(parsed);
        }
        Ok(groups)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn encode(group: u64, s: &Snapshot) -> Vec<u8> {
    let cs = &s.meta.conf_state;
    let mut out = Vec::with_capacity(s.data.len() + 128);
    out.extend_from_slice(MAGIC);
    for v in [group, s.meta.index.0, s.meta.term.0] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for ids in [&cs.voters, &cs.voters_outgoing, &cs.learners, &cs.learners_next] {
        out.extend_from_slice(&(ids.len() as u32).to_le_bytes());
        for id in ids {
            out.extend_from_slice(&id.0.to_le_bytes());
        }
    }
    out.push(cs.auto_leave as u8);
    out.extend_from_slice(&(s.data.len() as u64).to_le_bytes());
    out.extend_from_slice(&s.data);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// A bounds-checked reader over the file's bytes.
struct Cursor<'a> {
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        if self.bytes.len() < n {
            return Err("truncated");
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u64(&mut self) -> Result<u64, &'static str> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    fn u32(&mut self) -> Result<u32, &'static str> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
}

fn decode(group: u64, bytes: &[u8]) -> Result<Snapshot, &'static str> {
    if bytes.len() < MAGIC.len() + 4 || bytes.len() as u64 > SNAPSHOT_FILE_BYTES_MAX {
        return Err("bad length");
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
        return Err("checksum mismatch");
    }
    let mut c = Cursor { bytes: body };
    if c.take(8)? != MAGIC {
        return Err("bad magic");
    }
    if c.u64()? != group {
        return Err("written for another group");
    }
    let (index, term) = (LogIndex(c.u64()?), Term(c.u64()?));
    let mut lists: [Vec<NodeId>; 4] = Default::default();
    for list in &mut lists {
        let n = c.u32()?;
        if n > IDS_MAX {
            return Err("membership list too long");
        }
        for _ in 0..n {
            list.push(NodeId(c.u64()?));
        }
    }
    let auto_leave = c.take(1)?[0] != 0;
    let len = c.u64()?;
    let data = c.take(usize::try_from(len).map_err(|_| "bad data length")?)?;
    if !c.bytes.is_empty() {
        return Err("trailing bytes");
    }
    let [voters, voters_outgoing, learners, learners_next] = lists;
    let conf_state = ConfState { voters, voters_outgoing, learners, learners_next, auto_leave };
    Ok(Snapshot { meta: SnapshotMeta { index, term, conf_state }, data: Bytes::copy_from_slice(data) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Snapshot {
        let conf_state = ConfState { voters: vec![NodeId(1), NodeId(2), NodeId(3)], learners: vec![NodeId(4)], ..Default::default() };
        Snapshot { meta: SnapshotMeta { index: LogIndex(42), term: Term(3), conf_state }, data: Bytes::from_static(b"state") }
    }

    #[test]
    fn round_trips_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let store = SnapshotDir::open(dir.path().join("snap")).unwrap();
        assert!(store.load(7).unwrap().is_none());
        store.save(7, &sample()).unwrap();
        assert_eq!(store.load(7).unwrap(), Some(sample()));
        let mut newer = sample();
        newer.meta.index = LogIndex(50);
        store.save(7, &newer).unwrap();
        assert_eq!(store.load(7).unwrap().unwrap().meta.index, LogIndex(50));
    }

    #[test]
    fn every_flipped_byte_and_truncation_is_refused() {
        let good = encode(7, &sample());
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x40;
            assert!(decode(7, &bad).is_err(), "flip at {i}");
            assert!(decode(7, &good[..i]).is_err(), "truncated to {i}");
        }
        assert!(decode(8, &good).is_err(), "another group's file");
        assert_eq!(decode(7, &good).unwrap(), sample());
    }
}
