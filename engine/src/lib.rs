//! Everything of Myriad that touches the world: executors, the per-core WAL,
//! transport, state machines, snapshots and the client API.

pub mod wal;
