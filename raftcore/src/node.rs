//! The caller's interface: `RawNode` wraps the protocol and hands out numbered
//! `Ready` batches. The contract, per batch:
//!
//! 1. `messages` may be sent at once — they are leader traffic that does not
//!    depend on this batch being durable (Raft thesis §10.2.1: a leader sends
//!    appends while its own write runs; it counts itself toward the commit
//!    quorum only once its entries are durable).
//! 2. Persist `snapshot` (restoring the state machine from it), `entries`
//!    and `hard_state`, in that order, durably.
//! 3. Then send `persisted_messages` (votes, acks: they promise durable state).
//! 4. Report `on_persisted(number)`. Readies are persisted in order; several
//!    may be in flight at once. `advance(ready)` does both steps for callers
//!    that persist synchronously.
//! 5. Apply `committed_entries` in order (they are durable already), then
//!    serve `read_states` once their index is applied.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;

use crate::confchange::ConfChange;
use crate::config::{Config, ConfigError};
use crate::limits;
use crate::message::Message;
use crate::raft::{ProposeError, Raft, ReadError, TransferError};
use crate::storage::Storage;
use crate::types::{Entry, EntryKind, HardState, LogIndex, NodeId, ReadState, Snapshot, SoftState, Term};

#[derive(Debug, Default)]
pub struct Ready {
    /// Numbers increase by one per `ready()` call, from 1.
    pub number: u64,
    pub soft_state: Option<SoftState>,
    pub hard_state: Option<HardState>,
    pub snapshot: Option<Snapshot>,
    pub entries: Vec<Entry>,
    pub messages: Vec<Message>,
    pub persisted_messages: Vec<Message>,
    pub committed_entries: Vec<Entry>,
    pub read_states: Vec<ReadState>,
}

impl Ready {
    /// Whether anything in this batch must reach disk.
    pub fn must_persist(&self) -> bool {
        self.hard_state.is_some() || self.snapshot.is_some() || !self.entries.is_empty()
    }

    /// Whether raftcore waits to hear that this ready is durable: it holds
    /// entries, a snapshot or messages that may leave only then. When it
    /// holds none, its hard state must still be written (before or with a
    /// later ready's), but the driver need not call `on_persisted` for it;
    /// `on_persisted` of a later ready covers it.
    pub fn awaits_persisted(&self) -> bool {
        self.snapshot.is_some() || !self.entries.is_empty() || !self.persisted_messages.is_empty()
    }
}

/// What a handed-out `Ready` asked to persist, to settle on `on_persisted`.
#[derive(Debug)]
struct InFlightReady {
    number: u64,
    snapshot_index: Option<LogIndex>,
    last_entry: Option<(LogIndex, Term)>,
}

pub struct RawNode<S: Storage> {
    pub raft: Raft<S>,
    prev_soft_state: SoftState,
    prev_hard_state: HardState,
    last_ready_number: u64,
    persisted_ready_number: u64,
    in_flight: VecDeque<InFlightReady>,
}

impl<S: Storage> RawNode<S> {
    pub fn new(cfg: Config, storage: S) -> Result<RawNode<S>, ConfigError> {
        let seed = cfg.seed;
        RawNode::new_shared(Arc::new(cfg), seed, storage)
    }

    /// A replica whose configuration is shared with the other groups of its
    /// node (the engine keeps one per core, which keeps idle groups small);
    /// `seed` replaces `cfg.seed` so that groups do not time out in step.
    pub fn new_shared(cfg: Arc<Config>, seed: u64, storage: S) -> Result<RawNode<S>, ConfigError> {
        let raft = Raft::new(cfg, seed, storage)?;
        Ok(RawNode {
            prev_soft_state: raft.soft_state(),
            prev_hard_state: raft.hard_state(),
            raft,
            last_ready_number: 0,
            persisted_ready_number: 0,
            in_flight: VecDeque::new(),
        })
    }

    pub fn tick(&mut self) {
        self.raft.tick();
    }

    pub fn step(&mut self, m: Message) {
        self.raft.step(m);
    }

    /// Campaigns right away (tests and bootstrap), through pre-vote if on.
    pub fn campaign(&mut self) {
        self.raft.campaign_now();
    }

    pub fn propose(&mut self, data: Bytes) -> Result<LogIndex, ProposeError> {
        self.raft.propose([data])
    }

    /// Proposes several entries at once; returns the index of the last.
    pub fn propose_batch(&mut self, data: impl IntoIterator<Item = Bytes>) -> Result<LogIndex, ProposeError> {
        self.raft.propose(data)
    }

    pub fn propose_conf_change(&mut self, cc: &ConfChange) -> Result<LogIndex, ProposeError> {
        self.raft.propose_conf_change(cc)
    }

    /// A linearizable read: the matching `ReadState` arrives in a later
    /// `Ready`. With `lease_ticks > 0` a leader whose lease is valid answers
    /// without a round trip. The lease assumes replicas tick at rates that
    /// differ by less than `(election_timeout_ticks - lease_ticks) /
    /// election_timeout_ticks` (the clock-drift bound): a follower refuses to
    /// vote for anyone within an election timeout of hearing from the leader,
    /// and the lease is measured from when the leader sent the heartbeat.
    pub fn read_index(&mut self, request_id: u64) -> Result<(), ReadError> {
        self.raft.read_index(request_id)
    }

    pub fn transfer_leader(&mut self, to: NodeId) -> Result<(), TransferError> {
        self.raft.transfer_leader(to)
    }

    pub fn is_idle(&self) -> bool {
        self.raft.is_idle() && !self.has_ready() && self.in_flight.is_empty()
    }

    pub fn quiesce(&mut self) {
        self.raft.quiesce();
        self.in_flight.shrink_to_fit();
    }

    pub fn wake(&mut self) {
        self.raft.wake();
    }

    pub fn has_ready(&self) -> bool {
        let r = &self.raft;
        r.has_pending_flush()
            || r.soft_state() != self.prev_soft_state
            || r.hard_state() != self.prev_hard_state
            || r.log.has_unhanded_snapshot()
            || r.log.has_unhanded_entries()
            || !r.msgs.is_empty()
            || !r.read_states.is_empty()
            || r.log.has_next_committed()
    }

    /// Collects everything to persist, send and apply. See the module docs
    /// for what the caller must do with it.
    pub fn ready(&mut self) -> Ready {
        self.raft.flush_read_round();
        self.raft.flush_broadcast();
        let snapshot = self.raft.log.take_unhanded_snapshot();
        if let Some(s) = &snapshot {
            self.raft.log.applied_to(s.meta.index);
        }
        let committed_entries = self.take_committed_entries();
        let entries = self.raft.log.take_unhanded_entries();
        let hard_state = Some(self.raft.hard_state()).filter(|hs| *hs != self.prev_hard_state);
        let soft_state = Some(self.raft.soft_state()).filter(|ss| *ss != self.prev_soft_state);
        if let Some(hs) = hard_state {
            assert!(hs.term >= self.prev_hard_state.term, "term regressed: {:?} -> {:?}", self.prev_hard_state, hs);
            assert!(hs.commit >= self.prev_hard_state.commit, "commit regressed: {:?} -> {:?}", self.prev_hard_state, hs);
            self.prev_hard_state = hs;
        }
        if let Some(ss) = soft_state {
            self.prev_soft_state = ss;
        }
        let (msgs, read_states) = self.raft.take_outputs();
        let (messages, persisted_messages) = split_by_persistence(msgs);
        self.last_ready_number += 1;
        let number = self.last_ready_number;
        if snapshot.is_some() || !entries.is_empty() {
            assert!(self.in_flight.len() < limits::READIES_IN_FLIGHT_MAX, "more than {} readies in flight", limits::READIES_IN_FLIGHT_MAX);
            let last_entry = entries.last().map(|e| (e.index, e.term));
            self.in_flight.push_back(InFlightReady { number, snapshot_index: snapshot.as_ref().map(|s| s.meta.index), last_entry });
        }
        Ready { number, soft_state, hard_state, snapshot, entries, messages, persisted_messages, committed_entries, read_states }
    }

    /// Hands out committed, durable entries; membership changes among them
    /// take effect now.
    fn take_committed_entries(&mut self) -> Vec<Entry> {
        let committed = self.raft.log.next_committed(limits::APPLY_BYTES_PER_READY_MAX).expect("committed entries are readable");
        let Some(last) = committed.last() else { return committed };
        self.raft.log.applied_to(last.index);
        for entry in committed.iter().filter(|e| e.kind == EntryKind::ConfChange) {
            if let Ok(cc) = ConfChange::decode(&entry.data) {
                self.raft.apply_conf_change(&cc, entry.index);
            }
        }
        self.raft.maybe_auto_leave_joint();
        self.raft.flush_broadcast();
        committed
    }

    /// The heap memory this replica's next step or ready touches first, as
    /// (address, bytes) pairs: its followers' progress, its voters, its
    /// unstable entries, its readies awaiting persistence. A driver of many
    /// groups, whose replicas are cold in the cache, prefetches it a few
    /// groups ahead. Finding it reads only the `RawNode` itself (not the
    /// memory it names, which would stall on the very misses it is for),
    /// and changes nothing.
    pub fn hot_memory(&self) -> [(usize, usize); 4] {
        let raft = &self.raft;
        [
            raft.tracker.progress_memory(),
            crate::tracker::memory_of(raft.tracker.voters.incoming.voters()),
            raft.log.unstable_memory(),
            crate::tracker::memory_of(self.in_flight.as_slices().0),
        ]
    }

    /// Everything in readies up to `number` is durable.
    pub fn on_persisted(&mut self, number: u64) {
        assert!(number <= self.last_ready_number, "ready {number} was never handed out (last {})", self.last_ready_number);
        if number <= self.persisted_ready_number {
            return;
        }
        self.persisted_ready_number = number;
        while self.in_flight.front().is_some_and(|r| r.number <= number) {
            let r = self.in_flight.pop_front().expect("front exists");
            if let Some(index) = r.snapshot_index {
                self.raft.log.stable_snapshot_to(index);
            }
            if let Some((index, term)) = r.last_entry {
                self.raft.log.stable_to(index, term);
            }
        }
        self.raft.on_leader_persisted();
    }

    /// For callers that persist synchronously: the ready is durable.
    pub fn advance(&mut self, ready: &Ready) {
        self.on_persisted(ready.number);
    }
}

/// Splits a ready's messages into those that may leave at once and those
/// that wait until the ready is durable. Usually all are of one kind (a
/// leader's appends, a follower's answers): the vector then moves whole
/// instead of being copied into two new ones.
fn split_by_persistence(msgs: Vec<Message>) -> (Vec<Message>, Vec<Message>) {
    let early = msgs.iter().filter(|m| m.body.may_send_before_persist()).count();
    if early == msgs.len() {
        (msgs, Vec::new())
    } else if early == 0 {
        (Vec::new(), msgs)
    } else {
        msgs.into_iter().partition(|m| m.body.may_send_before_persist())
    }
}
