//! Connections between core `k` of this node and core `k` of each peer.
//!
//! Each direction has its own TCP connection: this core dials every peer's
//! core to send (`PeerLink`, reconnecting with back-off) and accepts the
//! peers' connections to receive (`serve_inbound`). A frame holds every
//! message for that peer from one loop iteration. Raft tolerates loss, so
//! while a peer is unreachable its frames are dropped, never queued without
//! bound. A bad handshake or frame closes that connection with a logged
//! error; the node goes on. The handshake goes both ways: the accepting
//! core answers with its own, and a dialler that reached another node,
//! cluster, version or core than it dialled hangs up and tries again later.
//!
//! A peer can also fall silent without any connection closing: a network
//! that drops every packet, a frozen host. So a link with nothing to send
//! for a while sends an empty frame, and a connection that brings nothing
//! for longer than `Liveness::silence_timeout` is closed as if the peer had
//! closed it (`Inbound::Lost`): the groups resting under that peer's
//! leadership then wake and elect another leader.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use raftcore::Traffic;

use super::wire::{self, Decoded, Envelope, Frame, Handshake, SenderState};
use crate::accept::{Bound, BoundedListener};
use crate::framing::trim_buffer;
use crate::node::metrics::CoreMetrics;
use crate::signal::Signal;
use crate::tasks::TaskSet;

/// Bytes of encoded frames waiting for one peer before new ones are dropped.
pub const PEER_QUEUE_BYTES_MAX: usize = 64 << 20;
/// Back-off between connection attempts.
const RECONNECT_DELAY_MIN: Duration = Duration::from_millis(10);
const RECONNECT_DELAY_MAX: Duration = Duration::from_secs(1);
/// How long dialling a peer may take. (An accepted connection must bring
/// its handshake within the silence timeout.)
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);
/// Receive buffer growth step.
const READ_CHUNK_BYTES: usize = 256 << 10;
/// Inbound connections a core keeps open, handshakes in progress included
/// (one per peer node is the norm); beyond it new ones are closed at once,
/// so that strangers cannot take every file descriptor.
pub const INBOUND_CONNECTIONS_MAX: usize = 256;

/// How long a peer may stay silent before it counts as lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Liveness {
    /// An inbound connection that brings not one byte for this long is
    /// closed and its peer reported lost; an outbound one whose frames
    /// cannot be written for this long is closed and dialled again.
    pub silence_timeout: Duration,
}

impl Liveness {
    /// How long a link stays quiet before it sends an empty frame: a
    /// quarter of the timeout, so a few can be late without the peer
    /// counting this node lost.
    pub fn keepalive_interval(&self) -> Duration {
        self.silence_timeout / 4
    }
}

/// The sending side towards one peer core.
pub struct PeerLink {
    pub node: u64,
    addr: SocketAddr,
    hello: Handshake,
    liveness: Liveness,
    queue: RefCell<Vec<u8>>,
    encoder: RefCell<wire::Encoder>,
    wake: Signal,
    connected: Cell<bool>,
    /// Set by every frame of messages queued; the keepalive loop clears it.
    sent_lately: Cell<bool>,
    stopped: Cell<bool>,
    metrics: Arc<CoreMetrics>,
    /// This node's drain flag, told to the peer in every frame.
    draining: Arc<AtomicBool>,
}

impl PeerLink {
    pub fn new(node: u64, addr: SocketAddr, hello: Handshake, liveness: Liveness, metrics: Arc<CoreMetrics>, draining: Arc<AtomicBool>) -> Rc<PeerLink> {
        Rc::new(PeerLink {
            node,
            addr,
            hello,
            liveness,
            queue: RefCell::new(Vec::new()),
            encoder: RefCell::default(),
            wake: Signal::default(),
            connected: Cell::new(false),
            sent_lately: Cell::new(false),
            stopped: Cell::new(false),
            metrics,
            draining,
        })
    }

    fn sender_state(&self) -> SenderState {
        SenderState { draining: self.draining.load(Ordering::Relaxed) }
    }

    /// Queues the frame (or frames, `Encoder::encode`) with `batch` and
    /// the groups deleted here that the peer is to be told of; dropped
    /// when the peer is not connected or too far behind.
    pub fn send(&self, batch: &[Envelope], deleted_groups: &[u64]) {
        if batch.is_empty() && deleted_groups.is_empty() {
            return;
        }
        let mut queue = self.queue.borrow_mut();
        let m = &self.metrics;
        if !self.connected.get() || queue.len() > PEER_QUEUE_BYTES_MAX {
            m.frames_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let frames = self.encoder.borrow_mut().encode(batch, deleted_groups, self.sender_state(), &mut queue);
        self.sent_lately.set(true);
        m.frames_sent.fetch_add(frames as u64, Ordering::Relaxed);
        let mut by_traffic = [0u64; Traffic::COUNT];
        for e in batch {
            by_traffic[e.msg.body.traffic() as usize] += 1;
        }
        let heartbeats = by_traffic[Traffic::Heartbeat as usize] + by_traffic[Traffic::HeartbeatAsking as usize] + by_traffic[Traffic::HeartbeatAnswer as usize];
        if !batch.is_empty() && heartbeats == batch.len() as u64 {
            m.heartbeat_frames.fetch_add(1, Ordering::Relaxed);
        }
        for (counter, n) in m.messages_by_traffic.iter().zip(by_traffic) {
            if n > 0 {
                counter.fetch_add(n, Ordering::Relaxed);
            }
        }
        m.messages_sent.fetch_add(batch.len() as u64, Ordering::Relaxed);
        drop(queue);
        self.wake.notify();
    }

    pub fn stop(&self) {
        self.stopped.set(true);
        self.wake.notify();
    }

    /// Keeps a connection to the peer open and writes queued frames to it,
    /// an empty one when there was nothing to write for a while.
    pub async fn run(self: Rc<Self>) {
        futures_lite::future::zip(self.clone().keep_connected(), self.keep_alive()).await;
    }

    /// Queues an empty frame after each keepalive interval in which the
    /// link queued no other: a busy link sends none.
    async fn keep_alive(self: Rc<Self>) {
        while !self.stopped.get() {
            glommio::timer::sleep(self.liveness.keepalive_interval()).await;
            if !self.sent_lately.replace(false) && self.connected.get() {
                let mut queue = self.queue.borrow_mut();
                if queue.is_empty() {
                    self.encoder.borrow_mut().encode(&[], &[], self.sender_state(), &mut queue);
                    self.metrics.keepalive_frames.fetch_add(1, Ordering::Relaxed);
                    self.wake.notify();
                }
            }
        }
    }

    async fn keep_connected(self: Rc<Self>) {
        let mut delay = RECONNECT_DELAY_MIN;
        while !self.stopped.get() {
            match self.connect().await {
                Ok(stream) => {
                    delay = RECONNECT_DELAY_MIN;
                    self.connected.set(true);
                    if let Err(e) = self.write_loop(stream).await {
                        tracing::debug!(peer = self.node, addr = %self.addr, "peer connection lost: {e}");
                    }
                    self.connected.set(false);
                    self.queue.borrow_mut().clear();
                }
                Err(e) => {
                    tracing::trace!(peer = self.node, addr = %self.addr, "connecting: {e}");
                    glommio::timer::sleep(delay).await;
                    delay = (delay * 2).min(RECONNECT_DELAY_MAX);
                }
            }
        }
    }

    async fn connect(&self) -> std::io::Result<TcpStream> {
        let mut stream = TcpStream::connect_timeout(self.addr, DIAL_TIMEOUT).await.map_err(crate::io_error)?;
        stream.set_nodelay(true).map_err(crate::io_error)?;
        stream.set_write_timeout(Some(self.liveness.silence_timeout)).map_err(crate::io_error)?;
        stream.set_read_timeout(Some(DIAL_TIMEOUT)).map_err(crate::io_error)?;
        let mut hello = Vec::new();
        wire::encode_handshake(&self.hello, &mut hello);
        stream.write_all(&hello).await?;
        let mut answer = [0u8; wire::HANDSHAKE_BYTES];
        stream.read_exact(&mut answer).await?;
        if let Err(why) = self.check_answer(&answer) {
            self.metrics.peer_dials_refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(peer = self.node, addr = %self.addr, "hanging up: {why}");
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, why));
        }
        Ok(stream)
    }

    /// Whether the handshake the accepting core answered with is that of
    /// the peer core this link dialled.
    fn check_answer(&self, answer: &[u8]) -> Result<(), String> {
        let h = match wire::decode_handshake(answer) {
            Ok(Decoded::Frame(h, _)) => h,
            Ok(Decoded::NeedMore) => unreachable!("a whole handshake was read"),
            Err(e) => return Err(format!("{} answered with no Myriad handshake: {e}", self.addr)),
        };
        let me = &self.hello;
        if (h.cluster_id, h.version) != (me.cluster_id, me.version) {
            return Err(format!("{} is cluster {:#x} at protocol version {}, this node cluster {:#x} at version {}", self.addr, h.cluster_id, h.version, me.cluster_id, me.version));
        }
        if (h.node_id, h.core, h.cores) != (self.node, me.core, me.cores) {
            return Err(format!("{} is node {} core {}/{}, where node {} core {}/{} was configured", self.addr, h.node_id, h.core, h.cores, self.node, me.core, me.cores));
        }
        Ok(())
    }

    async fn write_loop(&self, mut stream: TcpStream) -> std::io::Result<()> {
        let mut out = Vec::new();
        while !self.stopped.get() {
            if self.queue.borrow().is_empty() {
                self.wake.wait().await;
                continue;
            }
            std::mem::swap(&mut out, &mut *self.queue.borrow_mut());
            stream.write_all(&out).await?;
            out.clear();
            trim_buffer(&mut out, 0, wire::BUFFER_KEPT_BYTES_MAX);
        }
        Ok(())
    }
}

/// What an accepted connection must prove in its handshake, and who
/// answers it (`node_id`, with the rest of these fields).
#[derive(Clone, Copy, Debug)]
pub struct Expect {
    pub node_id: u64,
    pub cluster_id: u64,
    pub core: u32,
    pub cores: u32,
    pub version: u16,
}

#[derive(Debug, thiserror::Error)]
pub enum InboundError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad frame: {0}")]
    Wire(#[from] wire::WireError),
    #[error("handshake: {0}")]
    Handshake(String),
    #[error("connection closed")]
    Closed,
    #[error("nothing came for {0:?}")]
    Silent(Duration),
}

/// What an inbound connection reports about its peer.
pub enum Inbound {
    Batch(Frame),
    /// The connection of a peer that had completed its handshake ended: it
    /// may have crashed (groups it led must not wait for it quietly).
    Lost,
}

/// Accepts peer connections on `listener` and hands every decoded batch to
/// `deliver` (with the sending node's id).
pub async fn serve_inbound<F>(listener: TcpListener, expect: Expect, liveness: Liveness, is_peer: Rc<dyn Fn(u64) -> bool>, deliver: Rc<F>, metrics: Arc<CoreMetrics>, tasks: TaskSet)
where
    F: Fn(u64, Inbound) + 'static,
{
    let bound = Bound { what: "peer", open_max: INBOUND_CONNECTIONS_MAX, open: |m| &m.peer_connections, refused: |m| &m.connections_refused };
    let mut listener = BoundedListener::new(listener, bound, metrics.clone());
    loop {
        let (stream, held) = listener.accept().await;
        let (deliver, metrics, is_peer) = (deliver.clone(), metrics.clone(), is_peer.clone());
        tasks.spawn(async move {
            let _held = held;
            let peer = stream.peer_addr().ok();
            if let Err(e) = stream.set_read_timeout(Some(liveness.silence_timeout)) {
                tracing::warn!(?peer, "closing peer connection: setting its read timeout: {e}");
                return;
            }
            match read_peer(stream, expect, &*is_peer, &*deliver, &metrics).await {
                Ok(()) | Err(InboundError::Closed) => {}
                Err(e @ InboundError::Silent(_)) => {
                    metrics.peers_silent.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(?peer, "closing peer connection, its peer counted lost: {e}");
                }
                Err(e) => {
                    metrics.connections_refused.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(?peer, "closing peer connection: {e}");
                }
            }
        });
    }
}

async fn read_peer<F: Fn(u64, Inbound)>(mut stream: TcpStream, expect: Expect, is_peer: &dyn Fn(u64) -> bool, deliver: &F, metrics: &CoreMetrics) -> Result<(), InboundError> {
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK_BYTES);
    let mut filled = 0;
    let hello = loop {
        if let Decoded::Frame(h, used) = wire::decode_handshake(&buf[..filled])? {
            buf.drain(..used);
            filled -= used;
            break h;
        }
        filled += read_more(&mut stream, &mut buf, filled).await.map_err(|e| match e {
            // No peer yet, none to count lost.
            InboundError::Silent(waited) => InboundError::Handshake(format!("none came in {waited:?}")),
            e => e,
        })?;
    };
    check_handshake(&hello, expect, is_peer)?;
    let mut answer = Vec::with_capacity(wire::HANDSHAKE_BYTES);
    wire::encode_handshake(&Handshake { cluster_id: expect.cluster_id, node_id: expect.node_id, core: expect.core, cores: expect.cores, version: expect.version }, &mut answer);
    stream.write_all(&answer).await?;
    let result = read_frames(stream, buf, filled, hello.node_id, deliver, metrics).await;
    deliver(hello.node_id, Inbound::Lost);
    result
}

async fn read_frames<F: Fn(u64, Inbound)>(mut stream: TcpStream, mut buf: Vec<u8>, mut filled: usize, node: u64, deliver: &F, metrics: &CoreMetrics) -> Result<(), InboundError> {
    let mut decoder = wire::Decoder::default();
    loop {
        let mut start = 0;
        while let Decoded::Frame(batch, used) = decoder.decode(&buf[start..filled])? {
            start += used;
            metrics.frames_received.fetch_add(1, Ordering::Relaxed);
            deliver(node, Inbound::Batch(batch));
        }
        if start > 0 {
            buf.copy_within(start..filled, 0);
            filled -= start;
            trim_buffer(&mut buf, filled, wire::BUFFER_KEPT_BYTES_MAX);
        }
        filled += read_more(&mut stream, &mut buf, filled).await?;
    }
}

fn check_handshake(h: &Handshake, expect: Expect, is_peer: &dyn Fn(u64) -> bool) -> Result<(), InboundError> {
    let refuse = |why: String| Err(InboundError::Handshake(why));
    if h.cluster_id != expect.cluster_id {
        return refuse(format!("cluster id {:#x}, expected {:#x}", h.cluster_id, expect.cluster_id));
    }
    if h.version != expect.version {
        return refuse(format!("protocol version {}, expected {}", h.version, expect.version));
    }
    if h.cores != expect.cores || h.core != expect.core {
        return refuse(format!("core {}/{} dialled core {}/{}: every node must run the same core count", h.core, h.cores, expect.core, expect.cores));
    }
    if !is_peer(h.node_id) {
        return refuse(format!("node {} is not a peer of this cluster", h.node_id));
    }
    Ok(())
}

/// Reads at least one byte into `buf[filled..]`, growing it; returns the count.
async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>, filled: usize) -> Result<usize, InboundError> {
    if buf.len() < filled + READ_CHUNK_BYTES {
        buf.resize(filled + READ_CHUNK_BYTES, 0);
    }
    let n = match stream.read(&mut buf[filled..]).await {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return Err(InboundError::Silent(stream.read_timeout().unwrap_or_default())),
        Err(e) => return Err(e.into()),
    };
    if n == 0 {
        return Err(InboundError::Closed);
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A peer address where another node answers (a configuration that
    /// swapped two nodes' addresses) is hung up on, and frames for the
    /// configured node are not handed to it; the right node is connected.
    #[test]
    fn a_dial_answered_by_another_node_is_hung_up_on() {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async move {
                let hello = Handshake { cluster_id: 7, node_id: 1, core: 0, cores: 1, version: 3 };
                for (answering, connects) in [(3, false), (2, true)] {
                    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                    let addr = listener.local_addr().unwrap();
                    let frames_got = Rc::new(Cell::new(0usize));
                    let got = frames_got.clone();
                    // A peer core answering as node `answering`.
                    let peer = glommio::spawn_local(async move {
                        loop {
                            let mut stream = listener.accept().await.unwrap();
                            let mut theirs = [0u8; wire::HANDSHAKE_BYTES];
                            stream.read_exact(&mut theirs).await.unwrap();
                            let mut answer = Vec::new();
                            wire::encode_handshake(&Handshake { node_id: answering, ..hello }, &mut answer);
                            stream.write_all(&answer).await.unwrap();
                            let mut rest = Vec::new();
                            let _ = stream.read_to_end(&mut rest).await;
                            got.set(got.get() + usize::from(!rest.is_empty()));
                        }
                    })
                    .detach();
                    let metrics = Arc::new(CoreMetrics::default());
                    let link = PeerLink::new(2, addr, hello, Liveness { silence_timeout: Duration::from_secs(2) }, metrics.clone(), Arc::default());
                    let running = glommio::spawn_local(link.clone().run()).detach();
                    let settled = |m: &CoreMetrics| if connects { link.connected.get() } else { m.peer_dials_refused.load(Ordering::Relaxed) >= 2 };
                    for _ in 0..500 {
                        if settled(&metrics) {
                            break;
                        }
                        glommio::timer::sleep(Duration::from_millis(10)).await;
                    }
                    assert!(settled(&metrics), "answered as node {answering}: connected {}, dials refused {:?}", link.connected.get(), metrics.peer_dials_refused);
                    let heartbeat = raftcore::Message { from: raftcore::NodeId(1), to: raftcore::NodeId(2), term: raftcore::Term(1), body: raftcore::MessageBody::Heartbeat { commit: raftcore::LogIndex(0), round: 0 } };
                    link.send(&[Envelope { group: 1, msg: heartbeat }], &[]);
                    assert_eq!(metrics.frames_dropped.load(Ordering::Relaxed), u64::from(!connects), "answered as node {answering}");
                    link.stop();
                    running.cancel();
                    peer.cancel();
                    if !connects {
                        assert_eq!(frames_got.get(), 0, "node 3 got a frame meant for node 2");
                    }
                }
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
