//! The disk itself, measured in the same run and on the same file system as
//! the WAL, so a WAL figure can be read against what the device gives:
//! sequential 1 MiB O_DIRECT writes, the same with an `fdatasync` after
//! every 4 MiB (what a WAL that syncs every write can hope for), and the
//! latency of one 4 KiB O_DIRECT write plus `fdatasync`. Both write over blocks that already exist (the
//! file is preallocated and written first), as the WAL does in its segments.

use std::alloc::Layout;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;

/// The file the raw figures are measured on: big enough that the overwrite
/// loop streams rather than hitting one hot region, small enough to create
/// in a fraction of a second.
pub const RAW_FILE_BYTES: u64 = 256 << 20;
/// Unit of the sequential write measurement.
pub const RAW_WRITE_BYTES: usize = 1 << 20;
/// Bytes written between two syncs in the synced throughput measurement:
/// about one large group commit.
pub const RAW_SYNCED_WRITE_BYTES: usize = 4 << 20;
/// Unit of the fsync latency measurement (one direct-I/O block).
pub const RAW_SYNC_WRITE_BYTES: usize = 4096;
/// Samples of write + fdatasync; a few hundred give a stable median.
pub const RAW_SYNC_SAMPLES: usize = 300;
/// Direct I/O alignment of buffers, offsets and lengths.
const DIRECT_ALIGN_BYTES: usize = 4096;

const _: () = assert!(RAW_FILE_BYTES % RAW_SYNCED_WRITE_BYTES as u64 == 0);
const _: () = assert!(RAW_SYNCED_WRITE_BYTES % RAW_WRITE_BYTES == 0);
const _: () = assert!(RAW_WRITE_BYTES % DIRECT_ALIGN_BYTES == 0);
const _: () = assert!(RAW_SYNC_WRITE_BYTES % DIRECT_ALIGN_BYTES == 0);

/// What the disk did in this run.
#[derive(Debug, Clone, Copy)]
pub struct RawDisk {
    pub odirect_mib_per_s: f64,
    /// 4 MiB writes each followed by `fdatasync`.
    pub synced_mib_per_s: f64,
    pub fsync_us_p50: u64,
    pub fsync_us_p99: u64,
}

/// Measures the disk under `dir` for about twice `write_for` plus a few
/// hundred syncs; the scratch file is removed afterwards.
pub fn measure(dir: &Path, write_for: Duration) -> anyhow::Result<RawDisk> {
    let path = dir.join("raw-disk.scratch");
    let file = DirectFile::create(&path)?;
    let result = measure_file(&file, write_for);
    drop(file);
    std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    result
}

fn measure_file(file: &DirectFile, write_for: Duration) -> anyhow::Result<RawDisk> {
    let mut buf = AlignedBuf::new(RAW_SYNCED_WRITE_BYTES);
    // A pattern, not zeros: a device that elides zero pages would flatter.
    for (i, b) in buf.bytes_mut().iter_mut().enumerate() {
        *b = (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3];
    }
    file.allocate(RAW_FILE_BYTES)?;
    let big_chunks = RAW_FILE_BYTES / RAW_SYNCED_WRITE_BYTES as u64;
    for chunk in 0..big_chunks {
        file.write_at(buf.bytes(), chunk * RAW_SYNCED_WRITE_BYTES as u64)?;
    }
    file.datasync()?;
    let odirect_mib_per_s = write_loop(file, &buf.bytes()[..RAW_WRITE_BYTES], write_for, false)?;
    let synced_mib_per_s = write_loop(file, buf.bytes(), write_for, true)?;

    let block = &buf.bytes()[..RAW_SYNC_WRITE_BYTES];
    let mut samples_us: Vec<u64> = Vec::with_capacity(RAW_SYNC_SAMPLES);
    for i in 0..RAW_SYNC_SAMPLES as u64 {
        let t = Instant::now();
        file.write_at(block, i * RAW_SYNC_WRITE_BYTES as u64)?;
        file.datasync()?;
        samples_us.push(t.elapsed().as_micros() as u64);
    }
    samples_us.sort_unstable();
    let at = |q: f64| samples_us[((samples_us.len() - 1) as f64 * q).round() as usize];
    Ok(RawDisk {
        odirect_mib_per_s,
        synced_mib_per_s,
        fsync_us_p50: at(0.5),
        fsync_us_p99: at(0.99),
    })
}

/// Writes `unit` over the file from its start, wrapping around, for
/// `write_for` (at least once); with `sync_each`, `fdatasync` after every
/// write, else once at the end (counted either way). Returns MiB/s.
fn write_loop(
    file: &DirectFile,
    unit: &[u8],
    write_for: Duration,
    sync_each: bool,
) -> anyhow::Result<f64> {
    let chunks = RAW_FILE_BYTES / unit.len() as u64;
    let started = Instant::now();
    let mut written = 0u64;
    let mut chunk = 0u64;
    while started.elapsed() < write_for || written == 0 {
        file.write_at(unit, chunk * unit.len() as u64)?;
        if sync_each {
            file.datasync()?;
        }
        written += unit.len() as u64;
        chunk = (chunk + 1) % chunks;
    }
    file.datasync()?;
    Ok(written as f64 / (1 << 20) as f64 / started.elapsed().as_secs_f64())
}

/// A file opened with O_DIRECT; closed on drop.
struct DirectFile {
    fd: libc::c_int,
}

impl DirectFile {
    fn create(path: &Path) -> anyhow::Result<DirectFile> {
        let c_path = CString::new(path.as_os_str().as_bytes())?;
        let flags = libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC | libc::O_DIRECT | libc::O_CLOEXEC;
        // SAFETY: `c_path` is NUL-terminated; open has no other preconditions.
        let fd = unsafe { libc::open(c_path.as_ptr(), flags, 0o644) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("opening {} with O_DIRECT", path.display()));
        }
        Ok(DirectFile { fd })
    }

    fn allocate(&self, len_bytes: u64) -> anyhow::Result<()> {
        // SAFETY: a valid descriptor and plain integers.
        let rc = unsafe { libc::posix_fallocate(self.fd, 0, len_bytes as libc::off_t) };
        anyhow::ensure!(
            rc == 0,
            "posix_fallocate: {}",
            std::io::Error::from_raw_os_error(rc)
        );
        Ok(())
    }

    fn write_at(&self, bytes: &[u8], offset: u64) -> anyhow::Result<()> {
        assert!(
            bytes.as_ptr() as usize % DIRECT_ALIGN_BYTES == 0,
            "direct I/O buffer aligned"
        );
        assert!(bytes.len() % DIRECT_ALIGN_BYTES == 0 && offset % DIRECT_ALIGN_BYTES as u64 == 0);
        // SAFETY: `bytes` is valid for reads of its length for the whole call.
        let n = unsafe {
            libc::pwrite(
                self.fd,
                bytes.as_ptr().cast(),
                bytes.len(),
                offset as libc::off_t,
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error()).context("O_DIRECT pwrite");
        }
        anyhow::ensure!(
            n as usize == bytes.len(),
            "short O_DIRECT write: {n} of {}",
            bytes.len()
        );
        Ok(())
    }

    fn datasync(&self) -> anyhow::Result<()> {
        // SAFETY: a valid descriptor.
        let rc = unsafe { libc::fdatasync(self.fd) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error()).context("fdatasync");
        }
        Ok(())
    }
}

impl Drop for DirectFile {
    fn drop(&mut self) {
        // SAFETY: the descriptor is ours and closed exactly once.
        unsafe { libc::close(self.fd) };
    }
}

/// A zero-initialised heap buffer aligned for direct I/O.
struct AlignedBuf {
    ptr: std::ptr::NonNull<u8>,
    layout: Layout,
}

impl AlignedBuf {
    fn new(len_bytes: usize) -> AlignedBuf {
        assert!(len_bytes > 0 && len_bytes % DIRECT_ALIGN_BYTES == 0);
        let layout = Layout::from_size_align(len_bytes, DIRECT_ALIGN_BYTES).expect("valid layout");
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { std::alloc::alloc_zeroed(layout) };
        let ptr =
            std::ptr::NonNull::new(raw).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        AlignedBuf { ptr, layout }
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` owns `layout.size()` initialised bytes.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.layout.size()) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as `bytes`, and `&mut self` makes the borrow unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.layout.size()) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this very layout.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) };
    }
}
