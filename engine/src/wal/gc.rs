//! Keeping disk use bounded: delete segments that no group needs any more,
//! and when too many remain, copy the live data of the groups pinning the
//! oldest ones forward (a rewrite) so those can go too.
//!
//! A rewrite record must describe its groups exactly as they are at its place
//! in the log. So the rewrite starts once everything submitted before it is
//! durable, snapshots its groups, and leaves out any group that a batch
//! submitted meanwhile touched (it is retried by the next purge).

use super::batch::Batch;
use super::error::WalError;
use super::io::WalIo;
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
    /// Entries `first..=last` live in segments `<= cut` (none when first > last).
    first: LogIndex,
    last: LogIndex,
    hard_state: Option<HardState>,
    compacted: Option<LogIndex>,
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
        (count > self.inner.opts.segments_soft_max && st.rewriting.is_none()).then(|| SegmentSeq(head.0 - keep))
    }

    /// Snapshots the groups pinning segments `<= cut` and starts watching them.
    fn pin(&self, cut: SegmentSeq) -> Vec<Pinned> {
        let mut st = self.inner.st.borrow_mut();
        let mut out: Vec<Pinned> = st
            .index
            .groups
            .iter()
            .filter(|(_, log)| log.oldest_segment().is_some_and(|s| s <= cut))
            .map(|(&group, log)| {
                let last = log.spans.iter().take_while(|s| s.segment <= cut).last();
                Pinned {
                    group,
                    first: log.first_index(),
                    last: last.map_or(LogIndex(0), |s| s.last()),
                    hard_state: log.hard_state.filter(|(_, s)| *s <= cut).map(|(h, _)| h),
                    compacted: log.compact_segment.filter(|s| *s <= cut).map(|_| log.compacted),
                }
            })
            .collect();
        out.sort_unstable_by_key(|p| p.group);
        st.rewriting = Some(out.iter().map(|p| (p.group, false)).collect());
        out
    }

    async fn rewrite(&self, cut: SegmentSeq, report: &mut PurgeReport) -> Result<(), WalError> {
        let before = RecordSeq(self.inner.st.borrow().writer.next_seq().0 - 1);
        self.wait_durable(before).await?;
        let bytes_max = self.inner.opts.write_bytes_max / 2;
        let mut chunk: Vec<(Pinned, Vec<Entry>)> = Vec::new();
        let mut chunk_bytes = 0;
        let mut last = None;
        for pinned in self.pin(cut) {
            let copies = if pinned.first <= pinned.last {
                let hi = LogIndex(pinned.last.0 + 1);
                match self.entries(pinned.group, pinned.first, hi).await {
                    Ok(copies) => copies,
                    Err(_) if self.touched(pinned.group) => continue,
                    Err(e) => return Err(e),
                }
            } else {
                Vec::new()
            };
            chunk_bytes += copies.iter().map(|e| e.payload.len()).sum::<usize>();
            chunk.push((pinned, copies));
            if chunk_bytes >= bytes_max {
                last = self.submit_rewrite(&mut chunk, cut, report)?.or(last);
                chunk_bytes = 0;
            }
        }
        last = self.submit_rewrite(&mut chunk, cut, report)?.or(last);
        match last {
            Some(seq) => self.wait_durable(seq).await,
            None => Ok(()),
        }
    }

    fn touched(&self, group: GroupId) -> bool {
        let st = self.inner.st.borrow();
        st.rewriting.as_ref().and_then(|r| r.get(&group).copied()).unwrap_or(true)
    }

    /// Submits the untouched groups of `chunk` as one rewrite record.
    fn submit_rewrite(
        &self,
        chunk: &mut Vec<(Pinned, Vec<Entry>)>,
        cut: SegmentSeq,
        report: &mut PurgeReport,
    ) -> Result<Option<RecordSeq>, WalError> {
        let mut batch = Batch::new();
        for (p, copies) in chunk.drain(..) {
            if self.touched(p.group) {
                continue;
            }
            for e in &copies {
                batch.push_entry(e.group, e.term, e.index, &e.payload);
            }
            if let Some(state) = p.hard_state {
                batch.set_hard_state(p.group, state);
            }
            if let Some(index) = p.compacted {
                batch.compact(p.group, index);
            }
            report.groups_rewritten += 1;
            report.entries_rewritten += copies.len() as u64;
        }
        if batch.is_empty() {
            return Ok(None);
        }
        batch.set_rewrite_cut(cut.0);
        let rewriting = self.inner.st.borrow_mut().rewriting.take();
        let seq = self.submit(&batch);
        self.inner.st.borrow_mut().rewriting = rewriting;
        seq.map(Some)
    }

    /// The oldest segment still needed by a group or by a write in flight.
    fn needed_from(&self) -> SegmentSeq {
        let st = self.inner.st.borrow();
        let groups = st.index.groups.values().filter_map(|g| g.oldest_segment()).min();
        let writing = st.in_flight.front().map(|f| f.write.segment);
        let head = st.writer.head_segment();
        [groups, writing].into_iter().flatten().fold(head, SegmentSeq::min)
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
            if let Err(source) = self.inner.io.remove(segment).await {
                if source.kind() != std::io::ErrorKind::NotFound {
                    return Err(WalError::Io { op: "removing", path: self.inner.io.path(segment), source });
                }
            }
            let mut st = self.inner.st.borrow_mut();
            st.first_segment = segment.next();
            st.cache.forget_segments_below(segment.next());
            st.stats.segments_removed += 1;
            removed += 1;
        }
    }
}
