//! Every bound raftcore enforces, in one place, checked against each other at
//! compile time. Configurable values are validated against these maxima.

/// Most append messages in flight to one follower in replicate state.
pub const INFLIGHT_MSGS_MAX: usize = 4096;
/// Most entries in one append message.
pub const APPEND_ENTRIES_MAX: usize = 65_536;
/// Most payload bytes in one append message (the engine's frame limit is larger).
pub const APPEND_BYTES_MAX: u64 = 16 * 1024 * 1024;
/// Most bytes of one snapshot chunk.
pub const SNAPSHOT_CHUNK_BYTES_MAX: u64 = 16 * 1024 * 1024;
/// Most snapshot chunks in flight to one follower.
pub const SNAPSHOT_CHUNKS_INFLIGHT_MAX: u64 = 64;
/// Largest snapshot a follower buffers while receiving it.
pub const SNAPSHOT_BYTES_MAX: u64 = 4 * 1024 * 1024 * 1024;
/// Most voters (and separately, learners) in one configuration.
pub const VOTERS_MAX: usize = 64;
/// Most linearizable reads waiting at one leader.
pub const PENDING_READS_MAX: usize = 65_536;
/// Most heartbeat rounds a leader remembers the send tick of (for the lease).
pub const HEARTBEAT_ROUNDS_REMEMBERED_MAX: usize = 64;
/// Most committed entry bytes handed out for applying in one `Ready`.
pub const APPLY_BYTES_PER_READY_MAX: u64 = 64 * 1024 * 1024;
/// Most readies handed out and not yet reported durable.
pub const READIES_IN_FLIGHT_MAX: usize = 1024;

const _: () = assert!(APPEND_ENTRIES_MAX as u64 <= APPEND_BYTES_MAX);
const _: () = assert!(SNAPSHOT_CHUNK_BYTES_MAX * SNAPSHOT_CHUNKS_INFLIGHT_MAX <= SNAPSHOT_BYTES_MAX);
const _: () = assert!(INFLIGHT_MSGS_MAX <= READIES_IN_FLIGHT_MAX * 4);
/// Largest log index and term a message may carry: half the range, so that
/// `next()` and `plus()` on them never overflow. No group gets near either;
/// beyond them a message can only come from a damaged peer.
pub const LOG_INDEX_MAX: u64 = u64::MAX >> 1;
pub const TERM_MAX: u64 = u64::MAX >> 1;
/// Most entries a leader holds uncommitted before refusing proposals.
pub const UNCOMMITTED_ENTRIES_MAX: u64 = 1 << 20;
