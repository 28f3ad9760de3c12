//! TiKV's raft-engine under the write shape of `myriad-bench wal`, so the two
//! logs can be read side by side on the same machine.
//!
//! Each of `--writers` threads builds one `LogBatch` of `--regions-per-batch`
//! regions x `--entries-per-region` entries of `--payload` bytes, writes it
//! with `Engine::write(&mut batch, true)` (synced) and times the write, until
//! `--secs` have passed. Writer w owns the regions r with r % writers == w, so
//! each region's indices stay contiguous; a batch's regions are drawn at random
//! (seeded) from the writer's own.
//!
//! Why two switches: raft-engine's `stress` tool writes the same payloads in
//! every batch and keeps the default LZ4 batch compression (batches over
//! 8 KiB), so its batches compress about 11x and its figures describe a log
//! an eleventh the size of the data. `--payloads distinct` takes every payload
//! from a random pool (nothing to compress) and `--compression off` sets the
//! threshold to 0; this tool measures both ways.
//!
//! Output: one line of `key=value` per run.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use protobuf::Message as _;
use raft_engine::{
    take_perf_context, Config, Engine, LogBatch, MessageExt, PerfContext, ReadableSize,
};
use raft_proto::eraftpb::Entry;
use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};

/// Random bytes per writer that distinct payloads are cut from; a batch must
/// fit in it, so no payload repeats within a batch (LZ4 sees one batch).
const POOL_BYTES: usize = 32 << 20;
/// Latencies above this are recorded as this (a minute).
const LATENCY_US_MAX: u64 = 60_000_000;

#[derive(Parser, Debug, Clone)]
#[command(version, about)]
struct Args {
    /// Where the engine writes; must not exist or be empty. Removed at the end unless --keep.
    #[arg(long)]
    dir: PathBuf,
    /// Keep --dir after the run.
    #[arg(long)]
    keep: bool,
    /// Payload bytes: the same in every batch, or fresh random bytes for every entry.
    #[arg(long, value_enum)]
    payloads: Payloads,
    /// on: raft-engine's default batch_compression_threshold (8 KiB, LZ4); off: threshold 0.
    #[arg(long, value_enum)]
    compression: Compression,
    /// Seconds of writing (the measured window).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    secs: u64,
    /// Writer threads; each waits for its batch to be durable before building the next.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=1024))]
    writers: u64,
    /// Regions (raft groups) in all, ids 1..=regions.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    regions: u64,
    /// Regions in each batch (one Engine::write).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    regions_per_batch: u64,
    /// Consecutive entries per region in each batch.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    entries_per_region: u64,
    /// Bytes of each entry's payload.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    payload: u64,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum Payloads {
    /// The same --entries-per-region payloads in every batch (the stress tool's way).
    Repeated,
    /// Every payload its own slice of random bytes (incompressible).
    Distinct,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    On,
    Off,
}

#[derive(Clone)]
struct Msg;
impl MessageExt for Msg {
    type Entry = Entry;
    fn index(e: &Entry) -> u64 {
        e.index
    }
}

/// What one writer did; merged over writers at the end.
struct Tally {
    writes: u64,
    /// Sum of `Engine::write` results: bytes appended to the log.
    engine_bytes: u64,
    /// Sum of protobuf-encoded entry sizes, before compression.
    encoded_bytes: u64,
    latency_us: Histogram<u64>,
    perf: PerfContext,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(
        args.regions / args.writers >= args.regions_per_batch,
        "each writer owns regions/writers regions; that must be at least --regions-per-batch"
    );
    ensure!(
        args.regions_per_batch * args.entries_per_region * args.payload <= POOL_BYTES as u64,
        "a batch's payloads must fit in {} MiB",
        POOL_BYTES >> 20
    );
    // Refuses a non-empty directory: the run must not mix with, or delete, other data.
    if args.dir.exists() {
        let mut names = std::fs::read_dir(&args.dir).context("reading --dir")?;
        ensure!(
            names.next().is_none(),
            "{} is not empty",
            args.dir.display()
        );
    }
    std::fs::create_dir_all(&args.dir).context("creating --dir")?;
    let result = run(&args);
    if !args.keep {
        std::fs::remove_dir_all(&args.dir).context("removing --dir")?;
    }
    println!("{}", result?);
    Ok(())
}

/// Runs the writers for `--secs` and returns the result line.
fn run(args: &Args) -> anyhow::Result<String> {
    let cfg = Config {
        dir: args.dir.to_str().context("--dir must be UTF-8")?.to_owned(),
        batch_compression_threshold: match args.compression {
            Compression::On => Config::default().batch_compression_threshold,
            Compression::Off => ReadableSize(0), // zero disables compression
        },
        ..Config::default()
    };
    let threshold_bytes = cfg.batch_compression_threshold.0;
    let engine = Arc::new(Engine::open(cfg).context("opening raft-engine")?);

    let stop = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(args.writers as usize + 1));
    let handles: Vec<_> = (0..args.writers)
        .map(|w| {
            let (engine, stop, start, args) =
                (engine.clone(), stop.clone(), start.clone(), args.clone());
            std::thread::spawn(move || write_loop(&engine, &args, w, &stop, &start))
        })
        .collect();
    start.wait();
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(args.secs));
    stop.store(true, Ordering::Relaxed);
    let joined: Vec<_> = handles.into_iter().map(|h| h.join()).collect();
    let elapsed_s = started.elapsed().as_secs_f64();

    let mut tallies = Vec::new();
    for j in joined {
        tallies.push(j.map_err(|_| anyhow::anyhow!("a writer panicked"))??);
    }
    let mut total = tallies.pop().context("no writers")?;
    for t in &tallies {
        total.writes += t.writes;
        total.engine_bytes += t.engine_bytes;
        total.encoded_bytes += t.encoded_bytes;
        total.latency_us.add(&t.latency_us)?;
        total.perf += &t.perf;
    }
    ensure!(total.writes > 0, "no write completed in {elapsed_s:.2} s");
    let writes = total.writes as f64;
    let entries = total.writes * args.regions_per_batch * args.entries_per_region;
    let mut line = format!(
        "payloads={} compression={} compression_threshold_bytes={threshold_bytes} writers={} \
         elapsed_s={elapsed_s:.2} entries={entries} entries_per_s={:.0} writes_per_s={:.0} \
         p50_us={} p99_us={} bytes_per_entry={:.2} \
         encoded_bytes_per_entry={:.2} compression_ratio={:.1}",
        format!("{:?}", args.payloads).to_lowercase(),
        format!("{:?}", args.compression).to_lowercase(),
        args.writers,
        entries as f64 / elapsed_s,
        writes / elapsed_s,
        total.latency_us.value_at_quantile(0.50),
        total.latency_us.value_at_quantile(0.99),
        total.engine_bytes as f64 / entries as f64,
        total.encoded_bytes as f64 / entries as f64,
        total.encoded_bytes as f64 / total.engine_bytes as f64,
    );
    // Where a write's time goes, from raft-engine's per-thread perf context.
    let p = &total.perf;
    for (stage, spent) in [
        ("populate", p.log_populating_duration),
        ("wait", p.write_wait_duration),
        ("write", p.log_write_duration),
        ("rotate", p.log_rotate_duration),
        ("sync", p.log_sync_duration),
        ("apply", p.apply_duration),
    ] {
        line += &format!(
            " {stage}_us_per_write={:.0}",
            spent.as_secs_f64() * 1e6 / writes
        );
    }
    Ok(line)
}

/// One writer: builds and writes batches until `stop`.
fn write_loop(
    engine: &Engine,
    args: &Args,
    writer: u64,
    stop: &AtomicBool,
    start: &Barrier,
) -> anyhow::Result<Tally> {
    let mut rng = SmallRng::seed_from_u64(0x5eed_0000 + writer);
    let regions: Vec<u64> = (1..=args.regions)
        .filter(|r| (r - 1) % args.writers == writer)
        .collect();
    let mut next_index = vec![1u64; regions.len()];
    let mut pool = vec![0u8; POOL_BYTES];
    rng.fill_bytes(&mut pool);
    let (payload_bytes, per_region) = (args.payload as usize, args.entries_per_region as usize);
    let mut pool_offset = 0usize;
    let regions_per_batch = args.regions_per_batch as usize;
    let mut chosen = Vec::with_capacity(regions_per_batch);
    let mut entries = Vec::with_capacity(per_region);
    let mut tally = Tally {
        writes: 0,
        engine_bytes: 0,
        encoded_bytes: 0,
        latency_us: Histogram::new_with_bounds(1, LATENCY_US_MAX, 3)?,
        perf: PerfContext::default(),
    };
    start.wait();
    let _ = take_perf_context(); // start the per-thread counters from zero
    while !stop.load(Ordering::Relaxed) {
        let mut batch = LogBatch::with_capacity(regions_per_batch);
        chosen.clear();
        while chosen.len() < regions_per_batch {
            let slot = rng.gen_range(0..regions.len());
            if !chosen.contains(&slot) {
                chosen.push(slot);
            }
        }
        for &slot in &chosen {
            entries.clear();
            for j in 0..per_region {
                let at = match args.payloads {
                    Payloads::Repeated => j * payload_bytes,
                    Payloads::Distinct => {
                        if pool_offset + payload_bytes > POOL_BYTES {
                            pool_offset = 0;
                        }
                        pool_offset += payload_bytes;
                        pool_offset - payload_bytes
                    }
                };
                let e = Entry {
                    term: 1,
                    index: next_index[slot] + j as u64,
                    data: pool[at..at + payload_bytes].to_vec().into(),
                    ..Entry::default()
                };
                tally.encoded_bytes += e.compute_size() as u64;
                entries.push(e);
            }
            next_index[slot] += per_region as u64;
            batch.add_entries::<Msg>(regions[slot], &entries)?;
        }
        let t0 = Instant::now();
        tally.engine_bytes += engine.write(&mut batch, true)? as u64;
        tally
            .latency_us
            .saturating_record(t0.elapsed().as_micros() as u64);
        tally.writes += 1;
    }
    tally.perf = take_perf_context();
    Ok(tally)
}
