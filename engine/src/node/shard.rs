//! One core of one node: its groups, its WAL and its peer links, driven by one
//! event loop. Each iteration drains the events that arrived, collects the
//! `Ready` of every group that has work, sends the leaders' appends at once
//! (they do not wait for our write, Raft thesis §10.2.1), writes every
//! group's entries and hard states as one WAL record (one O_DSYNC write),
//! and when that record is durable sends the acknowledgements and votes that
//! depended on it. Every peer gets one frame per iteration.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::num::NonZeroU64;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use raftcore::{Config, ConfState, Message, MemStorage, NodeId, RawNode, Ready, Storage};

use super::forward::{Forward, Forwarder};
use super::group::{Group, HandOver, Leadership, ReadOp, Responder, Visit};
use crate::group_table::GroupTable;
use super::drain::{DrainEnd, DrainWatch, NodeSwitches, DRAIN_POLL_INTERVAL, DRAIN_WAIT_MS_MAX};
use super::metrics::{CoreMetrics, MetricsSnapshot};
use super::recover::recover_groups;
use super::snapshot_file::SnapshotDir;
use super::tombstones::Tombstones;
use super::snapshot_writer::{SaveJob, Saved, SnapshotWriter};
use super::NodeConfig;
use crate::client::proto::{Consistency, Op, Reply, Request};
use crate::client::server::ClientConns;
use crate::kv::{KvCommand, KvStore, StateMachine};
use crate::signal::Signal;
use crate::transport::peer::PeerLink;
use crate::transport::wire::{Envelope, FRAME_DELETED_GROUPS_MAX};
use crate::wal::{self, Batch, DmaIo, RecordSeq, Wal};

/// Bytes of segment images a core keeps from the scan that opens its WAL,
/// so that its groups are rebuilt without reading the WAL again; records
/// beyond it are read a second time.
pub const REPLAY_KEPT_BYTES_MAX: usize = 2 << 30;
/// Events handled per loop iteration before the readies are collected.
const EVENTS_PER_ITERATION_MAX: usize = 8192;
/// A group idle for this many ticks stops being ticked (less than the
/// election timeout, so that leader and followers quiesce together).
pub const QUIESCE_AFTER_TICKS: u32 = 4;

/// Something that happened to this core.
pub enum Event {
    /// Messages from core `core` of node `from` (this core's peer).
    /// A frame of a peer: its messages, whether that node drains, and the
    /// groups it tells us it deleted.
    Peer { from: u64, batch: Vec<Envelope>, draining: bool, deleted_groups: Vec<u64> },
    Client { group: u64, op: Op, respond: Responder },
    Tick,
    /// The connection from this core's peer on node `node` ended.
    PeerLost { node: u64 },
    /// WAL records up to this one are durable.
    Durable(RecordSeq),
    WalFailed(String),
    /// Snapshot files the writer saved (or failed to).
    SnapshotsSaved(Vec<Saved>),
    /// The node is draining: hand every leadership of this core to another
    /// voter (sent every tick while the node drains; see `Cluster::drain`).
    Drain,
    Stop,
}

/// What became of a group's ready (`Shard::process_ready`).
enum Taken {
    /// Its number, and the messages that leave once it is durable: the
    /// group is told then (`settle`).
    AwaitsDurable(u64, Vec<Message>),
    /// Nothing waits on it being durable (a leader's ready that applies,
    /// with only a new commit index to write), so the group is not visited
    /// again for it (`Ready::awaits_persisted`).
    Done,
    /// The leader's snapshot in it does not restore, so the group cannot go
    /// on here; nothing of the ready was kept, and the caller sets the group
    /// aside (`set_aside`).
    SetAside,
}

/// Readies whose persistence completes with one WAL record (or with the
/// record before them, when they had nothing to write).
struct Unsettled {
    seq: RecordSeq,
    readies: Vec<(u64, u64, Vec<Message>)>,
    /// Group creations and deletions answered once the record is durable.
    admin: Vec<Responder>,
}

pub struct Shard {
    pub node: u64,
    pub core: u32,
    cfg: Rc<NodeConfig>,
    raft_cfg: Arc<Config>,
    /// Boxed: the table holds only ids and addresses, so a group's address
    /// is known without touching the group (see `GroupTable::prefetch_ahead`).
    groups: RefCell<GroupTable<Group>>,
    wal: Wal<DmaIo>,
    snapshots: SnapshotDir,
    /// Saves the snapshots of this core's own compactions.
    pub snapshot_writer: Rc<SnapshotWriter>,
    /// The token of the last save queued.
    snapshot_tokens: Cell<u64>,
    /// Log entries this core's groups hold, or more: exact after each walk
    /// over the groups (`keep_logs_within_budget`), then raised by every
    /// append and lowered by every compaction (a truncation or a deleted
    /// group lowers only the true count), so that the budget is checked
    /// without a walk while the core is under it.
    entries_held_at_most: Cell<u64>,
    events: RefCell<VecDeque<Event>>,
    /// The groups that are not quiesced, which each tick visits: the
    /// quiesced ones are never touched until something wakes them. Every
    /// group not quiesced is in it once (deleted ones are dropped from it).
    awake: RefCell<Vec<u64>>,
    /// Groups set aside until the node restarts (`set_aside`).
    set_aside_groups: RefCell<Vec<u64>>,
    wake: Signal,
    pub peers: HashMap<u64, Rc<PeerLink>>,
    /// Requests for groups of this node's other cores go through it.
    pub forwarder: Option<Forwarder>,
    /// The counters of every core of this node, `metrics` among them (a
    /// metrics request is answered for the whole node).
    node_metrics: Vec<Arc<CoreMetrics>>,
    /// Peers whose connection to this core is up (they sent a frame and
    /// have not disconnected since).
    live_peers: RefCell<std::collections::HashSet<u64>>,
    /// Node → how many of this core's groups it leads, as their replicas
    /// here last knew (`Group::known_leader`): what leader balancing reads.
    leader_census: RefCell<HashMap<u64, u64>>,
    /// The census as the last balancing round saw it: a node whose count
    /// fell since (it drains, or loses elections) is not handed leaderships.
    census_last_round: RefCell<HashMap<u64, u64>>,
    /// Peers whose last frame said they drain: they take no leadership,
    /// neither by a drain nor by balancing.
    peers_draining: RefCell<std::collections::HashSet<u64>>,
    /// The node's switches, shared by its cores. While it drains (see
    /// `Cluster::drain`) its ticks hand its leaderships over, and no
    /// leadership is balanced onto or away from it.
    switches: NodeSwitches,
    /// This core's client connections, told when the node is about to stop.
    pub client_conns: ClientConns,
    metrics: Arc<CoreMetrics>,
    stopped: Cell<bool>,
    /// Ticks handled, to check the log memory budget every few.
    ticks: Cell<u64>,
    /// An iteration's WAL batch is submitted as a record of its own once its
    /// archive may reach this size: one record must fit in a segment.
    record_split_bytes: u64,
    /// Longest command a client may propose: its entry alone stays within a
    /// split record.
    entry_bytes_max: usize,
    /// The groups this core deleted, for good.
    tombstones: RefCell<Tombstones>,
    /// (peer, group): peers to tell, with their next frame, that this core
    /// deleted a group (a deletion here, or a message for a deleted group).
    deletion_notices: RefCell<Vec<(u64, u64)>>,
    /// (group, tick): the latest deletions here, told to every peer again
    /// every `DELETION_RESEND_TICKS` for `DELETION_RESENDS` rounds.
    recent_deletions: RefCell<VecDeque<(u64, u64)>>,
    /// Groups deleted whose snapshot files go once their tombstones are
    /// durable.
    snapshots_to_remove: RefCell<Vec<u64>>,
}

/// Messages for each peer, gathered over one iteration.
#[derive(Default)]
struct Outbox {
    /// (peer node, its messages): a node has a handful of peers, so a
    /// search of this short vector is cheaper than hashing per message.
    by_peer: Vec<(u64, Vec<Envelope>)>,
}

impl Outbox {
    fn add(&mut self, group: u64, msgs: Vec<Message>) {
        for msg in msgs {
            let to = msg.to.0;
            let at = match self.by_peer.iter().position(|(node, _)| *node == to) {
                Some(at) => at,
                None => {
                    self.by_peer.push((to, Vec::new()));
                    self.by_peer.len() - 1
                }
            };
            self.by_peer[at].1.push(Envelope { group, msg });
        }
    }

    /// Sends each peer its messages in one frame, with the groups deleted
    /// here that it is to be told of (`notices`: (peer, group); those over
    /// a frame's limit wait for the next flush).
    fn flush(&mut self, peers: &HashMap<u64, Rc<PeerLink>>, notices: &mut Vec<(u64, u64)>) {
        let mut deleted = Vec::new();
        if !notices.is_empty() {
            notices.sort_unstable();
            notices.dedup();
            for &(node, _) in notices.iter() {
                if !self.by_peer.iter().any(|(n, _)| *n == node) {
                    self.by_peer.push((node, Vec::new()));
                }
            }
        }
        for (node, batch) in self.by_peer.iter_mut() {
            deleted.clear();
            if !notices.is_empty() {
                let mut told = 0;
                notices.retain(|&(to, group)| {
                    let now = to == *node && told < FRAME_DELETED_GROUPS_MAX;
                    if now {
                        deleted.push(group);
                        told += 1;
                    }
                    !now
                });
            }
            if let Some(link) = peers.get(node) {
                link.send(batch, &deleted);
            }
            batch.clear();
        }
        // Notices for nodes that are not peers go nowhere.
        notices.retain(|(to, _)| peers.contains_key(to));
    }
}

/// Deletions are told to every peer again every this many ticks (2 s at the
/// default tick) ...
const DELETION_RESEND_TICKS: u64 = 20;
/// ... this many times (about 30 s).
const DELETION_RESENDS: u64 = 15;
/// Most deletions told again; older ones reach a peer only in answer to a
/// message for the group.
const RECENT_DELETIONS_MAX: usize = 65_536;

/// A group's election timeout: this many ticks and up to as many more.
pub const ELECTION_TIMEOUT_TICKS: u32 = 10;

pub fn raft_config(node: u64) -> Config {
    let mut cfg = Config::new(NodeId(node));
    cfg.election_timeout_ticks = ELECTION_TIMEOUT_TICKS;
    // Under load a busy group's heartbeats were half of all its messages
    // (about 10 per write at 2 ticks, 7.5 at 4). Four ticks still renew the
    // lease (8 ticks from a round's send) and leave each follower at least
    // one heartbeat, carrying the final commit, in the idle ticks before
    // its leader quiesces (QUIESCE_AFTER_TICKS), well inside its election
    // timeout.
    cfg.heartbeat_ticks = 4;
    cfg.lease_ticks = 8;
    // A busy group's followers hear its appends: the heartbeats between them
    // were 16 % of all messages under load. Two heartbeat intervals (8 ticks)
    // stay within the election timeout.
    cfg.skip_heartbeats_after_appends = true;
    cfg
}

impl Shard {
    /// Opens the WAL and snapshots of this core and rebuilds its groups.
    /// `node_metrics` holds the counters of each core of the node, by core;
    /// `switches`, those of the node.
    pub async fn open(cfg: Rc<NodeConfig>, core: u32, node_metrics: Vec<Arc<CoreMetrics>>, switches: NodeSwitches) -> anyhow::Result<Shard> {
        let metrics = node_metrics[core as usize].clone();
        let dir = cfg.data_dir.join(format!("node-{}", cfg.node_id)).join(format!("core-{core}"));
        let (wal, kept) = Wal::open_dir_keeping(dir.join("wal"), cfg.wal_options(), REPLAY_KEPT_BYTES_MAX).await.map_err(wal_error)?;
        let snapshots = SnapshotDir::open(dir.join("snapshots"))?;
        let raft_cfg = Arc::new(raft_config(cfg.node_id));
        let voters = cfg.voters();
        // Groups live where the WAL or a snapshot file says they do; the
        // configured groups are created once, on the very first start.
        let mut ids: std::collections::BTreeSet<u64> = wal.groups().into_iter().map(|g| g.0).collect();
        ids.extend(snapshots.groups()?);
        // A deletion is recorded before its WAL record is written: one cut
        // short by a crash is finished now.
        let tombstones = Tombstones::open(&dir)?;
        let mut unfinished = Batch::new();
        for &id in ids.iter().filter(|&&id| tombstones.contains(id)) {
            unfinished.remove_group(wal::GroupId(id));
            snapshots.remove(id)?;
        }
        if !unfinished.is_empty() {
            wal.append(&unfinished).await.map_err(wal_error)?;
        }
        ids.retain(|&id| !tombstones.contains(id));
        let initialized = dir.join("initialized");
        if !initialized.exists() {
            let mut batch = Batch::new();
            let missing: Vec<u64> = (1..=cfg.groups).filter(|&g| cfg.core_of(g) == core && !ids.contains(&g)).collect();
            for group in missing {
                batch.set_hard_state(wal::GroupId(group), bootstrap_hard_state(&voters));
                ids.insert(group);
            }
            if !batch.is_empty() {
                wal.append(&batch).await.map_err(wal_error)?;
            }
            std::fs::write(&initialized, b"groups created\n")?;
            std::fs::File::open(&dir)?.sync_all()?;
        }
        let mine = ids.into_iter().filter(|&g| cfg.core_of(g) == core);
        let groups = recover_groups(&wal, kept, &snapshots, mine, &voters, raft_cfg.clone()).await?;
        let record_split_bytes = record_split_bytes(&cfg);
        let entries_held: u64 = groups.values().map(|g| g.entries_held()).sum();
        Ok(Shard {
            node: cfg.node_id,
            core,
            cfg,
            raft_cfg,
            groups: RefCell::new(groups),
            wal,
            snapshot_writer: Rc::new(SnapshotWriter::new(snapshots.clone())),
            snapshots,
            snapshot_tokens: Cell::new(0),
            entries_held_at_most: Cell::new(entries_held),
            events: RefCell::new(VecDeque::new()),
            awake: RefCell::new(Vec::new()),
            set_aside_groups: RefCell::new(Vec::new()),
            wake: Signal::default(),
            peers: HashMap::new(),
            forwarder: None,
            node_metrics,
            live_peers: RefCell::new(std::collections::HashSet::new()),
            metrics,
            stopped: Cell::new(false),
            record_split_bytes,
            ticks: Cell::new(0),
            leader_census: RefCell::default(),
            census_last_round: RefCell::default(),
            peers_draining: RefCell::default(),
            switches,
            client_conns: ClientConns::default(),
            entry_bytes_max: entry_bytes_max(record_split_bytes),
            tombstones: RefCell::new(tombstones),
            deletion_notices: RefCell::default(),
            recent_deletions: RefCell::default(),
            snapshots_to_remove: RefCell::default(),
        })
    }

    pub fn push(&self, event: Event) {
        self.events.borrow_mut().push_back(event);
        self.wake.notify();
    }

    /// A request for `req.group`: served here, or forwarded once to the
    /// core of this node that owns the group.
    pub fn request(&self, req: Request, respond: Responder) {
        match req.op {
            Op::Metrics => return respond(self.metrics_reply()),
            Op::Drain { wait_ms } => return self.drain_node(wait_ms, respond),
            Op::Undrain => {
                self.switches.drain.store(false, Ordering::SeqCst);
                return respond(Reply::Done);
            }
            _ => {}
        }
        let owner = self.cfg.core_of(req.group);
        if owner == self.core {
            return self.push(Event::Client { group: req.group, op: req.op, respond });
        }
        match &self.forwarder {
            Some(f) => {
                self.metrics.requests_forwarded.fetch_add(1, Ordering::Relaxed);
                f.forward(owner, req, respond);
            }
            None => respond(Reply::WrongCore { core: owner }),
        }
    }

    /// A message from another core of this node.
    pub fn on_forward(&self, from_core: usize, msg: Forward) {
        let Some(f) = &self.forwarder else { return };
        match msg {
            Forward::Request { token, req } => {
                let respond = f.reply_to(from_core, token);
                if self.cfg.core_of(req.group) != self.core {
                    // Forwarded once only: the mapping disagrees between cores.
                    return respond(Reply::WrongCore { core: self.cfg.core_of(req.group) });
                }
                self.push(Event::Client { group: req.group, op: req.op, respond });
            }
            Forward::Reply { token, reply } => f.complete(token, reply),
        }
    }

    pub fn group_count(&self) -> usize {
        self.groups.borrow().len()
    }

    pub fn raft_config(&self) -> &Arc<Config> {
        &self.raft_cfg
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped.get()
    }

    /// Length of one Raft tick.
    pub fn tick(&self) -> std::time::Duration {
        self.cfg.tick()
    }

    pub fn cores(&self) -> u32 {
        self.cfg.cores
    }

    /// Deletes WAL segments no group needs (rewriting laggards forward).
    pub async fn purge_wal(&self) -> Result<(), wal::WalError> {
        self.wal.purge().await.map(drop)
    }

    pub fn metrics(&self) -> &CoreMetrics {
        &self.metrics
    }

    /// Starts draining the node (all its cores) and answers once the drain
    /// is over, or after `wait_ms` (see `Op::Drain`).
    fn drain_node(&self, wait_ms: u32, respond: Responder) {
        if wait_ms > DRAIN_WAIT_MS_MAX {
            return respond(Reply::Error(format!("a drain's wait_ms may be at most {DRAIN_WAIT_MS_MAX}, got {wait_ms}")));
        }
        let cores = self.node_metrics.clone();
        let watch = DrainWatch::start(&cores);
        self.switches.drain.store(true, Ordering::SeqCst);
        let node = self.cfg.node_id;
        glommio::spawn_local(async move {
            let deadline = Instant::now() + Duration::from_millis(u64::from(wait_ms));
            let reply = loop {
                match watch.end(&cores) {
                    Some(DrainEnd::Settled) => break Reply::Done,
                    Some(DrainEnd::NoTaker { leaders }) => break Reply::Error(format!("node {node} still leads {leaders} groups that no other voter is up to take; it goes on draining")),
                    None if Instant::now() >= deadline => {
                        let snapshot = MetricsSnapshot::sum(cores.iter().map(|m| &**m));
                        break Reply::Error(format!("node {node} did not finish draining within {wait_ms} ms (it leads {} groups; {} leaderships and requests left to settle); it goes on draining", snapshot.leaders, snapshot.drain_unsettled));
                    }
                    None => glommio::timer::sleep(DRAIN_POLL_INTERVAL).await,
                }
            };
            respond(reply);
        })
        .detach();
    }

    /// The node's counters as a JSON object.
    fn metrics_reply(&self) -> Reply {
        let snapshot = MetricsSnapshot::sum(self.node_metrics.iter().map(|m| &**m));
        match serde_json::to_vec(&snapshot) {
            Ok(json) => Reply::Value(Some(json.into())),
            Err(e) => Reply::Error(format!("encoding the metrics: {e}")),
        }
    }

    /// The event loop; returns when stopped (or the WAL failed).
    pub async fn run(self: Rc<Self>) -> anyhow::Result<()> {
        // Recovered groups re-apply what their WAL says is committed.
        let mut dirty: Vec<u64> = Vec::new();
        for g in self.groups.borrow_mut().values_mut() {
            g.scheduled = true;
            dirty.push(g.id);
        }
        self.awake.borrow_mut().clone_from(&dirty);
        let mut unsettled: VecDeque<Unsettled> = VecDeque::new();
        let mut batch = Batch::new();
        let mut outbox = Outbox::default();
        let mut admin: Vec<Responder> = Vec::new();
        let mut failure = None;
        loop {
            if dirty.is_empty() && self.events.borrow().is_empty() {
                self.wake.wait().await;
            }
            for _ in 0..EVENTS_PER_ITERATION_MAX {
                let Some(event) = self.events.borrow_mut().pop_front() else { break };
                match event {
                    Event::Stop => self.stopped.set(true),
                    Event::WalFailed(e) => failure = Some(anyhow::anyhow!("WAL of core {} failed: {e}", self.core)),
                    Event::Durable(seq) => self.settle(seq, &mut unsettled, &mut outbox, &mut dirty),
                    other => self.handle(other, &mut dirty, &mut batch, &mut admin),
                }
            }
            // Deletions of this iteration are durable before the WAL record
            // that drops their groups, before their snapshot files go (a
            // group without its snapshot but not known deleted would not
            // recover), and before they are answered.
            let synced = self.tombstones.borrow_mut().sync();
            match synced {
                Ok(()) => self.remove_deleted_snapshots(),
                Err(e) => failure = Some(anyhow::anyhow!("core {}: syncing {} failed: {e}", self.core, self.tombstones.borrow().path().display())),
            }
            if self.stopped.get() || failure.is_some() {
                break;
            }
            let mut readies = Vec::new();
            let mut readies_taken = 0u64;
            // Records of this iteration submitted before its last one: the
            // iteration's work is durable when the last record is.
            let mut submitted = None;
            {
                let mut groups = self.groups.borrow_mut();
                let mut set_aside = Vec::new();
                groups.prefetch_start(Visit::Ready, |i| dirty.get(i).copied());
                for (i, &id) in dirty.iter().enumerate() {
                    groups.prefetch_ahead(Visit::Ready, |k| dirty.get(i + k).copied());
                    let Some(g) = groups.get_mut(id) else { continue };
                    g.scheduled = false;
                    if g.raw.has_ready() {
                        readies_taken += 1;
                        match self.process_ready(g, &mut batch, &mut submitted, &mut outbox)? {
                            Taken::AwaitsDurable(number, persisted) => readies.push((id, number, persisted)),
                            Taken::Done => {}
                            Taken::SetAside => set_aside.push(id),
                        }
                    }
                }
                dirty.clear();
                for id in set_aside {
                    self.set_aside(&mut groups, id);
                }
            }
            outbox.flush(&self.peers, &mut self.deletion_notices.borrow_mut());
            self.metrics.readies.fetch_add(readies_taken, Ordering::Relaxed);
            // Admin answers with nothing to write (deleting a group this
            // core does not have) settle like the rest, not only once some
            // other work comes along.
            if readies.is_empty() && batch.is_empty() && submitted.is_none() && admin.is_empty() {
                continue;
            }
            let admin = std::mem::take(&mut admin);
            if !batch.is_empty() {
                submitted = Some(self.submit(&mut batch)?);
            }
            if let Some(seq) = submitted {
                self.await_durable(seq);
                unsettled.push_back(Unsettled { seq, readies, admin });
            } else if let Some(last) = unsettled.back_mut() {
                last.readies.extend(readies);
                last.admin.extend(admin);
            } else {
                let seq = self.wal.durable_seq();
                unsettled.push_back(Unsettled { seq, readies, admin });
                self.settle(seq, &mut unsettled, &mut outbox, &mut dirty);
                outbox.flush(&self.peers, &mut self.deletion_notices.borrow_mut());
            }
        }
        for g in self.groups.borrow_mut().values_mut() {
            g.abandon();
        }
        if let Some(f) = &self.forwarder {
            f.abandon();
        }
        for link in self.peers.values() {
            link.stop();
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Queues `batch` as one WAL record and empties it.
    fn submit(&self, batch: &mut Batch) -> anyhow::Result<RecordSeq> {
        self.metrics.wal_entries.fetch_add(batch.entry_count() as u64, Ordering::Relaxed);
        let seq = self.wal.submit(batch).map_err(wal_error)?;
        batch.clear();
        Ok(seq)
    }

    /// Submits `batch` once it may reach `record_split_bytes`.
    fn split_if_full(&self, batch: &mut Batch, submitted: &mut Option<RecordSeq>) -> anyhow::Result<()> {
        if batch.archived_len_bound() as u64 >= self.record_split_bytes {
            *submitted = Some(self.submit(batch)?);
        }
        Ok(())
    }

    /// Spawns the wait for record `seq`; its completion comes back as an event.
    fn await_durable(self: &Rc<Self>, seq: RecordSeq) {
        let wal = self.wal.clone();
        let shard = Rc::downgrade(self);
        glommio::spawn_local(async move {
            let result = wal.wait_durable(seq).await;
            if let Some(shard) = shard.upgrade() {
                shard.push(match result {
                    Ok(()) => Event::Durable(seq),
                    Err(e) => Event::WalFailed(e.to_string()),
                });
            }
        })
        .detach();
    }

    fn handle(&self, event: Event, dirty: &mut Vec<u64>, batch: &mut Batch, admin: &mut Vec<Responder>) {
        let mut groups = self.groups.borrow_mut();
        match event {
            Event::Peer { from, batch: envelopes, draining, deleted_groups } => {
                self.live_peers.borrow_mut().insert(from);
                let mut peers_draining = self.peers_draining.borrow_mut();
                if draining {
                    peers_draining.insert(from);
                } else {
                    peers_draining.remove(&from);
                }
                drop(peers_draining);
                for id in deleted_groups.into_iter().filter(|&id| self.cfg.core_of(id) == self.core) {
                    if let Err(e) = self.delete_group(&mut groups, batch, id) {
                        tracing::error!("core {}: node {from} deleted group {id}, but recording that here failed ({e}); the group stays", self.core);
                    }
                }
                groups.prefetch_start(Visit::Step, |k| envelopes.get(k).map(|e| e.group));
                let mut envs = envelopes.into_iter();
                while let Some(env) = envs.next() {
                    // What follows `env`: `as_slice()[0]` is one place after it.
                    groups.prefetch_ahead(Visit::Step, |k| envs.as_slice().get(k - 1).map(|e| e.group));
                    if env.msg.from.0 != from {
                        continue; // A peer speaks only for itself.
                    }
                    match groups.get_mut(env.group) {
                        Some(g) => {
                            // A late heartbeat response needs no wake-up round.
                            if !matches!(env.msg.body, raftcore::MessageBody::HeartbeatResponse { .. }) {
                                self.wake_group(g);
                            }
                            g.step(env.msg);
                            schedule_if_ready(g, dirty);
                        }
                        None => self.on_unknown_group_message(&mut groups, batch, dirty, from, env),
                    }
                }
            }
            Event::Client { group, respond, .. } if self.set_aside_groups.borrow().contains(&group) => {
                respond(Reply::Error(format!("group {group} is set aside on this node until it restarts: its leader's snapshot did not restore")));
            }
            Event::Client { group, op: Op::CreateGroup, respond } => {
                if group == 0 || groups.contains_key(group) {
                    return respond(if group == 0 { Reply::Error("group 0 is reserved".into()) } else { Reply::Done });
                }
                if self.tombstones.borrow().contains(group) {
                    return respond(Reply::Error(format!("group {group} was deleted; a deleted group's id is not used again")));
                }
                match self.create_group(&mut groups, batch, group) {
                    Ok(()) => admin.push(respond),
                    Err(e) => respond(Reply::Error(e)),
                }
            }
            Event::Client { group, op: Op::DeleteGroup, respond } => match self.delete_group(&mut groups, batch, group) {
                Ok(()) => {
                    // Peers that missed the request (or are down: then their
                    // first message for it is answered so) delete it too.
                    let mut notices = self.deletion_notices.borrow_mut();
                    notices.extend(self.peers.keys().map(|&peer| (peer, group)));
                    admin.push(respond);
                }
                Err(e) => respond(Reply::Error(format!("group {group}: recording its deletion in {} failed ({e}); nothing was deleted", self.tombstones.borrow().path().display()))),
            },
            Event::Client { group, op, respond } => match groups.get_mut(group) {
                None => respond(Reply::UnknownGroup),
                Some(g) => {
                    self.wake_group(g);
                    client_op(g, op, self.entry_bytes_max, self.wal.disk_full(), respond);
                    schedule_if_ready(g, dirty);
                }
            },
            Event::Tick => {
                let live_peers = self.live_peers.borrow();
                let mut awake = self.awake.borrow_mut();
                // Kept in place: those that quiesce this tick leave the list.
                let mut kept = 0;
                groups.prefetch_start(Visit::Tick, |k| awake.get(k).copied());
                for i in 0..awake.len() {
                    let id = awake[i];
                    groups.prefetch_ahead(Visit::Tick, |k| awake.get(i + k).copied());
                    let Some(g) = groups.get_mut(id) else { continue };
                    debug_assert!(!g.quiesced, "group {id} is in the awake list but quiesced");
                    g.tick(QUIESCE_AFTER_TICKS, |leader| live_peers.contains(&leader));
                    schedule_if_ready(g, dirty);
                    if !g.quiesced {
                        awake[kept] = id;
                        kept += 1;
                    }
                }
                awake.truncate(kept);
                self.metrics.quiesced_groups.store(groups.len().saturating_sub(awake.len()) as u64, Ordering::Relaxed);
                drop(awake);
                self.ticks.set(self.ticks.get() + 1);
                if self.ticks.get() % DELETION_RESEND_TICKS == 0 && !self.recent_deletions.borrow().is_empty() {
                    self.announce_recent_deletions();
                }
                if self.switches.close_clients.load(Ordering::Relaxed) {
                    let waiting = self.client_conns.announce_closing();
                    self.metrics.closing_requests_waiting.store(waiting as u64, Ordering::Relaxed);
                    self.metrics.closing_ticks.fetch_add(1, Ordering::Release);
                }
                let draining = self.switches.drain.load(Ordering::Relaxed);
                self.metrics.draining.store(u64::from(draining), Ordering::Relaxed);
                if self.cfg.balance_leaders && !draining && self.ticks.get() % self.balance_every_ticks() == 0 {
                    drop(live_peers);
                    self.balance_leaders(&mut groups, dirty);
                }
                if self.entries_held_at_most.get() > self.cfg.log_entries_in_memory_max {
                    self.keep_logs_within_budget(&mut groups);
                }
                self.metrics.log_entries_in_memory.store(self.entries_held_at_most.get(), Ordering::Relaxed);
                let stats = self.wal.stats();
                let m = &self.metrics;
                m.wal_syncs.store(stats.syncs, Ordering::Relaxed);
                m.wal_records.store(stats.records, Ordering::Relaxed);
                m.wal_disk_full.store(u64::from(self.wal.disk_full()), Ordering::Relaxed);
            }
            Event::PeerLost { node } => {
                self.live_peers.borrow_mut().remove(&node);
                // Groups resting under that node's leadership must be able to
                // elect another leader if it is gone; leaderships resting here
                // without a quorum left must tick, so that check-quorum ends
                // them (`Group::may_rest`).
                let live = self.live_peers.borrow();
                let quorum_lost = live.len() + 1 < self.cfg.voters().len() / 2 + 1;
                for g in groups.values_mut().filter(|g| g.raw.raft.leader.0 == node || (quorum_lost && g.is_leading())) {
                    if g.raw.raft.leader.0 == node {
                        g.on_leader_node_lost();
                    }
                    self.wake_group(g);
                }
            }
            Event::SnapshotsSaved(saved) => self.on_snapshots_saved(&mut groups, saved, batch),
            Event::Drain => self.hand_over_leaderships(&mut groups, dirty),
            Event::Durable(_) | Event::WalFailed(_) | Event::Stop => unreachable!("handled by the loop"),
        }
    }

    /// Starts a leadership transfer in every group this core leads that has
    /// none under way, to a peer that is up (an abandoned transfer, or a
    /// leadership won meanwhile, is handed over at the next drain tick), and
    /// counts what is left to settle: the groups it still leads, those
    /// whose leader it does not know, and the client requests still waiting
    /// on its groups.
    ///
    /// It visits the awake groups, and the resting ones only while one of
    /// them may lead: a replica rests only once it has no request waiting
    /// and, unless it leads, knows a leader that is up, and a request or a
    /// message wakes it. So once the node leads nothing, a drain kept on
    /// (the client's `Drain`) costs its ticks about what the awake groups
    /// cost them anyway.
    fn hand_over_leaderships(&self, groups: &mut GroupTable<Group>, dirty: &mut Vec<u64>) {
        let mut walk = DrainWalk::default();
        // Index by index: a wake-up pushes to the list, never removes.
        let awake_count = self.awake.borrow().len();
        for k in 0..awake_count {
            let id = self.awake.borrow()[k];
            if let Some(g) = groups.get_mut(id) {
                self.hand_over(g, &mut walk, dirty);
            }
        }
        if walk.leaders < self.metrics.leaders.load(Ordering::Relaxed) {
            // Some leadership rests: those are visited (and woken) too.
            for g in groups.values_mut().filter(|g| g.quiesced) {
                self.hand_over(g, &mut walk, dirty);
            }
        }
        let m = &self.metrics;
        m.drain_groups_visited.fetch_add(walk.visited, Ordering::Relaxed);
        m.leader_transfers_started.fetch_add(walk.started, Ordering::Relaxed);
        m.leaderships_without_transfer_target.store(walk.no_target, Ordering::Relaxed);
        m.drain_unsettled.store(walk.unsettled, Ordering::Relaxed);
        m.drain_ticks.fetch_add(1, Ordering::Release);
    }

    /// One group's part of a drain tick (`hand_over_leaderships`).
    fn hand_over(&self, g: &mut Group, walk: &mut DrainWalk, dirty: &mut Vec<u64>) {
        walk.visited += 1;
        // A replica that knows no leader would send clients nowhere.
        walk.unsettled += g.requests_waiting() as u64 + u64::from(g.known_leader == 0);
        if !g.is_leading() {
            return;
        }
        walk.leaders += 1;
        walk.unsettled += 1;
        self.wake_group(g);
        let (live_peers, peers_draining) = (self.live_peers.borrow(), self.peers_draining.borrow());
        match g.hand_over(|node| live_peers.contains(&node) && !peers_draining.contains(&node)) {
            HandOver::Started => {
                walk.started += 1;
                schedule_if_ready(g, dirty);
            }
            HandOver::NoTarget => walk.no_target += 1,
            HandOver::Underway => {}
        }
    }

    /// Records that `g`'s replica here now knows `leader` as its leader.
    fn note_leader(&self, g: &mut Group, leader: u64) {
        let before = std::mem::replace(&mut g.known_leader, leader);
        if before == leader {
            return;
        }
        let mut census = self.leader_census.borrow_mut();
        if before != 0 {
            if let Some(n) = census.get_mut(&before) {
                *n -= 1;
            }
        }
        if leader != 0 {
            *census.entry(leader).or_default() += 1;
        }
    }

    /// Leader balancing runs every two election timeouts: by then the
    /// transfers of the last round finished or were abandoned.
    fn balance_every_ticks(&self) -> u64 {
        2 * u64::from(self.raft_cfg.election_timeout_ticks)
    }

    /// When this node leads more than its share of the core's groups (a
    /// quarter of it, at least 2, over: elections alone leave a node up to
    /// about a tenth over), hands some to the live peer that
    /// leads the fewest, up to its share: after a restart (or a drain
    /// before it) a node leads nothing, and elections alone would never
    /// give it its share back. Each node does this for itself, from what its
    /// replicas know of their leaders, so no node is pushed beyond its share
    /// and nothing moves back. A node that drains (its frames say so) is
    /// handed nothing and has no share; nor is one whose count fell since
    /// the last round (it loses leaderships for some reason).
    fn balance_leaders(&self, groups: &mut GroupTable<Group>, dirty: &mut Vec<u64>) {
        let (target, moves) = {
            let census = self.leader_census.borrow();
            let mut last_round = self.census_last_round.borrow_mut();
            let (live_peers, peers_draining) = (self.live_peers.borrow(), self.peers_draining.borrow());
            let count = |node: u64| census.get(&node).copied().unwrap_or(0);
            let shrinking = |node: u64| last_round.get(&node).is_some_and(|&before| count(node) < before);
            let voters = self.cfg.voters();
            // Shares among the nodes that may lead: not those that drain.
            let takers = voters.iter().filter(|v| !peers_draining.contains(&v.0)).count().max(1) as u64;
            let fair = voters.iter().map(|v| count(v.0)).sum::<u64>().div_ceil(takers);
            let mine = count(self.node);
            let target = voters.iter().map(|v| v.0).filter(|&n| n != self.node && live_peers.contains(&n) && !peers_draining.contains(&n) && !shrinking(n)).min_by_key(|&n| count(n));
            let plan = match target {
                Some(target) if mine > fair + (fair / 4).max(2) && count(target) < fair => Some((target, (mine - fair).min(fair - count(target)).min(BALANCE_TRANSFERS_PER_ROUND_MAX))),
                _ => None,
            };
            last_round.clone_from(&census);
            match plan {
                Some(plan) => plan,
                None => return,
            }
        };
        let mut started = 0;
        for g in groups.values_mut().filter(|g| g.is_leading()) {
            if started == moves {
                break;
            }
            self.wake_group(g);
            if g.hand_over(|node| node == target) == HandOver::Started {
                started += 1;
                schedule_if_ready(g, dirty);
            }
        }
        self.metrics.leader_transfers_started.fetch_add(started, Ordering::Relaxed);
        self.metrics.leaders_balanced.fetch_add(started, Ordering::Relaxed);
    }

    /// Wakes `g` if it is quiesced; the ticks then visit it again.
    fn wake_group(&self, g: &mut Group) {
        if g.wake() {
            self.awake.borrow_mut().push(g.id);
        }
    }

    /// Takes one group's ready: appends its writes to `batch`, its early
    /// messages to `outbox`, applies what committed.
    ///
    /// Submits `batch` as a WAL record of its own (its seq into `submitted`)
    /// whenever it may outgrow `record_split_bytes`, also within one group.
    fn process_ready(&self, g: &mut Group, batch: &mut Batch, submitted: &mut Option<RecordSeq>, outbox: &mut Outbox) -> anyhow::Result<Taken> {
        let ready = g.raw.ready();
        let awaited = ready.awaits_persisted();
        let Ready { number, soft_state, hard_state, snapshot, entries, messages, persisted_messages, committed_entries, read_states } = ready;
        if let Some(ss) = soft_state {
            self.note_leader(g, ss.leader.0);
            // The count of leaders follows every change (ticks visit only
            // the groups that are awake, so they cannot count them).
            match g.on_role_change(ss.role) {
                Leadership::Began => {
                    self.metrics.leaders.fetch_add(1, Ordering::Relaxed);
                }
                Leadership::Ended => {
                    self.metrics.leaders.fetch_sub(1, Ordering::Relaxed);
                    self.metrics.leader_stepdowns.fetch_add(1, Ordering::Relaxed);
                }
                Leadership::Unchanged => {}
            }
        }
        let gid = wal::GroupId(g.id);
        if let Some(s) = snapshot {
            let restored = g.sm.restore(&s.data).map_err(|e| e.to_string()).and_then(|()| {
                let applied = g.sm.applied();
                (applied == s.meta.index).then_some(()).ok_or_else(|| format!("its data is at index {applied}"))
            });
            if let Err(e) = restored {
                tracing::error!("core {}: group {}: the snapshot at {} from its leader does not restore ({e}); the group is set aside on this node until it restarts", self.core, g.id, s.meta.index);
                return Ok(Taken::SetAside);
            }
            // Durable before the WAL forgets what it covers. It supersedes
            // any save of an older snapshot of the group (one in progress
            // ends first).
            self.snapshot_writer.release(g.id);
            g.snapshot_saving = None;
            if let Err(e) = self.snapshots.save(g.id, &s) {
                // A full disk, no file descriptor left: nothing of this ready
                // is written, so the WAL and the old snapshot file still
                // hold the group as it was.
                tracing::error!("core {}: group {}: saving the snapshot at {} from its leader failed ({e}); the group is set aside on this node until it restarts", self.core, g.id, s.meta.index);
                return Ok(Taken::SetAside);
            }
            batch.truncate(gid, wal::LogIndex(s.meta.index.0 + 1));
            batch.compact(gid, wal::LogIndex(s.meta.index.0));
            g.raw.raft.log.storage.apply_snapshot(s);
            g.on_snapshot_restored();
            self.metrics.snapshots_installed.fetch_add(1, Ordering::Relaxed);
        }
        for e in &entries {
            batch.push_entry_tagged(gid, wal::Term(e.term.0), wal::LogIndex(e.index.0), e.kind as u8, &e.data);
            self.split_if_full(batch, submitted)?;
        }
        let storage = &mut g.raw.raft.log.storage;
        self.entries_held_at_most.set(self.entries_held_at_most.get() + entries.len() as u64);
        storage.append_owned(entries);
        if let Some(hs) = hard_state {
            batch.set_hard_state(gid, wal::HardState { term: wal::Term(hs.term.0), vote: hs.vote.0, commit: wal::LogIndex(hs.commit.0) });
            storage.set_hard_state(hs);
        }
        outbox.add(g.id, messages);
        g.apply(committed_entries);
        g.on_read_states(&read_states);
        self.maybe_compact(g);
        self.split_if_full(batch, submitted)?;
        Ok(if awaited { Taken::AwaitsDurable(number, persisted_messages) } else { Taken::Done })
    }

    /// Creates group `id` on this core as every replica of it starts: all
    /// the voters, an empty log (durable with `batch`).
    fn create_group(&self, groups: &mut GroupTable<Group>, batch: &mut Batch, id: u64) -> Result<(), String> {
        let voters = self.cfg.voters();
        let storage = MemStorage::new(ConfState { voters: voters.clone(), ..Default::default() });
        let raw = RawNode::new_shared(self.raft_cfg.clone(), id, storage).map_err(|e| format!("creating group {id}: {e}"))?;
        groups.insert(id, Box::new(Group::new(id, raw, KvStore::new())));
        self.awake.borrow_mut().push(id);
        batch.set_hard_state(wal::GroupId(id), bootstrap_hard_state(&voters));
        self.metrics.groups_created.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Deletes group `id` on this core for good: its tombstone first (an
    /// error there deletes nothing; it is synced at the end of the events,
    /// before `batch` is written), then the group, its WAL records (with
    /// `batch`) and its snapshot. Deleting a group this core lacks leaves
    /// only the tombstone.
    fn delete_group(&self, groups: &mut GroupTable<Group>, batch: &mut Batch, id: u64) -> std::io::Result<()> {
        if self.tombstones.borrow_mut().add(id)? {
            let mut recent = self.recent_deletions.borrow_mut();
            if recent.len() == RECENT_DELETIONS_MAX {
                recent.pop_front();
            }
            recent.push_back((id, self.ticks.get()));
        }
        if self.take_out(groups, id) {
            batch.remove_group(wal::GroupId(id));
            self.snapshots_to_remove.borrow_mut().push(id);
            self.metrics.groups_deleted.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Removes the snapshot files of the groups deleted since the last
    /// call, once their tombstones are durable.
    fn remove_deleted_snapshots(&self) {
        for id in self.snapshots_to_remove.take() {
            if let Err(e) = self.snapshots.remove(id) {
                tracing::warn!("group {id}: {e}");
            }
        }
    }

    /// Tells every peer again of the groups deleted here lately: a notice
    /// is dropped with its frame while a link is down or backed up, and a
    /// replica resting on a peer (a follower whose leader is up, a leader
    /// with its quorum) sends nothing that would be answered with one.
    fn announce_recent_deletions(&self) {
        let now = self.ticks.get();
        let mut recent = self.recent_deletions.borrow_mut();
        while recent.front().is_some_and(|&(_, at)| now.saturating_sub(at) > DELETION_RESEND_TICKS * DELETION_RESENDS) {
            recent.pop_front();
        }
        let mut notices = self.deletion_notices.borrow_mut();
        for &(group, _) in recent.iter() {
            notices.extend(self.peers.keys().map(|&peer| (peer, group)));
        }
    }

    /// A peer's message for a group this core does not have. If the group
    /// was deleted here, the peer is told so (it deletes its replica too).
    /// If a leader or a candidate sent it, the group was created while this
    /// node was down or before a client's request reached it: it is created
    /// here as it would have been then, and the message stepped.
    fn on_unknown_group_message(&self, groups: &mut GroupTable<Group>, batch: &mut Batch, dirty: &mut Vec<u64>, from: u64, env: Envelope) {
        use raftcore::MessageBody as B;
        let id = env.group;
        if self.tombstones.borrow().contains(id) {
            self.deletion_notices.borrow_mut().push((from, id));
            return;
        }
        let from_leader_or_candidate = matches!(env.msg.body, B::Append { .. } | B::Heartbeat { .. } | B::SnapshotChunk { .. } | B::RequestVote { .. });
        // A group set aside here keeps its data for a restart: never created afresh.
        if id == 0 || !from_leader_or_candidate || self.cfg.core_of(id) != self.core || self.set_aside_groups.borrow().contains(&id) {
            self.metrics.unknown_group_messages.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if let Err(e) = self.create_group(groups, batch, id) {
            tracing::error!("core {}: node {from} has group {id}, which this node lacks, but creating it failed: {e}", self.core);
            return;
        }
        self.metrics.groups_created_by_peers.fetch_add(1, Ordering::Relaxed);
        let g = groups.get_mut(id).expect("just created");
        g.step(env.msg);
        schedule_if_ready(g, dirty);
    }

    /// Takes group `id` out of service on this node, its other groups going
    /// on: what waits on it is answered `Unknown`, its messages then meet an
    /// unknown group, and requests for it (creating it again too) an error.
    /// Its WAL records and snapshot stay, so a restart recovers it as it was
    /// before the ready that failed.
    fn set_aside(&self, groups: &mut GroupTable<Group>, id: u64) {
        if self.take_out(groups, id) {
            self.set_aside_groups.borrow_mut().push(id);
            self.metrics.groups_set_aside.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Removes group `id` from this core's table (false: it was not there),
    /// answering what waits on it `Unknown`. A save of its snapshot in
    /// progress ends first; queued ones never run.
    fn take_out(&self, groups: &mut GroupTable<Group>, id: u64) -> bool {
        let Some(mut g) = groups.remove(id) else { return false };
        g.abandon();
        self.note_leader(&mut g, 0);
        self.awake.borrow_mut().retain(|&a| a != id);
        if g.is_leading() {
            self.metrics.leaders.fetch_sub(1, Ordering::Relaxed);
        }
        self.snapshot_writer.release(id);
        true
    }

    /// Snapshots the state machine and compacts the log once enough entries
    /// were applied since the last time, or when a follower needs a newer
    /// snapshot than the one kept.
    fn maybe_compact(&self, g: &mut Group) {
        let applied = g.sm.applied();
        let storage = &g.raw.raft.log.storage;
        let wanted = storage.snapshot_wanted();
        let due = applied.0 >= storage.first_index().0 + self.cfg.compact_every_entries || (wanted.0 > 0 && applied >= wanted);
        if due {
            self.compact_to_applied(g);
        }
    }

    /// Walks the groups to count their log entries; over
    /// `log_entries_in_memory_max`, compacts those with the longest logs
    /// until the core is back under nine tenths of it: as many as that
    /// takes, up to `BUDGET_COMPACTIONS_MAX` a walk and as many as the
    /// snapshot writer can queue. The count is exact afterwards.
    fn keep_logs_within_budget(&self, groups: &mut GroupTable<Group>) {
        // One pass over the groups: each log's length, and their sum.
        let mut longest: Vec<(u64, u64)> = groups.values().map(|g| (g.entries_held(), g.id)).filter(|&(n, _)| n > 0).collect();
        let total: u64 = longest.iter().map(|&(n, _)| n).sum();
        self.entries_held_at_most.set(total);
        let max = self.cfg.log_entries_in_memory_max;
        if total <= max {
            return;
        }
        longest.sort_unstable_by(|a, b| b.cmp(a));
        let target = max / 10 * 9;
        // Each compaction lowers the count by what it shed.
        for (_, id) in longest.into_iter().take(BUDGET_COMPACTIONS_MAX) {
            if self.entries_held_at_most.get() <= target || self.snapshot_writer.is_full() {
                break;
            }
            if let Some(g) = groups.get_mut(id) {
                self.compact_to_applied(g);
            }
        }
    }

    /// Snapshots the state machine at its applied index and drops the log
    /// up to it from memory; the snapshot file is saved off the loop, and
    /// only once it is durable is the WAL told (`on_snapshots_saved`). A
    /// group with a save in progress is left alone until it ends.
    fn compact_to_applied(&self, g: &mut Group) {
        let applied = g.sm.applied();
        let storage = &g.raw.raft.log.storage;
        if g.snapshot_saving.is_some() || self.snapshot_writer.is_full() || applied > storage.last_index() || applied < storage.first_index() {
            return;
        }
        let conf_state = g.raw.raft.tracker.conf_state();
        let data = g.sm.snapshot();
        let held_before = g.entries_held();
        g.raw.raft.log.storage.create_snapshot(applied, conf_state, data);
        let shed = held_before - g.entries_held();
        self.entries_held_at_most.set(self.entries_held_at_most.get().saturating_sub(shed));
        let snapshot = g.raw.raft.log.storage.snapshot(raftcore::LogIndex::ZERO).expect("just created");
        let token = self.snapshot_tokens.get() + 1;
        self.snapshot_tokens.set(token);
        if self.snapshot_writer.queue(SaveJob { group: g.id, token, snapshot }) {
            g.snapshot_saving = NonZeroU64::new(token);
        }
    }

    /// Saved snapshots let the WAL forget the entries they cover. A result
    /// for a save that was superseded (a leader's snapshot installed, the
    /// group deleted or re-created) is dropped.
    fn on_snapshots_saved(&self, groups: &mut GroupTable<Group>, saved: Vec<Saved>, batch: &mut Batch) {
        for s in saved {
            let Some(g) = groups.get_mut(s.group) else { continue };
            if g.snapshot_saving.map(NonZeroU64::get) != Some(s.token) {
                continue;
            }
            g.snapshot_saving = None;
            match s.result {
                Ok(()) => {
                    batch.compact(wal::GroupId(s.group), wal::LogIndex(s.index.0));
                    self.metrics.snapshots.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    // The WAL keeps the entries; a later compaction tries again.
                    self.metrics.snapshot_save_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::error!("core {}: group {}: saving its snapshot at {}: {e}", self.core, s.group, s.index.0);
                }
            }
        }
    }

    /// Records up to `seq` are durable: tell the groups, send what waited.
    fn settle(&self, seq: RecordSeq, unsettled: &mut VecDeque<Unsettled>, outbox: &mut Outbox, dirty: &mut Vec<u64>) {
        let mut groups = self.groups.borrow_mut();
        while unsettled.front().is_some_and(|u| u.seq <= seq) {
            let u = unsettled.pop_front().expect("front exists");
            for respond in u.admin {
                respond(Reply::Done);
            }
            groups.prefetch_start(Visit::Durable, |k| u.readies.get(k).map(|r| r.0));
            let mut readies = u.readies.into_iter();
            while let Some((id, number, msgs)) = readies.next() {
                groups.prefetch_ahead(Visit::Durable, |k| readies.as_slice().get(k - 1).map(|r| r.0));
                let Some(g) = groups.get_mut(id) else { continue };
                g.raw.on_persisted(number);
                outbox.add(id, msgs);
                schedule_if_ready(g, dirty);
            }
        }
    }
}

/// What one drain tick found (`Shard::hand_over_leaderships`).
#[derive(Default)]
struct DrainWalk {
    visited: u64,
    leaders: u64,
    started: u64,
    no_target: u64,
    unsettled: u64,
}

/// Puts `g` on the iteration's list of groups to take a ready from, if it
/// has one. Asked while `g` is in cache: a group visited with nothing to do
/// (a leader whose own write became durable before its followers answered,
/// a follower whose answer just went out) would be a second cold visit.
fn schedule_if_ready(g: &mut Group, dirty: &mut Vec<u64>) {
    if !g.scheduled && g.raw.has_ready() {
        g.scheduled = true;
        dirty.push(g.id);
    }
}

/// Leaderships one balancing round hands over at most.
const BALANCE_TRANSFERS_PER_ROUND_MAX: u64 = 64;

/// Groups one walk over the budget (at most one a tick) compacts at most:
/// each serializes its state machine on the core.
const BUDGET_COMPACTIONS_MAX: usize = 64;

/// Turns a client operation into a proposal or a read of `g`. A command
/// longer than `entry_bytes_max` is refused: its entry would not fit in a
/// WAL record; so is every write while the WAL waits for disk space (or a
/// file descriptor) for its next segment.
fn client_op(g: &mut Group, op: Op, entry_bytes_max: usize, wal_disk_full: bool, respond: Responder) {
    let propose = |g: &mut Group, cmd: KvCommand, respond: Responder| {
        if wal_disk_full {
            // Refused before it is proposed, so certainly not applied; the
            // WAL would only queue it in memory until space is freed.
            return respond(Reply::Error(format!("group {}: this node's WAL has no disk space (or no file descriptor) for a new segment; writes are refused until one is freed", g.id)));
        }
        let command = cmd.encode();
        if command.len() > entry_bytes_max {
            return respond(Reply::Error(format!("a command of {} bytes exceeds the {entry_bytes_max} bytes an entry may have with this node's WAL segment size", command.len())));
        }
        g.propose(command, respond)
    };
    match op {
        Op::Put { key, value } => propose(g, KvCommand::Put { key, value }, respond),
        Op::Delete { key } => propose(g, KvCommand::Delete { key }, respond),
        Op::Cas { key, expected, new } => propose(g, KvCommand::Cas { key, expected, new }, respond),
        Op::Get { key, consistency } => read(g, ReadOp::Get { key }, consistency, respond),
        Op::Scan { prefix, limit, consistency } => read(g, ReadOp::Scan { prefix, limit }, consistency, respond),
        Op::TransferLeader { to } => g.transfer_leadership(to, respond),
        Op::CreateGroup | Op::DeleteGroup | Op::Metrics | Op::Drain { .. } | Op::Undrain => unreachable!("administration is handled by the shard"),
    }
}

fn read(g: &mut Group, op: ReadOp, consistency: Consistency, respond: Responder) {
    match consistency {
        Consistency::Stale => respond(g.read_stale(&op)),
        Consistency::Linearizable => g.read(op, respond),
    }
}

/// The hard state a new group starts with; written to the WAL when the group
/// is created, so the WAL knows the group exists.
fn bootstrap_hard_state(voters: &[NodeId]) -> wal::HardState {
    let hs = MemStorage::new(ConfState { voters: voters.to_vec(), ..Default::default() }).hard_state();
    wal::HardState { term: wal::Term(hs.term.0), vote: hs.vote.0, commit: wal::LogIndex(hs.commit.0) }
}

/// A quarter segment, at most one write's worth: leaves room for the groups
/// processed after the check (a single group's ready must still fit).
fn record_split_bytes(cfg: &NodeConfig) -> u64 {
    (cfg.wal_segment_size_bytes / 4).min(wal::limits::WRITE_BYTES_MAX_DEFAULT as u64)
}

/// A split record's bytes less the room its metadata may take: what one
/// entry's command may have.
fn entry_bytes_max(record_split_bytes: u64) -> usize {
    (record_split_bytes as usize).saturating_sub(ENTRY_OVERHEAD_BYTES_MAX)
}

/// Record, batch and entry metadata around one entry, bounded generously.
const ENTRY_OVERHEAD_BYTES_MAX: usize = 4096;

/// WAL errors may share an `Rc`; keep their message for `anyhow`.
pub(super) fn wal_error(e: wal::WalError) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use bytes::Bytes;

    use super::*;

    fn group() -> Group {
        let storage = MemStorage::new(ConfState { voters: vec![NodeId(1)], ..Default::default() });
        let raw = RawNode::new(raftcore::Config::new(NodeId(1)), storage).expect("valid config");
        Group::new(7, raw, crate::kv::KvStore::new())
    }

    fn reply_to(g: &mut Group, op: Op, wal_disk_full: bool) -> Option<Reply> {
        let got = Rc::new(RefCell::new(None));
        let put = got.clone();
        client_op(g, op, 1 << 20, wal_disk_full, Box::new(move |r| *put.borrow_mut() = Some(r)));
        got.take()
    }

    #[test]
    fn writes_are_refused_while_the_wal_has_no_disk_space() {
        let mut g = group();
        let put = || Op::Put { key: Bytes::from_static(b"k"), value: Bytes::from_static(b"v") };
        match reply_to(&mut g, put(), true) {
            Some(Reply::Error(e)) => assert!(e.contains("no disk space"), "{e}"),
            other => panic!("a write on a full disk got {other:?}"),
        }
        assert!(!g.raw.has_ready(), "the refused write was proposed");
        // Stale reads go on; with space again, writes are proposed.
        let read = Op::Get { key: Bytes::from_static(b"k"), consistency: Consistency::Stale };
        assert!(matches!(reply_to(&mut g, read, true), Some(Reply::Value(None))));
        assert!(!matches!(reply_to(&mut g, put(), false), Some(Reply::Error(_))));
    }
}
