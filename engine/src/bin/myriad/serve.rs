//! `myriad serve`: loads a node's configuration, checks what the library
//! cannot see (ports taken or overlapping, a data directory on tmpfs), runs
//! the node and stops it cleanly on SIGINT or SIGTERM.

use std::io::{IsTerminal, Write};
use std::mem::MaybeUninit;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use engine::node::config::CORES_MAX;
use engine::node::{Cluster, NodeConfig};

use crate::{EXIT_FAILED, EXIT_OK};

/// How often `serve` checks that every core still serves clients.
const HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How long a port probe waits for a connection.
const PORT_PROBE_TIMEOUT: Duration = Duration::from_millis(500);

#[derive(Args)]
pub struct ServeArgs {
    /// The node's configuration (TOML; `myriad config-example` prints one).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Overrides `node_id` (the node must be listed under [peers]).
    #[arg(long, value_name = "ID")]
    node_id: Option<u64>,
    /// Overrides `data_dir`.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Overrides `cores` (every node of a cluster must run the same count).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=i64::from(CORES_MAX)))]
    cores: Option<u32>,
    /// Overrides `client_addr` (core k serves its port + k; port 0 picks free ports).
    #[arg(long, value_name = "HOST:PORT")]
    client_addr: Option<SocketAddr>,
    /// Prints the effective configuration (file plus overrides) as TOML and exits.
    #[arg(long)]
    print_config: bool,
}

#[derive(Args)]
pub struct ExampleArgs {
    /// Which node of the example cluster.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=3))]
    pub node_id: u64,
}

pub fn run(args: &ServeArgs) -> u8 {
    match serve(args) {
        Ok(()) => EXIT_OK,
        Err(e) => {
            eprintln!("myriad: error: {e:#}");
            EXIT_FAILED
        }
    }
}

fn serve(args: &ServeArgs) -> anyhow::Result<()> {
    let cfg = effective_config(args)?;
    if args.print_config {
        print!("{}", to_toml(&cfg)?);
        return Ok(());
    }
    init_tracing();
    check_ports(&cfg)?;
    warn_if_tmpfs(&cfg.data_dir);
    warn_if_few_open_files(&cfg);
    // Blocked before the executors start, so every thread inherits the mask
    // and the signals wait for `sigwait` below instead of killing the process.
    let signals = SignalSet::block(&[libc::SIGINT, libc::SIGTERM]).context("blocking SIGINT and SIGTERM")?;
    let node = cfg.node_id;
    tracing::info!(node, cores = cfg.cores, groups = cfg.groups, data_dir = %cfg.data_dir.display(), "starting");
    let cluster = Cluster::start_node(cfg.clone()).with_context(|| format!("starting node {node}"))?;
    let clients = cluster.client_addrs(node);
    assert_eq!(clients.len(), cfg.cores as usize, "one client address per core");
    println!("{}", serving_line(&cfg, &clients));
    std::io::stdout().flush().context("writing to stdout")?;

    let sig = loop {
        if let Some(sig) = signals.wait_timeout(HEALTH_CHECK_INTERVAL).context("waiting for a signal")? {
            break sig;
        }
        if let Some(addr) = stopped_core(&clients) {
            let why = cluster.shutdown().err().map_or_else(|| "it reported no error".to_string(), |e| format!("{e:#}"));
            anyhow::bail!("node {node}: the core serving clients on {addr} stopped: {why}");
        }
    };
    tracing::info!(node, signal = signal_name(sig), "stopping");
    std::thread::spawn(move || {
        if let Ok(sig) = signals.wait() {
            eprintln!("myriad: second {}: exiting without a clean stop", signal_name(sig));
            std::process::exit(130);
        }
    });
    if cfg.stop_drain_ms > 0 {
        let began = Instant::now();
        let led = cluster.metrics(node).leaders;
        let left = cluster.drain_and_wait(node, Duration::from_millis(cfg.stop_drain_ms));
        let ms = began.elapsed().as_millis() as u64;
        if left == 0 {
            tracing::info!(node, groups = led, ms, "handed every leadership to other nodes");
        } else {
            tracing::warn!(node, groups = led, left, ms, "stopping while still leading {left} groups (no other node was up to take them, or stop_drain_ms ran out): the others elect their leaders after an election timeout");
        }
        // Clients stop sending here and take their last answers, so no
        // request is in flight when the node stops.
        let waiting = cluster.close_clients_and_wait(node, engine::node::drain::CLIENT_CLOSE_WAIT);
        if waiting > 0 {
            tracing::warn!(node, waiting, "stopping with client requests still waiting for their answer: their outcome is unknown to their clients");
        }
    }
    cluster.shutdown().with_context(|| format!("stopping node {node}"))?;
    tracing::info!(node, "stopped");
    Ok(())
}

/// The client address of a core that no longer listens, if any. A core
/// whose WAL fails ends its executor (and its listeners) while the others
/// run on; `Cluster` does not report it, so `serve` probes the ports and
/// stops the whole node rather than keep running without that core.
fn stopped_core(clients: &[SocketAddr]) -> Option<SocketAddr> {
    clients.iter().copied().find(|&addr| {
        let probe = std::net::TcpStream::connect_timeout(&reachable(addr), HEALTH_CHECK_INTERVAL);
        matches!(probe, Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused)
    })
}

fn serving_line(cfg: &NodeConfig, clients: &[SocketAddr]) -> String {
    let join = |addrs: &mut dyn Iterator<Item = SocketAddr>| addrs.map(|a| a.to_string()).collect::<Vec<_>>().join(",");
    let peers = join(&mut (0..cfg.cores).filter_map(|k| cfg.peer_addr(cfg.node_id, k)));
    let clients = join(&mut clients.iter().copied());
    format!("myriad serving: node={} cores={} groups={} clients={clients} peers={peers} data_dir={}", cfg.node_id, cfg.cores, cfg.groups, cfg.data_dir.display())
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // glommio reports failures it survives (io_memory not registered, …)
    // only as tracing events: without a subscriber they would vanish.
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal()).try_init();
}

/// Descriptors a node needs beside its client connections: peer connections,
/// WAL segments, snapshot files, io_uring rings, listeners (generous).
const OPEN_FILES_BESIDE_CLIENTS: u64 = 1024;

/// Raises the open-files limit as far as allowed; warns when even that is
/// too low for `client_connections_max`, since a node out of descriptors
/// refuses connections and holds back writes that need a new WAL segment.
fn warn_if_few_open_files(cfg: &NodeConfig) {
    let needed = u64::from(cfg.client_connections_max) + OPEN_FILES_BESIDE_CLIENTS;
    match engine::raise_open_files_limit() {
        Ok(limit) if limit < needed => tracing::warn!(
            "the open-files limit is {limit}, below the {needed} that client_connections_max = {} may need; raise the hard limit (ulimit -Hn, LimitNOFILE=) or lower client_connections_max",
            cfg.client_connections_max
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!("raising the open-files limit: {e}"),
    }
}

/// The configuration file with the command line's overrides, validated.
fn effective_config(args: &ServeArgs) -> anyhow::Result<NodeConfig> {
    let mut cfg = load_config(&args.config)?;
    if let Some(id) = args.node_id {
        cfg.node_id = id;
    }
    if let Some(dir) = &args.data_dir {
        cfg.data_dir = dir.clone();
    }
    if let Some(cores) = args.cores {
        cfg.cores = cores;
    }
    if let Some(addr) = args.client_addr {
        cfg.client_addr = addr;
    }
    cfg.validate().with_context(|| format!("{}", args.config.display()))?;
    Ok(cfg)
}

/// Reads a node's TOML configuration (`NodeConfig`'s serde attributes:
/// defaults, unknown fields refused, peers keyed by id strings).
pub fn load_config(path: &Path) -> anyhow::Result<NodeConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read the configuration {}", path.display()))?;
    let doc: toml::Table = toml::from_str(&text).with_context(|| format!("{} is not valid TOML", path.display()))?;
    doc.try_into().with_context(|| format!("{}: not a node configuration", path.display()))
}

/// `cfg` as TOML that `load_config` reads back.
fn to_toml(cfg: &NodeConfig) -> anyhow::Result<String> {
    toml::to_string(cfg).context("writing the configuration as TOML")
}

/// Refuses taken ports before the node starts (overlapping ranges are
/// refused by `NodeConfig::validate`). glommio binds with SO_REUSEPORT, so a
/// second node on a taken port binds without error and silently takes a
/// share of its connections.
fn check_ports(cfg: &NodeConfig) -> anyhow::Result<()> {
    let cores = cfg.cores as u16;
    let mine = (0..cfg.cores).filter_map(|k| cfg.peer_addr(cfg.node_id, k));
    let clients = (0..cores).filter(|_| cfg.client_addr.port() != 0).map(|k| SocketAddr::new(cfg.client_addr.ip(), cfg.client_addr.port() + k));
    for addr in mine.chain(clients) {
        if accepts(addr) {
            anyhow::bail!("port {addr} is taken: something accepts connections there (is this node already running?)");
        }
    }
    Ok(())
}

/// Whether something listens on `addr`. A trial bind would not tell: after a
/// restart, connections the old process accepted can linger (FIN-WAIT-2,
/// until the peer closes its end) and refuse a plain bind while glommio's
/// SO_REUSEPORT bind succeeds, whereas a live listener is exactly what
/// answers a connect.
fn accepts(addr: SocketAddr) -> bool {
    std::net::TcpStream::connect_timeout(&reachable(addr), PORT_PROBE_TIMEOUT).is_ok()
}

/// Where to connect to reach a listener bound to `addr` (loopback for a
/// wildcard address).
fn reachable(addr: SocketAddr) -> SocketAddr {
    let ip = if addr.ip().is_unspecified() { IpAddr::from([127, 0, 0, 1]) } else { addr.ip() };
    SocketAddr::new(ip, addr.port())
}

/// O_DIRECT on tmpfs silently falls back to buffered I/O: the node runs, but
/// its durability and timings are not what they would be on a disk.
fn warn_if_tmpfs(dir: &Path) {
    const TMPFS_MAGIC: libc::c_long = 0x0102_1994;
    let Some(existing) = dir.ancestors().find(|p| p.exists()) else { return };
    let Ok(path) = std::ffi::CString::new(existing.as_os_str().as_encoded_bytes()) else { return };
    let mut st = MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: `path` is NUL-terminated and `st` is a valid out-pointer.
    if unsafe { libc::statfs(path.as_ptr(), st.as_mut_ptr()) } != 0 {
        return;
    }
    // SAFETY: statfs returned 0, so it filled `st`.
    let st = unsafe { st.assume_init() };
    if st.f_type as libc::c_long == TMPFS_MAGIC {
        tracing::warn!(data_dir = %dir.display(), "the data directory is on tmpfs: O_DIRECT falls back to buffered I/O and nothing survives a reboot");
    }
}

/// Signals blocked in this thread (and every thread started after), taken
/// one at a time with `sigwait`.
struct SignalSet(libc::sigset_t);

impl SignalSet {
    fn block(signals: &[libc::c_int]) -> std::io::Result<SignalSet> {
        let mut set = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigemptyset initializes the set; sigaddset and
        // pthread_sigmask only read and write through valid pointers.
        let set = unsafe {
            libc::sigemptyset(set.as_mut_ptr());
            for &s in signals {
                libc::sigaddset(set.as_mut_ptr(), s);
            }
            set.assume_init()
        };
        // SAFETY: `set` is initialized; the old mask is not wanted.
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        if rc != 0 {
            return Err(std::io::Error::from_raw_os_error(rc));
        }
        Ok(SignalSet(set))
    }

    /// Waits up to `timeout` for one of the signals; returns its number.
    fn wait_timeout(&self, timeout: Duration) -> std::io::Result<Option<libc::c_int>> {
        let ts = libc::timespec { tv_sec: timeout.as_secs() as libc::time_t, tv_nsec: timeout.subsec_nanos() as libc::c_long };
        // SAFETY: the set and the timespec are valid; no siginfo is wanted.
        let sig = unsafe { libc::sigtimedwait(&self.0, std::ptr::null_mut(), &ts) };
        if sig >= 0 {
            return Ok(Some(sig));
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EAGAIN | libc::EINTR) => Ok(None),
            _ => Err(e),
        }
    }

    /// Blocks until one of the signals arrives; returns its number.
    fn wait(&self) -> std::io::Result<libc::c_int> {
        let mut sig = 0;
        // SAFETY: both pointers are valid for the call.
        let rc = unsafe { libc::sigwait(&self.0, &mut sig) };
        if rc != 0 {
            return Err(std::io::Error::from_raw_os_error(rc));
        }
        Ok(sig)
    }
}

fn signal_name(sig: libc::c_int) -> &'static str {
    match sig {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        _ => "signal",
    }
}

/// Node `node` (1..=3) of the example loopback cluster: clients on port
/// 7N00, peers on 7N01 (one core each, so the ranges do not overlap).
pub fn example_toml(node: u64) -> String {
    assert!((1..=3).contains(&node), "the example cluster has nodes 1 to 3");
    format!(
        r#"# Node {node} of a three-node Myriad cluster on loopback. Start each node in
# its own terminal, from the top of the repository:
#
#   cargo run --release -p engine --bin myriad -- serve --config examples/cluster/node1.toml
#   cargo run --release -p engine --bin myriad -- serve --config examples/cluster/node2.toml
#   cargo run --release -p engine --bin myriad -- serve --config examples/cluster/node3.toml
#
# then talk to the cluster:
#
#   export MYRIAD_CLUSTER=1=127.0.0.1:7100,2=127.0.0.1:7200,3=127.0.0.1:7300
#   cargo run --release -p engine --bin myriad -- put --group 1 hello world
#   cargo run --release -p engine --bin myriad -- get --group 1 hello

# This node's id: nonzero, unique in the cluster, listed under [peers].
node_id = {node}

# Core k serves clients on this port + k (port 0 picks free ports; the
# bound addresses are printed at start).
client_addr = "127.0.0.1:7{node}00"

# The WAL and snapshots of core k live in <data_dir>/node-<id>/core-<k>/.
# Use a real disk: on tmpfs O_DIRECT silently falls back to buffered I/O.
data_dir = "/tmp/myriad/node{node}"

# Executors, one WAL each. Every node of a cluster runs the same count, and
# clients must be told it (`--cores`). With more than one core, space the
# ports so that no port + k of one range meets another range.
cores = 1

# Groups 1..=groups are created on every node at its first start (each lives
# on one core); more are created and deleted at runtime with
# `myriad create-group` and `myriad delete-group`.
groups = 64

# Checked in every peer handshake: nodes of different clusters never talk.
cluster_id = 0x4D59_5249_4144

# One Raft tick: heartbeats every 4 ticks, elections after 10 to 20; a peer
# that sends nothing (not even its keepalives) for 20 ticks counts as lost.
tick_ms = 100

# Make every WAL write durable before acknowledging it (segments opened
# O_DSYNC). Off only for experiments: acknowledged writes can then be lost
# in a power cut.
sync = true

# Pin core k to CPU k % cpus; leave off when several nodes share a machine.
pin_cores = false

# A group snapshots its state and compacts its log every this many entries.
compact_every_entries = 8192

# Raft log entries a core keeps in memory, all its groups together: a safety
# valve against running out of memory. Beyond it the core compacts its
# longest logs, up to 64 groups a tick (each serializes its state machine).
log_entries_in_memory_max = 4000000

# Client connections the node keeps open, spread evenly over its cores;
# beyond its share a core closes new connections at once.
client_connections_max = 4096

# How long a new client connection may take to say hello before it is
# closed.
client_hello_timeout_ms = 10000

# On SIGINT or SIGTERM, first hand every group this node leads to another
# node, waiting up to this long, so that no group waits out an election
# timeout without a leader; 0 stops at once.
stop_drain_ms = 5000

# A node leading more than its share of a core's groups (a quarter of it, at
# least 2, over) hands some to the peer leading the fewest, every two
# election timeouts: after a restart a node leads nothing until then.
balance_leaders = true

# Size of each preallocated WAL segment file (one WAL per core). A command
# may have a quarter of it (at most 4 MiB) less 4 KiB; use one size cluster-wide.
wal_segment_size_bytes = 67108864

# Uncomment to copy idle groups' entries forward once a core's WAL holds more
# segments than this, so that the old segments can be deleted (keep it off
# when the live logs of all groups need more segments than this).
# wal_rewrite_after_segments = 8

# Every node's id and peer address, this node included. Core k of a node
# listens for its peers on the port + k.
[peers]
1 = "127.0.0.1:7101"
2 = "127.0.0.1:7201"
3 = "127.0.0.1:7301"
"#
    )
}
