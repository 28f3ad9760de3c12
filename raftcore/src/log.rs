//! The replicated log of one replica: the durable part in `Storage`, the part
//! still on its way to disk in `Unstable`, and the commit / persist / apply
//! cursors over both.

use crate::storage::{Storage, StorageError};
use crate::types::{Entry, LogIndex, Snapshot, Term};

/// Entries (and possibly a snapshot) accepted but not yet reported durable.
///
/// Invariants: `entries[i].index == offset + i`; `offset <= handed_out <=
/// offset + entries.len()`; with a snapshot, `offset == snapshot.index + 1`.
#[derive(Debug)]
struct Unstable {
    snapshot: Option<Box<Snapshot>>,
    snapshot_handed_out: bool,
    entries: Vec<Entry>,
    offset: LogIndex,
    /// Entries below this index were handed to the caller in a `Ready`
    /// (their write is in flight); the rest wait for the next `Ready`.
    handed_out: LogIndex,
}

impl Unstable {
    fn last_index(&self) -> Option<LogIndex> {
        match (self.entries.last(), &self.snapshot) {
            (Some(entry), _) => Some(entry.index),
            (None, Some(snapshot)) => Some(snapshot.meta.index),
            (None, None) => None,
        }
    }

    fn term(&self, index: LogIndex) -> Option<Term> {
        if index >= self.offset {
            return self.entries.get((index.get() - self.offset.get()) as usize).map(|e| e.term);
        }
        match &self.snapshot {
            Some(snapshot) if snapshot.meta.index == index => Some(snapshot.meta.term),
            _ => None,
        }
    }

    fn truncate_and_append(&mut self, new: Vec<Entry>) {
        let after = new[0].index;
        let end = self.offset.plus(self.entries.len() as u64);
        if after == end {
            if self.entries.is_empty() {
                // The usual case once earlier entries were persisted: take
                // the vector itself instead of copying it into an empty one.
                self.entries = new;
            } else {
                self.entries.extend(new);
            }
        } else if after <= self.offset {
            // The whole unstable suffix is replaced; older durable entries
            // from `after` on are overwritten by the next write.
            self.offset = after;
            self.handed_out = after;
            self.entries.clear();
            self.entries.extend(new);
        } else {
            self.entries.truncate((after.get() - self.offset.get()) as usize);
            self.entries.extend(new);
            self.handed_out = self.handed_out.min(after);
        }
    }
}

/// The log with its cursors. Invariants (asserted where they change):
/// `applied <= committed`, `committed <= last_index()`, committed never
/// decreases, `persisted <= last_index()`.
#[derive(Debug)]
pub struct RaftLog<S: Storage> {
    pub storage: S,
    unstable: Unstable,
    /// Highest index known committed by a quorum.
    pub committed: LogIndex,
    /// Highest index handed out to the caller for application.
    pub applied: LogIndex,
    /// Highest index known durable on this replica (in storage).
    pub persisted: LogIndex,
}

impl<S: Storage> RaftLog<S> {
    /// Where the unstable entries live, for `RawNode::hot_memory`.
    pub(crate) fn unstable_memory(&self) -> (usize, usize) {
        crate::tracker::memory_of(&self.unstable.entries)
    }

    pub fn new(storage: S, committed: LogIndex) -> RaftLog<S> {
        let first = storage.first_index();
        let last = storage.last_index();
        assert!(committed <= last, "hard state commit {committed} beyond last stored index {last}");
        RaftLog {
            unstable: Unstable { snapshot: None, snapshot_handed_out: false, entries: Vec::new(), offset: last.next(), handed_out: last.next() },
            committed,
            // Everything up to the snapshot is in the state machine already.
            applied: first.prev(),
            persisted: last,
            storage,
        }
    }

    pub fn first_index(&self) -> LogIndex {
        match &self.unstable.snapshot {
            Some(snapshot) => snapshot.meta.index.next(),
            None => self.storage.first_index(),
        }
    }

    pub fn last_index(&self) -> LogIndex {
        self.unstable.last_index().unwrap_or_else(|| self.storage.last_index())
    }

    /// Term of the entry at `index`; `Ok(0)` below the log's start is not
    /// given: a compacted index is an error the caller handles.
    pub fn term(&self, index: LogIndex) -> Result<Term, StorageError> {
        let dummy = self.first_index().prev();
        if index < dummy {
            return Err(StorageError::Compacted(index));
        }
        if index > self.last_index() {
            return Err(StorageError::Unavailable(index));
        }
        if let Some(term) = self.unstable.term(index) {
            return Ok(term);
        }
        self.storage.term(index)
    }

    /// The term at `index`, or 0 when it is compacted or missing (for
    /// comparisons where either means "does not match").
    pub fn term_or_zero(&self, index: LogIndex) -> Term {
        self.term(index).unwrap_or(Term::ZERO)
    }

    pub fn last_term(&self) -> Term {
        self.term(self.last_index()).expect("the last index always has a term")
    }

    pub fn match_term(&self, index: LogIndex, term: Term) -> bool {
        self.term(index).map(|t| t == term).unwrap_or(false)
    }

    /// Whether a candidate with this last entry is at least as up to date.
    pub fn is_up_to_date(&self, last_index: LogIndex, last_term: Term) -> bool {
        let our_term = self.last_term();
        last_term > our_term || (last_term == our_term && last_index >= self.last_index())
    }

    /// Appends entries that start right after the current last index or
    /// overwrite an uncommitted suffix. Returns the new last index.
    pub fn append(&mut self, entries: &[Entry]) -> LogIndex {
        self.append_owned(entries.to_vec())
    }

    /// `append`, taking the entries by value (no reference-count churn).
    pub fn append_owned(&mut self, entries: Vec<Entry>) -> LogIndex {
        let Some(first) = entries.first() else { return self.last_index() };
        let first = first.index;
        assert!(first > self.committed, "overwriting committed index {first} (committed {})", self.committed);
        assert!(first <= self.last_index().next(), "append at {first} leaves a gap after {}", self.last_index());
        self.unstable.truncate_and_append(entries);
        self.persisted = self.persisted.min(first.prev());
        self.last_index()
    }

    /// A follower's append: if the log matches at (`prev_index`,
    /// `prev_term`), drops any conflicting suffix, appends what is new and
    /// returns the last index the leader's message covers.
    pub fn maybe_append(&mut self, prev_index: LogIndex, prev_term: Term, commit: LogIndex, mut entries: Vec<Entry>) -> Option<LogIndex> {
        if !self.match_term(prev_index, prev_term) {
            return None;
        }
        let last_new = prev_index.plus(entries.len() as u64);
        if let Some(conflict) = self.find_conflict(&entries) {
            assert!(conflict > self.committed, "conflict at {conflict} at or below commit {}", self.committed);
            let start = (conflict.get() - prev_index.get() - 1) as usize;
            entries.drain(..start);
            self.append_owned(entries);
        }
        self.commit_to(commit.min(last_new));
        Some(last_new)
    }

    /// The index of the first entry that is new or differs in term from ours.
    fn find_conflict(&self, entries: &[Entry]) -> Option<LogIndex> {
        entries.iter().find(|e| !self.match_term(e.index, e.term)).map(|e| e.index)
    }

    /// For a rejected append: the largest index at or below `index` whose
    /// term is at most `term` — where the two logs may agree — or, when even
    /// the oldest known term is above `term`, the index before it (with term
    /// 0). Terms never fall along a log, so the entries with a term at most
    /// `term` are a prefix of it, found by bisection: a peer's hint may name
    /// a term far below the end of a long log, and a walk back one entry at
    /// a time costs as many steps as there are entries above it.
    pub fn find_conflict_by_term(&self, index: LogIndex, term: Term) -> (LogIndex, Term) {
        let mut hi = index.min(self.last_index());
        // The oldest index whose term is known.
        let mut lo = self.first_index().prev();
        if hi < lo {
            return (hi, Term::ZERO);
        }
        match self.term(lo) {
            Ok(t) if t <= term => {}
            Ok(_) => return (lo.prev(), Term::ZERO),
            Err(_) => return (lo, Term::ZERO),
        }
        // Invariant: term(lo) <= term, and every index above hi is above it.
        while lo < hi {
            let mid = lo.plus((hi.get() - lo.get()).div_ceil(2));
            match self.term(mid) {
                Ok(t) if t <= term => lo = mid,
                _ => hi = mid.prev(),
            }
        }
        (lo, self.term(lo).unwrap_or(Term::ZERO))
    }

    pub fn commit_to(&mut self, index: LogIndex) {
        if index > self.committed {
            assert!(index <= self.last_index(), "commit {index} beyond last index {}", self.last_index());
            self.committed = index;
        }
    }

    /// Leader commit: only an entry of the leader's own term is committed by
    /// counting replicas (Raft §5.4.2); earlier ones follow implicitly.
    pub fn maybe_commit(&mut self, index: LogIndex, term: Term) -> bool {
        if index > self.committed && self.term_or_zero(index) == term {
            self.commit_to(index);
            return true;
        }
        false
    }

    /// Entries in `[lo, last]` for a follower, bounded by count and bytes.
    pub fn entries_from(&self, lo: LogIndex, max_entries: usize, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        let last = self.last_index();
        if lo > last {
            return Ok(Vec::new());
        }
        let hi = lo.plus(max_entries as u64).min(last.next());
        self.slice(lo, hi, max_bytes)
    }

    /// Entries `[lo, hi)`, from storage and then the unstable part.
    fn slice(&self, lo: LogIndex, hi: LogIndex, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        if lo < self.first_index() {
            return Err(StorageError::Compacted(lo));
        }
        let offset = self.unstable.offset;
        let mut out = if lo < offset {
            self.storage.entries(lo, hi.min(offset), max_bytes)?
        } else {
            Vec::new()
        };
        if hi > offset && out.last().map(|e| e.index.next()).unwrap_or(lo) >= offset.max(lo) {
            let mut bytes: u64 = out.iter().map(Entry::size_bytes).sum();
            let start = (lo.max(offset).get() - offset.get()) as usize;
            let end = (hi.get() - offset.get()) as usize;
            out.reserve(end - start);
            for entry in &self.unstable.entries[start..end] {
                bytes += entry.size_bytes();
                if !out.is_empty() && bytes > max_bytes {
                    break;
                }
                out.push(entry.clone());
            }
        }
        Ok(out)
    }

    /// Whether entries are waiting to be handed out for persistence.
    pub fn has_unhanded_entries(&self) -> bool {
        self.unstable.handed_out < self.unstable.offset.plus(self.unstable.entries.len() as u64)
    }

    /// Hands out the entries not yet given to the caller; they stay unstable
    /// until `stable_to` reports them durable.
    pub fn take_unhanded_entries(&mut self) -> Vec<Entry> {
        let start = (self.unstable.handed_out.get() - self.unstable.offset.get()) as usize;
        let out = self.unstable.entries[start..].to_vec();
        self.unstable.handed_out = self.unstable.offset.plus(self.unstable.entries.len() as u64);
        out
    }

    pub fn has_unhanded_snapshot(&self) -> bool {
        self.unstable.snapshot.is_some() && !self.unstable.snapshot_handed_out
    }

    pub fn take_unhanded_snapshot(&mut self) -> Option<Snapshot> {
        if !self.has_unhanded_snapshot() {
            return None;
        }
        self.unstable.snapshot_handed_out = true;
        self.unstable.snapshot.as_deref().cloned()
    }

    /// The entries up to (`index`, `term`) are durable. Ignored when the
    /// unstable log no longer holds that entry (it was overwritten since).
    pub fn stable_to(&mut self, index: LogIndex, term: Term) {
        if index < self.unstable.offset || self.unstable.term(index) != Some(term) {
            return;
        }
        let drop_count = (index.get() + 1 - self.unstable.offset.get()) as usize;
        self.unstable.entries.drain(..drop_count);
        if self.unstable.entries.is_empty() {
            self.unstable.entries = Vec::new();
        }
        self.unstable.offset = index.next();
        self.unstable.handed_out = self.unstable.handed_out.max(self.unstable.offset);
        self.persisted = self.persisted.max(index);
    }

    /// The snapshot at `index` is durable (and restored into the state machine).
    pub fn stable_snapshot_to(&mut self, index: LogIndex) {
        if matches!(&self.unstable.snapshot, Some(s) if s.meta.index == index) {
            self.unstable.snapshot = None;
            self.unstable.snapshot_handed_out = false;
            self.persisted = self.persisted.max(index);
        }
    }

    /// Replaces the log with a snapshot received from the leader.
    pub fn restore(&mut self, snapshot: Snapshot) {
        let index = snapshot.meta.index;
        assert!(index > self.committed, "restoring snapshot {index} at or below commit {}", self.committed);
        self.committed = index;
        self.persisted = self.persisted.min(index.prev());
        self.unstable.entries = Vec::new();
        self.unstable.offset = index.next();
        self.unstable.handed_out = index.next();
        self.unstable.snapshot = Some(Box::new(snapshot));
        self.unstable.snapshot_handed_out = false;
    }

    /// Whether committed, durable entries wait to be handed out for applying.
    pub fn has_next_committed(&self) -> bool {
        self.applied < self.committed.min(self.persisted) && !self.has_pending_snapshot_below_applied()
    }

    /// While a snapshot is on its way to the state machine, nothing after it
    /// is applied.
    fn has_pending_snapshot_below_applied(&self) -> bool {
        matches!(&self.unstable.snapshot, Some(s) if self.applied < s.meta.index)
    }

    /// Committed and durable entries not yet handed out for applying.
    pub fn next_committed(&self, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        if !self.has_next_committed() {
            return Ok(Vec::new());
        }
        let hi = self.committed.min(self.persisted).next();
        self.slice(self.applied.next(), hi, max_bytes)
    }

    pub fn applied_to(&mut self, index: LogIndex) {
        assert!(index <= self.committed, "applied {index} beyond commit {}", self.committed);
        assert!(index >= self.applied, "applied regressed from {} to {index}", self.applied);
        self.applied = index;
    }

    /// Whether every entry is durable and nothing waits in memory.
    pub fn is_all_stable(&self) -> bool {
        self.unstable.entries.is_empty() && self.unstable.snapshot.is_none()
    }
}
