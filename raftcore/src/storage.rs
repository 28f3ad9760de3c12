//! The durable log as raftcore sees it: a read-only trait that the engine's
//! WAL serves, plus `MemStorage`, an in-memory implementation for tests, the
//! simulator and benchmarks. raftcore never writes storage itself: the caller
//! persists what a `Ready` hands out and then reports it durable.

use bytes::Bytes;

use crate::types::{ConfState, Entry, HardState, LogIndex, Snapshot, SnapshotMeta, Term};

/// Index and term of the bootstrap snapshot of a new group's initial members.
pub const BOOTSTRAP_INDEX: LogIndex = LogIndex(1);
pub const BOOTSTRAP_TERM: Term = Term(1);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    #[error("log index {0} is compacted")]
    Compacted(LogIndex),
    #[error("log index {0} is beyond the last stored entry")]
    Unavailable(LogIndex),
    #[error("snapshot temporarily unavailable")]
    SnapshotTemporarilyUnavailable,
    #[error("storage failure: {0}")]
    Other(String),
}

/// Read access to the durable log of one group.
///
/// Invariants the implementation keeps: `first_index() >= 1`,
/// `last_index() >= first_index() - 1`, and `term(first_index() - 1)` is the
/// term of the latest snapshot (or 0 for an empty log).
pub trait Storage {
    /// Hard state and membership recorded when the replica starts.
    fn initial_state(&self) -> (HardState, ConfState);
    /// Entries in `[lo, hi)`, stopping once `max_bytes` is exceeded but always
    /// returning at least one entry when the range is not empty.
    fn entries(&self, lo: LogIndex, hi: LogIndex, max_bytes: u64) -> Result<Vec<Entry>, StorageError>;
    /// Term of the entry at `index`; valid from `first_index() - 1`.
    fn term(&self, index: LogIndex) -> Result<Term, StorageError>;
    fn first_index(&self) -> LogIndex;
    fn last_index(&self) -> LogIndex;
    /// A snapshot at `request_index` or later, to send to a follower behind
    /// `first_index()` (the request covers the latest membership change, so
    /// the snapshot names the follower as a member). When the latest is older,
    /// return `SnapshotTemporarilyUnavailable` and arrange for a newer one:
    /// raftcore asks again on the follower's next heartbeat response.
    fn snapshot(&self, request_index: LogIndex) -> Result<Snapshot, StorageError>;
}

/// An in-memory log: the "durable image" in tests and benchmarks.
///
/// Invariant: `entries[i].index == snapshot.meta.index + 1 + i`.
#[derive(Debug, Default, Clone)]
pub struct MemStorage {
    hard_state: HardState,
    /// Its conf state is the membership a restart begins with: entries after
    /// it (conf changes among them) are applied again from the log.
    snapshot: Snapshot,
    entries: Vec<Entry>,
    /// The newest snapshot index asked for that `snapshot` could not serve.
    snapshot_wanted: std::cell::Cell<LogIndex>,
}

impl MemStorage {
    /// The log of an initial member of a new group: it starts from a
    /// bootstrap snapshot at `BOOTSTRAP_INDEX` carrying the membership.
    /// Replicas added later start from `MemStorage::default()` (empty, no
    /// membership) and catch up by snapshot, because the bootstrap membership
    /// is in no log entry.
    pub fn new(conf_state: ConfState) -> MemStorage {
        let meta = SnapshotMeta { index: BOOTSTRAP_INDEX, term: BOOTSTRAP_TERM, conf_state };
        MemStorage {
            hard_state: HardState { term: BOOTSTRAP_TERM, vote: Default::default(), commit: BOOTSTRAP_INDEX },
            snapshot: Snapshot { meta, data: Bytes::new() },
            entries: Vec::new(),
            snapshot_wanted: Default::default(),
        }
    }

    /// The index a newer snapshot was asked for at (0: none wanted); the
    /// owner makes one with `create_snapshot` once it has applied that far.
    pub fn snapshot_wanted(&self) -> LogIndex {
        let wanted = self.snapshot_wanted.get();
        if wanted > self.snapshot.meta.index { wanted } else { LogIndex::ZERO }
    }

    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    pub fn set_hard_state(&mut self, hard_state: HardState) {
        assert!(hard_state.term >= self.hard_state.term, "term regressed: {:?} -> {:?}", self.hard_state, hard_state);
        self.hard_state = hard_state;
    }

    /// Like `append`, taking the entries by value (no reference-count churn).
    pub fn append_owned(&mut self, new: Vec<Entry>) {
        let Some(first) = new.first() else { return };
        self.prepare_append(first.index);
        self.entries.extend(new);
    }

    /// Appends `new` to the log, first removing any stored suffix from
    /// `new[0].index` on (a leader overwrote it).
    pub fn append(&mut self, new: &[Entry]) {
        let Some(first) = new.first() else { return };
        self.prepare_append(first.index);
        self.entries.extend_from_slice(new);
    }

    /// Checks that an append at `first` joins the log and drops what it replaces.
    fn prepare_append(&mut self, first: LogIndex) {
        let offset = self.snapshot.meta.index;
        assert!(first > offset, "append at {first} below the snapshot at {offset}");
        assert!(first.get() <= self.last_index().get() + 1, "append at {first} leaves a gap after {}", self.last_index());
        self.entries.truncate((first.get() - offset.get() - 1) as usize);
    }

    /// Replaces the whole log with `snapshot` (a follower installed it).
    pub fn apply_snapshot(&mut self, snapshot: Snapshot) {
        let index = snapshot.meta.index;
        assert!(index >= self.snapshot.meta.index, "snapshot {} older than {}", index, self.snapshot.meta.index);
        self.snapshot = snapshot;
        self.entries = Vec::new();
        if self.hard_state.commit < index {
            self.hard_state.commit = index;
        }
    }

    /// Records a snapshot of the state machine at `index` (which must be in
    /// the log) and drops every entry up to it.
    pub fn create_snapshot(&mut self, index: LogIndex, conf_state: ConfState, data: Bytes) {
        let term = self.term(index).expect("snapshot index must be in the log");
        self.compact(index);
        self.snapshot = Snapshot { meta: SnapshotMeta { index, term, conf_state }, data };
    }

    /// Drops entries up to `index`, keeping the term of `index` as the new
    /// base. Used alone, the snapshot data is left as it was.
    pub fn compact(&mut self, index: LogIndex) {
        let offset = self.snapshot.meta.index;
        if index <= offset {
            return;
        }
        assert!(index <= self.last_index(), "compact {} beyond last {}", index, self.last_index());
        let term = self.term(index).expect("index is in the log");
        self.entries.drain(..(index.get() - offset.get()) as usize);
        // Give memory back when empty (an idle group compacted to its last
        // entry keeps no buffer: 16 entries' room is 896 bytes) or mostly
        // empty, but not on every compaction of a busy log (that would
        // reallocate on the next append).
        if self.entries.is_empty() || self.entries.capacity() > 4 * self.entries.len().max(16) {
            self.entries.shrink_to_fit();
        }
        self.snapshot.meta.index = index;
        self.snapshot.meta.term = term;
    }

    pub fn stored_entries(&self) -> &[Entry] {
        &self.entries
    }
}

impl Storage for MemStorage {
    fn initial_state(&self) -> (HardState, ConfState) {
        (self.hard_state, self.snapshot.meta.conf_state.clone())
    }

    fn entries(&self, lo: LogIndex, hi: LogIndex, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        let offset = self.snapshot.meta.index;
        if lo <= offset {
            return Err(StorageError::Compacted(lo));
        }
        if hi > self.last_index().next() {
            return Err(StorageError::Unavailable(hi.prev()));
        }
        let start = (lo.get() - offset.get() - 1) as usize;
        let end = (hi.get() - offset.get() - 1) as usize;
        let mut taken_bytes = 0u64;
        let mut out = Vec::with_capacity(end.saturating_sub(start));
        for entry in &self.entries[start..end] {
            taken_bytes += entry.size_bytes();
            if !out.is_empty() && taken_bytes > max_bytes {
                break;
            }
            out.push(entry.clone());
        }
        Ok(out)
    }

    fn term(&self, index: LogIndex) -> Result<Term, StorageError> {
        let offset = self.snapshot.meta.index;
        if index == offset {
            return Ok(self.snapshot.meta.term);
        }
        if index < offset {
            return Err(StorageError::Compacted(index));
        }
        match self.entries.get((index.get() - offset.get() - 1) as usize) {
            Some(entry) => Ok(entry.term),
            None => Err(StorageError::Unavailable(index)),
        }
    }

    fn first_index(&self) -> LogIndex {
        self.snapshot.meta.index.next()
    }

    fn last_index(&self) -> LogIndex {
        self.snapshot.meta.index.plus(self.entries.len() as u64)
    }

    fn snapshot(&self, request_index: LogIndex) -> Result<Snapshot, StorageError> {
        if request_index > self.snapshot.meta.index {
            self.snapshot_wanted.set(self.snapshot_wanted.get().max(request_index));
            return Err(StorageError::SnapshotTemporarilyUnavailable);
        }
        Ok(self.snapshot.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::EntryKind;

    fn entries(from: u64, to: u64) -> Vec<Entry> {
        (from..=to).map(|i| Entry { term: BOOTSTRAP_TERM, index: LogIndex(i), kind: EntryKind::Normal, data: Bytes::new() }).collect()
    }

    #[test]
    fn compacting_to_the_last_entry_frees_the_log_buffer() {
        let mut s = MemStorage::new(ConfState::default());
        let first = BOOTSTRAP_INDEX.get() + 1;
        s.append_owned(entries(first, first + 9));
        s.compact(LogIndex(first + 4));
        assert!(s.entries.capacity() >= 5, "a partly compacted log keeps its buffer");
        s.compact(LogIndex(first + 9));
        assert_eq!(s.entries.capacity(), 0, "an empty log holds no buffer");
        assert_eq!(s.last_index(), LogIndex(first + 9));
        assert_eq!(s.term(LogIndex(first + 9)), Ok(BOOTSTRAP_TERM));
        s.append_owned(entries(first + 10, first + 10));
        assert_eq!(s.last_index(), LogIndex(first + 10));
    }
}
