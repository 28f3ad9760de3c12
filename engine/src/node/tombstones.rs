//! The groups a core has deleted, kept for good in `deleted-groups` in the
//! core's directory (the WAL forgets a deleted group once its segments go).
//! A peer's message for one of them is answered with a deletion notice
//! instead of creating the group again, and a client may not create it
//! again: group ids are not reused.
//!
//! The file is a sequence of 16-byte records, `magic u32 LE · crc32c(id)
//! u32 LE · id u64 LE`. A core appends those of one loop iteration and
//! syncs them once, before the WAL record that drops the groups is written
//! and before any deletion is answered. What a crash before that sync can
//! leave at the end (a record shorter than 16 bytes, or zeros where the file
//! grew before its data reached the disk) was never answered and is
//! dropped; any other record that does not check refuses the start.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

const MAGIC: u32 = 0x4744_594d; // "MYDG"
const RECORD_BYTES: usize = 16;

pub struct Tombstones {
    ids: HashSet<u64>,
    file: File,
    path: PathBuf,
    /// Records appended since the last sync.
    unsynced: bool,
}

impl Tombstones {
    /// Opens (or creates) `dir/deleted-groups`.
    pub fn open(dir: &Path) -> anyhow::Result<Tombstones> {
        let path = dir.join("deleted-groups");
        let existed = path.exists();
        let bytes = if existed { std::fs::read(&path)? } else { Vec::new() };
        let mut ids = HashSet::new();
        let mut whole = bytes.len() / RECORD_BYTES * RECORD_BYTES;
        while whole > 0 && bytes[whole - RECORD_BYTES..whole].iter().all(|&b| b == 0) {
            whole -= RECORD_BYTES;
        }
        for (k, record) in bytes[..whole].chunks_exact(RECORD_BYTES).enumerate() {
            ids.insert(decode(record).ok_or_else(|| anyhow::anyhow!("{}: record {k} (at byte {}) is corrupt; refusing to start, since a group deleted here could otherwise be created again", path.display(), k * RECORD_BYTES))?);
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        if whole < bytes.len() {
            // A torn append: its deletion was never answered.
            file.set_len(whole as u64)?;
            file.sync_all()?;
        }
        if !existed {
            File::open(dir)?.sync_all()?;
        }
        Ok(Tombstones { ids, file, path, unsynced: false })
    }

    pub fn contains(&self, group: u64) -> bool {
        self.ids.contains(&group)
    }

    /// Records `group` as deleted (durable at the next `sync`); true if
    /// it was not already. An error records nothing.
    pub fn add(&mut self, group: u64) -> io::Result<bool> {
        if self.ids.contains(&group) {
            return Ok(false);
        }
        let record = encode(group);
        let end = self.file.metadata()?.len();
        if let Err(e) = self.file.write_all(&record) {
            // A short write (a full disk) must not leave half a record for
            // the next one to follow.
            let _ = self.file.set_len(end);
            return Err(e);
        }
        self.unsynced = true;
        self.ids.insert(group);
        Ok(true)
    }

    /// Makes the records added so far durable (one sync for all of them).
    pub fn sync(&mut self) -> io::Result<()> {
        if self.unsynced {
            self.file.sync_data()?;
            self.unsynced = false;
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn encode(group: u64) -> [u8; RECORD_BYTES] {
    let id = group.to_le_bytes();
    let mut out = [0; RECORD_BYTES];
    out[..4].copy_from_slice(&MAGIC.to_le_bytes());
    out[4..8].copy_from_slice(&crc32c::crc32c(&id).to_le_bytes());
    out[8..].copy_from_slice(&id);
    out
}

fn decode(record: &[u8]) -> Option<u64> {
    let word = |at: usize| u32::from_le_bytes(record[at..at + 4].try_into().expect("4 bytes"));
    let id: [u8; 8] = record[8..16].try_into().ok()?;
    (word(0) == MAGIC && word(4) == crc32c::crc32c(&id)).then(|| u64::from_le_bytes(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deletions_survive_a_reopen_and_a_torn_append_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = Tombstones::open(dir.path()).unwrap();
        assert!(t.add(7).unwrap());
        assert!(!t.add(7).unwrap(), "twice is once");
        assert!(t.add(u64::MAX).unwrap());
        t.sync().unwrap();
        drop(t);
        // Appends cut short by a crash: zeros where the file grew, and half
        // a record.
        let mut f = OpenOptions::new().append(true).open(dir.path().join("deleted-groups")).unwrap();
        f.write_all(&[0; 2 * RECORD_BYTES]).unwrap();
        f.write_all(&encode(9)[..11]).unwrap();
        drop(f);
        let mut t = Tombstones::open(dir.path()).unwrap();
        assert!(t.contains(7) && t.contains(u64::MAX) && !t.contains(9));
        assert!(t.add(9).unwrap());
        drop(t);
        let t = Tombstones::open(dir.path()).unwrap();
        assert!(t.contains(9), "the append after the torn one reads back");
    }

    #[test]
    fn a_corrupt_record_refuses_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = Tombstones::open(dir.path()).unwrap();
        t.add(7).unwrap();
        t.add(8).unwrap();
        drop(t);
        let path = dir.path().join("deleted-groups");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[RECORD_BYTES + 9] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        let err = Tombstones::open(dir.path()).err().expect("refused").to_string();
        assert!(err.contains("record 1") && err.contains("corrupt"), "{err}");
    }
}
