//! The in-memory index: for every group, where each of its live entries sits
//! (segment, record, slot), its hard state and compaction point. Rebuilt on
//! recovery by applying every record in order, exactly as when written.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::Range;

use super::batch::ArchivedBatch;
use super::types::{GroupId, HardState, LogIndex, RecordLoc, SegmentSeq, Term};
use crate::group_table::{prefetch_range, GroupTable, Prefetch};

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

/// One group's log.
///
/// Invariants: spans ascend by index without overlapping, and every span
/// index is above `compacted`. Their locations need not ascend: a rewrite puts
/// copies of a group's oldest entries into the head segment, in front of its
/// newer entries in older segments. While the WAL runs, the spans are also
/// contiguous and start at `compacted + 1`; while recovery replays the
/// segments still on disk, a span may start past its predecessor's end until
/// a later rewrite record supplies the entries in between (`first_gap`).
#[derive(Clone, Debug, Default)]
pub struct GroupLog {
    pub spans: VecDeque<Span>,
    /// Entries at or below this index are gone (0: nothing compacted).
    pub compacted: LogIndex,
    /// The segment of the record that set `compacted`.
    pub compact_segment: Option<SegmentSeq>,
    pub hard_state: Option<(HardState, SegmentSeq)>,
}

/// Entries a group's log lacks: neither held nor compacted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogGap {
    pub group: GroupId,
    /// The first missing index.
    pub missing_from: LogIndex,
    /// The span after the missing entries.
    pub next: Span,
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

    /// Oldest segment this group needs kept: every span counts, since after
    /// a rewrite the spans are not in segment order.
    pub fn oldest_segment(&self) -> Option<SegmentSeq> {
        let spans = self.spans.iter().map(|s| s.segment).min();
        let hard = self.hard_state.map(|(_, s)| s);
        [spans, hard, self.compact_segment]
            .into_iter()
            .flatten()
            .min()
    }

    /// The first index missing between `compacted` and the last entry, with
    /// the span after it; `None` when the log is contiguous from `compacted`.
    pub fn first_gap(&self) -> Option<(LogIndex, Span)> {
        let mut expected = LogIndex(self.compacted.0 + 1);
        for span in &self.spans {
            if span.first != expected {
                return Some((expected, *span));
            }
            expected = LogIndex(span.last().0 + 1);
        }
        None
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

    /// Replaces the entries in the index range `run` covers (contiguous
    /// spans, ascending) by `run`, splitting spans that reach beyond it.
    fn replace_range(&mut self, run: Vec<Span>) {
        let (Some(lo), Some(hi)) = (run.first().map(|s| s.first), run.last().map(Span::last))
        else {
            return;
        };
        let start = self.spans.partition_point(|s| s.last() < lo);
        let mut rest = self.spans.split_off(start);
        if let Some(front) = rest.front().filter(|s| s.first < lo) {
            let mut below = *front;
            below.count = (lo.0 - front.first.0) as u32;
            self.spans.push_back(below);
        }
        while let Some(front) = rest.front_mut() {
            if front.first > hi {
                break;
            }
            if front.last() <= hi {
                rest.pop_front();
                continue;
            }
            let cut = (hi.0 + 1 - front.first.0) as u32;
            front.first = LogIndex(hi.0 + 1);
            front.count -= cut;
            front.slot += cut;
            break;
        }
        self.spans.extend(run);
        self.spans.append(&mut rest);
    }

    /// Removes the entries at and below `index`, keeping `compacted`.
    fn drop_through(&mut self, index: LogIndex) {
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

    /// Applies a compaction mark found in `segment`. A mark below the current
    /// one changes nothing, so the record of the higher mark stays needed.
    fn compact(&mut self, index: LogIndex, segment: SegmentSeq) {
        if index >= self.compacted || self.compact_segment.is_none() {
            self.compact_segment = Some(segment);
        }
        self.compacted = self.compacted.max(index);
        self.drop_through(index);
    }

    /// Appends entries `first .. first + count` of term `term`, stored from
    /// slot `at.slot` on: as `count` single appends would.
    fn append_run(&mut self, first: LogIndex, term: Term, count: u32, at: &SpanAt) {
        self.append(first, term, at);
        let back = self.spans.back_mut().expect("append leaves a span");
        back.count += count - 1;
    }

    /// Appends one entry; an index at or below the last truncates from there.
    /// One beyond `last + 1` leaves a gap: `submit` lets that through only
    /// with a compaction mark in the same record, which closes it; recovery
    /// may meet one that a later rewrite record closes (`first_gap`).
    fn append(&mut self, index: LogIndex, term: Term, at: &SpanAt) {
        if index <= self.last_index() {
            self.truncate(index);
        }
        if self.spans.is_empty() && index <= self.compacted {
            self.compacted = LogIndex(index.0.saturating_sub(1));
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
    groups: GroupTable<GroupLog>,
}

impl Prefetch for GroupLog {
    type Visit = ();

    /// The newest span: a record's entries extend it or follow it.
    fn prefetch_parts(&self, (): ()) {
        if let Some(back) = self.spans.back() {
            prefetch_range(back as *const Span as usize, std::mem::size_of::<Span>(), 2);
        }
    }
}

impl Index {
    pub fn log(&self, group: GroupId) -> Option<&GroupLog> {
        self.groups.get(group.0)
    }

    /// Every group's log, in no particular order.
    pub fn logs(&self) -> impl Iterator<Item = (GroupId, &GroupLog)> {
        self.groups.iter().map(|(id, log)| (GroupId(id), log))
    }

    pub fn len(&self) -> usize {
        self.groups.len()
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    fn log_mut(&mut self, group: GroupId) -> &mut GroupLog {
        self.groups.get_or_default(group.0)
    }

    /// Applies a record in the order documented on `Batch`.
    pub fn apply(&mut self, batch: &ArchivedBatch, loc: RecordLoc, record_bytes: u64) {
        let mut at = SpanAt {
            segment: loc.segment,
            offset_bytes: u32::try_from(loc.offset_bytes).expect("segment offsets fit u32"),
            record_bytes: u32::try_from(record_bytes).expect("records fit u32"),
            slot: 0,
        };
        if batch.rewrite_cut_segment().is_some() {
            return self.apply_rewrite(batch, &mut at);
        }
        for (group, from) in batch.truncations() {
            if let Some(log) = self.groups.get_mut(group.0) {
                log.truncate(from);
            }
        }
        self.apply_entries(batch, &mut at);
        // A record holds a run or a hard state for each of many groups,
        // which are cold: their logs are loaded a few groups ahead.
        let states: Vec<(GroupId, HardState)> = batch.hard_states().collect();
        self.groups.prefetch_start((), |k| states.get(k).map(|s| s.0 .0));
        for (i, &(group, state)) in states.iter().enumerate() {
            self.groups.prefetch_ahead((), |k| states.get(i + k).map(|s| s.0 .0));
            self.log_mut(group).hard_state = Some((state, loc.segment));
        }
        for (group, index) in batch.compactions() {
            self.log_mut(group).compact(index, loc.segment);
        }
        for group in batch.removals() {
            self.groups.remove(group.0);
        }
    }

    fn apply_entries(&mut self, batch: &ArchivedBatch, at: &mut SpanAt) {
        let runs: Vec<_> = batch.runs().collect();
        self.groups.prefetch_start((), |k| runs.get(k).map(|r| r.0 .0));
        for (i, (group, term, first, slots)) in runs.iter().enumerate() {
            self.groups.prefetch_ahead((), |k| runs.get(i + k).map(|r| r.0 .0));
            at.slot = slots.start as u32;
            self.log_mut(*group).append_run(*first, *term, slots.len() as u32, at);
        }
    }

    /// A rewrite holds, for each of its groups, copies of (some of) the
    /// entries it kept in segments `<= cut`, and its hard state and
    /// compaction mark if their records lay there, all as they were when the
    /// rewrite was built; no record between then and this one touched those
    /// groups (see `gc`). So it replaces exactly what it copies, whether or
    /// not the old segments still exist.
    fn apply_rewrite(&mut self, batch: &ArchivedBatch, at: &mut SpanAt) {
        let runs: Vec<_> = batch.runs().collect();
        for of_group in runs.chunk_by(|a, b| a.0 == b.0) {
            relocate(self.log_mut(of_group[0].0), of_group, at);
        }
        for (group, state) in batch.hard_states() {
            self.log_mut(group).hard_state = Some((state, at.segment));
        }
        for (group, index) in batch.compactions() {
            self.log_mut(group).compact(index, at.segment);
        }
    }

    /// The gap of the lowest-numbered group whose log misses entries that no
    /// compaction mark covers. A WAL that recovery rebuilt completely has
    /// none; one that it has means records holding live entries are gone.
    pub fn first_gap(&self) -> Option<LogGap> {
        self.logs()
            .filter_map(|(group, log)| {
                let (missing_from, next) = log.first_gap()?;
                Some(LogGap {
                    group,
                    missing_from,
                    next,
                })
            })
            .min_by_key(|gap| gap.group)
    }
}

/// Replaces the group's entries that `runs` hold copies of by those
/// copies: each contiguous run of copies replaces exactly that index range,
/// wherever the entries it replaces live (or whether they were replayed at
/// all), and nothing else.
fn relocate(log: &mut GroupLog, runs: &[(GroupId, Term, LogIndex, Range<usize>)], at: &mut SpanAt) {
    let mut fresh = GroupLog::default();
    for (_, term, first, slots) in runs {
        at.slot = slots.start as u32;
        fresh.append_run(*first, *term, slots.len() as u32, at);
    }
    let mut copies = fresh.spans.into_iter().peekable();
    while let Some(first) = copies.next() {
        let mut run = vec![first];
        while let Some(next) = copies.next_if(|s| s.first.0 == run[run.len() - 1].last().0 + 1) {
            run.push(next);
        }
        log.replace_range(run);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(first: u64, count: u32, segment: u64, slot: u32) -> Span {
        Span {
            first: LogIndex(first),
            count,
            slot,
            term: Term(1),
            segment: SegmentSeq(segment),
            offset_bytes: 64,
            record_bytes: 4096,
        }
    }

    fn layout(log: &GroupLog) -> Vec<(u64, u32, u64, u32)> {
        let spans = log.spans.iter();
        spans
            .map(|s| (s.first.0, s.count, s.segment.0, s.slot))
            .collect()
    }

    /// Rewrite copies replace exactly the entries they copy, splitting the
    /// spans around them; after that the spans are out of segment order, and
    /// the oldest segment is the oldest of any span.
    #[test]
    fn copies_replace_their_range_and_every_span_counts_for_oldest_segment() {
        let mut log = GroupLog {
            spans: [span(1, 10, 3, 0), span(11, 10, 5, 0)].into(),
            ..GroupLog::default()
        };
        log.replace_range(vec![span(4, 3, 9, 0)]);
        log.replace_range(vec![span(9, 4, 9, 3)]);
        let expect = [
            (1, 3, 3, 0),
            (4, 3, 9, 0),
            (7, 2, 3, 6),
            (9, 4, 9, 3),
            (13, 8, 5, 2),
        ];
        assert_eq!(layout(&log), expect);
        assert_eq!(log.first_gap(), None);
        assert_eq!(log.oldest_segment(), Some(SegmentSeq(3)));
        log.compact(LogIndex(8), SegmentSeq(10));
        assert_eq!(layout(&log), [(9, 4, 9, 3), (13, 8, 5, 2)]);
        assert_eq!(log.oldest_segment(), Some(SegmentSeq(5)));
        // A lower mark changes nothing: the record of the higher one stays needed.
        log.compact(LogIndex(4), SegmentSeq(11));
        assert_eq!(
            (log.compacted, log.compact_segment),
            (LogIndex(8), Some(SegmentSeq(10)))
        );
    }

    #[test]
    fn entries_neither_held_nor_compacted_are_a_gap() {
        let mut log = GroupLog {
            spans: [span(1, 3, 1, 0), span(6, 2, 2, 0)].into(),
            ..GroupLog::default()
        };
        assert_eq!(log.first_gap(), Some((LogIndex(4), span(6, 2, 2, 0))));
        log.compact(LogIndex(5), SegmentSeq(2));
        assert_eq!(log.first_gap(), None);
        log.spans = [span(9, 1, 3, 0)].into();
        assert_eq!(log.first_gap(), Some((LogIndex(6), span(9, 1, 3, 0))));
    }
}
