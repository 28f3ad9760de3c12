//! One Raft group on one core: its replica, its state machine, and the client
//! requests waiting on it. Answers are given only when they are true: a write
//! is `Done` once its own entry is applied, `NotLeader` when it certainly was
//! not applied, and `Unknown` when leadership was lost while it was in flight.

use std::collections::VecDeque;

use bytes::Bytes;
use raftcore::{EntryKind, LogIndex, MemStorage, ProposeError, RawNode, ReadError, Role, Term};

use crate::client::proto::{Reply, SCAN_REPLY_BYTES_MAX};
use crate::kv::{KvReply, KvStore, StateMachine};

/// Answers one client request; called at most once.
pub type Responder = Box<dyn FnOnce(Reply)>;

/// Most client requests waiting on one group (proposals plus reads).
pub const WAITING_REQUESTS_MAX: usize = 65_536;

/// A read evaluated against the state machine.
#[derive(Clone, Debug)]
pub enum ReadOp {
    Get { key: Bytes },
    Scan { prefix: Bytes, limit: u32 },
}

struct Proposal {
    index: LogIndex,
    term: Term,
    respond: Responder,
}

struct WaitingRead {
    /// Set once the leader confirmed the read: serve when applied this far.
    index: Option<LogIndex>,
    request_id: u64,
    op: ReadOp,
    respond: Responder,
}

pub struct Group {
    pub id: u64,
    pub raw: RawNode<MemStorage>,
    pub sm: KvStore,
    /// In index order.
    proposals: VecDeque<Proposal>,
    reads: Vec<WaitingRead>,
    next_read_id: u64,
    /// Already in the core's list of groups to process.
    pub scheduled: bool,
    /// Not ticked until a message, a request or a lost peer wakes it.
    pub quiesced: bool,
    /// Consecutive ticks this group was idle.
    pub idle_ticks: u32,
    /// This replica leads the group (as of its last ready).
    leading: bool,
    /// The commit index at the previous tick.
    commit_at_last_tick: u64,
    /// The token of this group's snapshot being saved, if one is.
    pub snapshot_saving: Option<u64>,
}

/// What a role change did to a replica's leadership.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leadership {
    Began,
    Ended,
    Unchanged,
}

impl crate::group_table::Prefetch for Group {
    type Visit = Visit;

    /// What `visit` touches beyond the group itself: the replica's heap
    /// parts always; the newest stored entry when a message is stepped or a
    /// ready taken; the oldest proposal waiting for its answer and the KV
    /// map's first lines only when a ready is taken.
    fn prefetch_parts(&self, visit: Visit) {
        use crate::group_table::{prefetch_range, PARTS_LINES_MAX};
        use std::mem::size_of;
        for (address, bytes) in self.raw.hot_memory() {
            prefetch_range(address, bytes, PARTS_LINES_MAX);
        }
        if matches!(visit, Visit::Step | Visit::Ready) {
            // A follower checks an append against it; a ready's committed
            // entries end near it.
            if let Some(last) = self.raw.raft.log.storage.stored_entries().last() {
                prefetch_range(last as *const raftcore::Entry as usize, size_of::<raftcore::Entry>(), PARTS_LINES_MAX);
            }
        }
        if visit == Visit::Ready {
            // Only a ready applies and answers proposers.
            if let Some(front) = self.proposals.front() {
                prefetch_range(front as *const _ as usize, 64, 1);
            }
            for (address, bytes) in self.sm.hot_memory() {
                prefetch_range(address, bytes, crate::kv::HOT_MEMORY_LINES_MAX);
            }
        }
    }
}

/// What the shard's loop over many groups does with each (see `Prefetch`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Visit {
    /// Steps a peer's message.
    Step,
    /// Takes the group's ready: persists, sends, applies, answers.
    Ready,
    /// Tells the group a ready of it is durable.
    Durable,
    /// Ticks it.
    Tick,
}

impl Group {
    pub fn new(id: u64, raw: RawNode<MemStorage>, sm: KvStore) -> Group {
        Group { id, raw, sm, proposals: VecDeque::new(), reads: Vec::new(), next_read_id: 1, scheduled: false, quiesced: false, idle_ticks: 0, leading: false, commit_at_last_tick: 0, snapshot_saving: None }
    }

    /// Resumes ticking after quiescence; true if it was quiesced (the
    /// caller then ticks it again).
    #[must_use]
    pub fn wake(&mut self) -> bool {
        if !self.quiesced {
            return false;
        }
        self.idle_ticks = 0;
        self.quiesced = false;
        self.raw.wake();
        true
    }

    /// One tick; the group quiesces once it was idle for `quiesce_after_ticks`.
    /// A follower quiesces only while `leader_reachable` says its leader's
    /// node is connected: one that lost its leader must keep ticking to elect
    /// another.
    pub fn tick(&mut self, quiesce_after_ticks: u32, leader_reachable: impl Fn(u64) -> bool) {
        debug_assert!(!self.quiesced, "quiesced groups are not ticked");
        // Idle as the last ready left it: the heartbeat this tick may send
        // does not count as work.
        let idle = self.raw.is_idle() && self.waiting() == 0;
        // Work done between two ticks leaves no trace in `idle`; a commit
        // does, and the followers learn it only from the next heartbeat, so
        // the idle count starts again: the quiet ticks before quiescing then
        // hold a heartbeat that carries it. Without this a leader whose
        // write committed just before its fourth quiet tick went to rest
        // with its followers a commit behind, unable to rest themselves; they
        // campaigned an election timeout later and deposed it.
        let committed = self.raw.raft.log.committed.0;
        let fresh_commit = std::mem::replace(&mut self.commit_at_last_tick, committed) != committed;
        self.raw.tick();
        let raft = &self.raw.raft;
        let leader_ok = raft.role == Role::Leader || leader_reachable(raft.leader.0);
        if !leader_ok || !idle || fresh_commit {
            self.idle_ticks = 0;
            return;
        }
        self.idle_ticks += 1;
        // Not while this tick's heartbeat waits to go out: quiescing drops
        // it, and it may be the one that tells the followers the last commit
        // (a follower that never learns it cannot go idle and campaigns).
        if self.idle_ticks >= quiesce_after_ticks && !self.raw.has_ready() {
            self.raw.quiesce();
            self.quiesced = true;
        }
    }

    fn waiting(&self) -> usize {
        self.proposals.len() + self.reads.len()
    }

    pub fn propose(&mut self, command: Bytes, respond: Responder) {
        if self.waiting() >= WAITING_REQUESTS_MAX {
            return respond(Reply::Busy);
        }
        match self.raw.propose(command) {
            Ok(index) => self.proposals.push_back(Proposal { index, term: self.raw.raft.term, respond }),
            Err(ProposeError::NotLeader { leader }) => respond(Reply::NotLeader { leader: leader.0 }),
            Err(ProposeError::LeaderLeaving) => respond(Reply::NotLeader { leader: 0 }),
            Err(ProposeError::TransferInProgress(_) | ProposeError::TooManyUncommitted { .. }) => respond(Reply::Busy),
            Err(e) => respond(Reply::Error(e.to_string())),
        }
    }

    /// A linearizable read (ReadIndex, or the leader lease when it holds).
    pub fn read(&mut self, op: ReadOp, respond: Responder) {
        if self.waiting() >= WAITING_REQUESTS_MAX {
            return respond(Reply::Busy);
        }
        let request_id = self.next_read_id;
        self.next_read_id += 1;
        match self.raw.read_index(request_id) {
            Ok(()) => self.reads.push(WaitingRead { index: None, request_id, op, respond }),
            Err(ReadError::NoLeader) => respond(Reply::NotLeader { leader: 0 }),
            Err(ReadError::TooManyPending) => respond(Reply::Busy),
        }
    }

    /// A read of this replica's state as it is (may be stale).
    pub fn read_stale(&self, op: &ReadOp) -> Reply {
        eval(&self.sm, op)
    }

    /// The leader confirmed reads: serve each once applied that far.
    pub fn on_read_states(&mut self, states: &[raftcore::ReadState]) {
        for rs in states {
            if let Some(r) = self.reads.iter_mut().find(|r| r.request_id == rs.request_id) {
                r.index = Some(rs.index);
            }
        }
        self.serve_reads();
    }

    fn serve_reads(&mut self) {
        let applied = self.sm.applied();
        let mut i = 0;
        while i < self.reads.len() {
            if self.reads[i].index.is_some_and(|at| at <= applied) {
                let r = self.reads.swap_remove(i);
                (r.respond)(eval(&self.sm, &r.op));
            } else {
                i += 1;
            }
        }
    }

    /// Log entries this replica holds in memory.
    pub fn entries_held(&self) -> u64 {
        self.raw.raft.log.storage.stored_entries().len() as u64
    }

    /// Applies committed entries in order and answers their proposers.
    pub fn apply(&mut self, entries: Vec<raftcore::Entry>) {
        for e in entries {
            let reply = if e.kind == EntryKind::Normal && !e.data.is_empty() {
                Some(self.sm.apply(e.index, &e.data))
            } else {
                self.sm.set_applied(e.index);
                None
            };
            while self.proposals.front().is_some_and(|p| p.index <= e.index) {
                let p = self.proposals.pop_front().expect("front exists");
                if p.index == e.index && p.term == e.term {
                    (p.respond)(reply.as_deref().map_or(Reply::Done, to_reply));
                } else {
                    // Another entry holds this index: ours is not in the log and never will be.
                    (p.respond)(Reply::NotLeader { leader: self.raw.raft.leader.0 });
                }
            }
        }
        self.serve_reads();
    }

    /// The replica's role changed. If it is no longer the leader (or its
    /// term moved on), in-flight writes may or may not commit, and
    /// unconfirmed reads will not be confirmed.
    pub fn on_role_change(&mut self, role: Role) -> Leadership {
        let was_leader = std::mem::replace(&mut self.leading, role == Role::Leader);
        if role == Role::Leader {
            return if was_leader { Leadership::Unchanged } else { Leadership::Began };
        }
        for p in self.proposals.drain(..) {
            (p.respond)(Reply::Unknown);
        }
        let leader = self.raw.raft.leader.0;
        let mut kept = Vec::new();
        for r in self.reads.drain(..) {
            match r.index {
                Some(_) => kept.push(r),
                None => (r.respond)(Reply::NotLeader { leader }),
            }
        }
        self.reads = kept;
        if was_leader {
            Leadership::Ended
        } else {
            Leadership::Unchanged
        }
    }

    /// This replica leads the group, as of its last ready.
    pub fn is_leading(&self) -> bool {
        self.leading
    }

    /// Fails everything waiting (the core is stopping).
    pub fn abandon(&mut self) {
        for p in self.proposals.drain(..) {
            (p.respond)(Reply::Unknown);
        }
        for r in self.reads.drain(..) {
            (r.respond)(Reply::Unknown);
        }
    }
}

fn eval(sm: &KvStore, op: &ReadOp) -> Reply {
    match op {
        ReadOp::Get { key } => Reply::Value(sm.get(key).cloned()),
        ReadOp::Scan { prefix, limit } => match sm.scan_prefix(prefix, *limit as usize, SCAN_REPLY_BYTES_MAX) {
            Ok(pairs) => Reply::Entries(pairs),
            Err(e) => Reply::Error(e.to_string()),
        },
    }
}

fn to_reply(encoded: &[u8]) -> Reply {
    match KvReply::decode(encoded) {
        Ok(KvReply::Done) => Reply::Done,
        Ok(KvReply::CasFailed { current }) => Reply::CasFailed { current },
        Ok(KvReply::Invalid) => Reply::Error("the command is not a valid KV command".into()),
        Err(e) => Reply::Error(format!("state machine reply: {e}")),
    }
}
