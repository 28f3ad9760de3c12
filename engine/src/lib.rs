//! Everything of Myriad that touches the world: executors, the per-core WAL,
//! transport, state machines, snapshots and the client API.

pub mod accept;
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

/// Raises this process's soft limit on open files to its hard limit, and
/// returns the new soft limit. A node takes a descriptor for every client
/// connection (up to `client_connections_max`), every peer connection and
/// every WAL segment and snapshot file it has open; the usual soft limit
/// (1,024) is below what the default configuration may need, while the
/// hard limit is usually far above it.
pub fn raise_open_files_limit() -> std::io::Result<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            limit = raised;
        }
    }
    Ok(limit.rlim_cur)
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

#[cfg(test)]
mod tests {
    #[test]
    fn the_open_files_limit_is_raised_to_the_hard_limit() {
        let limit = super::raise_open_files_limit().expect("getrlimit and setrlimit");
        let mut now = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit writes the struct passed.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut now) }, 0);
        assert_eq!((limit, now.rlim_cur), (now.rlim_max, now.rlim_max));
    }
}
