//! Errors an operator or the node can meet from the WAL, with the path,
//! offset or group they concern. Bugs are assertions, not variants.

use std::path::PathBuf;
use std::rc::Rc;

use super::scan::ScanError;
use super::types::{GroupId, LogIndex, SegmentSeq};

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("opening WAL: {0}")]
    Scan(#[from] ScanError),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// A write or sync failed earlier: nothing after it can be trusted durable,
    /// so the WAL refuses every later append (restart and recover).
    #[error("WAL failed earlier and accepts no more writes: {0}")]
    Failed(Rc<WalError>),
    #[error("record of {bytes_bound} bytes cannot fit in a segment of {segment_size_bytes} bytes")]
    RecordTooLarge {
        bytes_bound: u64,
        segment_size_bytes: u64,
    },
    #[error("group {group}: entries {lo}..{hi} requested but the log holds {first}..={last}")]
    Unavailable {
        group: GroupId,
        lo: LogIndex,
        hi: LogIndex,
        first: LogIndex,
        last: LogIndex,
    },
    #[error("segment {segment} at offset {offset_bytes}: record read back is corrupt: {what}")]
    CorruptRead {
        segment: SegmentSeq,
        offset_bytes: u64,
        what: String,
    },
    #[error("invalid WAL options: {0}")]
    Options(String),
    /// `submit` refused a batch that no log can hold; nothing was written.
    #[error("batch refused: group {group}: {what}")]
    InvalidBatch { group: GroupId, what: String },
    /// Another `Wal` (in this or another process) holds the directory.
    #[error("WAL directory {} is in use by another process ({holder})", .dir.display())]
    Locked {
        dir: PathBuf,
        /// The lock file, and the holder it names if any.
        holder: String,
    },
    /// The WAL was closed (or its last handle dropped): it takes no batches.
    #[error("WAL is closed")]
    Closed,
}
