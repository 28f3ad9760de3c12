//! The multi-Raft node: one glommio executor per core, each running the
//! shard of every node it hosts (one in a server; in the bench's embedded
//! cluster, core `k` of all three nodes, so the cluster uses the configured
//! cores and not three times as many).

pub mod config;
pub mod drain;
pub mod embedded;
pub mod forward;
pub mod group;
pub mod id_map;
pub mod metrics;
mod recover;
pub mod shard;
pub mod snapshot_file;
mod snapshot_writer;
pub mod tombstones;

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use glommio::net::TcpListener;

pub use config::{core_of, NodeConfig, CLIENT_CONNECTIONS_MAX_DEFAULT, CLIENT_HELLO_TIMEOUT_MS_DEFAULT, COMPACT_EVERY_ENTRIES_DEFAULT, LOG_ENTRIES_IN_MEMORY_MAX_DEFAULT, STOP_DRAIN_MS_DEFAULT};
pub use metrics::{CoreMetrics, MetricsSnapshot};
use drain::{DrainWatch, NodeSwitches, DRAIN_POLL_INTERVAL};
use shard::{Event, Shard};

use crate::tasks::TaskSet;
use crate::transport::peer::{self, PeerLink};
use crate::transport::wire::Handshake;

// Every index raftcore accepts from a peer the WAL can write: one it refused
// would fail the core's submit and stop every group on the core.
const _: () = assert!(raftcore::limits::LOG_INDEX_MAX <= crate::wal::limits::LOG_INDEX_MAX);

/// io_memory registered per executor (memlock is small on many machines).
const EXECUTOR_IO_MEMORY_BYTES: usize = 2 << 20;
/// Version of the peer protocol, checked in every handshake.
pub const PEER_PROTOCOL_VERSION: u16 = 3;

/// What the outside world holds of one running shard.
struct ShardControl {
    node: u64,
    core: u32,
    /// The embedded API's way in.
    door: embedded::Door,
    stop: Arc<AtomicBool>,
    switches: NodeSwitches,
    metrics: Arc<CoreMetrics>,
}

/// Running nodes: their executors, and per node the stop flags, metrics and
/// bound client addresses of its cores.
pub struct Cluster {
    threads: Vec<JoinHandle<anyhow::Result<()>>>,
    shards: Vec<ShardControl>,
    /// node id → client address of each core, in core order.
    client_addrs: Vec<(u64, Vec<SocketAddr>)>,
}

/// One executor: which (node, core) shards it hosts and where it runs.
struct ExecutorPlan {
    index: usize,
    pin_cpu: Option<usize>,
    shards: Vec<ShardPlan>,
}

/// One shard an executor will run: its node, its core, and the ends that the
/// outside world (`stop`, the counters in `node_metrics`) and the node's
/// other cores (`mesh`) hold.
struct ShardPlan {
    cfg: NodeConfig,
    core: u32,
    stop: Arc<AtomicBool>,
    switches: NodeSwitches,
    /// Every core's counters of the node, by core (this one's among them).
    node_metrics: Vec<Arc<CoreMetrics>>,
    mesh: forward::MeshEnds,
    inbox: embedded::Inbox,
}

impl Cluster {
    /// Starts one node as a server: one executor per core.
    pub fn start_node(cfg: NodeConfig) -> anyhow::Result<Cluster> {
        Cluster::start(vec![cfg], None)
    }

    /// Starts several nodes in this process. With `executors = Some(n)`,
    /// executor `k` hosts core `k` of every node (all nodes must then have
    /// `n` cores); with `None` every node gets one executor per core.
    pub fn start(nodes: Vec<NodeConfig>, executors: Option<u32>) -> anyhow::Result<Cluster> {
        for cfg in &nodes {
            cfg.validate()?;
            if let Some(n) = executors {
                anyhow::ensure!(cfg.cores == n, "node {} has {} cores; shared executors need {n}", cfg.node_id, cfg.cores);
            }
        }
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut plans: Vec<ExecutorPlan> = Vec::new();
        let mut shards = Vec::new();
        for cfg in &nodes {
            let mut mesh = forward::mesh(cfg.cores).into_iter();
            let node_metrics: Vec<Arc<CoreMetrics>> = (0..cfg.cores).map(|_| Arc::default()).collect();
            // One set for all the node's cores: any of them may start or end a drain.
            let switches = NodeSwitches::default();
            for core in 0..cfg.cores {
                let ends = mesh.next().expect("one mesh end per core");
                let index = match executors {
                    Some(_) => core as usize,
                    None => plans.len(),
                };
                if plans.len() <= index {
                    let pin_cpu = cfg.pin_cores.then_some(index % cpus);
                    plans.push(ExecutorPlan { index, pin_cpu, shards: Vec::new() });
                }
                let stop = Arc::new(AtomicBool::new(false));
                let metrics = node_metrics[core as usize].clone();
                let (door, inbox) = embedded::inbox();
                plans[index].shards.push(ShardPlan { cfg: cfg.clone(), core, stop: stop.clone(), switches: switches.clone(), node_metrics: node_metrics.clone(), mesh: ends, inbox });
                shards.push(ShardControl { node: cfg.node_id, core, door, stop, switches: switches.clone(), metrics });
            }
        }
        let (addr_tx, addr_rx) = mpsc::channel::<anyhow::Result<(u64, u32, SocketAddr)>>();
        let threads = plans.into_iter().map(|plan| spawn_executor(plan, addr_tx.clone())).collect::<anyhow::Result<Vec<_>>>()?;
        drop(addr_tx);
        let mut cluster = Cluster { threads, shards, client_addrs: Vec::new() };
        let mut bound: Vec<(u64, u32, SocketAddr)> = Vec::new();
        for _ in 0..cluster.shards.len() {
            match addr_rx.recv() {
                Ok(Ok(b)) => bound.push(b),
                Ok(Err(e)) => {
                    cluster.stop_all();
                    return Err(e);
                }
                Err(_) => {
                    let e = cluster.join_errors();
                    return Err(e.context("an executor stopped while starting"));
                }
            }
        }
        bound.sort();
        for cfg in &nodes {
            let addrs = bound.iter().filter(|b| b.0 == cfg.node_id).map(|b| b.2).collect();
            cluster.client_addrs.push((cfg.node_id, addrs));
        }
        Ok(cluster)
    }

    /// Client addresses of `node`'s cores, in core order.
    pub fn client_addrs(&self, node: u64) -> Vec<SocketAddr> {
        self.client_addrs.iter().find(|(n, _)| *n == node).map(|(_, a)| a.clone()).unwrap_or_default()
    }

    /// The embedded API of `node` (`None`: this cluster does not run it):
    /// proposals, linearizable and stale reads, and every other request of
    /// the client protocol, from any thread, without a socket.
    pub fn node(&self, node: u64) -> Option<embedded::NodeHandle> {
        let mut cores: Vec<(u32, embedded::Door)> = self.shards.iter().filter(|s| s.node == node).map(|s| (s.core, s.door.clone())).collect();
        cores.sort_by_key(|c| c.0);
        (!cores.is_empty()).then(|| embedded::NodeHandle::new(node, cores.into_iter().map(|c| c.1).collect()))
    }

    /// Counters summed over every node this cluster runs.
    pub fn metrics_all(&self) -> MetricsSnapshot {
        MetricsSnapshot::sum(self.shards.iter().map(|s| &*s.metrics))
    }

    pub fn metrics(&self, node: u64) -> MetricsSnapshot {
        MetricsSnapshot::sum(self.shards.iter().filter(|s| s.node == node).map(|s| &*s.metrics))
    }

    /// Stops every core of `node` at once (within a tick), as a crash would:
    /// its connections close and nothing is flushed beyond what was durable.
    pub fn kill(&self, node: u64) {
        for s in self.shards.iter().filter(|s| s.node == node) {
            s.stop.store(true, Ordering::SeqCst);
        }
    }

    /// Starts draining `node`: from its next tick on, every group it leads
    /// hands its leadership to the voter holding the most of its log among
    /// the peers that are up (a leadership transfer; one abandoned, or a
    /// leadership won meanwhile, is handed over at a later tick). The node
    /// goes on serving as a follower until `undrain`. Meant for just before
    /// it stops, so that its groups need not wait out an election timeout,
    /// or to take it out of the write path for a while.
    pub fn drain(&self, node: u64) {
        if let Some(s) = self.shards.iter().find(|s| s.node == node) {
            s.switches.drain.store(true, Ordering::SeqCst);
        }
    }

    /// Ends `node`'s drain: it may lead groups again (leader balancing
    /// hands it its share back).
    pub fn undrain(&self, node: u64) {
        if let Some(s) = self.shards.iter().find(|s| s.node == node) {
            s.switches.drain.store(false, Ordering::SeqCst);
        }
    }

    /// Drains `node` (see `drain`) and waits until it leads no group, knows
    /// the leader of each of its groups (so it redirects clients there) and
    /// has answered every client request waiting on them (writes in flight
    /// when their leadership moved are answered once applied there); until
    /// no other voter is up to take the groups it still leads (a node alone,
    /// or whose peers are down); or until `timeout` passes. Returns how
    /// many groups it still leads.
    pub fn drain_and_wait(&self, node: u64, timeout: Duration) -> u64 {
        let cores: Vec<Arc<CoreMetrics>> = self.shards.iter().filter(|s| s.node == node).map(|s| s.metrics.clone()).collect();
        let watch = DrainWatch::start(&cores);
        self.drain(node);
        let deadline = Instant::now() + timeout;
        while watch.end(&cores).is_none() && Instant::now() < deadline {
            std::thread::sleep(DRAIN_POLL_INTERVAL);
        }
        self.metrics(node).leaders
    }

    /// Tells every client connection of `node` that it is about to stop (a
    /// `Closing` notice: send nothing more here; connections opened later
    /// are told at once), and waits until its clients have closed them all,
    /// or until every core, a tick or more after telling them, has answered
    /// every request read from them (what a client sent before the notice
    /// reached it has arrived by then), or until `timeout` passes. The node
    /// answers every request it gets meanwhile: done after a drain, before
    /// a stop, no request is left in flight when it stops. Returns how many
    /// requests were still waiting (0: none).
    pub fn close_clients_and_wait(&self, node: u64, timeout: Duration) -> u64 {
        let cores: Vec<&ShardControl> = self.shards.iter().filter(|s| s.node == node).collect();
        let Some(first) = cores.first() else { return 0 };
        let ticks_before: Vec<u64> = cores.iter().map(|s| s.metrics.closing_ticks.load(Ordering::Acquire)).collect();
        first.switches.close_clients.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + timeout;
        loop {
            let answered = cores.iter().zip(&ticks_before).all(|(s, &before)| s.metrics.closing_ticks.load(Ordering::Acquire) >= before + 2 && s.metrics.closing_requests_waiting.load(Ordering::Relaxed) == 0);
            if answered || self.metrics(node).client_connections == 0 {
                return 0;
            }
            if Instant::now() >= deadline {
                return cores.iter().map(|s| s.metrics.closing_requests_waiting.load(Ordering::Relaxed)).sum();
            }
            std::thread::sleep(DRAIN_POLL_INTERVAL);
        }
    }

    pub fn stop_all(&self) {
        for s in &self.shards {
            s.stop.store(true, Ordering::SeqCst);
        }
    }

    /// Stops everything and waits for the executors to end.
    pub fn shutdown(mut self) -> anyhow::Result<()> {
        self.stop_all();
        let e = self.join_errors();
        if e.chain().count() > 1 || !e.to_string().is_empty() {
            return Err(e);
        }
        Ok(())
    }

    fn join_errors(&mut self) -> anyhow::Error {
        let mut errors = Vec::new();
        for t in self.threads.drain(..) {
            match t.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => errors.push(format!("{e:#}")),
                Err(_) => errors.push("an executor panicked".to_string()),
            }
        }
        anyhow::anyhow!("{}", errors.join("; "))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn spawn_executor(plan: ExecutorPlan, addr_tx: mpsc::Sender<anyhow::Result<(u64, u32, SocketAddr)>>) -> anyhow::Result<JoinHandle<anyhow::Result<()>>> {
    let placement = match plan.pin_cpu {
        Some(cpu) => glommio::Placement::Fixed(cpu),
        None => glommio::Placement::Unbound,
    };
    let name = format!("myriad-core-{}", plan.index);
    let builder = glommio::LocalExecutorBuilder::new(placement).name(&name).io_memory(EXECUTOR_IO_MEMORY_BYTES);
    let handle = std::thread::Builder::new().name(name).spawn(move || -> anyhow::Result<()> {
        let executor = builder.make().map_err(crate::io_error).context("creating the executor")?;
        executor.run(async move {
            let mut runs = Vec::new();
            for plan in plan.shards {
                let tx = addr_tx.clone();
                runs.push(glommio::spawn_local(run_shard(plan, tx)));
            }
            drop(addr_tx);
            let mut result = Ok(());
            for run in runs {
                if let Err(e) = run.await {
                    result = Err(e);
                }
            }
            result
        })
    })?;
    Ok(handle)
}

/// Opens, serves and finally stops one shard; reports its client address
/// (or why it could not start) through `addr_tx`.
async fn run_shard(plan: ShardPlan, addr_tx: mpsc::Sender<anyhow::Result<(u64, u32, SocketAddr)>>) -> anyhow::Result<()> {
    let ShardPlan { cfg, core, stop, switches, node_metrics, mesh, inbox } = plan;
    let drain = switches.drain.clone();
    let node = cfg.node_id;
    let tasks = TaskSet::default();
    let started = start_shard(Rc::new(cfg), core, node_metrics, switches, mesh, &tasks).await;
    let (shard, client_addr) = match started {
        Ok(s) => s,
        Err(e) => {
            let _ = addr_tx.send(Err(anyhow::anyhow!("node {node} core {core}: {e:#}")));
            return Err(e);
        }
    };
    let _ = addr_tx.send(Ok((node, core, client_addr)));
    drop(addr_tx);
    let weak = Rc::downgrade(&shard);
    tasks.spawn(async move {
        while let Some(call) = inbox.recv().await {
            let embedded::Call { group, op, reply } = call;
            let respond = Box::new(inbox.answer(reply));
            match weak.upgrade() {
                Some(shard) if !shard.is_stopped() => shard.request(crate::client::proto::Request { id: 0, group, op }, respond),
                _ => respond(crate::client::proto::Reply::Error(format!("node {node} core {core} stopped before it took the request for group {group}"))),
            }
        }
    });
    let tick = shard.tick();
    let ticker = shard.clone();
    tasks.spawn(async move {
        loop {
            glommio::timer::sleep(tick).await;
            if stop.load(Ordering::Relaxed) {
                ticker.push(Event::Stop);
                return;
            }
            if drain.load(Ordering::Relaxed) {
                ticker.push(Event::Drain);
            }
            ticker.push(Event::Tick);
        }
    });
    let result = shard.clone().run().await.with_context(|| format!("node {node} core {core}"));
    if let Err(e) = &result {
        // Said now: the error reaches the caller only when the node stops.
        tracing::error!("{e:#}; this core stops");
    }
    tasks.cancel_all();
    result
}

/// Opens the shard and starts its listeners and peer links.
async fn start_shard(cfg: Rc<NodeConfig>, core: u32, node_metrics: Vec<Arc<CoreMetrics>>, switches: NodeSwitches, mesh: forward::MeshEnds, tasks: &TaskSet) -> anyhow::Result<(Rc<Shard>, SocketAddr)> {
    let node = cfg.node_id;
    let peer_addr = cfg.peer_addr(node, core).expect("validated: this node is a peer");
    let peer_listener = TcpListener::bind(peer_addr).map_err(crate::io_error).with_context(|| format!("binding the peer port {peer_addr}"))?;
    let client_base = cfg.client_addr;
    let client_port = if client_base.port() == 0 { 0 } else { client_base.port() + core as u16 };
    let client_listener = TcpListener::bind(SocketAddr::new(client_base.ip(), client_port)).map_err(crate::io_error).with_context(|| format!("binding the client port {client_port}"))?;
    let client_addr = client_listener.local_addr().map_err(crate::io_error)?;

    let metrics = node_metrics[core as usize].clone();
    let drain = switches.drain.clone();
    let mut shard = Shard::open(cfg.clone(), core, node_metrics, switches).await?;
    let hello = Handshake { cluster_id: cfg.cluster_id, node_id: node, core, cores: cfg.cores, version: PEER_PROTOCOL_VERSION };
    let liveness = cfg.peer_liveness();
    for (&peer_node, _) in cfg.peers.iter().filter(|(&id, _)| id != node) {
        let addr = cfg.peer_addr(peer_node, core).expect("listed peer");
        shard.peers.insert(peer_node, PeerLink::new(peer_node, addr, hello, liveness, metrics.clone(), drain.clone()));
    }
    let (forwarder, inboxes) = forward::Forwarder::connect(mesh).await;
    shard.forwarder = Some(forwarder);
    let shard = Rc::new(shard);
    for (from_core, inbox) in inboxes {
        let weak = Rc::downgrade(&shard);
        tasks.spawn(async move {
            while let Some(msg) = inbox.recv().await {
                let Some(shard) = weak.upgrade() else { return };
                shard.on_forward(from_core, msg);
            }
        });
    }
    for link in shard.peers.values() {
        tasks.spawn(link.clone().run());
    }
    let expect = peer::Expect { node_id: node, cluster_id: cfg.cluster_id, core, cores: cfg.cores, version: PEER_PROTOCOL_VERSION };
    let peers = cfg.peers.clone();
    let is_peer: Rc<dyn Fn(u64) -> bool> = Rc::new(move |id| id != node && peers.contains_key(&id));
    let weak = Rc::downgrade(&shard);
    let deliver = Rc::new(move |from: u64, inbound: peer::Inbound| {
        if let Some(shard) = weak.upgrade() {
            shard.push(match inbound {
                peer::Inbound::Batch(frame) => Event::Peer { from, batch: frame.envelopes, draining: frame.sender.draining, deleted_groups: frame.deleted_groups },
                peer::Inbound::Lost => Event::PeerLost { node: from },
            });
        }
    });
    tasks.spawn(peer::serve_inbound(peer_listener, expect, liveness, is_peer, deliver, metrics.clone(), tasks.clone()));
    tasks.spawn(crate::client::server::serve(client_listener, Rc::downgrade(&shard), cfg.client_connections_per_core(), Duration::from_millis(cfg.client_hello_timeout_ms), metrics.clone(), tasks.clone()));
    let writer = shard.snapshot_writer.clone();
    let saver = Rc::downgrade(&shard);
    tasks.spawn(async move {
        writer
            .run(|saved| {
                if let Some(shard) = saver.upgrade() {
                    shard.push(Event::SnapshotsSaved(saved));
                }
            })
            .await
    });
    let purger = Rc::downgrade(&shard);
    tasks.spawn(async move {
        loop {
            glommio::timer::sleep(std::time::Duration::from_secs(1)).await;
            let Some(shard) = purger.upgrade() else { return };
            if let Err(e) = shard.purge_wal().await {
                tracing::warn!("WAL purge: {e}");
            }
        }
    });
    Ok((shard, client_addr))
}
