//! Property tests of raftcore's bookkeeping against simple models, through
//! the public API only: `MemStorage` and `RaftLog` against a vector of
//! terms; the tracker's quorum commit index against the median rule (and
//! the minimum of both halves when joint); vote tallies and quorum activity
//! against counting; the inflight window and the probe/replicate/snapshot
//! transitions of `Progress` against their stated invariants; membership
//! change encoding and arithmetic. proptest seeds are fixed per test name.

use std::collections::VecDeque;

use bytes::Bytes;
use proptest::prelude::*;
use raftcore::confchange::{self, ChangeOp, ConfChange, Transition};
use raftcore::log::RaftLog;
use raftcore::quorum::{JointConfig, MajorityConfig, VoteResult};
use raftcore::tracker::{Inflights, Progress, ProgressState, ProgressTracker};
use raftcore::{ConfState, Entry, EntryKind, LogIndex, MemStorage, NodeId, Snapshot, SnapshotMeta, Storage, StorageError, Term};

/// An entry whose payload names its index and term, so that two entries
/// with the same index and term are equal (the log matching property).
fn entry(index: u64, term: u64) -> Entry {
    Entry { term: Term(term), index: LogIndex(index), kind: EntryKind::Normal, data: Bytes::from(format!("{index}@{term}")) }
}

fn entries(first: u64, terms: &[u64]) -> Vec<Entry> {
    terms.iter().enumerate().map(|(i, &t)| entry(first + i as u64, t)).collect()
}

/// The entries of `[lo, hi)` a byte-bounded read returns: a prefix whose
/// size stays within `max_bytes`, but never empty when the range is not.
fn byte_bounded(all: Vec<Entry>, max_bytes: u64) -> Vec<Entry> {
    let mut total = 0;
    let mut out = Vec::new();
    for e in all {
        total += e.size_bytes();
        if !out.is_empty() && total > max_bytes {
            break;
        }
        out.push(e);
    }
    out
}

// ---- MemStorage ----------------------------------------------------------------------------

/// The model of a stored log: everything up to `snapshot_index` is
/// compacted; `terms[i]` is the term of index `snapshot_index + 1 + i`.
#[derive(Clone, Debug)]
struct StoredModel {
    snapshot_index: u64,
    snapshot_term: u64,
    terms: Vec<u64>,
}

impl StoredModel {
    fn last(&self) -> u64 {
        self.snapshot_index + self.terms.len() as u64
    }

    fn term(&self, index: u64) -> Option<u64> {
        if index == self.snapshot_index {
            return Some(self.snapshot_term);
        }
        if index < self.snapshot_index || index > self.last() {
            return None;
        }
        Some(self.terms[(index - self.snapshot_index - 1) as usize])
    }

    fn slice(&self, lo: u64, hi: u64) -> Vec<Entry> {
        (lo..hi).map(|i| entry(i, self.term(i).expect("in range"))).collect()
    }
}

#[derive(Clone, Debug)]
enum StorageOp {
    /// Append `count` entries starting `back` entries before the end (the
    /// overwritten suffix is dropped), with terms `bump` above the entry before.
    Append { back: u64, count: u64, bump: u64 },
    Compact { pick: u64 },
    Read { lo: u64, hi: u64, max_bytes: u64 },
}

fn storage_op() -> impl Strategy<Value = StorageOp> {
    prop_oneof![
        4 => (0..8u64, 1..6u64, 0..3u64).prop_map(|(back, count, bump)| StorageOp::Append { back, count, bump }),
        1 => any::<u64>().prop_map(|pick| StorageOp::Compact { pick }),
        2 => (any::<u64>(), any::<u64>(), 0..200u64).prop_map(|(lo, hi, max_bytes)| StorageOp::Read { lo, hi, max_bytes }),
    ]
}

fn check_storage(s: &MemStorage, m: &StoredModel) {
    assert_eq!(s.first_index(), LogIndex(m.snapshot_index + 1));
    assert_eq!(s.last_index(), LogIndex(m.last()));
    for i in m.snapshot_index..=m.last() {
        assert_eq!(s.term(LogIndex(i)), Ok(Term(m.term(i).expect("in range"))), "term of {i}");
    }
    if m.snapshot_index > 0 {
        assert_eq!(s.term(LogIndex(m.snapshot_index - 1)), Err(StorageError::Compacted(LogIndex(m.snapshot_index - 1))));
    }
    assert_eq!(s.term(LogIndex(m.last() + 1)), Err(StorageError::Unavailable(LogIndex(m.last() + 1))));
    let all = s.entries(s.first_index(), s.last_index().next(), u64::MAX).expect("whole log");
    assert_eq!(all, m.slice(m.snapshot_index + 1, m.last() + 1));
    assert_eq!(s.stored_entries(), &all[..]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// `MemStorage` behaves like a vector with a compacted prefix: appends
    /// replace the suffix they overlap, compaction keeps the term of its
    /// index, and byte-bounded reads return a non-empty prefix within budget.
    #[test]
    fn mem_storage_matches_vector_model(ops in prop::collection::vec(storage_op(), 1..60)) {
        let mut s = MemStorage::default();
        let mut m = StoredModel { snapshot_index: 0, snapshot_term: 0, terms: Vec::new() };
        for op in ops {
            match op {
                StorageOp::Append { back, count, bump } => {
                    let first = m.last() + 1 - back.min(m.terms.len() as u64);
                    let term = m.term(first - 1).expect("joins the log") + bump;
                    let new = entries(first, &vec![term; count as usize]);
                    s.append(&new);
                    m.terms.truncate((first - m.snapshot_index - 1) as usize);
                    m.terms.extend(std::iter::repeat_n(term, count as usize));
                }
                StorageOp::Compact { pick } => {
                    let index = m.snapshot_index + pick % (m.terms.len() as u64 + 1);
                    s.compact(LogIndex(index));
                    if index > m.snapshot_index {
                        m.snapshot_term = m.term(index).expect("in the log");
                        m.terms.drain(..(index - m.snapshot_index) as usize);
                        m.snapshot_index = index;
                    }
                }
                StorageOp::Read { lo, hi, max_bytes } => {
                    let span = m.last() + 2 - m.snapshot_index;
                    let lo = m.snapshot_index + lo % span;
                    let hi = (lo + hi % span).min(m.last() + 1);
                    let got = s.entries(LogIndex(lo), LogIndex(hi), max_bytes);
                    if lo <= m.snapshot_index {
                        prop_assert_eq!(got, Err(StorageError::Compacted(LogIndex(lo))));
                    } else {
                        prop_assert_eq!(got, Ok(byte_bounded(m.slice(lo, hi), max_bytes)));
                    }
                }
            }
            check_storage(&s, &m);
        }
    }
}

// ---- RaftLog ---------------------------------------------------------------------------------

/// The model of a replica's log: `terms[i]` is the term of index `i`
/// (index 0 is the empty log's sentinel, index 1 the bootstrap snapshot);
/// indexes up to `compacted` are gone from storage.
#[derive(Clone, Debug)]
struct LogModel {
    terms: Vec<u64>,
    compacted: u64,
    committed: u64,
    applied: u64,
    persisted: u64,
}

impl LogModel {
    fn last(&self) -> u64 {
        self.terms.len() as u64 - 1
    }

    fn term(&self, index: u64) -> Option<u64> {
        if index < self.compacted || index > self.last() {
            return None;
        }
        Some(self.terms[index as usize])
    }

    /// Replaces everything from `first` on with `new_terms`.
    fn splice(&mut self, first: u64, new_terms: &[u64]) {
        assert!(first > self.committed, "the model never overwrites committed entries");
        self.terms.truncate(first as usize);
        self.terms.extend_from_slice(new_terms);
        self.persisted = self.persisted.min(first - 1);
    }

    /// `RaftLog::find_conflict_by_term` as specified: the largest index at
    /// or below `index` whose term is at most `term`, or the first index
    /// whose term is unknown (with term 0).
    fn find_conflict_by_term(&self, index: u64, term: u64) -> (u64, u64) {
        let mut i = index.min(self.last());
        loop {
            match self.term(i) {
                Some(t) if t > term => i -= 1,
                Some(t) => return (i, t),
                None => return (i, 0),
            }
        }
    }
}

#[derive(Clone, Debug)]
enum LogOp {
    /// A leader appends `count` entries after the committed prefix.
    LeaderAppend { back: u64, count: u64, bump: u64 },
    /// A follower receives entries after `prev`: the first `keep` repeat
    /// what it has (where it has them), the rest carry a newer term.
    FollowerAppend { prev: u64, wrong_prev_term: bool, keep: u64, count: u64, bump: u64, commit: u64 },
    /// The caller persists what the log handed out and reports it durable.
    Persist,
    /// A leader commits `index` if it carries `term` (its own term).
    LeaderCommit { pick: u64, use_entry_term: bool, other_term: u64 },
    Apply { max_bytes: u64 },
    Compact { pick: u64 },
    Query { index: u64, term: u64 },
}

fn log_op() -> impl Strategy<Value = LogOp> {
    prop_oneof![
        3 => (0..6u64, 1..6u64, 0..3u64).prop_map(|(back, count, bump)| LogOp::LeaderAppend { back, count, bump }),
        4 => (any::<u64>(), prop::bool::weighted(0.2), 0..6u64, 0..6u64, 0..3u64, any::<u64>())
            .prop_map(|(prev, wrong_prev_term, keep, count, bump, commit)| LogOp::FollowerAppend { prev, wrong_prev_term, keep, count, bump, commit }),
        3 => Just(LogOp::Persist),
        2 => (any::<u64>(), prop::bool::weighted(0.7), 0..8u64).prop_map(|(pick, use_entry_term, other_term)| LogOp::LeaderCommit { pick, use_entry_term, other_term }),
        2 => (0..200u64).prop_map(|max_bytes| LogOp::Apply { max_bytes }),
        1 => any::<u64>().prop_map(|pick| LogOp::Compact { pick }),
        2 => (0..80u64, 0..10u64).prop_map(|(index, term)| LogOp::Query { index, term }),
    ]
}

fn bootstrap_log() -> (RaftLog<MemStorage>, LogModel) {
    let storage = MemStorage::new(ConfState { voters: vec![NodeId(1)], ..Default::default() });
    let log = RaftLog::new(storage, LogIndex(1));
    let model = LogModel { terms: vec![0, 1], compacted: 1, committed: 1, applied: 1, persisted: 1 };
    (log, model)
}

fn apply_follower_append(log: &mut RaftLog<MemStorage>, m: &mut LogModel, op: (u64, bool, u64, u64, u64, u64)) {
    let (prev, wrong_prev_term, keep, count, bump, commit) = op;
    // prev in [committed, last + 1]: the leader never sends below its
    // match with us, which is at least our commit index.
    let prev = m.committed + prev % (m.last() - m.committed + 2);
    let prev_term = match m.term(prev) {
        Some(t) if wrong_prev_term => t + 1,
        Some(t) => t,
        None => m.terms.last().copied().unwrap_or(0),
    };
    let mut new_terms = Vec::new();
    let mut top = prev_term;
    for i in 0..count {
        let index = prev + 1 + i;
        let t = match m.term(index) {
            Some(t) if i < keep => t,
            _ => top + bump,
        };
        top = top.max(t);
        new_terms.push(t);
    }
    let last_new = prev + count;
    let commit = commit % (last_new + 2);
    let got = log.maybe_append(LogIndex(prev), Term(prev_term), LogIndex(commit), entries(prev + 1, &new_terms));
    if m.term(prev) != Some(prev_term) {
        assert_eq!(got, None, "append after a mismatching ({prev}, {prev_term}) was accepted");
        return;
    }
    assert_eq!(got, Some(LogIndex(last_new)));
    let conflict = new_terms.iter().enumerate().find(|&(i, &t)| m.term(prev + 1 + i as u64) != Some(t));
    if let Some((at, _)) = conflict {
        m.splice(prev + 1 + at as u64, &new_terms[at..]);
    }
    m.committed = m.committed.max(commit.min(last_new));
}

fn check_log(log: &RaftLog<MemStorage>, m: &LogModel) {
    assert_eq!(log.last_index(), LogIndex(m.last()));
    assert_eq!(log.first_index(), LogIndex(m.compacted + 1));
    assert_eq!((log.committed, log.applied, log.persisted), (LogIndex(m.committed), LogIndex(m.applied), LogIndex(m.persisted)));
    for i in m.compacted..=m.last() {
        assert_eq!(log.term(LogIndex(i)), Ok(Term(m.terms[i as usize])), "term of {i}");
    }
    assert_eq!(log.term(LogIndex(m.compacted - 1)), Err(StorageError::Compacted(LogIndex(m.compacted - 1))));
    assert_eq!(log.term(LogIndex(m.last() + 1)), Err(StorageError::Unavailable(LogIndex(m.last() + 1))));
    assert_eq!(log.last_term(), Term(m.terms[m.last() as usize]));
    let all = log.entries_from(log.first_index(), 1 << 20, u64::MAX).expect("readable");
    let want: Vec<Entry> = (m.compacted + 1..=m.last()).map(|i| entry(i, m.terms[i as usize])).collect();
    assert_eq!(all, want);
    assert_eq!(log.is_all_stable(), m.persisted == m.last());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// `RaftLog` over `MemStorage` against a vector of terms: leader
    /// appends, follower appends with conflict detection and truncation,
    /// persistence acknowledgements, commit by the leader's rule (§5.4.2),
    /// application bounded by bytes, compaction, and the rejection hint.
    #[test]
    fn raft_log_matches_vector_model(ops in prop::collection::vec(log_op(), 1..60)) {
        let (mut log, mut m) = bootstrap_log();
        for op in ops {
            match op {
                LogOp::LeaderAppend { back, count, bump } => {
                    let first = m.last() + 1 - back.min(m.last() - m.committed);
                    let term = m.terms[(first - 1) as usize] + bump;
                    let new_terms = vec![term; count as usize];
                    prop_assert_eq!(log.append(&entries(first, &new_terms)), LogIndex(first + count - 1));
                    m.splice(first, &new_terms);
                }
                LogOp::FollowerAppend { prev, wrong_prev_term, keep, count, bump, commit } => {
                    apply_follower_append(&mut log, &mut m, (prev, wrong_prev_term, keep, count, bump, commit));
                }
                LogOp::Persist => {
                    let handed = log.take_unhanded_entries();
                    prop_assert!(!log.has_unhanded_entries());
                    if let Some(last) = handed.last().cloned() {
                        prop_assert_eq!(last.index, LogIndex(m.last()), "the handed-out suffix reaches the end");
                        log.storage.append(&handed);
                        log.stable_to(last.index, last.term);
                    }
                    m.persisted = m.last();
                }
                LogOp::LeaderCommit { pick, use_entry_term, other_term } => {
                    let index = m.committed + pick % (m.last() - m.committed + 1);
                    let term = if use_entry_term { m.terms[index as usize] } else { other_term };
                    let committed = log.maybe_commit(LogIndex(index), Term(term));
                    let want = index > m.committed && m.terms[index as usize] == term;
                    prop_assert_eq!(committed, want, "maybe_commit({}, {})", index, term);
                    if want {
                        m.committed = index;
                    }
                }
                LogOp::Apply { max_bytes } => {
                    let hi = m.committed.min(m.persisted);
                    prop_assert_eq!(log.has_next_committed(), m.applied < hi);
                    let got = log.next_committed(max_bytes).expect("readable");
                    let want: Vec<Entry> = (m.applied + 1..=hi).map(|i| entry(i, m.terms[i as usize])).collect();
                    prop_assert_eq!(&got, &byte_bounded(want, max_bytes));
                    if let Some(last) = got.last() {
                        log.applied_to(last.index);
                        m.applied = last.index.get();
                    }
                }
                LogOp::Compact { pick } => {
                    let top = m.applied.min(m.persisted);
                    let index = m.compacted + pick % (top - m.compacted + 1);
                    log.storage.compact(LogIndex(index));
                    m.compacted = m.compacted.max(index);
                }
                LogOp::Query { index, term } => {
                    let (i, t) = log.find_conflict_by_term(LogIndex(index), Term(term));
                    prop_assert_eq!((i.get(), t.get()), m.find_conflict_by_term(index, term), "find_conflict_by_term({}, {})", index, term);
                    let (last, last_term) = (m.last(), m.terms[m.last() as usize]);
                    let up_to_date = term > last_term || (term == last_term && index >= last);
                    prop_assert_eq!(log.is_up_to_date(LogIndex(index), Term(term)), up_to_date);
                    prop_assert_eq!(log.match_term(LogIndex(index), Term(term)), m.term(index) == Some(term));
                }
            }
            check_log(&log, &m);
        }
    }
}

/// A follower append that would overwrite a committed entry is a bug in the
/// leader; the log refuses it loudly rather than lose the entry.
#[test]
fn maybe_append_refuses_to_overwrite_committed_entries() {
    let (mut log, _) = bootstrap_log();
    assert_eq!(log.maybe_append(LogIndex(1), Term(1), LogIndex(3), entries(2, &[2, 2])), Some(LogIndex(3)));
    assert_eq!(log.committed, LogIndex(3));
    let overwrite = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| log.maybe_append(LogIndex(1), Term(1), LogIndex(1), entries(2, &[3]))));
    assert!(overwrite.is_err(), "a conflict at or below the commit index was accepted");
}

// ---- Quorums and the progress tracker ----------------------------------------------------

const IDS_MAX: u64 = 9;

/// A configuration over ids 1..=9 from bit masks: voters (non-empty),
/// outgoing voters (possibly empty) and learners (disjoint from both),
/// each id's matched index, and each id's last-heard tick.
#[derive(Clone, Debug)]
struct TrackerCase {
    voters: Vec<NodeId>,
    outgoing: Vec<NodeId>,
    learners: Vec<NodeId>,
    matched: Vec<u64>,
    heard: Vec<u64>,
}

fn from_mask(mask: u16) -> Vec<NodeId> {
    (1..=IDS_MAX).filter(|i| mask & (1 << i) != 0).map(NodeId).collect()
}

fn tracker_case(joint: bool) -> impl Strategy<Value = TrackerCase> {
    let id_bits = (1u16 << (IDS_MAX + 1)) - 2;
    (1..=id_bits, 0..=id_bits, 0..=id_bits, prop::collection::vec(0..50u64, IDS_MAX as usize + 1), prop::collection::vec(0..30u64, IDS_MAX as usize + 1))
        .prop_filter("voters must not be empty", move |(v, _, _, _, _)| v & id_bits != 0)
        .prop_map(move |(v, o, l, matched, heard)| {
            let (v, o) = (v & id_bits, if joint { o & id_bits } else { 0 });
            TrackerCase { voters: from_mask(v), outgoing: from_mask(o), learners: from_mask(l & !(v | o) & id_bits), matched, heard }
        })
}

/// The median rule: sorted descending, the value at position n / 2 is the
/// largest reached by a majority.
fn median_commit(voters: &[NodeId], matched: &[u64]) -> u64 {
    if voters.is_empty() {
        return u64::MAX;
    }
    let mut v: Vec<u64> = voters.iter().map(|id| matched[id.0 as usize]).collect();
    v.sort_unstable_by(|a, b| b.cmp(a));
    v[v.len() / 2]
}

/// The definition itself: the largest value that a majority has reached.
fn majority_reached(voters: &[NodeId], matched: &[u64]) -> u64 {
    let quorum = voters.len() / 2 + 1;
    (0..=50).rev().find(|&x| voters.iter().filter(|id| matched[id.0 as usize] >= x).count() >= quorum).unwrap_or(0)
}

fn build_tracker(c: &TrackerCase) -> ProgressTracker {
    let cs = ConfState { voters: c.voters.clone(), voters_outgoing: c.outgoing.clone(), learners: c.learners.clone(), ..Default::default() };
    let mut t = ProgressTracker::from_conf_state(&cs, LogIndex(51));
    for id in t.member_ids() {
        let pr = t.get_mut(id).expect("member");
        pr.matched = LogIndex(c.matched[id.0 as usize]);
        pr.last_heard_tick = c.heard[id.0 as usize];
    }
    t
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A majority configuration commits the median of its voters' match
    /// indexes; learners never count.
    #[test]
    fn commit_index_is_the_majority_median(c in tracker_case(false)) {
        let t = build_tracker(&c);
        let want = median_commit(&c.voters, &c.matched);
        prop_assert_eq!(want, majority_reached(&c.voters, &c.matched));
        prop_assert_eq!(t.committed_index(), LogIndex(want));
        let members = t.member_ids();
        prop_assert!(c.learners.iter().all(|l| members.contains(l) && !t.is_voter(*l)));
    }

    /// A joint configuration commits the smaller of what each half commits.
    #[test]
    fn joint_commit_index_is_the_minimum_of_both_majorities(c in tracker_case(true)) {
        let t = build_tracker(&c);
        let incoming = median_commit(&c.voters, &c.matched);
        let want = if c.outgoing.is_empty() { incoming } else { incoming.min(median_commit(&c.outgoing, &c.matched)) };
        prop_assert_eq!(t.committed_index(), LogIndex(want));
        prop_assert_eq!(t.voters.is_joint(), !c.outgoing.is_empty());
    }

    /// Elections and quorum activity: won with a majority of yes in every
    /// half, lost once a half cannot reach one, pending otherwise.
    #[test]
    fn votes_and_activity_follow_majority_counting(c in tracker_case(true), answers in prop::collection::vec(0..3u8, IDS_MAX as usize + 1), since in 0..30u64) {
        let vote_of = |id: NodeId| match answers[id.0 as usize] { 0 => None, 1 => Some(true), _ => Some(false) };
        let half = |voters: &[NodeId]| {
            let yes = voters.iter().filter(|v| vote_of(**v) == Some(true)).count();
            let open = voters.iter().filter(|v| vote_of(**v).is_none()).count();
            let quorum = voters.len() / 2 + 1;
            if voters.is_empty() || yes >= quorum { VoteResult::Won } else if yes + open >= quorum { VoteResult::Pending } else { VoteResult::Lost }
        };
        let (a, b) = (half(&c.voters), half(&c.outgoing));
        let want = if a == VoteResult::Lost || b == VoteResult::Lost { VoteResult::Lost } else if a == VoteResult::Won && b == VoteResult::Won { VoteResult::Won } else { VoteResult::Pending };
        let joint = JointConfig { incoming: MajorityConfig::new(c.voters.clone()), outgoing: MajorityConfig::new(c.outgoing.clone()) };
        prop_assert_eq!(joint.vote_result(vote_of), want);
        prop_assert_eq!(MajorityConfig::new(c.voters.clone()).vote_result(vote_of), a);

        let t = build_tracker(&c);
        let self_id = c.voters[0];
        let active = |id: &NodeId| *id == self_id || (c.heard[id.0 as usize] != 0 && c.heard[id.0 as usize] >= since);
        let half_active = |voters: &[NodeId]| voters.is_empty() || voters.iter().filter(|v| active(v)).count() > voters.len() / 2;
        prop_assert_eq!(t.quorum_active(&t.voters, self_id, since), half_active(&c.voters) && half_active(&c.outgoing));
    }
}

#[derive(Clone, Debug)]
enum InflightOp {
    Add { gap: u64 },
    FreeTo { back: u64 },
    FreeFirst,
    Reset,
}

fn inflight_op() -> impl Strategy<Value = InflightOp> {
    prop_oneof![
        6 => (0..4u64).prop_map(|gap| InflightOp::Add { gap }),
        3 => (0..20u64).prop_map(|back| InflightOp::FreeTo { back }),
        1 => Just(InflightOp::FreeFirst),
        1 => Just(InflightOp::Reset),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The inflight window holds at most `window` appends, frees them in
    /// order, and is full exactly when it holds `window`.
    #[test]
    fn inflight_window_is_bounded_and_ordered(window in 1..16usize, ops in prop::collection::vec(inflight_op(), 1..100)) {
        let mut inf = Inflights::default();
        let mut model: VecDeque<u64> = VecDeque::new();
        let mut next = 1u64;
        for op in ops {
            match op {
                InflightOp::Add { gap } => {
                    if inf.is_full(window) {
                        prop_assert_eq!(model.len(), window);
                        continue;
                    }
                    next += gap;
                    inf.add(LogIndex(next), window);
                    model.push_back(next);
                }
                InflightOp::FreeTo { back } => {
                    let to = next.saturating_sub(back);
                    inf.free_to(LogIndex(to));
                    while model.front().is_some_and(|&f| f <= to) {
                        model.pop_front();
                    }
                }
                InflightOp::FreeFirst => {
                    inf.free_first();
                    model.pop_front();
                }
                InflightOp::Reset => {
                    inf.reset();
                    model.clear();
                }
            }
            prop_assert_eq!(inf.len(), model.len());
            prop_assert!(inf.len() <= window);
            prop_assert_eq!(inf.is_full(window), model.len() >= window);
            prop_assert_eq!(inf.is_empty(), model.is_empty());
        }
    }
}

#[test]
fn inflight_window_overflow_panics() {
    let mut inf = Inflights::default();
    inf.add(LogIndex(1), 2);
    inf.add(LogIndex(2), 2);
    let overflow = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inf.add(LogIndex(3), 2)));
    assert!(overflow.is_err(), "a full window took another append");
}

#[derive(Clone, Debug)]
enum ProgressOp {
    /// The follower accepted entries up to `matched + ahead - 3` (may be stale).
    Accept { ahead: u64 },
    /// The follower rejected an append; `exact` uses the last one sent.
    Reject { exact: bool, rejected: u64, probe: u64 },
    /// The leader sends an append of `count` entries if not paused.
    Send { count: u64 },
    BecomeProbe,
    BecomeReplicate,
    BecomeSnapshot { ahead: u64 },
    HeartbeatAck,
}

fn progress_op() -> impl Strategy<Value = ProgressOp> {
    prop_oneof![
        4 => (0..12u64).prop_map(|ahead| ProgressOp::Accept { ahead }),
        3 => (any::<bool>(), 0..40u64, 0..40u64).prop_map(|(exact, rejected, probe)| ProgressOp::Reject { exact, rejected, probe }),
        4 => (0..5u64).prop_map(|count| ProgressOp::Send { count }),
        1 => Just(ProgressOp::BecomeProbe),
        1 => Just(ProgressOp::BecomeReplicate),
        1 => (0..20u64).prop_map(|ahead| ProgressOp::BecomeSnapshot { ahead }),
        1 => Just(ProgressOp::HeartbeatAck),
    ]
}

fn snapshot_at(index: u64) -> Snapshot {
    Snapshot { meta: SnapshotMeta { index: LogIndex(index), term: Term(1), conf_state: ConfState::default() }, data: Bytes::new() }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Probe / replicate / snapshot transitions keep `matched < next`, never
    /// lower `matched`, ignore stale rejections, and pause as each state says.
    #[test]
    fn progress_transitions_keep_their_invariants(window in 1..8usize, ops in prop::collection::vec(progress_op(), 1..80)) {
        let mut pr = Progress::new(NodeId(2), LogIndex(5), false);
        for op in ops {
            let (matched0, next0, state0) = (pr.matched, pr.next, pr.state);
            match op {
                ProgressOp::Accept { ahead } => {
                    let index = LogIndex((matched0.get() + ahead).saturating_sub(3));
                    let grew = pr.maybe_update(index);
                    prop_assert_eq!(grew, index > matched0);
                    prop_assert_eq!(pr.matched, matched0.max(index));
                    prop_assert!(pr.next >= next0 && pr.next > index);
                    if grew {
                        prop_assert!(!pr.probe_sent);
                    }
                    if pr.state == ProgressState::Replicate {
                        pr.inflights.free_to(index);
                    }
                }
                ProgressOp::Reject { exact, rejected, probe } => {
                    let rejected = if exact { next0.prev() } else { LogIndex(rejected) };
                    let stale = match state0 {
                        ProgressState::Replicate => rejected <= matched0,
                        _ => rejected != next0.prev(),
                    };
                    let changed = pr.maybe_decr_to(rejected, LogIndex(probe));
                    prop_assert_eq!(changed, !stale, "rejection of {:?} in {:?} (matched {:?}, next {:?})", rejected, state0, matched0, next0);
                    if stale {
                        prop_assert_eq!((pr.matched, pr.next, pr.state), (matched0, next0, state0));
                    } else if state0 == ProgressState::Replicate {
                        prop_assert_eq!(pr.next, matched0.next());
                        // As the leader does: back to probing from there.
                        pr.become_probe();
                    } else {
                        prop_assert!(pr.next <= next0 && pr.next > matched0);
                        prop_assert!(!pr.probe_sent);
                    }
                }
                ProgressOp::Send { count } => {
                    if !pr.is_paused(window) {
                        match pr.state {
                            ProgressState::Replicate if count > 0 => {
                                let last = pr.next.plus(count - 1);
                                pr.inflights.add(last, window);
                                pr.next = last.next();
                            }
                            ProgressState::Replicate => {}
                            ProgressState::Probe => pr.probe_sent = true,
                            ProgressState::Snapshot => unreachable!("a snapshot state is always paused"),
                        }
                    }
                }
                ProgressOp::BecomeProbe => {
                    let snapshot = pr.snapshot.as_ref().map(|s| s.snapshot.meta.index);
                    pr.become_probe();
                    let want = snapshot.map_or(matched0, |s| s.max(matched0)).next();
                    prop_assert_eq!((pr.state, pr.next, pr.probe_sent), (ProgressState::Probe, want, false));
                    prop_assert!(pr.snapshot.is_none() && pr.inflights.is_empty());
                }
                ProgressOp::BecomeReplicate => {
                    pr.become_replicate();
                    prop_assert_eq!((pr.state, pr.next), (ProgressState::Replicate, matched0.next()));
                    prop_assert!(pr.inflights.is_empty() && !pr.is_paused(window));
                }
                ProgressOp::BecomeSnapshot { ahead } => {
                    pr.become_snapshot(snapshot_at(matched0.get() + ahead));
                    prop_assert!(pr.snapshot.is_some() && pr.inflights.is_empty());
                }
                ProgressOp::HeartbeatAck => pr.probe_sent = false,
            }
            prop_assert!(pr.matched < pr.next, "matched {:?} not below next {:?} after {:?}", pr.matched, pr.next, pr.state);
            prop_assert!(pr.matched >= matched0, "matched went back");
            prop_assert_eq!(pr.snapshot.is_some(), pr.state == ProgressState::Snapshot);
            let paused = match pr.state {
                ProgressState::Probe => pr.probe_sent,
                ProgressState::Replicate => pr.inflights.len() >= window,
                ProgressState::Snapshot => true,
            };
            prop_assert_eq!(pr.is_paused(window), paused);
        }
    }
}

// ---- Membership changes ---------------------------------------------------------------------

fn conf_change() -> impl Strategy<Value = ConfChange> {
    let transition = prop_oneof![Just(Transition::Auto), Just(Transition::JointImplicit), Just(Transition::JointExplicit)];
    let op = prop_oneof![Just(ChangeOp::AddVoter), Just(ChangeOp::AddLearner), Just(ChangeOp::Remove)];
    (transition, prop::collection::vec((op, 0..7u64), 0..5)).prop_map(|(transition, changes)| ConfChange { transition, changes: changes.into_iter().map(|(op, id)| (op, NodeId(id))).collect() })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Every change survives its byte encoding; every configuration a change
    /// produces keeps voters and learners apart, has voters, and is joint
    /// exactly when the change enters a joint configuration, whose outgoing
    /// half is the old voters.
    #[test]
    fn conf_changes_round_trip_and_keep_invariants(voters in 1u16..64, learners in 0u16..64, cc in conf_change(), leave_after in any::<bool>()) {
        prop_assert_eq!(ConfChange::decode(&cc.encode()), Ok(cc.clone()));
        let cs = ConfState { voters: from_mask(voters << 1), learners: from_mask((learners & !voters) << 1), ..Default::default() };
        let Ok(next) = confchange::apply(&cs, &cc) else { return Ok(()) };
        prop_assert!(!next.voters.is_empty());
        for l in next.learners.iter() {
            prop_assert!(!next.voters.contains(l) && !next.voters_outgoing.contains(l));
        }
        prop_assert_eq!(!next.voters_outgoing.is_empty(), cc.enters_joint(&cs));
        if next.voters_outgoing.is_empty() {
            prop_assert!(next.learners_next.is_empty());
            return Ok(());
        }
        prop_assert_eq!(&next.voters_outgoing, &cs.voters);
        prop_assert_eq!(next.auto_leave, cc.transition != Transition::JointExplicit);
        if leave_after {
            let left = confchange::apply(&next, &ConfChange::leave_joint()).expect("a joint configuration can be left");
            prop_assert!(left.voters_outgoing.is_empty() && left.learners_next.is_empty());
            prop_assert_eq!(&left.voters, &next.voters);
            for l in next.learners_next.iter() {
                prop_assert!(left.learners.contains(l));
            }
        }
    }
}
