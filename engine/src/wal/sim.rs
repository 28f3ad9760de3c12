//! A simulated disk for fault-injection tests: every segment has a live image
//! (what reads see) and a durable image (what survives a crash). A crash keeps
//! the durable image plus, per block and decided by a seed, some of the writes
//! that were never synced: the torn writes of a power cut.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::rc::Rc;

use super::format::segment_file_name;
use super::io::{IoBuf, WalIo};
use super::limits::BLOCK_BYTES;
use super::scan::{Image, SegmentSource};
use super::types::SegmentSeq;

/// A write buffer on the heap, aligned like a DMA buffer.
pub struct SimBuf {
    bytes: rkyv::util::AlignedVec<4096>,
}

impl IoBuf for SimBuf {
    fn bytes(&self) -> &[u8] {
        &self.bytes
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.bytes
    }
    fn trim(&mut self, len: usize) {
        self.bytes.resize(len, 0);
    }
}

#[derive(Clone, Default)]
struct SimFile {
    live: Vec<u8>,
    durable: Vec<u8>,
    /// Blocks written since the last sync: (offset, bytes).
    unsynced: Vec<(u64, Vec<u8>)>,
}

#[derive(Default)]
struct SimDisk {
    files: BTreeMap<SegmentSeq, SimFile>,
    writes: u64,
    /// Fail every write after this many (None: never).
    fail_after_writes: Option<u64>,
}

/// A handle to one simulated disk; clones share it.
#[derive(Clone, Default)]
pub struct SimIo {
    disk: Rc<RefCell<SimDisk>>,
}

/// splitmix64: a seeded generator for fault decisions, so a failure replays.
pub struct SimRng(pub u64);

impl SimRng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

impl SimIo {
    pub fn new() -> SimIo {
        SimIo::default()
    }

    /// The disk after a power cut: durable bytes, plus each unsynced block kept
    /// with probability one half (decided by `seed`).
    pub fn crash(&self, seed: u64) -> SimIo {
        let mut rng = SimRng(seed);
        let disk = self.disk.borrow();
        let mut files = BTreeMap::new();
        for (seg, f) in &disk.files {
            let mut image = f.durable.clone();
            for (offset, bytes) in &f.unsynced {
                for (i, block) in bytes.chunks(BLOCK_BYTES as usize).enumerate() {
                    if rng.below(2) == 0 {
                        let at = *offset as usize + i * BLOCK_BYTES as usize;
                        image[at..at + block.len()].copy_from_slice(block);
                    }
                }
            }
            let file = SimFile {
                live: image.clone(),
                durable: image,
                unsynced: Vec::new(),
            };
            files.insert(*seg, file);
        }
        let disk = SimDisk {
            files,
            ..SimDisk::default()
        };
        SimIo {
            disk: Rc::new(RefCell::new(disk)),
        }
    }

    /// Flips one bit of a segment, live and durable (media corruption).
    pub fn flip_bit(&self, segment: SegmentSeq, offset_bytes: u64, bit: u8) {
        let mut disk = self.disk.borrow_mut();
        let f = disk
            .files
            .get_mut(&segment)
            .expect("flip_bit: segment exists");
        f.live[offset_bytes as usize] ^= 1 << bit;
        f.durable[offset_bytes as usize] ^= 1 << bit;
    }

    /// Makes every write after the next `n` fail, as a dying disk would.
    pub fn fail_after_writes(&self, n: u64) {
        let mut disk = self.disk.borrow_mut();
        disk.fail_after_writes = Some(disk.writes + n);
    }

    /// The durable bytes of a segment.
    pub fn durable_image(&self, segment: SegmentSeq) -> Option<Vec<u8>> {
        self.disk
            .borrow()
            .files
            .get(&segment)
            .map(|f| f.durable.clone())
    }

    /// Overwrites bytes of a segment, live and durable.
    pub fn poke(&self, segment: SegmentSeq, offset_bytes: u64, bytes: &[u8]) {
        let mut disk = self.disk.borrow_mut();
        let f = disk.files.get_mut(&segment).expect("poke: segment exists");
        let at = offset_bytes as usize;
        f.live[at..at + bytes.len()].copy_from_slice(bytes);
        f.durable[at..at + bytes.len()].copy_from_slice(bytes);
    }
}

fn missing(segment: SegmentSeq) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("no segment {segment}"))
}

impl SegmentSource for SimIo {
    fn list(&self) -> io::Result<Vec<SegmentSeq>> {
        Ok(self.disk.borrow().files.keys().copied().collect())
    }

    fn read(&self, segment: SegmentSeq, image: &mut Image) -> io::Result<()> {
        let disk = self.disk.borrow();
        let f = disk.files.get(&segment).ok_or_else(|| missing(segment))?;
        image.clear();
        image.extend_from_slice(&f.live);
        Ok(())
    }

    fn path(&self, segment: SegmentSeq) -> PathBuf {
        PathBuf::from("sim").join(segment_file_name(segment))
    }
}

impl WalIo for SimIo {
    type Buf = SimBuf;
    type ReadBuf = Image;

    fn alloc(&self, len_bytes: usize) -> SimBuf {
        let mut bytes = rkyv::util::AlignedVec::with_capacity(len_bytes);
        bytes.resize(len_bytes, 0);
        SimBuf { bytes }
    }

    async fn prepare(&self, segment: SegmentSeq, size_bytes: u64) -> io::Result<()> {
        let mut disk = self.disk.borrow_mut();
        let f = disk.files.entry(segment).or_default();
        if f.live.len() < size_bytes as usize {
            f.live.resize(size_bytes as usize, 0);
            f.durable.resize(size_bytes as usize, 0);
        }
        Ok(())
    }

    async fn write(
        &self,
        segment: SegmentSeq,
        offset_bytes: u64,
        buf: Rc<SimBuf>,
    ) -> io::Result<()> {
        let mut disk = self.disk.borrow_mut();
        disk.writes += 1;
        if disk.fail_after_writes.is_some_and(|n| disk.writes > n) {
            return Err(io::Error::other("simulated write failure"));
        }
        let f = disk
            .files
            .get_mut(&segment)
            .ok_or_else(|| missing(segment))?;
        let (at, bytes) = (offset_bytes as usize, buf.bytes());
        assert!(at % BLOCK_BYTES as usize == 0 && bytes.len() % BLOCK_BYTES as usize == 0);
        assert!(
            at + bytes.len() <= f.live.len(),
            "sim: write past the end of a segment"
        );
        f.live[at..at + bytes.len()].copy_from_slice(bytes);
        f.unsynced.push((offset_bytes, bytes.to_vec()));
        Ok(())
    }

    async fn sync(&self, segment: SegmentSeq) -> io::Result<()> {
        let mut disk = self.disk.borrow_mut();
        let f = disk
            .files
            .get_mut(&segment)
            .ok_or_else(|| missing(segment))?;
        for (offset, bytes) in std::mem::take(&mut f.unsynced) {
            f.durable[offset as usize..offset as usize + bytes.len()].copy_from_slice(&bytes);
        }
        Ok(())
    }

    async fn read_at(
        &self,
        segment: SegmentSeq,
        offset_bytes: u64,
        len_bytes: usize,
    ) -> io::Result<Image> {
        let disk = self.disk.borrow();
        let f = disk.files.get(&segment).ok_or_else(|| missing(segment))?;
        let end = (offset_bytes as usize + len_bytes).min(f.live.len());
        let mut image = Image::new();
        image.extend_from_slice(&f.live[offset_bytes as usize..end]);
        Ok(image)
    }

    async fn remove(&self, segment: SegmentSeq) -> io::Result<()> {
        self.disk
            .borrow_mut()
            .files
            .remove(&segment)
            .map(|_| ())
            .ok_or_else(|| missing(segment))
    }
}
