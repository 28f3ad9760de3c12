//! The embedded API: requests from any thread of the process to a node that
//! the process runs (`Cluster::node`), served as the client port serves
//! them, without a socket or a codec. Each core of a node has an inbox (a
//! bounded crossbeam channel, drained by a task of that core's executor); a
//! request goes straight to the core that owns its group.

use std::future::poll_fn;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::Duration;

use crossbeam::channel::{self, RecvTimeoutError, TryRecvError, TrySendError};

use super::config::core_of;
use crate::client::proto::{Consistency, Op, Reply};
use crate::client::Outcome;

/// Requests waiting in one core's inbox; past it a call is refused `Busy`.
pub const INBOX_CAPACITY: usize = 16_384;
/// Requests from the inbox a core serves at once; beyond it the inbox is
/// left to fill (see `Inbox::recv`).
pub const INFLIGHT_MAX: usize = 16_384;

/// One request and where its answer goes.
pub struct Call {
    pub group: u64,
    pub op: Op,
    pub reply: channel::Sender<Reply>,
}

/// The waker of the task that drains an inbox, set while it waits.
type WakerSlot = Arc<Mutex<Option<Waker>>>;

/// Why a call did not reach its core.
enum Refused {
    Full,
    Stopped,
}

/// The sending end of one core's inbox: any thread may hold it.
#[derive(Clone)]
pub struct Door {
    tx: channel::Sender<Call>,
    waiting: WakerSlot,
}

/// The receiving end of one core's inbox, drained on its executor.
pub struct Inbox {
    rx: channel::Receiver<Call>,
    waiting: WakerSlot,
    /// Requests taken and not yet answered (an atomic only so that the
    /// inbox can be built on another thread: its core alone touches it).
    inflight: Arc<AtomicUsize>,
}

/// A new inbox for one core and its door.
pub fn inbox() -> (Door, Inbox) {
    let (tx, rx) = channel::bounded(INBOX_CAPACITY);
    let waiting = WakerSlot::default();
    (Door { tx, waiting: waiting.clone() }, Inbox { rx, waiting, inflight: Arc::default() })
}

impl Door {
    /// Queues `call`; refused (and dropped) when the inbox is full or its
    /// core is gone.
    fn send(&self, call: Call) -> Result<(), Refused> {
        self.tx.try_send(call).map_err(|e| match e {
            TrySendError::Full(_) => Refused::Full,
            TrySendError::Disconnected(_) => Refused::Stopped,
        })?;
        // A glommio waker may be woken from any thread: its executor is
        // notified and runs the task.
        let waker = self.waiting.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }
}

impl Inbox {
    /// The next request once fewer than `INFLIGHT_MAX` taken from this
    /// inbox wait for their answer (its answer must go through `answer`);
    /// `None` once every door is gone.
    pub async fn recv(&self) -> Option<Call> {
        while self.inflight.load(Ordering::Relaxed) >= INFLIGHT_MAX {
            glommio::timer::sleep(INFLIGHT_POLL_INTERVAL).await;
        }
        let call = self.next().await?;
        self.inflight.fetch_add(1, Ordering::Relaxed);
        Some(call)
    }

    /// Where the answer to a request from `recv` goes. It leaves the
    /// in-flight count when answered, or dropped unanswered.
    pub fn answer(&self, reply: channel::Sender<Reply>) -> impl FnOnce(Reply) + 'static {
        let answer = Answer { inflight: self.inflight.clone(), reply };
        move |r| {
            // The caller may have given up waiting.
            let _ = answer.reply.send(r);
        }
    }

    async fn next(&self) -> Option<Call> {
        poll_fn(|cx| {
            for attempt in 0..2 {
                match self.rx.try_recv() {
                    Ok(call) => return Poll::Ready(Some(call)),
                    Err(TryRecvError::Disconnected) => return Poll::Ready(None),
                    Err(TryRecvError::Empty) if attempt == 0 => {
                        // Set before looking again: a request sent in
                        // between finds the waker, or is seen below.
                        *self.waiting.lock().unwrap_or_else(|e| e.into_inner()) = Some(cx.waker().clone());
                    }
                    Err(TryRecvError::Empty) => {}
                }
            }
            Poll::Pending
        })
        .await
    }
}

impl Drop for Inbox {
    /// Requests its core never took are answered so: their callers need not
    /// wait out their timeout, and a write among them certainly did not
    /// apply.
    fn drop(&mut self) {
        while let Ok(call) = self.rx.try_recv() {
            let _ = call.reply.send(Reply::Error(format!("the node's core stopped before it took the request for group {}", call.group)));
        }
    }
}

/// A request taken from an inbox, until answered or dropped.
struct Answer {
    inflight: Arc<AtomicUsize>,
    reply: channel::Sender<Reply>,
}

impl Drop for Answer {
    fn drop(&mut self) {
        self.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How often a full inbox looks again whether answers made room.
const INFLIGHT_POLL_INTERVAL: Duration = Duration::from_millis(1);

/// A node this process runs, as the embedded API reaches it. Cheap to
/// clone; any thread may use it.
#[derive(Clone)]
pub struct NodeHandle {
    node: u64,
    /// By core.
    doors: Vec<Door>,
}

impl NodeHandle {
    pub(super) fn new(node: u64, doors: Vec<Door>) -> NodeHandle {
        NodeHandle { node, doors }
    }

    pub fn node_id(&self) -> u64 {
        self.node
    }

    /// Runs `op` on `group` at this node and waits up to `timeout` for its
    /// answer: `Ok` with the reply the client port would send (`NotLeader`
    /// names the leader, if this replica knows it: the caller goes there,
    /// by its own handle or a `Client`), except that a replica's `Unknown`
    /// is `Outcome::Unknown`. A write unanswered in time, or whose node
    /// stopped with it taken, is `Unknown` too: it may yet be applied. A
    /// request the node never took (it stopped, or its inbox is full:
    /// `Ok(Busy)`), or a read unanswered in time, is `Failed`.
    pub fn call(&self, group: u64, op: Op, timeout: Duration) -> Outcome {
        let write = op.is_write();
        let door = &self.doors[core_of(group, self.doors.len() as u32) as usize];
        let (tx, rx) = channel::bounded(1);
        match door.send(Call { group, op, reply: tx }) {
            Ok(()) => {}
            Err(Refused::Full) => return Outcome::Ok(Reply::Busy),
            Err(Refused::Stopped) => return Outcome::Failed(format!("node {} is stopped", self.node)),
        }
        let unanswered = |why: String| if write { Outcome::Unknown(why) } else { Outcome::Failed(why) };
        match rx.recv_timeout(timeout) {
            Ok(Reply::Unknown) => Outcome::Unknown(format!("node {} cannot tell whether the write to group {group} was applied", self.node)),
            Ok(reply) => Outcome::Ok(reply),
            Err(RecvTimeoutError::Timeout) => unanswered(format!("node {} gave no answer within {timeout:?}", self.node)),
            Err(RecvTimeoutError::Disconnected) => unanswered(format!("node {} stopped before it answered", self.node)),
        }
    }

    /// Proposes a write (`Put`, `Delete` or `Cas`) to `group`, which this
    /// node must lead: `Ok(Done)` (or `CasFailed`) once it is committed and
    /// applied here.
    pub fn propose(&self, group: u64, write: Op, timeout: Duration) -> Outcome {
        if !write.is_write() {
            return Outcome::Failed(format!("propose takes a write, not {write:?}"));
        }
        self.call(group, write, timeout)
    }

    /// Reads `key` of `group`: linearizable (at the leader under its lease
    /// or after a ReadIndex round; at a follower that knows its leader,
    /// once it has applied the index the leader confirmed) or stale (what
    /// this replica has applied).
    pub fn read(&self, group: u64, key: impl Into<bytes::Bytes>, consistency: Consistency, timeout: Duration) -> Outcome {
        self.call(group, Op::Get { key: key.into(), consistency }, timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put() -> Op {
        Op::Put { key: bytes::Bytes::from_static(b"k"), value: bytes::Bytes::from_static(b"v") }
    }

    /// A full inbox refuses at once (`Busy`, certainly not taken); requests
    /// still in the inbox when its core stops are answered that they were
    /// never taken; a stopped core's door refuses at once (`Failed`).
    #[test]
    fn a_full_or_stopped_inbox_refuses_at_once() {
        let (door, inbox) = inbox();
        let handle = NodeHandle::new(1, vec![door.clone()]);
        let mut waiting = Vec::new();
        for _ in 0..INBOX_CAPACITY {
            let (tx, rx) = channel::bounded(1);
            assert!(door.send(Call { group: 1, op: put(), reply: tx }).is_ok());
            waiting.push(rx);
        }
        let t = Duration::from_secs(5);
        assert_eq!(handle.call(1, put(), t), Outcome::Ok(Reply::Busy));
        drop(inbox);
        for rx in waiting {
            assert!(matches!(rx.recv_timeout(t), Ok(Reply::Error(why)) if why.contains("before it took")));
        }
        assert!(matches!(handle.propose(1, put(), t), Outcome::Failed(why) if why.contains("stopped")));
    }

    /// A taken request leaves the in-flight count when it is answered, and
    /// when its answer is dropped unanswered.
    #[test]
    fn answers_answered_or_dropped_leave_the_inflight_count() {
        let (_door, inbox) = inbox();
        for answered in [true, false] {
            let (tx, rx) = channel::bounded(1);
            inbox.inflight.fetch_add(1, Ordering::Relaxed);
            let answer = inbox.answer(tx);
            if answered {
                answer(Reply::Done);
                assert_eq!(rx.recv().ok(), Some(Reply::Done));
            } else {
                drop(answer);
            }
            assert_eq!(inbox.inflight.load(Ordering::Relaxed), 0);
        }
    }
}
