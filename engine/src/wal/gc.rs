//! Keeping disk use bounded: delete segments that no group needs any more,
//! and when too many remain, copy the live data of the groups pinning the
//! oldest ones forward (a rewrite) so those can go too.

use super::batch::Batch;
use super::error::WalError;
use super::io::WalIo;
use super::state::Wal;
use super::types::{GroupId, LogIndex, SegmentSeq};

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
    /// Entries `first..=last` live in segments `<= cut` (empty when first > last).
    first: LogIndex,
    last: LogIndex,
}

impl<I: WalIo> Wal<I> {
    /// Deletes unneeded segments; with more than `segments_soft_max` left,
    /// first rewrites the groups that pin the oldest ones.
    pub async fn purge(&self) -> Result<PurgeReport, WalError> {
        let mut report = PurgeReport::default();
        if let Some(cut) = self.rewrite_cut() {
            self.rewrite(cut, &mut report).await?;
        }
        report.segments_removed = self.remove_unneeded().await?;
        Ok(report)
    }

    fn rewrite_cut(&self) -> Option<SegmentSeq> {
        let st = self.inner.st.borrow();
        let head = st.writer.head_segment();
        let count = (head.0 + 1).saturating_sub(st.first_segment.0) as usize;
        let keep = (self.inner.opts.segments_soft_max / 2) as u64;
        (count > self.inner.opts.segments_soft_max).then(|| SegmentSeq(head.0 - keep))
    }

    fn pinned(&self, cut: SegmentSeq) -> Vec<Pinned> {
        let st = self.inner.st.borrow();
        let mut out: Vec<Pinned> = st
            .index
            .groups
            .iter()
            .filter(|(_, log)| log.oldest_segment().is_some_and(|s| s <= cut))
            .map(|(&group, log)| {
                let last = log.spans.iter().take_while(|s| s.segment <= cut).last();
                let last = last.map_or(LogIndex(0), |s| s.last());
                Pinned {
                    group,
                    first: log.first_index(),
                    last,
                }
            })
            .collect();
        out.sort_unstable_by_key(|p| p.group);
        out
    }

    async fn rewrite(&self, cut: SegmentSeq, report: &mut PurgeReport) -> Result<(), WalError> {
        let bytes_max = self.inner.opts.write_bytes_max / 2;
        let mut batch = Batch::new();
        for pinned in self.pinned(cut) {
            self.copy_group(&pinned, cut, &mut batch).await?;
            report.groups_rewritten += 1;
            if batch.payload_bytes() >= bytes_max {
                report.entries_rewritten += batch.entry_count() as u64;
                self.append_rewrite(&mut batch, cut).await?;
            }
        }
        report.entries_rewritten += batch.entry_count() as u64;
        self.append_rewrite(&mut batch, cut).await
    }

    async fn append_rewrite(&self, batch: &mut Batch, cut: SegmentSeq) -> Result<(), WalError> {
        if batch.is_empty() {
            return Ok(());
        }
        batch.set_rewrite_cut(cut.0);
        self.append(batch).await?;
        batch.clear();
        Ok(())
    }

    async fn copy_group(
        &self,
        p: &Pinned,
        cut: SegmentSeq,
        batch: &mut Batch,
    ) -> Result<(), WalError> {
        if p.first <= p.last {
            let hi = LogIndex(p.last.0 + 1);
            self.read_entries(p.group, p.first, hi, |e| {
                batch.push_entry(e.group, e.term, e.index, e.payload)
            })
            .await?;
        }
        let st = self.inner.st.borrow();
        let Some(log) = st.index.groups.get(&p.group) else {
            return Ok(());
        };
        if let Some((state, seg)) = log.hard_state {
            if seg <= cut {
                batch.set_hard_state(p.group, state);
            }
        }
        if log.compact_segment.is_some_and(|s| s <= cut) {
            batch.compact(p.group, log.compacted);
        }
        Ok(())
    }

    /// The oldest segment still needed by a group or by a write in flight.
    fn needed_from(&self) -> SegmentSeq {
        let st = self.inner.st.borrow();
        let groups = st
            .index
            .groups
            .values()
            .filter_map(|g| g.oldest_segment())
            .min();
        let writing = st.in_flight.front().map(|f| f.write.segment);
        [groups, writing, Some(st.writer.head_segment())]
            .into_iter()
            .flatten()
            .min()
            .expect("head is Some")
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
        }
    }
}
