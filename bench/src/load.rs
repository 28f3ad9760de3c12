//! The load generator of the cluster modes: one thread per (node, core)
//! connection, each keeping its share of `--clients` operations in flight
//! (pipelined on its connection) for the groups that node leads on that
//! core. Leaders are learned from `NotLeader` hints and shared between the
//! threads. An operation counts only when acknowledged (`Done` for a write,
//! a value for a read); latency runs from submission to acknowledgement.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use engine::client::proto::{Consistency, Op, Reply, Request};
use engine::client::{ClusterMap, Connection};
use engine::node::core_of;
use hdrhistogram::Histogram;

use crate::outcome::latency_histogram;
use crate::progress::Progress;

#[derive(Clone, Debug)]
pub struct LoadShape {
    pub groups: u64,
    /// Operations in flight over all connections.
    pub clients: usize,
    pub payload_bytes: usize,
    /// Fraction of operations that are linearizable reads.
    pub read_ratio: f64,
    /// Keys written per group (random among them); 0: every write a new key,
    /// remembered when acknowledged so it can be read back.
    pub keys_per_group: u64,
    pub request_timeout: Duration,
}

/// What the threads measured between `begin_measuring` and `finish`.
pub struct LoadReport {
    pub latency_us: Histogram<u64>,
    pub writes: u64,
    pub reads: u64,
    /// Operations that failed, timed out or ended with an unknown outcome.
    pub errors: u64,
    pub errors_by_kind: BTreeMap<&'static str, u64>,
    /// Requests answered `NotLeader` (sent again to the leader; not errors).
    pub redirects: u64,
    pub measured_s: f64,
    /// Keys (group, key) of acknowledged writes, when keys are unique.
    pub acked: Vec<(u64, u64)>,
}

struct Shared {
    stop: AtomicBool,
    base: Instant,
    /// Nanoseconds after `base` when measuring began; `u64::MAX` before.
    measure_from_ns: AtomicU64,
    measure_until_ns: AtomicU64,
    /// Group → node believed to lead it (0: unknown).
    leaders: Vec<AtomicU64>,
    /// Nodes a worker could not reach on its last try: a hint naming one of
    /// them is stale, so its groups are tried elsewhere.
    down: std::sync::Mutex<std::collections::HashSet<u64>>,
    progress: Progress,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }

    fn counts(&self, sent_ns: u64, done_ns: u64) -> bool {
        sent_ns >= self.measure_from_ns.load(Ordering::Relaxed) && done_ns <= self.measure_until_ns.load(Ordering::Relaxed)
    }
}

pub struct Load {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<ThreadReport>>,
    measure_started: Mutex<Option<Instant>>,
}

/// The key of a unique-key write: connection index and a counter.
pub fn unique_key(thread: usize, counter: u64) -> u64 {
    ((thread as u64) << 40) | counter
}

/// The value written under `key`: the key, then filler up to the payload size.
pub fn value_for(key: u64, payload_bytes: usize) -> Bytes {
    let mut v = key.to_le_bytes().to_vec();
    v.resize(payload_bytes.max(8), 0x5A);
    Bytes::from(v)
}

pub fn key_bytes(key: u64) -> Bytes {
    Bytes::copy_from_slice(&key.to_be_bytes())
}

impl Load {
    pub fn start(map: &ClusterMap, shape: &LoadShape, progress: Progress) -> anyhow::Result<Load> {
        anyhow::ensure!(shape.groups > 0 && shape.clients > 0, "groups and clients must be positive");
        anyhow::ensure!((0.0..=1.0).contains(&shape.read_ratio), "--read-ratio must be within 0..=1");
        let cores = map.nodes.values().next().map_or(1, |a| a.len() as u32);
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            base: Instant::now(),
            measure_from_ns: AtomicU64::new(u64::MAX),
            measure_until_ns: AtomicU64::new(u64::MAX),
            leaders: (0..=shape.groups).map(|_| AtomicU64::new(0)).collect(),
            down: std::sync::Mutex::new(std::collections::HashSet::new()),
            progress,
        });
        let targets: Vec<(u64, u32, std::net::SocketAddr)> = map.nodes.iter().flat_map(|(&node, addrs)| addrs.iter().enumerate().map(move |(core, &a)| (node, core as u32, a))).collect();
        let window = shape.clients.div_ceil(targets.len()).max(1);
        let mut threads = Vec::new();
        for (index, &(node, core, addr)) in targets.iter().enumerate() {
            let worker = Worker { index, node, core, cores, addr, window, shape: shape.clone(), shared: shared.clone() };
            threads.push(std::thread::Builder::new().name(format!("load-{node}-{core}")).spawn(move || worker.run())?);
        }
        Ok(Load { shared, threads, measure_started: Mutex::new(None) })
    }

    /// Operations sent from now on count.
    pub fn begin_measuring(&self) {
        *self.measure_started.lock().expect("not poisoned") = Some(Instant::now());
        self.shared.measure_from_ns.store(self.shared.now_ns(), Ordering::Relaxed);
    }

    /// Groups whose leader is known to the load threads.
    pub fn leaders_known(&self) -> usize {
        self.shared.leaders.iter().skip(1).filter(|l| l.load(Ordering::Relaxed) != 0).count()
    }

    /// Stops sending, waits for what is in flight, and sums the threads.
    pub fn finish(self) -> LoadReport {
        let until = self.shared.now_ns();
        self.shared.measure_until_ns.store(until, Ordering::Relaxed);
        self.shared.stop.store(true, Ordering::Relaxed);
        let measured_s = self.measure_started.lock().expect("not poisoned").map_or(0.0, |t| t.elapsed().as_secs_f64());
        let mut report = LoadReport { latency_us: latency_histogram(), writes: 0, reads: 0, errors: 0, errors_by_kind: BTreeMap::new(), redirects: 0, measured_s, acked: Vec::new() };
        for t in self.threads {
            let Ok(r) = t.join() else {
                *report.errors_by_kind.entry("load_thread_panicked").or_default() += 1;
                report.errors += 1;
                continue;
            };
            report.latency_us.add(&r.latency_us).expect("same histogram shape");
            report.writes += r.writes;
            report.reads += r.reads;
            report.redirects += r.redirects;
            for (kind, n) in r.errors {
                report.errors += n;
                *report.errors_by_kind.entry(kind).or_default() += n;
            }
            report.acked.extend(r.acked);
        }
        report
    }
}

struct Pending {
    sent_ns: u64,
    group: u64,
    write: bool,
    key: u64,
}

struct ThreadReport {
    latency_us: Histogram<u64>,
    writes: u64,
    reads: u64,
    redirects: u64,
    errors: BTreeMap<&'static str, u64>,
    acked: Vec<(u64, u64)>,
}

struct Worker {
    index: usize,
    node: u64,
    core: u32,
    cores: u32,
    addr: std::net::SocketAddr,
    window: usize,
    shape: LoadShape,
    shared: Arc<Shared>,
}

/// Candidate groups are re-read from the shared leader table this often.
const REFRESH_EVERY: Duration = Duration::from_millis(100);
/// How long a thread whose node said it is about to stop waits before it
/// connects there again (a node stops within a few ticks of saying so).
const CLOSING_BACKOFF: Duration = Duration::from_secs(1);
/// How long the threads wait for in-flight operations after the stop.
const DRAIN_FOR: Duration = Duration::from_secs(3);

impl Worker {
    fn run(self) -> ThreadReport {
        let mut report = ThreadReport { latency_us: latency_histogram(), writes: 0, reads: 0, redirects: 0, errors: BTreeMap::new(), acked: Vec::new() };
        let mine: Vec<u64> = (1..=self.shape.groups).filter(|&g| core_of(g, self.cores) == self.core).collect();
        let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ (self.index as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let filler = value_for(0, self.shape.payload_bytes);
        let mut counter = 0u64;
        let mut next_id = 1u64;
        let mut conn: Option<Connection> = None;
        let mut pending: HashMap<u64, Pending> = HashMap::with_capacity(self.window * 2);
        let mut candidates: Vec<u64> = Vec::new();
        let mut refreshed = Instant::now() - REFRESH_EVERY;
        let mut responses = Vec::new();
        let mut stopping_since: Option<Instant> = None;
        loop {
            let stopping = self.shared.stop.load(Ordering::Relaxed);
            if stopping {
                let since = *stopping_since.get_or_insert_with(Instant::now);
                if pending.is_empty() || since.elapsed() > DRAIN_FOR {
                    break;
                }
            }
            let c = match conn.as_mut() {
                Some(c) => c,
                None => match Connection::connect(self.addr, self.shape.request_timeout) {
                    Ok(c) => {
                        self.shared.down.lock().expect("not poisoned").remove(&self.node);
                        conn.insert(c)
                    }
                    Err(_) if stopping => break,
                    Err(_) => {
                        self.shared.down.lock().expect("not poisoned").insert(self.node);
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    }
                },
            };
            if refreshed.elapsed() >= REFRESH_EVERY {
                refreshed = Instant::now();
                candidates.clear();
                let down = self.shared.down.lock().expect("not poisoned").clone();
                candidates.extend(mine.iter().copied().filter(|&g| {
                    let leader = self.shared.leaders[g as usize].load(Ordering::Relaxed);
                    leader == 0 || leader == self.node || down.contains(&leader)
                }));
            }
            // A notice may have come while nothing was in flight.
            if pending.is_empty() && c.poll_idle().is_err() {
                conn = None;
                continue;
            }
            if c.is_closing() && pending.is_empty() {
                // Its node stops soon and has answered everything sent: go
                // elsewhere (its groups' leaders are on other nodes by now).
                conn = None;
                self.shared.down.lock().expect("not poisoned").insert(self.node);
                std::thread::sleep(CLOSING_BACKOFF);
                continue;
            }
            if !stopping && !c.is_closing() {
                while pending.len() < self.window && !candidates.is_empty() {
                    let group = candidates[(next() % candidates.len() as u64) as usize];
                    let read = self.shape.read_ratio > 0.0 && (next() % 1_000_000) as f64 / 1e6 < self.shape.read_ratio;
                    let key = if self.shape.keys_per_group == 0 {
                        counter += 1;
                        unique_key(self.index, counter)
                    } else {
                        next() % self.shape.keys_per_group
                    };
                    let op = if read {
                        Op::Get { key: key_bytes(key), consistency: Consistency::Linearizable }
                    } else if self.shape.keys_per_group == 0 {
                        Op::Put { key: key_bytes(key), value: value_for(key, self.shape.payload_bytes) }
                    } else {
                        Op::Put { key: key_bytes(key), value: filler.clone() }
                    };
                    let id = next_id;
                    next_id += 1;
                    c.queue(&Request { id, group, op });
                    pending.insert(id, Pending { sent_ns: self.shared.now_ns(), group, write: !read, key });
                }
                if pending.is_empty() {
                    // This node leads none of this core's groups (yet).
                    std::thread::sleep(Duration::from_millis(20));
                    refreshed = Instant::now() - REFRESH_EVERY;
                    continue;
                }
            }
            responses.clear();
            let io = c.flush().and_then(|()| c.recv_batch(&mut responses));
            if let Err(e) = io {
                let kind = match &e {
                    engine::client::ConnectionError::Io { source, .. } if matches!(source.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => "timeout",
                    _ => "connection",
                };
                let now = self.shared.now_ns();
                for (_, p) in pending.drain() {
                    if self.shared.counts(p.sent_ns, now) {
                        *report.errors.entry(kind).or_default() += 1;
                    }
                    // Its leader may be gone: find out again.
                    self.shared.leaders[p.group as usize].store(0, Ordering::Relaxed);
                }
                conn = None;
                continue;
            }
            let now = self.shared.now_ns();
            for resp in responses.drain(..) {
                let Some(p) = pending.remove(&resp.id) else { continue };
                let counts = self.shared.counts(p.sent_ns, now);
                let kind = match resp.reply {
                    Reply::Done | Reply::Value(_) => {
                        self.shared.leaders[p.group as usize].store(self.node, Ordering::Relaxed);
                        if counts {
                            report.latency_us.saturating_record((now - p.sent_ns) / 1000);
                            if p.write {
                                report.writes += 1;
                                if self.shape.keys_per_group == 0 {
                                    report.acked.push((p.group, p.key));
                                }
                            } else {
                                report.reads += 1;
                            }
                            self.shared.progress.add(1);
                        }
                        continue;
                    }
                    Reply::NotLeader { leader } => {
                        self.shared.leaders[p.group as usize].store(leader, Ordering::Relaxed);
                        if leader != self.node {
                            candidates.retain(|&g| g != p.group);
                        }
                        if counts {
                            report.redirects += 1;
                        }
                        continue;
                    }
                    Reply::Closing => continue,
                    Reply::Busy => "busy",
                    Reply::Unknown => "unknown_outcome",
                    Reply::UnknownGroup => "unknown_group",
                    Reply::WrongCore { .. } => "wrong_core",
                    Reply::CasFailed { .. } | Reply::Entries(_) => "unexpected_reply",
                    Reply::Error(_) => "error",
                };
                if counts {
                    *report.errors.entry(kind).or_default() += 1;
                }
            }
        }
        report
    }
}
