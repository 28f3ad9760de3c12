//! The `lin-kv` mode (shared/BENCH.md): client threads run random reads,
//! writes and compare-and-sets over a few keys, one operation at a time each,
//! and every invoke and completion goes to a history file that a
//! linearizability checker (Knossos, Porcupine, Elle) can judge. It runs
//! against the embedded cluster or, with `--target`, against servers that
//! may be killed and restarted during the run: client errors become `fail`
//! or `info` events, never the end of the run.

mod client;
mod history;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use engine::client::proto::{Consistency, Op, Reply};
use engine::client::{ClusterMap, Outcome as ClientOutcome};
use hdrhistogram::Histogram;

use client::AnyClient;
pub use client::ClientKind;
use history::{EventValue, History, Kind, F};

use crate::cluster::{parse_target, Embedded, EmbeddedShape};
use crate::modes::write::default_cores;
use crate::outcome::{latency_histogram, Outcome, RunContext};
use crate::progress::Plan;

#[derive(clap::Args, Debug, Clone)]
pub struct LinKvArgs {
    /// Write the history here: one JSON event per line (format in BENCH.md).
    #[arg(long, value_name = "FILE")]
    pub history: PathBuf,
    /// Keys the operations choose from (named k0, k1, … in the history).
    #[arg(long, default_value_t = 5)]
    pub keys: u64,
    /// Client threads, each with one operation at a time.
    #[arg(long, default_value_t = 8)]
    pub clients: usize,
    /// How long clients start new operations.
    #[arg(long, default_value = "10s", value_parser = crate::args::parse_duration)]
    pub duration: Duration,
    /// Groups the keys are spread over (key k<i> lives in group i mod G + 1).
    #[arg(long, default_value_t = 1)]
    pub groups: u64,
    /// Nodes of the embedded cluster.
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    /// Executor cores per node (with --target: the cores the servers run).
    #[arg(long, default_value_t = default_cores())]
    pub cores: u32,
    /// Drive running `myriad` servers instead: base client addresses,
    /// `1=host:port,2=host:port,...` (core k serves port + k; give --cores).
    #[arg(long, value_name = "ADDRS")]
    pub target: Option<String>,
    /// Client: `single-attempt` never resends a write that may have arrived (exact histories); `engine` is engine::client::Client, which retries such writes.
    #[arg(long, value_enum, default_value_t = ClientKind::SingleAttempt)]
    pub client: ClientKind,
    /// How long one attempt waits for its reply.
    #[arg(long, default_value = "1s", value_parser = crate::args::parse_duration)]
    pub request_timeout: Duration,
    /// Seed of the operation mix: the same seed draws the same choices.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// Most keys and client threads (a checker's cost grows fast with both).
const KEYS_MAX: u64 = 1_000;
const CLIENTS_MAX: usize = 1_024;
/// How long one operation retries what certainly did not take effect.
const OP_DEADLINE: Duration = Duration::from_secs(5);
/// Waiting for the keys' groups to have leaders before the history starts.
const WARMUP_MAX: Duration = Duration::from_secs(30);
/// Out of 10 operations: reads below READS, writes below WRITES, cas above.
const READS: u64 = 4;
const WRITES: u64 = 7;

pub fn run(args: &LinKvArgs, ctx: &RunContext) -> anyhow::Result<Outcome> {
    anyhow::ensure!(
        (1..=KEYS_MAX).contains(&args.keys),
        "--keys must be 1..={KEYS_MAX}"
    );
    anyhow::ensure!(
        (1..=CLIENTS_MAX).contains(&args.clients),
        "--clients must be 1..={CLIENTS_MAX}"
    );
    anyhow::ensure!(args.groups >= 1, "--groups must be positive");
    anyhow::ensure!(args.cores >= 1, "--cores must be at least 1");
    anyhow::ensure!(
        !args.request_timeout.is_zero(),
        "--request-timeout must be positive"
    );
    // Keys of this run only: a value left by an earlier run is never read.
    let run_id = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut out = Outcome::new("lin-kv");
    out.config(
        "nodes",
        if args.target.is_some() {
            serde_json::Value::Null
        } else {
            args.nodes.into()
        },
    );
    out.config("groups", args.groups);
    out.config("keys", args.keys);
    out.config("clients", args.clients as u64);
    out.config("duration_s", args.duration.as_secs_f64());
    out.config("cores", args.cores);
    out.config("client", args.client.name());
    out.config("request_timeout_s", args.request_timeout.as_secs_f64());
    out.config("seed", args.seed);
    out.config("run_id", format!("{run_id:x}"));
    out.config("history", args.history.display().to_string());
    out.config(
        "target",
        args.target.clone().unwrap_or_else(|| "embedded".into()),
    );

    let mut embedded = None;
    let map = match &args.target {
        Some(t) => parse_target(t, args.cores)?,
        None => {
            let shape = EmbeddedShape {
                nodes: args.nodes,
                groups: args.groups,
                cores: args.cores,
                sync: true,
                log_entries_in_memory_max: engine::node::LOG_ENTRIES_IN_MEMORY_MAX_DEFAULT,
            };
            let started = Embedded::start(ctx, &shape, "starting the cluster", Plan::Open)?;
            embedded.insert(started).map.clone()
        }
    };
    let spec = Spec {
        keys: args.keys,
        groups: args.groups,
        run_id,
    };
    let recorded = record(args, ctx, &map, &spec);
    let stopped = embedded.map_or(Ok(()), Embedded::shutdown);
    let tally = recorded?;
    stopped?;
    tally.fill(&mut out, args);
    Ok(out)
}

/// The key space: names in the history, bytes in the store, groups.
struct Spec {
    keys: u64,
    groups: u64,
    run_id: u64,
}

impl Spec {
    fn name(&self, key: u64) -> String {
        format!("k{key}")
    }

    fn bytes(&self, key: u64) -> Bytes {
        Bytes::from(format!("lin-kv/{:x}/k{key}", self.run_id))
    }

    fn group(&self, key: u64) -> u64 {
        key % self.groups + 1
    }
}

fn encode(value: u64) -> Bytes {
    Bytes::from(value.to_string())
}

fn decode(bytes: &[u8]) -> Option<u64> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

/// Waits for the keys' groups to answer a read, then runs the clients.
fn record(
    args: &LinKvArgs,
    ctx: &RunContext,
    map: &ClusterMap,
    spec: &Spec,
) -> anyhow::Result<Tally> {
    ctx.progress.phase("electing leaders", "groups", Plan::Open);
    warm_up(args, map, spec)?;
    let history = History::create(&args.history)?;
    let shared = Shared {
        spec,
        history: &history,
        stop: AtomicBool::new(false),
        next_value: AtomicU64::new(1),
        last_known: (0..spec.keys).map(|_| AtomicU64::new(0)).collect(),
        clients: args.clients as u64,
    };
    ctx.progress
        .phase("lin-kv", "ops", Plan::For(args.duration));
    let started = Instant::now();
    let mut tally = Tally::default();
    std::thread::scope(|s| {
        let threads: Vec<_> = (0..args.clients)
            .map(|index| {
                let shared = &shared;
                let progress = ctx.progress.clone();
                let client = AnyClient::new(args.client, map, args.request_timeout, OP_DEADLINE);
                let rng = Rng::new(args.seed, index as u64);
                s.spawn(move || {
                    Worker {
                        process: index as u64,
                        client,
                        rng,
                        shared,
                        progress,
                    }
                    .run()
                })
            })
            .collect();
        std::thread::sleep(args.duration);
        shared.stop.store(true, Ordering::Relaxed);
        for t in threads {
            tally.merge(t.join().expect("a lin-kv client thread does not panic"));
        }
    });
    tally.elapsed_s = started.elapsed().as_secs_f64();
    tally.events = history.close(&args.history)?;
    Ok(tally)
}

/// Reads each group once (outside the history) so that the history does not
/// start with a burst of failures while leaders are elected.
fn warm_up(args: &LinKvArgs, map: &ClusterMap, spec: &Spec) -> anyhow::Result<()> {
    let mut client = AnyClient::new(args.client, map, args.request_timeout, OP_DEADLINE);
    let started = Instant::now();
    for key in 0..spec.keys.min(spec.groups) {
        let group = spec.group(key);
        loop {
            match client.call(
                group,
                Op::Get {
                    key: spec.bytes(key),
                    consistency: Consistency::Linearizable,
                },
            ) {
                ClientOutcome::Ok(_) => break,
                ClientOutcome::Failed(e)
                    if e.contains("does not exist") || e.contains("lives on core") =>
                {
                    anyhow::bail!(
                        "group {group}: {e} (--groups and --cores must match the cluster)"
                    )
                }
                _ if started.elapsed() > WARMUP_MAX => {
                    anyhow::bail!(
                        "group {group} did not answer a read within {} s",
                        WARMUP_MAX.as_secs()
                    )
                }
                _ => {}
            }
        }
    }
    Ok(())
}

struct Shared<'a> {
    spec: &'a Spec,
    history: &'a History,
    stop: AtomicBool,
    /// The next value written: unique over the run, so unique per key.
    next_value: AtomicU64,
    /// Per key, the last value some client saw or wrote (0: none), so that a
    /// cas has a fair chance to succeed.
    last_known: Vec<AtomicU64>,
    /// Process numbers step by this when one is retired.
    clients: u64,
}

/// xorshift64*, seeded per thread from `--seed`.
struct Rng(u64);

impl Rng {
    fn new(seed: u64, thread: u64) -> Rng {
        let mut z = seed.wrapping_add(thread.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// One operation as the history names it and as the store receives it.
struct Planned {
    f: F,
    key: u64,
    value: EventValue,
    op: Op,
}

struct Worker<'a> {
    /// The current process number; retired after an `info`.
    process: u64,
    client: AnyClient,
    rng: Rng,
    shared: &'a Shared<'a>,
    progress: crate::progress::Progress,
}

impl Worker<'_> {
    fn run(mut self) -> Tally {
        let mut tally = Tally::default();
        while !self.shared.stop.load(Ordering::Relaxed) {
            let p = self.plan();
            let name = self.shared.spec.name(p.key);
            let invoked = Instant::now();
            self.shared
                .history
                .record(self.process, Kind::Invoke, p.f, &name, p.value);
            let outcome = self
                .client
                .call(self.shared.spec.group(p.key), p.op.clone());
            let (kind, value) = self.complete(&p, outcome, &mut tally);
            self.shared
                .history
                .record(self.process, kind, p.f, &name, value);
            tally.count(p.f, kind, invoked.elapsed());
            if kind == Kind::Ok {
                self.progress.add(1);
            }
            if kind == Kind::Info {
                self.process += self.shared.clients;
                tally.processes_retired += 1;
            }
        }
        tally
    }

    fn plan(&mut self) -> Planned {
        let spec = self.shared.spec;
        let key = self.rng.below(spec.keys);
        let key_bytes = spec.bytes(key);
        let dice = self.rng.below(10);
        let known = self.shared.last_known[key as usize].load(Ordering::Relaxed);
        if dice < READS {
            return Planned {
                f: F::Read,
                key,
                value: EventValue::Null,
                op: Op::Get {
                    key: key_bytes,
                    consistency: Consistency::Linearizable,
                },
            };
        }
        let new = self.shared.next_value.fetch_add(1, Ordering::Relaxed);
        if dice < WRITES || known == 0 {
            return Planned {
                f: F::Write,
                key,
                value: EventValue::Int(new),
                op: Op::Put {
                    key: key_bytes,
                    value: encode(new),
                },
            };
        }
        let op = Op::Cas {
            key: key_bytes,
            expected: Some(encode(known)),
            new: Some(encode(new)),
        };
        Planned {
            f: F::Cas,
            key,
            value: EventValue::Pair(known, new),
            op,
        }
    }

    /// The completion event of `p` given the client's outcome.
    fn complete(
        &self,
        p: &Planned,
        outcome: ClientOutcome,
        tally: &mut Tally,
    ) -> (Kind, EventValue) {
        let known = &self.shared.last_known[p.key as usize];
        let (kind, value) = match (p.f, outcome) {
            (F::Read, ClientOutcome::Ok(Reply::Value(None))) => (Kind::Ok, EventValue::Null),
            (F::Read, ClientOutcome::Ok(Reply::Value(Some(bytes)))) => match decode(&bytes) {
                Some(v) => {
                    known.store(v, Ordering::Relaxed);
                    (Kind::Ok, EventValue::Int(v))
                }
                None => {
                    tally.error("undecodable_value");
                    (Kind::Info, EventValue::Null)
                }
            },
            (F::Write, ClientOutcome::Ok(Reply::Done))
            | (F::Cas, ClientOutcome::Ok(Reply::Done)) => {
                if let EventValue::Int(v) | EventValue::Pair(_, v) = p.value {
                    known.store(v, Ordering::Relaxed);
                }
                (Kind::Ok, p.value)
            }
            (F::Cas, ClientOutcome::Ok(Reply::CasFailed { current })) => {
                known.store(
                    current.as_deref().and_then(decode).unwrap_or(0),
                    Ordering::Relaxed,
                );
                tally.cas_failed += 1;
                (Kind::Fail, p.value)
            }
            (_, ClientOutcome::Ok(_)) => {
                tally.error("unexpected_reply");
                (Kind::Info, p.value)
            }
            (_, ClientOutcome::Failed(_)) => {
                tally.error("failed");
                (Kind::Fail, p.value)
            }
            (_, ClientOutcome::Unknown(_)) => {
                tally.error("unknown_outcome");
                (Kind::Info, p.value)
            }
        };
        // A read's info says nothing of the value it may have seen.
        let value = if p.f == F::Read && kind != Kind::Ok {
            EventValue::Null
        } else {
            value
        };
        (kind, value)
    }
}

/// What the client threads counted.
#[derive(Default)]
struct Tally {
    latency_us: Option<Histogram<u64>>,
    reads_ok: u64,
    writes_ok: u64,
    cas_ok: u64,
    /// Cas answered "current value differs": a definite, correct answer.
    cas_failed: u64,
    fail_ops: u64,
    info_ops: u64,
    processes_retired: u64,
    errors_by_kind: std::collections::BTreeMap<&'static str, u64>,
    events: u64,
    elapsed_s: f64,
}

impl Tally {
    fn error(&mut self, kind: &'static str) {
        *self.errors_by_kind.entry(kind).or_default() += 1;
    }

    fn count(&mut self, f: F, kind: Kind, took: Duration) {
        match kind {
            Kind::Ok => {
                let h = self.latency_us.get_or_insert_with(latency_histogram);
                h.saturating_record(took.as_micros() as u64);
                match f {
                    F::Read => self.reads_ok += 1,
                    F::Write => self.writes_ok += 1,
                    F::Cas => self.cas_ok += 1,
                }
            }
            Kind::Fail => self.fail_ops += 1,
            Kind::Info => self.info_ops += 1,
            Kind::Invoke => unreachable!("a completion is never an invoke"),
        }
    }

    fn merge(&mut self, other: Tally) {
        if let Some(h) = other.latency_us {
            self.latency_us
                .get_or_insert_with(latency_histogram)
                .add(&h)
                .expect("same histogram shape");
        }
        self.reads_ok += other.reads_ok;
        self.writes_ok += other.writes_ok;
        self.cas_ok += other.cas_ok;
        self.cas_failed += other.cas_failed;
        self.fail_ops += other.fail_ops;
        self.info_ops += other.info_ops;
        self.processes_retired += other.processes_retired;
        for (k, n) in other.errors_by_kind {
            *self.errors_by_kind.entry(k).or_default() += n;
        }
    }

    fn fill(self, out: &mut Outcome, args: &LinKvArgs) {
        let secs = self.elapsed_s.max(1e-9);
        let ok = self.reads_ok + self.writes_ok + self.cas_ok;
        let errors = self.errors_by_kind.values().sum::<u64>();
        out.set("ops", ok);
        out.set("errors", errors);
        out.set("reads_per_s", self.reads_ok as f64 / secs);
        out.set("writes_per_s", (self.writes_ok + self.cas_ok) as f64 / secs);
        out.set("elapsed_s", self.elapsed_s);
        out.set("history_events", self.events);
        out.set("keys", args.keys);
        out.set("info_ops", self.info_ops);
        out.set("fail_ops", self.fail_ops);
        out.set("cas_failed", self.cas_failed);
        out.set("processes", args.clients as u64 + self.processes_retired);
        if !self.errors_by_kind.is_empty() {
            let kinds: serde_json::Map<String, serde_json::Value> = self
                .errors_by_kind
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).into()))
                .collect();
            out.say(format!(
                "errors by kind: {}",
                serde_json::Value::Object(kinds.clone())
            ));
            out.set("errors_by_kind", kinds);
        }
        out.say(format!(
            "history: {} events in {} ({} reads, {} writes, {} cas ok; {} cas failed; {} fail, {} info)",
            self.events,
            args.history.display(),
            self.reads_ok,
            self.writes_ok,
            self.cas_ok,
            self.cas_failed,
            self.fail_ops - self.cas_failed,
            self.info_ops
        ));
        out.latency_us = self.latency_us;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_foreign_bytes_do_not_decode() {
        assert_eq!(decode(&encode(42)), Some(42));
        assert_eq!(decode(b"forty-two"), None);
    }

    #[test]
    fn keys_spread_over_groups_and_runs_do_not_share_keys() {
        let spec = Spec {
            keys: 5,
            groups: 2,
            run_id: 7,
        };
        assert_eq!(
            (0..5).map(|k| spec.group(k)).collect::<Vec<_>>(),
            vec![1, 2, 1, 2, 1]
        );
        assert_ne!(spec.bytes(1), Spec { run_id: 8, ..spec }.bytes(1));
        assert_eq!(spec.name(3), "k3");
    }

    #[test]
    fn the_operation_mix_is_seeded() {
        let draw = |seed| {
            let mut r = Rng::new(seed, 0);
            (0..32).map(|_| r.below(10)).collect::<Vec<_>>()
        };
        assert_eq!(draw(1), draw(1));
        assert_ne!(draw(1), draw(2));
        assert!(draw(1).iter().all(|&d| d < 10));
    }
}
