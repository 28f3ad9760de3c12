//! Group commit: the tasks that move records from write buffers to durable.
//! The writer issues a buffer as soon as a slot is free (up to
//! `WRITES_IN_FLIGHT_MAX`), so the next write goes out while the previous
//! fdatasync runs; the syncer makes every completed write durable with one
//! fdatasync per dirty segment, then applies their records to the index and
//! wakes the appenders. The preparer keeps one zeroed segment ahead.

use std::rc::Rc;

use super::error::WalError;
use super::format::record_at;
use super::io::{IoBuf, SyncMode, WalIo};
use super::limits::WRITES_IN_FLIGHT_MAX;
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

async fn sync_loop<I: WalIo>(inner: Rc<Inner<I>>) {
    loop {
        let next = {
            let st = inner.st.borrow();
            if finished(&st) {
                return;
            }
            done_prefix(&st)
        };
        let Some((target, segments)) = next else {
            inner.syncer_wake.wait().await;
            continue;
        };
        for segment in segments {
            if let Err(source) = inner.io.sync(segment).await {
                let path = inner.io.path(segment);
                return inner.fail(WalError::Io {
                    op: "syncing",
                    path,
                    source,
                });
            }
            inner.st.borrow_mut().stats.syncs += 1;
        }
        complete_through(&inner, target);
    }
}

/// Everything up to `target` is durable: index it, cache it, wake appenders.
fn complete_through<I: WalIo>(inner: &Inner<I>, target: RecordSeq) {
    let mut st = inner.st.borrow_mut();
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

fn apply_write<B: IoBuf>(st: &mut State<B>, write: &Sealed<B>) {
    let bytes = write.buf.bytes();
    let mut at = write.first_record_at as u64;
    loop {
        let record = record_at(bytes, at).expect("a record we wrote reads back from its buffer");
        let batch = record.batch().expect("a batch we archived validates");
        let loc = RecordLoc {
            segment: write.segment,
            offset_bytes: write.file_offset + at,
        };
        st.index.apply(batch, loc, record.header.total_len());
        if record.header.seq == write.last_seq {
            return;
        }
        at = record.next_offset();
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
            return inner.fail(WalError::Io {
                op: "preparing",
                path,
                source,
            });
        }
        let mut st = inner.st.borrow_mut();
        st.prepared_upto = segment;
        st.stats.segments_created += 1;
        drop(st);
        inner.prepared.notify();
    }
}
