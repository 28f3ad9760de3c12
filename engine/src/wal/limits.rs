//! Every limit and fixed size of the WAL in one place, checked at compile time.

/// Direct I/O unit: every write starts and ends on a block boundary.
pub const BLOCK_BYTES: u64 = 4096;
/// Records start at offsets that are multiples of this, so an archived batch
/// can be accessed in place (rkyv roots need 8-byte alignment; 16 leaves room).
pub const RECORD_ALIGN_BYTES: u64 = 16;
/// Bytes at the start of each segment before its first record.
pub const SEGMENT_HEADER_BYTES: u64 = 64;
/// Bytes of a record header.
pub const RECORD_HEADER_BYTES: u64 = 32;
/// Default size of a segment file.
pub const SEGMENT_SIZE_BYTES_DEFAULT: u64 = 64 << 20;
/// Smallest segment a WAL may be configured with (tests use small ones).
pub const SEGMENT_SIZE_BYTES_MIN: u64 = 16 * BLOCK_BYTES;
/// Largest segment: record offsets are kept as u32 in the in-memory index.
pub const SEGMENT_SIZE_BYTES_MAX: u64 = 1 << 31;
/// Upper bound of one write (several records of group commit together).
pub const WRITE_BYTES_MAX_DEFAULT: usize = 4 << 20;
/// Smallest write buffer allocated; buffers adapt to the recent write size.
pub const WRITE_BUFFER_BYTES_MIN: usize = 16 << 10;
/// Bytes of recent writes kept in memory to serve reads without the disk.
pub const CACHE_BYTES_MAX_DEFAULT: usize = 32 << 20;
/// Writes issued and not yet durable at once: some being written while
/// earlier ones sync.
pub const WRITES_IN_FLIGHT_MAX: usize = 4;
/// fdatasyncs in flight at once: a write that completes while a sync runs
/// gets its own sync at once instead of waiting for the running one to end.
pub const SYNCS_IN_FLIGHT_MAX: usize = 2;
/// How long the preparer waits before it tries again to create a segment
/// the disk had no space for (a purge that frees a segment wakes it sooner).
pub const PREPARE_RETRY_AFTER_MS: u64 = 250;
/// Retired segment files a WAL keeps to reuse instead of zero-filling new
/// ones (each is a segment's worth of disk).
pub const SPARE_SEGMENTS_MAX: usize = 2;
/// Segments beyond which `purge` starts rewriting lagging groups forward.
pub const SEGMENTS_SOFT_MAX_DEFAULT: usize = 8;
/// Largest log index an entry, truncation or compaction may name. Far beyond
/// any real log; it keeps `index + 1` and span arithmetic from overflowing.
pub const LOG_INDEX_MAX: u64 = u64::MAX >> 1;
/// Bytes a torn write cannot split (a disk sector): the segment header and
/// the start of the first record share the first one.
pub const SECTOR_BYTES: u64 = 512;

const _: () = assert!(BLOCK_BYTES % RECORD_ALIGN_BYTES == 0);
const _: () = assert!(SYNCS_IN_FLIGHT_MAX >= 1 && SYNCS_IN_FLIGHT_MAX <= WRITES_IN_FLIGHT_MAX);
const _: () = assert!(SEGMENT_HEADER_BYTES % RECORD_ALIGN_BYTES == 0);
const _: () = assert!(RECORD_HEADER_BYTES % RECORD_ALIGN_BYTES == 0);
const _: () = assert!(SEGMENT_SIZE_BYTES_DEFAULT % BLOCK_BYTES == 0);
const _: () = assert!(SEGMENT_SIZE_BYTES_MIN % BLOCK_BYTES == 0);
const _: () = assert!(SEGMENT_SIZE_BYTES_DEFAULT <= SEGMENT_SIZE_BYTES_MAX);
const _: () = assert!(WRITE_BUFFER_BYTES_MIN as u64 % BLOCK_BYTES == 0);
const _: () = assert!(WRITE_BYTES_MAX_DEFAULT as u64 % BLOCK_BYTES == 0);
const _: () = assert!(SEGMENT_HEADER_BYTES < SECTOR_BYTES && BLOCK_BYTES % SECTOR_BYTES == 0);

/// Rounds `v` up to a multiple of `align` (a power of two).
pub const fn align_up(v: u64, align: u64) -> u64 {
    (v + align - 1) & !(align - 1)
}

/// Rounds `v` down to a multiple of `align` (a power of two).
pub const fn align_down(v: u64, align: u64) -> u64 {
    v & !(align - 1)
}
