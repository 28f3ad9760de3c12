//! Keeping disk use bounded: retire segments that no group needs any more,
//! and when too many remain, copy the live data of the groups pinning the
//! oldest ones forward (a rewrite) so those can go too.
//!
//! A rewrite record must describe its groups exactly as they are at its place
//! in the log. So the rewrite starts watching every batch submitted, waits
//! until everything submitted before is durable, snapshots its groups, and
//! leaves out any group that a batch submitted since it started touched (it
//! is retried by the next purge).

use super::batch::Batch;
use super::error::WalError;
use super::index::GroupMap;
use super::io::WalIo;
use super::limits::SEGMENT_HEADER_BYTES;
use super::read::Entry;
use super::state::Wal;
use super::types::{GroupId, HardState, LogIndex, RecordSeq, SegmentSeq};

/// What one `purge` did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PurgeReport {
    pub groups_rewritten: u64,
    pub entries_rewritten: u64,
    pub segments_removed: u64,
}

/// What a group keeps in segments `<= cut`, to copy forward.
struct Pinned {
    group: GroupId,
    /// Index ranges (inclusive, ascending, not adjoining) of the entries
    /// held in segments `<= cut`. After an earlier rewrite these need not be
    /// a prefix of the log: its copies sit in a newer segment, in front of
    /// entries still in old ones.
    ranges: Vec<(LogIndex, LogIndex)>,
    hard_state: Option<HardState>,
    compacted: Option<LogIndex>,
}

/// Part of one group's rewrite: a rewrite record holds pieces of several
/// groups, and a group with more than a record's worth of entries is split
/// into pieces over several records (each replaces exactly what it copies).
struct Piece {
    group: GroupId,
    /// The group's first piece: it carries the hard state and compaction
    /// mark, and counts the group in the report.
    first: bool,
    entries: Vec<Entry>,
    hard_state: Option<HardState>,
    compacted: Option<LogIndex>,
}

/// Archived bytes of an entry's metadata, and a bound of a piece's other
/// fields (hard state, compaction mark), for sizing rewrite records.
const ENTRY_META_BYTES: usize = 32;
const PIECE_BYTES: usize = 64;

/// The pieces of the rewrite record being gathered.
#[derive(Default)]
struct Chunk {
    pieces: Vec<Piece>,
    bytes: usize,
}

impl<I: WalIo> Wal<I> {
    /// Deletes unneeded segments; with more than `segments_soft_max` left,
    /// first rewrites the groups that pin the oldest ones.
    pub async fn purge(&self) -> Result<PurgeReport, WalError> {
        let mut report = PurgeReport::default();
        if let Some(cut) = self.rewrite_cut() {
            let result = self.rewrite(cut, &mut report).await;
            self.inner.st.borrow_mut().rewriting = None;
            result?;
        }
        report.segments_removed = self.remove_unneeded().await?;
        Ok(report)
    }

    fn rewrite_cut(&self) -> Option<SegmentSeq> {
        let st = self.inner.st.borrow();
        let head = st.writer.head_segment();
        let count = (head.0 + 1).saturating_sub(st.first_segment.0) as usize;
        let keep = (self.inner.opts.segments_soft_max / 2) as u64;
        (count > self.inner.opts.segments_soft_max && st.rewriting.is_none())
            .then(|| SegmentSeq(head.0 - keep))
    }

    /// Snapshots the groups pinning segments `<= cut`; any of them touched by
    /// a batch since the rewrite began is left out when its piece is
    /// submitted.
    fn pin(&self, cut: SegmentSeq) -> Vec<Pinned> {
        let mut st = self.inner.st.borrow_mut();
        let mut out: Vec<Pinned> = st
            .index
            .logs()
            .filter(|(_, log)| log.oldest_segment().is_some_and(|s| s <= cut))
            .map(|(group, log)| {
                assert_eq!(
                    log.first_gap(),
                    None,
                    "group {group}: a live log is contiguous"
                );
                let mut ranges: Vec<(LogIndex, LogIndex)> = Vec::new();
                for span in log.spans.iter().filter(|s| s.segment <= cut) {
                    match ranges.last_mut() {
                        Some((_, hi)) if hi.0 + 1 == span.first.0 => *hi = span.last(),
                        _ => ranges.push((span.first, span.last())),
                    }
                }
                Pinned {
                    group,
                    ranges,
                    hard_state: log.hard_state.filter(|(_, s)| *s <= cut).map(|(h, _)| h),
                    compacted: log
                        .compact_segment
                        .filter(|s| *s <= cut)
                        .map(|_| log.compacted),
                }
            })
            .collect();
        out.sort_unstable_by_key(|p| p.group);
        let rewriting = st
            .rewriting
            .as_mut()
            .expect("the rewrite tracks batches from its start");
        for p in &out {
            rewriting.entry(p.group).or_insert(false);
        }
        out
    }

    async fn rewrite(&self, cut: SegmentSeq, report: &mut PurgeReport) -> Result<(), WalError> {
        // From here every submitted batch marks its groups touched: those
        // submitted after `before` may not be in the index when `pin` runs.
        let before = {
            let mut st = self.inner.st.borrow_mut();
            st.rewriting = Some(GroupMap::default());
            RecordSeq(st.writer.next_seq().0 - 1)
        };
        self.wait_durable(before).await?;
        let room = self.inner.opts.segment_size_bytes - SEGMENT_HEADER_BYTES;
        let bytes_max = self.inner.opts.write_bytes_max.min(room as usize) / 2;
        let mut chunk = Chunk::default();
        let mut last = None;
        'groups: for pinned in self.pin(cut) {
            let mut copies = Vec::new();
            for &(lo, hi) in &pinned.ranges {
                match self.entries(pinned.group, lo, LogIndex(hi.0 + 1)).await {
                    Ok(mut entries) => copies.append(&mut entries),
                    Err(_) if self.touched(pinned.group) => continue 'groups,
                    Err(e) => return Err(e),
                }
            }
            if chunk.bytes + PIECE_BYTES > bytes_max && !chunk.pieces.is_empty() {
                last = self.submit_rewrite(&mut chunk, cut, report)?.or(last);
            }
            let mut piece = Piece {
                group: pinned.group,
                first: true,
                entries: Vec::new(),
                hard_state: pinned.hard_state,
                compacted: pinned.compacted,
            };
            chunk.bytes += PIECE_BYTES;
            for entry in copies {
                let bytes = ENTRY_META_BYTES + entry.payload.len();
                if chunk.bytes + bytes > bytes_max
                    && (!chunk.pieces.is_empty() || !piece.entries.is_empty())
                {
                    let next = Piece {
                        group: piece.group,
                        first: false,
                        entries: Vec::new(),
                        hard_state: None,
                        compacted: None,
                    };
                    chunk.pieces.push(std::mem::replace(&mut piece, next));
                    last = self.submit_rewrite(&mut chunk, cut, report)?.or(last);
                    chunk.bytes = PIECE_BYTES;
                }
                chunk.bytes += bytes;
                piece.entries.push(entry);
            }
            chunk.pieces.push(piece);
        }
        last = self.submit_rewrite(&mut chunk, cut, report)?.or(last);
        match last {
            Some(seq) => self.wait_durable(seq).await,
            None => Ok(()),
        }
    }

    fn touched(&self, group: GroupId) -> bool {
        let st = self.inner.st.borrow();
        st.rewriting
            .as_ref()
            .and_then(|r| r.get(&group).copied())
            .unwrap_or(true)
    }

    /// Submits the pieces of untouched groups in `chunk` as one rewrite
    /// record, and empties the chunk.
    fn submit_rewrite(
        &self,
        chunk: &mut Chunk,
        cut: SegmentSeq,
        report: &mut PurgeReport,
    ) -> Result<Option<RecordSeq>, WalError> {
        let mut batch = Batch::new();
        for p in chunk.pieces.drain(..) {
            if self.touched(p.group) {
                continue;
            }
            for e in &p.entries {
                batch.push_entry(e.group, e.term, e.index, &e.payload);
            }
            if let Some(state) = p.hard_state {
                batch.set_hard_state(p.group, state);
            }
            if let Some(index) = p.compacted {
                batch.compact(p.group, index);
            }
            report.groups_rewritten += u64::from(p.first);
            report.entries_rewritten += p.entries.len() as u64;
        }
        chunk.bytes = 0;
        if batch.is_empty() {
            return Ok(None);
        }
        batch.set_rewrite_cut(cut.0);
        let rewriting = self.inner.st.borrow_mut().rewriting.take();
        let seq = self.submit(&batch);
        self.inner.st.borrow_mut().rewriting = rewriting;
        seq.map(Some)
    }

    /// The oldest segment still needed by a group or by a write in flight,
    /// or any segment at or below the first one when that one is needed
    /// (the segments below it may go, so only how far it lies above the
    /// first matters). The scan of the groups stops at the first that needs
    /// the first segment: a group's oldest segment is the oldest of all its
    /// spans, and under load each entry is a span of its own, so a full
    /// scan visited every entry the index holds, every second, on the
    /// executor.
    fn needed_from(&self) -> SegmentSeq {
        let st = self.inner.st.borrow();
        let first = st.first_segment;
        let mut groups: Option<SegmentSeq> = None;
        for oldest in st.index.logs().filter_map(|(_, log)| log.oldest_segment()) {
            let lowest = groups.map_or(oldest, |g| g.min(oldest));
            groups = Some(lowest);
            if lowest <= first {
                break;
            }
        }
        let writing = st.in_flight.front().map(|f| f.write.segment);
        let head = st.writer.head_segment();
        [groups, writing]
            .into_iter()
            .flatten()
            .fold(head, SegmentSeq::min)
    }

    async fn remove_unneeded(&self) -> Result<u64, WalError> {
        let limit = self.needed_from();
        let mut removed = 0;
        loop {
            let segment = self.inner.st.borrow().first_segment;
            if segment >= limit {
                return Ok(removed);
            }
            // Oldest first: a crash part-way leaves a contiguous range.
            if let Err(source) = self.inner.io.retire(segment).await {
                if source.kind() != std::io::ErrorKind::NotFound {
                    return Err(WalError::Io {
                        op: "removing",
                        path: self.inner.io.path(segment),
                        source,
                    });
                }
            }
            let mut st = self.inner.st.borrow_mut();
            st.first_segment = segment.next();
            st.cache.forget_segments_below(segment.next());
            st.stats.segments_removed += 1;
            removed += 1;
            drop(st);
            // Space freed: a preparer the disk refused may go on now.
            self.inner.preparer_wake.notify();
        }
    }
}
