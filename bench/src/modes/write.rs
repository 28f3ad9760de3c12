//! The default mode: a write (and optionally read) workload against an
//! embedded 3-node cluster or, with `--target`, running servers. See
//! shared/BENCH.md.

use std::time::{Duration, Instant};

use crate::cluster::{parse_target, Embedded, EmbeddedShape};
use crate::load::{Load, LoadReport, LoadShape};
use crate::outcome::{Outcome, RunContext};
use crate::process_stats::ProcessStats;
use crate::progress::Plan;

#[derive(clap::Args, Debug, Clone)]
pub struct WriteArgs {
    /// Nodes of the embedded cluster (each replicates every group).
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    /// Raft groups.
    #[arg(long, default_value_t = 1000)]
    pub groups: u64,
    /// Operations in flight (over all connections).
    #[arg(long, default_value_t = 256)]
    pub clients: usize,
    /// Bytes of each written value.
    #[arg(long, default_value = "64", value_parser = crate::args::parse_bytes)]
    pub payload: u64,
    /// How long to measure (after a warm-up that elects leaders).
    #[arg(long, default_value = "10s", value_parser = crate::args::parse_duration)]
    pub duration: Duration,
    /// Fraction of operations that are linearizable reads (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    pub read_ratio: f64,
    /// Executor cores per node (the embedded cluster runs core k of every node on executor k).
    #[arg(long, default_value_t = default_cores())]
    pub cores: u32,
    /// Fsync every WAL write (the default).
    #[arg(long, overrides_with = "no_sync")]
    pub sync: bool,
    /// Do not fsync (experiments only: acknowledged writes could be lost in a power cut).
    #[arg(long, overrides_with = "sync")]
    pub no_sync: bool,
    /// Drive running `myriad` servers instead: base client addresses,
    /// `1=host:port,2=host:port,...` (core k serves port + k; give --cores).
    #[arg(long, value_name = "ADDRS")]
    pub target: Option<String>,
    /// Keys per group that writes choose from.
    #[arg(long, default_value_t = 1024)]
    pub keys_per_group: u64,
    /// Each node's log_entries_in_memory_max: Raft log entries a core holds
    /// in memory before it compacts its longest logs (embedded cluster only).
    #[arg(long, default_value_t = engine::node::LOG_ENTRIES_IN_MEMORY_MAX_DEFAULT)]
    pub log_entries_in_memory_max: u64,
}

pub fn default_cores() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32).min(64)
}

/// Warm-up before measuring: leaders elected and known to the load threads.
const WARMUP_MAX: Duration = Duration::from_secs(30);
const WARMUP_MIN: Duration = Duration::from_secs(1);

pub fn run(args: &WriteArgs, ctx: &RunContext) -> anyhow::Result<Outcome> {
    anyhow::ensure!(args.payload <= 1 << 20, "--payload is at most 1 MiB");
    anyhow::ensure!(args.cores >= 1, "--cores must be at least 1");
    let sync = !args.no_sync;
    let mut out = Outcome::new("write");
    out.config("nodes", args.nodes);
    out.config("groups", args.groups);
    out.config("clients", args.clients as u64);
    out.config("payload_bytes", args.payload);
    out.config("duration_s", args.duration.as_secs_f64());
    out.config("read_ratio", args.read_ratio);
    out.config("cores", args.cores);
    out.config("sync", sync);
    out.config("log_entries_in_memory_max", args.log_entries_in_memory_max);
    out.config("target", args.target.clone().unwrap_or_else(|| "embedded".into()));

    let mut embedded = None;
    let map = match &args.target {
        Some(t) => parse_target(t, args.cores)?,
        None => {
            let shape = EmbeddedShape { nodes: args.nodes, groups: args.groups, cores: args.cores, sync, log_entries_in_memory_max: args.log_entries_in_memory_max };
            embedded.insert(Embedded::start(ctx, &shape, "starting the cluster", Plan::Open)?).map.clone()
        }
    };
    let shape = LoadShape {
        groups: args.groups,
        clients: args.clients,
        payload_bytes: args.payload as usize,
        read_ratio: args.read_ratio,
        keys_per_group: args.keys_per_group.max(1),
        request_timeout: Duration::from_secs(5),
    };
    ctx.progress.phase("electing leaders", "ops", Plan::Open);
    let load = Load::start(&map, &shape, ctx.progress.clone())?;
    let warm = Instant::now();
    while warm.elapsed() < WARMUP_MIN || (load.leaders_known() < args.groups as usize && warm.elapsed() < WARMUP_MAX) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let before = embedded.as_ref().map(|e| e.metrics());
    ctx.progress.phase("writing", "ops", Plan::For(args.duration));
    let cpu_before = ProcessStats::now();
    load.begin_measuring();
    std::thread::sleep(args.duration);
    let after = embedded.as_ref().map(|e| e.metrics());
    // The CPU of the measured window alone: the driver's reading would also
    // count starting the cluster and electing every group's leader.
    let cpu = ProcessStats::now().since(&cpu_before);
    let report = load.finish();
    fill(&mut out, &report, args.payload);
    out.set("cpu_user_s", cpu.cpu_user_s);
    out.set("cpu_sys_s", cpu.cpu_sys_s);
    if let (Some(b), Some(a)) = (before, after) {
        let fsyncs = a.wal_syncs - b.wal_syncs;
        let entries = a.wal_entries - b.wal_entries;
        out.set("fsyncs", fsyncs);
        let per = |n: u64, d: u64| if d > 0 { n as f64 / d as f64 } else { 0.0 };
        let entries_per_fsync = per(entries, fsyncs);
        out.set("entries_per_fsync", entries_per_fsync);
        let frames = a.frames_sent - b.frames_sent;
        out.set("frames_sent", frames);
        out.set("heartbeat_frames", a.heartbeat_frames - b.heartbeat_frames);
        let messages = a.messages_sent - b.messages_sent;
        out.set("leader_stepdowns", a.leader_stepdowns - b.leader_stepdowns);
        out.set("frames_dropped", a.frames_dropped - b.frames_dropped);
        let messages_per_frame = per(messages, frames);
        out.set("messages_per_frame", messages_per_frame);
        // Raft messages between the nodes for each acknowledged operation.
        let ops = report.writes + report.reads;
        let messages_per_op = per(messages, ops);
        out.set("messages_per_op", messages_per_op);
        out.say(format!("batching: {entries_per_fsync:.1} WAL entries per fsync, {messages_per_frame:.1} messages per frame, {messages_per_op:.1} messages per operation"));
        // What those messages are, per operation: the appends and their
        // answers are the floor; the rest is the cost of keeping groups alive.
        let by_traffic = a.messages_by_traffic.since(&b.messages_by_traffic);
        let kinds: Vec<(raftcore::Traffic, f64)> = raftcore::Traffic::ALL.iter().map(|&t| (t, per(by_traffic.get(t), ops))).collect();
        for &(t, n) in &kinds {
            out.set(&format!("messages_per_op_{}", t.name()), n);
        }
        let shown: Vec<String> = kinds.iter().filter(|&&(_, n)| n >= 0.005).map(|&(t, n)| format!("{} {n:.2}", t.name().replace('_', " "))).collect();
        out.say(format!("messages per operation: {}", shown.join(", ")));
        let snapshots = a.snapshots - b.snapshots;
        let failures = a.snapshot_save_failures - b.snapshot_save_failures;
        out.set("snapshots", snapshots);
        out.set("snapshot_save_failures", failures);
        out.set("log_entries_in_memory", a.log_entries_in_memory);
        out.say(format!("compaction: {snapshots} snapshots saved, {failures} failed; {} log entries in memory at the end", a.log_entries_in_memory));
    }
    if let Some(e) = embedded {
        e.shutdown()?;
    }
    Ok(out)
}

/// The common workload fields of a load report.
pub fn fill(out: &mut Outcome, report: &LoadReport, payload: u64) {
    let secs = report.measured_s.max(1e-9);
    out.set("ops", report.writes + report.reads);
    out.set("errors", report.errors);
    out.set("writes_per_s", report.writes as f64 / secs);
    out.set("reads_per_s", report.reads as f64 / secs);
    out.set("mib_per_s", (report.writes * payload) as f64 / secs / (1 << 20) as f64);
    out.set("redirects", report.redirects);
    out.set("elapsed_s", report.measured_s);
    if !report.errors_by_kind.is_empty() {
        let kinds: serde_json::Map<String, serde_json::Value> = report.errors_by_kind.iter().map(|(k, v)| ((*k).to_owned(), (*v).into())).collect();
        out.say(format!("errors by kind: {}", serde_json::Value::Object(kinds.clone())));
        out.set("errors_by_kind", kinds);
    }
    out.latency_us = Some(report.latency_us.clone());
}
