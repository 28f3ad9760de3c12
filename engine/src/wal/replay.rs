//! Replaying everything the WAL holds in one pass: each segment read once,
//! each record checked once, its live entries handed out in disk order. This
//! is how a restarted core rebuilds all of its groups; reading group by group
//! (`read_entries`) would read a record once for every group in it.

use super::batch::EntryRef;
use super::error::WalError;
use super::index::Span;
use super::io::{IoBuf, WalIo};
use super::read::{checked_batch, visit_span};
use super::scan::Image;
use super::state::Wal;
use super::types::{GroupId, LogIndex, SegmentSeq};

impl<I: WalIo> Wal<I> {
    /// Calls `visit` once with every entry the WAL holds and returns how
    /// many there were. Order: by location on disk, so a group's entries
    /// ascend by index within a record but not necessarily across records
    /// (a rewrite puts a group's oldest entries after its newer ones).
    ///
    /// Segments are read whole with buffered reads (right after `open`,
    /// whose scan just read them, they come from the page cache); records
    /// still in the write cache are taken from it.
    pub async fn replay_entries<F>(&self, mut visit: F) -> Result<u64, WalError>
    where
        F: FnMut(EntryRef<'_>),
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
                    visit(e)
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
            .groups
            .iter()
            .flat_map(|(&group, log)| log.spans.iter().map(move |&s| (group, s)))
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
