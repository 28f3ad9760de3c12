//! The clients `lin-kv` records histories with.
//!
//! `engine::client::Client` retries a write after its connection was lost
//! (it then reports `Unknown` only if no later attempt got a definite
//! answer), so a write can be applied twice and a cas that took effect on its
//! first attempt can come back `CasFailed` from its second. Its outcomes are
//! right for a user but not exact enough for a history: a checker would blame
//! the server. [`SingleAttempt`] therefore sends each write at most once past
//! the point where it may have arrived, and reports `Unknown` for anything
//! after that point; it retries only what certainly did not take effect
//! (refused connections, `NotLeader`, `Busy`) and reads (they change nothing).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use engine::client::proto::{Op, Reply, Request};
use engine::client::{Client, ClientOptions, ClusterMap, Connection, ConnectionError, Outcome};
use engine::node::core_of;

const BACKOFF_MIN: Duration = Duration::from_millis(5);
const BACKOFF_MAX: Duration = Duration::from_millis(200);

/// Which client issues the operations (`--client`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientKind {
    // Never resends a write that may have reached a server: exact histories.
    SingleAttempt,
    // `engine::client::Client`, the product's client (retries ambiguous writes).
    Engine,
}

impl ClientKind {
    pub fn name(self) -> &'static str {
        match self {
            ClientKind::SingleAttempt => "single-attempt",
            ClientKind::Engine => "engine",
        }
    }
}

pub enum AnyClient {
    SingleAttempt(SingleAttempt),
    Engine(Client),
}

impl AnyClient {
    pub fn new(
        kind: ClientKind,
        map: &ClusterMap,
        request_timeout: Duration,
        deadline: Duration,
    ) -> AnyClient {
        match kind {
            ClientKind::SingleAttempt => {
                AnyClient::SingleAttempt(SingleAttempt::new(map.clone(), request_timeout, deadline))
            }
            ClientKind::Engine => {
                let opts = ClientOptions {
                    request_timeout,
                    deadline,
                    backoff_min: BACKOFF_MIN,
                    backoff_max: BACKOFF_MAX,
                };
                AnyClient::Engine(Client::new(map.clone(), opts))
            }
        }
    }

    pub fn call(&mut self, group: u64, op: Op) -> Outcome {
        match self {
            AnyClient::SingleAttempt(c) => c.call(group, op),
            AnyClient::Engine(c) => c.call(group, op),
        }
    }
}

/// A blocking client, one operation at a time, that never resends a write
/// which may have arrived (see the module comment).
pub struct SingleAttempt {
    map: ClusterMap,
    cores: u32,
    request_timeout: Duration,
    /// How long an operation keeps retrying what certainly did not apply.
    deadline: Duration,
    conns: HashMap<(u64, u32), Connection>,
    /// Group → the node believed to lead it.
    leaders: HashMap<u64, u64>,
    next_id: u64,
    /// Rotates the node tried when no leader is known.
    probe: usize,
}

impl SingleAttempt {
    pub fn new(map: ClusterMap, request_timeout: Duration, deadline: Duration) -> SingleAttempt {
        let cores = map.nodes.values().next().map_or(1, |a| a.len() as u32);
        SingleAttempt {
            map,
            cores,
            request_timeout,
            deadline,
            conns: HashMap::new(),
            leaders: HashMap::new(),
            next_id: 1,
            probe: 0,
        }
    }

    fn pick_node(&mut self, group: u64) -> u64 {
        if let Some(&l) = self.leaders.get(&group) {
            if self.map.nodes.contains_key(&l) {
                return l;
            }
        }
        let ids: Vec<u64> = self.map.nodes.keys().copied().collect();
        self.probe = (self.probe + 1) % ids.len();
        ids[self.probe]
    }

    fn connection(&mut self, node: u64, core: u32) -> Result<&mut Connection, ConnectionError> {
        if !self.conns.contains_key(&(node, core)) {
            let c =
                Connection::connect(self.map.nodes[&node][core as usize], self.request_timeout)?;
            self.conns.insert((node, core), c);
        }
        Ok(self.conns.get_mut(&(node, core)).expect("just inserted"))
    }

    /// One request and its reply on a connection. Any error drops the
    /// connection, so a late reply can never be taken for a later request's.
    fn attempt(&mut self, node: u64, core: u32, req: &Request) -> Result<Reply, ConnectionError> {
        let c = self.connection(node, core)?;
        c.queue(req);
        let reply = c.flush().and_then(|()| loop {
            let resp = c.recv()?;
            if resp.id == req.id {
                return Ok(resp.reply);
            }
        });
        if reply.is_err() {
            self.conns.remove(&(node, core));
        }
        reply
    }

    pub fn call(&mut self, group: u64, op: Op) -> Outcome {
        if self.map.nodes.is_empty() {
            return Outcome::Failed("no nodes to talk to".into());
        }
        let started = Instant::now();
        let core = core_of(group, self.cores);
        let write = op.is_write();
        let mut backoff = BACKOFF_MIN;
        let mut last_error = String::from("deadline passed before any attempt");
        while started.elapsed() < self.deadline {
            let node = self.pick_node(group);
            if let Err(e) = self.connection(node, core) {
                // Nothing was sent.
                self.leaders.remove(&group);
                last_error = e.to_string();
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
            let id = self.next_id;
            self.next_id += 1;
            let reply = match self.attempt(
                node,
                core,
                &Request {
                    id,
                    group,
                    op: op.clone(),
                },
            ) {
                Ok(r) => r,
                Err(e) if write => {
                    return Outcome::Unknown(format!("no reply from node {node}: {e}"))
                }
                Err(e) => {
                    self.leaders.remove(&group);
                    last_error = e.to_string();
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            };
            match reply {
                Reply::NotLeader { leader } if leader != 0 && leader != node && self.map.nodes.contains_key(&leader) => {
                    self.leaders.insert(group, leader);
                    backoff = BACKOFF_MIN;
                    last_error = format!("node {node} does not lead group {group}");
                }
                Reply::NotLeader { .. } | Reply::Busy => {
                    self.leaders.remove(&group);
                    last_error = format!("node {node} does not lead group {group} or is busy");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
                Reply::Unknown if write => return Outcome::Unknown(format!("node {node} cannot tell whether the write to group {group} was applied")),
                Reply::Unknown => {
                    self.leaders.remove(&group);
                    last_error = "read interrupted by a leader change".into();
                }
                Reply::UnknownGroup => return Outcome::Failed(format!("group {group} does not exist")),
                Reply::WrongCore { core: c } => return Outcome::Failed(format!("node {node} says group {group} lives on core {c}, not {core}: give --cores as the servers run")),
                Reply::Error(e) => return Outcome::Failed(e),
                ok => {
                    self.leaders.insert(group, node);
                    return Outcome::Ok(ok);
                }
            }
        }
        Outcome::Failed(format!(
            "no definite answer before the deadline: {last_error}"
        ))
    }
}
