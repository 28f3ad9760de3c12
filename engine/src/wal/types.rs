//! Newtypes the WAL stores: which group, which term, which log position, which
//! segment and which record. Fixed-width on disk; never `usize`.

use std::fmt;

macro_rules! newtype_u64 {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

newtype_u64!(
    /// A Raft group hosted by this core.
    GroupId
);
newtype_u64!(
    /// A Raft term.
    Term
);
newtype_u64!(
    /// A position in one group's Raft log (the first entry has index 1).
    LogIndex
);
newtype_u64!(
    /// The sequence number of a segment file; it names the file.
    SegmentSeq
);
newtype_u64!(
    /// The sequence number of a record; consecutive across segments.
    RecordSeq
);

impl SegmentSeq {
    pub fn next(self) -> SegmentSeq {
        SegmentSeq(self.0 + 1)
    }
}

impl RecordSeq {
    pub fn next(self) -> RecordSeq {
        RecordSeq(self.0 + 1)
    }
}

/// The Raft hard state of one group: what must be durable before a vote or an
/// acknowledgement leaves the node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    pub term: Term,
    pub vote: u64,
    pub commit: LogIndex,
}

/// Where a record lives: segment and byte offset of its header in the segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordLoc {
    pub segment: SegmentSeq,
    pub offset_bytes: u64,
}
