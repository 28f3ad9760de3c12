//! An in-memory driver of many three-replica groups in one thread, for
//! benchmarks: messages are handed over through queues, storage is
//! `MemStorage`, persistence completes at once. It measures the protocol
//! alone (no network, no disk), the way the engine drives it: every group
//! with work is drained in one pass, then every message is delivered.
//!
//! Used by `cargo bench -p raftcore` and by `myriad-bench raftcore`.

use std::sync::Arc;

use bytes::Bytes;

use crate::config::Config;
use crate::message::Message;
use crate::node::{RawNode, Ready};
use crate::storage::{MemStorage, Storage};
use crate::types::{ConfState, EntryKind, LogIndex, NodeId, Role};

/// Replicas per group.
pub const REPLICAS: usize = 3;

/// Log entries a replica keeps after compaction (followers slow by more than
/// this get a snapshot; in this harness none are).
const KEEP_ENTRIES: u64 = 16;

/// Shape of a run.
#[derive(Clone, Debug)]
pub struct HarnessShape {
    pub groups: usize,
    pub payload_bytes: usize,
    /// Entries per proposal (one `propose_batch` call per group per round).
    pub batch_entries: usize,
}

/// Counters a run reports.
#[derive(Clone, Copy, Debug, Default)]
pub struct HarnessStats {
    /// User entries the leaders handed out as committed (applied).
    pub committed_entries: u64,
    pub readies: u64,
    pub messages: u64,
    pub rounds: u64,
}

struct Group {
    replicas: [RawNode<MemStorage>; REPLICAS],
    /// Index of the leader replica in `replicas`.
    leader: usize,
}

impl Group {
    /// Points `leader` at the replica that leads and has committed an entry
    /// of its term; false if there is none yet.
    fn find_leader(&mut self) -> bool {
        let found = self.replicas.iter().position(|r| {
            let raft = &r.raft;
            raft.role == Role::Leader && raft.log.term_or_zero(raft.log.committed) == raft.term
        });
        if let Some(i) = found {
            self.leader = i;
        }
        found.is_some()
    }
}

pub struct Harness {
    shape: HarnessShape,
    groups: Vec<Group>,
    payload: Bytes,
    /// Messages produced in the current pass, delivered in the next.
    outbox: Vec<(usize, Message)>,
    pub stats: HarnessStats,
}

/// Replica `i` of a group has node id `i + 1`.
fn node_id(i: usize) -> NodeId {
    NodeId(i as u64 + 1)
}

impl Harness {
    /// Creates the groups and ticks them until each has elected a leader
    /// and committed its first entry.
    pub fn new(shape: HarnessShape) -> Harness {
        let voters: Vec<NodeId> = (0..REPLICAS).map(node_id).collect();
        let cs = ConfState { voters, ..Default::default() };
        let configs: [Arc<Config>; REPLICAS] = std::array::from_fn(|i| Arc::new(Config::new(node_id(i))));
        let groups = (0..shape.groups)
            .map(|g| Group {
                replicas: std::array::from_fn(|i| RawNode::new_shared(configs[i].clone(), g as u64, MemStorage::new(cs.clone())).expect("valid config")),
                leader: 0,
            })
            .collect();
        let payload = Bytes::from(vec![0x5a; shape.payload_bytes]);
        let mut h = Harness { shape, groups, payload, outbox: Vec::new(), stats: HarnessStats::default() };
        for _ in 0..200 {
            if h.groups.iter_mut().all(Group::find_leader) {
                h.stats = HarnessStats::default();
                return h;
            }
            h.tick_all();
        }
        panic!("not every group elected a leader within 200 ticks");
    }

    fn tick_all(&mut self) {
        for g in &mut self.groups {
            for r in &mut g.replicas {
                r.tick();
            }
        }
        while self.pump() {}
    }

    /// One round: every leader proposes one batch, then the cluster is pumped
    /// until the proposals of this round are committed and applied.
    pub fn round(&mut self) {
        let batch = self.shape.batch_entries;
        for g in &mut self.groups {
            let leader = &mut g.replicas[g.leader];
            let payload = &self.payload;
            leader.propose_batch((0..batch).map(|_| payload.clone())).expect("the leader accepts proposals");
        }
        while self.pump() {}
        self.stats.rounds += 1;
    }

    /// Processes the ready state of every replica, then delivers every
    /// message produced. Returns whether anything happened.
    pub fn pump(&mut self) -> bool {
        let mut busy = false;
        for (gi, g) in self.groups.iter_mut().enumerate() {
            for (ri, replica) in g.replicas.iter_mut().enumerate() {
                if !replica.has_ready() {
                    continue;
                }
                busy = true;
                let Ready { number, hard_state, snapshot, entries, messages, persisted_messages, committed_entries, .. } = replica.ready();
                self.stats.readies += 1;
                if ri == g.leader {
                    let user = committed_entries.iter().filter(|e| e.kind == EntryKind::Normal && !e.data.is_empty());
                    self.stats.committed_entries += user.count() as u64;
                }
                // Durable in memory, in the order the contract asks.
                let storage = &mut replica.raft.log.storage;
                if let Some(s) = snapshot {
                    storage.apply_snapshot(s);
                }
                storage.append_owned(entries);
                if let Some(hs) = hard_state {
                    storage.set_hard_state(hs);
                }
                replica.on_persisted(number);
                compact(replica);
                self.stats.messages += (messages.len() + persisted_messages.len()) as u64;
                self.outbox.extend(messages.into_iter().chain(persisted_messages).map(|m| (gi, m)));
            }
        }
        for (gi, m) in self.outbox.drain(..) {
            let to = m.to.0 as usize - 1;
            self.groups[gi].replicas[to].step(m);
        }
        busy
    }

    /// Ticks every replica `ticks` times, pumping after each, and then
    /// quiesces every group that reports idle. Returns how many did.
    pub fn settle_and_quiesce(&mut self, ticks: u32) -> usize {
        for _ in 0..ticks {
            self.tick_all();
        }
        let mut quiesced = 0;
        for g in &mut self.groups {
            if g.replicas.iter().all(|r| r.is_idle()) {
                g.replicas.iter_mut().for_each(RawNode::quiesce);
                quiesced += 1;
            }
        }
        quiesced
    }

    /// Compacts every replica's log up to its applied index (what the
    /// engine does once the state machine has a snapshot).
    pub fn compact_all(&mut self) {
        for g in &mut self.groups {
            for r in &mut g.replicas {
                let applied = r.raft.log.applied;
                r.raft.log.storage.compact(applied);
            }
        }
        self.outbox = Vec::new();
    }

    pub fn replica_count(&self) -> usize {
        self.groups.len() * REPLICAS
    }
}

/// Drops applied entries beyond the last `KEEP_ENTRIES`, as the engine's
/// log compaction would.
fn compact(replica: &mut RawNode<MemStorage>) {
    let applied = replica.raft.log.applied;
    let storage = &mut replica.raft.log.storage;
    if applied.get() >= storage.first_index().get() + 2 * KEEP_ENTRIES && applied <= storage.last_index() {
        storage.compact(LogIndex(applied.get() - KEEP_ENTRIES));
    }
}
