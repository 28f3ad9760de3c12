//! The on-disk format, defined once: segment file names, the segment header and
//! the record header (see docs/wal-format.md). The engine, the bench and
//! `myriad-log` all read and write through these functions.

use rkyv::ser::{Positional, Writer};

use super::batch::{access_batch, ArchivedBatch, Batch, BatchDefect};
use super::limits::align_up;
use super::limits::{RECORD_ALIGN_BYTES, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES};
use super::types::{RecordSeq, SegmentSeq};

pub const SEGMENT_MAGIC: [u8; 8] = *b"MYRIADWS";
pub const RECORD_MAGIC: [u8; 4] = *b"MYRL";
pub const FORMAT_VERSION: u32 = 2;
const SEGMENT_SUFFIX: &str = ".wal";

/// `00000000000000000042.wal` for segment 42: names sort in sequence order.
pub fn segment_file_name(segment: SegmentSeq) -> String {
    format!("{:020}{SEGMENT_SUFFIX}", segment.0)
}

/// The segment a file name denotes, if it is a segment file.
pub fn parse_segment_file_name(name: &str) -> Option<SegmentSeq> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(SegmentSeq)
}

fn le_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn le_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

/// The first 64 bytes of a segment, written with its first record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    pub segment: SegmentSeq,
    pub segment_size_bytes: u64,
    pub first_record_seq: RecordSeq,
}

/// Why bytes are not a valid segment header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SegmentHeaderDefect {
    #[error("segment header is unwritten or not a Myriad WAL segment (bad magic)")]
    Magic,
    #[error("segment header checksum mismatch")]
    Crc,
    #[error("unsupported WAL format version {0}")]
    Version(u32),
}

impl SegmentHeader {
    pub fn encode(&self, out: &mut [u8]) {
        let out = &mut out[..SEGMENT_HEADER_BYTES as usize];
        out.fill(0);
        out[0..8].copy_from_slice(&SEGMENT_MAGIC);
        out[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        out[16..24].copy_from_slice(&self.segment.0.to_le_bytes());
        out[24..32].copy_from_slice(&self.segment_size_bytes.to_le_bytes());
        out[32..40].copy_from_slice(&self.first_record_seq.0.to_le_bytes());
        let crc = crc32c::crc32c(&out[16..]);
        out[12..16].copy_from_slice(&crc.to_le_bytes());
    }

    pub fn decode(bytes: &[u8]) -> Result<SegmentHeader, SegmentHeaderDefect> {
        let h = bytes
            .get(..SEGMENT_HEADER_BYTES as usize)
            .ok_or(SegmentHeaderDefect::Magic)?;
        if h[0..8] != SEGMENT_MAGIC {
            return Err(SegmentHeaderDefect::Magic);
        }
        if crc32c::crc32c(&h[16..]) != le_u32(h, 12) {
            return Err(SegmentHeaderDefect::Crc);
        }
        let version = le_u32(h, 8);
        if version != FORMAT_VERSION {
            return Err(SegmentHeaderDefect::Version(version));
        }
        Ok(SegmentHeader {
            segment: SegmentSeq(le_u64(h, 16)),
            segment_size_bytes: le_u64(h, 24),
            first_record_seq: RecordSeq(le_u64(h, 32)),
        })
    }
}

/// The fixed 32 bytes before each record body.
///
/// `synced_seq`: every record up to it had been reported durable before this
/// record was written; recovery uses it to tell a torn tail from lost data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    pub seq: RecordSeq,
    pub body_len: u32,
    pub pad_len: u32,
    pub synced_seq: RecordSeq,
}

impl RecordHeader {
    /// Bytes from this record's header to the next record's.
    pub fn total_len(&self) -> u64 {
        RECORD_HEADER_BYTES + u64::from(self.body_len) + u64::from(self.pad_len)
    }

    /// Writes the header into `out[..32]` with the CRC of `body_crc` + fields.
    fn encode(&self, out: &mut [u8], body_crc: u32) {
        out[0..4].copy_from_slice(&RECORD_MAGIC);
        out[8..16].copy_from_slice(&self.seq.0.to_le_bytes());
        out[16..20].copy_from_slice(&self.body_len.to_le_bytes());
        out[20..24].copy_from_slice(&self.pad_len.to_le_bytes());
        out[24..32].copy_from_slice(&self.synced_seq.0.to_le_bytes());
        let crc = crc32c::crc32c_append(body_crc, &out[8..32]);
        out[4..8].copy_from_slice(&crc.to_le_bytes());
    }

    fn decode_unchecked(h: &[u8]) -> RecordHeader {
        RecordHeader {
            seq: RecordSeq(le_u64(h, 8)),
            body_len: le_u32(h, 16),
            pad_len: le_u32(h, 20),
            synced_seq: RecordSeq(le_u64(h, 24)),
        }
    }
}

/// Why the bytes at an offset are not a valid record.
#[derive(Debug, thiserror::Error)]
pub enum RecordDefect {
    #[error("no record header (bad magic)")]
    Magic,
    #[error("record length {0} runs past the end of the segment")]
    Length(u64),
    #[error("record checksum mismatch")]
    Crc,
    #[error("record misaligned: pad length {0}")]
    Misaligned(u32),
    #[error("record body: {0}")]
    Body(#[from] BatchDefect),
}

/// A record found in a segment image; `body` points into that image.
#[derive(Clone, Copy, Debug)]
pub struct Record<'a> {
    pub offset_bytes: u64,
    pub header: RecordHeader,
    pub body: &'a [u8],
}

impl<'a> Record<'a> {
    pub fn next_offset(&self) -> u64 {
        self.offset_bytes + self.header.total_len()
    }

    /// The archived batch in place, validated with bytecheck.
    pub fn batch(&self) -> Result<&'a ArchivedBatch, BatchDefect> {
        access_batch(self.body)
    }
}

/// Reads the record at `offset` of a segment image: magic, bounds, CRC. The
/// image must start at a 16-byte-aligned address. Never panics on bad bytes.
pub fn record_at(image: &[u8], offset: u64) -> Result<Record<'_>, RecordDefect> {
    let start = usize::try_from(offset).map_err(|_| RecordDefect::Length(offset))?;
    let h = image
        .get(start..start + RECORD_HEADER_BYTES as usize)
        .ok_or(RecordDefect::Magic)?;
    if h[0..4] != RECORD_MAGIC {
        return Err(RecordDefect::Magic);
    }
    let header = RecordHeader::decode_unchecked(h);
    let end = offset + header.total_len();
    if end > image.len() as u64 {
        return Err(RecordDefect::Length(header.total_len()));
    }
    let body_start = start + RECORD_HEADER_BYTES as usize;
    let body = &image[body_start..body_start + header.body_len as usize];
    let crc = crc32c::crc32c_append(crc32c::crc32c(body), &h[8..32]);
    if crc != le_u32(h, 4) {
        return Err(RecordDefect::Crc);
    }
    if end % RECORD_ALIGN_BYTES != 0 {
        return Err(RecordDefect::Misaligned(header.pad_len));
    }
    Ok(Record {
        offset_bytes: offset,
        header,
        body,
    })
}

/// The header and archived batch of a record that `encode_record` wrote at
/// `offset` of `image`, read back without checking CRC or archive again:
/// the index applies each record it writes, and checking what it encoded a
/// moment ago would cost a second pass over every byte.
///
/// # Safety
///
/// `image` must start at a 16-byte-aligned address, and at `offset` hold a
/// record as `encode_record` (and `set_pad`) left it, unchanged since.
pub unsafe fn encoded_record_at(image: &[u8], offset: u64) -> (RecordHeader, &ArchivedBatch) {
    let start = offset as usize;
    let h = &image[start..start + RECORD_HEADER_BYTES as usize];
    assert!(
        h[0..4] == RECORD_MAGIC,
        "a record we encoded starts with its magic"
    );
    let header = RecordHeader::decode_unchecked(h);
    let body_start = start + RECORD_HEADER_BYTES as usize;
    let body = &image[body_start..body_start + header.body_len as usize];
    assert!(body.as_ptr() as usize % RECORD_ALIGN_BYTES as usize == 0);
    debug_assert!(record_at(image, offset).is_ok() && access_batch(body).is_ok());
    // SAFETY: the caller guarantees `body` is an archive `encode_record`
    // serialized from a `Batch` and left unchanged, at an aligned address.
    let batch = unsafe { rkyv::access_unchecked::<ArchivedBatch>(body) };
    (header, batch)
}

/// Bytes the CRC of a body being written trails its end by at most: it is
/// folded in while they are still in the cache, instead of in a second pass
/// over the whole record.
const CRC_TRAIL_BYTES: usize = 64 << 10;

/// An rkyv writer into a fixed slice; errors instead of growing. rkyv only
/// appends, so the CRC of `out[..crc_pos]` is kept as it goes.
/// Invariant: `crc_pos <= pos` and `pos - crc_pos < CRC_TRAIL_BYTES`.
struct SliceWriter<'a> {
    out: &'a mut [u8],
    pos: usize,
    crc: u32,
    crc_pos: usize,
}

impl SliceWriter<'_> {
    /// The CRC of everything written.
    fn crc(&self) -> u32 {
        crc32c::crc32c_append(self.crc, &self.out[self.crc_pos..self.pos])
    }
}

impl Positional for SliceWriter<'_> {
    fn pos(&self) -> usize {
        self.pos
    }
}

impl<E: rkyv::rancor::Source> Writer<E> for SliceWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), E> {
        if self.out.len() - self.pos < bytes.len() {
            return Err(E::new(BufferFull));
        }
        for piece in bytes.chunks(CRC_TRAIL_BYTES) {
            let end = self.pos + piece.len();
            self.out[self.pos..end].copy_from_slice(piece);
            self.pos = end;
            if self.pos - self.crc_pos >= CRC_TRAIL_BYTES {
                self.crc = crc32c::crc32c_append(self.crc, &self.out[self.crc_pos..self.pos]);
                self.crc_pos = self.pos;
            }
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("record buffer full")]
struct BufferFull;

/// A record just encoded into a buffer; the last one of a write gets its pad
/// extended to the block boundary with `RecordHeader::set_pad`.
#[derive(Clone, Copy, Debug)]
pub struct Encoded {
    pub header: RecordHeader,
    pub body_crc: u32,
}

/// Bytes a record of this batch needs at most, header and padding included.
pub fn record_len_bound(batch: &Batch) -> usize {
    align_up(
        RECORD_HEADER_BYTES + batch.archived_len_bound() as u64,
        RECORD_ALIGN_BYTES,
    ) as usize
}

/// Encodes `batch` as a record at the start of `out` (which must be 16-byte
/// aligned in memory and at least `record_len_bound` long).
pub fn encode_record(
    out: &mut [u8],
    seq: RecordSeq,
    synced_seq: RecordSeq,
    batch: &Batch,
) -> Encoded {
    assert!(out.as_ptr() as usize % RECORD_ALIGN_BYTES as usize == 0);
    let (head, body_out) = out.split_at_mut(RECORD_HEADER_BYTES as usize);
    let mut writer = SliceWriter {
        out: body_out,
        pos: 0,
        crc: 0,
        crc_pos: 0,
    };
    rkyv::api::high::to_bytes_in::<_, rkyv::rancor::Error>(batch, &mut writer)
        .expect("record_len_bound reserves enough space");
    let (body_len, body_crc) = (writer.pos, writer.crc());
    debug_assert_eq!(body_crc, crc32c::crc32c(&body_out[..body_len]));
    let unpadded = RECORD_HEADER_BYTES + body_len as u64;
    let pad_len = (align_up(unpadded, RECORD_ALIGN_BYTES) - unpadded) as u32;
    body_out[body_len..body_len + pad_len as usize].fill(0);
    let header = RecordHeader {
        seq,
        body_len: u32::try_from(body_len).expect("record fits u32"),
        pad_len,
        synced_seq,
    };
    header.encode(head, body_crc);
    Encoded { header, body_crc }
}

/// Rewrites the header at the start of `out` with a new pad length (the last
/// record of a write pads to the block boundary); zeroes the added padding.
pub fn set_pad(out: &mut [u8], encoded: &mut Encoded, pad_len: u32) {
    let body_end = (RECORD_HEADER_BYTES + u64::from(encoded.header.body_len)) as usize;
    out[body_end..body_end + pad_len as usize].fill(0);
    encoded.header.pad_len = pad_len;
    encoded.header.encode(out, encoded.body_crc);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::types::{GroupId, LogIndex, Term};

    /// A batch whose archive mixes many small rkyv writes with payloads
    /// larger than the CRC trails by, so the streamed CRC crosses pieces.
    fn mixed_batch(entries: u64, payload_bytes: usize) -> Batch {
        let mut batch = Batch::new();
        for i in 0..entries {
            let payload: Vec<u8> = (0..payload_bytes).map(|b| (b as u64 ^ i) as u8).collect();
            batch.push_entry(GroupId(i % 7), Term(1), LogIndex(i / 7 + 1), &payload);
        }
        batch
    }

    fn aligned(len: usize) -> rkyv::util::AlignedVec<16> {
        let mut out = rkyv::util::AlignedVec::<16>::with_capacity(len);
        out.resize(len, 0xAA); // Garbage where nothing is written.
        out
    }

    #[test]
    fn streamed_crc_matches_a_second_pass_and_reads_back_checked_and_unchecked() {
        for (entries, payload_bytes) in [(0, 0), (3, 10), (1000, 64), (40, 5000), (2, 200_000)] {
            let batch = mixed_batch(entries, payload_bytes);
            let mut out = aligned(record_len_bound(&batch));
            let encoded = encode_record(&mut out, RecordSeq(9), RecordSeq(8), &batch);
            let body_end = (RECORD_HEADER_BYTES + u64::from(encoded.header.body_len)) as usize;
            let body = &out[RECORD_HEADER_BYTES as usize..body_end];
            assert_eq!(encoded.body_crc, crc32c::crc32c(body));

            let record = record_at(&out, 0).expect("the record validates");
            assert_eq!(record.header, encoded.header);
            assert_eq!(
                record.batch().expect("archive").entry_count(),
                entries as usize
            );
            // SAFETY: `out` holds the record `encode_record` just wrote.
            let (header, archived) = unsafe { encoded_record_at(&out, 0) };
            assert_eq!(header, encoded.header);
            assert!(archived.entries().eq(batch.entries()));
        }
    }

    #[test]
    fn a_flipped_byte_still_fails_the_crc_check() {
        let batch = mixed_batch(100, 1000);
        let mut out = aligned(record_len_bound(&batch));
        encode_record(&mut out, RecordSeq(1), RecordSeq(0), &batch);
        out[RECORD_HEADER_BYTES as usize + 70_000] ^= 1;
        assert!(matches!(record_at(&out, 0), Err(RecordDefect::Crc)));
    }
}
