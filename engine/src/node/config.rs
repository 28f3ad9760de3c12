//! What a node needs to know to start: who it is, where its peers listen,
//! where its data lives, and the shape every node of the cluster shares.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use raftcore::NodeId;

/// Most cores a node runs (executors, WALs, listeners per node).
pub const CORES_MAX: u32 = 64;
/// Most groups created at start.
pub const GROUPS_MAX: u64 = 1 << 20;

#[derive(Clone, Debug, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's id, nonzero, unique in the cluster.
    pub node_id: u64,
    /// Every node's id and peer address (this node included). Core `k` of a
    /// node listens for peers on the address's port + `k`. In TOML the ids
    /// are table keys (`1 = "127.0.0.1:7101"`), which TOML makes strings.
    #[serde(with = "id_keys")]
    pub peers: BTreeMap<u64, SocketAddr>,
    /// Where clients connect: core `k` serves the port + `k` (port 0 picks
    /// free ports; the bound addresses are reported by `Node::client_addrs`).
    pub client_addr: SocketAddr,
    pub data_dir: PathBuf,
    /// Executors (and WALs) of this node; every node of a cluster runs the same count.
    pub cores: u32,
    /// Groups `1..=groups` exist on every node, replicated by every node.
    pub groups: u64,
    /// Checked in every peer handshake: nodes of different clusters never talk.
    #[serde(default = "default_cluster_id")]
    pub cluster_id: u64,
    /// Length of one Raft tick.
    #[serde(default = "default_tick_ms")]
    pub tick_ms: u64,
    /// Make every WAL write durable before what it holds is acknowledged:
    /// segments are opened O_DSYNC, so a write is durable when it completes
    /// (one operation per record instead of a write and then an fdatasync).
    /// Off only for experiments: acknowledged writes can then be lost in a
    /// power cut.
    #[serde(default = "default_true")]
    pub sync: bool,
    /// Pin core `k` to CPU `k % cpus` (off when several nodes share a machine).
    #[serde(default)]
    pub pin_cores: bool,
    /// A group snapshots its state machine and compacts its log every this
    /// many applied entries.
    #[serde(default = "default_compact_every_entries")]
    pub compact_every_entries: u64,
    /// Raft log entries a core keeps in memory, all its groups together: a
    /// safety valve against running out of memory when many groups write
    /// too slowly to reach `compact_every_entries`. A core checks it at
    /// every tick against a running count; beyond it, the core compacts the
    /// groups with the longest logs (a snapshot each, at most 64 a tick,
    /// and no more than the snapshot writer can queue) until it is back
    /// under nine tenths of it. The snapshot files are saved off the core's
    /// loop, but each snapshot serializes its group's state machine on the
    /// core.
    #[serde(default = "default_log_entries_in_memory_max")]
    pub log_entries_in_memory_max: u64,
    /// Client connections the node keeps open, spread evenly over its cores
    /// (each serves its own port); a core at its share closes every new one
    /// at once (`client_connections_refused`). A bound on the file
    /// descriptors and read buffers (64 KiB each) that clients can take.
    #[serde(default = "default_client_connections_max")]
    pub client_connections_max: u32,
    /// How long a new client connection may take to send its hello before
    /// it is closed (it holds one of the core's connections meanwhile).
    #[serde(default = "default_client_hello_timeout_ms")]
    pub client_hello_timeout_ms: u64,
    /// On SIGINT or SIGTERM, `myriad serve` first hands every group this
    /// node leads to another voter (a leadership transfer each), waiting up
    /// to this long for the node to lead none, so that its groups do not go
    /// an election timeout without a leader when it stops; 0 stops at once.
    #[serde(default = "default_stop_drain_ms")]
    pub stop_drain_ms: u64,
    /// A node leading more than its share of a core's groups (a quarter of it,
    /// at least 2, over) hands some, every two election timeouts, to the
    /// peer leading the fewest, up to that peer's share: after a restart
    /// (or a drain) a node leads nothing until then.
    #[serde(default = "default_true")]
    pub balance_leaders: bool,
    /// Size of each WAL segment file (preallocated, 4 KiB multiple). A
    /// client command may have at most a quarter of it (4 MiB at most) less
    /// 4 KiB; every node of a cluster should use the same size.
    #[serde(default = "default_wal_segment_size_bytes")]
    pub wal_segment_size_bytes: u64,
    /// WAL segments per core beyond which the once-a-second purge copies the
    /// live entries of the groups that pin the oldest segments (idle groups
    /// that never compact) to the head, so those segments can go: disk use
    /// stays near the live log plus this many segments. Off by default: the
    /// copy takes every pinning group, busy ones too, so when the live logs
    /// of all groups outgrow this many segments the purge keeps copying
    /// them. Without it a segment goes once every group in it has compacted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal_rewrite_after_segments: Option<usize>,
}

/// `compact_every_entries` unless configured.
pub const COMPACT_EVERY_ENTRIES_DEFAULT: u64 = 8192;
/// `log_entries_in_memory_max` unless configured.
pub const LOG_ENTRIES_IN_MEMORY_MAX_DEFAULT: u64 = 4_000_000;
/// `client_connections_max` unless configured.
pub const CLIENT_CONNECTIONS_MAX_DEFAULT: u32 = 4096;
/// `client_hello_timeout_ms` unless configured.
pub const CLIENT_HELLO_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// Longest `client_hello_timeout_ms` accepted (an hour).
pub const CLIENT_HELLO_TIMEOUT_MS_MAX: u64 = 3_600_000;
/// `stop_drain_ms` unless configured.
pub const STOP_DRAIN_MS_DEFAULT: u64 = 5000;

fn default_compact_every_entries() -> u64 {
    COMPACT_EVERY_ENTRIES_DEFAULT
}

fn default_log_entries_in_memory_max() -> u64 {
    LOG_ENTRIES_IN_MEMORY_MAX_DEFAULT
}

fn default_client_connections_max() -> u32 {
    CLIENT_CONNECTIONS_MAX_DEFAULT
}

fn default_client_hello_timeout_ms() -> u64 {
    CLIENT_HELLO_TIMEOUT_MS_DEFAULT
}

fn default_stop_drain_ms() -> u64 {
    STOP_DRAIN_MS_DEFAULT
}

fn default_wal_segment_size_bytes() -> u64 {
    crate::wal::limits::SEGMENT_SIZE_BYTES_DEFAULT
}

/// Maps keyed by node id, written with string keys (as TOML and JSON need).
mod id_keys {
    use std::collections::BTreeMap;
    use std::net::SocketAddr;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(map: &BTreeMap<u64, SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
        let strings: BTreeMap<String, &SocketAddr> = map.iter().map(|(k, v)| (k.to_string(), v)).collect();
        strings.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<u64, SocketAddr>, D::Error> {
        let strings = BTreeMap::<String, SocketAddr>::deserialize(d)?;
        strings
            .into_iter()
            .map(|(k, v)| k.trim().parse::<u64>().map(|id| (id, v)).map_err(|_| serde::de::Error::custom(format!("peer id `{k}` is not a node id (an unsigned integer)"))))
            .collect()
    }
}

fn default_cluster_id() -> u64 {
    0x4D59_5249_4144 // "MYRIAD"
}

fn default_tick_ms() -> u64 {
    100
}

fn default_true() -> bool {
    true
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("node_id must be nonzero")]
    ZeroNodeId,
    #[error("node {0} is not in the peer list")]
    SelfNotInPeers(u64),
    #[error("peer id 0 is reserved")]
    ZeroPeerId,
    #[error("cores must be in 1..={CORES_MAX}, got {0}")]
    Cores(u32),
    #[error("groups must be in 1..={GROUPS_MAX}, got {0}")]
    Groups(u64),
    #[error("tick_ms must be in 1..=10000, got {0}")]
    Tick(u64),
    #[error("compact_every_entries and log_entries_in_memory_max must be at least 1")]
    CompactEvery,
    #[error("client_connections_max ({max}) must be at least the core count ({cores}): each core takes its share")]
    ClientConnections { max: u32, cores: u32 },
    #[error("client_hello_timeout_ms must be in 1..={CLIENT_HELLO_TIMEOUT_MS_MAX}, got {0}")]
    HelloTimeout(u64),
    #[error("{0}")]
    Wal(String),
    #[error("{0}")]
    PortOverlap(String),
    #[error("the peer port {port} + {cores} cores does not fit in 65535")]
    PortRange { port: u16, cores: u32 },
}

impl NodeConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=CLIENT_HELLO_TIMEOUT_MS_MAX).contains(&self.client_hello_timeout_ms) {
            return Err(ConfigError::HelloTimeout(self.client_hello_timeout_ms));
        }
        if self.node_id == 0 {
            return Err(ConfigError::ZeroNodeId);
        }
        if !self.peers.contains_key(&self.node_id) {
            return Err(ConfigError::SelfNotInPeers(self.node_id));
        }
        if self.peers.contains_key(&0) {
            return Err(ConfigError::ZeroPeerId);
        }
        if self.cores == 0 || self.cores > CORES_MAX {
            return Err(ConfigError::Cores(self.cores));
        }
        if self.groups == 0 || self.groups > GROUPS_MAX {
            return Err(ConfigError::Groups(self.groups));
        }
        if self.tick_ms == 0 || self.tick_ms > 10_000 {
            return Err(ConfigError::Tick(self.tick_ms));
        }
        if self.compact_every_entries == 0 || self.log_entries_in_memory_max == 0 {
            return Err(ConfigError::CompactEvery);
        }
        if self.client_connections_max < self.cores {
            return Err(ConfigError::ClientConnections { max: self.client_connections_max, cores: self.cores });
        }
        if self.wal_rewrite_after_segments.is_some_and(|n| n < 2) {
            return Err(ConfigError::Wal("wal_rewrite_after_segments must be at least 2".into()));
        }
        self.wal_options().check().map_err(|e| ConfigError::Wal(e.to_string()))?;
        for addr in self.peers.values().chain([&self.client_addr]) {
            if addr.port() != 0 && u32::from(addr.port()) + self.cores > 65_535 {
                return Err(ConfigError::PortRange { port: addr.port(), cores: self.cores });
            }
        }
        self.check_port_overlap()
    }

    /// Core `k` binds port + `k` of each range: ranges on one host must not
    /// meet (port 0 picks free ports and never does).
    fn check_port_overlap(&self) -> Result<(), ConfigError> {
        let mut ranges: Vec<(String, SocketAddr)> = self.peers.iter().map(|(id, a)| (format!("the peer ports of node {id}"), *a)).collect();
        ranges.push(("this node's client ports".into(), self.client_addr));
        ranges.retain(|(_, a)| a.port() != 0);
        let cores = self.cores as u16;
        for (i, (what_a, a)) in ranges.iter().enumerate() {
            for (what_b, b) in &ranges[i + 1..] {
                let same_host = a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified();
                if same_host && a.port() < b.port() + cores && b.port() < a.port() + cores {
                    let range = |a: &SocketAddr| format!("{}:{}..{}", a.ip(), a.port(), a.port() + cores - 1);
                    return Err(ConfigError::PortOverlap(format!("{what_a} ({}) overlap {what_b} ({}) with {} cores per node", range(a), range(b), self.cores)));
                }
            }
        }
        Ok(())
    }

    /// The options every core opens its WAL with.
    pub fn wal_options(&self) -> crate::wal::WalOptions {
        // O_DSYNC rather than write-then-fdatasync: one device operation per
        // record halves the time to durability; on this machine the default
        // bench run went from 43.2 k to 51.5 k writes/s (medians of 13
        // interleaved pairs, 2026-11-30).
        let sync_mode = if self.sync { crate::wal::SyncMode::Dsync } else { crate::wal::SyncMode::NoSync };
        crate::wal::WalOptions {
            sync_mode,
            segment_size_bytes: self.wal_segment_size_bytes,
            segments_soft_max: self.wal_rewrite_after_segments.unwrap_or(usize::MAX),
            ..Default::default()
        }
    }

    pub fn tick(&self) -> Duration {
        Duration::from_millis(self.tick_ms)
    }

    /// How long a peer may send nothing before this node counts it lost:
    /// twice the shortest election timeout (2 s at the default tick), so
    /// that the groups it led while at rest elect another leader about as
    /// fast as busy ones do, and a few late keepalives do not count.
    pub fn peer_liveness(&self) -> crate::transport::peer::Liveness {
        let ticks = 2 * super::shard::ELECTION_TIMEOUT_TICKS;
        crate::transport::peer::Liveness { silence_timeout: self.tick() * ticks }
    }

    /// The client connections each core keeps open at most.
    pub fn client_connections_per_core(&self) -> usize {
        (self.client_connections_max / self.cores.max(1)) as usize
    }

    pub fn voters(&self) -> Vec<NodeId> {
        self.peers.keys().map(|&id| NodeId(id)).collect()
    }

    /// The address core `core` of node `node` listens on for peers.
    pub fn peer_addr(&self, node: u64, core: u32) -> Option<SocketAddr> {
        let base = self.peers.get(&node)?;
        Some(SocketAddr::new(base.ip(), base.port() + core as u16))
    }

    /// The core that owns `group` on every node.
    pub fn core_of(&self, group: u64) -> u32 {
        core_of(group, self.cores)
    }
}

/// The core that owns `group`: the same fixed function on every node and in
/// every client, so requests go straight to the right core.
pub fn core_of(group: u64, cores: u32) -> u32 {
    (group.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as u32 % cores
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_with_peer_ids_as_keys_round_trips() {
        let text = r#"
            node_id = 2
            client_addr = "127.0.0.1:7300"
            data_dir = "/tmp/x"
            cores = 2
            groups = 10
            [peers]
            1 = "127.0.0.1:7101"
            2 = "127.0.0.1:7201"
        "#;
        let cfg: NodeConfig = toml::from_str(text).unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.peer_addr(1, 1), Some("127.0.0.1:7102".parse().unwrap()));
        assert_eq!(cfg.tick_ms, 100);
        let back: NodeConfig = toml::from_str(&toml::to_string(&cfg).unwrap()).unwrap();
        assert_eq!(back.peers, cfg.peers);
        let bad = text.replace("1 = ", "one = ");
        assert!(toml::from_str::<NodeConfig>(&bad).unwrap_err().to_string().contains("not a node id"));
    }

    #[test]
    fn overlapping_port_ranges_are_refused() {
        let text = r#"
            node_id = 1
            client_addr = "127.0.0.1:7102"
            data_dir = "/tmp/x"
            cores = 2
            groups = 10
            [peers]
            1 = "127.0.0.1:7100"
            2 = "127.0.0.2:7100"
        "#;
        let cfg: NodeConfig = toml::from_str(text).unwrap();
        cfg.validate().unwrap();
        let overlapping: NodeConfig = toml::from_str(&text.replace("7102", "7101")).unwrap();
        let err = overlapping.validate().unwrap_err().to_string();
        assert!(err.contains("overlap") && err.contains("127.0.0.1:7100..7101"), "{err}");
        let wildcard: NodeConfig = toml::from_str(&text.replace("127.0.0.1:7102", "0.0.0.0:7101")).unwrap();
        assert!(wildcard.validate().is_err(), "a wildcard address meets every host");
    }

    #[test]
    fn wal_settings_are_checked() {
        let text = r#"
            node_id = 1
            client_addr = "127.0.0.1:7200"
            data_dir = "/tmp/x"
            cores = 1
            groups = 10
            wal_segment_size_bytes = SIZE
            REWRITE
            [peers]
            1 = "127.0.0.1:7101"
        "#;
        let parse = |size: &str, rewrite: &str| -> NodeConfig { toml::from_str(&text.replace("SIZE", size).replace("REWRITE", rewrite)).unwrap() };
        let cfg = parse("1048576", "wal_rewrite_after_segments = 4");
        cfg.validate().unwrap();
        assert_eq!(cfg.wal_options().segments_soft_max, 4);
        assert_eq!(parse("1048576", "").wal_options().segments_soft_max, usize::MAX, "rewrites are off by default");
        assert!(parse("1048576", "wal_rewrite_after_segments = 1").validate().unwrap_err().to_string().contains("at least 2"));
        assert!(parse("1000", "").validate().unwrap_err().to_string().contains("segment_size_bytes"));
    }
}
