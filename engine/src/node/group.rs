//! One Raft group on one core: its replica, its state machine, and the client
//! requests waiting on it. Answers are given only when they are true: a write
//! is `Done` once its own entry is applied, `NotLeader` when it certainly was
//! not applied, and `Unknown` when that cannot be known. A write in flight
//! when leadership moves on keeps waiting: the entry at its index, once this
//! replica applies it, tells whether it was the write's own (a handed-over
//! leadership loses no answer). It ends `Unknown` only when a snapshot skips
//! its index, when this replica leads again with another entry at that
//! index, or when the group stops here.

use std::collections::VecDeque;
use std::num::NonZeroU64;

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
    /// In index order, and so in term order (`on_role_change` keeps it so).
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
    /// The connection from the node of the leader this follower knew ended
    /// (`on_leader_node_lost`): it may not rest until a leader speaks to it
    /// again. That node may be back at once, no longer leading: a follower
    /// resting under it would refuse its pre-votes and never elect another.
    leader_lost: bool,
    /// The node this replica last knew as the group's leader (0: none), as
    /// of its last ready; the core counts these (`Shard::leader_census`).
    pub known_leader: u64,
    /// The commit index at the previous tick.
    commit_at_last_tick: u64,
    /// The token of this group's snapshot being saved, if one is.
    pub snapshot_saving: Option<NonZeroU64>,
    /// A leadership transfer's waiters: the writes that came meanwhile and
    /// the clients that asked for it (see `hold`, `transfer_leadership`).
    handover: Option<Box<Handover>>,
}

/// Who waits for a leadership transfer to end.
#[derive(Default)]
struct Handover {
    /// Writes held back meanwhile, none proposed.
    writes: Vec<(Bytes, Responder)>,
    /// Clients that asked for the transfer, and to which node.
    asked: Vec<(u64, Responder)>,
    /// Ticks since the transfer ended with no leader known to redirect to.
    ticks_without_leader: u32,
}

/// Where `Group::end_handover` is called from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Release {
    /// A tick: proposing is safe, and it counts towards giving up on a leader.
    Tick,
    /// A role change seen in a ready being taken.
    RoleChange,
}

/// Ticks a leadership transfer's waiters wait, once it ended, for the new
/// leader to be known (it usually is within a round trip of the old one
/// stepping down) before they are answered without it.
const HANDOVER_TICKS_WITHOUT_LEADER_MAX: u32 = 2;

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

/// What `Group::hand_over` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandOver {
    Started,
    /// A transfer is already under way, or the replica no longer leads (a
    /// step-down its last ready did not show yet): nothing to start.
    Underway,
    /// No other voter is up to take the leadership.
    NoTarget,
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
        Group { id, raw, sm, proposals: VecDeque::new(), reads: Vec::new(), next_read_id: 1, scheduled: false, quiesced: false, idle_ticks: 0, leading: false, leader_lost: false, known_leader: 0, commit_at_last_tick: 0, snapshot_saving: None, handover: None }
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

    /// One tick; the group quiesces once it was idle for `quiesce_after_ticks`
    /// and `may_rest` allows it (`reachable` says which nodes are connected):
    /// a follower that lost its leader must keep ticking to elect another,
    /// and a leader that lost its quorum, for check-quorum to end it.
    pub fn tick(&mut self, quiesce_after_ticks: u32, reachable: impl Fn(u64) -> bool) {
        debug_assert!(!self.quiesced, "quiesced groups are not ticked");
        // Idle as the last ready left it: the heartbeat this tick may send
        // does not count as work.
        let idle = self.raw.is_idle() && self.requests_waiting() == 0;
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
        self.end_handover(Release::Tick);
        if !idle || fresh_commit || !self.may_rest(&reachable) {
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

    /// A follower may rest while its leader's node is `reachable`; a leader
    /// while a quorum of its voters is (itself included). A leader cut off
    /// from its quorum goes on ticking, so check-quorum deposes it, instead
    /// of resting as a leader nobody follows.
    fn may_rest(&self, reachable: impl Fn(u64) -> bool) -> bool {
        let raft = &self.raw.raft;
        if raft.role != Role::Leader {
            return !self.leader_lost && reachable(raft.leader.0);
        }
        let me = raft.id;
        raft.tracker.voters.vote_result(|id| Some(id == me || reachable(id.0))) == raftcore::quorum::VoteResult::Won
    }

    /// Steps a peer's message; one a leader sends (an append, a heartbeat,
    /// a snapshot chunk) from the leader it then knows ends `leader_lost`.
    pub fn step(&mut self, msg: raftcore::Message) {
        let leader_speaks = self.leader_lost && matches!(msg.body, raftcore::MessageBody::Append { .. } | raftcore::MessageBody::Heartbeat { .. } | raftcore::MessageBody::SnapshotChunk { .. });
        let from = msg.from;
        self.raw.step(msg);
        if leader_speaks && self.raw.raft.leader == from {
            self.leader_lost = false;
        }
    }

    /// The connection from the node of this replica's leader ended: until a
    /// leader speaks to it again it keeps ticking (see `leader_lost`).
    pub fn on_leader_node_lost(&mut self) {
        if self.raw.raft.role != Role::Leader {
            self.leader_lost = true;
        }
    }

    /// Client requests waiting on this replica for an answer: writes in
    /// flight (also those left from a leadership that ended), writes held
    /// through a transfer, linearizable reads.
    pub fn requests_waiting(&self) -> usize {
        self.proposals.len() + self.reads.len() + self.handover.as_ref().map_or(0, |h| h.writes.len() + h.asked.len())
    }

    pub fn propose(&mut self, command: Bytes, respond: Responder) {
        if self.requests_waiting() >= WAITING_REQUESTS_MAX {
            return respond(Reply::Busy);
        }
        if !self.raw.raft.lead_transferee.is_none() {
            return self.hold(command, respond);
        }
        match self.raw.propose(command) {
            Ok(index) => self.proposals.push_back(Proposal { index, term: self.raw.raft.term, respond }),
            Err(ProposeError::NotLeader { leader }) => respond(Reply::NotLeader { leader: leader.0 }),
            Err(ProposeError::LeaderLeaving) => respond(Reply::NotLeader { leader: 0 }),
            Err(ProposeError::TransferInProgress(_) | ProposeError::TooManyUncommitted { .. }) => respond(Reply::Busy),
            Err(e) => respond(Reply::Error(e.to_string())),
        }
    }

    /// Holds a write back while the leadership is being handed over (Raft
    /// takes no proposal then). When the transfer ends, `end_handover`
    /// proposes it if this replica still leads, and otherwise answers it
    /// `NotLeader` with the new leader, so its client goes there at once
    /// instead of retrying here after `Busy`.
    fn hold(&mut self, command: Bytes, respond: Responder) {
        self.handover.get_or_insert_default().writes.push((command, respond));
    }

    /// Hands the leadership to voter `to` for a client, and answers it when
    /// the transfer ends (see `Op::TransferLeader`).
    pub fn transfer_leadership(&mut self, to: u64, respond: Responder) {
        if self.requests_waiting() >= WAITING_REQUESTS_MAX {
            return respond(Reply::Busy);
        }
        let raft = &self.raw.raft;
        if raft.role != Role::Leader {
            return respond(Reply::NotLeader { leader: raft.leader.0 });
        }
        if to == raft.id.0 {
            return respond(Reply::Done);
        }
        match self.raw.transfer_leader(raftcore::NodeId(to)) {
            Ok(()) => self.handover.get_or_insert_default().asked.push((to, respond)),
            Err(raftcore::TransferError::NotLeader { leader }) => respond(Reply::NotLeader { leader: leader.0 }),
            Err(e) => respond(Reply::Error(format!("group {}: {e}", self.id))),
        }
    }

    /// Answers a transfer's waiters once it is over. An abandoned one leaves
    /// this replica leading: the writes held back are proposed (at a tick
    /// only: at a role change a ready is being taken). After a successful
    /// one they are redirected to the new leader, once known, or after
    /// `HANDOVER_TICKS_WITHOUT_LEADER_MAX` ticks without one.
    fn end_handover(&mut self, at: Release) {
        let Some(handover) = &mut self.handover else { return };
        let raft = &self.raw.raft;
        if !raft.lead_transferee.is_none() {
            return;
        }
        let id = self.id;
        if raft.role == Role::Leader {
            if at == Release::Tick {
                let Handover { writes, asked, .. } = *self.handover.take().expect("checked above");
                for (to, respond) in asked {
                    respond(Reply::Error(format!("group {id}: the transfer to node {to} was abandoned: it did not catch up and take over within an election timeout")));
                }
                for (command, respond) in writes {
                    self.propose(command, respond);
                }
            }
            return;
        }
        let leader = raft.leader.0;
        if leader == 0 {
            if at == Release::Tick {
                handover.ticks_without_leader += 1;
            }
            if handover.ticks_without_leader < HANDOVER_TICKS_WITHOUT_LEADER_MAX {
                return;
            }
        }
        let Handover { writes, asked, .. } = *self.handover.take().expect("checked above");
        for (to, respond) in asked {
            respond(if leader == to {
                Reply::Done
            } else if leader == 0 {
                Reply::Error(format!("group {id}: this replica stepped down for node {to}, but knows no leader yet"))
            } else {
                Reply::Error(format!("group {id}: node {leader} took the leadership, not node {to}"))
            });
        }
        for (_, respond) in writes {
            respond(Reply::NotLeader { leader });
        }
    }

    /// A linearizable read (ReadIndex, or the leader lease when it holds).
    pub fn read(&mut self, op: ReadOp, respond: Responder) {
        if self.requests_waiting() >= WAITING_REQUESTS_MAX {
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
            // Every later leader's log holds this entry, so its entries past
            // this index have this term or a newer one: writes of an older
            // term still waiting (left from leaderships that ended; the queue
            // is in term order too) are in no such log and will never be
            // applied.
            while self.proposals.front().is_some_and(|p| p.term < e.term) {
                let p = self.proposals.pop_front().expect("front exists");
                (p.respond)(Reply::NotLeader { leader: self.raw.raft.leader.0 });
            }
        }
        self.serve_reads();
    }

    /// The replica's role changed. Writes in flight when leadership ended
    /// stay until their index is applied (see the module doc), unconfirmed
    /// reads will not be confirmed. A new leadership answers `Unknown` the
    /// writes left from an earlier term whose entry its log no longer holds
    /// (another leader replaced it, and a third may yet commit it): its own
    /// proposals may take their indices, which would break the queue's index
    /// order.
    pub fn on_role_change(&mut self, role: Role) -> Leadership {
        let was_leader = std::mem::replace(&mut self.leading, role == Role::Leader);
        if role == Role::Leader {
            if was_leader {
                return Leadership::Unchanged;
            }
            // Proposals of this term were made since the replica won (before
            // this ready told us); they stay. So do those of an earlier term
            // whose entry this log still holds: this leader commits its whole
            // log, and its new proposals come after it.
            let term = self.raw.raft.term;
            if self.proposals.front().is_some_and(|p| p.term < term) {
                for p in std::mem::take(&mut self.proposals) {
                    if p.term == term || self.raw.raft.log.term(p.index) == Ok(p.term) {
                        self.proposals.push_back(p);
                    } else {
                        (p.respond)(Reply::Unknown);
                    }
                }
            }
            return Leadership::Began;
        }
        self.end_handover(Release::RoleChange);
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

    /// Starts handing this replica's leadership to the voter that holds the
    /// most of its log among those `reachable` says are up (the transfer
    /// brings it up to date first).
    pub fn hand_over(&mut self, reachable: impl Fn(u64) -> bool) -> HandOver {
        let raft = &self.raw.raft;
        if raft.role != Role::Leader || !raft.lead_transferee.is_none() {
            return HandOver::Underway;
        }
        let me = raft.id;
        let Some(target) = raft.tracker.iter().filter(|p| p.id != me && !p.is_learner && raft.tracker.is_voter(p.id) && reachable(p.id.0)).max_by_key(|p| p.matched).map(|p| p.id) else {
            return HandOver::NoTarget;
        };
        match self.raw.transfer_leader(target) {
            Ok(()) => HandOver::Started,
            Err(_) => HandOver::Underway,
        }
    }

    /// This replica leads the group, as of its last ready.
    pub fn is_leading(&self) -> bool {
        self.leading
    }

    /// A leader's snapshot replaced the state machine: the writes whose
    /// index it covers may or may not be in it.
    pub fn on_snapshot_restored(&mut self) {
        let applied = self.sm.applied();
        while self.proposals.front().is_some_and(|p| p.index <= applied) {
            let p = self.proposals.pop_front().expect("front exists");
            (p.respond)(Reply::Unknown);
        }
    }

    /// Fails everything waiting (the core is stopping).
    pub fn abandon(&mut self) {
        for p in self.proposals.drain(..) {
            (p.respond)(Reply::Unknown);
        }
        for r in self.reads.drain(..) {
            (r.respond)(Reply::Unknown);
        }
        if let Some(handover) = self.handover.take() {
            // Never proposed: certainly not applied.
            for (_, respond) in handover.writes {
                respond(Reply::Busy);
            }
            for (_, respond) in handover.asked {
                respond(Reply::Unknown);
            }
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

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use raftcore::{Config, ConfState, Message, NodeId};

    use super::*;
    use crate::kv::KvCommand;

    /// Three replicas of one group, their messages handed over in memory
    /// (persistence at once), except those `cut` drops.
    struct Trio {
        groups: Vec<Group>,
        queue: Vec<Message>,
    }

    impl Trio {
        fn new() -> Trio {
            Trio::with_config(|_| {})
        }

        fn with_config(tweak: impl Fn(&mut Config)) -> Trio {
            let voters: Vec<NodeId> = (1..=3).map(NodeId).collect();
            let groups = voters
                .iter()
                .map(|&id| {
                    let storage = MemStorage::new(ConfState { voters: voters.clone(), ..Default::default() });
                    let mut cfg = Config::new(id);
                    tweak(&mut cfg);
                    let raw = RawNode::new(cfg, storage).expect("valid config");
                    Group::new(7, raw, KvStore::new())
                })
                .collect();
            Trio { groups, queue: Vec::new() }
        }

        fn group(&mut self, id: u64) -> &mut Group {
            &mut self.groups[id as usize - 1]
        }

        /// Handles readies and delivers messages until nothing moves.
        fn pump(&mut self, cut: impl Fn(u64, u64) -> bool) {
            for _ in 0..100 {
                let mut moved = false;
                for g in &mut self.groups {
                    while g.raw.has_ready() {
                        moved = true;
                        let rd = g.raw.ready();
                        if let Some(ss) = &rd.soft_state {
                            g.on_role_change(ss.role);
                        }
                        let storage = &mut g.raw.raft.log.storage;
                        storage.append_owned(rd.entries.clone());
                        if let Some(hs) = rd.hard_state {
                            storage.set_hard_state(hs);
                        }
                        g.raw.advance(&rd);
                        self.queue.extend(rd.messages.iter().chain(&rd.persisted_messages).cloned());
                        g.apply(rd.committed_entries);
                    }
                }
                for m in std::mem::take(&mut self.queue) {
                    if !cut(m.from.0, m.to.0) {
                        moved = true;
                        self.group(m.to.0).raw.step(m);
                    }
                }
                if !moved {
                    return;
                }
            }
            panic!("the replicas did not settle");
        }

        fn tick(&mut self, id: u64) {
            let g = self.group(id);
            if g.quiesced {
                let _ = g.wake();
            }
            g.tick(u32::MAX, |_| true);
        }

        /// Ticks every replica that `cut` leaves in touch with another until
        /// one of them leads in a term newer than any before; returns it.
        fn tick_until_led(&mut self, cut: impl Fn(u64, u64) -> bool + Copy) -> u64 {
            let term = self.groups.iter().map(|g| g.raw.raft.term).max().expect("three");
            for _ in 0..200 {
                for id in 1..=3 {
                    if (1..=3).any(|other| other != id && !cut(id, other)) {
                        self.tick(id);
                    }
                }
                self.pump(cut);
                if let Some(g) = self.groups.iter().find(|g| g.is_leading() && g.raw.raft.term > term) {
                    return g.raw.raft.id.0;
                }
            }
            panic!("no replica was elected");
        }

        /// Puts `key` at replica `at`; the reply lands in the returned cell.
        fn put(&mut self, at: u64, key: &'static str) -> Rc<RefCell<Option<Reply>>> {
            let reply = Rc::new(RefCell::new(None));
            let into = reply.clone();
            let command = KvCommand::Put { key: Bytes::from_static(key.as_bytes()), value: Bytes::from_static(b"v") }.encode();
            self.group(at).propose(command, Box::new(move |r| *into.borrow_mut() = Some(r)));
            reply
        }
    }

    /// The leader proposes three writes: the first reaches follower `a`
    /// (whose answer is lost), the others reach no one. Cut off, the old
    /// leader loses the group to `a`, which commits the first write in its
    /// term. Back in touch, the old leader answers the first `Done` once it
    /// applies it, and the others `NotLeader` once it applies an entry of
    /// the newer term: before, all three ended `Unknown` the moment its
    /// leadership ended.
    #[test]
    fn writes_in_flight_when_leadership_ends_get_definite_answers() {
        let mut t = Trio::new();
        let leader = t.tick_until_led(|_, _| false);
        let (a, b) = match leader {
            1 => (2, 3),
            2 => (3, 1),
            _ => (1, 2),
        };

        let first = t.put(leader, "first");
        t.pump(|from, to| (from == leader && to == b) || (from == a && to == leader));
        let second = t.put(leader, "second");
        let third = t.put(leader, "third");
        t.pump(|from, _| from == leader);
        assert_eq!((first.borrow().clone(), second.borrow().clone(), third.borrow().clone()), (None, None, None), "nothing committed yet");

        let cut_off = |from: u64, to: u64| from == leader || to == leader;
        assert_eq!(t.tick_until_led(cut_off), a, "only the follower holding the first write can win");
        for _ in 0..3 {
            t.tick(a);
            t.pump(|_, _| false);
        }
        assert!(!t.group(leader).is_leading());
        assert_eq!(first.borrow().clone(), Some(Reply::Done), "the write the new leader committed");
        assert_eq!(second.borrow().clone(), Some(Reply::NotLeader { leader: a }), "a write no one else had, its index taken");
        // No entry holds its index yet; the newer term tells.
        assert_eq!(third.borrow().clone(), Some(Reply::NotLeader { leader: a }), "a write no one else had, past the new leader's log");
        assert_eq!(t.group(leader).sm.get(b"first").cloned(), Some(Bytes::from_static(b"v")));
        assert_eq!(t.group(leader).sm.get(b"second"), None);
    }

    /// `hand_over` picks a reachable voter, says when none is, does not
    /// start a second transfer while one is under way, and the target then
    /// leads; the old leader's write proposed before it answers `Done`.
    #[test]
    fn a_leader_hands_over_to_a_reachable_voter() {
        let mut t = Trio::new();
        let leader = t.tick_until_led(|_, _| false);
        let others: Vec<u64> = (1..=3).filter(|&id| id != leader).collect();
        let write = t.put(leader, "before");
        assert_eq!(t.group(leader).hand_over(|_| false), HandOver::NoTarget);
        let target = others[1];
        assert_eq!(t.group(leader).hand_over(|node| node == target), HandOver::Started);
        assert_eq!(t.group(leader).hand_over(|_| true), HandOver::Underway, "one transfer at a time");
        t.pump(|_, _| false);
        assert!(t.group(target).is_leading(), "node {target} took over");
        assert!(!t.group(leader).is_leading());
        assert_eq!(write.borrow().clone(), Some(Reply::Done));
        assert_eq!(t.group(leader).hand_over(|_| true), HandOver::Underway, "a replica that no longer leads starts nothing");
    }

    /// A leader whose write reached no one steps down to a higher term (a
    /// candidate that cannot win), then wins the next election with the
    /// write's entry still in its log: it commits it and answers `Done`.
    /// Only a write whose entry its log no longer holds would end unknown.
    #[test]
    fn a_write_survives_its_leader_stepping_down_and_winning_again() {
        let mut t = Trio::with_config(|cfg| {
            // Elections by hand: no pre-vote, no check-quorum (nor lease).
            cfg.pre_vote = false;
            cfg.check_quorum = false;
            cfg.lease_ticks = 0;
        });
        t.group(1).raw.campaign();
        t.pump(|_, _| false);
        assert!(t.group(1).is_leading());
        let write = t.put(1, "kept");
        t.pump(|from, _| from == 1);
        // Node 3 campaigns; only node 1 hears it: it refuses (its log is
        // longer) but steps down to the newer term.
        t.group(3).raw.campaign();
        t.pump(|from, to| from == 1 || (from == 3 && to == 2));
        assert!(!t.group(1).is_leading() && !t.group(3).is_leading());
        assert_eq!(write.borrow().clone(), None, "still waiting");

        t.group(1).raw.campaign();
        t.pump(|_, _| false);
        assert!(t.group(1).is_leading(), "node 1 won again");
        assert_eq!(write.borrow().clone(), Some(Reply::Done));
        // The followers learn the commit from the next heartbeat.
        t.tick(1);
        t.pump(|_, _| false);
        assert_eq!(t.group(2).sm.get(b"kept").cloned(), Some(Bytes::from_static(b"v")));
    }

    /// A write that comes while the leadership is being handed over is
    /// held back, not refused `Busy`, and once the target leads it is
    /// answered `NotLeader` naming it: never proposed, so certainly not
    /// applied, and its client goes straight to the new leader.
    #[test]
    fn a_write_during_a_transfer_is_sent_to_the_new_leader() {
        let mut t = Trio::new();
        let leader = t.tick_until_led(|_, _| false);
        let target = (1..=3).find(|&id| id != leader).expect("two others");
        assert_eq!(t.group(leader).hand_over(|node| node == target), HandOver::Started);
        let write = t.put(leader, "during");
        assert_eq!(write.borrow().clone(), None, "held back");
        t.pump(|_, _| false);
        assert!(t.group(target).is_leading(), "node {target} took over");
        assert_eq!(write.borrow().clone(), Some(Reply::NotLeader { leader: target }));
        for id in 1..=3 {
            assert_eq!(t.group(id).sm.get(b"during"), None, "never proposed");
        }
    }

    /// When the transfer is abandoned (its target out of reach for an
    /// election timeout), the writes held back are proposed by the leader
    /// that stayed, and answered `Done` once committed.
    #[test]
    fn writes_held_through_an_abandoned_transfer_are_proposed() {
        let mut t = Trio::new();
        let leader = t.tick_until_led(|_, _| false);
        let target = (1..=3).find(|&id| id != leader).expect("two others");
        let unreachable = |from: u64, to: u64| from == target || to == target;
        // The target misses a write first, so the transfer must wait for it
        // to catch up (and never sees it do so).
        let before = t.put(leader, "before");
        t.pump(unreachable);
        assert_eq!(before.borrow().clone(), Some(Reply::Done));
        assert_eq!(t.group(leader).hand_over(|node| node == target), HandOver::Started);
        let writes = [t.put(leader, "held-1"), t.put(leader, "held-2")];
        for _ in 0..t.group(leader).raw.raft.config().election_timeout_ticks + 1 {
            t.tick(leader);
            t.pump(unreachable);
        }
        assert!(t.group(leader).is_leading() && t.group(leader).raw.raft.lead_transferee.is_none(), "the transfer was abandoned");
        for w in &writes {
            assert_eq!(w.borrow().clone(), Some(Reply::Done));
        }
        assert_eq!(t.group(leader).sm.get(b"held-2").cloned(), Some(Bytes::from_static(b"v")));
    }

    /// A transfer asked by a client is answered when it ends: `Done` once
    /// the target leads, an error when it is abandoned; a replica that does
    /// not lead points at the leader, and a non-voter target is refused.
    #[test]
    fn a_client_asked_transfer_is_answered_when_it_ends() {
        let mut t = Trio::new();
        let leader = t.tick_until_led(|_, _| false);
        let others: Vec<u64> = (1..=3).filter(|&id| id != leader).collect();
        let ask = |t: &mut Trio, at: u64, to: u64| {
            let reply = Rc::new(RefCell::new(None));
            let into = reply.clone();
            t.group(at).transfer_leadership(to, Box::new(move |r| *into.borrow_mut() = Some(r)));
            reply
        };
        assert_eq!(ask(&mut t, others[0], others[1]).borrow().clone(), Some(Reply::NotLeader { leader }));
        assert!(matches!(ask(&mut t, leader, 9).borrow().clone(), Some(Reply::Error(e)) if e.contains("not a voter")));
        assert_eq!(ask(&mut t, leader, leader).borrow().clone(), Some(Reply::Done), "it leads already");

        // Out of reach, the target never takes over: abandoned after an
        // election timeout, and the leader stays.
        let target = others[0];
        let unreachable = |from: u64, to: u64| from == target || to == target;
        t.put(leader, "missed");
        t.pump(unreachable);
        let abandoned = ask(&mut t, leader, target);
        for _ in 0..t.group(leader).raw.raft.config().election_timeout_ticks + 1 {
            t.tick(leader);
            t.pump(unreachable);
        }
        assert!(matches!(abandoned.borrow().clone(), Some(Reply::Error(e)) if e.contains("abandoned")), "{:?}", abandoned.borrow());
        assert!(t.group(leader).is_leading());

        // In reach, it does.
        let moved = ask(&mut t, leader, target);
        assert_eq!(moved.borrow().clone(), None, "answered when the transfer ends");
        t.pump(|_, _| false);
        assert!(t.group(target).is_leading());
        assert_eq!(moved.borrow().clone(), Some(Reply::Done));
    }
}
