//! A three-node cluster on loopback for tests: each node its own `Cluster`
//! (its own executor thread), so one can be killed and restarted while the
//! others run. Data lives in a temporary directory on the real disk.

#![allow(dead_code)]

pub mod relay;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use engine::client::{Client, ClientOptions, ClusterMap, Outcome};
use engine::client::proto::Reply;
use engine::node::{Cluster, NodeConfig};
use relay::{Break, Relay};

pub struct TestCluster {
    pub dir: tempfile::TempDir,
    pub configs: BTreeMap<u64, NodeConfig>,
    pub nodes: BTreeMap<u64, Cluster>,
    pub client_addrs: BTreeMap<u64, Vec<SocketAddr>>,
    /// With `start_relayed`: the relay by which node `from` reaches node
    /// `to`, by `(from, to)`.
    pub relays: BTreeMap<(u64, u64), Relay>,
}

fn data_root() -> PathBuf {
    // O_DIRECT needs a real file system; the target directory is on one.
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&root).unwrap();
    root
}

impl TestCluster {
    pub fn start(groups: u64, cores: u32) -> TestCluster {
        TestCluster::start_with(groups, cores, |_| {})
    }

    /// `start`, with every node's configuration changed by `tweak` first.
    pub fn start_with(groups: u64, cores: u32, tweak: impl Fn(&mut NodeConfig)) -> TestCluster {
        TestCluster::start_inner(groups, cores, tweak, false)
    }

    /// `start_with`, each node reaching each peer through a relay of its own
    /// that `partition` can break and `heal` mend.
    pub fn start_relayed(groups: u64, cores: u32, tweak: impl Fn(&mut NodeConfig)) -> TestCluster {
        TestCluster::start_inner(groups, cores, tweak, true)
    }

    fn start_inner(groups: u64, cores: u32, tweak: impl Fn(&mut NodeConfig), relayed: bool) -> TestCluster {
        let _ = tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).with_test_writer().try_init();
        let dir = tempfile::tempdir_in(data_root()).unwrap();
        let pairs: Vec<(u64, u64)> = if relayed { (1..=3u64).flat_map(|a| (1..=3u64).filter(move |&b| b != a).map(move |b| (a, b))).collect() } else { Vec::new() };
        // Cores take consecutive ports from their node's base (and relays
        // from theirs).
        let mut bases = engine::loopback::free_port_runs(3 + pairs.len(), cores as u16).unwrap().into_iter();
        let loopback = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        let peers: BTreeMap<u64, SocketAddr> = (1..=3u64).zip(bases.by_ref()).map(|(id, base)| (id, loopback(base))).collect();
        let mut relays = BTreeMap::new();
        let mut views: BTreeMap<u64, BTreeMap<u64, SocketAddr>> = (1..=3).map(|id| (id, peers.clone())).collect();
        for ((from, to), base) in pairs.into_iter().zip(bases) {
            let ports = |base: u16| (0..cores as u16).map(move |k| loopback(base + k));
            let listeners = ports(base).map(|a| std::net::TcpListener::bind(a).expect("relay port still free")).collect();
            relays.insert((from, to), Relay::start(listeners, ports(peers[&to].port()).collect()));
            views.get_mut(&from).unwrap().insert(to, loopback(base));
        }
        let mut configs = BTreeMap::new();
        for id in 1..=3u64 {
            let cfg = NodeConfig {
                node_id: id,
                peers: views[&id].clone(),
                client_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
                data_dir: dir.path().to_path_buf(),
                cores,
                groups,
                cluster_id: 7,
                tick_ms: 50,
                sync: true,
                pin_cores: false,
                compact_every_entries: 64,
                log_entries_in_memory_max: engine::node::LOG_ENTRIES_IN_MEMORY_MAX_DEFAULT,
                client_connections_max: engine::node::CLIENT_CONNECTIONS_MAX_DEFAULT,
                client_hello_timeout_ms: engine::node::CLIENT_HELLO_TIMEOUT_MS_DEFAULT,
                stop_drain_ms: engine::node::STOP_DRAIN_MS_DEFAULT,
                balance_leaders: true,
                // Small segments, so that purges rewrite idle groups forward in
                // every cluster test.
                wal_segment_size_bytes: 1 << 20,
                wal_rewrite_after_segments: Some(4),
            };
            let mut cfg = cfg;
            tweak(&mut cfg);
            configs.insert(id, cfg);
        }
        let mut c = TestCluster { dir, configs, nodes: BTreeMap::new(), client_addrs: BTreeMap::new(), relays };
        for id in 1..=3 {
            c.restart(id);
        }
        c
    }

    pub fn restart(&mut self, id: u64) {
        let cluster = Cluster::start_node(self.configs[&id].clone()).expect("node starts");
        self.client_addrs.insert(id, cluster.client_addrs(id));
        self.nodes.insert(id, cluster);
    }

    /// Stops every core of `id` at once, as a crash would.
    /// Kills every node, then starts them all again on their data.
    pub fn restart_all(&mut self) {
        for id in 1..=3 {
            self.kill(id);
        }
        for id in 1..=3 {
            self.restart(id);
        }
    }

    pub fn kill(&mut self, id: u64) {
        if let Some(c) = self.nodes.remove(&id) {
            c.kill(id);
            c.shutdown().expect("node stops cleanly");
        }
    }

    /// Breaks every relay to and from node `id` (`start_relayed` only).
    pub fn partition(&self, id: u64, how: Break) {
        for ((from, to), relay) in &self.relays {
            if *from == id || *to == id {
                relay.break_with(how);
            }
        }
    }

    /// Mends every relay (`start_relayed` only).
    pub fn heal(&self) {
        self.relays.values().for_each(Relay::mend);
    }

    pub fn map(&self) -> ClusterMap {
        ClusterMap { nodes: self.client_addrs.clone() }
    }

    pub fn client(&self) -> Client {
        let opts = ClientOptions { request_timeout: Duration::from_secs(3), deadline: Duration::from_secs(20), ..Default::default() };
        Client::new(self.map(), opts)
    }

    /// A client that talks to node `id` only (for stale reads of one replica).
    pub fn client_of(&self, id: u64) -> Client {
        let nodes = [(id, self.client_addrs[&id].clone())].into_iter().collect();
        Client::new(ClusterMap { nodes }, ClientOptions { deadline: Duration::from_secs(2), ..Default::default() })
    }

    pub fn metrics(&self, id: u64) -> engine::node::MetricsSnapshot {
        self.nodes[&id].metrics(id)
    }

    /// The running node leading the most groups, and how many it leads.
    pub fn busiest_node(&self) -> (u64, u64) {
        self.nodes.keys().map(|&id| (id, self.metrics(id).leaders)).max_by_key(|&(_, leads)| leads).expect("a node runs")
    }

    /// Whether every replica of the first `groups` groups on every node rests.
    pub fn all_at_rest(&self, groups: u64) -> bool {
        self.nodes.keys().all(|&id| self.metrics(id).quiesced_groups == groups)
    }

    /// Waits until every replica rests (`all_at_rest`).
    pub fn wait_all_at_rest(&self, groups: u64) {
        eventually(Duration::from_secs(10), "every group at rest", || self.all_at_rest(groups));
    }

    /// Drains the node leading the most groups until it leads none; returns it.
    pub fn drain_busiest_node(&self) -> u64 {
        let (x, _) = self.busiest_node();
        assert_eq!(self.nodes[&x].drain_and_wait(x, Duration::from_secs(20)), 0, "node {x} handed over every leadership");
        x
    }
}

pub fn expect_done(outcome: Outcome, what: &str) {
    assert_eq!(outcome, Outcome::Ok(Reply::Done), "{what}");
}

/// Polls `check` until it holds or `timeout` passes.
pub fn eventually(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
