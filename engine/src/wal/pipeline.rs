//! Group commit: the tasks that move records from write buffers to durable.
//! The writer issues a buffer as soon as a slot is free (up to
//! `WRITES_IN_FLIGHT_MAX`), so the next write goes out while earlier ones
//! sync. The syncer issues one fdatasync per dirty segment for every prefix
//! of completed writes, without waiting for a sync still running (up to
//! `SYNCS_IN_FLIGHT_MAX`): a sync covers every write that completed before
//! it was issued, so whichever ends first makes its whole prefix durable.
//! Then the records are applied to the index and the appenders woken. The
//! preparer keeps one segment ahead (zero-filled, or a reused spare); on a
//! full disk it tries again until space is freed, and only writes that need
//! the new segment wait for it.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use super::error::WalError;
use super::format::encoded_record_at;
use super::io::{IoBuf, SyncMode, WalIo};
use super::limits::{PREPARE_RETRY_AFTER_MS, SYNCS_IN_FLIGHT_MAX, WRITES_IN_FLIGHT_MAX};
use super::state::{InFlight, Inner, State};
use super::types::{RecordLoc, RecordSeq, SegmentSeq};
use super::writer::Sealed;

pub(super) fn spawn<I: WalIo>(inner: &Rc<Inner<I>>) {
    let mut tasks = vec![
        glommio::spawn_local(write_loop(inner.clone())),
        glommio::spawn_local(prepare_loop(inner.clone())),
    ];
    if inner.opts.sync_mode == SyncMode::Fdatasync {
        tasks.push(glommio::spawn_local(sync_loop(inner.clone())));
    }
    *inner.tasks.borrow_mut() = tasks;
}

fn finished<B: IoBuf>(st: &State<B>) -> bool {
    st.failed.is_some() || (st.closing && st.in_flight.is_empty() && !st.writer.has_unwritten())
}

async fn next_write<I: WalIo>(inner: &Inner<I>) -> Option<Sealed<I::Buf>> {
    loop {
        {
            let mut st = inner.st.borrow_mut();
            if finished(&st) {
                return None;
            }
            if st.in_flight.len() < WRITES_IN_FLIGHT_MAX {
                if let Some(w) = st.writer.take() {
                    return Some(w);
                }
            }
        }
        inner.writer_wake.wait().await;
    }
}

async fn segment_ready<I: WalIo>(inner: &Inner<I>, segment: SegmentSeq) -> bool {
    loop {
        {
            let st = inner.st.borrow();
            if st.failed.is_some() {
                return false;
            }
            if st.prepared_upto >= segment {
                return true;
            }
        }
        inner.preparer_wake.notify();
        inner.prepared.wait().await;
    }
}

async fn write_loop<I: WalIo>(inner: Rc<Inner<I>>) {
    while let Some(write) = next_write(&inner).await {
        if !segment_ready(&inner, write.segment).await {
            return;
        }
        inner.preparer_wake.notify();
        let (segment, offset, buf, first) = (
            write.segment,
            write.file_offset,
            write.buf.clone(),
            write.first_seq,
        );
        inner
            .st
            .borrow_mut()
            .in_flight
            .push_back(InFlight { write, done: false });
        glommio::spawn_local(write_one(inner.clone(), segment, offset, buf, first)).detach();
    }
}

async fn write_one<I: WalIo>(
    inner: Rc<Inner<I>>,
    segment: SegmentSeq,
    offset: u64,
    buf: Rc<I::Buf>,
    first: RecordSeq,
) {
    let len = buf.bytes().len() as u64;
    if let Err(source) = inner.io.write(segment, offset, buf).await {
        let path = inner.io.path(segment);
        return inner.fail(WalError::Io {
            op: "writing",
            path,
            source,
        });
    }
    let mut st = inner.st.borrow_mut();
    st.stats.writes += 1;
    st.stats.bytes_written += len;
    if inner.opts.sync_mode == SyncMode::Dsync {
        st.stats.syncs += 1; // The write was its own sync.
    }
    let slot = st
        .in_flight
        .iter_mut()
        .find(|f| f.write.first_seq == first)
        .expect("issued write is in flight");
    slot.done = true;
    if inner.opts.sync_mode != SyncMode::Fdatasync {
        let target = done_prefix(&st).map(|(t, _)| t);
        drop(st);
        if let Some(target) = target {
            complete_through(&inner, target);
        }
    } else {
        drop(st);
        inner.syncer_wake.notify();
    }
}

/// Last seq and segments of the completed writes at the front of the queue.
fn done_prefix<B: IoBuf>(st: &State<B>) -> Option<(RecordSeq, Vec<SegmentSeq>)> {
    let mut out: Option<(RecordSeq, Vec<SegmentSeq>)> = None;
    for f in st.in_flight.iter().take_while(|f| f.done) {
        let (target, segments) = out.get_or_insert_with(|| (f.write.last_seq, Vec::new()));
        *target = f.write.last_seq;
        if !segments.contains(&f.write.segment) {
            segments.push(f.write.segment);
        }
    }
    out
}

/// Issues a sync for each new prefix of completed writes while fewer than
/// `SYNCS_IN_FLIGHT_MAX` run. `issued_through`: every write up to it is
/// covered by a sync issued after it completed (and none of those failed).
async fn sync_loop<I: WalIo>(inner: Rc<Inner<I>>) {
    let running = Rc::new(Cell::new(0usize));
    let mut issued_through = inner.st.borrow().durable_seq;
    loop {
        let next = {
            let st = inner.st.borrow();
            if finished(&st) {
                return;
            }
            done_prefix(&st).filter(|(target, _)| *target > issued_through)
        };
        match next {
            Some((target, segments)) if running.get() < SYNCS_IN_FLIGHT_MAX => {
                assert!(target > issued_through);
                issued_through = target;
                running.set(running.get() + 1);
                let sync = sync_one(inner.clone(), running.clone(), target, segments);
                glommio::spawn_local(sync).detach();
            }
            _ => inner.syncer_wake.wait().await,
        }
    }
}

/// Syncs `segments`, which hold every completed write up to `target` that
/// is not durable yet, then completes them.
async fn sync_one<I: WalIo>(
    inner: Rc<Inner<I>>,
    running: Rc<Cell<usize>>,
    target: RecordSeq,
    segments: Vec<SegmentSeq>,
) {
    let mut result = Ok(());
    for &segment in &segments {
        if let Err(source) = inner.io.sync(segment).await {
            result = Err((segment, source));
            break;
        }
        inner.st.borrow_mut().stats.syncs += 1;
    }
    assert!(running.get() > 0, "a running sync is counted");
    running.set(running.get() - 1);
    match result {
        Ok(()) => complete_through(&inner, target),
        Err((segment, source)) => {
            let path = inner.io.path(segment);
            inner.fail(WalError::Io {
                op: "syncing",
                path,
                source,
            });
        }
    }
    inner.syncer_wake.notify();
}

/// Everything up to `target` is durable: index it, cache it, wake appenders.
/// A sync that ends after a later one finds its writes completed already.
fn complete_through<I: WalIo>(inner: &Inner<I>, target: RecordSeq) {
    let mut st = inner.st.borrow_mut();
    if st.failed.is_some() {
        return; // Nothing after a failed write or sync counts as durable.
    }
    while st
        .in_flight
        .front()
        .is_some_and(|f| f.done && f.write.last_seq <= target)
    {
        let write = st.in_flight.pop_front().expect("checked").write;
        apply_write(&mut st, &write);
        st.durable_seq = write.last_seq;
        st.cache.insert(write.segment, write.file_offset, write.buf);
    }
    for w in st.durable_wakers.drain(..) {
        w.wake();
    }
    drop(st);
    inner.writer_wake.notify();
}

/// Applies the records of a durable write to the index, in order. They are
/// read back from the buffer they were encoded into without checking them
/// again: the buffer was sealed after encoding and is immutable since.
fn apply_write<B: IoBuf>(st: &mut State<B>, write: &Sealed<B>) {
    let bytes = write.buf.bytes();
    let mut at = write.first_record_at as u64;
    let mut expected = write.first_seq;
    loop {
        // SAFETY: `Sealed` holds the records `Writer::encode` encoded (and
        // `seal` padded) from `first_record_at` through `last_seq`, back to
        // back, in a buffer nothing can change while it is shared in an `Rc`.
        let (header, batch) = unsafe { encoded_record_at(bytes, at) };
        assert_eq!(header.seq, expected, "records of a write are consecutive");
        let loc = RecordLoc {
            segment: write.segment,
            offset_bytes: write.file_offset + at,
        };
        st.index.apply(batch, loc, header.total_len());
        if header.seq == write.last_seq {
            return;
        }
        at += header.total_len();
        expected = expected.next();
    }
}

async fn prepare_loop<I: WalIo>(inner: Rc<Inner<I>>) {
    loop {
        let next = {
            let st = inner.st.borrow();
            if st.failed.is_some() || st.closing {
                return;
            }
            let next = st.prepared_upto.next();
            (next <= st.writer.head_segment().next()).then_some(next)
        };
        let Some(segment) = next else {
            inner.preparer_wake.wait().await;
            continue;
        };
        if let Err(source) = inner
            .io
            .prepare(segment, inner.opts.segment_size_bytes)
            .await
        {
            let path = inner.io.path(segment);
            if !is_out_of_room(&source) {
                return inner.fail(WalError::Io {
                    op: "preparing",
                    path,
                    source,
                });
            }
            // The records written so far are safe, and the head segment
            // still takes writes; only a write that needs this segment
            // waits, until space is freed (here, or by a purge).
            {
                let mut st = inner.st.borrow_mut();
                if !st.disk_full {
                    tracing::error!(
                        "WAL: cannot create segment {}: {source}; writes that need it wait until it can be",
                        path.display()
                    );
                }
                st.disk_full = true;
                st.stats.segment_prepares_refused += 1;
            }
            let retry = glommio::timer::sleep(Duration::from_millis(PREPARE_RETRY_AFTER_MS));
            futures_lite::future::or(retry, inner.preparer_wake.wait()).await;
            continue;
        }
        let mut st = inner.st.borrow_mut();
        if std::mem::take(&mut st.disk_full) {
            tracing::info!("WAL: segment {segment} created; writes go on");
        }
        st.prepared_upto = segment;
        st.stats.segments_created += 1;
        drop(st);
        inner.prepared.notify();
    }
}

/// Whether `e` says a new file cannot be had for now: the file system has
/// no space left (or no quota), or this process or the system no file
/// descriptor (too many connections, say). Each passes once something is
/// freed; none says anything about what the WAL holds.
fn is_out_of_room(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull
        || e.kind() == std::io::ErrorKind::QuotaExceeded
        || matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT | libc::EMFILE | libc::ENFILE))
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::future::poll_fn;
    use std::io;
    use std::path::PathBuf;
    use std::task::{Poll, Waker};
    use std::time::Duration;

    use super::*;
    use crate::wal::sim::run;
    use crate::wal::batch::Batch;
    use crate::wal::scan::{Image, SegmentSource};
    use crate::wal::sim::{SimBuf, SimIo};
    use crate::wal::state::{Wal, WalOptions};
    use crate::wal::types::{GroupId, LogIndex, Term};

    /// One fdatasync held until the test ends it, with success or an error.
    #[derive(Default)]
    struct Gate {
        outcome: Cell<Option<bool>>,
        waker: RefCell<Option<Waker>>,
    }

    /// A simulated disk whose syncs wait for the test, so that several run
    /// at once and end in any order. A sync makes the disk durable when it
    /// ends, which is what the pipeline may assume of it at the earliest.
    #[derive(Clone, Default)]
    struct GatedIo {
        disk: SimIo,
        gates: Rc<RefCell<Vec<Rc<Gate>>>>,
    }

    impl GatedIo {
        fn issued(&self) -> usize {
            self.gates.borrow().len()
        }

        fn end(&self, sync: usize, ok: bool) {
            let gate = self.gates.borrow()[sync].clone();
            assert!(
                gate.outcome.replace(Some(ok)).is_none(),
                "each sync ends once"
            );
            if let Some(w) = gate.waker.take() {
                w.wake();
            }
        }
    }

    impl SegmentSource for GatedIo {
        fn list(&self) -> io::Result<Vec<SegmentSeq>> {
            self.disk.list()
        }
        fn read(&self, segment: SegmentSeq, image: &mut Image) -> io::Result<()> {
            self.disk.read(segment, image)
        }
        fn path(&self, segment: SegmentSeq) -> PathBuf {
            self.disk.path(segment)
        }
    }

    impl WalIo for GatedIo {
        type Buf = SimBuf;
        type ReadBuf = Image;
        fn alloc(&self, len_bytes: usize) -> SimBuf {
            self.disk.alloc(len_bytes)
        }
        async fn prepare(&self, segment: SegmentSeq, size_bytes: u64) -> io::Result<()> {
            self.disk.prepare(segment, size_bytes).await
        }
        async fn write(&self, segment: SegmentSeq, offset: u64, buf: Rc<SimBuf>) -> io::Result<()> {
            self.disk.write(segment, offset, buf).await
        }
        async fn sync(&self, segment: SegmentSeq) -> io::Result<()> {
            let gate = Rc::new(Gate::default());
            self.gates.borrow_mut().push(gate.clone());
            let ok = poll_fn(|cx| match gate.outcome.get() {
                Some(ok) => Poll::Ready(ok),
                None => {
                    *gate.waker.borrow_mut() = Some(cx.waker().clone());
                    Poll::Pending
                }
            })
            .await;
            if !ok {
                return Err(io::Error::other("simulated sync failure"));
            }
            self.disk.sync(segment).await
        }
        async fn read_at(&self, segment: SegmentSeq, offset: u64, len: usize) -> io::Result<Image> {
            self.disk.read_at(segment, offset, len).await
        }
        async fn remove(&self, segment: SegmentSeq) -> io::Result<()> {
            self.disk.remove(segment).await
        }
    }

    /// Lets every task that can make progress run (bounded: 2 ms).
    async fn settle() {
        glommio::timer::sleep(Duration::from_millis(2)).await;
    }

    fn one_entry(group: u64) -> Batch {
        let mut batch = Batch::new();
        batch.push_entry(GroupId(group), Term(1), LogIndex(1), b"entry");
        batch
    }

    /// Opens a WAL on a gated disk and writes records A and B, each in its
    /// own write with its own sync, both syncs still running.
    async fn two_syncs_running() -> (GatedIo, Wal<GatedIo>, RecordSeq, RecordSeq) {
        let io = GatedIo::default();
        let wal = Wal::open(io.clone(), WalOptions::default())
            .await
            .expect("open");
        let a = wal.submit(&one_entry(1)).expect("submit A");
        settle().await;
        assert_eq!(io.issued(), 1, "A written and its sync issued");
        let b = wal.submit(&one_entry(2)).expect("submit B");
        settle().await;
        assert_eq!(io.issued(), 2, "B's sync issued while A's still runs");
        assert_eq!(
            wal.durable_seq(),
            RecordSeq(0),
            "nothing durable before a sync ends"
        );
        assert!(
            wal.group(GroupId(1)).is_none(),
            "the index holds durable records only"
        );
        (io, wal, a, b)
    }

    #[test]
    fn a_later_sync_ending_first_makes_every_write_before_it_durable() {
        run(async {
            let (io, wal, a, b) = two_syncs_running().await;
            io.end(1, true);
            settle().await;
            assert_eq!(wal.durable_seq(), b, "B's sync covers A's completed write");
            wal.wait_durable(a).await.expect("A durable");
            assert_eq!(
                wal.group(GroupId(1)).expect("A indexed").last_index,
                LogIndex(1)
            );
            assert_eq!(
                wal.group(GroupId(2)).expect("B indexed").last_index,
                LogIndex(1)
            );
            io.end(0, true);
            settle().await;
            assert_eq!(
                wal.durable_seq(),
                b,
                "the earlier sync ending late changes nothing"
            );
            assert_eq!(wal.stats().syncs, 2);
        });
    }

    #[test]
    fn an_earlier_sync_ending_first_makes_only_its_own_writes_durable() {
        run(async {
            let (io, wal, a, b) = two_syncs_running().await;
            io.end(0, true);
            settle().await;
            assert_eq!(wal.durable_seq(), a);
            assert!(wal.group(GroupId(2)).is_none(), "B is not durable yet");
            io.end(1, true);
            wal.wait_durable(b).await.expect("B durable");
            assert!(wal.group(GroupId(2)).is_some());
        });
    }

    /// After a failed sync, a later sync that succeeds proves nothing (the
    /// kernel may report a flush error to one caller only): no record is
    /// reported durable any more.
    #[test]
    fn a_failed_sync_fails_the_wal_even_if_a_later_one_succeeds() {
        run(async {
            let (io, wal, a, b) = two_syncs_running().await;
            io.end(0, false);
            io.end(1, true);
            settle().await;
            assert_eq!(wal.durable_seq(), RecordSeq(0));
            assert!(wal.wait_durable(a).await.is_err());
            assert!(wal.wait_durable(b).await.is_err());
            assert!(wal.submit(&one_entry(3)).is_err());
        });
    }

    /// More writes complete than syncs may run: the next sync waits for a
    /// slot, then covers everything completed by then in one.
    #[test]
    fn syncs_in_flight_are_bounded_and_the_next_covers_every_completed_write() {
        run(async {
            let (io, wal, _, _) = two_syncs_running().await;
            let c = wal.submit(&one_entry(3)).expect("submit C");
            settle().await;
            assert_eq!(io.issued(), SYNCS_IN_FLIGHT_MAX);
            let d = wal.submit(&one_entry(4)).expect("submit D");
            settle().await;
            assert!(wal.inner.st.borrow().in_flight.len() <= WRITES_IN_FLIGHT_MAX);
            io.end(0, true);
            settle().await;
            assert_eq!(io.issued(), 3, "one sync for C and D together");
            io.end(2, true);
            wal.wait_durable(d).await.expect("D durable");
            assert!(wal.durable_seq() >= c);
            io.end(1, true);
            settle().await;
            assert_eq!(wal.durable_seq(), d);
        });
    }
}
