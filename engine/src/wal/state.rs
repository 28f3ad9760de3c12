//! The WAL handle and its shared state. A `Wal` belongs to one core: clones
//! are cheap handles used by that core's tasks; nothing here is `Send`.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};

use super::cache::Cache;
use super::error::WalError;
use super::index::Index;
use super::io::{SyncMode, WalIo};
use super::limits::{
    BLOCK_BYTES, SEGMENT_SIZE_BYTES_MAX, SEGMENT_SIZE_BYTES_MIN, WRITE_BYTES_MAX_DEFAULT,
};
use super::limits::{
    CACHE_BYTES_MAX_DEFAULT, SEGMENTS_SOFT_MAX_DEFAULT, SEGMENT_SIZE_BYTES_DEFAULT,
};
use super::lock::DirLock;
use super::types::{RecordSeq, SegmentSeq};
use super::validate::Tails;
use super::writer::{Sealed, Writer};

/// How a WAL is laid out and paced.
#[derive(Clone, Debug)]
pub struct WalOptions {
    pub segment_size_bytes: u64,
    /// Largest single write (group commit stops adding records there).
    pub write_bytes_max: usize,
    /// Recent writes kept in memory for reads.
    pub cache_bytes_max: usize,
    pub sync_mode: SyncMode,
    /// Segments kept before `purge` rewrites lagging groups forward.
    pub segments_soft_max: usize,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_size_bytes: SEGMENT_SIZE_BYTES_DEFAULT,
            write_bytes_max: WRITE_BYTES_MAX_DEFAULT,
            cache_bytes_max: CACHE_BYTES_MAX_DEFAULT,
            sync_mode: SyncMode::Fdatasync,
            segments_soft_max: SEGMENTS_SOFT_MAX_DEFAULT,
        }
    }
}

impl WalOptions {
    pub fn check(&self) -> Result<(), WalError> {
        let size = self.segment_size_bytes;
        if size % BLOCK_BYTES != 0
            || !(SEGMENT_SIZE_BYTES_MIN..=SEGMENT_SIZE_BYTES_MAX).contains(&size)
        {
            return Err(WalError::Options(format!(
                "segment_size_bytes {size} must be a multiple of {BLOCK_BYTES} in \
                 {SEGMENT_SIZE_BYTES_MIN}..={SEGMENT_SIZE_BYTES_MAX}"
            )));
        }
        if self.write_bytes_max as u64 % BLOCK_BYTES != 0 || self.write_bytes_max == 0 {
            return Err(WalError::Options(
                "write_bytes_max must be a positive multiple of 4096".into(),
            ));
        }
        if self.segments_soft_max < 2 {
            return Err(WalError::Options(
                "segments_soft_max must be at least 2".into(),
            ));
        }
        Ok(())
    }
}

/// Counters since open, for benchmarks and tools.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalStats {
    pub records: u64,
    pub writes: u64,
    /// Durability points: fdatasyncs, or with O_DSYNC the writes themselves.
    pub syncs: u64,
    pub bytes_written: u64,
    pub segments_created: u64,
    pub segments_removed: u64,
    pub cache_misses: u64,
    /// Times the next segment could not be created for want of disk space
    /// or of a file descriptor (each retried: see `Wal::disk_full`).
    pub segment_prepares_refused: u64,
}

pub(super) use crate::signal::Signal;

/// A write handed to the device; `done` once it completed.
pub(super) struct InFlight<B> {
    pub write: Sealed<B>,
    pub done: bool,
}

pub(super) struct State<B> {
    pub writer: Writer<B>,
    pub index: Index,
    pub cache: Cache<B>,
    /// Writes issued and not yet durable, in issue order.
    pub in_flight: VecDeque<InFlight<B>>,
    pub durable_seq: RecordSeq,
    /// Every segment up to this one exists at full size.
    pub prepared_upto: SegmentSeq,
    /// Oldest segment file that exists.
    pub first_segment: SegmentSeq,
    pub failed: Option<Rc<WalError>>,
    pub closing: bool,
    /// The disk had no space for the next segment at the last try.
    pub disk_full: bool,
    pub stats: WalStats,
    pub durable_wakers: Vec<Waker>,
    /// While a rewrite is built: the groups it copies (false) and the groups
    /// a batch submitted since it began touched (true: their copies would be
    /// stale, so they are left out).
    pub rewriting: Option<super::index::GroupMap<bool>>,
    /// Each group's log as every submitted batch leaves it (`validate`).
    pub tails: Tails,
}

pub(super) struct Inner<I: WalIo> {
    pub io: I,
    pub opts: WalOptions,
    pub st: RefCell<State<I::Buf>>,
    pub writer_wake: Signal,
    pub syncer_wake: Signal,
    pub preparer_wake: Signal,
    pub prepared: Signal,
    pub tasks: RefCell<Vec<glommio::Task<()>>>,
    /// The directory lock of a WAL opened with `open_dir`: held until
    /// `close` is done or the last handle is dropped.
    pub dir_lock: RefCell<Option<DirLock>>,
}

/// A per-core write-ahead log shared by all the groups of the core.
pub struct Wal<I: WalIo = super::io::DmaIo> {
    pub(super) inner: Rc<Inner<I>>,
    /// Shared by the handles only: the pipeline's tasks keep `inner` alive
    /// (and would keep the directory locked) for as long as they run.
    handles: Rc<Handles<I>>,
}

impl<I: WalIo> Wal<I> {
    pub(super) fn from_inner(inner: Rc<Inner<I>>) -> Wal<I> {
        let handles = Rc::new(Handles(inner.clone()));
        Wal { inner, handles }
    }
}

impl<I: WalIo> Clone for Wal<I> {
    fn clone(&self) -> Self {
        Wal {
            inner: self.inner.clone(),
            handles: self.handles.clone(),
        }
    }
}

/// Dropped with the last `Wal` handle. Without `close`, that is a crash as
/// far as the log is concerned: nothing more is written (records not yet
/// durable may or may not be), the pipeline's tasks are cancelled, and the
/// directory lock is released so the WAL can be opened again at once.
struct Handles<I: WalIo>(Rc<Inner<I>>);

impl<I: WalIo> Drop for Handles<I> {
    fn drop(&mut self) {
        let inner = &self.0;
        inner.st.borrow_mut().closing = true;
        let tasks = std::mem::take(&mut *inner.tasks.borrow_mut());
        // Dropping a task handle cancels the task, and with it the future
        // holding `inner`.
        drop(tasks);
        let lock = inner.dir_lock.borrow_mut().take();
        drop(lock);
    }
}

impl<I: WalIo> Inner<I> {
    /// Marks the WAL failed: every waiter and every later append gets `err`.
    pub fn fail(&self, err: WalError) {
        let mut st = self.st.borrow_mut();
        if st.failed.is_none() {
            tracing::error!("WAL failed: {err}");
            st.failed = Some(Rc::new(err));
        }
        for w in st.durable_wakers.drain(..) {
            w.wake();
        }
        drop(st);
        self.writer_wake.notify();
        self.syncer_wake.notify();
        self.preparer_wake.notify();
        self.prepared.notify();
    }

    /// Resolves once `seq` is durable (and applied to the index).
    pub async fn wait_durable(&self, seq: RecordSeq) -> Result<(), WalError> {
        poll_fn(|cx| {
            let mut st = self.st.borrow_mut();
            if st.durable_seq >= seq {
                return Poll::Ready(Ok(()));
            }
            if let Some(e) = &st.failed {
                return Poll::Ready(Err(WalError::Failed(e.clone())));
            }
            st.durable_wakers.push(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}
