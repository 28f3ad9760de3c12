//! The Raft protocol for one replica: roles, elections (with pre-vote and
//! check-quorum), replication with flow control, snapshots in chunks,
//! ReadIndex and lease reads, leadership transfer and membership changes.
//! Inputs are `step`, `tick` and the proposal calls; outputs accumulate in
//! `msgs` and `read_states` and are collected by `RawNode::ready`.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;

use crate::config::{Config, ConfigError};
use crate::confchange::{self, joint_config, ChangeOp, ConfChange, ConfChangeError};
use crate::limits;
use crate::log::RaftLog;
use crate::message::{Message, MessageBody, RejectHint, NO_ANSWER_ROUND};
use crate::quorum::VoteResult;
use crate::rng::Rng;
use crate::storage::{Storage, StorageError};
use crate::tracker::{ProgressState, ProgressTracker};
use crate::types::{ConfState, Entry, EntryKind, HardState, LogIndex, NodeId, ReadState, Role, Snapshot, SnapshotMeta, SoftState, Term};

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    #[error("not the leader (leader is {leader:?}, 0 = unknown)")]
    NotLeader { leader: NodeId },
    #[error("leadership transfer to {0} in progress")]
    TransferInProgress(NodeId),
    #[error("{uncommitted_entries} entries are not committed yet; retry later")]
    TooManyUncommitted { uncommitted_entries: u64 },
    #[error("this leader is leaving the group (it is not a voter of the new configuration); retry at the next leader")]
    LeaderLeaving,
    #[error("membership change refused: {0}")]
    ConfChange(#[from] ConfChangeError),
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("no known leader to confirm the read")]
    NoLeader,
    #[error("too many reads pending")]
    TooManyPending,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    #[error("not the leader (leader is {leader:?}, 0 = unknown)")]
    NotLeader { leader: NodeId },
    #[error("node {0} is not a voter")]
    NotVoter(NodeId),
}

/// A read waiting for a heartbeat round to confirm leadership.
#[derive(Debug)]
struct PendingRead {
    request_id: u64,
    from: NodeId,
    index: LogIndex,
    round: u64,
}

/// What a leader tracks for linearizable reads and the lease.
#[derive(Debug, Default)]
struct LeaderReads {
    /// Reads waiting for a heartbeat round to confirm leadership.
    pending: VecDeque<PendingRead>,
    /// Reads that arrived before this leader committed an entry of its term.
    awaiting_commit: Vec<(u64, NodeId)>,
    /// (round, tick it was sent at), for the lease.
    round_ticks: VecDeque<(u64, u64)>,
    /// The tick of the latest read this leader was asked for: while reads
    /// come, every heartbeat round is answered, to keep the lease.
    last_read_tick: u64,
}

impl LeaderReads {
    fn is_empty(&self) -> bool {
        self.pending.is_empty() && self.awaiting_commit.is_empty()
    }
}

/// A snapshot arriving in chunks; `data.len()` is the next expected offset.
#[derive(Debug)]
struct SnapshotReceive {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Campaign {
    PreVote,
    Election,
    Transfer,
}

/// `lease_expires_tick` of a leader that sent a TimeoutNow in its term. Its
/// target may campaign with it at any later time (the message may arrive
/// late, after the transfer was abandoned), and voters grant that campaign
/// despite a lease, so no lease is safe for the rest of the term: reads take
/// the ReadIndex round instead. A new term (`reset`) clears it.
const LEASE_FORFEITED: u64 = u64::MAX;

pub struct Raft<S: Storage> {
    pub id: NodeId,
    /// Never decreases (asserted in `reset`).
    pub term: Term,
    pub vote: NodeId,
    pub leader: NodeId,
    pub role: Role,
    pub log: RaftLog<S>,
    pub tracker: ProgressTracker,
    /// Shared by the groups of a core (see `RawNode::new_shared`).
    cfg: Arc<Config>,
    rng: Rng,
    election_elapsed: u32,
    heartbeat_elapsed: u32,
    randomized_election_timeout: u32,
    /// Ticks since the replica started, from 1 (0 means "never" elsewhere).
    ticks_total: u64,
    /// Until its first election timeout a restarted replica does not know
    /// whether a leader holds a lease, so it refuses votes like a follower
    /// that heard from one (see `in_leader_lease`).
    startup_guard: bool,
    pub msgs: Vec<Message>,
    pub read_states: Vec<ReadState>,
    /// A leader's reads and heartbeat rounds; `None` while there are none
    /// (followers, quiesced groups), which keeps idle groups small.
    reads: Option<Box<LeaderReads>>,
    /// Heartbeat rounds sent: the latest round number; `round_open` when a
    /// read waits for the next round to be broadcast.
    read_round: u64,
    round_open: bool,
    /// The tick the leader lease ends at (0: none), or `LEASE_FORFEITED`.
    lease_expires_tick: u64,
    pub lead_transferee: NodeId,
    /// Index of the latest membership change; another waits until it is applied.
    pub pending_conf_index: LogIndex,
    /// Index of the entry (or snapshot) the current membership comes from:
    /// a snapshot sent to a follower must be at least this recent.
    conf_index: LogIndex,
    snapshot_receive: Option<Box<SnapshotReceive>>,
    /// Entries were appended or the commit index moved: send appends when
    /// the next `Ready` is assembled (this batches proposals).
    broadcast_pending: bool,
}

impl<S: Storage> Raft<S> {
    /// A replica with the shared configuration `cfg`; `seed` drives its
    /// election-timeout randomness.
    pub fn new(cfg: Arc<Config>, seed: u64, storage: S) -> Result<Raft<S>, ConfigError> {
        cfg.validate()?;
        let (hard_state, conf_state) = storage.initial_state();
        let log = RaftLog::new(storage, hard_state.commit);
        let tracker = ProgressTracker::from_conf_state(&conf_state, log.last_index().next());
        let mut raft = Raft {
            id: cfg.id,
            term: hard_state.term,
            vote: hard_state.vote,
            leader: NodeId::NONE,
            role: Role::Follower,
            log,
            tracker,
            rng: Rng::new(seed ^ cfg.id.0.rotate_left(32)),
            cfg,
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_election_timeout: 0,
            ticks_total: 1,
            startup_guard: true,
            msgs: Vec::new(),
            read_states: Vec::new(),
            reads: None,
            read_round: 0,
            round_open: false,
            lease_expires_tick: 0,
            lead_transferee: NodeId::NONE,
            pending_conf_index: LogIndex::ZERO,
            conf_index: LogIndex::ZERO,
            snapshot_receive: None,
            broadcast_pending: false,
        };
        raft.become_follower(hard_state.term, NodeId::NONE);
        Ok(raft)
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn hard_state(&self) -> HardState {
        HardState { term: self.term, vote: self.vote, commit: self.log.committed }
    }

    pub fn soft_state(&self) -> SoftState {
        SoftState { leader: self.leader, role: self.role }
    }

    /// Whether this replica may campaign: it is a voter of the current configuration.
    pub fn promotable(&self) -> bool {
        self.tracker.is_voter(self.id)
    }

    // ---- role changes -------------------------------------------------------

    fn reset(&mut self, term: Term) {
        assert!(term >= self.term, "term regressed from {} to {term}", self.term);
        if term != self.term {
            self.term = term;
            self.vote = NodeId::NONE;
            self.snapshot_receive = None;
        }
        self.leader = NodeId::NONE;
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.randomized_election_timeout = self.cfg.election_timeout_ticks + self.rng.below(self.cfg.election_timeout_ticks as u64) as u32;
        self.lead_transferee = NodeId::NONE;
        self.tracker.reset_votes();
        self.reads = None;
        self.round_open = false;
        self.lease_expires_tick = 0;
        self.broadcast_pending = false;
        let next = self.log.last_index().next();
        let (id, persisted, now) = (self.id, self.log.persisted, self.ticks_total);
        for pr in self.tracker.iter_mut() {
            pr.become_probe();
            pr.matched = if pr.id == id { persisted } else { LogIndex::ZERO };
            pr.next = next;
            pr.last_heard_tick = now;
            pr.commit_told = false;
            pr.appended_since_round = false;
            pr.acked_round = 0;
        }
    }

    pub fn become_follower(&mut self, term: Term, leader: NodeId) {
        self.reset(term);
        self.leader = leader;
        self.role = Role::Follower;
    }

    fn become_pre_candidate(&mut self) {
        assert!(self.role != Role::Leader, "leader cannot become pre-candidate");
        // Term and vote stay: a pre-vote changes nobody's persistent state.
        self.role = Role::PreCandidate;
        self.leader = NodeId::NONE;
        self.tracker.reset_votes();
    }

    fn become_candidate(&mut self) {
        assert!(self.role != Role::Leader, "leader cannot become candidate");
        self.reset(self.term.next());
        self.vote = self.id;
        self.role = Role::Candidate;
        self.startup_guard = false;
    }

    fn become_leader(&mut self) {
        assert!(self.role == Role::Candidate, "only a candidate can become leader, was {:?}", self.role);
        self.reset(self.term);
        self.leader = self.id;
        self.role = Role::Leader;
        let id = self.id;
        if let Some(pr) = self.tracker.get_mut(id) {
            pr.become_replicate();
            pr.next = self.log.last_index().next();
        }
        // Conservatively assume an unapplied membership change is in the log.
        self.pending_conf_index = self.log.last_index();
        // An entry of the new term: needed to commit earlier terms' entries
        // (§5.4.2) and before serving ReadIndex (§6.4).
        self.append_entries(vec![(EntryKind::Normal, Bytes::new())]);
    }

    // ---- time ---------------------------------------------------------------

    pub fn tick(&mut self) {
        self.ticks_total += 1;
        if self.role == Role::Leader {
            self.tick_leader();
        } else {
            self.tick_election();
        }
    }

    fn tick_election(&mut self) {
        self.election_elapsed += 1;
        if self.election_elapsed >= self.cfg.election_timeout_ticks {
            self.startup_guard = false;
        }
        let timed_out = self.election_elapsed >= self.randomized_election_timeout;
        if self.promotable() && (timed_out || self.tracker.is_sole_voter(self.id)) {
            self.election_elapsed = 0;
            self.campaign_now();
        }
    }

    fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.election_elapsed >= self.cfg.election_timeout_ticks {
            self.election_elapsed = 0;
            if self.cfg.check_quorum && !self.check_quorum_active() {
                self.become_follower(self.term, NodeId::NONE);
                return;
            }
            self.lead_transferee = NodeId::NONE;
        }
        if self.heartbeat_elapsed >= self.cfg.heartbeat_ticks {
            self.heartbeat_elapsed = 0;
            self.broadcast_heartbeat();
        }
        self.maybe_auto_leave_joint();
        self.maybe_hand_over();
    }

    /// Whether a quorum was heard from within the last election timeout.
    /// Followers that went quiet stop receiving snapshot chunks.
    fn check_quorum_active(&mut self) -> bool {
        let since = self.ticks_total.saturating_sub(self.cfg.election_timeout_ticks as u64);
        let id = self.id;
        for pr in self.tracker.iter_mut() {
            if pr.id != id && pr.last_heard_tick < since && pr.state == ProgressState::Snapshot {
                pr.become_probe();
            }
        }
        self.tracker.quorum_active(&self.tracker.voters, id, since)
    }

    // ---- elections ----------------------------------------------------------

    fn campaign(&mut self, kind: Campaign) {
        if !self.promotable() {
            return;
        }
        let vote_term = if kind == Campaign::PreVote {
            self.become_pre_candidate();
            self.term.next()
        } else {
            self.become_candidate();
            self.term
        };
        self.tracker.record_vote(self.id, true);
        if self.tracker.tally_votes() == VoteResult::Won {
            self.on_election_won(kind == Campaign::PreVote);
            return;
        }
        let (last_index, last_term) = (self.log.last_index(), self.log.last_term());
        for id in self.tracker.voters.ids() {
            if id == self.id {
                continue;
            }
            let body = MessageBody::RequestVote { pre: kind == Campaign::PreVote, transfer: kind == Campaign::Transfer, last_index, last_term };
            self.msgs.push(Message { from: self.id, to: id, term: vote_term, body });
        }
    }

    /// Starts an election now (through pre-vote when enabled).
    pub fn campaign_now(&mut self) {
        if self.role != Role::Leader {
            self.campaign(if self.cfg.pre_vote { Campaign::PreVote } else { Campaign::Election });
        }
    }

    fn on_election_won(&mut self, was_pre_vote: bool) {
        // A membership change applied during the campaign may have removed us.
        if !self.promotable() {
            self.become_follower(self.term, NodeId::NONE);
            return;
        }
        if was_pre_vote {
            self.campaign(Campaign::Election);
        } else {
            self.become_leader();
        }
    }

    /// A voter that heard from a leader within the election timeout (or has
    /// just started and cannot know) refuses to help depose it: this is what
    /// makes the leader lease and check-quorum sound.
    fn in_leader_lease(&self) -> bool {
        self.cfg.check_quorum && (!self.leader.is_none() || self.startup_guard) && self.election_elapsed < self.cfg.election_timeout_ticks
    }

    fn handle_vote_request(&mut self, m: &Message, pre: bool, last_index: LogIndex, last_term: Term) {
        let can_vote = self.vote == m.from || (self.vote.is_none() && self.leader.is_none()) || (pre && m.term > self.term);
        let granted = can_vote && self.log.is_up_to_date(last_index, last_term) && !self.yields_pre_vote_tie(m, pre, last_index, last_term);
        let term = if granted { m.term } else { self.term };
        self.send(m.from, term, MessageBody::VoteResponse { pre, granted });
        if granted && !pre {
            self.election_elapsed = 0;
            self.vote = m.from;
        }
    }

    /// Two replicas whose election timers ran out in the same tick would
    /// grant each other's pre-vote, then each vote for itself: a split vote,
    /// and another timeout before either tries again. So a pre-candidate
    /// keeps its pre-vote from another pre-candidate for the same term whose
    /// log is the same as its own when that one has the higher id (the lower
    /// id's pre-vote it grants). Where the pre-vote needs the other's grant
    /// (two replicas of three left), only the lower id goes on, and wins. A
    /// longer log is granted as ever, whatever its id. A pre-vote binds
    /// nobody, so this changes liveness only, and only in such ties.
    fn yields_pre_vote_tie(&self, m: &Message, pre: bool, last_index: LogIndex, last_term: Term) -> bool {
        pre && self.role == Role::PreCandidate && m.term == self.term.next() && m.from > self.id && (last_index, last_term) == (self.log.last_index(), self.log.last_term())
    }

    fn handle_vote_response(&mut self, m: &Message, pre: bool, granted: bool) {
        if pre != (self.role == Role::PreCandidate) {
            return;
        }
        self.tracker.record_vote(m.from, granted);
        match self.tracker.tally_votes() {
            VoteResult::Won => self.on_election_won(pre),
            VoteResult::Lost => self.become_follower(self.term, NodeId::NONE),
            VoteResult::Pending => {}
        }
    }

    // ---- message dispatch -----------------------------------------------------

    /// Handles one message from a peer. Messages not addressed to this
    /// replica, or from itself, are dropped.
    pub fn step(&mut self, m: Message) {
        if m.to != self.id || m.from == self.id || m.from.is_none() || m.malformed().is_some() {
            return;
        }
        if m.term > self.term {
            if !self.step_higher_term(&m) {
                return;
            }
        } else if m.term < self.term {
            self.step_lower_term(&m);
            return;
        }
        match m.body {
            MessageBody::RequestVote { pre, last_index, last_term, .. } => self.handle_vote_request(&m, pre, last_index, last_term),
            _ => match self.role {
                Role::Leader => self.step_leader(m),
                Role::Candidate | Role::PreCandidate => self.step_candidate(m),
                Role::Follower => self.step_follower(m),
            },
        }
    }

    /// Returns false when the message is to be ignored.
    fn step_higher_term(&mut self, m: &Message) -> bool {
        match &m.body {
            MessageBody::RequestVote { pre, transfer, .. } => {
                if !transfer && self.in_leader_lease() {
                    return false;
                }
                if !pre {
                    self.become_follower(m.term, NodeId::NONE);
                }
            }
            // Granted pre-votes carry the term the candidate will campaign in.
            MessageBody::VoteResponse { pre: true, granted: true } => {}
            MessageBody::Append { .. } | MessageBody::Heartbeat { .. } | MessageBody::SnapshotChunk { .. } => self.become_follower(m.term, m.from),
            _ => self.become_follower(m.term, NodeId::NONE),
        }
        true
    }

    fn step_lower_term(&mut self, m: &Message) {
        match m.body {
            // A stale leader learns our term from the answer and steps down;
            // without it, a partitioned node with check-quorum or pre-vote
            // could not make the old leader notice.
            MessageBody::Append { .. } | MessageBody::Heartbeat { .. } if self.cfg.check_quorum || self.cfg.pre_vote => {
                self.send(m.from, self.term, MessageBody::AppendResponse { index: LogIndex::ZERO, reject: None });
            }
            MessageBody::RequestVote { pre: true, .. } => {
                self.send(m.from, self.term, MessageBody::VoteResponse { pre: true, granted: false });
            }
            _ => {}
        }
    }

    fn step_follower(&mut self, m: Message) {
        match m.body {
            MessageBody::Append { .. } | MessageBody::Heartbeat { .. } | MessageBody::SnapshotChunk { .. } => {
                self.election_elapsed = 0;
                self.leader = m.from;
                self.handle_leader_message(m);
            }
            // Only the leader hands over leadership or answers reads: from
            // anyone else these would bypass the lease or serve a stale read.
            MessageBody::TimeoutNow if m.from == self.leader => self.campaign(Campaign::Transfer),
            MessageBody::ReadIndexResponse { request_id, index } if m.from == self.leader => self.read_states.push(ReadState { request_id, index }),
            _ => {}
        }
    }

    fn step_candidate(&mut self, m: Message) {
        match m.body {
            MessageBody::Append { .. } | MessageBody::Heartbeat { .. } | MessageBody::SnapshotChunk { .. } => {
                self.become_follower(m.term, m.from);
                self.handle_leader_message(m);
            }
            MessageBody::VoteResponse { pre, granted } => self.handle_vote_response(&m, pre, granted),
            _ => {}
        }
    }

    fn handle_leader_message(&mut self, m: Message) {
        match m.body {
            MessageBody::Append { prev_index, prev_term, entries, commit } => self.handle_append(m.from, prev_index, prev_term, entries, commit),
            MessageBody::Heartbeat { commit, round } => {
                self.log.commit_to(commit.min(self.log.last_index()));
                if round != NO_ANSWER_ROUND {
                    self.send(m.from, self.term, MessageBody::HeartbeatResponse { round });
                }
            }
            MessageBody::SnapshotChunk { meta, offset, data, last } => self.handle_snapshot_chunk(m.from, *meta, offset, data, last),
            _ => unreachable!("only leader messages are passed here"),
        }
    }

    fn step_leader(&mut self, m: Message) {
        if let Some(pr) = self.tracker.get_mut(m.from) {
            pr.last_heard_tick = self.ticks_total;
        }
        match m.body {
            MessageBody::AppendResponse { index, reject: Some(hint) } => self.handle_append_rejected(m.from, index, hint),
            MessageBody::AppendResponse { index, reject: None } => self.handle_append_accepted(m.from, index),
            MessageBody::HeartbeatResponse { round } => self.handle_heartbeat_response(m.from, round),
            MessageBody::SnapshotResponse { index, next_offset, done, reject } => self.handle_snapshot_response(m.from, index, next_offset, done, reject),
            MessageBody::ReadIndex { request_id } => {
                // A full queue drops the request; the follower's caller times out.
                let _ = self.handle_read_request(request_id, m.from);
            }
            _ => {}
        }
    }

    pub(crate) fn send(&mut self, to: NodeId, term: Term, body: MessageBody) {
        self.msgs.push(Message { from: self.id, to, term, body });
    }

    // ---- replication: follower side --------------------------------------------

    fn handle_append(&mut self, leader: NodeId, prev_index: LogIndex, prev_term: Term, entries: Vec<Entry>, commit: LogIndex) {
        if prev_index < self.log.committed {
            let index = self.log.committed;
            self.send(leader, self.term, MessageBody::AppendResponse { index, reject: None });
            return;
        }
        if let Some(last_new) = self.log.maybe_append(prev_index, prev_term, commit, entries) {
            self.send(leader, self.term, MessageBody::AppendResponse { index: last_new, reject: None });
            return;
        }
        // Tell the leader where our logs may agree, so it skips a whole term
        // of mismatching entries in one round trip.
        let (index, term) = self.log.find_conflict_by_term(prev_index.min(self.log.last_index()), prev_term);
        let reject = Some(RejectHint { index, term });
        self.send(leader, self.term, MessageBody::AppendResponse { index: prev_index, reject });
    }

    // ---- replication: leader side -----------------------------------------------

    /// Appends entries of the current term to the leader's own log. They
    /// reach followers when the next `Ready` is assembled.
    fn append_entries(&mut self, items: impl IntoIterator<Item = (EntryKind, Bytes)>) -> LogIndex {
        let mut index = self.log.last_index();
        let term = self.term;
        let entries: Vec<Entry> = items
            .into_iter()
            .map(|(kind, data)| {
                index = index.next();
                Entry { term, index, kind, data }
            })
            .collect();
        let last = self.log.append_owned(entries);
        self.broadcast_pending = true;
        last
    }

    fn handle_append_rejected(&mut self, from: NodeId, rejected: LogIndex, hint: RejectHint) {
        let probe = if hint.term > Term::ZERO { self.log.find_conflict_by_term(hint.index, hint.term).0 } else { hint.index };
        let Some(pr) = self.tracker.get_mut(from) else { return };
        if pr.maybe_decr_to(rejected, probe) {
            if pr.state == ProgressState::Replicate {
                pr.become_probe();
            }
            self.send_append(from, true);
        }
    }

    fn handle_append_accepted(&mut self, from: NodeId, index: LogIndex) {
        let last_index = self.log.last_index();
        if index > last_index {
            return; // acknowledges entries this leader never had: not from a correct peer
        }
        let Some(pr) = self.tracker.get_mut(from) else { return };
        let was_paused = pr.is_paused(self.cfg.max_inflight_msgs);
        // A probe acknowledged at the match index (e.g. the first append after
        // a snapshot) confirms the match as much as one that moves it: the
        // follower's log agrees with ours up to `index`, so stream from there.
        let grew = pr.maybe_update(index);
        let probe_confirmed = pr.state == ProgressState::Probe && pr.matched == index;
        if !grew && !probe_confirmed {
            if pr.state == ProgressState::Replicate {
                pr.inflights.free_to(index);
            }
            return;
        }
        match pr.state {
            ProgressState::Probe => pr.become_replicate(),
            ProgressState::Snapshot => {
                if pr.snapshot.as_ref().is_some_and(|s| pr.matched >= s.snapshot.meta.index) {
                    pr.become_probe();
                }
            }
            ProgressState::Replicate => pr.inflights.free_to(index),
        }
        let caught_up = pr.matched == last_index;
        if !self.maybe_commit() && was_paused {
            self.send_append(from, false);
        }
        while self.send_append(from, false) {}
        if from == self.lead_transferee && caught_up {
            self.send_timeout_now(from);
        }
        self.maybe_hand_over();
    }

    /// Advances the commit index to what a quorum has durably stored.
    fn maybe_commit(&mut self) -> bool {
        let index = self.tracker.committed_index();
        if !self.log.maybe_commit(index, self.term) {
            return false;
        }
        for pr in self.tracker.iter_mut() {
            pr.commit_told = false; // Nobody was told this commit yet.
        }
        self.broadcast_pending = true;
        self.release_reads_awaiting_commit();
        true
    }

    /// Sends the next append to `to` if flow control allows. With
    /// `send_if_empty`, sends one even without entries (a probe, or to carry
    /// the commit index). Returns whether a message was sent.
    fn send_append(&mut self, to: NodeId, send_if_empty: bool) -> bool {
        let (max_inflight, max_entries, max_bytes) = (self.cfg.max_inflight_msgs, self.cfg.max_append_entries, self.cfg.max_append_bytes);
        let Some(pr) = self.tracker.get(to) else { return false };
        if pr.is_paused(max_inflight) {
            return false;
        }
        let prev_index = pr.next.prev();
        let prev_term = self.log.term(prev_index);
        let entries = self.log.entries_from(pr.next, max_entries, max_bytes);
        let (prev_term, entries) = match (prev_term, entries) {
            (Ok(t), Ok(e)) => (t, e),
            (Err(StorageError::Compacted(_)), _) | (_, Err(StorageError::Compacted(_))) => return self.start_snapshot(to),
            (Err(e), _) | (_, Err(e)) => panic!("log read failed for follower {to} at {}: {e}", prev_index.next()),
        };
        if entries.is_empty() && !send_if_empty {
            return false;
        }
        let pr = self.tracker.get_mut(to).expect("checked above");
        match pr.state {
            ProgressState::Replicate => {
                if let Some(last) = entries.last() {
                    pr.next = last.index.next();
                    pr.inflights.add(last.index, max_inflight);
                }
            }
            ProgressState::Probe => pr.probe_sent = true,
            ProgressState::Snapshot => unreachable!("paused in snapshot state"),
        }
        let commit = self.log.committed;
        pr.commit_told = true;
        pr.appended_since_round = true;
        self.send(to, self.term, MessageBody::Append { prev_index, prev_term, entries, commit });
        true
    }

    /// Sends appends (or commit updates) to every follower that needs one.
    pub(crate) fn flush_broadcast(&mut self) {
        if !std::mem::take(&mut self.broadcast_pending) || self.role != Role::Leader {
            return;
        }
        for id in self.tracker.member_ids() {
            if id == self.id {
                continue;
            }
            let behind_commit = self.tracker.get(id).is_some_and(|pr| pr.matched < self.log.committed);
            if !self.send_append(id, behind_commit) {
                continue;
            }
            while self.send_append(id, false) {}
        }
    }

    fn broadcast_heartbeat(&mut self) {
        let reads_wait = self.round_open;
        self.read_round += 1;
        self.round_open = false;
        let (round, now) = (self.read_round, self.ticks_total);
        let reads = self.reads.get_or_insert_default();
        let round_ticks = &mut reads.round_ticks;
        if round_ticks.len() == limits::HEARTBEAT_ROUNDS_REMEMBERED_MAX {
            round_ticks.pop_front();
        }
        round_ticks.push_back((round, now));
        // Reads waiting, or read lately (the lease is worth keeping): every
        // follower answers. Otherwise a follower that holds the whole log,
        // replicates normally and answered something within the last
        // heartbeat interval is not asked to: its answer would tell nothing
        // new. The lease grows only from rounds a quorum answered, so without
        // reads it may lapse; the next read then confirms leadership with a
        // round, which renews it.
        let reads_recent = self.cfg.lease_ticks > 0 && reads.last_read_tick > 0 && now < reads.last_read_tick + u64::from(self.cfg.election_timeout_ticks);
        let every_answer = reads_wait || !reads.pending.is_empty() || reads_recent;
        let committed = self.log.committed;
        let heard_since = now.saturating_sub(u64::from(self.cfg.heartbeat_ticks));
        let (max_inflight, last) = (self.cfg.max_inflight_msgs, self.log.last_index());
        let (id, skip_after_appends) = (self.id, self.cfg.skip_heartbeats_after_appends);
        let mut targets: Vec<(NodeId, LogIndex, bool)> = Vec::new();
        for p in self.tracker.iter_mut().filter(|p| p.id != id) {
            // A follower behind may have lost appends: its answer makes
            // the leader send them again.
            let quiet = p.state == ProgressState::Replicate && p.matched == last && !p.inflights.is_full(max_inflight) && p.last_heard_tick >= heard_since;
            let answer = every_answer || !quiet;
            let appended = std::mem::take(&mut p.appended_since_round);
            if answer || !appended || !skip_after_appends {
                let commit = p.matched.min(committed);
                p.commit_told |= commit == committed;
                targets.push((p.id, commit, answer));
            }
        }
        for (to, commit, answer) in targets {
            let round = if answer { round } else { NO_ANSWER_ROUND };
            self.send(to, self.term, MessageBody::Heartbeat { commit, round });
        }
        // A single-voter group confirms its own rounds.
        self.advance_confirmed_round();
    }

    /// Broadcasts the heartbeat round that pending reads wait for. A round
    /// that only `wake` opened (no read waits) re-asserts the leader; when
    /// new entries are about to go to every follower, they do that as well,
    /// and the round is dropped: a quiesced group woken by a write then
    /// costs the write's appends only, not a heartbeat, an answer and an
    /// empty append after it for each follower.
    pub(crate) fn flush_read_round(&mut self) {
        if !self.round_open || self.role != Role::Leader {
            return;
        }
        let reads_wait = self.reads.as_ref().is_some_and(|r| !r.pending.is_empty());
        if !reads_wait && self.broadcast_pending && self.entries_go_to_every_follower() {
            self.round_open = false;
            return;
        }
        self.broadcast_heartbeat();
    }

    /// Whether the next broadcast sends new entries to every other replica.
    fn entries_go_to_every_follower(&self) -> bool {
        let (last, window) = (self.log.last_index(), self.cfg.max_inflight_msgs);
        self.tracker.iter().all(|p| p.id == self.id || (p.state == ProgressState::Replicate && !p.is_paused(window) && p.next <= last))
    }

    fn handle_heartbeat_response(&mut self, from: NodeId, round: u64) {
        if round > self.read_round {
            return; // echoes a round not yet sent: it would confirm reads no quorum saw
        }
        let Some(pr) = self.tracker.get_mut(from) else { return };
        pr.acked_round = pr.acked_round.max(round);
        pr.probe_sent = false;
        // The follower is alive; if the window is full, appends may have
        // been lost: free one slot so the next append (or its rejection)
        // gets replication moving again.
        if pr.state == ProgressState::Replicate && pr.inflights.is_full(self.cfg.max_inflight_msgs) {
            pr.inflights.free_first();
        }
        let (state, behind) = (pr.state, pr.matched < self.log.last_index());
        if state == ProgressState::Snapshot {
            // A chunk may have been lost: resend from what the follower confirmed.
            if let Some(send) = pr.snapshot.as_mut() {
                send.next_offset = send.acked_offset;
                send.last_sent = false;
            }
            self.send_snapshot_chunks(from);
        } else if behind {
            self.send_append(from, true);
        }
        self.advance_confirmed_round();
    }

    // ---- snapshots ------------------------------------------------------------

    fn start_snapshot(&mut self, to: NodeId) -> bool {
        let since = self.ticks_total.saturating_sub(self.cfg.election_timeout_ticks as u64);
        let active = self.tracker.get(to).is_some_and(|pr| pr.last_heard_tick >= since);
        if !active {
            return false;
        }
        let snapshot = match self.log.storage.snapshot(self.conf_index) {
            Ok(s) => s,
            Err(StorageError::SnapshotTemporarilyUnavailable) => return false,
            Err(e) => panic!("snapshot for follower {to} unavailable: {e}"),
        };
        assert!(snapshot.meta.index >= self.log.first_index().prev(), "storage snapshot {} older than the log start", snapshot.meta.index);
        self.tracker.get_mut(to).expect("active follower has progress").become_snapshot(snapshot);
        self.send_snapshot_chunks(to)
    }

    /// Sends snapshot chunks to `to` while the chunk window allows.
    fn send_snapshot_chunks(&mut self, to: NodeId) -> bool {
        let (chunk_bytes, window_bytes) = (self.cfg.snapshot_chunk_bytes, self.cfg.snapshot_chunk_bytes * self.cfg.snapshot_chunks_inflight);
        let mut out = Vec::new();
        let Some(send) = self.tracker.get_mut(to).and_then(|pr| pr.snapshot.as_mut()) else { return false };
        let len = send.snapshot.data.len() as u64;
        while !send.last_sent && send.next_offset - send.acked_offset < window_bytes.max(1) {
            let start = send.next_offset;
            let end = (start + chunk_bytes).min(len);
            let last = end == len;
            let data = send.snapshot.data.slice(start as usize..end as usize);
            out.push(MessageBody::SnapshotChunk { meta: Box::new(send.snapshot.meta.clone()), offset: start, data, last });
            send.next_offset = end;
            send.last_sent = last;
        }
        let sent = !out.is_empty();
        for body in out {
            self.send(to, self.term, body);
        }
        sent
    }

    fn handle_snapshot_response(&mut self, from: NodeId, index: LogIndex, next_offset: u64, done: bool, reject: bool) {
        let last_index = self.log.last_index();
        let Some(pr) = self.tracker.get_mut(from) else { return };
        if done {
            if index > last_index {
                return; // installed beyond this leader's log: not from a correct peer
            }
            pr.maybe_update(index);
            if pr.state == ProgressState::Snapshot {
                pr.become_probe();
            }
            self.send_append(from, true);
            return;
        }
        let Some(send) = pr.snapshot.as_mut() else { return };
        if reject {
            let resending = send.acked_offset == next_offset && send.next_offset > next_offset;
            if resending {
                // Already resending from there: answers to chunks that were in
                // flight must not trigger a resend each (traffic would multiply).
                return;
            }
            send.next_offset = next_offset.min(send.snapshot.data.len() as u64);
            send.acked_offset = send.next_offset;
            send.last_sent = false;
        } else {
            // The follower's word is the truth, even when lower than before:
            // it may have restarted and lost what it had received.
            send.acked_offset = next_offset.min(send.snapshot.data.len() as u64);
            send.next_offset = send.next_offset.max(send.acked_offset);
        }
        self.send_snapshot_chunks(from);
    }

    fn handle_snapshot_chunk(&mut self, leader: NodeId, meta: SnapshotMeta, offset: u64, data: Bytes, last: bool) {
        if meta.index <= self.log.committed {
            let index = self.log.committed;
            self.send(leader, self.term, MessageBody::SnapshotResponse { index, next_offset: 0, done: true, reject: false });
            return;
        }
        let fresh = !matches!(&self.snapshot_receive, Some(r) if r.meta == meta);
        if fresh {
            self.snapshot_receive = (offset == 0).then(|| Box::new(SnapshotReceive { meta: meta.clone(), data: Vec::new() }));
        }
        let Some(expected) = self.snapshot_receive.as_ref().map(|r| r.data.len() as u64) else {
            // A chunk of a transfer we are not receiving (we missed its start):
            // ask the leader to start over.
            self.send(leader, self.term, MessageBody::SnapshotResponse { index: meta.index, next_offset: 0, done: false, reject: true });
            return;
        };
        if offset < expected {
            // A duplicate: confirm what we hold, without asking for a resend.
            self.send(leader, self.term, MessageBody::SnapshotResponse { index: meta.index, next_offset: expected, done: false, reject: false });
            return;
        }
        if offset > expected {
            // An earlier chunk was lost or is late: ask for a resend from what
            // we hold (the leader ignores repeats of the same request).
            self.send(leader, self.term, MessageBody::SnapshotResponse { index: meta.index, next_offset: expected, done: false, reject: true });
            return;
        }
        if expected + data.len() as u64 > limits::SNAPSHOT_BYTES_MAX {
            self.snapshot_receive = None;
            self.send(leader, self.term, MessageBody::SnapshotResponse { index: meta.index, next_offset: 0, done: false, reject: true });
            return;
        }
        let receive = self.snapshot_receive.as_mut().expect("offset matched a receive buffer");
        receive.data.extend_from_slice(&data);
        let next_offset = receive.data.len() as u64;
        if !last {
            self.send(leader, self.term, MessageBody::SnapshotResponse { index: meta.index, next_offset, done: false, reject: false });
            return;
        }
        let receive = self.snapshot_receive.take().expect("present");
        let snapshot = Snapshot { meta: receive.meta, data: Bytes::from(receive.data) };
        let index = if self.restore(snapshot) { meta.index } else { self.log.committed };
        self.send(leader, self.term, MessageBody::SnapshotResponse { index, next_offset, done: true, reject: false });
    }

    /// Installs a snapshot from the leader. Returns false when it brings
    /// nothing new (then at most the commit index moves).
    fn restore(&mut self, snapshot: Snapshot) -> bool {
        let meta = &snapshot.meta;
        if meta.index <= self.log.committed {
            return false;
        }
        if self.log.match_term(meta.index, meta.term) {
            self.log.commit_to(meta.index);
            return false;
        }
        let cs = &meta.conf_state;
        let member = [&cs.voters, &cs.voters_outgoing, &cs.learners, &cs.learners_next].iter().any(|ids| ids.contains(&self.id));
        if !member {
            return false;
        }
        let cs = cs.clone();
        self.conf_index = meta.index;
        self.log.restore(snapshot);
        self.tracker.set_conf_state(&cs, self.log.last_index().next());
        true
    }

    // ---- proposals --------------------------------------------------------------

    fn check_can_propose(&self) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader { leader: self.leader });
        }
        if !self.lead_transferee.is_none() {
            return Err(ProposeError::TransferInProgress(self.lead_transferee));
        }
        let uncommitted_entries = self.log.last_index().get() - self.log.committed.get();
        if uncommitted_entries >= limits::UNCOMMITTED_ENTRIES_MAX {
            return Err(ProposeError::TooManyUncommitted { uncommitted_entries });
        }
        // A leader outside the incoming voters appends nothing once the leave
        // entry may be in its log (nor after it applied a configuration without
        // itself): when it hands over (`maybe_hand_over`), its whole log is
        // then already held by a majority of C_new.
        let outgoing_only = !self.tracker.voters.incoming.contains(self.id);
        if outgoing_only && (self.pending_conf_index > self.log.applied || !self.tracker.is_voter(self.id)) {
            return Err(ProposeError::LeaderLeaving);
        }
        Ok(())
    }

    /// Appends user data to the log; returns the index of the last entry.
    pub fn propose(&mut self, data: impl IntoIterator<Item = Bytes>) -> Result<LogIndex, ProposeError> {
        self.check_can_propose()?;
        Ok(self.append_entries(data.into_iter().map(|d| (EntryKind::Normal, d))))
    }

    pub fn propose_conf_change(&mut self, cc: &ConfChange) -> Result<LogIndex, ProposeError> {
        self.check_can_propose()?;
        if self.pending_conf_index > self.log.applied {
            return Err(ConfChangeError::Pending(self.pending_conf_index.get()).into());
        }
        let next = confchange::apply(&self.tracker.conf_state(), cc)?;
        self.check_conf_change_safe(cc, &next)?;
        let index = self.append_entries(vec![(EntryKind::ConfChange, Bytes::from(cc.encode()))]);
        self.pending_conf_index = index;
        Ok(index)
    }

    /// Refuses changes that would demote the leader in a single step, promote
    /// a learner that has not caught up, or leave the new configuration
    /// without a quorum of replicas heard from within the election timeout.
    ///
    /// Leaving a joint configuration is always allowed: it is how a joint
    /// change finishes, it only drops the outgoing half's requirements, and a
    /// leader that is not a voter of C_new must still drive it (thesis §4.2.2).
    /// Entering a joint configuration that removes the leader is allowed too:
    /// the leader keeps leading from the outgoing half until C_new is applied,
    /// then hands over (see `maybe_hand_over`).
    fn check_conf_change_safe(&self, cc: &ConfChange, next: &ConfState) -> Result<(), ConfChangeError> {
        assert!(self.role == Role::Leader && self.tracker.is_voter(self.id), "a conf change checked at a non-voting or non-leader replica {}", self.id);
        if cc.is_leave_joint() {
            return Ok(());
        }
        let enters_joint = !next.voters_outgoing.is_empty();
        assert!(!enters_joint || next.voters_outgoing.contains(&self.id), "leader {} is not a voter of the joint configuration it proposes", self.id);
        if !enters_joint && !next.voters.contains(&self.id) {
            return Err(ConfChangeError::RemovesLeader(self.id));
        }
        let last = self.log.last_index();
        for (op, id) in &cc.changes {
            let Some(pr) = self.tracker.get(*id) else { continue };
            if *op == ChangeOp::AddVoter && pr.is_learner {
                let lag_entries = last.get() - pr.matched.get();
                if lag_entries > self.cfg.promote_lag_entries_max {
                    return Err(ConfChangeError::LearnerBehind { id: *id, lag_entries });
                }
            }
        }
        let since = self.ticks_total.saturating_sub(self.cfg.election_timeout_ticks as u64);
        if !self.tracker.quorum_active(&joint_config(next), self.id, since.max(1)) {
            return Err(ConfChangeError::LosesQuorum);
        }
        Ok(())
    }

    /// Applies a committed membership change (called as it is handed out).
    /// An invalid change is a deterministic no-op on every replica.
    pub(crate) fn apply_conf_change(&mut self, cc: &ConfChange, index: LogIndex) {
        let Ok(next) = confchange::apply(&self.tracker.conf_state(), cc) else { return };
        self.conf_index = index;
        self.tracker.set_conf_state(&next, self.log.last_index().next());
        if self.role != Role::Leader {
            return;
        }
        if !self.lead_transferee.is_none() && !self.tracker.is_voter(self.lead_transferee) {
            self.lead_transferee = NodeId::NONE;
        }
        let id = self.id;
        let persisted = self.log.persisted;
        if let Some(pr) = self.tracker.get_mut(id) {
            pr.matched = persisted;
        }
        self.maybe_commit();
        self.broadcast_pending = true;
        self.maybe_hand_over();
    }

    /// A leader that is not a voter of its configuration is leaving: it led
    /// from the outgoing half until C_new was applied (thesis §4.2.2), or an
    /// earlier leader's change removed it. It takes no proposals and keeps
    /// replicating, counting only the voters, until one of them holds its
    /// whole log; then it sends everyone the commit index, asks that voter to
    /// campaign at once, and steps down. Waiting for a voter with the whole
    /// log matters: voters that have not applied the change yet may still need
    /// this replica's vote, which it refuses to a shorter log, and it can no
    /// longer campaign itself.
    fn maybe_hand_over(&mut self) {
        if self.role != Role::Leader || self.tracker.is_voter(self.id) {
            return;
        }
        let (committed, last, round) = (self.log.committed, self.log.last_index(), self.read_round);
        let successor = self.tracker.iter().find(|p| self.tracker.is_voter(p.id) && p.matched == last).map(|p| p.id);
        let Some(to) = successor else { return };
        assert!(to != self.id, "leader {} is not a voter, yet chose itself as successor", self.id);
        let heartbeats: Vec<(NodeId, LogIndex)> = self.tracker.iter().filter(|p| p.id != self.id).map(|p| (p.id, p.matched.min(committed))).collect();
        for (peer, commit) in heartbeats {
            self.send(peer, self.term, MessageBody::Heartbeat { commit, round });
        }
        self.send_timeout_now(to);
        self.become_follower(self.term, NodeId::NONE);
    }

    /// After the entry that entered a joint configuration is applied, the
    /// leader proposes leaving it (for `auto_leave` transitions). Called when
    /// committed entries are applied and on every leader tick, so a proposal
    /// refused for a passing reason is retried. A leader that is no voter at
    /// all (see `maybe_hand_over`) leaves that to its successor.
    pub(crate) fn maybe_auto_leave_joint(&mut self) {
        let t = &self.tracker;
        if self.role != Role::Leader || !t.auto_leave || !t.voters.is_joint() || !t.is_voter(self.id) || self.pending_conf_index > self.log.applied {
            return;
        }
        match self.propose_conf_change(&ConfChange::leave_joint()) {
            Ok(_) => {}
            // Retried on the next tick: a transfer finishes (we no longer lead)
            // or is aborted within an election timeout; commits catch up.
            Err(ProposeError::TransferInProgress(_) | ProposeError::TooManyUncommitted { .. }) => {}
            Err(e) => panic!("leader {} could not leave the joint configuration {:?}: {e}", self.id, self.tracker.conf_state()),
        }
    }

    // ---- leadership transfer ----------------------------------------------------

    pub fn transfer_leader(&mut self, to: NodeId) -> Result<(), TransferError> {
        if self.role != Role::Leader {
            return Err(TransferError::NotLeader { leader: self.leader });
        }
        if !self.tracker.is_voter(to) {
            return Err(TransferError::NotVoter(to));
        }
        if to == self.id || to == self.lead_transferee {
            return Ok(());
        }
        self.lead_transferee = to;
        // The transfer is aborted if it has not finished within an election timeout.
        self.election_elapsed = 0;
        let caught_up = self.tracker.get(to).is_some_and(|pr| pr.matched == self.log.last_index());
        if caught_up {
            self.send_timeout_now(to);
        } else {
            self.send_append(to, true);
        }
        Ok(())
    }

    fn send_timeout_now(&mut self, to: NodeId) {
        // The target will campaign past every follower's lease check.
        self.lease_expires_tick = LEASE_FORFEITED;
        self.send(to, self.term, MessageBody::TimeoutNow);
    }

    // ---- reads ----------------------------------------------------------------------

    /// Whether the leader lease covers a read right now.
    pub fn lease_valid(&self) -> bool {
        self.role == Role::Leader && self.cfg.lease_ticks > 0 && self.lead_transferee.is_none() && self.lease_expires_tick != LEASE_FORFEITED && self.ticks_total < self.lease_expires_tick
    }

    /// Registers a linearizable read. The answer is a `ReadState` once the
    /// leader has confirmed it still leads (or holds the lease).
    pub fn read_index(&mut self, request_id: u64) -> Result<(), ReadError> {
        match self.role {
            Role::Leader => self.handle_read_request(request_id, self.id),
            _ if self.leader.is_none() => Err(ReadError::NoLeader),
            _ => {
                self.send(self.leader, self.term, MessageBody::ReadIndex { request_id });
                Ok(())
            }
        }
    }

    fn handle_read_request(&mut self, request_id: u64, from: NodeId) -> Result<(), ReadError> {
        self.reads.get_or_insert_default().last_read_tick = self.ticks_total;
        let waiting = self.reads.as_ref().map_or(0, |r| r.pending.len() + r.awaiting_commit.len());
        if waiting >= limits::PENDING_READS_MAX {
            return Err(ReadError::TooManyPending);
        }
        if self.log.term_or_zero(self.log.committed) != self.term {
            // §6.4: the leader must first commit an entry of its own term.
            self.reads.get_or_insert_default().awaiting_commit.push((request_id, from));
            return Ok(());
        }
        let index = self.log.committed;
        if self.lease_valid() || self.tracker.voters.ids() == [self.id] {
            self.answer_read(request_id, from, index);
            return Ok(());
        }
        let round = self.read_round + 1;
        self.reads.get_or_insert_default().pending.push_back(PendingRead { request_id, from, index, round });
        self.round_open = true;
        Ok(())
    }

    fn release_reads_awaiting_commit(&mut self) {
        let Some(reads) = self.reads.as_mut() else { return };
        if reads.awaiting_commit.is_empty() || self.log.term_or_zero(self.log.committed) != self.term {
            return;
        }
        for (request_id, from) in std::mem::take(&mut reads.awaiting_commit) {
            let _ = self.handle_read_request(request_id, from);
        }
    }

    fn answer_read(&mut self, request_id: u64, from: NodeId, index: LogIndex) {
        if from == self.id {
            self.read_states.push(ReadState { request_id, index });
        } else {
            self.send(from, self.term, MessageBody::ReadIndexResponse { request_id, index });
        }
    }

    /// Releases reads whose round a quorum has echoed, and extends the lease
    /// from the send time of that round.
    fn advance_confirmed_round(&mut self) {
        let (id, round) = (self.id, self.read_round);
        let confirmed = self.tracker.voters.quorum_value(|v| if v == id { round } else { self.tracker.get(v).map_or(0, |p| p.acked_round) });
        let Some(reads) = self.reads.as_mut() else { return };
        let mut answered = Vec::new();
        while reads.pending.front().is_some_and(|r| r.round <= confirmed) {
            answered.push(reads.pending.pop_front().expect("front exists"));
        }
        while reads.round_ticks.front().is_some_and(|&(r, _)| r < confirmed) {
            reads.round_ticks.pop_front();
        }
        let front = reads.round_ticks.front().copied();
        for r in answered {
            self.answer_read(r.request_id, r.from, r.index);
        }
        if let Some((r, sent_tick)) = front {
            if r == confirmed && self.cfg.lease_ticks > 0 && self.lead_transferee.is_none() && self.lease_expires_tick != LEASE_FORFEITED {
                self.lease_expires_tick = self.lease_expires_tick.max(sent_tick + self.cfg.lease_ticks as u64);
            }
        }
    }

    // ---- persistence -----------------------------------------------------------------

    /// The leader's own entries up to its persisted index count toward commit.
    pub(crate) fn on_leader_persisted(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        let (id, persisted) = (self.id, self.log.persisted);
        if let Some(pr) = self.tracker.get_mut(id) {
            pr.maybe_update(persisted);
        }
        self.maybe_commit();
    }

    // ---- quiescence ------------------------------------------------------------------

    /// Whether nothing is in flight: the engine may stop ticking this group
    /// until a proposal, a read or a message arrives (then call `wake`).
    pub fn is_idle(&self) -> bool {
        let log = &self.log;
        let settled = log.is_all_stable() && log.applied == log.committed && log.committed == log.last_index() && self.msgs.is_empty() && self.read_states.is_empty();
        if !settled || self.snapshot_receive.is_some() || self.broadcast_pending {
            return false;
        }
        match self.role {
            Role::Leader => {
                // With `skip_heartbeats_after_appends`, also until every
                // follower was told the commit: quiescing earlier would leave
                // one unable to rest, and it would campaign.
                let told = |p: &crate::tracker::Progress| !self.cfg.skip_heartbeats_after_appends || p.id == self.id || p.commit_told;
                let all_matched = self.tracker.iter().all(|p| p.matched == log.last_index() && p.state != ProgressState::Snapshot && told(p));
                all_matched && self.reads.as_ref().is_none_or(|r| r.is_empty()) && self.lead_transferee.is_none() && !self.tracker.voters.is_joint()
            }
            Role::Follower => !self.leader.is_none(),
            Role::Candidate | Role::PreCandidate => false,
        }
    }

    /// Gives back memory while idle. The lease is dropped: an unticked leader
    /// cannot tell how much time passes.
    pub fn quiesce(&mut self) {
        if self.lease_expires_tick != LEASE_FORFEITED {
            self.lease_expires_tick = 0;
        }
        if self.reads.as_ref().is_none_or(|r| r.is_empty()) {
            self.reads = None;
        }
        self.msgs = Vec::new();
        self.read_states = Vec::new();
        for pr in self.tracker.iter_mut() {
            pr.inflights.shrink();
        }
    }

    /// Resumes after quiescence: a follower gives the leader a full election
    /// timeout to show up; a leader re-asserts itself with a heartbeat round.
    pub fn wake(&mut self) {
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        if self.role == Role::Leader {
            let now = self.ticks_total;
            for pr in self.tracker.iter_mut() {
                pr.last_heard_tick = pr.last_heard_tick.max(now);
            }
            self.round_open = true;
        }
    }

    pub(crate) fn has_pending_flush(&self) -> bool {
        (self.broadcast_pending || self.round_open) && self.role == Role::Leader
    }

    /// Used by `RawNode` to mark reads and messages as collected.
    pub(crate) fn take_outputs(&mut self) -> (Vec<Message>, Vec<ReadState>) {
        (std::mem::take(&mut self.msgs), std::mem::take(&mut self.read_states))
    }
}
