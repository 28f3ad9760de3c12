//! The `idle` mode: what an idle cluster costs. It starts the embedded
//! cluster with G groups, waits until every group has a leader and the groups
//! quiesce, then measures the process's CPU use and memory while nothing
//! happens. See shared/BENCH.md.
//!
//! The embedded cluster hosts every node in this process, so
//! `idle_cpu_core_fraction` and the memory figures cover all the nodes;
//! `idle_cpu_core_fraction_per_node` divides by the node count.

use std::time::{Duration, Instant};

use engine::node::MetricsSnapshot;

use crate::cluster::{Embedded, EmbeddedShape, TICK_MS};
use crate::format;
use crate::outcome::{Outcome, RunContext};
use crate::process_stats::ProcessStats;
use crate::progress::Plan;

#[derive(clap::Args, Debug, Clone)]
pub struct IdleArgs {
    /// Nodes of the embedded cluster (each replicates every group).
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    /// Raft groups.
    #[arg(long, default_value_t = 10_000)]
    pub groups: u64,
    /// Executor cores per node (the embedded cluster runs core k of every node on executor k).
    #[arg(long, default_value_t = super::write::default_cores())]
    pub cores: u32,
    /// Longest wait, once every group has a leader, for the groups to quiesce
    /// before measuring (measuring starts as soon as all have quiesced).
    #[arg(long, default_value = "5s", value_parser = crate::args::parse_duration)]
    pub settle: Duration,
    /// How long to measure the idle cluster.
    #[arg(long, default_value = "10s", value_parser = crate::args::parse_duration)]
    pub measure: Duration,
    /// Longest wait for every group to elect a leader; the run then measures
    /// what it has and reports `leaders_elected` below `groups`.
    #[arg(long, default_value = "120s", value_parser = crate::args::parse_duration)]
    pub election_timeout: Duration,
}

/// How often the leader and quiescence counters are polled (they change at
/// most once per tick).
const POLL_INTERVAL: Duration = Duration::from_millis(TICK_MS);
/// Sampling step of the idle window (for the per-second series); each sample
/// reads a few atomics, far below the figures measured.
const SAMPLE_INTERVAL: Duration = Duration::from_millis(250);

pub fn run(args: &IdleArgs, ctx: &RunContext) -> anyhow::Result<Outcome> {
    anyhow::ensure!(args.groups >= 1, "--groups must be at least 1");
    anyhow::ensure!(args.cores >= 1, "--cores must be at least 1");
    anyhow::ensure!(!args.measure.is_zero(), "--measure must be positive");
    let mut out = Outcome::new("idle");
    out.config("nodes", args.nodes);
    out.config("groups", args.groups);
    out.config("cores", args.cores);
    out.config("settle_s", args.settle.as_secs_f64());
    out.config("measure_s", args.measure.as_secs_f64());
    out.config("tick_ms", TICK_MS);
    out.config("sync", true);

    let rss_before_bytes = vm_status_bytes("VmRSS:").unwrap_or(0);
    let shape = EmbeddedShape {
        nodes: args.nodes,
        groups: args.groups,
        cores: args.cores,
        sync: true,
        log_entries_in_memory_max: engine::node::LOG_ENTRIES_IN_MEMORY_MAX_DEFAULT,
    };
    let started = Instant::now();
    let embedded = Embedded::start(ctx, &shape, "electing leaders", Plan::Units(args.groups))?;
    let measured = measure_idle(args, ctx, &embedded, started, &mut out);
    let shutdown = embedded.shutdown();
    let measured = measured?;
    shutdown?;
    report(args, &mut out, &measured, rss_before_bytes);
    Ok(out)
}

/// What the idle run measured.
struct Measured {
    /// Start of the cluster → every group has a leader (None: timed out).
    election_s: Option<f64>,
    /// Every group has a leader → every replica quiesced (None: did not
    /// within `--settle`).
    quiesce_s: Option<f64>,
    leaders: u64,
    quiesced_start: u64,
    quiesced_end: u64,
    window_s: f64,
    cpu: ProcessStats,
    /// Counters of every node over the idle window.
    traffic: MetricsSnapshot,
    rss_idle_bytes: u64,
    rss_hwm_bytes: u64,
}

fn measure_idle(
    args: &IdleArgs,
    ctx: &RunContext,
    embedded: &Embedded,
    started: Instant,
    out: &mut Outcome,
) -> anyhow::Result<Measured> {
    let replicas = args.groups * args.nodes;
    let mut m = cluster_metrics(embedded);
    while m.leaders < args.groups && started.elapsed() < args.election_timeout {
        std::thread::sleep(POLL_INTERVAL);
        m = cluster_metrics(embedded);
        ctx.progress.tick(m.leaders.min(args.groups));
    }
    let election_s = (m.leaders >= args.groups).then(|| started.elapsed().as_secs_f64());
    if election_s.is_none() {
        out.say(format!(
            "warning: only {} of {} groups had a leader after {} s",
            m.leaders,
            args.groups,
            args.election_timeout.as_secs_f64()
        ));
    }

    ctx.progress
        .phase("quiescing", "groups", Plan::Units(replicas));
    let elected = Instant::now();
    while m.quiesced_groups < replicas && elected.elapsed() < args.settle {
        std::thread::sleep(POLL_INTERVAL);
        m = cluster_metrics(embedded);
        ctx.progress.tick(m.quiesced_groups);
    }
    let quiesce_s = (m.quiesced_groups >= replicas).then(|| elected.elapsed().as_secs_f64());

    // Frames sent per second of the idle window, for the plot.
    ctx.progress
        .phase("measuring idle", "frames", Plan::For(args.measure));
    let before = cluster_metrics(embedded);
    let cpu_before = ProcessStats::now();
    let window = Instant::now();
    while window.elapsed() < args.measure {
        std::thread::sleep(SAMPLE_INTERVAL.min(args.measure.saturating_sub(window.elapsed())));
        ctx.progress
            .tick(cluster_metrics(embedded).frames_sent - before.frames_sent);
    }
    let cpu = ProcessStats::now().since(&cpu_before);
    let window_s = window.elapsed().as_secs_f64();
    let after = cluster_metrics(embedded);
    Ok(Measured {
        election_s,
        quiesce_s,
        leaders: after.leaders,
        quiesced_start: before.quiesced_groups,
        quiesced_end: after.quiesced_groups,
        window_s,
        cpu,
        traffic: delta(&after, &before),
        rss_idle_bytes: vm_status_bytes("VmRSS:").unwrap_or(0),
        rss_hwm_bytes: vm_status_bytes("VmHWM:").unwrap_or(0),
    })
}

fn report(args: &IdleArgs, out: &mut Outcome, m: &Measured, rss_before_bytes: u64) {
    let cpu_s = m.cpu.cpu_user_s + m.cpu.cpu_sys_s;
    let fraction = cpu_s / m.window_s.max(1e-9);
    let per_node = fraction / args.nodes as f64;
    let rss_groups_bytes = m.rss_idle_bytes.saturating_sub(rss_before_bytes);
    let per_group = rss_groups_bytes / args.groups;
    out.set("groups", args.groups);
    out.set("leaders_elected", m.leaders);
    out.set("election_s", m.election_s);
    out.set("quiesce_s", m.quiesce_s);
    out.set("quiesced_groups", m.quiesced_end);
    out.set("quiesced_groups_at_start", m.quiesced_start);
    out.set("idle_cpu_core_fraction", fraction);
    out.set("idle_cpu_core_fraction_per_node", per_node);
    out.set("idle_cpu_user_s", m.cpu.cpu_user_s);
    out.set("idle_cpu_sys_s", m.cpu.cpu_sys_s);
    out.set("idle_window_s", m.window_s);
    // Wins over the driver's whole-run peak: the peak up to the end of the
    // idle window, before shutdown.
    out.set("rss_max_bytes", m.rss_hwm_bytes);
    out.set("rss_idle_bytes", m.rss_idle_bytes);
    out.set("rss_before_cluster_bytes", rss_before_bytes);
    out.set("rss_per_group_bytes", per_group);
    out.set(
        "rss_per_group_replica_bytes",
        rss_groups_bytes / (args.groups * args.nodes),
    );
    let t = &m.traffic;
    out.set("idle_frames_sent", t.frames_sent);
    out.set("idle_heartbeat_frames", t.heartbeat_frames);
    out.set("idle_keepalive_frames", t.keepalive_frames);
    out.set("idle_messages_sent", t.messages_sent);
    out.set("idle_readies", t.readies);
    out.set("idle_wal_syncs", t.wal_syncs);

    let replicas = args.groups * args.nodes;
    let election = m
        .election_s
        .map_or("not all elected".to_owned(), |s| format!("{s:.2} s"));
    out.say(format!(
        "groups      {} · {} with a leader · elected in {election}",
        args.groups, m.leaders
    ));
    let quiesce = m.quiesce_s.map_or(
        format!("not all within {:.1} s", args.settle.as_secs_f64()),
        |s| format!("all within {s:.2} s"),
    );
    out.say(format!(
        "quiesced    {} of {replicas} replicas at the end ({quiesce})",
        m.quiesced_end
    ));
    out.say(format!(
        "idle cpu    {:.4} of one core for {} nodes ({:.4} per node) over {:.1} s",
        fraction, args.nodes, per_node, m.window_s
    ));
    out.say(format!(
        "idle rss    {} ({} before the cluster) · {} per group ({} per replica)",
        format::bytes(m.rss_idle_bytes),
        format::bytes(rss_before_bytes),
        format::bytes(per_group),
        format::bytes(rss_groups_bytes / replicas)
    ));
    out.say(format!(
        "idle wire   {} frames ({} heartbeat-only), {} messages, {} keepalive frames, {} WAL syncs in the window",
        t.frames_sent, t.heartbeat_frames, t.messages_sent, t.keepalive_frames, t.wal_syncs
    ));
}

/// Every counter summed over every node of the embedded cluster.
pub fn cluster_metrics(embedded: &Embedded) -> MetricsSnapshot {
    let nodes: Vec<MetricsSnapshot> = embedded
        .configs
        .keys()
        .map(|&id| embedded.cluster.metrics(id))
        .collect();
    let mut s = MetricsSnapshot::default();
    for m in &nodes {
        s.readies += m.readies;
        s.wal_entries += m.wal_entries;
        s.wal_records += m.wal_records;
        s.wal_syncs += m.wal_syncs;
        s.frames_sent += m.frames_sent;
        s.keepalive_frames += m.keepalive_frames;
        s.heartbeat_frames += m.heartbeat_frames;
        s.messages_sent += m.messages_sent;
        s.frames_received += m.frames_received;
        s.leaders += m.leaders;
        s.quiesced_groups += m.quiesced_groups;
        s.snapshots += m.snapshots;
    }
    s
}

/// The growth of the monotone counters from `a` to `b` (gauges are `b`'s).
fn delta(b: &MetricsSnapshot, a: &MetricsSnapshot) -> MetricsSnapshot {
    MetricsSnapshot {
        readies: b.readies.saturating_sub(a.readies),
        wal_entries: b.wal_entries.saturating_sub(a.wal_entries),
        wal_records: b.wal_records.saturating_sub(a.wal_records),
        wal_syncs: b.wal_syncs.saturating_sub(a.wal_syncs),
        frames_sent: b.frames_sent.saturating_sub(a.frames_sent),
        keepalive_frames: b.keepalive_frames.saturating_sub(a.keepalive_frames),
        heartbeat_frames: b.heartbeat_frames.saturating_sub(a.heartbeat_frames),
        messages_sent: b.messages_sent.saturating_sub(a.messages_sent),
        frames_received: b.frames_received.saturating_sub(a.frames_received),
        snapshots: b.snapshots.saturating_sub(a.snapshots),
        ..*b
    }
}

/// A `kB` line of /proc/self/status (`VmRSS:`, `VmHWM:`), in bytes.
pub fn vm_status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_status_kib(&status, field).map(|kib| kib * 1024)
}

fn parse_status_kib(status: &str, field: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(field))?;
    line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_parse_in_kib() {
        let status = "Name:\tx\nVmHWM:\t    2048 kB\nVmRSS:\t  1000 kB\n";
        assert_eq!(parse_status_kib(status, "VmRSS:"), Some(1000));
        assert_eq!(parse_status_kib(status, "VmHWM:"), Some(2048));
        assert_eq!(parse_status_kib(status, "VmSwap:"), None);
    }

    #[test]
    fn deltas_keep_gauges_and_subtract_counters() {
        let a = MetricsSnapshot {
            frames_sent: 10,
            leaders: 5,
            quiesced_groups: 1,
            ..Default::default()
        };
        let b = MetricsSnapshot {
            frames_sent: 15,
            leaders: 6,
            quiesced_groups: 9,
            ..Default::default()
        };
        let d = delta(&b, &a);
        assert_eq!((d.frames_sent, d.leaders, d.quiesced_groups), (5, 6, 9));
    }
}
