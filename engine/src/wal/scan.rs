//! Reading a whole WAL in order and judging every byte: which records are
//! valid, where the log ends, and whether a defect is a torn tail (truncate) or
//! lost data (refuse). Pure logic over segment images; recovery and
//! `myriad-log` both drive it, so they can never disagree.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use rkyv::util::AlignedVec;

use super::batch::ArchivedBatch;
use super::format::{parse_segment_file_name, record_at, segment_file_name, Record, RecordDefect};
use super::format::{SegmentHeader, SegmentHeaderDefect};
use super::limits::{align_up, BLOCK_BYTES, SECTOR_BYTES, SEGMENT_HEADER_BYTES, SEGMENT_SIZE_BYTES_MAX};
use super::types::{RecordSeq, SegmentSeq};

/// A segment image in memory, aligned so archived batches can be read in place.
pub type Image = AlignedVec<16>;

/// The image of the segment being scanned, as visitors see it: a visitor
/// may keep parts of it (`share`) without copying them. A part kept keeps
/// the whole image in memory; an image nobody kept goes back to the reader.
#[derive(Clone)]
pub struct SharedImage(Arc<Image>);

impl SharedImage {
    /// `part`, which must lie inside this image (a record or batch the scan
    /// handed out), as bytes that keep the image alive.
    pub fn share(&self, part: &[u8]) -> Bytes {
        Bytes::from_owner(self.clone()).slice_ref(part)
    }

    /// Whether `self` and `other` are the same image.
    pub fn same(&self, other: &SharedImage) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// The image back, unless a visitor kept a part of it.
    fn unshared(self) -> Option<Image> {
        Arc::try_unwrap(self.0).ok()
    }
}

impl AsRef<[u8]> for SharedImage {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl std::ops::Deref for SharedImage {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

/// Where segment images come from: a directory, or a simulated disk.
pub trait SegmentSource {
    /// Segments present, in any order.
    fn list(&self) -> io::Result<Vec<SegmentSeq>>;
    /// Reads the whole segment into `image` (replacing its contents).
    fn read(&self, segment: SegmentSeq, image: &mut Image) -> io::Result<()>;
    /// The path to name in errors.
    fn path(&self, segment: SegmentSeq) -> PathBuf;
    /// A hint that `segment` will be read soon: start fetching it now.
    fn prefetch(&self, _segment: SegmentSeq) {}
    /// The same segments as a source another thread may read, so that a
    /// scan reads the next segments while it checks one; `None`: the scan
    /// reads each segment itself when it gets to it.
    fn parallel(&self) -> Option<DirSource> {
        None
    }
}

/// Segments in a directory, read with plain buffered reads: never writes,
/// takes no lock, so it works beside a running node.
#[derive(Clone, Debug)]
pub struct DirSource {
    pub dir: PathBuf,
}

impl SegmentSource for DirSource {
    fn list(&self) -> io::Result<Vec<SegmentSeq>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let name = entry?.file_name();
            if let Some(seg) = name.to_str().and_then(parse_segment_file_name) {
                out.push(seg);
            }
        }
        Ok(out)
    }

    fn read(&self, segment: SegmentSeq, image: &mut Image) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let file = std::fs::File::open(self.path(segment))?;
        let len = file.metadata()?.len();
        if len > SEGMENT_SIZE_BYTES_MAX {
            // Not a segment this WAL wrote: refuse it before allocating.
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{len} bytes, more than any segment ({SEGMENT_SIZE_BYTES_MAX})"),
            ));
        }
        let len = len as usize;
        image.clear();
        // Read straight into the spare capacity: a fresh image is not
        // zero-filled first, so its pages are touched once.
        image.reserve_exact(len);
        let mut filled = 0;
        while filled < len {
            // SAFETY: `filled..len` is spare capacity of `image`; the kernel
            // writes the bytes it reports, and only those become its length.
            let n = unsafe {
                libc::pread(
                    file.as_raw_fd(),
                    image.as_mut_ptr().add(filled).cast(),
                    len - filled,
                    filled as libc::off_t,
                )
            };
            if n < 0 {
                let error = io::Error::last_os_error();
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(error);
            }
            if n == 0 {
                break; // The file shrank while we read it: keep what we have.
            }
            filled += n as usize;
        }
        // SAFETY: the first `filled` bytes were written by `pread`.
        unsafe { image.set_len(filled) };
        Ok(())
    }

    fn path(&self, segment: SegmentSeq) -> PathBuf {
        self.dir.join(segment_file_name(segment))
    }

    fn prefetch(&self, segment: SegmentSeq) {
        use std::os::fd::AsRawFd;
        if let Ok(file) = std::fs::File::open(self.path(segment)) {
            // Only a hint: the kernel reads the file into the page cache in
            // the background; failure just means no head start.
            // SAFETY: plain syscall on a descriptor we own for its duration.
            unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_WILLNEED) };
        }
    }

    fn parallel(&self) -> Option<DirSource> {
        Some(self.clone())
    }
}

/// Why a WAL cannot be opened as it is. Never produced by a torn tail.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("reading {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{dir}: segment {missing} is missing between existing segments")]
    MissingSegment { dir: PathBuf, missing: SegmentSeq },
    #[error("{path}: corrupt at offset {offset_bytes}: {what}")]
    Corrupt {
        path: PathBuf,
        offset_bytes: u64,
        what: String,
    },
}

fn corrupt(path: &Path, offset_bytes: u64, what: impl Into<String>) -> ScanError {
    ScanError::Corrupt {
        path: path.to_owned(),
        offset_bytes,
        what: what.into(),
    }
}

/// What one used segment held.
#[derive(Clone, Debug)]
pub struct SegmentSummary {
    pub segment: SegmentSeq,
    pub path: PathBuf,
    pub file_bytes: u64,
    pub header: SegmentHeader,
    pub records: u64,
    /// Seq of the last valid record, or `first_record_seq - 1` when none.
    pub last_seq: RecordSeq,
    /// Offset after the last valid record.
    pub end_offset_bytes: u64,
    /// Why scanning stopped at `end_offset_bytes` (none: end of file).
    pub stop: Option<String>,
}

/// The whole WAL as found.
#[derive(Clone, Debug, Default)]
pub struct ScanReport {
    /// Segments with a valid header, in order.
    pub used: Vec<SegmentSummary>,
    /// Segments after the last used one whose header was never written.
    pub unused: Vec<SegmentSeq>,
    /// The seq the next record gets.
    pub next_seq: RecordSeq,
    /// In the last used segment: end of the last block after the log's end
    /// holding non-zero bytes (torn writes to clear before appending), if any.
    pub dirty_end_bytes: Option<u64>,
    /// Bytes of the last used segment from the block holding its end up to
    /// the end: kept so the first write can rewrite that block.
    pub tail_block: Vec<u8>,
}

/// Segments asked for ahead of the one being scanned: reading several at
/// once is what lets a virtio disk reach its bandwidth.
const PREFETCH_SEGMENTS: usize = 4;
/// Segment images a reading thread may have ready before the scan takes
/// them (each a segment's size in memory).
const READ_AHEAD_IMAGES: usize = 1;
/// Threads reading segments for one scan, each every `READER_THREADS`-th.
/// A kept image is fresh memory, and faulting it in costs as much CPU as
/// the read: two readers share that while the scan checks.
const READER_THREADS: usize = 2;

/// Calls `visit` for every valid record of the WAL, in order, after checking
/// its CRC, sequence and archive. Stops the log at a torn tail of the last
/// used segment; any other defect is a `ScanError` naming file and offset.
///
/// When the source allows (`SegmentSource::parallel`), other threads read
/// the segments ahead while this one checks them.
pub fn scan_wal<S, F>(src: &S, mut visit: F) -> Result<ScanReport, ScanError>
where
    S: SegmentSource,
    F: FnMut(SegmentSeq, &Record<'_>, &ArchivedBatch) -> Result<(), ScanError>,
{
    scan_wal_sharing(src, |segment, record, batch, _| visit(segment, record, batch))
}

/// `scan_wal`, also handing `visit` the image the record lies in, so that
/// it can keep parts of it without copying (`SharedImage::share`).
pub fn scan_wal_sharing<S, F>(src: &S, visit: F) -> Result<ScanReport, ScanError>
where
    S: SegmentSource,
    F: FnMut(SegmentSeq, &Record<'_>, &ArchivedBatch, &SharedImage) -> Result<(), ScanError>,
{
    let segments = sorted_contiguous(src)?;
    let Some(reader) = src.parallel() else {
        let feed = segments.iter().enumerate().map(|(i, &segment)| {
            prefetch_around(src, &segments, i);
            let mut image = Image::new();
            (segment, src.read(segment, &mut image).map(|()| image))
        });
        return scan_images(src, feed, visit, drop);
    };
    // Images nobody kept, for the readers to fill again.
    let spare = std::sync::Mutex::new(Vec::<Image>::new());
    let take_spare = || spare.lock().unwrap_or_else(|e| e.into_inner()).pop();
    std::thread::scope(|scope| {
        let mut feeds = Vec::with_capacity(READER_THREADS);
        for first in 0..READER_THREADS {
            let (images, feed) = std::sync::mpsc::sync_channel(READ_AHEAD_IMAGES);
            feeds.push(feed);
            let (reader, segments, take_spare) = (reader.clone(), &segments, &take_spare);
            scope.spawn(move || {
                for (i, &segment) in segments.iter().enumerate().skip(first).step_by(READER_THREADS) {
                    prefetch_around(&reader, segments, i);
                    let mut image = take_spare().unwrap_or_default();
                    let read = reader.read(segment, &mut image).map(|()| image);
                    if images.send((segment, read)).is_err() {
                        return; // The scan stopped early.
                    }
                }
            });
        }
        // Segment `i` comes from reader `i % READER_THREADS`, so in order.
        let feed = (0..segments.len()).map_while(|i| feeds[i % READER_THREADS].recv().ok());
        scan_images(src, feed, visit, |image| {
            spare.lock().unwrap_or_else(|e| e.into_inner()).push(image);
        })
    })
}

/// Asks for the segments ahead of the `i`-th.
fn prefetch_around<S: SegmentSource>(src: &S, segments: &[SegmentSeq], i: usize) {
    if i == 0 {
        for &ahead in segments.iter().take(PREFETCH_SEGMENTS) {
            src.prefetch(ahead);
        }
    }
    if let Some(&ahead) = segments.get(i + PREFETCH_SEGMENTS) {
        src.prefetch(ahead);
    }
}

/// The scan over segment images in order; `recycle` gets each image back
/// once it is done with it, unless `visit` kept a part of it.
fn scan_images<S, I, F, R>(
    src: &S,
    feed: I,
    mut visit: F,
    mut recycle: R,
) -> Result<ScanReport, ScanError>
where
    S: SegmentSource,
    I: Iterator<Item = (SegmentSeq, std::io::Result<Image>)>,
    F: FnMut(SegmentSeq, &Record<'_>, &ArchivedBatch, &SharedImage) -> Result<(), ScanError>,
    R: FnMut(Image),
{
    let mut report = ScanReport {
        next_seq: RecordSeq(1),
        ..ScanReport::default()
    };
    let mut last_image = SharedImage(Arc::new(Image::new()));
    for (segment, read) in feed {
        let path = src.path(segment);
        let image = read.map_err(|source| ScanError::Io {
            path: path.clone(),
            source,
        })?;
        let header = match SegmentHeader::decode(&image) {
            Ok(h) => h,
            Err(defect) => {
                check_unused(&path, defect, &image, report.next_seq)?;
                report.unused.push(segment);
                recycle(image);
                continue;
            }
        };
        if let Some(first_unused) = report.unused.first() {
            let what = format!("segment header unreadable although segment {segment} follows");
            return Err(corrupt(&src.path(*first_unused), 0, what));
        }
        check_header(&path, segment, &header, image.len() as u64)?;
        if let Some(prev) = report.used.last() {
            check_continuity(prev, &header)?;
        }
        let image = SharedImage(Arc::new(image));
        let summary = scan_segment(segment, &path, header, &image, &mut visit)?;
        report.next_seq = summary.last_seq.next();
        report.used.push(summary);
        if let Some(done) = std::mem::replace(&mut last_image, image).unshared() {
            recycle(done);
        }
    }
    if let Some(last) = report.used.last() {
        check_tail(last, &last_image)?;
        report.dirty_end_bytes = dirty_end(&last_image, last.end_offset_bytes);
        let block = last.end_offset_bytes / BLOCK_BYTES * BLOCK_BYTES;
        report.tail_block = last_image[block as usize..last.end_offset_bytes as usize].to_vec();
    }
    Ok(report)
}

fn sorted_contiguous<S: SegmentSource>(src: &S) -> Result<Vec<SegmentSeq>, ScanError> {
    let dir = src
        .path(SegmentSeq(0))
        .parent()
        .map(Path::to_owned)
        .unwrap_or_default();
    let mut segments = src.list().map_err(|source| ScanError::Io {
        path: dir.clone(),
        source,
    })?;
    segments.sort_unstable();
    for pair in segments.windows(2) {
        if pair[1] != pair[0].next() {
            return Err(ScanError::MissingSegment {
                dir,
                missing: pair[0].next(),
            });
        }
    }
    Ok(segments)
}

/// A segment without a valid header is unused only if its header was never
/// written: the segment is blank (preallocated), or the write that carried
/// the header tore before reaching the disk, leaving only later blocks of it
/// (never acknowledged). A header that is not all zeros, or bytes beside it in
/// its sector (which a torn write cannot split from it), mean the header was
/// written and is damaged; so does a record after it that saw `expected`, the
/// segment's first record, durable. Deleting such a segment would drop
/// acknowledged records, so recovery refuses it.
fn check_unused(
    path: &Path,
    defect: SegmentHeaderDefect,
    image: &[u8],
    expected: RecordSeq,
) -> Result<(), ScanError> {
    if let SegmentHeaderDefect::Version(_) = defect {
        return Err(corrupt(path, 0, defect.to_string()));
    }
    let sector = &image[..image.len().min(SECTOR_BYTES as usize)];
    if let Some(at) = sector.iter().position(|&b| b != 0) {
        let what = format!(
            "{defect}, but the segment was written (non-zero byte at offset {at}): \
             its header is damaged and its records cannot be trusted or dropped"
        );
        return Err(corrupt(path, 0, what));
    }
    let mut block = BLOCK_BYTES;
    while block < image.len() as u64 {
        if let Ok(record) = record_at(image, block) {
            if record.header.synced_seq >= expected {
                let what = format!(
                    "{defect}, but record {} at offset {block} was written after record \
                     {expected}, the segment's first, was durable: the header is damaged",
                    record.header.seq
                );
                return Err(corrupt(path, 0, what));
            }
        }
        block += BLOCK_BYTES;
    }
    Ok(())
}

fn check_header(
    path: &Path,
    segment: SegmentSeq,
    h: &SegmentHeader,
    len: u64,
) -> Result<(), ScanError> {
    if h.segment != segment {
        return Err(corrupt(
            path,
            0,
            format!("header names segment {}", h.segment),
        ));
    }
    if h.segment_size_bytes > len {
        let what = format!("file is {len} bytes, header says {}", h.segment_size_bytes);
        return Err(corrupt(path, 0, what));
    }
    Ok(())
}

fn check_continuity(prev: &SegmentSummary, next: &SegmentHeader) -> Result<(), ScanError> {
    if next.first_record_seq == prev.last_seq.next() {
        return Ok(());
    }
    let stop = prev.stop.clone().unwrap_or_else(|| "end of segment".into());
    let what = format!(
        "{stop}; records {} to {} are missing (next segment starts at record {})",
        prev.last_seq.next(),
        RecordSeq(next.first_record_seq.0.saturating_sub(1)),
        next.first_record_seq
    );
    Err(corrupt(&prev.path, prev.end_offset_bytes, what))
}

fn scan_segment<F>(
    segment: SegmentSeq,
    path: &Path,
    header: SegmentHeader,
    shared: &SharedImage,
    visit: &mut F,
) -> Result<SegmentSummary, ScanError>
where
    F: FnMut(SegmentSeq, &Record<'_>, &ArchivedBatch, &SharedImage) -> Result<(), ScanError>,
{
    let image = &shared[..header.segment_size_bytes as usize];
    let mut expected = header.first_record_seq;
    let mut offset = SEGMENT_HEADER_BYTES;
    let mut records = 0;
    let stop = loop {
        if offset >= image.len() as u64 {
            break None;
        }
        let record = match record_at(image, offset) {
            Ok(r) => r,
            Err(defect) => break Some(defect.to_string()),
        };
        if record.header.seq != expected {
            break Some(format!(
                "record seq {} where {expected} was expected",
                record.header.seq
            ));
        }
        // The CRC matched, so these bytes were written as they are: a body
        // that does not validate is not a torn write but corruption.
        let batch = record.batch().map_err(|defect| {
            let what = format!(
                "record {}: {}",
                record.header.seq,
                RecordDefect::Body(defect)
            );
            corrupt(path, offset, what)
        })?;
        visit(segment, &record, batch, shared)?;
        records += 1;
        expected = expected.next();
        offset = record.next_offset();
    };
    Ok(SegmentSummary {
        segment,
        path: path.to_owned(),
        file_bytes: image.len() as u64,
        header,
        records,
        last_seq: RecordSeq(expected.0 - 1),
        end_offset_bytes: offset,
        stop,
    })
}

/// After the end of the last segment, a record that had already seen the
/// missing one reported durable proves data was lost, not torn.
fn check_tail(last: &SegmentSummary, image: &[u8]) -> Result<(), ScanError> {
    let Some(stop) = &last.stop else {
        return Ok(());
    };
    let expected = last.last_seq.next();
    let image = &image[..last.header.segment_size_bytes as usize];
    let mut block = align_up(last.end_offset_bytes + 1, BLOCK_BYTES);
    while block < image.len() as u64 {
        if let Ok(record) = record_at(image, block) {
            if record.header.synced_seq >= expected {
                let what = format!(
                    "{stop}; record {} at offset {block} was written after record {expected} was durable",
                    record.header.seq
                );
                return Err(corrupt(&last.path, last.end_offset_bytes, what));
            }
        }
        block += BLOCK_BYTES;
    }
    Ok(())
}

fn dirty_end(image: &[u8], end: u64) -> Option<u64> {
    let tail = image.get(end as usize..)?;
    let last_nonzero = tail.iter().rposition(|&b| b != 0)? as u64 + end;
    Some(align_up(last_nonzero + 1, BLOCK_BYTES))
}
