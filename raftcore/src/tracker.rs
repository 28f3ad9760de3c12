//! What a leader knows about each replica (match/next index, flow-control
//! state, in-flight appends) and the group's current membership. Pure
//! bookkeeping; the protocol decisions live in `raft.rs`.

use std::collections::VecDeque;

use crate::confchange::joint_config;
use crate::quorum::{JointConfig, VoteResult};
use crate::types::{ConfState, LogIndex, NodeId, Snapshot};

/// Flow-control state of one follower, as in etcd-raft.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressState {
    /// Unknown match: one append at a time until it is accepted.
    Probe,
    /// Known match: appends stream optimistically within the inflight window.
    Replicate,
    /// Behind the log's first index: a snapshot is being sent.
    Snapshot,
}

/// A snapshot being streamed to one follower in chunks.
#[derive(Debug)]
pub struct SnapshotSend {
    pub snapshot: Snapshot,
    /// The chunk with `last` set went out (and no rewind happened since).
    pub last_sent: bool,
    /// Next chunk offset to send.
    pub next_offset: u64,
    /// The follower confirmed every byte below this offset.
    pub acked_offset: u64,
}

/// Indexes of the last entry of each append in flight, oldest first, bounded
/// by the window size.
#[derive(Debug, Default)]
pub struct Inflights {
    last_indexes: VecDeque<LogIndex>,
}

impl Inflights {
    pub fn len(&self) -> usize {
        self.last_indexes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.last_indexes.is_empty()
    }

    pub fn is_full(&self, window: usize) -> bool {
        self.last_indexes.len() >= window
    }

    pub fn add(&mut self, last: LogIndex, window: usize) {
        assert!(self.last_indexes.len() < window, "inflight window of {window} overflowed");
        debug_assert!(self.last_indexes.back().is_none_or(|&b| b <= last), "inflights out of order");
        self.last_indexes.push_back(last);
    }

    /// Frees every append whose last entry is at or below `index`.
    pub fn free_to(&mut self, index: LogIndex) {
        while self.last_indexes.front().is_some_and(|&f| f <= index) {
            self.last_indexes.pop_front();
        }
    }

    pub fn free_first(&mut self) {
        self.last_indexes.pop_front();
    }

    pub fn reset(&mut self) {
        self.last_indexes.clear();
    }

    /// Gives memory back while the group is idle.
    pub fn shrink(&mut self) {
        if self.last_indexes.is_empty() {
            self.last_indexes = VecDeque::new();
        }
    }
}

/// Invariants: `matched < next`; in `Snapshot` state `snapshot` is `Some`.
#[derive(Debug)]
pub struct Progress {
    pub id: NodeId,
    pub matched: LogIndex,
    pub next: LogIndex,
    pub state: ProgressState,
    /// In `Probe`: an append was sent and not yet answered.
    pub probe_sent: bool,
    /// The leader's tick count when it last heard from this replica; 0 means
    /// never (tick counts start at 1).
    pub last_heard_tick: u64,
    /// An append or heartbeat told this replica the leader's current
    /// commit index (a bool, not the index: idle replicas are many).
    pub commit_told: bool,
    /// An append went to this replica since the last heartbeat round.
    pub appended_since_round: bool,
    pub is_learner: bool,
    /// Highest heartbeat round this follower echoed.
    pub acked_round: u64,
    pub inflights: Inflights,
    pub snapshot: Option<Box<SnapshotSend>>,
}

impl Progress {
    pub fn new(id: NodeId, next: LogIndex, is_learner: bool) -> Progress {
        Progress {
            id,
            matched: LogIndex::ZERO,
            next,
            state: ProgressState::Probe,
            probe_sent: false,
            last_heard_tick: 0,
            commit_told: false,
            appended_since_round: false,
            is_learner,
            acked_round: 0,
            inflights: Inflights::default(),
            snapshot: None,
        }
    }

    fn reset_state(&mut self, state: ProgressState) {
        self.probe_sent = false;
        self.state = state;
        self.inflights.reset();
        self.snapshot = None;
    }

    pub fn become_probe(&mut self) {
        let after_snapshot = self.snapshot.as_ref().map(|s| s.snapshot.meta.index);
        self.reset_state(ProgressState::Probe);
        self.next = match after_snapshot {
            Some(index) => self.matched.max(index).next(),
            None => self.matched.next(),
        };
    }

    pub fn become_replicate(&mut self) {
        self.reset_state(ProgressState::Replicate);
        self.next = self.matched.next();
    }

    pub fn become_snapshot(&mut self, snapshot: Snapshot) {
        self.reset_state(ProgressState::Snapshot);
        self.snapshot = Some(Box::new(SnapshotSend { snapshot, last_sent: false, next_offset: 0, acked_offset: 0 }));
    }

    /// The follower accepted entries up to `index`. Returns whether `matched` grew.
    pub fn maybe_update(&mut self, index: LogIndex) -> bool {
        let grew = index > self.matched;
        if grew {
            self.matched = index;
            self.probe_sent = false;
        }
        self.next = self.next.max(index.next());
        grew
    }

    /// The follower rejected an append at `rejected`; `probe` is where the
    /// leader should try next. Returns false when the rejection is stale.
    pub fn maybe_decr_to(&mut self, rejected: LogIndex, probe: LogIndex) -> bool {
        if self.state == ProgressState::Replicate {
            if rejected <= self.matched {
                return false;
            }
            self.next = self.matched.next();
            return true;
        }
        if self.next.prev() != rejected {
            return false;
        }
        self.next = rejected.min(probe.next()).max(self.matched.next());
        self.probe_sent = false;
        true
    }

    /// Whether the leader must hold back appends to this follower.
    pub fn is_paused(&self, window: usize) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflights.is_full(window),
            ProgressState::Snapshot => true,
        }
    }
}

/// Membership plus one `Progress` per member (voters and learners), kept
/// sorted by id. Invariant: a node is never both voter (incoming) and learner.
#[derive(Debug, Default)]
pub struct ProgressTracker {
    pub voters: JointConfig,
    pub learners: Vec<NodeId>,
    /// Learners that become voters when the joint configuration is left
    /// (they are voters of the outgoing half until then).
    pub learners_next: Vec<NodeId>,
    pub auto_leave: bool,
    progress: Vec<Progress>,
    votes: Vec<(NodeId, bool)>,
}

impl ProgressTracker {
    pub fn from_conf_state(cs: &ConfState, next: LogIndex) -> ProgressTracker {
        let mut tracker = ProgressTracker::default();
        tracker.set_conf_state(cs, next);
        tracker
    }

    /// Switches to the membership `cs`; new members start probing at `next`.
    pub fn set_conf_state(&mut self, cs: &ConfState, next: LogIndex) {
        self.voters = joint_config(cs);
        self.learners = sorted(cs.learners.clone());
        self.learners_next = sorted(cs.learners_next.clone());
        self.auto_leave = cs.auto_leave;
        self.sync_progress(next);
    }

    pub fn conf_state(&self) -> ConfState {
        ConfState {
            voters: self.voters.incoming.voters().to_vec(),
            voters_outgoing: self.voters.outgoing.voters().to_vec(),
            learners: self.learners.clone(),
            learners_next: self.learners_next.clone(),
            auto_leave: self.auto_leave,
        }
    }

    /// Adds progress for new members and drops it for nodes no longer in any
    /// role; updates the learner flags.
    fn sync_progress(&mut self, next: LogIndex) {
        let mut members = self.voters.ids();
        members.extend(self.learners.iter().chain(&self.learners_next).copied());
        members.sort_unstable();
        members.dedup();
        self.progress.retain(|p| members.binary_search(&p.id).is_ok());
        for id in members {
            let is_learner = !self.voters.contains(id);
            match self.progress.binary_search_by_key(&id, |p| p.id) {
                Ok(at) => self.progress[at].is_learner = is_learner,
                Err(at) => self.progress.insert(at, Progress::new(id, next, is_learner)),
            }
        }
        self.progress.shrink_to_fit();
    }

    /// Whether `id` is the only voter (not in a joint configuration): it
    /// elects itself, so it need not wait out an election timeout.
    pub fn is_sole_voter(&self, id: NodeId) -> bool {
        self.voters.outgoing.is_empty() && self.voters.incoming.voters() == [id]
    }

    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(id)
    }

    pub fn get(&self, id: NodeId) -> Option<&Progress> {
        self.progress.binary_search_by_key(&id, |p| p.id).ok().map(|at| &self.progress[at])
    }

    pub fn get_mut(&mut self, id: NodeId) -> Option<&mut Progress> {
        match self.progress.binary_search_by_key(&id, |p| p.id) {
            Ok(at) => Some(&mut self.progress[at]),
            Err(_) => None,
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Progress> {
        self.progress.iter()
    }

    /// Where the progress entries live, for `RawNode::hot_memory`.
    pub(crate) fn progress_memory(&self) -> (usize, usize) {
        memory_of(&self.progress)
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Progress> {
        self.progress.iter_mut()
    }

    /// Every member id (voters and learners), sorted.
    pub fn member_ids(&self) -> Vec<NodeId> {
        self.progress.iter().map(|p| p.id).collect()
    }

    /// The highest index replicated to a quorum of voters.
    pub fn committed_index(&self) -> LogIndex {
        LogIndex(self.voters.quorum_value(|id| self.get(id).map_or(0, |p| p.matched.get())))
    }

    /// Whether a quorum of `voters` was heard from at or after `since_tick`
    /// (`self_id` always counts).
    pub fn quorum_active(&self, voters: &JointConfig, self_id: NodeId, since_tick: u64) -> bool {
        let active = |id: NodeId| id == self_id || self.get(id).is_some_and(|p| p.last_heard_tick != 0 && p.last_heard_tick >= since_tick);
        voters.vote_result(|id| Some(active(id))) == VoteResult::Won
    }

    pub fn reset_votes(&mut self) {
        self.votes = Vec::new();
    }

    pub fn record_vote(&mut self, id: NodeId, granted: bool) {
        if !self.votes.iter().any(|(v, _)| *v == id) {
            self.votes.push((id, granted));
        }
    }

    pub fn tally_votes(&self) -> VoteResult {
        self.voters.vote_result(|id| self.votes.iter().find(|(v, _)| *v == id).map(|(_, g)| *g))
    }
}

fn sorted(mut ids: Vec<NodeId>) -> Vec<NodeId> {
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// The address and byte length of `items`, for a driver to prefetch.
pub(crate) fn memory_of<T>(items: &[T]) -> (usize, usize) {
    (items.as_ptr() as usize, std::mem::size_of_val(items))
}
