//! Everything of Myriad that touches the world: executors, the per-core WAL,
//! transport, state machines, snapshots and the client API.

pub mod client;
pub mod framing;
pub mod group_table;
pub mod kv;
pub mod node;
pub mod signal;
pub mod tasks;
pub mod transport;
pub mod wal;

/// glommio's errors may hold a non-`Sync` payload; keep their message only.
pub(crate) fn io_error<T>(e: glommio::GlommioError<T>) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// Turns transparent huge pages off for this process. With THP each page
/// mimalloc touches first faults in (and zeroes) 2 MiB; without, 4 KiB. The
/// default bench run kept the same throughput and its peak RSS fell from about
/// 390 MiB to 270 MiB (2026-11-29). Call first thing in `main`.
pub fn disable_transparent_huge_pages() {
    // SAFETY: prctl with PR_SET_THP_DISABLE takes integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if rc != 0 {
        tracing::debug!("PR_SET_THP_DISABLE: {}", std::io::Error::last_os_error());
    }
}
