//! The cluster a workload runs against: an embedded 3-node cluster in this
//! process (real TCP on loopback, real fsynced WALs in the run's data
//! directory) or, with `--target`, running `myriad` servers.
//!
//! The embedded cluster shares executors: executor `k` hosts core `k` of
//! every node, so a run with `--cores 2` keeps two busy executors, not six.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;
use engine::client::ClusterMap;
use engine::node::{Cluster, MetricsSnapshot, NodeConfig};

use crate::data_dir::DataDir;
use crate::outcome::RunContext;
use crate::progress::Plan;

/// The Raft tick of embedded clusters.
pub const TICK_MS: u64 = 100;

pub struct Embedded {
    pub cluster: Cluster,
    pub configs: BTreeMap<u64, NodeConfig>,
    pub map: ClusterMap,
    /// The nodes' WALs and snapshots. Declared after `cluster`, so that a run
    /// that returns early stops the cluster before its directory goes.
    dir: DataDir,
}

#[derive(Clone, Debug)]
pub struct EmbeddedShape {
    pub nodes: u64,
    pub groups: u64,
    pub cores: u32,
    pub sync: bool,
    /// Each node's `log_entries_in_memory_max` (per core).
    pub log_entries_in_memory_max: u64,
}

pub fn node_configs(shape: &EmbeddedShape, data_dir: &Path) -> anyhow::Result<BTreeMap<u64, NodeConfig>> {
    let bases = engine::loopback::free_port_runs(shape.nodes as usize, shape.cores as u16).context("choosing the nodes' peer ports")?;
    let peers: BTreeMap<u64, SocketAddr> = (1..=shape.nodes).zip(bases).map(|(id, base)| (id, SocketAddr::from(([127, 0, 0, 1], base)))).collect();
    let configs = (1..=shape.nodes)
        .map(|id| {
            let cfg = NodeConfig {
                node_id: id,
                peers: peers.clone(),
                client_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
                data_dir: data_dir.to_path_buf(),
                cores: shape.cores,
                groups: shape.groups,
                cluster_id: 0x4D59_5249_4144,
                tick_ms: TICK_MS,
                sync: shape.sync,
                pin_cores: false,
                compact_every_entries: engine::node::COMPACT_EVERY_ENTRIES_DEFAULT,
                log_entries_in_memory_max: shape.log_entries_in_memory_max,
                client_connections_max: engine::node::CLIENT_CONNECTIONS_MAX_DEFAULT,
                client_hello_timeout_ms: engine::node::CLIENT_HELLO_TIMEOUT_MS_DEFAULT,
                stop_drain_ms: engine::node::STOP_DRAIN_MS_DEFAULT,
                balance_leaders: true,
                wal_segment_size_bytes: engine::wal::limits::SEGMENT_SIZE_BYTES_DEFAULT,
                wal_rewrite_after_segments: None,
            };
            (id, cfg)
        })
        .collect();
    Ok(configs)
}

impl Embedded {
    /// The start-up every embedded mode shares: opens the run's data
    /// directory, starts the progress phase `phase` (counted in groups) and
    /// starts a cluster of `shape` in that directory, which it keeps until
    /// `shutdown`.
    pub fn start(ctx: &RunContext, shape: &EmbeddedShape, phase: &str, plan: Plan) -> anyhow::Result<Embedded> {
        let dir = ctx.open_data_dir()?;
        ctx.progress.phase(phase, "groups", plan);
        anyhow::ensure!(shape.nodes >= 1 && shape.nodes <= 7, "--nodes must be 1..=7");
        let configs = node_configs(shape, dir.path())?;
        let cluster = Cluster::start(configs.values().cloned().collect(), Some(shape.cores)).context("starting the embedded cluster")?;
        let map = ClusterMap { nodes: configs.keys().map(|&id| (id, cluster.client_addrs(id))).collect() };
        Ok(Embedded { cluster, configs, map, dir })
    }

    /// Stops every node, then lets the data directory go (a temporary one is
    /// removed).
    pub fn shutdown(self) -> anyhow::Result<()> {
        let stopped = self.cluster.shutdown();
        drop(self.dir);
        stopped
    }

    /// Counters summed over every node.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.cluster.metrics_all()
    }
}

/// `--target 1=host:port,2=host:port` or `host:port,host:port` (ids 1, 2, …):
/// each node's base client address; core `k` serves port + `k`.
pub fn parse_target(text: &str, cores: u32) -> anyhow::Result<ClusterMap> {
    let mut bases = BTreeMap::new();
    for (i, part) in text.split(',').map(str::trim).filter(|p| !p.is_empty()).enumerate() {
        let (id, addr) = match part.split_once('=') {
            Some((id, addr)) => (id.parse::<u64>().with_context(|| format!("node id in `{part}`"))?, addr),
            None => (i as u64 + 1, part),
        };
        let addr: SocketAddr = addr.parse().with_context(|| format!("`{addr}` is not host:port"))?;
        anyhow::ensure!(bases.insert(id, addr).is_none(), "node {id} listed twice in --target");
    }
    anyhow::ensure!(!bases.is_empty(), "--target lists no server");
    Ok(ClusterMap::from_bases(&bases, cores))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_with_and_without_ids() {
        let m = parse_target("127.0.0.1:7100,127.0.0.1:7200", 2).unwrap();
        assert_eq!(m.nodes[&2], vec!["127.0.0.1:7200".parse::<SocketAddr>().unwrap(), "127.0.0.1:7201".parse::<SocketAddr>().unwrap()]);
        let m = parse_target("3=127.0.0.1:7300", 1).unwrap();
        assert_eq!(m.nodes.keys().copied().collect::<Vec<_>>(), vec![3]);
        assert!(parse_target("nonsense", 1).is_err());
        assert!(parse_target("1=127.0.0.1:1,1=127.0.0.1:2", 1).is_err());
    }
}
