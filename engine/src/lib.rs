//! Everything of Myriad that touches the world: executors, the per-core WAL,
//! transport, state machines, snapshots and the client API.

pub mod client;
pub mod framing;
pub mod group_table;
pub mod kv;
pub mod loopback;
pub mod node;
pub mod signal;
pub mod tasks;
pub mod transport;
pub mod wal;

/// glommio's errors may hold a non-`Sync` payload; keep their message only.
pub(crate) fn io_error<T>(e: glommio::GlommioError<T>) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// The environment variable with which mimalloc maps its arenas with
/// `MADV_HUGEPAGE`; `configure_heap` leaves huge pages on when it is set.
pub const HUGE_PAGES_ENV: &std::ffi::CStr = c"MIMALLOC_ALLOW_LARGE_OS_PAGES";

/// Turns transparent huge pages off for this process unless
/// `MIMALLOC_ALLOW_LARGE_OS_PAGES` is set. Call first thing in `main`.
///
/// Off by default for the tail latency: while a node's heap grows, every
/// first touch of a 2 MiB page faults in and zeroes it on the executor, and
/// on this VM that cost the p99 at 10,000 groups and 256 in flight (9.8-11.9 ms
/// against 5.8-9.7 ms, 3 pairs, 2026-11-30). With 4 KiB pages the peak RSS of
/// the default bench run was also about a third lower.
///
/// On for throughput over long runs, once the heap stops growing: with
/// `MIMALLOC_ALLOW_LARGE_OS_PAGES=1 MIMALLOC_PURGE_DELAY=10000` (huge pages,
/// and freed memory kept 10 s instead of purged after 1 s, which would split
/// them) 10,000 groups at 1,024 in flight over 40 s ran 102 and 96 k against
/// 78 and 76 k writes/s (2 pairs, RSS about a quarter higher), and 78.5 and
/// 79.8 k against 72.2 and 65.8 k with a 1 M budget: fewer TLB misses in a
/// heap of GiBs touched at random.
pub fn configure_heap() {
    // SAFETY: getenv reads the environment before any other thread exists;
    // prctl with PR_SET_THP_DISABLE takes integer arguments only.
    unsafe {
        if !libc::getenv(HUGE_PAGES_ENV.as_ptr()).is_null() {
            return;
        }
        if libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) != 0 {
            tracing::debug!("PR_SET_THP_DISABLE: {}", std::io::Error::last_os_error());
        }
    }
}
