//! The `wal` mode: the per-core WAL alone, no consensus (shared/BENCH.md).
//! Writers submit batches of many groups' entries and wait until each is
//! durable; the WAL's group commit folds concurrent batches into one durable
//! write (O_DSYNC, as a node's WAL runs, or a write and then an fdatasync
//! with `--sync-mode fdatasync`). The raw disk is measured in the same run, on the same
//! file system, so the WAL's figures can be read against the device's.

mod load;
mod raw;

use std::sync::Barrier;
use std::time::{Duration, Instant};

use anyhow::Context;
use engine::wal::SyncMode;

use crate::outcome::{latency_histogram, Outcome, RunContext};
use crate::process_stats::ProcessStats;
use crate::progress::Plan;
use load::{CoreLoad, CoreTally, Meet};

/// A limit on the flags: a bench shape, not a stress test of the parser.
pub const CORES_MAX: usize = 64;
pub const WRITERS_MAX: usize = 1024;
pub const PAYLOAD_BYTES_MAX: u64 = 1 << 20;
/// Registered io_uring buffer memory of all executors together: memlock is
/// 8 MiB on the development machine, and what does not fit falls back to
/// ordinary (unregistered) DMA buffers.
const IO_MEMORY_BYTES_TOTAL: usize = 6 << 20;
const IO_MEMORY_BYTES_MIN: usize = 256 << 10;

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncArg {
    /// Write, then fdatasync (the next write goes out while the sync runs).
    Fdatasync,
    /// Segment files opened with O_DSYNC: each write is durable when it completes.
    Dsync,
}

#[derive(clap::Args, Debug, Clone)]
pub struct WalArgs {
    /// Groups writing to the WAL, spread round-robin over the cores.
    #[arg(long, default_value_t = 10_000)]
    groups: u64,
    /// Bytes of each entry's payload, e.g. 64, 4KiB.
    #[arg(long, default_value = "64", value_parser = crate::args::parse_bytes)]
    payload: u64,
    /// Groups in each batch (one WAL record); the groups are taken round-robin.
    #[arg(long, default_value_t = 100)]
    groups_per_batch: usize,
    /// Consecutive entries per group in each batch.
    #[arg(long, default_value_t = 10)]
    entries_per_group: usize,
    /// Concurrent batch submitters per core; each waits for its batch to be
    /// durable before building the next, so this is the batches in flight.
    #[arg(long, default_value_t = 2)]
    writers: usize,
    /// Cores, each with its own pinned executor and its own WAL (in core-N/ of the data directory).
    #[arg(long, default_value_t = 1)]
    cores: usize,
    /// How long to write (the measured window).
    #[arg(long, default_value = "5s", value_parser = crate::args::parse_duration)]
    duration: Duration,
    /// Size of each preallocated WAL segment file, a multiple of 4 KiB.
    #[arg(long, default_value = "64MiB", value_parser = crate::args::parse_bytes)]
    segment_size: u64,
    /// How a write becomes durable. Every batch is durable before it counts;
    /// there is no unsynced mode. The default is what a node's WAL uses.
    #[arg(long, value_enum, default_value_t = SyncArg::Dsync)]
    sync_mode: SyncArg,
    /// How long to measure each of the raw disk's two sequential O_DIRECT write figures
    /// (unsynced, synced every 4 MiB) before the run; 0s skips the raw figures.
    #[arg(long, default_value = "1s", value_parser = crate::args::parse_duration)]
    raw_duration: Duration,
    /// Compact every group up to what it had written one round earlier, and
    /// purge unneeded segments, this often (and whenever the log rolls to a
    /// new segment), so the disk in use stays a few segments; 0s never
    /// compacts (the WAL then grows by the bytes written).
    #[arg(long, default_value = "1s", value_parser = crate::args::parse_duration)]
    compact_every: Duration,
    /// Let each executor spin this long before it sleeps in the kernel (e.g. 50us);
    /// spinning burns a core, so it only pays where cores are spare.
    #[arg(long, default_value = "0s", value_parser = crate::args::parse_duration)]
    spin: Duration,
}

impl WalArgs {
    fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.groups > 0, "--groups must be positive");
        anyhow::ensure!(
            (1..=CORES_MAX).contains(&self.cores),
            "--cores is 1..={CORES_MAX}"
        );
        anyhow::ensure!(
            self.groups >= self.cores as u64,
            "--groups must be at least --cores"
        );
        anyhow::ensure!(
            (1..=WRITERS_MAX).contains(&self.writers),
            "--writers is 1..={WRITERS_MAX}"
        );
        anyhow::ensure!(
            self.groups_per_batch > 0,
            "--groups-per-batch must be positive"
        );
        anyhow::ensure!(
            self.entries_per_group > 0,
            "--entries-per-group must be positive"
        );
        anyhow::ensure!(
            self.payload <= PAYLOAD_BYTES_MAX,
            "--payload is at most 1 MiB"
        );
        anyhow::ensure!(!self.duration.is_zero(), "--duration must be positive");
        Ok(())
    }
}

pub fn run(args: &WalArgs, ctx: &RunContext) -> anyhow::Result<Outcome> {
    args.check()?;
    install_tracing();
    let mut out = Outcome::new("wal");
    out.config("groups", args.groups);
    out.config("payload_bytes", args.payload);
    out.config("groups_per_batch", args.groups_per_batch as u64);
    out.config("entries_per_group", args.entries_per_group as u64);
    out.config("writers", args.writers as u64);
    out.config("cores", args.cores as u64);
    out.config("duration_s", args.duration.as_secs_f64());
    out.config("sync", true);
    out.config("sync_mode", format!("{:?}", args.sync_mode).to_lowercase());
    out.config("segment_size_bytes", args.segment_size);
    out.config("compact_every_s", args.compact_every.as_secs_f64());
    if !args.spin.is_zero() {
        out.config("spin_us", args.spin.as_micros() as u64);
    }

    let data_dir = ctx.open_data_dir()?;
    if !args.raw_duration.is_zero() {
        let disk =
            raw::measure(data_dir.path(), args.raw_duration).context("measuring the raw disk")?;
        out.set("raw_odirect_mib_per_s", round2(disk.odirect_mib_per_s));
        out.set("raw_synced_mib_per_s", round2(disk.synced_mib_per_s));
        out.set("raw_fsync_us_p50", disk.fsync_us_p50);
        out.set("raw_fsync_us_p99", disk.fsync_us_p99);
    }

    let loads = core_loads(args, data_dir.path());
    let meet = Meet {
        start: Barrier::new(args.cores + 1),
        end: Barrier::new(args.cores + 1),
    };
    let (started, ended, cpu, tallies) = std::thread::scope(|scope| {
        let handles: Vec<_> = loads
            .into_iter()
            .map(|load| {
                let (meet, progress) = (&meet, ctx.progress.clone());
                std::thread::Builder::new()
                    .name(format!("wal-core-{}", load.core))
                    .spawn_scoped(scope, move || load::run_core(load, meet, progress))
                    .expect("spawning a core thread")
            })
            .collect();
        ctx.progress
            .phase("writing", "entries", Plan::For(args.duration));
        meet.start.wait();
        let (started, cpu_before) = (Instant::now(), ProcessStats::now());
        meet.end.wait();
        let ended = Instant::now();
        let cpu = ProcessStats::now().since(&cpu_before);
        ctx.progress.finish();
        let tallies: Vec<Result<CoreTally, String>> = handles
            .into_iter()
            .map(|h| h.join().expect("a core thread does not panic"))
            .collect();
        (started, ended, cpu, tallies)
    });
    let tallies = tallies
        .into_iter()
        .collect::<Result<Vec<_>, String>>()
        .map_err(anyhow::Error::msg)?;
    // From the first core's start: this thread may pass the start barrier
    // after the cores did, and a window measured from there came out
    // shorter than the cores wrote (0.9989 s of a 1 s run).
    let first_start = tallies.iter().map(|t| t.started).min().unwrap_or(started);
    let window = ended.saturating_duration_since(first_start);
    report(args, &mut out, &tallies, window, &cpu);
    Ok(out)
}

/// Splits the groups round-robin over the cores; core k writes to `core-k/`.
fn core_loads(args: &WalArgs, dir: &std::path::Path) -> Vec<CoreLoad> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let sync_mode = match args.sync_mode {
        SyncArg::Fdatasync => SyncMode::Fdatasync,
        SyncArg::Dsync => SyncMode::Dsync,
    };
    let io_memory_bytes = (IO_MEMORY_BYTES_TOTAL / args.cores).max(IO_MEMORY_BYTES_MIN);
    (0..args.cores)
        .map(|core| CoreLoad {
            core,
            cpu: core % cpus,
            dir: dir.join(format!("core-{core}")),
            groups: (1..=args.groups)
                .filter(|g| (g - 1) % args.cores as u64 == core as u64)
                .collect(),
            payload_bytes: args.payload as usize,
            groups_per_batch: args.groups_per_batch,
            entries_per_group: args.entries_per_group,
            writers: args.writers,
            duration: args.duration,
            opts: load::wal_options(args.segment_size, sync_mode),
            io_memory_bytes,
            spin_before_park: args.spin,
            compact_every: args.compact_every,
        })
        .collect()
}

/// Fills the result from the cores' tallies over the measured window.
fn report(
    args: &WalArgs,
    out: &mut Outcome,
    tallies: &[CoreTally],
    window: Duration,
    cpu: &ProcessStats,
) {
    let window_s = window.as_secs_f64();
    let sum = |f: fn(&CoreTally) -> u64| tallies.iter().map(f).sum::<u64>();
    let entries = sum(|t| t.entries);
    let batches = sum(|t| t.batches);
    let payload_bytes = sum(|t| t.payload_bytes);
    let wal_bytes = sum(|t| t.stats.bytes_written);
    let writes = sum(|t| t.stats.writes);
    // With O_DSYNC every write is its own durability point, counted as a sync.
    let fsyncs = sum(|t| t.stats.syncs);
    let mut latency = latency_histogram();
    for t in tallies {
        latency
            .add(&t.latency_us)
            .expect("histograms of one shape add");
    }
    let mib = |bytes: u64| bytes as f64 / (1 << 20) as f64;
    let entries_per_s = entries as f64 / window_s;
    let cpu_s = cpu.cpu_user_s + cpu.cpu_sys_s;

    // The window's CPU, not the whole run's (which has the raw-disk phase).
    out.set("cpu_user_s", cpu.cpu_user_s);
    out.set("cpu_sys_s", cpu.cpu_sys_s);
    out.set("ops", entries);
    out.set("errors", 0);
    out.set("entries", entries);
    out.set("batches", batches);
    out.set("entries_per_s", round2(entries_per_s));
    out.set("mib_per_s", round2(mib(payload_bytes) / window_s));
    out.set("wal_mib_per_s", round2(mib(wal_bytes) / window_s));
    out.set("fsyncs", fsyncs);
    out.set("fsyncs_per_s", round2(fsyncs as f64 / window_s));
    out.set(
        "entries_per_fsync",
        round2(entries as f64 / fsyncs.max(1) as f64),
    );
    out.set("wal_writes", writes);
    out.set("wal_records", sum(|t| t.stats.records));
    out.set("wal_bytes_written", wal_bytes);
    out.set("batch_latency_us_mean", round2(latency.mean()));
    out.set(
        "cpu_s_per_million_entries",
        round4(cpu_s / (entries.max(1) as f64 / 1e6)),
    );
    out.set("cpu_cores_used", round2(cpu_s / window_s));
    out.set(
        "build_us_per_batch",
        round2(sum(|t| t.build_ns) as f64 / 1e3 / batches.max(1) as f64),
    );
    out.set(
        "submit_us_per_batch",
        round2(sum(|t| t.submit_ns) as f64 / 1e3 / batches.max(1) as f64),
    );
    out.set("segments_created", sum(|t| t.stats.segments_created));
    out.set("segments_removed", sum(|t| t.stats.segments_removed));
    out.set(
        "segments_on_disk_max",
        tallies
            .iter()
            .map(|t| t.segments_on_disk_max)
            .max()
            .unwrap_or(0),
    );
    out.set("compactions", sum(|t| t.compactions));
    out.set("elapsed_s", round4(window_s));
    out.latency_us = Some(latency);
    out.per_second_unit = "entries".into();
    summarize(out, args, fsyncs, writes);
}

fn summarize(out: &mut Outcome, args: &WalArgs, fsyncs: u64, writes: u64) {
    let f = |name: &str| {
        out.fields
            .get(name)
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(0.0)
    };
    let mut lines = vec![format!(
        "batches of {} groups x {} entries x {} B, {} writer(s) on each of {} core(s); latency is per batch, submit to durable",
        args.groups_per_batch, args.entries_per_group, args.payload, args.writers, args.cores
    )];
    lines.push(format!(
        "WAL: {} writes, {} fsyncs, {:.1} MiB/s written with framing ({:.1} MiB/s of payload)",
        writes,
        fsyncs,
        f("wal_mib_per_s"),
        f("mib_per_s")
    ));
    if out.fields.contains_key("raw_odirect_mib_per_s") {
        let raw = f("raw_odirect_mib_per_s");
        lines.push(format!(
            "raw disk: {raw:.0} MiB/s of 1 MiB O_DIRECT writes (WAL payload at {:.1} % of it), {:.0} MiB/s with fdatasync every 4 MiB, 4 KiB write + fdatasync p50 {} µs",
            100.0 * f("mib_per_s") / raw.max(f64::MIN_POSITIVE),
            f("raw_synced_mib_per_s"),
            f("raw_fsync_us_p50")
        ));
    }
    lines.push(format!(
        "cpu: {:.3} s per million entries ({:.2} cores); per batch: build {:.1} µs, submit (encode) {:.1} µs",
        f("cpu_s_per_million_entries"),
        f("cpu_cores_used"),
        f("build_us_per_batch"),
        f("submit_us_per_batch")
    ));
    for line in lines {
        out.say(line);
    }
}

/// Shows the engine's and glommio's warnings (e.g. io_uring buffers that
/// could not be registered) on stderr; `RUST_LOG` overrides. glommio's
/// reactor logs an error for every segment it preallocates (its iopoll probe
/// reads a write-only file), which says nothing about the run: off by default.
fn install_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,glommio::reactor=off"));
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .try_init();
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn round4(v: f64) -> f64 {
    (v * 10_000.0).round() / 10_000.0
}
