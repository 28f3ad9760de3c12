//! A small, explicit network for the scripted scenarios in `scenarios.rs`.
//! Replicas are real `RawNode`s over `MemStorage`. Messages wait in one FIFO
//! queue until the script delivers them; links can be cut one way or both; a
//! filter can drop or rewrite messages in transit; a replica can hold its
//! readies unpersisted to show what waits for durability. Every applied entry
//! is compared with what other replicas applied at the same index (state
//! machine safety), so each scenario also checks safety while it runs.
//! Nothing is random: a scenario replays exactly.

#![allow(dead_code)]

use std::collections::btree_map::Entry as MapEntry;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use raftcore::{
    ChangeOp, ConfChange, ConfState, Config, Entry, EntryKind, HardState, LogIndex, MemStorage, Message, MessageBody, NodeId, RawNode, ReadState, Ready, Role,
    Snapshot, Storage, Term, Transition,
};

/// Rounds `stabilize` runs before it declares that the cluster never settles.
const STABILIZE_ROUNDS_MAX: usize = 10_000;
/// Entries `log_entries` reads at most (scenario logs are far shorter).
const LOG_ENTRIES_MAX: usize = 1_000_000;

pub fn nid(n: u64) -> NodeId {
    NodeId(n)
}

/// The crate's defaults (pre-vote, check-quorum, an 8-tick lease, 10-tick
/// elections, 1-tick heartbeats) with a fixed per-node seed.
pub fn config(n: u64) -> Config {
    let mut cfg = Config::new(NodeId(n));
    cfg.seed = 0x5eed_0000 + n;
    cfg
}

/// `config` without the leader lease: every read waits for a heartbeat round.
pub fn no_lease_config(n: u64) -> Config {
    let mut cfg = config(n);
    cfg.lease_ticks = 0;
    cfg
}

/// Raft as in the paper: no pre-vote, no check-quorum, no lease. A candidate
/// may campaign at once, and a deposed leader learns of it only from a
/// message of the higher term.
pub fn paper_config(n: u64) -> Config {
    let mut cfg = config(n);
    cfg.pre_vote = false;
    cfg.check_quorum = false;
    cfg.lease_ticks = 0;
    cfg
}

pub fn is_append(m: &Message) -> bool {
    matches!(m.body, MessageBody::Append { .. })
}

pub fn is_leave_joint_entry(e: &Entry) -> bool {
    e.kind == EntryKind::ConfChange && ConfChange::decode(&e.data).is_ok_and(|cc| cc.is_leave_joint())
}

pub fn change(transition: Transition, changes: &[(ChangeOp, u64)]) -> ConfChange {
    ConfChange { transition, changes: changes.iter().map(|&(op, n)| (op, NodeId(n))).collect() }
}

pub fn ids(ns: &[u64]) -> Vec<NodeId> {
    ns.iter().copied().map(NodeId).collect()
}

/// The state machine's snapshot format: each applied payload, length-prefixed.
pub fn encode_sm(sm: &[Bytes]) -> Bytes {
    let mut out = Vec::new();
    for item in sm {
        out.extend_from_slice(&(item.len() as u32).to_le_bytes());
        out.extend_from_slice(item);
    }
    Bytes::from(out)
}

pub fn decode_sm(mut data: &[u8]) -> Vec<Bytes> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let len = u32::from_le_bytes(data[..4].try_into().expect("length prefix")) as usize;
        out.push(Bytes::copy_from_slice(&data[4..4 + len]));
        data = &data[4 + len..];
    }
    out
}

/// One `Ready`'s worth of durable writes, held back while `hold_persist` is set.
struct HeldReady {
    number: u64,
    hard_state: Option<HardState>,
    snapshot: Option<Snapshot>,
    entries: Vec<Entry>,
    persisted_messages: Vec<Message>,
}

pub struct Node {
    pub raw: RawNode<MemStorage>,
    pub cfg: Config,
    /// The state machine: payloads of applied non-empty normal entries.
    pub sm: Vec<Bytes>,
    pub applied_index: LogIndex,
    /// Every read answered to this replica, in order.
    pub read_states: Vec<ReadState>,
    /// While set, readies are not persisted until `persist` is called.
    pub hold_persist: bool,
    held: VecDeque<HeldReady>,
    /// The engine stopped ticking this replica (see `quiesce_all`); a
    /// message for it wakes it.
    pub quiesced: bool,
}

/// Decides the fate of a message in transit: `false` drops it; it may also
/// rewrite the message.
pub type Filter = Box<dyn FnMut(&mut Message) -> bool>;

pub struct Net {
    nodes: BTreeMap<NodeId, Node>,
    /// Durable images of crashed replicas, until they restart.
    down: BTreeMap<NodeId, (MemStorage, Config)>,
    pub queue: VecDeque<Message>,
    /// Directed links that lose everything: (from, to).
    pub cut: BTreeSet<(NodeId, NodeId)>,
    pub filter: Option<Filter>,
    /// Every message any replica sent, delivered or not, in order.
    pub sent: Vec<Message>,
    /// What the first replica to apply an index applied there.
    applied: BTreeMap<LogIndex, (Term, Bytes)>,
    /// Leader of each term ever observed (election safety).
    leaders: BTreeMap<Term, NodeId>,
}

impl Net {
    /// Initial members `voters`, each with its own `make_cfg(id)`.
    pub fn new(voters: &[u64], make_cfg: fn(u64) -> Config) -> Net {
        let cs = ConfState { voters: ids(voters), ..Default::default() };
        let mut net = Net {
            nodes: BTreeMap::new(),
            down: BTreeMap::new(),
            queue: VecDeque::new(),
            cut: BTreeSet::new(),
            filter: None,
            sent: Vec::new(),
            applied: BTreeMap::new(),
            leaders: BTreeMap::new(),
        };
        for &n in voters {
            net.insert(make_cfg(n), MemStorage::new(cs.clone()));
        }
        net
    }

    /// `new`, with node 1 elected and `entry` proposed by it and committed
    /// everywhere.
    pub fn with_entry(voters: &[u64], make_cfg: fn(u64) -> Config, entry: &str) -> Net {
        let mut net = Net::new(voters, make_cfg);
        net.elect(1);
        net.propose(1, entry);
        net.stabilize();
        net
    }

    /// A replica that is not a member yet: empty log, no membership; it
    /// catches up by snapshot once a membership change adds it.
    pub fn add_node(&mut self, cfg: Config) {
        self.insert(cfg, MemStorage::default());
    }

    fn insert(&mut self, cfg: Config, storage: MemStorage) {
        let snapshot = storage.snapshot(LogIndex::ZERO).expect("mem storage serves its snapshot");
        let raw = RawNode::new(cfg.clone(), storage).expect("valid config");
        assert_eq!(raw.raft.log.applied, snapshot.meta.index, "a replica starts applied up to its snapshot");
        let node = Node {
            raw,
            cfg,
            sm: decode_sm(&snapshot.data),
            applied_index: snapshot.meta.index,
            read_states: Vec::new(),
            hold_persist: false,
            held: VecDeque::new(),
            quiesced: false,
        };
        let id = node.cfg.id;
        assert!(self.nodes.insert(id, node).is_none(), "node {id} exists twice");
    }

    // ---- inspection ---------------------------------------------------------------

    /// Ids of the replicas that are up.
    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().map(|id| id.0).collect()
    }

    pub fn is_up(&self, n: u64) -> bool {
        self.nodes.contains_key(&NodeId(n))
    }

    /// The election timeout of replica `n`, in ticks.
    pub fn timeout_ticks(&self, n: u64) -> u32 {
        self.node(n).cfg.election_timeout_ticks
    }

    pub fn node(&self, n: u64) -> &Node {
        self.nodes.get(&NodeId(n)).unwrap_or_else(|| panic!("node {n} is not up"))
    }

    pub fn node_mut(&mut self, n: u64) -> &mut Node {
        self.nodes.get_mut(&NodeId(n)).unwrap_or_else(|| panic!("node {n} is not up"))
    }

    pub fn raw(&self, n: u64) -> &RawNode<MemStorage> {
        &self.node(n).raw
    }

    pub fn raw_mut(&mut self, n: u64) -> &mut RawNode<MemStorage> {
        &mut self.node_mut(n).raw
    }

    pub fn role(&self, n: u64) -> Role {
        self.raw(n).raft.role
    }

    pub fn term(&self, n: u64) -> Term {
        self.raw(n).raft.term
    }

    /// Whom replica `n` believes to lead (0: nobody).
    pub fn leader_of(&self, n: u64) -> u64 {
        self.raw(n).raft.leader.0
    }

    pub fn committed(&self, n: u64) -> LogIndex {
        self.raw(n).raft.log.committed
    }

    pub fn last_index(&self, n: u64) -> LogIndex {
        self.raw(n).raft.log.last_index()
    }

    /// Term of `n`'s entry at `index`, or `None` when it has no such entry.
    pub fn term_at(&self, n: u64, index: u64) -> Option<Term> {
        self.raw(n).raft.log.term(LogIndex(index)).ok()
    }

    /// The entries `n` holds after its snapshot, durable or not.
    pub fn log_entries(&self, n: u64) -> Vec<Entry> {
        let log = &self.raw(n).raft.log;
        log.entries_from(log.first_index(), LOG_ENTRIES_MAX, u64::MAX).expect("the log is readable from its first index")
    }

    /// (index, term) of every entry `n` holds, from its snapshot on.
    pub fn log_terms(&self, n: u64) -> Vec<(u64, u64)> {
        let log = &self.raw(n).raft.log;
        (log.first_index().get() - 1..=log.last_index().get()).map(|i| (i, log.term_or_zero(LogIndex(i)).get())).collect()
    }

    pub fn conf_state(&self, n: u64) -> ConfState {
        self.raw(n).raft.tracker.conf_state()
    }

    pub fn is_joint(&self, n: u64) -> bool {
        self.raw(n).raft.tracker.voters.is_joint()
    }

    /// The applied payloads of `n`, as strings.
    pub fn sm(&self, n: u64) -> Vec<String> {
        self.node(n).sm.iter().map(|b| String::from_utf8_lossy(b).into_owned()).collect()
    }

    /// The up replica that leads in the highest term, if any.
    pub fn leader(&self) -> Option<u64> {
        self.nodes.values().filter(|n| n.raw.raft.role == Role::Leader).max_by_key(|n| n.raw.raft.term).map(|n| n.cfg.id.0)
    }

    /// Messages sent so far from `from` to `to`.
    pub fn sent_between(&self, from: u64, to: u64) -> Vec<&Message> {
        self.sent.iter().filter(|m| m.from == NodeId(from) && m.to == NodeId(to)).collect()
    }

    /// The state of every replica, for failure messages.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        for (id, node) in &self.nodes {
            let r = &node.raw.raft;
            out += &format!(
                "node {id}: {:?} term {} leader {} commit {} applied {} persisted {} log [{}, {}] conf {:?}\n",
                r.role, r.term, r.leader, r.log.committed, r.log.applied, r.log.persisted, r.log.first_index(), r.log.last_index(), r.tracker.conf_state()
            );
            if r.role == Role::Leader {
                for p in r.tracker.iter() {
                    out += &format!("    progress {}: match {} next {} {:?} probe_sent {} inflight {} heard {}\n", p.id, p.matched, p.next, p.state, p.probe_sent, p.inflights.len(), p.last_heard_tick);
                }
            }
        }
        for id in self.down.keys() {
            out += &format!("node {id}: down\n");
        }
        out
    }

    // ---- client operations ------------------------------------------------------------

    /// Proposes `data` at `n`, which must accept it.
    pub fn propose(&mut self, n: u64, data: &str) -> LogIndex {
        let raw = self.raw_mut(n);
        raw.propose(Bytes::copy_from_slice(data.as_bytes())).unwrap_or_else(|e| panic!("node {n} refused proposal {data:?}: {e}"))
    }

    /// Proposes a membership change at `n`, which must accept it.
    pub fn propose_change(&mut self, n: u64, cc: &ConfChange) -> LogIndex {
        self.raw_mut(n).propose_conf_change(cc).unwrap_or_else(|e| panic!("node {n} refused {cc:?}: {e}"))
    }

    pub fn campaign(&mut self, n: u64) {
        self.raw_mut(n).campaign();
    }

    // ---- the network ------------------------------------------------------------------

    /// Every id the network knows, up or down.
    fn all_ids(&self) -> Vec<NodeId> {
        let mut all: Vec<NodeId> = self.nodes.keys().chain(self.down.keys()).copied().collect();
        all.sort_unstable();
        all
    }

    /// Cuts the link from `a` to each of `to`, one way.
    pub fn cut_from(&mut self, a: u64, to: &[u64]) {
        for &b in to {
            self.cut.insert((NodeId(a), NodeId(b)));
        }
    }

    /// Cuts every link between `a` and the rest, both ways.
    pub fn isolate(&mut self, a: u64) {
        for b in self.all_ids() {
            if b != NodeId(a) {
                self.cut.insert((NodeId(a), b));
                self.cut.insert((b, NodeId(a)));
            }
        }
    }

    /// Splits the replicas into `side` and the rest.
    pub fn partition(&mut self, side: &[u64]) {
        let all = self.all_ids();
        for &a in &all {
            for &b in &all {
                if side.contains(&a.0) != side.contains(&b.0) {
                    self.cut.insert((a, b));
                }
            }
        }
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// Installs a filter on messages in transit (see `Filter`).
    pub fn set_filter(&mut self, filter: impl FnMut(&mut Message) -> bool + 'static) {
        self.filter = Some(Box::new(filter));
    }

    pub fn clear_filter(&mut self) {
        self.filter = None;
    }

    fn send(&mut self, m: Message) {
        self.sent.push(m.clone());
        self.queue.push_back(m);
    }

    /// Delivers every queued message (and none sent meanwhile) that no cut
    /// or filter stops. Returns whether any arrived.
    pub fn deliver_all(&mut self) -> bool {
        let mut delivered = false;
        for mut m in std::mem::take(&mut self.queue) {
            if self.cut.contains(&(m.from, m.to)) || !self.nodes.contains_key(&m.to) {
                continue;
            }
            if let Some(filter) = self.filter.as_mut() {
                if !filter(&mut m) {
                    continue;
                }
            }
            let node = self.nodes.get_mut(&m.to).expect("checked above");
            if node.quiesced {
                node.quiesced = false;
                node.raw.wake();
            }
            node.raw.step(m);
            delivered = true;
        }
        delivered
    }

    // ---- readies ----------------------------------------------------------------------

    /// Takes `n`'s next ready without acting on it (for scripts that inspect it).
    pub fn ready(&mut self, n: u64) -> Ready {
        self.raw_mut(n).ready()
    }

    /// Acts on a ready of `n` as the contract says: send `messages`, restore a
    /// snapshot, persist (now, or later while `hold_persist`), then send
    /// `persisted_messages`, apply committed entries, collect reads.
    pub fn handle(&mut self, n: u64, rd: Ready) {
        let Ready { number, hard_state, snapshot, entries, messages, persisted_messages, committed_entries, read_states, soft_state: _ } = rd;
        for m in messages {
            self.send(m);
        }
        let node = self.node_mut(n);
        if let Some(s) = &snapshot {
            node.sm = decode_sm(&s.data);
            node.applied_index = s.meta.index;
        }
        node.held.push_back(HeldReady { number, hard_state, snapshot, entries, persisted_messages });
        if !node.hold_persist {
            self.persist(n);
        }
        self.apply(n, committed_entries);
        self.node_mut(n).read_states.extend(read_states);
        self.check_leader(n);
    }

    /// Processes `n`'s ready if it has one; returns whether it had.
    pub fn process(&mut self, n: u64) -> bool {
        self.serve_snapshot_request(n);
        if !self.raw(n).has_ready() {
            return false;
        }
        let rd = self.ready(n);
        self.handle(n, rd);
        true
    }

    /// Makes every held ready of `n` durable.
    pub fn persist(&mut self, n: u64) {
        self.persist_up_to(n, u64::MAX);
    }

    /// Makes the held readies of `n` numbered up to `number` durable, in
    /// order, then sends what waited for them.
    pub fn persist_up_to(&mut self, n: u64, number: u64) {
        let node = self.node_mut(n);
        let mut out = Vec::new();
        let mut last = None;
        while node.held.front().is_some_and(|h| h.number <= number) {
            let h = node.held.pop_front().expect("front exists");
            let storage = &mut node.raw.raft.log.storage;
            if let Some(s) = h.snapshot {
                storage.apply_snapshot(s);
            }
            storage.append_owned(h.entries);
            if let Some(hs) = h.hard_state {
                storage.set_hard_state(hs);
            }
            out.extend(h.persisted_messages);
            last = Some(h.number);
        }
        if let Some(number) = last {
            node.raw.on_persisted(number);
        }
        for m in out {
            self.send(m);
        }
    }

    fn apply(&mut self, n: u64, committed: Vec<Entry>) {
        let node = self.nodes.get_mut(&NodeId(n)).expect("node is up");
        for e in committed {
            assert_eq!(e.index, node.applied_index.next(), "node {n} applies out of order");
            node.applied_index = e.index;
            match self.applied.entry(e.index) {
                MapEntry::Occupied(o) => {
                    let (term, data) = o.get();
                    assert!(*term == e.term && *data == e.data, "state machine safety: node {n} applied ({}, {:?}) at {} where another applied ({term}, {data:?})", e.term, e.data, e.index);
                }
                MapEntry::Vacant(v) => {
                    v.insert((e.term, e.data.clone()));
                }
            }
            if e.kind == EntryKind::Normal && !e.data.is_empty() {
                node.sm.push(e.data);
            }
        }
    }

    /// Election safety: at most one leader per term, ever.
    fn check_leader(&mut self, n: u64) {
        let raft = &self.node(n).raw.raft;
        if raft.role != Role::Leader {
            return;
        }
        let (term, id) = (raft.term, raft.id);
        let first = *self.leaders.entry(term).or_insert(id);
        assert_eq!(first, id, "two leaders in term {term}: {first} and {id}");
    }

    /// When the leader's storage was asked for a snapshot newer than it
    /// holds, makes one from the state machine (what the engine does).
    fn serve_snapshot_request(&mut self, n: u64) {
        let node = self.node(n);
        let storage = &node.raw.raft.log.storage;
        let wanted = storage.snapshot_wanted();
        if wanted > LogIndex::ZERO && node.applied_index >= wanted {
            self.snapshot(n);
        }
    }

    /// Snapshots `n`'s state machine at its applied index and compacts its
    /// log up to there.
    pub fn snapshot(&mut self, n: u64) {
        let node = self.node_mut(n);
        let at = node.applied_index;
        let storage = &node.raw.raft.log.storage;
        if at < storage.first_index() || at > storage.last_index() {
            return;
        }
        let cs = node.raw.raft.tracker.conf_state();
        let data = encode_sm(&node.sm);
        node.raw.raft.log.storage.create_snapshot(at, cs, data);
    }

    // ---- time and rounds ---------------------------------------------------------------

    /// One round: every up replica processes its ready, then every queued
    /// message is delivered. Returns whether anything happened.
    pub fn round(&mut self) -> bool {
        let mut busy = false;
        for n in self.ids() {
            busy |= self.process(n);
        }
        busy | self.deliver_all()
    }

    /// Runs rounds until nothing moves. Panics if that never happens.
    pub fn stabilize(&mut self) {
        for _ in 0..STABILIZE_ROUNDS_MAX {
            if !self.round() {
                return;
            }
        }
        panic!("the cluster did not settle within {STABILIZE_ROUNDS_MAX} rounds");
    }

    /// Runs rounds until `done` holds (checked after each); false if it did
    /// not within `rounds_max`.
    pub fn run_until(&mut self, rounds_max: usize, mut done: impl FnMut(&Net) -> bool) -> bool {
        for _ in 0..rounds_max {
            if done(self) {
                return true;
            }
            self.round();
        }
        done(self)
    }

    /// Ticks replica `n` once, without processing anything.
    pub fn tick(&mut self, n: u64) {
        self.raw_mut(n).tick();
    }

    /// Ticks every up replica that is not quiesced, then stabilizes.
    pub fn tick_all(&mut self) {
        for n in self.ids() {
            if !self.node(n).quiesced {
                self.tick(n);
            }
        }
        self.stabilize();
    }

    /// Stabilizes, then runs one heartbeat round: raftcore tells a
    /// follower that already holds every entry about a new commit index
    /// with the next heartbeat, not with an extra append.
    pub fn settle(&mut self) {
        self.stabilize();
        self.tick_all();
    }

    pub fn ticks(&mut self, count: u32) {
        for _ in 0..count {
            self.tick_all();
        }
    }

    /// Ticks (stabilizing after each) until `done` holds; returns the number
    /// of ticks it took, or `None` if it did not within `ticks_max`.
    pub fn tick_until(&mut self, ticks_max: u32, mut done: impl FnMut(&Net) -> bool) -> Option<u32> {
        for t in 0..=ticks_max {
            if done(self) {
                return Some(t);
            }
            if t < ticks_max {
                self.tick_all();
            }
        }
        None
    }

    // ---- elections -------------------------------------------------------------------

    /// Ticks every replica through one election timeout with the network
    /// cut, so no lease, startup guard or known leader keeps a voter from
    /// answering the next campaign. Replicas that time out meanwhile campaign
    /// in vain (with pre-vote, their terms stay put). Ends with the links
    /// as they were.
    pub fn forget_leader(&mut self) {
        let links = std::mem::take(&mut self.cut);
        for n in self.ids() {
            self.isolate(n);
        }
        let timeout = self.nodes.values().map(|n| n.cfg.election_timeout_ticks).max().expect("some node is up");
        self.ticks(timeout);
        self.cut = links;
    }

    /// On a fresh cluster: makes `n` the leader and lets it commit its
    /// first entry everywhere.
    pub fn elect(&mut self, n: u64) {
        if self.nodes.values().any(|node| node.cfg.check_quorum) {
            self.forget_leader();
        }
        self.campaign(n);
        self.stabilize();
        assert_eq!(self.role(n), Role::Leader, "node {n} did not win the election");
        assert_eq!(self.term_at(n, self.committed(n).get()), Some(self.term(n)), "node {n} did not commit an entry of its term");
    }

    // ---- crashes and quiescence ----------------------------------------------------------

    /// Stops `n`: what it had not persisted is lost, queued messages to and
    /// from it are dropped.
    pub fn crash(&mut self, n: u64) {
        let node = self.nodes.remove(&NodeId(n)).unwrap_or_else(|| panic!("node {n} is not up"));
        self.down.insert(NodeId(n), (node.raw.raft.log.storage.clone(), node.cfg));
        self.queue.retain(|m| m.from != NodeId(n) && m.to != NodeId(n));
    }

    /// Restarts a crashed `n` from its durable image.
    pub fn restart(&mut self, n: u64) {
        let (storage, cfg) = self.down.remove(&NodeId(n)).unwrap_or_else(|| panic!("node {n} is not down"));
        self.insert(cfg, storage);
    }

    /// Quiesces every replica (all must report idle first) and stops ticking them.
    pub fn quiesce_all(&mut self) {
        for node in self.nodes.values_mut() {
            assert!(node.raw.is_idle(), "node {} is not idle", node.cfg.id);
            node.raw.quiesce();
            node.quiesced = true;
        }
    }

    /// Wakes `n` (a proposal or read arrived for it).
    pub fn wake(&mut self, n: u64) {
        let node = self.node_mut(n);
        node.quiesced = false;
        node.raw.wake();
    }
}
