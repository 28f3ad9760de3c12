//! The body of a WAL record: one batch of everything a core's groups produced
//! in one loop iteration, archived with rkyv so it is read back in place.
//!
//! Entries are fixed-size metadata plus one shared payload blob, so building a
//! batch allocates nothing per entry and validating one is a bounds check.

use rkyv::{Archive, Serialize};

use super::limits::LOG_INDEX_MAX;
use super::types::{GroupId, HardState, LogIndex, Term};

/// Consecutive entries of one group with one term: indexes `first_index ..
/// first_index + count`, stored in slots `first_slot .. first_slot + count`.
/// Runs tile the batch's slots in order. Raft appends runs like this, so
/// the per-entry cost on disk is the 4-byte payload end, not 32 bytes of
/// group, term and index.
#[derive(Archive, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryRun {
    pub group: u64,
    pub term: u64,
    pub first_index: u64,
    pub first_slot: u32,
    pub count: u32,
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
/// Invariants: `runs` tile the slots `0..payload_ends.len()` in order, each
/// with `count >= 1`; `payload_ends` ascends and ends at most at
/// `payload.len()`. Entry `i`'s payload is `payload[end(i - 1)..end(i)]`,
/// where `end(-1)` is 0.
#[derive(Archive, Serialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    runs: Vec<EntryRun>,
    payload_ends: Vec<u32>,
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

    /// Appends an entry whose payload is the concatenation of `parts`; it
    /// extends the last run when it follows that run's last entry.
    fn push_parts(&mut self, group: GroupId, term: Term, index: LogIndex, parts: &[&[u8]]) {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let end = u32::try_from(self.payload.len() + len).expect("batch payload exceeds 4 GiB");
        for part in parts {
            self.payload.extend_from_slice(part);
        }
        let slot = u32::try_from(self.payload_ends.len()).expect("batch entries fit u32");
        self.payload_ends.push(end);
        match self.runs.last_mut() {
            Some(run)
                if run.group == group.0
                    && run.term == term.0
                    && run.first_index.checked_add(u64::from(run.count)) == Some(index.0) =>
            {
                run.count += 1;
            }
            _ => self.runs.push(EntryRun {
                group: group.0,
                term: term.0,
                first_index: index.0,
                first_slot: slot,
                count: 1,
            }),
        }
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
        for r in &self.runs {
            check_run_indexes(r.group, r.first_index, r.count)?;
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
        self.runs.clear();
        self.payload_ends.clear();
        self.payload.clear();
        self.hard_states.clear();
        self.truncations.clear();
        self.compactions.clear();
        self.removals.clear();
        self.rewrite_cut_segment = None;
    }

    pub fn is_empty(&self) -> bool {
        self.payload_ends.is_empty()
            && self.hard_states.is_empty()
            && self.truncations.is_empty()
            && self.compactions.is_empty()
            && self.removals.is_empty()
    }

    pub fn entry_count(&self) -> usize {
        self.payload_ends.len()
    }

    pub fn payload_bytes(&self) -> usize {
        self.payload.len()
    }

    /// Every group this batch changes (with repeats).
    pub fn groups_touched(&self) -> impl Iterator<Item = GroupId> + '_ {
        let entries = self.runs.iter().map(|r| r.group);
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

    /// The runs: (group, first index, entry count), in slot order.
    pub fn runs(&self) -> impl Iterator<Item = (GroupId, LogIndex, u32)> + '_ {
        self.runs.iter().map(|r| (GroupId(r.group), LogIndex(r.first_index), r.count))
    }

    pub fn entries(&self) -> impl Iterator<Item = EntryRef<'_>> + '_ {
        self.runs.iter().flat_map(move |r| {
            (0..r.count).map(move |k| {
                let slot = (r.first_slot + k) as usize;
                let start = if slot == 0 { 0 } else { self.payload_ends[slot - 1] as usize };
                EntryRef {
                    group: GroupId(r.group),
                    term: Term(r.term),
                    index: LogIndex(r.first_index + u64::from(k)),
                    payload: &self.payload[start..self.payload_ends[slot] as usize],
                }
            })
        })
    }

    /// An upper bound of the archived size, to reserve buffer space.
    pub fn archived_len_bound(&self) -> usize {
        let fixed = std::mem::size_of::<ArchivedBatch>() + 7 * 16;
        fixed
            + self.runs.len() * std::mem::size_of::<ArchivedEntryRun>()
            + self.payload_ends.len() * 4
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
    #[error("entry {entry} payload ends at {end}, before the previous entry's end {previous_end} or past the payload's {payload_len} bytes")]
    PayloadRange {
        entry: usize,
        end: u32,
        previous_end: u32,
        payload_len: usize,
    },
    #[error("entry run {run} (slots {first_slot}+{count}) does not follow the previous run (next slot {expected_slot}) or is empty")]
    RunSlots {
        run: usize,
        first_slot: u32,
        count: u32,
        expected_slot: u64,
    },
    #[error("entry runs cover {covered} slots but the batch has {entries} entries")]
    RunCoverage { covered: u64, entries: usize },
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

/// Checks the first and last index of a run of `count` consecutive entries.
fn check_run_indexes(group: u64, first_index: u64, count: u32) -> Result<(), BatchDefect> {
    check_log_index(group, IndexUse::Entry, first_index)?;
    let last = first_index.saturating_add(u64::from(count).saturating_sub(1));
    check_log_index(group, IndexUse::Entry, last)
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
    /// Run tiling, payload ends and log indexes: what the index relies on.
    fn check_contents(&self) -> Result<(), BatchDefect> {
        let mut next_slot = 0u64;
        for (run, r) in self.runs.iter().enumerate() {
            let (first_slot, count) = (r.first_slot.to_native(), r.count.to_native());
            if u64::from(first_slot) != next_slot || count == 0 {
                return Err(BatchDefect::RunSlots { run, first_slot, count, expected_slot: next_slot });
            }
            next_slot += u64::from(count);
            check_run_indexes(r.group.to_native(), r.first_index.to_native(), count)?;
        }
        if next_slot != self.payload_ends.len() as u64 {
            return Err(BatchDefect::RunCoverage { covered: next_slot, entries: self.payload_ends.len() });
        }
        let payload_len = self.payload.len();
        let mut previous_end = 0;
        for (entry, end) in self.payload_ends.iter().enumerate() {
            let end = end.to_native();
            if end < previous_end || end as usize > payload_len {
                return Err(BatchDefect::PayloadRange { entry, end, previous_end, payload_len });
            }
            previous_end = end;
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
        self.payload_ends.len()
    }

    /// Every entry's payload back to back, in slot order.
    pub fn payloads(&self) -> &[u8] {
        &self.payload
    }

    /// Where each slot's payload ends in `payloads`.
    pub fn payload_ends(&self) -> impl ExactSizeIterator<Item = u32> + '_ {
        self.payload_ends.iter().map(|e| e.to_native())
    }

    /// The payload of slot `slot`; ends were checked by `access_batch`.
    fn payload_of(&self, slot: usize) -> &[u8] {
        let start = if slot == 0 { 0 } else { self.payload_ends[slot - 1].to_native() as usize };
        &self.payload[start..self.payload_ends[slot].to_native() as usize]
    }

    /// Entry `slot` of `run`, which holds it.
    fn entry_in(&self, run: &ArchivedEntryRun, slot: usize) -> EntryRef<'_> {
        let k = slot as u64 - u64::from(run.first_slot.to_native());
        EntryRef {
            group: GroupId(run.group.to_native()),
            term: Term(run.term.to_native()),
            index: LogIndex(run.first_index.to_native() + k),
            payload: self.payload_of(slot),
        }
    }

    /// Entry `i` (a binary search over the runs).
    pub fn entry(&self, i: usize) -> EntryRef<'_> {
        let run = self.runs.partition_point(|r| r.first_slot.to_native() as usize <= i) - 1;
        self.entry_in(&self.runs[run], i)
    }

    pub fn entries(&self) -> impl Iterator<Item = EntryRef<'_>> + '_ {
        self.runs.iter().flat_map(move |r| {
            let first = r.first_slot.to_native() as usize;
            (first..first + r.count.to_native() as usize).map(move |slot| self.entry_in(r, slot))
        })
    }

    /// The runs: (group, term, first index, slots), in slot order.
    pub fn runs(&self) -> impl Iterator<Item = (GroupId, Term, LogIndex, std::ops::Range<usize>)> + '_ {
        self.runs.iter().map(|r| {
            let first = r.first_slot.to_native() as usize;
            let slots = first..first + r.count.to_native() as usize;
            (GroupId(r.group.to_native()), Term(r.term.to_native()), LogIndex(r.first_index.to_native()), slots)
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Archives `batch` into a 16-aligned buffer, as a record body is.
    fn archive(batch: &Batch) -> rkyv::util::AlignedVec<16> {
        rkyv::to_bytes::<rkyv::rancor::Error>(batch).expect("archive")
    }

    /// An entry as pushed: group, term, index, payload.
    type Spec = (u64, u64, u64, Vec<u8>);

    /// Entries that break runs in every way a run can break: another group,
    /// another term, an index jump, an index going back (a truncating
    /// append), and a group coming back after another one.
    fn varied_batch() -> (Batch, Vec<Spec>) {
        let entries: Vec<Spec> = [
            (1, 1, 1, 3),
            (1, 1, 2, 0),
            (1, 2, 3, 5),
            (2, 7, 10, 1),
            (2, 7, 12, 2),
            (2, 7, 11, 4),
            (2, 7, 12, 0),
            (1, 2, 4, 6),
        ]
        .iter()
        .enumerate()
        .map(|(i, &(g, t, idx, len))| (g, t, idx, vec![i as u8; len]))
        .collect();
        let mut batch = Batch::new();
        for (g, t, idx, payload) in &entries {
            batch.push_entry(GroupId(*g), Term(*t), LogIndex(*idx), payload);
        }
        (batch, entries)
    }

    #[test]
    fn entries_read_back_in_order_from_runs_owned_and_archived() {
        let (batch, entries) = varied_batch();
        let expected: Vec<EntryRef<'_>> = entries
            .iter()
            .map(|(g, t, idx, p)| EntryRef { group: GroupId(*g), term: Term(*t), index: LogIndex(*idx), payload: p })
            .collect();
        assert!(batch.entries().eq(expected.iter().copied()));
        // Runs: [1:1..=2] [1:3 term 2] [2:10] [2:12] [2:11..=12] [1:4].
        assert_eq!(batch.runs.len(), 6);

        let bytes = archive(&batch);
        let archived = access_batch(&bytes).expect("valid");
        assert_eq!(archived.entry_count(), entries.len());
        assert!(archived.entries().eq(expected.iter().copied()));
        for (i, e) in expected.iter().enumerate() {
            assert_eq!(archived.entry(i), *e, "entry {i}");
        }
        let slots: Vec<_> = archived.runs().map(|(_, _, first, slots)| (first.0, slots)).collect();
        assert_eq!(slots, [(1, 0..2), (3, 2..3), (10, 3..4), (12, 4..5), (11, 5..7), (4, 7..8)]);
    }

    #[test]
    fn the_archived_layout_is_the_documented_one() {
        // docs/wal-format.md: the root is 72 bytes, a run 32.
        assert_eq!(std::mem::size_of::<ArchivedBatch>(), 72);
        assert_eq!(std::mem::size_of::<ArchivedEntryRun>(), 32);
    }

    #[test]
    fn an_entry_of_a_run_costs_four_bytes_beside_its_payload() {
        let mut batch = Batch::new();
        for g in 0..100 {
            for i in 1..=10 {
                batch.push_entry(GroupId(g), Term(3), LogIndex(i), &[0x5A; 64]);
            }
        }
        let overhead = archive(&batch).len() - 1000 * 64;
        // 1,000 payload ends and 100 runs of 32 bytes, plus the root.
        assert!(overhead <= 1000 * 4 + 100 * 32 + 128, "overhead {overhead} bytes");
    }

    /// Archives `batch` after `spoil` broke one of its invariants.
    fn spoiled(spoil: impl FnOnce(&mut Batch)) -> BatchDefect {
        let (mut batch, _) = varied_batch();
        spoil(&mut batch);
        let bytes = archive(&batch);
        match access_batch(&bytes) {
            Ok(_) => panic!("a spoiled batch passed the checks"),
            Err(defect) => defect,
        }
    }

    #[test]
    fn runs_that_do_not_tile_the_slots_or_payload_ends_out_of_order_are_refused() {
        let defect = spoiled(|b| b.runs[1].first_slot += 1);
        assert!(matches!(defect, BatchDefect::RunSlots { run: 1, .. }), "{defect}");
        let defect = spoiled(|b| b.runs[2].count = 0);
        assert!(matches!(defect, BatchDefect::RunSlots { run: 2, .. }), "{defect}");
        let defect = spoiled(|b| b.runs.last_mut().expect("runs").count += 1);
        assert!(matches!(defect, BatchDefect::RunCoverage { covered: 9, entries: 8 }), "{defect}");
        let defect = spoiled(|b| {
            b.runs.pop();
        });
        assert!(matches!(defect, BatchDefect::RunCoverage { covered: 7, entries: 8 }), "{defect}");
        let defect = spoiled(|b| b.payload_ends[3] = 1);
        assert!(matches!(defect, BatchDefect::PayloadRange { entry: 3, .. }), "{defect}");
        let defect = spoiled(|b| {
            b.payload.pop();
        });
        assert!(matches!(defect, BatchDefect::PayloadRange { entry: 7, .. }), "{defect}");
        let defect = spoiled(|b| b.runs[0].first_index = 0);
        assert!(matches!(defect, BatchDefect::LogIndex { group: 1, .. }), "{defect}");
        let defect = spoiled(|b| b.runs[5].first_index = LOG_INDEX_MAX + 1);
        assert!(matches!(defect, BatchDefect::LogIndex { group: 1, .. }), "{defect}");
        // The last index of a run counts too.
        let defect = spoiled(|b| b.runs[0].first_index = LOG_INDEX_MAX);
        assert!(matches!(defect, BatchDefect::LogIndex { group: 1, index, .. } if index == LOG_INDEX_MAX + 1), "{defect}");
    }
}
