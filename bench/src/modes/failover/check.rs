//! Reads every acknowledged write of a failover run back from the surviving
//! nodes with linearizable gets. Gets are pipelined, one connection per
//! (leader, core), so that hundreds of thousands of keys take seconds; the
//! few that meet a leader change go through the blocking client, which
//! follows leaders and retries.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use engine::client::proto::{Consistency, Op, Reply, Request};
use engine::client::{Client, ClientOptions, ClusterMap, Connection, Outcome};
use engine::node::core_of;

use crate::load::{key_bytes, value_for};
use crate::progress::{Plan, Progress};

/// Gets in flight on one connection.
const WINDOW: usize = 512;
/// How long leaders are looked for, and the least time between two rounds.
const DISCOVERY_MAX: Duration = Duration::from_secs(30);
const DISCOVERY_ROUND_MIN: Duration = Duration::from_millis(50);
/// Threads of the blocking fall-back.
const FALLBACK_THREADS: usize = 4;
/// Lost keys named in the summary.
const LOST_EXAMPLES_MAX: usize = 10;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Not a key the load writes (those are 8 bytes).
const PROBE_KEY: &[u8] = b"failover-probe";

#[derive(Debug, Default)]
pub struct CheckReport {
    /// Keys read back with a definite answer (right value, other value or none).
    pub checked: u64,
    /// Keys absent or holding another value than the one acknowledged.
    pub lost: u64,
    /// Keys no survivor answered for (not counted as checked).
    pub unverified: u64,
    pub lost_examples: Vec<(u64, u64)>,
}

impl CheckReport {
    fn verdict(&mut self, group: u64, key: u64, value: Option<&Bytes>, payload: usize) {
        self.checked += 1;
        if value != Some(&value_for(key, payload)) {
            self.lost += 1;
            if self.lost_examples.len() < LOST_EXAMPLES_MAX {
                self.lost_examples.push((group, key));
            }
        }
    }

    fn merge(&mut self, other: CheckReport) {
        self.checked += other.checked;
        self.lost += other.lost;
        self.unverified += other.unverified;
        let room = LOST_EXAMPLES_MAX.saturating_sub(self.lost_examples.len());
        self.lost_examples
            .extend(other.lost_examples.into_iter().take(room));
    }
}

/// Reads back every `(group, key)` of `acked` from the nodes of `map`.
pub fn read_back(
    map: &ClusterMap,
    acked: &[(u64, u64)],
    payload: usize,
    progress: &Progress,
) -> anyhow::Result<CheckReport> {
    progress.phase(
        "checking acknowledged writes",
        "keys",
        Plan::Units(acked.len() as u64),
    );
    let groups: BTreeSet<u64> = acked.iter().map(|&(g, _)| g).collect();
    let leaders = discover_leaders(map, &groups);
    let cores = map.nodes.values().next().map_or(1, |a| a.len() as u32);
    let mut buckets: BTreeMap<(u64, u32), Vec<(u64, u64)>> = BTreeMap::new();
    let mut fallback = Vec::new();
    for &(group, key) in acked {
        match leaders.get(&group) {
            Some(&node) => buckets
                .entry((node, core_of(group, cores)))
                .or_default()
                .push((group, key)),
            None => fallback.push((group, key)),
        }
    }
    let fallback = Mutex::new(fallback);
    let mut report = CheckReport::default();
    std::thread::scope(|s| {
        let threads: Vec<_> = buckets
            .iter()
            .map(|(&(node, core), keys)| {
                let addr = map.nodes[&node][core as usize];
                let fallback = &fallback;
                s.spawn(move || {
                    let (report, retry) = pipelined(addr, keys, payload, progress);
                    fallback.lock().expect("not poisoned").extend(retry);
                    report
                })
            })
            .collect();
        for t in threads {
            report.merge(t.join().expect("a checker thread does not panic"));
        }
    });
    let fallback = fallback.into_inner().expect("not poisoned");
    report.merge(blocking(map, &fallback, payload, progress));
    Ok(report)
}

/// The leader of each group: every survivor is asked for every group at
/// once, round after round, and the node that answers a linearizable get
/// leads. A request wakes a resting replica, so groups that lost their
/// leader elect a new one meanwhile, all at the same time.
fn discover_leaders(map: &ClusterMap, groups: &BTreeSet<u64>) -> HashMap<u64, u64> {
    let cores = map.nodes.values().next().map_or(1, |a| a.len() as u32);
    let mut conns: BTreeMap<(u64, u32), Connection> = BTreeMap::new();
    let mut found = HashMap::new();
    let mut next_id = 1u64;
    let started = Instant::now();
    while found.len() < groups.len() && started.elapsed() < DISCOVERY_MAX {
        // (node, core) → request id → group.
        let mut asked: BTreeMap<(u64, u32), HashMap<u64, u64>> = BTreeMap::new();
        for &group in groups.iter().filter(|g| !found.contains_key(*g)) {
            for (&node, addrs) in &map.nodes {
                let at = (node, core_of(group, cores));
                let conn = match conns.entry(at) {
                    Entry::Occupied(e) => e.into_mut(),
                    Entry::Vacant(e) => {
                        match Connection::connect(addrs[at.1 as usize], REQUEST_TIMEOUT) {
                            Ok(c) => e.insert(c),
                            Err(_) => continue,
                        }
                    }
                };
                let op = Op::Get {
                    key: Bytes::from_static(PROBE_KEY),
                    consistency: Consistency::Linearizable,
                };
                conn.queue(&Request {
                    id: next_id,
                    group,
                    op,
                });
                asked.entry(at).or_default().insert(next_id, group);
                next_id += 1;
            }
        }
        // Everything is sent before anything is awaited.
        asked.retain(|at, _| conns.get_mut(at).is_some_and(|c| c.flush().is_ok()));
        let mut responses = Vec::new();
        for (at, mut ids) in asked {
            let conn = conns.get_mut(&at).expect("flushed");
            while !ids.is_empty() {
                responses.clear();
                if conn.recv_batch(&mut responses).is_err() {
                    conns.remove(&at);
                    break;
                }
                for resp in responses.drain(..) {
                    if let (Some(group), Reply::Value(_)) = (ids.remove(&resp.id), resp.reply) {
                        found.insert(group, at.0);
                    }
                }
            }
        }
        if found.len() < groups.len() {
            std::thread::sleep(DISCOVERY_ROUND_MIN);
        }
    }
    found
}

fn client(map: &ClusterMap) -> Client {
    Client::new(
        map.clone(),
        ClientOptions {
            request_timeout: REQUEST_TIMEOUT,
            ..ClientOptions::default()
        },
    )
}

/// Pipelined gets of `keys` on one connection to their groups' leader.
/// Returns the verdicts and the keys that need the blocking client (leader
/// moved, busy, connection lost).
fn pipelined(
    addr: std::net::SocketAddr,
    keys: &[(u64, u64)],
    payload: usize,
    progress: &Progress,
) -> (CheckReport, Vec<(u64, u64)>) {
    let mut report = CheckReport::default();
    let mut retry = Vec::new();
    let Ok(mut conn) = Connection::connect(addr, REQUEST_TIMEOUT) else {
        return (report, keys.to_vec());
    };
    // Request id = index in `keys` + 1.
    let mut pending: HashMap<u64, (u64, u64)> = HashMap::with_capacity(WINDOW);
    let mut next = 0;
    let mut responses = Vec::new();
    loop {
        while pending.len() < WINDOW && next < keys.len() {
            let (group, key) = keys[next];
            next += 1;
            conn.queue(&Request {
                id: next as u64,
                group,
                op: Op::Get {
                    key: key_bytes(key),
                    consistency: Consistency::Linearizable,
                },
            });
            pending.insert(next as u64, (group, key));
        }
        if pending.is_empty() {
            break;
        }
        responses.clear();
        if conn
            .flush()
            .and_then(|()| conn.recv_batch(&mut responses))
            .is_err()
        {
            retry.extend(pending.into_values());
            retry.extend_from_slice(&keys[next..]);
            return (report, retry);
        }
        for resp in responses.drain(..) {
            let Some((group, key)) = pending.remove(&resp.id) else {
                continue;
            };
            match resp.reply {
                Reply::Value(v) => {
                    report.verdict(group, key, v.as_ref(), payload);
                    progress.add(1);
                }
                _ => retry.push((group, key)),
            }
        }
    }
    (report, retry)
}

/// One get at a time per thread through the blocking client.
fn blocking(
    map: &ClusterMap,
    keys: &[(u64, u64)],
    payload: usize,
    progress: &Progress,
) -> CheckReport {
    let mut report = CheckReport::default();
    if keys.is_empty() {
        return report;
    }
    let chunk = keys.len().div_ceil(FALLBACK_THREADS).max(1);
    std::thread::scope(|s| {
        let threads: Vec<_> = keys
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    let mut client = client(map);
                    let mut r = CheckReport::default();
                    for &(group, key) in part {
                        match client.get(group, key_bytes(key)) {
                            Outcome::Ok(Reply::Value(v)) => {
                                r.verdict(group, key, v.as_ref(), payload);
                                progress.add(1);
                            }
                            _ => r.unverified += 1,
                        }
                    }
                    r
                })
            })
            .collect();
        for t in threads {
            report.merge(t.join().expect("a checker thread does not panic"));
        }
    });
    report
}
