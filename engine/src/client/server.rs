//! The client port of one core: accepts connections, decodes pipelined
//! requests, hands them to the core's event loop and writes the replies back
//! as they come (in completion order). Each connection has a bound on
//! requests in flight; past it the server stops reading until replies drain.
//! A client that closes its sending half still gets every answer.
//! A malformed frame closes that connection with a logged error. A core keeps
//! at most its share of `client_connections_max` connections open; it
//! closes any beyond at once.

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};

use super::proto::{self, Reply, Response, ServerHello};
use crate::framing::{trim_buffer, Decoded};
use crate::accept::{Bound, BoundedListener};
use crate::node::metrics::CoreMetrics;
use crate::node::shard::Shard;
use crate::signal::Signal;
use crate::tasks::TaskSet;

/// Requests of one connection waiting for replies before reading pauses.
pub const CONNECTION_INFLIGHT_MAX: usize = 8192;
const READ_CHUNK_BYTES: usize = 64 << 10;
// The read buffer grows by `clamp(READ_CHUNK_BYTES, ..)`, which needs min <= max.
const _: () = assert!(READ_CHUNK_BYTES <= proto::REQUEST_BYTES_MAX + 64);
/// A connection's read and write buffers keep at most this much between
/// frames (a large request, a scan's answer of up to 64 MiB, grows them
/// for the time it takes): 4,096 connections must not each hold their
/// largest.
const BUFFER_KEPT_BYTES_MAX: usize = 1 << 20;
/// How long a connection whose client closed its sending half keeps waiting
/// to write the answers still pending.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The reply side of one connection, shared by the responders of its requests.
struct Outgoing {
    buf: RefCell<Vec<u8>>,
    inflight: Cell<usize>,
    wake_writer: Signal,
    wake_reader: Signal,
    closed: Cell<bool>,
}

impl Outgoing {
    /// Queues the `Closing` notice (it answers no request).
    fn notice_closing(&self) {
        if !self.closed.get() {
            proto::encode_response(&Response { id: proto::CLOSING_NOTICE_ID, reply: Reply::Closing }, &mut self.buf.borrow_mut());
            self.wake_writer.notify();
        }
    }

    fn reply(&self, id: u64, reply: Reply) {
        self.inflight.set(self.inflight.get() - 1);
        if !self.closed.get() {
            proto::encode_response(&Response { id, reply }, &mut self.buf.borrow_mut());
            self.wake_writer.notify();
        }
        self.wake_reader.notify();
    }
}

/// The client connections of one core, to tell them when the node is about
/// to stop.
#[derive(Default)]
pub struct ClientConns {
    open: RefCell<Vec<Weak<Outgoing>>>,
    closing: Cell<bool>,
}

impl ClientConns {
    fn register(&self, out: &Rc<Outgoing>) {
        if self.closing.get() {
            out.notice_closing();
        }
        let mut open = self.open.borrow_mut();
        open.retain(|o| o.strong_count() > 0);
        open.push(Rc::downgrade(out));
    }

    /// Sends every open connection the `Closing` notice, once (connections
    /// opened afterwards get it after the hello); returns how many requests
    /// read from them still wait for their answer.
    pub fn announce_closing(&self) -> usize {
        let first = !self.closing.replace(true);
        let mut open = self.open.borrow_mut();
        open.retain(|o| o.strong_count() > 0);
        let mut waiting = 0;
        for out in open.iter().filter_map(Weak::upgrade) {
            if first {
                out.notice_closing();
            }
            if !out.closed.get() {
                waiting += out.inflight.get();
            }
        }
        waiting
    }
}

/// Serves client connections on `listener`: at most `connections_max` open,
/// each closed unless it says hello within `hello_timeout`.
pub async fn serve(listener: TcpListener, shard: Weak<Shard>, connections_max: usize, hello_timeout: std::time::Duration, metrics: Arc<CoreMetrics>, tasks: TaskSet) {
    let bound = Bound { what: "client", open_max: connections_max, open: |m| &m.client_connections, refused: |m| &m.client_connections_refused };
    let mut listener = BoundedListener::new(listener, bound, metrics.clone());
    loop {
        let (stream, held) = listener.accept().await;
        let Some(s) = shard.upgrade() else { return };
        let shard = shard.clone();
        let hello = ServerHello { node_id: s.node, core: s.core, cores: s.cores() };
        drop(s);
        let (inner, metrics) = (tasks.clone(), metrics.clone());
        tasks.spawn(async move {
            let _held = held;
            let peer = stream.peer_addr().ok();
            if let Err(e) = connection(stream, hello, hello_timeout, shard, inner).await {
                if matches!(e, ConnError::Proto(_)) {
                    metrics.client_protocol_errors.fetch_add(1, Ordering::Relaxed);
                }
                tracing::warn!(?peer, "closing client connection: {e}");
            }
        });
    }
}

#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Proto(#[from] proto::ProtoError),
}

async fn connection(mut stream: TcpStream, hello: ServerHello, hello_timeout: std::time::Duration, shard: Weak<Shard>, tasks: TaskSet) -> Result<(), ConnError> {
    stream.set_nodelay(true).map_err(crate::io_error)?;
    // A connection that never says hello would hold one of the core's
    // client connections for good.
    stream.set_read_timeout(Some(hello_timeout)).map_err(crate::io_error)?;
    let mut buf = vec![0u8; READ_CHUNK_BYTES];
    let mut filled = 0;
    loop {
        match proto::decode_client_hello(&buf[..filled])? {
            Decoded::Frame((), used) => {
                buf.copy_within(used..filled, 0);
                filled -= used;
                break;
            }
            Decoded::NeedMore => {
                let n = stream.read(&mut buf[filled..]).await?;
                if n == 0 {
                    return Ok(());
                }
                filled += n;
            }
        }
    }
    stream.set_read_timeout(None).map_err(crate::io_error)?;
    let (mut rd, mut wr) = futures_lite::io::split(stream);
    let mut hello_bytes = Vec::new();
    proto::encode_server_hello(&hello, &mut hello_bytes);
    wr.write_all(&hello_bytes).await?;

    let out = Rc::new(Outgoing { buf: RefCell::new(Vec::new()), inflight: Cell::new(0), wake_writer: Signal::default(), wake_reader: Signal::default(), closed: Cell::new(false) });
    let writer_out = out.clone();
    tasks.spawn(async move {
        let mut pending = Vec::new();
        loop {
            if writer_out.buf.borrow().is_empty() {
                if writer_out.closed.get() {
                    return; // Everything answered is written.
                }
                writer_out.wake_writer.wait().await;
                continue;
            }
            std::mem::swap(&mut pending, &mut *writer_out.buf.borrow_mut());
            if wr.write_all(&pending).await.is_err() {
                writer_out.closed.set(true);
                writer_out.wake_reader.notify();
                return;
            }
            pending.clear();
            trim_buffer(&mut pending, 0, BUFFER_KEPT_BYTES_MAX);
        }
    });
    if let Some(s) = shard.upgrade() {
        s.client_conns.register(&out);
    }
    let result = read_requests(&mut rd, &mut buf, filled, &shard, &out).await;
    if result.is_ok() {
        // The client closed its sending half (or the node stops): answer
        // what it asked before closing, for a while.
        drain(&out).await;
    }
    out.closed.set(true);
    out.wake_writer.notify();
    result
}

/// Waits until every request of the connection is answered (each answer
/// notifies `wake_reader`), the writer failed, or `DRAIN_TIMEOUT` passed.
async fn drain(out: &Outgoing) {
    let deadline = std::time::Instant::now() + DRAIN_TIMEOUT;
    while out.inflight.get() > 0 && !out.closed.get() {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            tracing::warn!(unanswered = out.inflight.get(), "client closed its side; giving up on the answers still pending");
            return;
        }
        futures_lite::future::or(out.wake_reader.wait(), glommio::timer::sleep(left)).await;
    }
}

async fn read_requests<R: futures_lite::AsyncRead + Unpin>(rd: &mut R, buf: &mut Vec<u8>, mut filled: usize, shard: &Weak<Shard>, out: &Rc<Outgoing>) -> Result<(), ConnError> {
    loop {
        let mut start = 0;
        loop {
            if out.inflight.get() >= CONNECTION_INFLIGHT_MAX {
                break;
            }
            let Decoded::Frame(req, used) = proto::decode_request(&buf[start..filled])? else { break };
            start += used;
            let Some(shard) = shard.upgrade() else { return Ok(()) };
            if shard.is_stopped() {
                return Ok(());
            }
            shard.metrics().client_requests.fetch_add(1, Ordering::Relaxed);
            out.inflight.set(out.inflight.get() + 1);
            let id = req.id;
            let reply_to = out.clone();
            shard.request(req, Box::new(move |reply| reply_to.reply(id, reply)));
        }
        if start > 0 {
            buf.copy_within(start..filled, 0);
            filled -= start;
            trim_buffer(buf, filled, BUFFER_KEPT_BYTES_MAX);
        }
        if out.closed.get() {
            return Ok(());
        }
        if out.inflight.get() >= CONNECTION_INFLIGHT_MAX {
            out.wake_reader.wait().await;
            continue;
        }
        if filled == buf.len() {
            let grow = buf.len().clamp(READ_CHUNK_BYTES, proto::REQUEST_BYTES_MAX + 64);
            buf.resize(buf.len() + grow, 0);
        }
        let n = rd.read(&mut buf[filled..]).await?;
        if n == 0 {
            return Ok(());
        }
        filled += n;
    }
}
