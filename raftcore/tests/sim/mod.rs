//! A deterministic world for raftcore replicas: a network that delays, drops,
//! duplicates and reorders messages and can be partitioned (also one way),
//! disks that persist `Ready`s late and lose what was not persisted when a
//! node crashes, and a checker of Raft's safety properties that runs after
//! every step. One seed decides everything, so any failure replays from it.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use raftcore::rng::Rng;
use raftcore::{Config, ConfState, Entry, EntryKind, HardState, LogIndex, MemStorage, Message, NodeId, RawNode, Ready, Role, Snapshot, Storage, Term};

/// Fault rates and delays; percentages are per message or per step.
#[derive(Clone, Debug)]
pub struct Faults {
    pub drop_pct: u64,
    pub dup_pct: u64,
    /// Message delay is uniform in `[1, delay_max]` steps (reorders too).
    pub delay_max: u64,
    /// Persisting a `Ready` completes after `[0, persist_delay_max]` steps.
    pub persist_delay_max: u64,
}

impl Faults {
    pub fn none() -> Faults {
        Faults { drop_pct: 0, dup_pct: 0, delay_max: 1, persist_delay_max: 0 }
    }
}

/// What a replica persists and, once durable, sends: one `Ready`'s worth.
struct PendingPersist {
    number: u64,
    /// `Ready::awaits_persisted`: without it, durability is not reported.
    awaited: bool,
    due_step: u64,
    hard_state: Option<HardState>,
    snapshot: Option<Snapshot>,
    entries: Vec<Entry>,
    persisted_messages: Vec<Message>,
}

/// The replicated state machine: the ids of applied proposals, in order.
#[derive(Clone, Debug, Default)]
pub struct StateMachine {
    pub applied_index: LogIndex,
    pub ids: Vec<u64>,
}

impl StateMachine {
    fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(8 * (self.ids.len() + 1));
        out.extend_from_slice(&self.applied_index.0.to_le_bytes());
        for id in &self.ids {
            out.extend_from_slice(&id.to_le_bytes());
        }
        Bytes::from(out)
    }

    fn decode(data: &[u8], index: LogIndex) -> StateMachine {
        if data.is_empty() {
            return StateMachine { applied_index: index, ids: Vec::new() };
        }
        let words: Vec<u64> = data.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())).collect();
        assert_eq!(LogIndex(words[0]), index, "snapshot data does not match its index");
        StateMachine { applied_index: index, ids: words[1..].to_vec() }
    }
}

pub struct SimNode {
    pub id: NodeId,
    pub raw: Option<RawNode<MemStorage>>,
    /// The durable image of a crashed node, until it restarts.
    durable_while_down: Option<MemStorage>,
    pending: VecDeque<PendingPersist>,
    pub sm: StateMachine,
    /// Proposals this node made as leader: index → (term, proposal id).
    proposals: BTreeMap<LogIndex, (Term, u64)>,
    /// Reads this node started: request id → highest acknowledged write index
    /// when the read was invoked.
    reads: BTreeMap<u64, LogIndex>,
    /// Highest commit index seen in this incarnation.
    commit_seen: LogIndex,
    cfg: Config,
}

impl SimNode {
    pub fn raw(&self) -> &RawNode<MemStorage> {
        self.raw.as_ref().expect("node is up")
    }

    pub fn raw_mut(&mut self) -> &mut RawNode<MemStorage> {
        self.raw.as_mut().expect("node is up")
    }

    pub fn is_up(&self) -> bool {
        self.raw.is_some()
    }

    pub fn role(&self) -> Option<Role> {
        self.raw.as_ref().map(|r| r.raft.role)
    }
}

struct InFlight {
    deliver_at: u64,
    seq: u64,
    msg: Message,
}

/// Global facts the checker accumulates across the run.
#[derive(Default)]
pub struct Checker {
    /// term → the node that led it.
    leaders: BTreeMap<Term, NodeId>,
    /// index → (term, data) of what any state machine applied there.
    applied: BTreeMap<LogIndex, (Term, Bytes)>,
    /// Proposals whose proposer applied them: id → index.
    pub acked: BTreeMap<u64, LogIndex>,
    pub max_acked_index: LogIndex,
    pub reads_checked: u64,
    pub leaders_elected: u64,
    pub snapshots_installed: u64,
    pub conf_changes_applied: u64,
}

pub struct Cluster {
    pub rng: Rng,
    pub step_no: u64,
    pub nodes: BTreeMap<NodeId, SimNode>,
    network: Vec<InFlight>,
    msg_seq: u64,
    /// Directed links that drop everything: (from, to).
    pub cut: BTreeSet<(NodeId, NodeId)>,
    pub faults: Faults,
    pub checker: Checker,
    next_proposal_id: u64,
    next_read_id: u64,
    /// Compact a node's log once it has applied this many entries past its snapshot.
    pub compact_every_entries: u64,
    pub trace: bool,
}

pub fn config_for(id: NodeId, seed: u64) -> Config {
    let mut cfg = Config::new(id);
    cfg.seed = seed.wrapping_mul(31).wrapping_add(id.0);
    cfg.election_timeout_ticks = 10;
    cfg.heartbeat_ticks = 2;
    cfg.lease_ticks = 7;
    cfg.max_inflight_msgs = 8;
    cfg.max_append_entries = 16;
    cfg.snapshot_chunk_bytes = 64;
    cfg.snapshot_chunks_inflight = 2;
    // Half the seeds run as the engine's nodes do.
    cfg.skip_heartbeats_after_appends = seed % 2 == 1;
    cfg
}

impl Cluster {
    /// `voters` initial members (ids 1..=voters) and `spares` nodes that
    /// exist but are not members until a membership change adds them.
    pub fn new(voters: u64, spares: u64, seed: u64, faults: Faults) -> Cluster {
        let cs = ConfState { voters: (1..=voters).map(NodeId).collect(), ..Default::default() };
        let mut nodes = BTreeMap::new();
        for i in 1..=voters + spares {
            let id = NodeId(i);
            let storage = if i <= voters { MemStorage::new(cs.clone()) } else { MemStorage::default() };
            let cfg = config_for(id, seed);
            let raw = RawNode::new(cfg.clone(), storage).expect("valid config");
            let sm = StateMachine { applied_index: raw.raft.log.applied, ids: Vec::new() };
            nodes.insert(id, SimNode { id, raw: Some(raw), durable_while_down: None, pending: VecDeque::new(), sm, proposals: BTreeMap::new(), reads: BTreeMap::new(), commit_seen: LogIndex::ZERO, cfg });
        }
        Cluster {
            rng: Rng::new(seed),
            step_no: 0,
            nodes,
            network: Vec::new(),
            msg_seq: 0,
            cut: BTreeSet::new(),
            faults,
            checker: Checker::default(),
            next_proposal_id: 1,
            next_read_id: 1,
            compact_every_entries: u64::MAX,
            trace: std::env::var_os("SIM_TRACE").is_some(),
        }
    }

    pub fn ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    pub fn node(&self, id: u64) -> &SimNode {
        &self.nodes[&NodeId(id)]
    }

    pub fn node_mut(&mut self, id: u64) -> &mut SimNode {
        self.nodes.get_mut(&NodeId(id)).expect("node exists")
    }

    /// The live node that is leader in the highest term, if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.nodes.values().filter(|n| n.role() == Some(Role::Leader)).max_by_key(|n| n.raw().raft.term).map(|n| n.id)
    }

    // ---- the network ----------------------------------------------------------

    fn send(&mut self, msg: Message) {
        if self.trace {
            eprintln!("[{}] send {} -> {} t{} {:?}", self.step_no, msg.from, msg.to, msg.term, msg.body);
        }
        if self.cut.contains(&(msg.from, msg.to)) || self.rng.below(100) < self.faults.drop_pct {
            return;
        }
        let copies = if self.rng.below(100) < self.faults.dup_pct { 2 } else { 1 };
        for _ in 0..copies {
            let deliver_at = self.step_no + 1 + self.rng.below(self.faults.delay_max.max(1));
            self.msg_seq += 1;
            self.network.push(InFlight { deliver_at, seq: self.msg_seq, msg: msg.clone() });
        }
    }

    fn deliver_due(&mut self) {
        let now = self.step_no;
        let mut due: Vec<InFlight> = Vec::new();
        let mut i = 0;
        while i < self.network.len() {
            if self.network[i].deliver_at <= now {
                due.push(self.network.swap_remove(i));
            } else {
                i += 1;
            }
        }
        due.sort_by_key(|f| (f.deliver_at, f.seq));
        for f in due {
            if self.cut.contains(&(f.msg.from, f.msg.to)) {
                continue;
            }
            if let Some(raw) = self.nodes.get_mut(&f.msg.to).and_then(|n| n.raw.as_mut()) {
                raw.step(f.msg);
            }
        }
    }

    /// Cuts every link between `a` and the rest, both ways.
    pub fn isolate(&mut self, a: u64) {
        for id in self.ids() {
            if id != NodeId(a) {
                self.cut.insert((NodeId(a), id));
                self.cut.insert((id, NodeId(a)));
            }
        }
    }

    /// Splits the nodes into `side` and the rest.
    pub fn partition(&mut self, side: &[u64]) {
        for a in self.ids() {
            for b in self.ids() {
                if side.contains(&a.0) != side.contains(&b.0) {
                    self.cut.insert((a, b));
                }
            }
        }
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }

    // ---- crashes --------------------------------------------------------------

    /// Stops a node: everything not yet persisted is lost, messages to it drop.
    pub fn crash(&mut self, id: u64) {
        let node = self.node_mut(id);
        let Some(raw) = node.raw.take() else { return };
        node.durable_while_down = Some(raw.raft.log.storage.clone());
        node.pending.clear();
        node.reads.clear();
        node.proposals.clear();
    }

    pub fn restart(&mut self, id: u64) {
        let node = self.node_mut(id);
        let Some(storage) = node.durable_while_down.take() else { return };
        let snapshot = storage.snapshot(LogIndex::ZERO).expect("mem storage snapshot");
        node.sm = StateMachine::decode(&snapshot.data, snapshot.meta.index);
        let raw = RawNode::new(node.cfg.clone(), storage).expect("valid config");
        assert_eq!(raw.raft.log.applied, node.sm.applied_index, "restart applies from the snapshot");
        node.commit_seen = raw.raft.log.committed;
        node.raw = Some(raw);
    }

    // ---- client operations ----------------------------------------------------

    /// Proposes a fresh id at node `id`; returns it if the node accepted.
    pub fn propose(&mut self, id: u64) -> Option<u64> {
        let pid = self.next_proposal_id;
        let node = self.nodes.get_mut(&NodeId(id))?;
        let raw = node.raw.as_mut()?;
        let index = raw.propose(Bytes::copy_from_slice(&pid.to_le_bytes())).ok()?;
        node.proposals.insert(index, (raw.raft.term, pid));
        self.next_proposal_id += 1;
        Some(pid)
    }

    /// Starts a linearizable read at node `id`.
    pub fn read(&mut self, id: u64) -> Option<u64> {
        let rid = self.next_read_id;
        let max_acked = self.checker.max_acked_index;
        let node = self.nodes.get_mut(&NodeId(id))?;
        node.raw.as_mut()?.read_index(rid).ok()?;
        node.reads.insert(rid, max_acked);
        self.next_read_id += 1;
        Some(rid)
    }

    // ---- driving the replicas -----------------------------------------------------

    pub fn tick(&mut self, id: u64) {
        if let Some(raw) = self.node_mut(id).raw.as_mut() {
            raw.tick();
        }
    }

    pub fn tick_all(&mut self) {
        for id in self.ids() {
            self.tick(id.0);
        }
    }

    /// One step of simulated time: deliver due messages, complete due
    /// persistence, process every ready replica, check the invariants.
    pub fn step(&mut self) {
        self.step_no += 1;
        self.deliver_due();
        for id in self.ids() {
            self.complete_persistence(id, false);
            self.process_ready(id);
            self.complete_persistence(id, false);
            self.maybe_compact(id);
        }
        self.check_invariants();
    }

    /// Delivers everything and persists immediately until nothing moves
    /// (bounded). For scripted scenarios.
    pub fn stabilize(&mut self) {
        for _ in 0..10_000 {
            let busy = !self.network.is_empty() || self.nodes.values().any(|n| n.raw.as_ref().is_some_and(|r| r.has_ready()) || !n.pending.is_empty());
            if !busy {
                return;
            }
            for f in &mut self.network {
                f.deliver_at = f.deliver_at.min(self.step_no + 1);
            }
            self.step_no += 1;
            self.deliver_due();
            for id in self.ids() {
                self.process_ready(id);
                self.complete_persistence(id, true);
            }
            self.check_invariants();
        }
        panic!("cluster did not stabilize");
    }

    fn process_ready(&mut self, id: NodeId) {
        let delay = if self.faults.persist_delay_max == 0 { 0 } else { self.rng.below(self.faults.persist_delay_max + 1) };
        let due_step = self.step_no + delay;
        let node = self.nodes.get_mut(&id).expect("node exists");
        let Some(raw) = node.raw.as_mut() else { return };
        if !raw.has_ready() {
            return;
        }
        let rd: Ready = raw.ready();
        let awaited = rd.awaits_persisted();
        let Ready { number, hard_state, snapshot, entries, messages, persisted_messages, committed_entries, read_states, .. } = rd;
        node.pending.push_back(PendingPersist { number, awaited, due_step, hard_state, snapshot, entries, persisted_messages });
        let term = raw.raft.term;
        let role = raw.raft.role;
        for m in messages {
            self.send(m);
        }
        self.apply_committed(id, committed_entries);
        self.check_reads(id, read_states);
        if role == Role::Leader {
            self.on_leader(id, term);
        }
    }

    /// Persists due readies of `id` in order (all of them with `all`).
    fn complete_persistence(&mut self, id: NodeId, all: bool) {
        loop {
            let now = self.step_no;
            let node = self.nodes.get_mut(&id).expect("node exists");
            let Some(raw) = node.raw.as_mut() else { return };
            let due = node.pending.front().is_some_and(|p| all || p.due_step <= now);
            if !due {
                return;
            }
            let p = node.pending.pop_front().expect("front exists");
            let storage = &mut raw.raft.log.storage;
            if let Some(s) = p.snapshot {
                node.sm = StateMachine::decode(&s.data, s.meta.index);
                storage.apply_snapshot(s);
                self.checker.snapshots_installed += 1;
            }
            storage.append(&p.entries);
            if let Some(hs) = p.hard_state {
                storage.set_hard_state(hs);
            }
            // As the engine does: a ready nothing waits on is not reported.
            if p.awaited {
                raw.on_persisted(p.number);
            }
            for m in p.persisted_messages {
                self.send(m);
            }
        }
    }

    fn apply_committed(&mut self, id: NodeId, entries: Vec<Entry>) {
        for e in entries {
            let node = self.nodes.get_mut(&id).expect("node exists");
            assert_eq!(e.index, node.sm.applied_index.next(), "node {id} applies out of order");
            node.sm.applied_index = e.index;
            match self.checker.applied.get(&e.index) {
                Some((term, data)) => assert!(*term == e.term && *data == e.data, "state machine safety: node {id} applied ({}, {:?}) at {} where another applied ({term}, {data:?})", e.term, e.data, e.index),
                None => {
                    self.checker.applied.insert(e.index, (e.term, e.data.clone()));
                }
            }
            if e.kind == EntryKind::ConfChange {
                self.checker.conf_changes_applied += 1;
                continue;
            }
            if e.data.len() == 8 {
                let pid = u64::from_le_bytes(e.data[..].try_into().unwrap());
                assert!(!node.sm.ids.contains(&pid), "proposal {pid} applied twice on node {id}");
                node.sm.ids.push(pid);
                if node.proposals.get(&e.index) == Some(&(e.term, pid)) {
                    self.checker.acked.insert(pid, e.index);
                    self.checker.max_acked_index = self.checker.max_acked_index.max(e.index);
                }
            }
            node.proposals.remove(&e.index);
        }
    }

    fn check_reads(&mut self, id: NodeId, read_states: Vec<raftcore::ReadState>) {
        let node = self.nodes.get_mut(&id).expect("node exists");
        for rs in read_states {
            let Some(max_acked_at_invoke) = node.reads.remove(&rs.request_id) else { continue };
            assert!(rs.index >= max_acked_at_invoke, "stale read on node {id}: read {} answered at index {} but a write at {} was acknowledged before it started", rs.request_id, rs.index, max_acked_at_invoke);
            self.checker.reads_checked += 1;
        }
    }

    /// Leader completeness: a leader holds every entry any node applied.
    fn on_leader(&mut self, id: NodeId, term: Term) {
        match self.checker.leaders.get(&term) {
            Some(other) => assert_eq!(*other, id, "two leaders in term {term}: {other} and {id}"),
            None => {
                self.checker.leaders.insert(term, id);
                self.checker.leaders_elected += 1;
                let log = &self.nodes[&id].raw().raft.log;
                let first = log.first_index();
                for (index, (t, _)) in self.checker.applied.range(first..) {
                    assert_eq!(log.term_or_zero(*index), *t, "leader completeness: new leader {id} of term {term} lacks committed entry {index}");
                }
            }
        }
    }

    fn maybe_compact(&mut self, id: NodeId) {
        let every = self.compact_every_entries;
        let node = self.nodes.get_mut(&id).expect("node exists");
        let Some(raw) = node.raw.as_mut() else { return };
        let applied = node.sm.applied_index;
        let first = raw.raft.log.storage.first_index();
        let wanted = raw.raft.log.storage.snapshot_wanted();
        let asked = wanted > LogIndex::ZERO && applied >= wanted;
        if (applied.get() < first.get() + every && !asked) || applied > raw.raft.log.storage.last_index() {
            return;
        }
        let cs = raw.raft.tracker.conf_state();
        let data = node.sm.encode();
        raw.raft.log.storage.create_snapshot(applied, cs, data);
    }

    fn check_invariants(&mut self) {
        for node in self.nodes.values_mut() {
            let Some(raw) = node.raw.as_ref() else { continue };
            let committed = raw.raft.log.committed;
            assert!(committed >= node.commit_seen, "node {} commit regressed from {} to {committed}", node.id, node.commit_seen);
            node.commit_seen = committed;
        }
        if self.step_no % 64 == 0 {
            self.check_log_matching();
        }
    }

    /// Log matching: two logs that agree on an entry's term agree on every
    /// entry before it.
    pub fn check_log_matching(&self) {
        let logs: Vec<(NodeId, Vec<(LogIndex, Term)>)> = self.nodes.values().filter(|n| n.is_up()).map(|n| (n.id, log_terms(n.raw()))).collect();
        for (i, (a, la)) in logs.iter().enumerate() {
            for (b, lb) in &logs[i + 1..] {
                let common: Vec<(LogIndex, Term, Term)> = la.iter().filter_map(|(idx, ta)| lb.iter().find(|(j, _)| j == idx).map(|(_, tb)| (*idx, *ta, *tb))).collect();
                if let Some(pos) = common.iter().rposition(|(_, ta, tb)| ta == tb) {
                    for (idx, ta, tb) in &common[..pos] {
                        assert_eq!(ta, tb, "log matching: nodes {a} and {b} agree at {} but differ at {idx}", common[pos].0);
                    }
                }
            }
        }
    }

    /// Heals everything, restarts crashed nodes, and runs until every member
    /// applied every acknowledged write. Panics if that does not happen.
    pub fn converge(&mut self, steps_max: u64) {
        self.heal();
        self.faults = Faults { persist_delay_max: self.faults.persist_delay_max.min(2), ..Faults::none() };
        for id in self.ids() {
            self.restart(id.0);
        }
        for n in 0..steps_max {
            if n % 4 == 0 {
                self.tick_all();
            }
            self.step();
            let target = self.checker.max_acked_index;
            if let Some(leader) = self.leader() {
                let members = self.node(leader.0).raw().raft.tracker.member_ids();
                let done = members.iter().all(|m| self.nodes[m].sm.applied_index >= target);
                if done {
                    self.check_acked_applied(&members);
                    self.check_log_matching();
                    return;
                }
            }
        }
        panic!("no convergence within {steps_max} steps: acked up to {}\n{}", self.checker.max_acked_index, self.dump());
    }

    /// The state of every node, for failure messages.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        for n in self.nodes.values() {
            let Some(raw) = n.raw.as_ref() else {
                out += &format!("node {}: down\n", n.id);
                continue;
            };
            let r = &raw.raft;
            out += &format!(
                "node {}: {:?} term {} leader {} commit {} applied {} persisted {} log [{}, {}] sm {} conf {:?}\n",
                n.id, r.role, r.term, r.leader, r.log.committed, r.log.applied, r.log.persisted, r.log.first_index(), r.log.last_index(), n.sm.applied_index, r.tracker.conf_state()
            );
            if r.role == Role::Leader {
                for p in r.tracker.iter() {
                    out += &format!("    progress {}: match {} next {} {:?} probe_sent {} inflight {} heard {}\n", p.id, p.matched, p.next, p.state, p.probe_sent, p.inflights.len(), p.last_heard_tick);
                }
            }
        }
        out
    }

    fn check_acked_applied(&self, members: &[NodeId]) {
        for m in members {
            let ids: BTreeSet<u64> = self.nodes[m].sm.ids.iter().copied().collect();
            for pid in self.checker.acked.keys() {
                assert!(ids.contains(pid), "acknowledged proposal {pid} (index {}) missing on node {m}\n{}", self.checker.acked[pid], self.dump());
            }
        }
    }
}

fn log_terms(raw: &RawNode<MemStorage>) -> Vec<(LogIndex, Term)> {
    let log = &raw.raft.log;
    let first = log.first_index();
    let last = log.last_index();
    (first.get()..=last.get()).map(|i| (LogIndex(i), log.term_or_zero(LogIndex(i)))).collect()
}
