//! Talking to a Myriad cluster: the protocol (`proto`), the server side of a
//! core's client port (`server`), and a blocking Rust client.
//!
//! The client is shard-aware: it computes the core that owns a group and
//! talks to that core's port directly. It remembers the leader of each group,
//! follows `NotLeader` hints, retries what certainly did not take effect with
//! back-off, and reports `Outcome::Unknown` (never a success, never a
//! failure) when a write may or may not have been applied: leadership lost
//! with the write in flight, or the connection lost or timed out after the
//! request was sent.

pub mod proto;
pub mod server;

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::framing::Decoded;
use crate::node::config::core_of;
use proto::{Consistency, Op, Reply, Request, ServerHello};

/// One connection to one core of one node; requests may be pipelined.
pub struct Connection {
    stream: TcpStream,
    /// Kept: the socket forgets its peer once the peer closed it.
    addr: SocketAddr,
    pub hello: ServerHello,
    out: Vec<u8>,
    buf: Vec<u8>,
    start: usize,
    filled: usize,
    /// The server sent a `Closing` notice: its node is about to stop, and
    /// nothing more should be sent on this connection.
    closing: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("i/o with {addr}: {source}")]
    Io { addr: SocketAddr, source: std::io::Error },
    #[error("protocol error from {addr}: {source}")]
    Proto { addr: SocketAddr, source: proto::ProtoError },
    #[error("{addr} closed the connection")]
    Closed { addr: SocketAddr },
}

impl Connection {
    pub fn connect(addr: SocketAddr, timeout: Duration) -> Result<Connection, ConnectionError> {
        let io = |source| ConnectionError::Io { addr, source };
        let stream = TcpStream::connect_timeout(&addr, timeout).map_err(io)?;
        stream.set_nodelay(true).map_err(io)?;
        stream.set_read_timeout(Some(timeout)).map_err(io)?;
        stream.set_write_timeout(Some(timeout)).map_err(io)?;
        let mut c = Connection { stream, addr, hello: ServerHello { node_id: 0, core: 0, cores: 0 }, out: Vec::new(), buf: vec![0; 64 << 10], start: 0, filled: 0, closing: false };
        let mut hello = Vec::new();
        proto::encode_client_hello(&mut hello);
        c.stream.write_all(&hello).map_err(io)?;
        c.hello = c.read_with(proto::decode_server_hello)?;
        Ok(c)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn set_timeout(&self, timeout: Duration) -> Result<(), ConnectionError> {
        let addr = self.addr();
        self.stream.set_read_timeout(Some(timeout)).map_err(|source| ConnectionError::Io { addr, source })
    }

    /// Queues a request; `flush` sends what is queued.
    pub fn queue(&mut self, req: &Request) {
        proto::encode_request(req, &mut self.out);
    }

    pub fn flush(&mut self) -> Result<(), ConnectionError> {
        let addr = self.addr();
        self.stream.write_all(&self.out).map_err(|source| ConnectionError::Io { addr, source })?;
        self.out.clear();
        Ok(())
    }

    /// The server said its node is about to stop (a `Closing` notice): send
    /// nothing more here, take the replies still due, then drop the
    /// connection.
    pub fn is_closing(&self) -> bool {
        self.closing
    }

    /// Blocks for the next response (any request's, or a notice).
    pub fn recv(&mut self) -> Result<proto::Response, ConnectionError> {
        let resp = self.read_with(proto::decode_response)?;
        self.note(&resp);
        Ok(resp)
    }

    /// Blocks for at least one response, then takes every response already
    /// received (one read system call serves a whole pipeline's worth).
    pub fn recv_batch(&mut self, out: &mut Vec<proto::Response>) -> Result<(), ConnectionError> {
        out.push(self.recv()?);
        let addr = self.addr();
        while let Decoded::Frame(resp, used) = proto::decode_response(&self.buf[self.start..self.filled]).map_err(|source| ConnectionError::Proto { addr, source })? {
            self.start += used;
            self.note(&resp);
            out.push(resp);
        }
        Ok(())
    }

    /// For a connection with no request awaiting its reply: takes without
    /// blocking what arrived (replies left from requests given up on are
    /// dropped) and tells whether the server said it is closing.
    pub fn poll_idle(&mut self) -> Result<bool, ConnectionError> {
        let addr = self.addr();
        let io = |source| ConnectionError::Io { addr, source };
        self.stream.set_nonblocking(true).map_err(io)?;
        let read = loop {
            if self.filled == self.buf.len() {
                // Idle: what is buffered is all stale or a notice.
                self.recv_buffered()?;
                if self.filled == self.buf.len() {
                    break Ok(());
                }
            }
            match self.stream.read(&mut self.buf[self.filled..]) {
                Ok(0) => break Err(ConnectionError::Closed { addr }),
                Ok(n) => self.filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break Ok(()),
                Err(e) => break Err(io(e)),
            }
        };
        self.stream.set_nonblocking(false).map_err(io)?;
        read?;
        self.recv_buffered()?;
        Ok(self.closing)
    }

    /// Decodes (and drops, noting notices) every whole frame buffered,
    /// moving what is left to the front.
    fn recv_buffered(&mut self) -> Result<(), ConnectionError> {
        let addr = self.addr();
        while let Decoded::Frame(resp, used) = proto::decode_response(&self.buf[self.start..self.filled]).map_err(|source| ConnectionError::Proto { addr, source })? {
            self.start += used;
            self.note(&resp);
        }
        self.buf.copy_within(self.start..self.filled, 0);
        self.filled -= self.start;
        self.start = 0;
        Ok(())
    }

    fn note(&mut self, resp: &proto::Response) {
        if resp.id == proto::CLOSING_NOTICE_ID && resp.reply == Reply::Closing {
            self.closing = true;
        }
    }

    fn read_with<T>(&mut self, decode: impl Fn(&[u8]) -> Result<Decoded<T>, proto::ProtoError>) -> Result<T, ConnectionError> {
        let addr = self.addr();
        loop {
            match decode(&self.buf[self.start..self.filled]).map_err(|source| ConnectionError::Proto { addr, source })? {
                Decoded::Frame(value, used) => {
                    self.start += used;
                    return Ok(value);
                }
                Decoded::NeedMore => {}
            }
            if self.start > 0 {
                self.buf.copy_within(self.start..self.filled, 0);
                self.filled -= self.start;
                self.start = 0;
            }
            if self.filled == self.buf.len() {
                let grow = self.buf.len();
                self.buf.resize(self.buf.len() + grow, 0);
            }
            let n = self.stream.read(&mut self.buf[self.filled..]).map_err(|source| ConnectionError::Io { addr, source })?;
            if n == 0 {
                return Err(ConnectionError::Closed { addr });
            }
            self.filled += n;
        }
    }
}

/// Where each node's cores serve clients: node id → one address per core.
#[derive(Clone, Debug, Default)]
pub struct ClusterMap {
    pub nodes: BTreeMap<u64, Vec<SocketAddr>>,
}

impl ClusterMap {
    /// Nodes given by their base client address: core `k` serves port + `k`.
    pub fn from_bases(bases: &BTreeMap<u64, SocketAddr>, cores: u32) -> ClusterMap {
        let nodes = bases.iter().map(|(&id, a)| (id, (0..cores).map(|k| SocketAddr::new(a.ip(), a.port() + k as u16)).collect())).collect();
        ClusterMap { nodes }
    }

    fn cores(&self) -> u32 {
        self.nodes.values().next().map_or(1, |a| a.len() as u32)
    }
}

/// What became of one operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The cluster answered: the write took effect (or the read saw this).
    Ok(Reply),
    /// The write may or may not have been applied.
    Unknown(String),
    /// It certainly did not take effect.
    Failed(String),
}

/// Most group administration requests one connection carries at a time
/// (`create_groups`): a window that neither side's socket buffers can fill
/// while the other waits.
pub const ADMIN_PIPELINE_MAX: usize = 1024;

#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// How long one attempt waits for its reply.
    pub request_timeout: Duration,
    /// How long an operation keeps retrying (leader changes, busy nodes).
    pub deadline: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions { request_timeout: Duration::from_secs(5), deadline: Duration::from_secs(15), backoff_min: Duration::from_millis(5), backoff_max: Duration::from_millis(500) }
    }
}

/// A blocking client for a whole cluster, one operation at a time.
pub struct Client {
    map: ClusterMap,
    opts: ClientOptions,
    conns: HashMap<(u64, u32), Connection>,
    leaders: HashMap<u64, u64>,
    next_id: u64,
    /// Rotates the node tried when no leader is known.
    probe: usize,
    /// Nodes that said they are about to stop (a `Closing` notice), and
    /// when: tried without a leader hint only if every node did.
    closing_since: HashMap<u64, Instant>,
}

/// How long a node that said it is about to stop is left out of the probes:
/// it stops within `node::drain::CLIENT_CLOSE_WAIT` (2 s) of saying so.
const CLOSING_AVOID: Duration = Duration::from_secs(5);

impl Client {
    pub fn new(map: ClusterMap, opts: ClientOptions) -> Client {
        Client { map, opts, conns: HashMap::new(), leaders: HashMap::new(), next_id: 1, probe: 0, closing_since: HashMap::new() }
    }

    /// The node this client believes leads `group`.
    pub fn leader_of(&self, group: u64) -> Option<u64> {
        self.leaders.get(&group).copied()
    }

    pub fn put(&mut self, group: u64, key: impl Into<Bytes>, value: impl Into<Bytes>) -> Outcome {
        self.call(group, Op::Put { key: key.into(), value: value.into() })
    }

    pub fn get(&mut self, group: u64, key: impl Into<Bytes>) -> Outcome {
        self.call(group, Op::Get { key: key.into(), consistency: Consistency::Linearizable })
    }

    pub fn delete(&mut self, group: u64, key: impl Into<Bytes>) -> Outcome {
        self.call(group, Op::Delete { key: key.into() })
    }

    pub fn cas(&mut self, group: u64, key: impl Into<Bytes>, expected: Option<Bytes>, new: Option<Bytes>) -> Outcome {
        self.call(group, Op::Cas { key: key.into(), expected, new })
    }

    /// Hands `group`'s leadership to node `to` (see `Op::TransferLeader`):
    /// `Ok(Done)` once its leader stepped down with `to` leading.
    pub fn transfer_leader(&mut self, group: u64, to: u64) -> Outcome {
        let outcome = self.call(group, Op::TransferLeader { to });
        if outcome == Outcome::Ok(Reply::Done) {
            self.leaders.insert(group, to);
        }
        outcome
    }

    /// Creates `group` on every node of the map (idempotent; a deleted
    /// group's id is refused). `Ok(Done)` once a majority of the nodes has
    /// it durably: a node that was down, or that the request did not reach,
    /// creates it when the group's leader or a candidate first writes to it.
    /// `Unknown` when fewer answered (those that did pass it on while they
    /// live), `Failed` when none did.
    pub fn create_group(&mut self, group: u64) -> Outcome {
        self.create_groups(&[group]).pop().expect("one outcome per group")
    }

    /// `create_group` for each of `groups`, pipelined: each node's core gets
    /// its groups' requests together (up to `ADMIN_PIPELINE_MAX` at a
    /// time), which it makes durable in one WAL write. One outcome per
    /// group, in order.
    pub fn create_groups(&mut self, groups: &[u64]) -> Vec<Outcome> {
        self.on_every_node(groups, Op::CreateGroup)
    }

    /// Deletes `group` and its data on every node of the map, for good
    /// (idempotent; its id is not used again). Answered as `create_group`:
    /// a node that misses the request is told by those that did not.
    pub fn delete_group(&mut self, group: u64) -> Outcome {
        self.delete_groups(&[group]).pop().expect("one outcome per group")
    }

    /// `delete_group` for each of `groups`, pipelined as `create_groups`.
    pub fn delete_groups(&mut self, groups: &[u64]) -> Vec<Outcome> {
        for g in groups {
            self.leaders.remove(g);
        }
        self.on_every_node(groups, Op::DeleteGroup)
    }

    /// Sends one request to `node`'s `core` and waits for its reply
    /// (replies to other ids on that connection are stale and skipped).
    fn round_trip(&mut self, node: u64, core: u32, group: u64, op: Op) -> Result<Reply, ConnectionError> {
        let mut replies = self.pipeline(node, core, std::iter::once((group, op)))?;
        Ok(replies.pop().expect("one reply per request"))
    }

    /// Asks every node of the map to do `op` to each of `groups` (see
    /// `create_group`), pipelined per (node, core); per group, `Ok(Done)`
    /// once a majority did it, `Unknown` when fewer did, `Failed` when none
    /// did.
    fn on_every_node(&mut self, groups: &[u64], op: Op) -> Vec<Outcome> {
        let (cores, nodes): (u32, Vec<u64>) = (self.map.cores(), self.map.nodes.keys().copied().collect());
        let mut done: Vec<Vec<u64>> = vec![Vec::new(); groups.len()];
        let mut refusals: Vec<Vec<String>> = vec![Vec::new(); groups.len()];
        for &node in &nodes {
            for core in 0..cores {
                let mine: Vec<usize> = (0..groups.len()).filter(|&i| core_of(groups[i], cores) == core).collect();
                for chunk in mine.chunks(ADMIN_PIPELINE_MAX) {
                    match self.pipeline(node, core, chunk.iter().map(|&i| (groups[i], op.clone()))) {
                        Ok(replies) => {
                            for (&i, reply) in chunk.iter().zip(replies) {
                                match reply {
                                    Reply::Done => done[i].push(node),
                                    other => refusals[i].push(format!("node {node}: {other:?}")),
                                }
                            }
                        }
                        Err(e) => {
                            self.conns.remove(&(node, core));
                            for &i in chunk {
                                refusals[i].push(format!("node {node}: {e}"));
                            }
                        }
                    }
                }
            }
        }
        done.into_iter()
            .zip(refusals)
            .map(|(done, refusals)| {
                if done.len() > nodes.len() / 2 {
                    Outcome::Ok(Reply::Done)
                } else if done.is_empty() {
                    Outcome::Failed(refusals.join("; "))
                } else {
                    Outcome::Unknown(format!("only nodes {done:?} did it ({}); they pass it on to the others while they live", refusals.join("; ")))
                }
            })
            .collect()
    }

    /// Sends `requests` to `node`'s `core` in one write and waits for all
    /// their replies, in the requests' order.
    fn pipeline(&mut self, node: u64, core: u32, requests: impl Iterator<Item = (u64, Op)>) -> Result<Vec<Reply>, ConnectionError> {
        let requests: Vec<(u64, Op)> = requests.collect();
        let (first, count) = (self.next_id, requests.len() as u64);
        // Taken even if the connection fails: ids are never reused.
        self.next_id += count;
        let c = self.connection(node, core)?;
        for (k, (group, op)) in (0..).zip(requests) {
            c.queue(&Request { id: first + k, group, op });
        }
        c.flush()?;
        let mut replies: Vec<Option<Reply>> = vec![None; count as usize];
        let mut left = count;
        while left > 0 {
            let resp = c.recv()?;
            // Replies to other ids on this connection are stale: skipped.
            if let Some(slot) = resp.id.checked_sub(first).and_then(|k| replies.get_mut(k as usize)) {
                if slot.replace(resp.reply).is_none() {
                    left -= 1;
                }
            }
        }
        if c.is_closing() {
            // Its node stops soon: the next request opens another connection.
            self.conns.remove(&(node, core));
            self.closing_since.insert(node, Instant::now());
        }
        Ok(replies.into_iter().map(|r| r.expect("every reply came")).collect())
    }

    fn pick_node(&mut self, group: u64) -> u64 {
        if let Some(&l) = self.leaders.get(&group) {
            if self.map.nodes.contains_key(&l) {
                return l;
            }
        }
        let ids: Vec<u64> = self.map.nodes.keys().copied().collect();
        self.closing_since.retain(|_, since| since.elapsed() < CLOSING_AVOID);
        for _ in 0..ids.len() {
            self.probe = (self.probe + 1) % ids.len();
            if !self.closing_since.contains_key(&ids[self.probe]) {
                return ids[self.probe];
            }
        }
        // Every node is about to stop: try them in turn all the same.
        self.probe = (self.probe + 1) % ids.len().max(1);
        ids.get(self.probe).copied().unwrap_or(0)
    }

    fn connection(&mut self, node: u64, core: u32) -> Result<&mut Connection, ConnectionError> {
        // A pooled connection the server closed (it stopped, or dropped it)
        // or said it would: a write sent into it would end as an unknown
        // outcome, though it never arrived.
        if let Some(c) = self.conns.get_mut(&(node, core)) {
            match c.poll_idle() {
                Ok(false) => {}
                Ok(true) => {
                    self.closing_since.insert(node, Instant::now());
                    self.conns.remove(&(node, core));
                }
                Err(_) => {
                    self.conns.remove(&(node, core));
                }
            }
        }
        if !self.conns.contains_key(&(node, core)) {
            let addr = self.map.nodes[&node][core as usize];
            let c = Connection::connect(addr, self.opts.request_timeout)?;
            self.conns.insert((node, core), c);
        }
        Ok(self.conns.get_mut(&(node, core)).expect("just inserted"))
    }

    /// Runs `op` on `group` until it has a definite answer, the outcome
    /// becomes unknown, or the deadline passes.
    pub fn call(&mut self, group: u64, op: Op) -> Outcome {
        if self.map.nodes.is_empty() {
            return Outcome::Failed("no nodes to talk to".into());
        }
        let started = Instant::now();
        let mut backoff = self.opts.backoff_min;
        let mut last_error = String::from("deadline passed before any attempt");
        let core = core_of(group, self.map.cores());
        let write = op.is_write();
        while started.elapsed() < self.opts.deadline {
            let node = self.pick_node(group);
            let attempt = self.round_trip(node, core, group, op.clone());
            let reply = match attempt {
                Ok(r) => r,
                Err(e) => {
                    self.conns.remove(&(node, core));
                    self.leaders.remove(&group);
                    last_error = e.to_string();
                    let sent = !matches!(&e, ConnectionError::Io { source, .. } if source.kind() == std::io::ErrorKind::ConnectionRefused);
                    if write && sent {
                        // It may have been applied: a retry could apply it
                        // twice or answer for the second attempt (a CAS that
                        // took effect would come back failed).
                        return Outcome::Unknown(format!("the write may or may not have been applied: {e}"));
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(self.opts.backoff_max);
                    continue;
                }
            };
            match reply {
                Reply::NotLeader { leader } => {
                    if leader != 0 && leader != node {
                        self.leaders.insert(group, leader);
                        backoff = self.opts.backoff_min;
                    } else {
                        self.leaders.remove(&group);
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(self.opts.backoff_max);
                    }
                    last_error = format!("node {node} does not lead group {group}");
                }
                Reply::Busy => {
                    last_error = format!("node {node} is busy");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(self.opts.backoff_max);
                }
                Reply::Unknown => {
                    if write {
                        return Outcome::Unknown(format!("node {node} cannot tell whether the write to group {group} was applied"));
                    }
                    self.leaders.remove(&group);
                    last_error = "read interrupted by a leader change".into();
                }
                Reply::UnknownGroup => return Outcome::Failed(format!("group {group} does not exist")),
                Reply::WrongCore { core: c } => return Outcome::Failed(format!("node {node} says group {group} lives on core {c}, not {core}: the cluster's core count differs from the client's map")),
                Reply::Error(e) => return Outcome::Failed(e),
                ok => {
                    self.leaders.insert(group, node);
                    return Outcome::Ok(ok);
                }
            }
        }
        Outcome::Failed(format!("no answer before the deadline: {last_error}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A connection as `Connection::connect` leaves it, without the hello.
    fn connected_pair() -> (Connection, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let stream = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        let hello = ServerHello { node_id: 1, core: 0, cores: 1 };
        let addr = listener.local_addr().expect("addr");
        (Connection { stream, addr, hello, out: Vec::new(), buf: vec![0; 64], start: 0, filled: 0, closing: false }, server)
    }

    #[test]
    fn an_idle_connection_the_server_closed_is_seen_closed_before_reuse() {
        let (mut conn, server) = connected_pair();
        assert!(!conn.poll_idle().expect("open"), "an open, idle connection");
        drop(server);
        // The FIN crosses loopback at once, but give the kernel a moment.
        let deadline = Instant::now() + Duration::from_secs(5);
        while conn.poll_idle().is_ok() {
            assert!(Instant::now() < deadline, "the close was never seen");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Stale replies (more than the 64-byte buffer holds) are dropped, the
    /// closing notice behind them is seen, and the connection is left
    /// blocking: the next reply is waited for.
    #[test]
    fn an_idle_connection_takes_stale_replies_and_sees_a_closing_notice() {
        let (mut conn, mut server) = connected_pair();
        let mut frames = Vec::new();
        for id in 1..=5 {
            proto::encode_response(&proto::Response { id, reply: Reply::Error("a stale answer".into()) }, &mut frames);
        }
        server.write_all(&frames).expect("write");
        std::thread::sleep(Duration::from_millis(20));
        assert!(!conn.poll_idle().expect("open"), "no notice yet");
        let mut notice = Vec::new();
        proto::encode_response(&proto::Response { id: proto::CLOSING_NOTICE_ID, reply: Reply::Closing }, &mut notice);
        server.write_all(&notice).expect("write");
        std::thread::sleep(Duration::from_millis(20));
        assert!(conn.poll_idle().expect("open"), "the notice is seen");
        let replier = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            let mut frame = Vec::new();
            proto::encode_response(&proto::Response { id: 9, reply: Reply::Done }, &mut frame);
            server.write_all(&frame).expect("write");
            server
        });
        assert_eq!(conn.recv().expect("a reply").id, 9);
        drop(replier.join());
    }

    /// A node that takes a request and then drops the connection without
    /// an answer (a crash): a write ends `Unknown`, never retried (it may
    /// have been applied), and a read, retried on every attempt, `Failed`
    /// at the deadline.
    #[test]
    fn a_write_whose_connection_dies_unanswered_is_unknown() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("addr");
        let requests = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let seen = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut hello = vec![0u8; proto::CLIENT_HELLO_BYTES];
                if stream.read_exact(&mut hello).is_err() {
                    continue;
                }
                let mut answer = Vec::new();
                proto::encode_server_hello(&ServerHello { node_id: 1, core: 0, cores: 1 }, &mut answer);
                let _ = stream.write_all(&answer);
                let (mut buf, mut filled) = (vec![0u8; 4096], 0);
                while let Ok(n @ 1..) = stream.read(&mut buf[filled..]) {
                    filled += n;
                    if let Ok(crate::framing::Decoded::Frame(_, _)) = proto::decode_request(&buf[..filled]) {
                        seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        break; // and the connection drops, unanswered
                    }
                }
            }
        });
        let map = ClusterMap { nodes: [(1, vec![addr])].into_iter().collect() };
        let opts = ClientOptions { deadline: Duration::from_millis(300), ..ClientOptions::default() };
        let mut client = Client::new(map, opts);
        let write = client.put(5, "k", "v");
        assert!(matches!(write, Outcome::Unknown(_)), "{write:?}");
        assert_eq!(requests.load(std::sync::atomic::Ordering::Relaxed), 1, "a write whose outcome is unknown is not sent again");
        let read = client.get(5, "k");
        assert!(matches!(read, Outcome::Failed(_)), "{read:?}");
        assert!(requests.load(std::sync::atomic::Ordering::Relaxed) > 2, "a read is retried");
    }

    /// Without a leader hint, a node that said it is about to stop is not
    /// tried while another is left.
    #[test]
    fn probes_leave_out_a_node_about_to_stop() {
        let addr: SocketAddr = "127.0.0.1:1".parse().expect("an address");
        let map = ClusterMap { nodes: (1..=3).map(|id| (id, vec![addr])).collect() };
        let mut client = Client::new(map, ClientOptions::default());
        let probed = |client: &mut Client| -> Vec<u64> { (0..6).map(|_| client.pick_node(7)).collect() };
        assert!(probed(&mut client).contains(&2), "every node is probed in turn");
        client.closing_since.insert(2, Instant::now());
        let without = probed(&mut client);
        assert!(!without.contains(&2) && without.contains(&1) && without.contains(&3), "{without:?}");
        for id in [1, 3] {
            client.closing_since.insert(id, Instant::now());
        }
        assert!(probed(&mut client).contains(&2), "all about to stop: tried all the same");
        client.leaders.insert(7, 2);
        assert_eq!(client.pick_node(7), 2, "a leader hint is followed");
    }
}
