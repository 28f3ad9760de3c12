//! Messages exchanged between the replicas of one group. Every input from a
//! peer is one of these; the engine carries them (batched per peer) and hands
//! them back through `RawNode::step`.

use bytes::Bytes;

use crate::confchange::{membership_fault, MembershipFault};
use crate::limits::{LOG_INDEX_MAX, TERM_MAX};
use crate::types::{Entry, LogIndex, NodeId, SnapshotMeta, Term};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub from: NodeId,
    pub to: NodeId,
    /// The sender's term (for pre-votes: the term it would campaign in).
    pub term: Term,
    pub body: MessageBody,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageBody {
    /// Leader → follower: entries after (`prev_index`, `prev_term`).
    Append {
        prev_index: LogIndex,
        prev_term: Term,
        entries: Vec<Entry>,
        commit: LogIndex,
    },
    /// Follower → leader. Accepted: the follower's log matches up to `index`.
    /// Rejected: `index` is the rejected `prev_index`, `hint` a guess of the
    /// longest matching prefix so the leader can back off in one step.
    AppendResponse {
        index: LogIndex,
        reject: Option<RejectHint>,
    },
    /// Candidate → voter. `pre` marks a pre-vote (nobody's term changes);
    /// `transfer` marks a campaign forced by leadership transfer, which voters
    /// honour even though they heard from a leader recently.
    RequestVote {
        pre: bool,
        transfer: bool,
        last_index: LogIndex,
        last_term: Term,
    },
    VoteResponse {
        pre: bool,
        granted: bool,
    },
    /// Leader → follower. `round` numbers the leader's heartbeat rounds; the
    /// echo in the response confirms leadership for reads and the lease.
    /// Round 0 asks for no response: the leader heard from the follower
    /// lately and no read needs the round.
    Heartbeat {
        commit: LogIndex,
        round: u64,
    },
    HeartbeatResponse {
        round: u64,
    },
    /// Leader → follower: one chunk of a snapshot; `offset` is the chunk's
    /// position in the snapshot data, `last` marks the final chunk.
    SnapshotChunk {
        /// Boxed: the other messages, sent far more often, need not carry
        /// its size (every message was 192 bytes with it inline).
        meta: Box<SnapshotMeta>,
        offset: u64,
        data: Bytes,
        last: bool,
    },
    /// Follower → leader: chunks up to `next_offset` were received; `done`
    /// when the snapshot was installed; `reject` when the transfer must restart.
    SnapshotResponse {
        index: LogIndex,
        next_offset: u64,
        done: bool,
        reject: bool,
    },
    /// Leader → transfer target: campaign now, ignoring the election timer.
    TimeoutNow,
    /// Follower → leader: a read request to confirm via the leader.
    ReadIndex {
        request_id: u64,
    },
    /// Leader → follower: the read may be served once `index` is applied.
    ReadIndexResponse {
        request_id: u64,
        index: LogIndex,
    },
}

/// What makes a message impossible from a correct peer, whatever the
/// receiver's state (`Message::malformed`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("term {0} is beyond {TERM_MAX}")]
    TermTooLarge(Term),
    #[error("{what} {index} is beyond {LOG_INDEX_MAX}")]
    IndexTooLarge { what: &'static str, index: LogIndex },
    #[error("{what} {found} is above the sender's term {sender}")]
    TermAboveSender { what: &'static str, found: Term, sender: Term },
    #[error("append entry {position} has index {found}, expected {expected} (entries follow prev_index one by one)")]
    EntryIndex { position: usize, found: LogIndex, expected: LogIndex },
    #[error("append entry {position} has term {found}, outside {low}..={high} (terms rise from prev_term to the sender's term)")]
    EntryTerm { position: usize, found: Term, low: Term, high: Term },
    #[error("snapshot membership: {0}")]
    Membership(MembershipFault),
}

impl Message {
    /// Why this message cannot have come from a correct peer, if it cannot:
    /// terms and indices within `TERM_MAX` and `LOG_INDEX_MAX`, no term it
    /// names above the sender's own, an append's entries following
    /// `prev_index` one by one with terms rising from `prev_term`, and a
    /// snapshot's membership one raftcore could have produced.
    /// `RawNode::step` drops such messages (storing a gap, a future term or
    /// a broken membership would corrupt the replica, and indices near
    /// `u64::MAX` overflow); the engine's transport refuses the frame that
    /// carries one.
    pub fn malformed(&self) -> Option<Malformed> {
        let sender = self.term;
        if sender.0 > TERM_MAX {
            return Some(Malformed::TermTooLarge(sender));
        }
        let index_max = |what: &'static str, index: LogIndex| (index.0 > LOG_INDEX_MAX).then_some(Malformed::IndexTooLarge { what, index });
        let term_max = |what: &'static str, found: Term| (found > sender).then_some(Malformed::TermAboveSender { what, found, sender });
        match &self.body {
            MessageBody::Append { prev_index, prev_term, entries, commit } => {
                let last = LogIndex(prev_index.0.saturating_add(entries.len() as u64));
                if let Some(m) = index_max("append prev_index", *prev_index).or(index_max("append last index", last)).or(index_max("append commit", *commit)).or(term_max("append prev_term", *prev_term)) {
                    return Some(m);
                }
                let mut low = *prev_term;
                for (position, e) in entries.iter().enumerate() {
                    let expected = prev_index.plus(position as u64 + 1);
                    if e.index != expected {
                        return Some(Malformed::EntryIndex { position, found: e.index, expected });
                    }
                    if e.term < low || e.term > sender {
                        return Some(Malformed::EntryTerm { position, found: e.term, low, high: sender });
                    }
                    low = e.term;
                }
                None
            }
            MessageBody::AppendResponse { index, reject } => index_max("append answer index", *index)
                .or_else(|| reject.and_then(|h| index_max("rejection hint index", h.index).or(term_max("rejection hint term", h.term)))),
            MessageBody::RequestVote { last_index, last_term, .. } => index_max("vote last_index", *last_index).or(term_max("vote last_term", *last_term)),
            MessageBody::Heartbeat { commit, .. } => index_max("heartbeat commit", *commit),
            MessageBody::SnapshotChunk { meta, .. } => index_max("snapshot index", meta.index)
                .or(term_max("snapshot term", meta.term))
                .or_else(|| membership_fault(&meta.conf_state).map(Malformed::Membership)),
            MessageBody::SnapshotResponse { index, .. } => index_max("snapshot answer index", *index),
            MessageBody::ReadIndexResponse { index, .. } => index_max("read index", *index),
            MessageBody::VoteResponse { .. } | MessageBody::HeartbeatResponse { .. } | MessageBody::TimeoutNow | MessageBody::ReadIndex { .. } => None,
        }
    }
}

/// The round of a heartbeat whose follower is not to answer (rounds count
/// from 1).
pub const NO_ANSWER_ROUND: u64 = 0;

/// What a message does, for counting traffic (see `MessageBody::traffic`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Traffic {
    /// An append that carries entries.
    Entries,
    /// An append without entries: a probe, or a commit index alone.
    EmptyAppend,
    AppendAnswer,
    /// A heartbeat the follower answers (a read or the lease needs the
    /// round, or the leader has not heard from it lately).
    HeartbeatAsking,
    /// A heartbeat that only carries the commit and keeps the follower's
    /// election timer from running out.
    Heartbeat,
    HeartbeatAnswer,
    /// (Pre-)votes, their answers and leadership transfers.
    Election,
    SnapshotChunk,
    SnapshotAnswer,
    /// ReadIndex requests of followers and their answers.
    ReadIndex,
}

impl Traffic {
    pub const COUNT: usize = 10;
    pub const ALL: [Traffic; Traffic::COUNT] = [
        Traffic::Entries,
        Traffic::EmptyAppend,
        Traffic::AppendAnswer,
        Traffic::HeartbeatAsking,
        Traffic::Heartbeat,
        Traffic::HeartbeatAnswer,
        Traffic::Election,
        Traffic::SnapshotChunk,
        Traffic::SnapshotAnswer,
        Traffic::ReadIndex,
    ];

    /// A snake_case name, for metrics.
    pub fn name(self) -> &'static str {
        match self {
            Traffic::Entries => "appends",
            Traffic::EmptyAppend => "empty_appends",
            Traffic::AppendAnswer => "append_answers",
            Traffic::HeartbeatAsking => "heartbeats_asking",
            Traffic::Heartbeat => "heartbeats",
            Traffic::HeartbeatAnswer => "heartbeat_answers",
            Traffic::Election => "elections",
            Traffic::SnapshotChunk => "snapshot_chunks",
            Traffic::SnapshotAnswer => "snapshot_answers",
            Traffic::ReadIndex => "read_index",
        }
    }
}

/// The rejecting follower's guess of where its log last agrees with the
/// leader's: its entry at `index` has `term`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RejectHint {
    pub index: LogIndex,
    pub term: Term,
}

impl MessageBody {
    /// Whether a message of this kind depends only on state that is already
    /// durable when it is produced, and may leave before the `Ready` that
    /// carries it is persisted. Leader traffic qualifies: a leader's term and
    /// vote were durable before it could win, and its own entries count
    /// toward commit only once persisted. Everything a follower or candidate
    /// says (votes, acks) must wait for its `Ready` to be durable.
    pub fn may_send_before_persist(&self) -> bool {
        matches!(
            self,
            MessageBody::Append { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::SnapshotChunk { .. }
                | MessageBody::TimeoutNow
                | MessageBody::ReadIndexResponse { .. }
        )
    }

    /// What the message does, for counting traffic by kind.
    pub fn traffic(&self) -> Traffic {
        match self {
            MessageBody::Append { entries, .. } if entries.is_empty() => Traffic::EmptyAppend,
            MessageBody::Append { .. } => Traffic::Entries,
            MessageBody::AppendResponse { .. } => Traffic::AppendAnswer,
            MessageBody::Heartbeat { round: NO_ANSWER_ROUND, .. } => Traffic::Heartbeat,
            MessageBody::Heartbeat { .. } => Traffic::HeartbeatAsking,
            MessageBody::HeartbeatResponse { .. } => Traffic::HeartbeatAnswer,
            MessageBody::RequestVote { .. } | MessageBody::VoteResponse { .. } | MessageBody::TimeoutNow => Traffic::Election,
            MessageBody::SnapshotChunk { .. } => Traffic::SnapshotChunk,
            MessageBody::SnapshotResponse { .. } => Traffic::SnapshotAnswer,
            MessageBody::ReadIndex { .. } | MessageBody::ReadIndexResponse { .. } => Traffic::ReadIndex,
        }
    }

    /// A short name for logs and test traces.
    pub fn name(&self) -> &'static str {
        match self {
            MessageBody::Append { .. } => "Append",
            MessageBody::AppendResponse { .. } => "AppendResponse",
            MessageBody::RequestVote { pre: true, .. } => "PreVote",
            MessageBody::RequestVote { .. } => "RequestVote",
            MessageBody::VoteResponse { pre: true, .. } => "PreVoteResponse",
            MessageBody::VoteResponse { .. } => "VoteResponse",
            MessageBody::Heartbeat { .. } => "Heartbeat",
            MessageBody::HeartbeatResponse { .. } => "HeartbeatResponse",
            MessageBody::SnapshotChunk { .. } => "SnapshotChunk",
            MessageBody::SnapshotResponse { .. } => "SnapshotResponse",
            MessageBody::TimeoutNow => "TimeoutNow",
            MessageBody::ReadIndex { .. } => "ReadIndex",
            MessageBody::ReadIndexResponse { .. } => "ReadIndexResponse",
        }
    }
}

// Messages are moved through queues and vectors by value many times each;
// a variant that grows them grows every move (see `SnapshotChunk::meta`).
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<Message>() <= 80);

#[cfg(test)]
mod tests {
    use super::*;

    /// Counters are indexed by `Traffic as usize`: `ALL` lists every kind
    /// at its own index, under its own name.
    #[test]
    fn traffic_kinds_index_their_counters() {
        for (i, t) in Traffic::ALL.iter().enumerate() {
            assert_eq!(*t as usize, i, "{t:?}");
        }
        let mut names: Vec<&str> = Traffic::ALL.iter().map(|t| t.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Traffic::COUNT);
    }

    #[test]
    fn heartbeats_that_ask_no_answer_are_told_apart() {
        let hb = |round| MessageBody::Heartbeat { commit: LogIndex(3), round };
        assert_eq!(hb(NO_ANSWER_ROUND).traffic(), Traffic::Heartbeat);
        assert_eq!(hb(7).traffic(), Traffic::HeartbeatAsking);
        let append = |entries: Vec<Entry>| MessageBody::Append { prev_index: LogIndex(1), prev_term: Term(1), entries, commit: LogIndex(1) };
        assert_eq!(append(Vec::new()).traffic(), Traffic::EmptyAppend);
        let entry = Entry { term: Term(1), index: LogIndex(2), kind: crate::types::EntryKind::Normal, data: Bytes::from_static(b"x") };
        assert_eq!(append(vec![entry]).traffic(), Traffic::Entries);
    }

    #[test]
    fn appends_must_follow_prev_index_with_rising_terms() {
        let entry = |index: u64, term: u64| Entry { term: Term(term), index: LogIndex(index), kind: crate::types::EntryKind::Normal, data: Bytes::new() };
        let append = |prev_index: u64, prev_term: u64, entries: Vec<Entry>| Message {
            from: NodeId(1),
            to: NodeId(2),
            term: Term(5),
            body: MessageBody::Append { prev_index: LogIndex(prev_index), prev_term: Term(prev_term), entries, commit: LogIndex(0) },
        };
        assert_eq!(append(3, 2, vec![entry(4, 2), entry(5, 4), entry(6, 5)]).malformed(), None);
        assert_eq!(append(3, 2, Vec::new()).malformed(), None);
        assert_eq!(
            append(3, 2, vec![entry(4, 2), entry(9, 2)]).malformed(),
            Some(Malformed::EntryIndex { position: 1, found: LogIndex(9), expected: LogIndex(5) })
        );
        assert_eq!(append(3, 2, vec![entry(3, 2)]).malformed(), Some(Malformed::EntryIndex { position: 0, found: LogIndex(3), expected: LogIndex(4) }));
        assert_eq!(append(3, 2, vec![entry(4, 6)]).malformed(), Some(Malformed::EntryTerm { position: 0, found: Term(6), low: Term(2), high: Term(5) }));
        assert_eq!(append(3, 2, vec![entry(4, 1)]).malformed(), Some(Malformed::EntryTerm { position: 0, found: Term(1), low: Term(2), high: Term(5) }));
        assert_eq!(
            append(3, 2, vec![entry(4, 4), entry(5, 3)]).malformed(),
            Some(Malformed::EntryTerm { position: 1, found: Term(3), low: Term(4), high: Term(5) })
        );
        assert_eq!(append(3, 6, Vec::new()).malformed(), Some(Malformed::TermAboveSender { what: "append prev_term", found: Term(6), sender: Term(5) }));
        let huge = LogIndex(LOG_INDEX_MAX + 1);
        assert_eq!(append(huge.0, 2, Vec::new()).malformed(), Some(Malformed::IndexTooLarge { what: "append prev_index", index: huge }));
        assert_eq!(append(LOG_INDEX_MAX, 2, vec![entry(huge.0, 2)]).malformed(), Some(Malformed::IndexTooLarge { what: "append last index", index: huge }));
        let mut forever = append(3, 2, Vec::new());
        forever.term = Term(u64::MAX);
        assert_eq!(forever.malformed(), Some(Malformed::TermTooLarge(Term(u64::MAX))));

        let chunk = |term: u64, voters: &[u64], learners: &[u64]| Message {
            from: NodeId(1),
            to: NodeId(2),
            term: Term(5),
            body: MessageBody::SnapshotChunk {
                meta: Box::new(SnapshotMeta {
                    index: LogIndex(9),
                    term: Term(term),
                    conf_state: crate::types::ConfState {
                        voters: voters.iter().map(|&v| NodeId(v)).collect(),
                        learners: learners.iter().map(|&v| NodeId(v)).collect(),
                        ..Default::default()
                    },
                }),
                offset: 0,
                data: Bytes::new(),
                last: true,
            },
        };
        assert_eq!(chunk(5, &[1, 2], &[3]).malformed(), None);
        assert_eq!(chunk(6, &[1, 2], &[]).malformed(), Some(Malformed::TermAboveSender { what: "snapshot term", found: Term(6), sender: Term(5) }));
        assert_eq!(chunk(5, &[], &[3]).malformed(), Some(Malformed::Membership(MembershipFault::NoVoters)));
        assert_eq!(chunk(5, &[1, 0], &[]).malformed(), Some(Malformed::Membership(MembershipFault::ZeroId)));
        assert_eq!(chunk(5, &[1, 2, 1], &[]).malformed(), Some(Malformed::Membership(MembershipFault::Duplicate(NodeId(1)))));
        assert_eq!(chunk(5, &[1, 2], &[2]).malformed(), Some(Malformed::Membership(MembershipFault::LearnerAndVoter(NodeId(2)))));
    }
}
