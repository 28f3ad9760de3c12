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
mod open;
mod pipeline;
mod read;
pub mod scan;
pub mod sim;
mod state;
pub mod types;
mod writer;

pub use batch::{Batch, EntryRef};
pub use error::WalError;
pub use gc::PurgeReport;
pub use io::{DmaIo, SyncMode, WalIo};
pub use read::Entry;
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
    pub async fn open_dir(
        dir: impl Into<std::path::PathBuf>,
        opts: WalOptions,
    ) -> Result<Self, WalError> {
        let dir = dir.into();
        let io = DmaIo::new(&dir, opts.sync_mode).map_err(|source| WalError::Io {
            op: "creating",
            path: dir.clone(),
            source,
        })?;
        Wal::open(io, opts).await
    }
}

impl<I: WalIo> Wal<I> {
    /// Queues `batch` for the next group commit without waiting; returns its
    /// seq for `wait_durable`. Records are durable in seq order.
    pub fn submit(&self, batch: &Batch) -> Result<RecordSeq, WalError> {
        let inner = &self.inner;
        let mut st = inner.st.borrow_mut();
        if let Some(e) = &st.failed {
            return Err(WalError::Failed(e.clone()));
        }
        if let Some(rewriting) = &mut st.rewriting {
            for group in batch.groups_touched() {
                if let Some(dirty) = rewriting.get_mut(&group) {
                    *dirty = true;
                }
            }
        }
        let synced = st.durable_seq;
        let seq = st.writer.encode(batch, synced, |len| inner.io.alloc(len))?;
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
        let log = st.index.groups.get(&group)?;
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
            .groups
            .keys()
            .copied()
            .collect();
        out.sort_unstable();
        out
    }

    pub fn stats(&self) -> WalStats {
        self.inner.st.borrow().stats
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

    /// Waits for everything submitted, then stops the pipeline's tasks.
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
        flushed
    }
}
