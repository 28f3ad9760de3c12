//! One module per bench mode; each exposes `XArgs` (its flags) and
//! `run(&XArgs, &RunContext) -> anyhow::Result<Outcome>`.

pub mod failover;
pub mod idle;
pub mod lin_kv;
pub mod raftcore;
pub mod recovery;
pub mod wal;
pub mod write;
