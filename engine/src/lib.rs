//! Everything of Myriad that touches the world: executors, the per-core WAL,
//! transport, state machines, snapshots and the client API.

pub mod client;
pub mod framing;
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
