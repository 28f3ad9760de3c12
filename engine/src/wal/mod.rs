//! The per-core write-ahead log: one log shared by every Raft group of a core,
//! in fixed-size preallocated segments written with O_DIRECT through io_uring,
//! each write one group commit of rkyv-archived batches, fsynced once.
//!
//! Layout on disk: `docs/wal-format.md`. The format code (`format`, `batch`,
//! `scan`) is the one source of truth for the engine, the bench and
//! `myriad-log`.

pub mod batch;
mod cache;
pub mod error;
pub mod format;
mod gc;
pub mod index;
pub mod io;
pub mod limits;
pub mod lock;
mod open;
mod pipeline;
mod read;
mod replay;
pub mod scan;
pub mod sim;
mod state;
pub mod types;
mod validate;
mod writer;

pub use batch::{Batch, EntryRef};
pub use error::WalError;
pub use gc::PurgeReport;
pub use io::{DmaIo, SyncMode, WalIo};
use lock::DirLock;
pub use read::Entry;
pub use replay::{Kept, ReplayedEntry};
pub use scan::ScanError;
pub use sim::SimIo;
pub use state::{Wal, WalOptions, WalStats};
pub use types::{GroupId, HardState, LogIndex, RecordLoc, RecordSeq, SegmentSeq, Term};

/// What the WAL holds for one group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupInfo {
    /// First entry still held (`last + 1` when the log is empty).
    pub first_index: LogIndex,
    pub last_index: LogIndex,
    pub last_term: Option<Term>,
    /// Entries at or below this were compacted away.
    pub compacted: LogIndex,
    pub hard_state: Option<HardState>,
}

impl Wal<DmaIo> {
    /// Opens (or creates) the WAL in `dir` on the current glommio executor.
    /// Holds the directory's lock (`lock::DirLock`) until `close` or until
    /// the last handle is dropped: a second opener gets `WalError::Locked`.
    pub async fn open_dir(
        dir: impl Into<std::path::PathBuf>,
        opts: WalOptions,
    ) -> Result<Self, WalError> {
        Ok(Wal::open_dir_keeping(dir, opts, 0).await?.0)
    }

    /// `open_dir`, keeping payloads for `replay_entries` (`open_keeping`).
    pub async fn open_dir_keeping(
        dir: impl Into<std::path::PathBuf>,
        opts: WalOptions,
        kept_bytes_max: usize,
    ) -> Result<(Self, Kept), WalError> {
        let dir = dir.into();
        let creating = |source| WalError::Io {
            op: "creating",
            path: dir.clone(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(creating)?;
        // Before recovery: it truncates torn tails and deletes segments.
        let lock = DirLock::acquire(&dir)?;
        let io = DmaIo::new(&dir, opts.sync_mode).map_err(creating)?;
        let (wal, kept) = Wal::open_keeping(io, opts, kept_bytes_max).await?;
        *wal.inner.dir_lock.borrow_mut() = Some(lock);
        Ok((wal, kept))
    }
}

impl<I: WalIo> Wal<I> {
    /// Queues `batch` for the next group commit without waiting; returns its
    /// seq for `wait_durable`. Records are durable in seq order.
    ///
    /// Refuses (`InvalidBatch`, nothing queued) log indexes outside
    /// `1..=LOG_INDEX_MAX` (compactions: from 0). An entry beyond its group's
    /// `last + 1` restarts the group's log there; without a compaction mark
    /// through the entry before it in the batch, the record gets one, so
    /// that recovery can tell the restart from lost entries.
    pub fn submit(&self, batch: &Batch) -> Result<RecordSeq, WalError> {
        let inner = &self.inner;
        let mut st = inner.st.borrow_mut();
        if let Some(e) = &st.failed {
            return Err(WalError::Failed(e.clone()));
        }
        if st.closing {
            return Err(WalError::Closed);
        }
        let checked = validate::check_batch(&st.tails, batch)?;
        let with_marks;
        let batch = if checked.implied_compactions.is_empty() {
            batch
        } else {
            let mut b = batch.clone();
            for &(group, index) in &checked.implied_compactions {
                tracing::warn!(%group, %index, "log jumps past its end: recording a compaction mark");
                b.compact(group, index);
            }
            with_marks = b;
            &with_marks
        };
        let synced = st.durable_seq;
        let seq = st.writer.encode(batch, synced, |len| inner.io.alloc(len))?;
        checked.commit(&mut st.tails);
        if let Some(rewriting) = &mut st.rewriting {
            for group in batch.groups_touched() {
                rewriting.insert(group, true);
            }
        }
        st.stats.records += 1;
        drop(st);
        inner.writer_wake.notify();
        Ok(seq)
    }

    /// Resolves when record `seq` and all before it are durable and indexed.
    pub async fn wait_durable(&self, seq: RecordSeq) -> Result<(), WalError> {
        self.inner.wait_durable(seq).await
    }

    /// Makes `batch` durable (one group commit with whatever else is queued).
    pub async fn append(&self, batch: &Batch) -> Result<RecordSeq, WalError> {
        let seq = self.submit(batch)?;
        self.wait_durable(seq).await?;
        Ok(seq)
    }

    /// Durably discards the entries of `group` at and below `index`.
    pub async fn compact(&self, group: GroupId, index: LogIndex) -> Result<(), WalError> {
        let mut batch = Batch::new();
        batch.compact(group, index);
        self.append(&batch).await.map(drop)
    }

    /// Durably forgets `group`; its space is reclaimed by `purge`.
    pub async fn remove_group(&self, group: GroupId) -> Result<(), WalError> {
        let mut batch = Batch::new();
        batch.remove_group(group);
        self.append(&batch).await.map(drop)
    }

    pub fn group(&self, group: GroupId) -> Option<GroupInfo> {
        let st = self.inner.st.borrow();
        let log = st.index.log(group)?;
        Some(GroupInfo {
            first_index: log.first_index(),
            last_index: log.last_index(),
            last_term: log.last_term(),
            compacted: log.compacted,
            hard_state: log.hard_state.map(|(h, _)| h),
        })
    }

    pub fn groups(&self) -> Vec<GroupId> {
        let mut out: Vec<GroupId> = self
            .inner
            .st
            .borrow()
            .index
            .logs()
            .map(|(group, _)| group)
            .collect();
        out.sort_unstable();
        out
    }

    pub fn stats(&self) -> WalStats {
        self.inner.st.borrow().stats
    }

    /// The disk had no space for the next segment at the last try, or the
    /// process no file descriptor for it: writes that need it wait (the WAL
    /// tries again, and at once after a purge freed a segment); everything
    /// written before is unaffected.
    pub fn disk_full(&self) -> bool {
        self.inner.st.borrow().disk_full
    }

    /// Oldest segment on disk and the segment being written.
    pub fn segment_range(&self) -> (SegmentSeq, SegmentSeq) {
        let st = self.inner.st.borrow();
        (st.first_segment, st.writer.head_segment())
    }

    /// The seq of the last durable record.
    pub fn durable_seq(&self) -> RecordSeq {
        self.inner.st.borrow().durable_seq
    }

    /// Waits for everything submitted, then stops the pipeline's tasks and
    /// releases the directory lock. Every handle refuses batches afterwards.
    pub async fn close(self) -> Result<(), WalError> {
        let last = RecordSeq(self.inner.st.borrow().writer.next_seq().0 - 1);
        let flushed = self.inner.wait_durable(last).await;
        self.inner.st.borrow_mut().closing = true;
        for signal in [
            &self.inner.writer_wake,
            &self.inner.syncer_wake,
            &self.inner.preparer_wake,
        ] {
            signal.notify();
        }
        let tasks = std::mem::take(&mut *self.inner.tasks.borrow_mut());
        for task in tasks {
            task.await;
        }
        self.inner.dir_lock.borrow_mut().take();
        flushed
    }
}
