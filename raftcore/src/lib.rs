//! The Raft protocol for one group as a pure state machine: no I/O, no clock,
//! no threads, no async. Time is `tick()`, randomness a seeded RNG, output a
//! `Ready` batch that the caller persists, sends and applies (see `node`).
//!
//! Module map: `raft` is the protocol; `node` the caller's API; `log` the
//! replicated log over a `storage::Storage`; `tracker`, `quorum` and
//! `confchange` are pure bookkeeping and arithmetic; `limits` holds every bound;
//! `harness` drives many in-memory groups for benchmarks.

pub mod confchange;
pub mod config;
pub mod harness;
pub mod limits;
pub mod log;
pub mod message;
pub mod node;
pub mod quorum;
pub mod raft;
pub mod rng;
pub mod storage;
pub mod tracker;
pub mod types;

pub use confchange::{membership_fault, ChangeOp, ConfChange, ConfChangeError, MembershipFault, Transition};
pub use config::{Config, ConfigError};
pub use message::{Malformed, Message, MessageBody, RejectHint, Traffic};
pub use node::{RawNode, Ready};
pub use raft::{ProposeError, ReadError, TransferError};
pub use storage::{MemStorage, Storage, StorageError};
pub use types::{ConfState, Entry, EntryKind, HardState, LogIndex, NodeId, ReadState, Role, Snapshot, SnapshotMeta, SoftState, Term};
