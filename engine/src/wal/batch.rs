//! The body of a WAL record: one batch of everything a core's groups produced
//! in one loop iteration, archived with rkyv so it is read back in place.
//!
//! Entries are fixed-size metadata plus one shared payload blob, so building a
//! batch allocates nothing per entry and validating one is a bounds check.

use rkyv::{Archive, Serialize};

use super::limits::LOG_INDEX_MAX;
use super::types::{GroupId, HardState, LogIndex, Term};

/// One entry's fixed part; its payload is `payload[offset..offset + len]`.
#[derive(Archive, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryMeta {
    pub group: u64,
    pub term: u64,
    pub index: u64,
    pub payload_offset: u32,
    pub payload_len: u32,
}

/// A group's new hard state.
#[derive(Archive, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct HardStateUpdate {
    pub group: u64,
    pub term: u64,
    pub vote: u64,
    pub commit: u64,
}

/// Removes the entries of `group` at and after `from_index` (a follower drops a
/// conflicting suffix).
#[derive(Archive, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Truncation {
    pub group: u64,
    pub from_index: u64,
}

/// Discards the entries of `group` at and before `index` (a snapshot covers
/// them).
#[derive(Archive, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Compaction {
    pub group: u64,
    pub index: u64,
}

/// A batch as written. Applied in this order: truncations, entries, hard
/// states, compactions, removals.
///
/// Invariant: every entry's payload range lies inside `payload`.
#[derive(Archive, Serialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    entries: Vec<EntryMeta>,
    payload: Vec<u8>,
    hard_states: Vec<HardStateUpdate>,
    truncations: Vec<Truncation>,
    compactions: Vec<Compaction>,
    removals: Vec<u64>,
    /// `Some(s)`: a rewrite; its entries and states replace copies that live in
    /// segments `<= s` and change nothing else.
    rewrite_cut_segment: Option<u64>,
}

/// A borrowed view of one entry, from a batch being built or read back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryRef<'a> {
    pub group: GroupId,
    pub term: Term,
    pub index: LogIndex,
    pub payload: &'a [u8],
}

impl Batch {
    pub fn new() -> Batch {
        Batch::default()
    }

    /// Appends an entry. Entries of one group must be pushed in index order;
    /// an index at or below the group's last one truncates from there.
    pub fn push_entry(&mut self, group: GroupId, term: Term, index: LogIndex, payload: &[u8]) {
        self.push_parts(group, term, index, &[payload]);
    }

    /// Like `push_entry`, with one tag byte stored before the payload (the
    /// node keeps the Raft entry kind there), without an intermediate copy.
    pub fn push_entry_tagged(
        &mut self,
        group: GroupId,
        term: Term,
        index: LogIndex,
        tag: u8,
        payload: &[u8],
    ) {
        self.push_parts(group, term, index, &[&[tag], payload]);
    }

    /// Appends an entry whose payload is the concatenation of `parts`.
    fn push_parts(&mut self, group: GroupId, term: Term, index: LogIndex, parts: &[&[u8]]) {
        let offset = u32::try_from(self.payload.len()).expect("batch payload fits u32");
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let len = u32::try_from(len).expect("entry payload fits u32");
        assert!(
            offset.checked_add(len).is_some(),
            "batch payload exceeds 4 GiB"
        );
        for part in parts {
            self.payload.extend_from_slice(part);
        }
        self.entries.push(EntryMeta {
            group: group.0,
            term: term.0,
            index: index.0,
            payload_offset: offset,
            payload_len: len,
        });
    }

    pub fn set_hard_state(&mut self, group: GroupId, state: HardState) {
        self.hard_states.push(HardStateUpdate {
            group: group.0,
            term: state.term.0,
            vote: state.vote,
            commit: state.commit.0,
        });
    }

    pub fn truncate(&mut self, group: GroupId, from_index: LogIndex) {
        self.truncations.push(Truncation {
            group: group.0,
            from_index: from_index.0,
        });
    }

    pub fn compact(&mut self, group: GroupId, index: LogIndex) {
        self.compactions.push(Compaction {
            group: group.0,
            index: index.0,
        });
    }

    pub fn remove_group(&mut self, group: GroupId) {
        self.removals.push(group.0);
    }

    pub(crate) fn set_rewrite_cut(&mut self, segment: u64) {
        self.rewrite_cut_segment = Some(segment);
    }

    /// Whether this is a rewrite record built by garbage collection.
    pub fn is_rewrite(&self) -> bool {
        self.rewrite_cut_segment.is_some()
    }

    /// Refuses log indexes no log can hold (see `check_log_index`), the same
    /// check recovery applies to every record it reads.
    pub fn check(&self) -> Result<(), BatchDefect> {
        for m in &self.entries {
            check_log_index(m.group, IndexUse::Entry, m.index)?;
        }
        for t in &self.truncations {
            check_log_index(t.group, IndexUse::Truncation, t.from_index)?;
        }
        for c in &self.compactions {
            check_log_index(c.group, IndexUse::Compaction, c.index)?;
        }
        Ok(())
    }

    /// Empties the batch, keeping its buffers for the next loop iteration.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.payload.clear();
        self.hard_states.clear();
        self.truncations.clear();
        self.compactions.clear();
        self.removals.clear();
        self.rewrite_cut_segment = None;
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
            && self.hard_states.is_empty()
            && self.truncations.is_empty()
            && self.compactions.is_empty()
            && self.removals.is_empty()
    }

    pub fn entry_count(&self) -> usize {
        self.entries.len()
    }

    pub fn payload_bytes(&self) -> usize {
        self.payload.len()
    }

    /// Every group this batch changes (with repeats).
    pub fn groups_touched(&self) -> impl Iterator<Item = GroupId> + '_ {
        let entries = self.entries.iter().map(|e| e.group);
        let states = self.hard_states.iter().map(|h| h.group);
        let truncations = self.truncations.iter().map(|t| t.group);
        let compactions = self.compactions.iter().map(|c| c.group);
        let removals = self.removals.iter().copied();
        entries
            .chain(states)
            .chain(truncations)
            .chain(compactions)
            .chain(removals)
            .map(GroupId)
    }

    pub fn truncations(&self) -> impl Iterator<Item = (GroupId, LogIndex)> + '_ {
        self.truncations
            .iter()
            .map(|t| (GroupId(t.group), LogIndex(t.from_index)))
    }

    pub fn compactions(&self) -> impl Iterator<Item = (GroupId, LogIndex)> + '_ {
        self.compactions
            .iter()
            .map(|c| (GroupId(c.group), LogIndex(c.index)))
    }

    pub fn hard_state_groups(&self) -> impl Iterator<Item = GroupId> + '_ {
        self.hard_states.iter().map(|h| GroupId(h.group))
    }

    pub fn removals(&self) -> impl Iterator<Item = GroupId> + '_ {
        self.removals.iter().map(|&g| GroupId(g))
    }

    pub fn entries(&self) -> impl Iterator<Item = EntryRef<'_>> + '_ {
        self.entries.iter().map(|m| EntryRef {
            group: GroupId(m.group),
            term: Term(m.term),
            index: LogIndex(m.index),
            payload: &self.payload[m.payload_offset as usize..][..m.payload_len as usize],
        })
    }

    /// An upper bound of the archived size, to reserve buffer space.
    pub fn archived_len_bound(&self) -> usize {
        let fixed = std::mem::size_of::<ArchivedBatch>() + 7 * 16;
        fixed
            + self.entries.len() * std::mem::size_of::<ArchivedEntryMeta>()
            + self.payload.len()
            + self.hard_states.len() * std::mem::size_of::<ArchivedHardStateUpdate>()
            + self.truncations.len() * std::mem::size_of::<ArchivedTruncation>()
            + self.compactions.len() * std::mem::size_of::<ArchivedCompaction>()
            + self.removals.len() * 8
    }
}

/// Why an archived batch cannot be used although its CRC matched.
#[derive(Debug, thiserror::Error)]
pub enum BatchDefect {
    #[error("archive structure invalid: {0}")]
    Structure(String),
    #[error("entry {entry} payload range {offset}+{len} outside payload of {payload_len} bytes")]
    PayloadRange {
        entry: usize,
        offset: u32,
        len: u32,
        payload_len: usize,
    },
    #[error("group {group}: {what} index {index} outside {lowest}..={max}", lowest = .what.lowest(), max = LOG_INDEX_MAX)]
    LogIndex {
        group: u64,
        what: IndexUse,
        index: u64,
    },
}

/// What a log index in a batch stands for, for `check_log_index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexUse {
    Entry,
    Truncation,
    Compaction,
}

impl IndexUse {
    /// Logs start at 1; compacting through 0 discards nothing.
    fn lowest(self) -> u64 {
        match self {
            IndexUse::Entry | IndexUse::Truncation => 1,
            IndexUse::Compaction => 0,
        }
    }
}

impl std::fmt::Display for IndexUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            IndexUse::Entry => "entry",
            IndexUse::Truncation => "truncation",
            IndexUse::Compaction => "compaction",
        })
    }
}

/// An index outside `lowest..=LOG_INDEX_MAX` is never written (`submit`
/// refuses it) and is corruption when read: the index's arithmetic relies on
/// it (`index - 1`, `index + 1`).
pub fn check_log_index(group: u64, what: IndexUse, index: u64) -> Result<(), BatchDefect> {
    if (what.lowest()..=LOG_INDEX_MAX).contains(&index) {
        return Ok(());
    }
    Err(BatchDefect::LogIndex { group, what, index })
}

/// Validates `body` (bytecheck) and returns the archived batch in place.
/// `body` must start at an address aligned to 16 bytes.
pub fn access_batch(body: &[u8]) -> Result<&ArchivedBatch, BatchDefect> {
    assert!(
        body.as_ptr() as usize % 16 == 0,
        "record body not 16-aligned in memory"
    );
    let batch = rkyv::access::<ArchivedBatch, rkyv::rancor::Error>(body)
        .map_err(|e| BatchDefect::Structure(e.to_string()))?;
    batch.check_contents()?;
    Ok(batch)
}

impl ArchivedBatch {
    /// Payload ranges and log indexes: what the index relies on.
    fn check_contents(&self) -> Result<(), BatchDefect> {
        let payload_len = self.payload.len();
        for (i, m) in self.entries.iter().enumerate() {
            let (offset, len) = (m.payload_offset.to_native(), m.payload_len.to_native());
            if offset as usize + len as usize > payload_len {
                return Err(BatchDefect::PayloadRange {
                    entry: i,
                    offset,
                    len,
                    payload_len,
                });
            }
            check_log_index(m.group.to_native(), IndexUse::Entry, m.index.to_native())?;
        }
        for t in self.truncations.iter() {
            check_log_index(
                t.group.to_native(),
                IndexUse::Truncation,
                t.from_index.to_native(),
            )?;
        }
        for c in self.compactions.iter() {
            check_log_index(
                c.group.to_native(),
                IndexUse::Compaction,
                c.index.to_native(),
            )?;
        }
        Ok(())
    }

    pub fn entry_count(&self) -> usize {
        self.entries.len()
    }

    /// Entry `i`; payload ranges were checked by `access_batch`.
    pub fn entry(&self, i: usize) -> EntryRef<'_> {
        let m = &self.entries[i];
        let offset = m.payload_offset.to_native() as usize;
        let len = m.payload_len.to_native() as usize;
        EntryRef {
            group: GroupId(m.group.to_native()),
            term: Term(m.term.to_native()),
            index: LogIndex(m.index.to_native()),
            payload: &self.payload[offset..offset + len],
        }
    }

    pub fn entries(&self) -> impl Iterator<Item = EntryRef<'_>> + '_ {
        (0..self.entries.len()).map(|i| self.entry(i))
    }

    pub fn hard_states(&self) -> impl Iterator<Item = (GroupId, HardState)> + '_ {
        self.hard_states.iter().map(|h| {
            let state = HardState {
                term: Term(h.term.to_native()),
                vote: h.vote.to_native(),
                commit: LogIndex(h.commit.to_native()),
            };
            (GroupId(h.group.to_native()), state)
        })
    }

    pub fn truncations(&self) -> impl Iterator<Item = (GroupId, LogIndex)> + '_ {
        self.truncations.iter().map(|t| {
            (
                GroupId(t.group.to_native()),
                LogIndex(t.from_index.to_native()),
            )
        })
    }

    pub fn compactions(&self) -> impl Iterator<Item = (GroupId, LogIndex)> + '_ {
        self.compactions
            .iter()
            .map(|c| (GroupId(c.group.to_native()), LogIndex(c.index.to_native())))
    }

    pub fn removals(&self) -> impl Iterator<Item = GroupId> + '_ {
        self.removals.iter().map(|g| GroupId(g.to_native()))
    }

    pub fn rewrite_cut_segment(&self) -> Option<u64> {
        self.rewrite_cut_segment.as_ref().map(|s| s.to_native())
    }

    pub fn payload_bytes(&self) -> usize {
        self.payload.len()
    }
}
