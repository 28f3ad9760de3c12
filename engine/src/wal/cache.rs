//! Recent writes kept in memory, bounded in bytes, so a leader serves its
//! followers from the buffers it just wrote instead of reading the disk.

use std::collections::VecDeque;
use std::rc::Rc;

use super::io::IoBuf;
use super::types::{RecordLoc, SegmentSeq};

struct Cached<B> {
    segment: SegmentSeq,
    file_offset: u64,
    buf: Rc<B>,
}

/// Invariant: entries ascend by (segment, file_offset); `bytes` is the sum of
/// their lengths and stays at or below `bytes_max` after each insert.
pub struct Cache<B> {
    writes: VecDeque<Cached<B>>,
    bytes: usize,
    bytes_max: usize,
}

impl<B: IoBuf> Cache<B> {
    pub fn new(bytes_max: usize) -> Self {
        Cache {
            writes: VecDeque::new(),
            bytes: 0,
            bytes_max,
        }
    }

    pub fn insert(&mut self, segment: SegmentSeq, file_offset: u64, buf: Rc<B>) {
        if let Some(last) = self.writes.back() {
            assert!((last.segment, last.file_offset) < (segment, file_offset));
        }
        self.bytes += buf.bytes().len();
        self.writes.push_back(Cached {
            segment,
            file_offset,
            buf,
        });
        while self.bytes > self.bytes_max {
            let old = self.writes.pop_front().expect("bytes > 0 implies an entry");
            self.bytes -= old.buf.bytes().len();
        }
    }

    /// The buffer holding the record at `loc` and the record's offset in it.
    pub fn find(&self, loc: RecordLoc, record_bytes: u64) -> Option<(Rc<B>, usize)> {
        let key = (loc.segment, loc.offset_bytes);
        let after = self
            .writes
            .partition_point(|c| (c.segment, c.file_offset) <= key);
        let c = self.writes.get(after.checked_sub(1)?)?;
        let start = loc.offset_bytes.checked_sub(c.file_offset)?;
        let fits = c.segment == loc.segment && start + record_bytes <= c.buf.bytes().len() as u64;
        fits.then(|| (c.buf.clone(), start as usize))
    }

    pub fn forget_segments_below(&mut self, segment: SegmentSeq) {
        while self.writes.front().is_some_and(|c| c.segment < segment) {
            let old = self.writes.pop_front().expect("checked");
            self.bytes -= old.buf.bytes().len();
        }
    }
}
