//! The seam between the WAL and the disk: segment files written with O_DIRECT
//! through glommio's io_uring reactor in production, a simulated disk with a
//! live and a durable image in tests (see `sim`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::ops::Deref;
use std::path::PathBuf;
use std::rc::Rc;

use glommio::io::{DmaBuffer, DmaFile, OpenOptions, ReadResult};

use super::format::segment_file_name;
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
pub struct DmaIo {
    dir: DirSource,
    mode: SyncMode,
    files: RefCell<HashMap<SegmentSeq, Rc<DmaFile>>>,
}

const ZERO_CHUNK_BYTES: usize = 1 << 20;

impl DmaIo {
    pub fn new(dir: impl Into<PathBuf>, mode: SyncMode) -> io::Result<DmaIo> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        Ok(DmaIo {
            dir: DirSource { dir },
            mode,
            files: RefCell::new(HashMap::new()),
        })
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
        let mut offset = 0;
        while offset < size_bytes {
            let len = ZERO_CHUNK_BYTES.min((size_bytes - offset) as usize);
            let mut buf = file.alloc_dma_buffer(len);
            buf.as_bytes_mut().fill(0);
            file.write_at(buf, offset).await?;
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
        let tmp = path.with_extension("prep");
        self.zero_fill(&tmp, size_bytes).await?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(&self.dir.dir)?.sync_all()
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
}
