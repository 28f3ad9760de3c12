//! Saves a core's snapshot files off its event loop. A compaction drops the
//! group's log from memory at once and queues its snapshot here; the writer
//! hands what is queued, as one batch, to the executor's blocking thread
//! (write and fsync each file, one directory fsync) and reports each result.
//! Only a saved snapshot lets the WAL forget the entries it covers: until
//! then a crash recovers from the previous snapshot file and the WAL.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};

use raftcore::{LogIndex, Snapshot};

use super::snapshot_file::{SnapshotDir, SnapshotFileError};
use crate::signal::Signal;

/// Most snapshots waiting to be saved; a compaction finding the queue full
/// waits for a later chance (its log stays in memory until then).
pub const SAVES_QUEUED_MAX: usize = 1024;
/// Most snapshots handed to the blocking thread at once: a save or removal
/// made on the core for a group of the batch in progress waits for it.
const SAVES_PER_BATCH_MAX: usize = 16;

/// A snapshot to save. `token` tells this save from any later one of the
/// same group (or of a group re-created under its id).
pub struct SaveJob {
    pub group: u64,
    pub token: u64,
    pub snapshot: Snapshot,
}

/// How a save ended.
#[derive(Debug)]
pub struct Saved {
    pub group: u64,
    pub token: u64,
    pub index: LogIndex,
    pub result: Result<(), SnapshotFileError>,
}

pub struct SnapshotWriter {
    dir: SnapshotDir,
    queue: RefCell<VecDeque<SaveJob>>,
    wake: Signal,
    /// The groups of the batch handed to the blocking thread, and the flag
    /// it raises when that batch is done.
    saving: RefCell<Option<(Vec<u64>, Arc<BatchDone>)>>,
}

/// Raised by the blocking thread once a batch's files are written (or
/// failed): until then the core may not touch those groups' files.
#[derive(Default)]
struct BatchDone {
    done: Mutex<bool>,
    raised: Condvar,
}

impl BatchDone {
    fn raise(&self) {
        *self.done.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.raised.notify_all();
    }

    /// Raises the flag when dropped: also if the batch panicked.
    fn raised_on_drop(self: Arc<Self>) -> impl Drop {
        struct Raise(Arc<BatchDone>);
        impl Drop for Raise {
            fn drop(&mut self) {
                self.0.raise();
            }
        }
        Raise(self)
    }

    fn wait(&self) {
        let mut done = self.done.lock().unwrap_or_else(|p| p.into_inner());
        while !*done {
            done = self.raised.wait(done).unwrap_or_else(|p| p.into_inner());
        }
    }
}

impl SnapshotWriter {
    pub fn new(dir: SnapshotDir) -> SnapshotWriter {
        SnapshotWriter { dir, queue: RefCell::new(VecDeque::new()), wake: Signal::default(), saving: RefCell::new(None) }
    }

    pub fn is_full(&self) -> bool {
        self.queue.borrow().len() >= SAVES_QUEUED_MAX
    }

    /// Queues `job`; refuses it (false) when `SAVES_QUEUED_MAX` are waiting.
    pub fn queue(&self, job: SaveJob) -> bool {
        if self.is_full() {
            return false;
        }
        self.queue.borrow_mut().push_back(job);
        self.wake.notify();
        true
    }

    /// Leaves `group`'s snapshot file to the caller: drops the group's
    /// saves not yet handed to the blocking thread (they are never
    /// reported) and, if the batch there saves the group, waits for it to
    /// end (blocking the core: at most one batch). Other groups' saves do
    /// not hold the caller up.
    pub fn release(&self, group: u64) {
        self.queue.borrow_mut().retain(|job| job.group != group);
        let in_batch = self.saving.borrow().as_ref().filter(|(groups, _)| groups.contains(&group)).map(|(_, done)| done.clone());
        if let Some(done) = in_batch {
            done.wait();
        }
    }

    /// Saves what is queued, batch after batch, handing each batch's results
    /// to `report`. Runs until its task is cancelled.
    pub async fn run(&self, report: impl Fn(Vec<Saved>)) {
        loop {
            while self.queue.borrow().is_empty() {
                self.wake.wait().await;
            }
            let jobs: Vec<SaveJob> = {
                let mut queue = self.queue.borrow_mut();
                let n = queue.len().min(SAVES_PER_BATCH_MAX);
                queue.drain(..n).collect()
            };
            let dir = self.dir.clone();
            let done = Arc::new(BatchDone::default());
            *self.saving.borrow_mut() = Some((jobs.iter().map(|j| j.group).collect(), done.clone()));
            let saved = glommio::executor()
                .spawn_blocking(move || {
                    let _raise = done.raised_on_drop();
                    let results = dir.save_all(jobs.iter().map(|j| (j.group, &j.snapshot)));
                    jobs.into_iter().zip(results).map(|(j, result)| Saved { group: j.group, token: j.token, index: j.snapshot.meta.index, result }).collect::<Vec<_>>()
                })
                .await;
            *self.saving.borrow_mut() = None;
            report(saved);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use bytes::Bytes;
    use raftcore::{ConfState, NodeId, SnapshotMeta, Term};

    use super::*;

    fn snapshot(index: u64) -> Snapshot {
        let conf_state = ConfState { voters: vec![NodeId(1)], ..Default::default() };
        Snapshot { meta: SnapshotMeta { index: LogIndex(index), term: Term(1), conf_state }, data: Bytes::from(format!("state at {index}")) }
    }

    /// Runs `queue` against a writer on a fresh executor until `expect`
    /// results were reported; returns them.
    fn run_writer(dir: SnapshotDir, expect: usize, queue: impl FnOnce(&SnapshotWriter) + Send + 'static) -> Vec<Saved> {
        let ex = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound).make().expect("executor");
        ex.run(async move {
            let writer = Rc::new(SnapshotWriter::new(dir));
            let reported = Rc::new(RefCell::new(Vec::new()));
            let (w, r) = (writer.clone(), reported.clone());
            let task = glommio::spawn_local(async move { w.run(|saved| r.borrow_mut().extend(saved)).await });
            queue(&writer);
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            while reported.borrow().len() < expect {
                assert!(std::time::Instant::now() < deadline, "the writer reported {} of {expect} saves", reported.borrow().len());
                glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
            }
            drop(task.cancel());
            reported.take()
        })
    }

    #[test]
    fn saves_every_queued_snapshot_and_reports_each() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = SnapshotDir::open(tmp.path().join("snap")).unwrap();
        let groups = 40u64; // more than one batch
        let saved = run_writer(dir.clone(), groups as usize, move |w| {
            for g in 1..=groups {
                assert!(w.queue(SaveJob { group: g, token: 100 + g, snapshot: snapshot(g * 10) }));
            }
        });
        for (s, g) in saved.iter().zip(1..) {
            assert_eq!((s.group, s.token, s.index), (g, 100 + g, LogIndex(g * 10)), "reported in queue order");
            assert!(s.result.is_ok(), "{:?}", s.result);
            assert_eq!(dir.load(g).unwrap(), Some(snapshot(g * 10)));
        }
    }

    #[test]
    fn a_failed_save_is_reported_and_spares_the_others() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = SnapshotDir::open(tmp.path().join("snap")).unwrap();
        dir.save(2, &snapshot(5)).unwrap();
        // A directory where group 2's temporary file goes: its file cannot
        // be created (also for root, which permissions would not stop).
        std::fs::create_dir(dir.dir().join(format!("g{:016x}.snap.tmp", 2))).unwrap();
        let saved = run_writer(dir.clone(), 3, |w| {
            for g in 1..=3 {
                assert!(w.queue(SaveJob { group: g, token: g, snapshot: snapshot(50) }));
            }
        });
        assert!(saved[0].result.is_ok() && saved[2].result.is_ok());
        let err = saved[1].result.as_ref().expect_err("group 2 cannot be saved").to_string();
        assert!(err.contains("g0000000000000002.snap.tmp"), "{err}");
        assert_eq!(dir.load(2).unwrap(), Some(snapshot(5)), "the old snapshot stays");
        assert_eq!(dir.load(3).unwrap(), Some(snapshot(50)));
    }

    #[test]
    fn cancelled_saves_are_neither_written_nor_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = SnapshotDir::open(tmp.path().join("snap")).unwrap();
        let saved = run_writer(dir.clone(), 1, |w| {
            // Queued before the writer task first runs: all in one batch.
            assert!(w.queue(SaveJob { group: 1, token: 1, snapshot: snapshot(10) }));
            assert!(w.queue(SaveJob { group: 2, token: 2, snapshot: snapshot(10) }));
            w.release(1);
        });
        assert_eq!(saved.len(), 1);
        assert_eq!(saved[0].group, 2);
        assert_eq!(dir.load(1).unwrap(), None);
    }

    #[test]
    fn releasing_a_group_waits_for_its_save_in_progress() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = SnapshotDir::open(tmp.path().join("snap")).unwrap();
        let big = |index: u64| {
            let mut s = snapshot(index);
            s.data = Bytes::from(vec![index as u8; 8 << 20]);
            s
        };
        let checked = dir.clone();
        let ex = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound).make().expect("executor");
        ex.run(async move {
            let writer = Rc::new(SnapshotWriter::new(dir));
            let w = writer.clone();
            let task = glommio::spawn_local(async move { w.run(|_| {}).await });
            // One batch of several large files; group 6 is saved last.
            for g in 1..=6 {
                assert!(writer.queue(SaveJob { group: g, token: g, snapshot: big(g) }));
            }
            while writer.saving.borrow().is_none() {
                glommio::timer::sleep(std::time::Duration::from_micros(50)).await;
            }
            writer.release(6);
            let saved = checked.load(6).unwrap().expect("group 6's save ended before release returned");
            assert_eq!(saved.data.len(), 8 << 20);
            drop(task.cancel());
        });
    }

    #[test]
    fn the_queue_is_bounded() {
        let tmp = tempfile::tempdir().unwrap();
        let w = SnapshotWriter::new(SnapshotDir::open(tmp.path().join("snap")).unwrap());
        for g in 0..SAVES_QUEUED_MAX as u64 {
            assert!(w.queue(SaveJob { group: g, token: g, snapshot: snapshot(1) }));
        }
        assert!(w.is_full());
        assert!(!w.queue(SaveJob { group: 0, token: 0, snapshot: snapshot(1) }));
    }
}
