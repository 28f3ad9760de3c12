//! Per-replica configuration, validated once when the replica is created.

use crate::limits;
use crate::types::NodeId;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("node id 0 is reserved for \"no node\"")]
    ZeroId,
    #[error("heartbeat_ticks must be at least 1 and below election_timeout_ticks ({election_timeout_ticks}), got {heartbeat_ticks}")]
    HeartbeatTicks { heartbeat_ticks: u32, election_timeout_ticks: u32 },
    #[error("lease_ticks ({lease_ticks}) must be below election_timeout_ticks ({election_timeout_ticks})")]
    LeaseTicks { lease_ticks: u32, election_timeout_ticks: u32 },
    #[error("lease reads need check_quorum: without it a deposed leader cannot know")]
    LeaseWithoutCheckQuorum,
    #[error("skip_heartbeats_after_appends needs two heartbeat intervals ({heartbeat_ticks} ticks each) within the election timeout ({election_timeout_ticks})")]
    HeartbeatSkipTooLong { heartbeat_ticks: u32, election_timeout_ticks: u32 },
    #[error("{name} must be between 1 and {max}, got {value}")]
    OutOfRange { name: &'static str, value: u64, max: u64 },
}

#[derive(Clone, Debug)]
pub struct Config {
    pub id: NodeId,
    /// A follower campaigns after a random timeout in `[t, 2t)` of this `t`.
    pub election_timeout_ticks: u32,
    pub heartbeat_ticks: u32,
    /// Leader lease for reads without a round trip; 0 disables lease reads.
    /// Must be shorter than the election timeout; see `RawNode::read_index`.
    pub lease_ticks: u32,
    pub pre_vote: bool,
    pub check_quorum: bool,
    /// A leader sends no heartbeat that asks no answer to a follower it sent
    /// an append since the last round: the append kept the follower's
    /// election timer from running out, and the commit the heartbeat would
    /// carry reaches it with the next append, or with a round without
    /// appends, which the leader waits for before it counts as idle. Fewer
    /// messages while groups are busy; followers learn commits later. A
    /// follower then hears from its leader at least every two heartbeat
    /// intervals, which must fit in the election timeout.
    pub skip_heartbeats_after_appends: bool,
    pub max_inflight_msgs: usize,
    pub max_append_entries: usize,
    pub max_append_bytes: u64,
    pub snapshot_chunk_bytes: u64,
    pub snapshot_chunks_inflight: u64,
    /// A learner may be promoted only when it is at most this far behind.
    pub promote_lag_entries_max: u64,
    /// Seed of the replica's election-timeout randomness (`RawNode::new`;
    /// `RawNode::new_shared` takes one per group instead).
    pub seed: u64,
}

impl Config {
    /// Sensible defaults for a replica with this id: 10-tick elections, 1-tick
    /// heartbeats, pre-vote and check-quorum on, a 8-tick lease.
    pub fn new(id: NodeId) -> Config {
        Config {
            id,
            election_timeout_ticks: 10,
            heartbeat_ticks: 1,
            lease_ticks: 8,
            pre_vote: true,
            check_quorum: true,
            skip_heartbeats_after_appends: false,
            max_inflight_msgs: 256,
            max_append_entries: 4096,
            max_append_bytes: 1024 * 1024,
            snapshot_chunk_bytes: 1024 * 1024,
            snapshot_chunks_inflight: 4,
            promote_lag_entries_max: 1000,
            seed: id.0,
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.id.is_none() {
            return Err(ConfigError::ZeroId);
        }
        if self.heartbeat_ticks == 0 || self.heartbeat_ticks >= self.election_timeout_ticks {
            return Err(ConfigError::HeartbeatTicks { heartbeat_ticks: self.heartbeat_ticks, election_timeout_ticks: self.election_timeout_ticks });
        }
        if self.lease_ticks >= self.election_timeout_ticks {
            return Err(ConfigError::LeaseTicks { lease_ticks: self.lease_ticks, election_timeout_ticks: self.election_timeout_ticks });
        }
        if self.lease_ticks > 0 && !self.check_quorum {
            return Err(ConfigError::LeaseWithoutCheckQuorum);
        }
        if self.skip_heartbeats_after_appends && 2 * self.heartbeat_ticks >= self.election_timeout_ticks {
            return Err(ConfigError::HeartbeatSkipTooLong { heartbeat_ticks: self.heartbeat_ticks, election_timeout_ticks: self.election_timeout_ticks });
        }
        check_range("max_inflight_msgs", self.max_inflight_msgs as u64, limits::INFLIGHT_MSGS_MAX as u64)?;
        check_range("max_append_entries", self.max_append_entries as u64, limits::APPEND_ENTRIES_MAX as u64)?;
        check_range("max_append_bytes", self.max_append_bytes, limits::APPEND_BYTES_MAX)?;
        check_range("snapshot_chunk_bytes", self.snapshot_chunk_bytes, limits::SNAPSHOT_CHUNK_BYTES_MAX)?;
        check_range("snapshot_chunks_inflight", self.snapshot_chunks_inflight, limits::SNAPSHOT_CHUNKS_INFLIGHT_MAX)?;
        Ok(())
    }
}

fn check_range(name: &'static str, value: u64, max: u64) -> Result<(), ConfigError> {
    if value == 0 || value > max {
        return Err(ConfigError::OutOfRange { name, value, max });
    }
    Ok(())
}
