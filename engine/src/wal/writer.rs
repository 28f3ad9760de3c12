//! Packing records into write buffers: each append encodes its batch as a
//! record into the pending buffer; a buffer is sealed (padded to the block
//! boundary) when the write pipeline takes it, or when the next record does
//! not fit, which is also where the log rolls to the next segment.

use std::collections::VecDeque;
use std::rc::Rc;

use super::batch::Batch;
use super::error::WalError;
use super::format::{encode_record, record_len_bound, set_pad, Encoded, SegmentHeader};
use super::io::IoBuf;
use super::limits::{align_up, BLOCK_BYTES, SEGMENT_HEADER_BYTES, WRITE_BUFFER_BYTES_MIN};
use super::types::{RecordSeq, SegmentSeq};

/// A buffer being filled. Invariant: `len <= buf.bytes().len()` and
/// `file_offset + len <= segment_size_bytes`.
struct Pending<B> {
    buf: B,
    segment: SegmentSeq,
    file_offset: u64,
    len: usize,
    first_record_at: usize,
    first_seq: RecordSeq,
    last: Option<(usize, Encoded)>,
}

/// A buffer ready to be written: block-aligned offset and length.
pub struct Sealed<B> {
    pub buf: Rc<B>,
    pub segment: SegmentSeq,
    pub file_offset: u64,
    pub first_record_at: usize,
    pub first_seq: RecordSeq,
    pub last_seq: RecordSeq,
}

/// Where the next buffer starts, and the bytes of a partly used block there
/// that the next write must carry again (after recovery).
pub struct Head {
    pub segment: SegmentSeq,
    pub file_offset: u64,
    pub prefix: Vec<u8>,
}

pub struct Writer<B> {
    segment_size_bytes: u64,
    write_bytes_max: usize,
    pending: Option<Pending<B>>,
    sealed: VecDeque<Sealed<B>>,
    head: Head,
    next_seq: RecordSeq,
    last_write_bytes: usize,
}

impl<B: IoBuf> Writer<B> {
    pub fn new(
        segment_size_bytes: u64,
        write_bytes_max: usize,
        head: Head,
        next_seq: RecordSeq,
    ) -> Self {
        assert!(head.file_offset % BLOCK_BYTES == 0 && head.prefix.len() < BLOCK_BYTES as usize);
        Writer {
            segment_size_bytes,
            write_bytes_max,
            pending: None,
            sealed: VecDeque::new(),
            head,
            next_seq,
            last_write_bytes: 0,
        }
    }

    pub fn next_seq(&self) -> RecordSeq {
        self.next_seq
    }

    /// The segment the next buffer goes to (or is going to).
    pub fn head_segment(&self) -> SegmentSeq {
        self.pending
            .as_ref()
            .map_or(self.head.segment, |p| p.segment)
    }

    /// Encodes `batch` as the next record; returns its seq.
    pub fn encode(
        &mut self,
        batch: &Batch,
        synced: RecordSeq,
        alloc: impl FnOnce(usize) -> B,
    ) -> Result<RecordSeq, WalError> {
        let bound = record_len_bound(batch);
        let room = self.segment_size_bytes - SEGMENT_HEADER_BYTES;
        if bound as u64 > room {
            let segment_size_bytes = self.segment_size_bytes;
            return Err(WalError::RecordTooLarge {
                bytes_bound: bound as u64,
                segment_size_bytes,
            });
        }
        if !self.pending_fits(bound) {
            self.seal();
            self.start_pending(bound, alloc);
        }
        let seq = self.next_seq;
        let p = self
            .pending
            .as_mut()
            .expect("a pending buffer was just ensured");
        let out = &mut p.buf.bytes_mut()[p.len..p.len + bound];
        let encoded = encode_record(out, seq, synced, batch);
        if p.last.is_none() {
            p.first_seq = seq;
        }
        p.last = Some((p.len, encoded));
        p.len += encoded.header.total_len() as usize;
        assert!(p.file_offset + p.len as u64 <= self.segment_size_bytes);
        self.next_seq = seq.next();
        Ok(seq)
    }

    fn pending_fits(&self, bound: usize) -> bool {
        self.pending.as_ref().is_some_and(|p| {
            p.len + bound <= p.buf.bytes().len()
                && p.file_offset + (p.len + bound) as u64 <= self.segment_size_bytes
        })
    }

    fn start_pending(&mut self, bound: usize, alloc: impl FnOnce(usize) -> B) {
        let head = &mut self.head;
        let start = |h: &Head| match h.file_offset {
            0 => SEGMENT_HEADER_BYTES,
            offset => offset + h.prefix.len() as u64,
        };
        if start(head) + bound as u64 > self.segment_size_bytes {
            *head = Head {
                segment: head.segment.next(),
                file_offset: 0,
                prefix: Vec::new(),
            };
        }
        assert!(start(head) + bound as u64 <= self.segment_size_bytes);
        let header = if head.file_offset == 0 {
            SEGMENT_HEADER_BYTES as usize
        } else {
            0
        };
        let need = align_up((header + head.prefix.len() + bound) as u64, BLOCK_BYTES) as usize;
        let adaptive = align_up(2 * self.last_write_bytes as u64, BLOCK_BYTES) as usize;
        let capacity = adaptive
            .clamp(WRITE_BUFFER_BYTES_MIN, self.write_bytes_max)
            .max(need);
        let room = (self.segment_size_bytes - head.file_offset) as usize;
        let mut buf = alloc(capacity.min(room));
        let len = if header > 0 {
            let h = SegmentHeader {
                segment: head.segment,
                segment_size_bytes: self.segment_size_bytes,
                first_record_seq: self.next_seq,
            };
            h.encode(buf.bytes_mut());
            header
        } else {
            buf.bytes_mut()[..head.prefix.len()].copy_from_slice(&head.prefix);
            head.prefix.len()
        };
        self.pending = Some(Pending {
            buf,
            segment: head.segment,
            file_offset: head.file_offset,
            len,
            first_record_at: len,
            first_seq: self.next_seq,
            last: None,
        });
    }

    /// Pads the pending buffer to the block boundary and queues it.
    pub fn seal(&mut self) {
        let Some(mut p) = self.pending.take() else {
            return;
        };
        let Some((last_at, mut encoded)) = p.last else {
            return;
        };
        let aligned = align_up(p.len as u64, BLOCK_BYTES) as usize;
        let pad = encoded.header.pad_len + (aligned - p.len) as u32;
        set_pad(&mut p.buf.bytes_mut()[last_at..], &mut encoded, pad);
        p.buf.trim(aligned);
        self.head = Head {
            segment: p.segment,
            file_offset: p.file_offset + aligned as u64,
            prefix: Vec::new(),
        };
        self.last_write_bytes = aligned;
        self.sealed.push_back(Sealed {
            buf: Rc::new(p.buf),
            segment: p.segment,
            file_offset: p.file_offset,
            first_record_at: p.first_record_at,
            first_seq: p.first_seq,
            last_seq: encoded.header.seq,
        });
    }

    /// The next buffer to write: a sealed one, else the pending one sealed now.
    pub fn take(&mut self) -> Option<Sealed<B>> {
        if self.sealed.is_empty() {
            self.seal();
        }
        self.sealed.pop_front()
    }

    /// Whether records are encoded but not yet taken for writing.
    pub fn has_unwritten(&self) -> bool {
        !self.sealed.is_empty() || self.pending.as_ref().is_some_and(|p| p.last.is_some())
    }
}
