//! The vocabulary of the protocol: terms, indexes, node ids, log entries and
//! the persistent state, as fixed-width newtypes so they cannot be mixed up.

use bytes::Bytes;
use std::fmt;

macro_rules! newtype_u64 {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub u64);

        impl $name {
            pub const ZERO: $name = $name(0);

            #[inline]
            pub const fn get(self) -> u64 {
                self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

newtype_u64!(
    /// A Raft term. Monotonic on every node.
    Term
);
newtype_u64!(
    /// A position in the replicated log; the first entry has index 1, and 0
    /// means "before the log".
    LogIndex
);
newtype_u64!(
    /// A replica's identity inside a group. 0 is never a valid node.
    NodeId
);

impl Term {
    #[inline]
    pub const fn next(self) -> Term {
        Term(self.0 + 1)
    }
}

impl LogIndex {
    #[inline]
    pub const fn next(self) -> LogIndex {
        LogIndex(self.0 + 1)
    }

    /// The index before this one; `LogIndex(0)` has none and stays 0.
    #[inline]
    pub const fn prev(self) -> LogIndex {
        LogIndex(self.0.saturating_sub(1))
    }

    #[inline]
    pub const fn plus(self, n: u64) -> LogIndex {
        LogIndex(self.0 + n)
    }
}

impl NodeId {
    /// "No node": used for "no vote" and "no known leader".
    pub const NONE: NodeId = NodeId(0);

    #[inline]
    pub const fn is_none(self) -> bool {
        self.0 == 0
    }
}

/// What an entry carries: user data for the state machine, or a membership
/// change that raftcore applies itself when the entry is handed out as committed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(u8)]
pub enum EntryKind {
    #[default]
    Normal = 0,
    ConfChange = 1,
}

impl EntryKind {
    pub fn from_u8(byte: u8) -> Option<EntryKind> {
        match byte {
            0 => Some(EntryKind::Normal),
            1 => Some(EntryKind::ConfChange),
            _ => None,
        }
    }
}

/// One log entry. `data` is shared (reference counted), so handing an entry
/// to the persistence path and to several followers does not copy the payload.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Entry {
    pub term: Term,
    pub index: LogIndex,
    pub kind: EntryKind,
    pub data: Bytes,
}

impl Entry {
    /// Bytes this entry counts against size limits (payload plus a fixed header).
    #[inline]
    pub fn size_bytes(&self) -> u64 {
        self.data.len() as u64 + 24
    }
}

/// The state that must be durable before any message that depends on it is
/// sent: the current term, the vote cast in it, and the commit index.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    pub term: Term,
    pub vote: NodeId,
    pub commit: LogIndex,
}

/// The role a replica plays in its group right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

/// Volatile state worth telling the caller about when it changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftState {
    pub leader: NodeId,
    pub role: Role,
}

/// Membership of a group as stored in snapshots: voters of the incoming (and,
/// while joint, outgoing) configuration, learners, and learners that become
/// voters when the joint configuration is left.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfState {
    pub voters: Vec<NodeId>,
    pub voters_outgoing: Vec<NodeId>,
    pub learners: Vec<NodeId>,
    pub learners_next: Vec<NodeId>,
    pub auto_leave: bool,
}

/// What a snapshot covers: the state machine up to and including `index`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotMeta {
    pub index: LogIndex,
    pub term: Term,
    pub conf_state: ConfState,
}

/// A state-machine snapshot: its metadata and its opaque data.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub meta: SnapshotMeta,
    pub data: Bytes,
}

/// A linearizable read that may now be served: every entry up to `index` must
/// be applied before the read of request `request_id` runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadState {
    pub request_id: u64,
    pub index: LogIndex,
}
