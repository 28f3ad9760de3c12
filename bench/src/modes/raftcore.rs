//! The `raftcore` mode: 3 replicas of G groups in one thread, messages handed
//! over in memory, no network, no disk (`raftcore::harness`). Measures
//! committed entries per second on one core and the heap one quiesced group
//! replica holds. See shared/BENCH.md.

use std::time::{Duration, Instant};

use raftcore::harness::{Harness, HarnessShape};

use crate::outcome::{Outcome, RunContext};
use crate::process_stats::ProcessStats;
use crate::progress::Plan;

#[derive(clap::Args, Debug, Clone)]
pub struct RaftcoreArgs {
    /// Raft groups, each with 3 replicas, all driven by this one thread.
    #[arg(long, default_value_t = 1000)]
    groups: usize,
    /// Bytes of each entry's payload.
    #[arg(long, default_value = "64", value_parser = crate::args::parse_bytes)]
    payload: u64,
    /// Entries per proposal: each round every leader proposes one batch.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// How long to replicate.
    #[arg(long, default_value = "5s", value_parser = crate::args::parse_duration)]
    duration: Duration,
    /// Groups created, settled and quiesced for the memory figure (0 skips it).
    #[arg(long, default_value_t = 10_000)]
    idle_groups: usize,
}

pub fn run(args: &RaftcoreArgs, ctx: &RunContext) -> anyhow::Result<Outcome> {
    anyhow::ensure!(args.groups > 0 && args.batch > 0, "--groups and --batch must be positive");
    anyhow::ensure!(args.payload <= 1 << 20, "--payload is at most 1 MiB here");
    let mut out = Outcome::new("raftcore");
    out.config("groups", args.groups as u64);
    out.config("replicas", 3);
    out.config("payload_bytes", args.payload);
    out.config("batch_entries", args.batch as u64);
    out.config("duration_s", args.duration.as_secs_f64());
    out.config("cores", 1);
    out.config("idle_groups", args.idle_groups as u64);

    if args.idle_groups > 0 {
        let bytes = idle_group_bytes(args);
        out.set("idle_group_bytes", bytes);
        out.say(format!("idle group: {bytes} bytes of heap per quiesced replica ({} groups x 3 replicas, logs compacted)", args.idle_groups));
    }

    let shape = HarnessShape { groups: args.groups, payload_bytes: args.payload as usize, batch_entries: args.batch };
    let mut h = Harness::new(shape);
    ctx.progress.phase("replicating", "entries", Plan::For(args.duration));
    let before = ProcessStats::now();
    let started = Instant::now();
    let mut reported = 0;
    while started.elapsed() < args.duration {
        h.round();
        ctx.progress.add(h.stats.committed_entries - reported);
        reported = h.stats.committed_entries;
    }
    let elapsed_s = started.elapsed().as_secs_f64();
    let cpu = ProcessStats::now().since(&before);
    ctx.progress.finish();

    let s = h.stats;
    let entries_per_s = s.committed_entries as f64 / elapsed_s;
    out.set("ops", s.committed_entries);
    out.set("errors", 0);
    out.set("entries_per_s", entries_per_s);
    out.set("writes_per_s", entries_per_s);
    out.set("mib_per_s", entries_per_s * args.payload as f64 / (1024.0 * 1024.0));
    out.set("cpu_cores_used", (cpu.cpu_user_s + cpu.cpu_sys_s) / elapsed_s);
    out.set("cpu_user_s", cpu.cpu_user_s);
    out.set("cpu_sys_s", cpu.cpu_sys_s);
    out.set("messages", s.messages);
    out.set("readies", s.readies);
    out.set("elapsed_s", elapsed_s);
    out.say(format!(
        "replication: {:.0} committed entries/s on one thread ({} groups, batches of {} x {} B), {:.1} messages per round per group",
        entries_per_s,
        args.groups,
        args.batch,
        args.payload,
        s.messages as f64 / (s.rounds.max(1) * args.groups as u64) as f64
    ));
    Ok(out)
}

/// Heap bytes per replica of `idle_groups` groups that elected a leader,
/// committed a batch, compacted their logs and quiesced, measured with the
/// counting allocator (shared payloads and the harness's own buffers are
/// included, so this errs high).
fn idle_group_bytes(args: &RaftcoreArgs) -> i64 {
    let shape = HarnessShape { groups: args.idle_groups, payload_bytes: args.payload as usize, batch_entries: args.batch };
    crate::GLOBAL.start();
    let mut h = Harness::new(shape);
    h.round();
    h.settle_and_quiesce(30);
    h.compact_all();
    let live = crate::GLOBAL.live_bytes();
    crate::GLOBAL.stop();
    let replicas = h.replica_count() as i64;
    drop(h);
    live / replicas
}
