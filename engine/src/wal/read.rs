//! Reading entries back: from the cache of recent writes when possible, else
//! from the segment (one aligned read per record, CRC-checked). Either way the
//! archived batch is accessed in place; only the caller decides to copy.

use std::rc::Rc;

use super::batch::{ArchivedBatch, EntryRef};
use super::error::WalError;
use super::format::record_at;
use super::index::Span;
use super::io::{IoBuf, WalIo};
use super::limits::{align_down, align_up, BLOCK_BYTES};
use super::state::Wal;
use super::types::{GroupId, LogIndex, Term};

/// An entry copied out of the WAL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub group: GroupId,
    pub term: Term,
    pub index: LogIndex,
    pub payload: Vec<u8>,
}

/// Bytes of one record, wherever they came from, with the record's offset.
enum RecordBytes<I: WalIo> {
    Cached(Rc<I::Buf>, usize),
    Read(I::ReadBuf, usize),
}

impl<I: WalIo> RecordBytes<I> {
    fn image(&self) -> (&[u8], usize) {
        match self {
            RecordBytes::Cached(buf, at) => (buf.bytes(), *at),
            RecordBytes::Read(buf, at) => (buf, *at),
        }
    }
}

/// The error for a record or slot that does not hold what the index says.
pub(super) fn corrupt_at(span: &Span, what: String) -> WalError {
    WalError::CorruptRead {
        segment: span.segment,
        offset_bytes: u64::from(span.offset_bytes),
        what,
    }
}

/// The batch of the record `span` points at, which starts at `at` in
/// `image`, after checking its CRC and archive.
pub(super) fn checked_batch<'a>(
    image: &'a [u8],
    at: usize,
    span: &Span,
) -> Result<&'a ArchivedBatch, WalError> {
    let record = record_at(image, at as u64).map_err(|e| corrupt_at(span, e.to_string()))?;
    record.batch().map_err(|e| corrupt_at(span, e.to_string()))
}

/// Calls `visit` with the entries of `group`'s `span` in `lo..hi`, checking
/// that each slot holds the group and index the index expects.
pub(super) fn visit_span<F>(
    batch: &ArchivedBatch,
    group: GroupId,
    span: &Span,
    lo: LogIndex,
    hi: LogIndex,
    visit: &mut F,
) -> Result<(), WalError>
where
    F: FnMut(EntryRef<'_>),
{
    let from = span.first.max(lo);
    let to = LogIndex(span.last().0.min(hi.0 - 1));
    for index in from.0..=to.0 {
        let slot = (span.slot as u64 + index - span.first.0) as usize;
        if slot >= batch.entry_count() {
            return Err(corrupt_at(span, format!("slot {slot} beyond the batch")));
        }
        let entry = batch.entry(slot);
        if entry.group != group || entry.index.0 != index {
            return Err(corrupt_at(
                span,
                format!("slot {slot} holds {}/{}", entry.group, entry.index),
            ));
        }
        visit(entry);
    }
    Ok(())
}

impl<I: WalIo> Wal<I> {
    /// Calls `visit` with each entry of `group` in `lo..hi`, in order.
    pub async fn read_entries<F>(
        &self,
        group: GroupId,
        lo: LogIndex,
        hi: LogIndex,
        mut visit: F,
    ) -> Result<(), WalError>
    where
        F: FnMut(EntryRef<'_>),
    {
        if lo >= hi {
            return Ok(());
        }
        for span in self.spans_covering(group, lo, hi)? {
            let bytes = self.record_bytes(&span).await?;
            let (image, at) = bytes.image();
            let batch = checked_batch(image, at, &span)?;
            visit_span(batch, group, &span, lo, hi, &mut visit)?;
        }
        Ok(())
    }

    /// The entries of `group` in `lo..hi`, copied.
    pub async fn entries(
        &self,
        group: GroupId,
        lo: LogIndex,
        hi: LogIndex,
    ) -> Result<Vec<Entry>, WalError> {
        let mut out = Vec::with_capacity((hi.0.saturating_sub(lo.0)) as usize);
        self.read_entries(group, lo, hi, |e| {
            out.push(Entry {
                group: e.group,
                term: e.term,
                index: e.index,
                payload: e.payload.to_vec(),
            });
        })
        .await?;
        Ok(out)
    }

    fn spans_covering(
        &self,
        group: GroupId,
        lo: LogIndex,
        hi: LogIndex,
    ) -> Result<Vec<Span>, WalError> {
        let st = self.inner.st.borrow();
        let log = st.index.log(group);
        let (first, last) = log.map_or((LogIndex(1), LogIndex(0)), |l| {
            (l.first_index(), l.last_index())
        });
        if lo < first || hi.0 > last.0 + 1 {
            return Err(WalError::Unavailable {
                group,
                lo,
                hi,
                first,
                last,
            });
        }
        let log = log.expect("a non-empty range implies the group");
        let start = log.spans.partition_point(|s| s.last() < lo);
        Ok(log
            .spans
            .range(start..)
            .take_while(|s| s.first < hi)
            .copied()
            .collect())
    }

    async fn record_bytes(&self, span: &Span) -> Result<RecordBytes<I>, WalError> {
        let (loc, len) = (span.loc(), u64::from(span.record_bytes));
        if let Some((buf, at)) = self.inner.st.borrow().cache.find(loc, len) {
            return Ok(RecordBytes::Cached(buf, at));
        }
        self.inner.st.borrow_mut().stats.cache_misses += 1;
        let start = align_down(loc.offset_bytes, BLOCK_BYTES);
        let end = align_up(loc.offset_bytes + len, BLOCK_BYTES);
        let read = self
            .inner
            .io
            .read_at(loc.segment, start, (end - start) as usize)
            .await;
        let buf = read.map_err(|source| WalError::Io {
            op: "reading",
            path: self.inner.io.path(loc.segment),
            source,
        })?;
        Ok(RecordBytes::Read(buf, (loc.offset_bytes - start) as usize))
    }
}
