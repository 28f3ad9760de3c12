//! The in-memory index: for every group, where each of its live entries sits
//! (segment, record, slot), its hard state and compaction point. Rebuilt on
//! recovery by applying every record in order, exactly as when written.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use super::batch::ArchivedBatch;
use super::types::{GroupId, HardState, LogIndex, RecordLoc, SegmentSeq, Term};

/// Entries `first .. first + count` of one group, all of term `term`, stored
/// as slots `slot ..` of the record at (`segment`, `offset_bytes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub first: LogIndex,
    pub count: u32,
    pub slot: u32,
    pub term: Term,
    pub segment: SegmentSeq,
    pub offset_bytes: u32,
    pub record_bytes: u32,
}

impl Span {
    pub fn last(&self) -> LogIndex {
        LogIndex(self.first.0 + u64::from(self.count) - 1)
    }

    pub fn loc(&self) -> RecordLoc {
        RecordLoc {
            segment: self.segment,
            offset_bytes: u64::from(self.offset_bytes),
        }
    }
}

/// One group's log. Invariants: spans are contiguous in index and ascending
/// in location; every span index is above `compacted`.
#[derive(Clone, Debug, Default)]
pub struct GroupLog {
    pub spans: VecDeque<Span>,
    /// Entries at or below this index are gone (0: nothing compacted).
    pub compacted: LogIndex,
    pub compact_segment: Option<SegmentSeq>,
    pub hard_state: Option<(HardState, SegmentSeq)>,
}

impl GroupLog {
    pub fn first_index(&self) -> LogIndex {
        self.spans
            .front()
            .map_or(LogIndex(self.compacted.0 + 1), |s| s.first)
    }

    pub fn last_index(&self) -> LogIndex {
        self.spans.back().map_or(self.compacted, Span::last)
    }

    pub fn last_term(&self) -> Option<Term> {
        self.spans.back().map(|s| s.term)
    }

    pub fn entry_count(&self) -> u64 {
        self.spans.iter().map(|s| u64::from(s.count)).sum()
    }

    /// Oldest segment this group needs kept.
    pub fn oldest_segment(&self) -> Option<SegmentSeq> {
        let spans = self.spans.front().map(|s| s.segment);
        let hard = self.hard_state.map(|(_, s)| s);
        [spans, hard, self.compact_segment]
            .into_iter()
            .flatten()
            .min()
    }

    pub fn truncate(&mut self, from: LogIndex) {
        while let Some(last) = self.spans.back_mut() {
            if last.first >= from {
                self.spans.pop_back();
            } else {
                if last.last() >= from {
                    last.count = (from.0 - last.first.0) as u32;
                }
                break;
            }
        }
    }

    fn compact(&mut self, index: LogIndex) {
        self.compacted = self.compacted.max(index);
        while let Some(front) = self.spans.front_mut() {
            if front.last() <= index {
                self.spans.pop_front();
            } else {
                if front.first <= index {
                    let cut = (index.0 + 1 - front.first.0) as u32;
                    front.first = LogIndex(index.0 + 1);
                    front.count -= cut;
                    front.slot += cut;
                }
                break;
            }
        }
    }

    /// Appends one entry; an index at or below the last truncates from there,
    /// one beyond `last + 1` restarts the log at it (after a snapshot).
    fn append(&mut self, index: LogIndex, term: Term, at: &SpanAt) {
        let last = self.last_index();
        if index <= last {
            self.truncate(index);
        } else if index.0 > last.0 + 1 {
            self.spans.clear();
        }
        if self.spans.is_empty() && index <= self.compacted {
            self.compacted = LogIndex(index.0 - 1);
        }
        if let Some(back) = self.spans.back_mut() {
            let contiguous = back.last().0 + 1 == index.0 && back.term == term;
            if contiguous
                && back.segment == at.segment
                && back.offset_bytes == at.offset_bytes
                && back.slot + back.count == at.slot
            {
                back.count += 1;
                return;
            }
        }
        self.spans.push_back(at.span(index, term));
    }
}

/// Where the entries of the record being applied go.
struct SpanAt {
    segment: SegmentSeq,
    offset_bytes: u32,
    record_bytes: u32,
    slot: u32,
}

impl SpanAt {
    fn span(&self, first: LogIndex, term: Term) -> Span {
        Span {
            first,
            count: 1,
            slot: self.slot,
            term,
            segment: self.segment,
            offset_bytes: self.offset_bytes,
            record_bytes: self.record_bytes,
        }
    }
}

/// Fibonacci hashing of u64 group ids: fast and good enough for ids we assign.
#[derive(Default)]
pub struct GroupHasher(u64);

impl Hasher for GroupHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0 ^ v).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

pub type GroupMap<V> = HashMap<GroupId, V, BuildHasherDefault<GroupHasher>>;

/// Every group's log on this core.
#[derive(Default)]
pub struct Index {
    pub groups: GroupMap<GroupLog>,
}

impl Index {
    /// Applies a record in the order documented on `Batch`.
    pub fn apply(&mut self, batch: &ArchivedBatch, loc: RecordLoc, record_bytes: u64) {
        let mut at = SpanAt {
            segment: loc.segment,
            offset_bytes: u32::try_from(loc.offset_bytes).expect("segment offsets fit u32"),
            record_bytes: u32::try_from(record_bytes).expect("records fit u32"),
            slot: 0,
        };
        if let Some(cut) = batch.rewrite_cut_segment() {
            return self.apply_rewrite(batch, SegmentSeq(cut), &mut at);
        }
        for (group, from) in batch.truncations() {
            if let Some(log) = self.groups.get_mut(&group) {
                log.truncate(from);
            }
        }
        self.apply_entries(batch, &mut at);
        for (group, state) in batch.hard_states() {
            self.groups.entry(group).or_default().hard_state = Some((state, loc.segment));
        }
        for (group, index) in batch.compactions() {
            let log = self.groups.entry(group).or_default();
            log.compact(index);
            log.compact_segment = Some(loc.segment);
        }
        for group in batch.removals() {
            self.groups.remove(&group);
        }
    }

    fn apply_entries(&mut self, batch: &ArchivedBatch, at: &mut SpanAt) {
        let mut slot = 0;
        let n = batch.entry_count();
        while slot < n {
            let group = batch.entry(slot).group;
            let log = self.groups.entry(group).or_default();
            while slot < n {
                let e = batch.entry(slot);
                if e.group != group {
                    break;
                }
                at.slot = slot as u32;
                log.append(e.index, e.term, at);
                slot += 1;
            }
        }
    }

    /// A rewrite holds, for each of its groups, everything that group kept in
    /// segments `<= cut` when the rewrite was built; no record between then
    /// and this one touched those groups (see `gc`). So it replaces that part
    /// whole, whether or not the old segments still exist.
    fn apply_rewrite(&mut self, batch: &ArchivedBatch, cut: SegmentSeq, at: &mut SpanAt) {
        let mut slot = 0;
        let n = batch.entry_count();
        while slot < n {
            let group = batch.entry(slot).group;
            let run_start = slot;
            while slot < n && batch.entry(slot).group == group {
                slot += 1;
            }
            relocate(self.groups.entry(group).or_default(), batch, run_start..slot, cut, at);
        }
        for (group, state) in batch.hard_states() {
            self.groups.entry(group).or_default().hard_state = Some((state, at.segment));
        }
        for (group, index) in batch.compactions() {
            let log = self.groups.entry(group).or_default();
            log.compact(index);
            log.compact_segment = Some(at.segment);
        }
    }
}

/// Replaces the group's spans in segments `<= cut` by the copies in `slots`.
fn relocate(
    log: &mut GroupLog,
    batch: &ArchivedBatch,
    slots: std::ops::Range<usize>,
    cut: SegmentSeq,
    at: &mut SpanAt,
) {
    let mut fresh = GroupLog::default();
    for slot in slots {
        let e = batch.entry(slot);
        at.slot = slot as u32;
        fresh.append(e.index, e.term, at);
    }
    let old = log.spans.iter().take_while(|s| s.segment <= cut).count();
    log.spans.drain(..old);
    if let (Some(copy), Some(newer)) = (fresh.spans.back(), log.spans.front()) {
        debug_assert_eq!(copy.last().0 + 1, newer.first.0, "rewrite copies adjoin newer spans");
    }
    for span in fresh.spans.into_iter().rev() {
        log.spans.push_front(span);
    }
}
