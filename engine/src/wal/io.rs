//! The seam between the WAL and the disk: segment files written with O_DIRECT
//! through glommio's io_uring reactor in production, a simulated disk with a
//! live and a durable image in tests (see `sim`).

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::io;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::{DmaBuffer, DmaFile, OpenOptions, ReadResult};

use super::format::segment_file_name;
use super::limits::{BLOCK_BYTES, SPARE_SEGMENTS_MAX};
use super::scan::{DirSource, Image, SegmentSource};
use super::types::SegmentSeq;

/// A write buffer: aligned for direct I/O, fixed capacity.
pub trait IoBuf {
    fn bytes(&self) -> &[u8];
    fn bytes_mut(&mut self) -> &mut [u8];
    /// Shrinks the visible length (what `write` sends) to `len`.
    fn trim(&mut self, len: usize);
}

/// How each write becomes durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncMode {
    /// Write, then `fdatasync`; the next write goes out while the sync runs.
    Fdatasync,
    /// Files opened with O_DSYNC: a write is durable when it completes.
    Dsync,
    /// No flush at all: a write counts as durable once the device took it
    /// (O_DIRECT), but may still sit in the device's volatile cache. For
    /// experiments only: a power cut can lose acknowledged records.
    NoSync,
}

/// Segment storage. Offsets and lengths of writes are block-aligned.
#[allow(async_fn_in_trait)] // Single-threaded executor: futures need not be Send.
pub trait WalIo: SegmentSource + 'static {
    type Buf: IoBuf + 'static;
    type ReadBuf: Deref<Target = [u8]>;
    fn alloc(&self, len_bytes: usize) -> Self::Buf;
    /// Creates the segment at its full size with every block written (zeroed)
    /// and durable, so later writes never extend the file. Idempotent.
    async fn prepare(&self, segment: SegmentSeq, size_bytes: u64) -> io::Result<()>;
    async fn write(
        &self,
        segment: SegmentSeq,
        offset_bytes: u64,
        buf: Rc<Self::Buf>,
    ) -> io::Result<()>;
    async fn sync(&self, segment: SegmentSeq) -> io::Result<()>;
    async fn read_at(
        &self,
        segment: SegmentSeq,
        offset_bytes: u64,
        len_bytes: usize,
    ) -> io::Result<Self::ReadBuf>;
    async fn remove(&self, segment: SegmentSeq) -> io::Result<()>;
    /// Removes a segment that no record needs any more. A disk may keep the
    /// file as a spare that a later `prepare` reuses (its blocks are
    /// written already, so they need not be zeroed again); its old records
    /// then lie after the new ones, where recovery reads them as a torn
    /// tail: their seqs and `synced_seq`s are below anything it expects.
    async fn retire(&self, segment: SegmentSeq) -> io::Result<()> {
        self.remove(segment).await
    }
}

/// A glommio DMA buffer; shared with the reactor while written, so the WAL
/// can keep it as a cache of recent records without a copy.
pub struct DmaBuf(Rc<DmaBuffer>);

impl DmaBuf {
    fn unique(&mut self) -> &mut DmaBuffer {
        Rc::get_mut(&mut self.0).expect("a write buffer is not shared while it is filled")
    }
}

impl IoBuf for DmaBuf {
    fn bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        self.unique().as_bytes_mut()
    }
    fn trim(&mut self, len: usize) {
        self.unique().trim_to_size(len);
    }
}

/// Read bytes from a DMA read.
pub struct DmaRead(ReadResult);

impl Deref for DmaRead {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

/// Segment files in a directory on a real file system (not tmpfs: O_DIRECT
/// silently degrades there), driven by the core's glommio reactor.
///
/// Retired segments are renamed to spares (`<seq>.spare`, at most
/// `SPARE_SEGMENTS_MAX`) and reused by `prepare`, which then only zeroes
/// their first block instead of writing the whole file.
pub struct DmaIo {
    dir: DirSource,
    mode: SyncMode,
    files: RefCell<HashMap<SegmentSeq, Rc<DmaFile>>>,
    /// Spare segment files, oldest first, and how many more `prepare` is
    /// turning into segments. Invariant: together at most
    /// `SPARE_SEGMENTS_MAX` once a retire or prepare has run.
    spares: RefCell<VecDeque<PathBuf>>,
    spares_reusing: Cell<usize>,
    /// Reads issued and not finished: while one runs, a retired segment is
    /// deleted rather than kept, so no read can see it rewritten.
    reads_in_flight: Cell<usize>,
}

const ZERO_CHUNK_BYTES: usize = 1 << 20;
const SPARE_SUFFIX: &str = "spare";

impl DmaIo {
    pub fn new(dir: impl Into<PathBuf>, mode: SyncMode) -> io::Result<DmaIo> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        let spares = list_spares(&dir)?;
        Ok(DmaIo {
            dir: DirSource { dir },
            mode,
            files: RefCell::new(HashMap::new()),
            spares: RefCell::new(spares),
            spares_reusing: Cell::new(0),
            reads_in_flight: Cell::new(0),
        })
    }

    /// Turns the spare at `spare` into segment file `path` of `size_bytes`:
    /// its first block (the old segment header) zeroed and durable before
    /// the rename, so the segment reads as unused until its header is
    /// written. Its other blocks keep old records (see `WalIo::retire`).
    /// Returns false (and deletes the spare) if it has another size.
    ///
    /// The spare's name is made durable first: were the header zeroed while
    /// a crash could still bring back its old segment name, recovery would
    /// find a blank segment in front of used ones and refuse the WAL.
    async fn reuse_spare(&self, spare: &Path, path: &Path, size_bytes: u64) -> io::Result<bool> {
        let file = OpenOptions::new().write(true).dma_open(spare).await?;
        if file.file_size().await? != size_bytes {
            file.close().await?;
            std::fs::remove_file(spare)?;
            return Ok(false);
        }
        self.sync_dir()?;
        let mut block = file.alloc_dma_buffer(BLOCK_BYTES as usize);
        block.as_bytes_mut().fill(0);
        let written = file.write_at(block, 0).await?;
        if written != BLOCK_BYTES as usize {
            return Err(io::Error::other("short write zeroing a spare's header"));
        }
        file.fdatasync().await?;
        file.close().await?;
        std::fs::rename(spare, path)?;
        Ok(true)
    }

    fn sync_dir(&self) -> io::Result<()> {
        std::fs::File::open(&self.dir.dir)?.sync_all()
    }

    async fn file(&self, segment: SegmentSeq) -> io::Result<Rc<DmaFile>> {
        if let Some(f) = self.files.borrow().get(&segment) {
            return Ok(f.clone());
        }
        let mut opts = OpenOptions::new();
        opts.read(true).write(true);
        if self.mode == SyncMode::Dsync {
            opts.custom_flags(libc::O_DSYNC);
        }
        let file = Rc::new(opts.dma_open(self.path(segment)).await?);
        self.files.borrow_mut().insert(segment, file.clone());
        Ok(file)
    }

    async fn zero_fill(&self, path: &std::path::Path, size_bytes: u64) -> io::Result<()> {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .dma_open(path)
            .await?;
        file.pre_allocate(size_bytes, false).await?;
        // One zeroed chunk written over and over: a fresh buffer per chunk
        // cost a page fault and a memset per 4 KiB on the WAL's core.
        let zeros = |len: usize| {
            let mut buf = file.alloc_dma_buffer(len);
            buf.as_bytes_mut().fill(0);
            Rc::new(buf)
        };
        let chunk = zeros(ZERO_CHUNK_BYTES.min(size_bytes as usize));
        let mut offset = 0;
        while offset < size_bytes {
            let len = ZERO_CHUNK_BYTES.min((size_bytes - offset) as usize);
            let buf = if len == chunk.len() {
                chunk.clone()
            } else {
                zeros(len)
            };
            let written = file.write_rc_at(buf, offset).await?;
            if written != len {
                return Err(io::Error::other(format!(
                    "short write zeroing: {written} of {len} bytes"
                )));
            }
            offset += len as u64;
        }
        file.fdatasync().await?;
        file.close().await?;
        Ok(())
    }
}

impl SegmentSource for DmaIo {
    fn list(&self) -> io::Result<Vec<SegmentSeq>> {
        self.dir.list()
    }
    fn read(&self, segment: SegmentSeq, image: &mut Image) -> io::Result<()> {
        self.dir.read(segment, image)
    }
    fn path(&self, segment: SegmentSeq) -> PathBuf {
        self.dir.dir.join(segment_file_name(segment))
    }
    fn prefetch(&self, segment: SegmentSeq) {
        self.dir.prefetch(segment)
    }
    fn parallel(&self) -> Option<DirSource> {
        Some(self.dir.clone())
    }
}

impl WalIo for DmaIo {
    type Buf = DmaBuf;
    type ReadBuf = DmaRead;

    fn alloc(&self, len_bytes: usize) -> DmaBuf {
        DmaBuf(Rc::new(glommio::allocate_dma_buffer(len_bytes)))
    }

    async fn prepare(&self, segment: SegmentSeq, size_bytes: u64) -> io::Result<()> {
        let path = self.path(segment);
        if std::fs::metadata(&path)
            .map(|m| m.len() >= size_bytes)
            .unwrap_or(false)
        {
            return Ok(());
        }
        let mut reused = false;
        while !reused {
            let Some(spare) = self.spares.borrow_mut().pop_front() else {
                break;
            };
            self.spares_reusing.set(self.spares_reusing.get() + 1);
            let result = self.reuse_spare(&spare, &path, size_bytes).await;
            self.spares_reusing.set(self.spares_reusing.get() - 1);
            reused = result?;
        }
        if !reused {
            let tmp = path.with_extension("prep");
            if let Err(e) = self.zero_fill(&tmp, size_bytes).await {
                // Give back what it got of the disk (on a full disk, that
                // is what the next try needs).
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
            std::fs::rename(&tmp, &path)?;
        }
        self.sync_dir()
    }

    async fn write(
        &self,
        segment: SegmentSeq,
        offset_bytes: u64,
        buf: Rc<DmaBuf>,
    ) -> io::Result<()> {
        let len = buf.bytes().len();
        let file = self.file(segment).await?;
        let written = file.write_rc_at(buf.0.clone(), offset_bytes).await?;
        if written != len {
            return Err(io::Error::other(format!(
                "short write: {written} of {len} bytes"
            )));
        }
        Ok(())
    }

    async fn sync(&self, segment: SegmentSeq) -> io::Result<()> {
        let file = self.file(segment).await?;
        Ok(file.fdatasync().await?)
    }

    async fn read_at(
        &self,
        segment: SegmentSeq,
        offset_bytes: u64,
        len_bytes: usize,
    ) -> io::Result<DmaRead> {
        let _counted = ReadInFlight::count(&self.reads_in_flight);
        let file = self.file(segment).await?;
        Ok(DmaRead(
            file.read_at_aligned(offset_bytes, len_bytes).await?,
        ))
    }

    async fn remove(&self, segment: SegmentSeq) -> io::Result<()> {
        if let Some(file) = self.files.borrow_mut().remove(&segment) {
            drop(file); // Closed when the last read holding it ends.
        }
        std::fs::remove_file(self.path(segment))
    }

    async fn retire(&self, segment: SegmentSeq) -> io::Result<()> {
        let file = self.files.borrow_mut().remove(&segment);
        let shared = file.as_ref().is_some_and(|f| Rc::strong_count(f) > 1);
        drop(file);
        let full = self.spares.borrow().len() + self.spares_reusing.get() >= SPARE_SEGMENTS_MAX;
        if shared || full || self.reads_in_flight.get() > 0 {
            return std::fs::remove_file(self.path(segment));
        }
        let spare = self
            .dir
            .dir
            .join(format!("{:020}.{SPARE_SUFFIX}", segment.0));
        std::fs::rename(self.path(segment), &spare)?;
        self.spares.borrow_mut().push_back(spare);
        Ok(())
    }
}

/// Counts a read in `DmaIo::reads_in_flight` until dropped, also when the
/// read's future is dropped part-way.
struct ReadInFlight<'a>(&'a Cell<usize>);

impl<'a> ReadInFlight<'a> {
    fn count(reads: &'a Cell<usize>) -> ReadInFlight<'a> {
        reads.set(reads.get() + 1);
        ReadInFlight(reads)
    }
}

impl Drop for ReadInFlight<'_> {
    fn drop(&mut self) {
        assert!(self.0.get() > 0, "a counted read is in flight");
        self.0.set(self.0.get() - 1);
    }
}

/// The spare segment files in `dir`, oldest first (left by an earlier run).
fn list_spares(dir: &Path) -> io::Result<VecDeque<PathBuf>> {
    let mut spares = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == SPARE_SUFFIX) {
            spares.push(path);
        }
    }
    spares.sort();
    Ok(spares.into())
}
