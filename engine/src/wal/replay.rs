//! Replaying everything the WAL holds in one pass, which is how a restarted
//! core rebuilds all of its groups (reading group by group with
//! `read_entries` would read a record once for every group in it).
//!
//! The open scan can keep the payloads of the records it checks (`Kept`, up
//! to a byte budget) as slices of the segment images it read, so keeping
//! copies nothing; the replay hands out slices of those and reads nothing
//! again. Records it did not keep (over the budget, or written after open)
//! are read once each, whole segments at a time, and their CRC and archive
//! checked again.

use std::collections::HashMap;

use bytes::Bytes;

use super::batch::ArchivedBatch;
use super::error::WalError;
use super::index::Span;
use super::io::{IoBuf, WalIo};
use super::read::{checked_batch, corrupt_at, visit_span};
use super::scan::{Image, SharedImage};
use super::state::Wal;
use super::types::{GroupId, LogIndex, RecordLoc, SegmentSeq, Term};

/// An entry handed out by `Wal::replay_entries`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplayedEntry {
    pub group: GroupId,
    pub term: Term,
    pub index: LogIndex,
    /// Shares one allocation with other entries while any of them lives: a
    /// caller that keeps a few entries for long keeps the whole segment
    /// image they came from (kept by the open scan), or their record's
    /// payloads (read again).
    pub payload: Bytes,
}

/// The entry payloads of the records the open scan kept: slices of the
/// segment images it read, not copies.
#[derive(Default)]
pub struct Kept {
    records: HashMap<RecordLoc, KeptRecord>,
    /// The image the last kept record lies in.
    image: Option<SharedImage>,
    /// Bytes of the images kept (a kept record keeps its whole image).
    bytes: usize,
    bytes_max: usize,
}

/// One record's payloads back to back; slot `i` ends at `ends[i]`.
struct KeptRecord {
    payloads: Bytes,
    ends: Vec<u32>,
}

impl Kept {
    /// Keeps records while the images they lie in total at most `bytes_max`.
    pub fn with_budget(bytes_max: usize) -> Kept {
        Kept {
            bytes_max,
            ..Kept::default()
        }
    }

    /// Bytes of segment images kept.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Keeps the payloads of the checked record at `loc`, which lies in
    /// `image`, if the budget allows; records without entries are not kept.
    pub(super) fn keep(&mut self, loc: RecordLoc, batch: &ArchivedBatch, image: &SharedImage) {
        if batch.entry_count() == 0 {
            return;
        }
        if !self.image.as_ref().is_some_and(|kept| kept.same(image)) {
            if self.bytes + image.len() > self.bytes_max {
                return;
            }
            self.bytes += image.len();
            self.image = Some(image.clone());
        }
        let record = KeptRecord {
            payloads: image.share(batch.payloads()),
            ends: batch.payload_ends().collect(),
        };
        self.records.insert(loc, record);
    }
}

impl KeptRecord {
    /// The payload of `slot`, or `None` if the record has no such slot.
    fn payload(&self, slot: usize) -> Option<Bytes> {
        let end = *self.ends.get(slot)? as usize;
        let start = slot.checked_sub(1).map_or(0, |s| self.ends[s] as usize);
        Some(self.payloads.slice(start..end))
    }
}

impl<I: WalIo> Wal<I> {
    /// Calls `visit` once with every entry the WAL holds and returns how
    /// many there were, taking payloads from `kept` (see `open_keeping`)
    /// where it has them. Order: by location on disk, so a group's entries
    /// ascend by index within a record but not necessarily across records
    /// (a rewrite puts a group's oldest entries after its newer ones).
    pub async fn replay_entries<F>(&self, kept: Kept, mut visit: F) -> Result<u64, WalError>
    where
        F: FnMut(ReplayedEntry),
    {
        let spans = self.spans_by_location();
        let mut image = Image::new();
        let mut loaded: Option<SegmentSeq> = None;
        let mut visited = 0u64;
        let mut rest = &spans[..];
        while let Some((_, first)) = rest.first() {
            let same_record = rest
                .iter()
                .take_while(|(_, s)| s.loc() == first.loc())
                .count();
            let (record, after) = rest.split_at(same_record);
            rest = after;
            if let Some(k) = kept.records.get(&first.loc()) {
                for (group, span) in record {
                    visited += visit_kept(k, *group, span, &mut visit)?;
                }
                continue;
            }
            let cached = self
                .inner
                .st
                .borrow()
                .cache
                .find(first.loc(), u64::from(first.record_bytes));
            let (bytes, at) = match &cached {
                Some((buf, at)) => (buf.bytes(), *at),
                None => {
                    if loaded != Some(first.segment) {
                        self.load_segment(first.segment, &mut image)?;
                        loaded = Some(first.segment);
                    }
                    (&image[..], first.offset_bytes as usize)
                }
            };
            let batch = checked_batch(bytes, at, first)?;
            for (group, span) in record {
                let end = LogIndex(span.last().0 + 1);
                visit_span(batch, *group, span, span.first, end, &mut |e| {
                    visited += 1;
                    visit(ReplayedEntry {
                        group: e.group,
                        term: e.term,
                        index: e.index,
                        payload: Bytes::copy_from_slice(e.payload),
                    })
                })?;
            }
        }
        Ok(visited)
    }

    /// Every live span of every group, ordered by where its record sits.
    fn spans_by_location(&self) -> Vec<(GroupId, Span)> {
        let st = self.inner.st.borrow();
        let mut spans: Vec<(GroupId, Span)> = st
            .index
            .logs()
            .flat_map(|(group, log)| log.spans.iter().map(move |&s| (group, s)))
            .collect();
        spans.sort_unstable_by_key(|(_, s)| (s.segment, s.offset_bytes, s.slot));
        spans
    }

    fn load_segment(&self, segment: SegmentSeq, image: &mut Image) -> Result<(), WalError> {
        self.inner
            .io
            .read(segment, image)
            .map_err(|source| WalError::Io {
                op: "replaying",
                path: self.inner.io.path(segment),
                source,
            })
    }
}

/// The entries of `span` from a kept record. The index was built from the
/// same checked batch, so group, index and term come from the span.
fn visit_kept<F>(k: &KeptRecord, group: GroupId, span: &Span, visit: &mut F) -> Result<u64, WalError>
where
    F: FnMut(ReplayedEntry),
{
    for i in 0..span.count {
        let slot = (span.slot + i) as usize;
        let Some(payload) = k.payload(slot) else {
            return Err(corrupt_at(span, format!("slot {slot} beyond the batch")));
        };
        visit(ReplayedEntry {
            group,
            term: span.term,
            index: LogIndex(span.first.0 + u64::from(i)),
            payload,
        });
    }
    Ok(u64::from(span.count))
}
