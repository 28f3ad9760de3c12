//! A hidden `selftest` mode: synthetic operations with seeded latencies, no
//! cluster, so that tests can drive the whole pipeline (progress, JSON,
//! report, exit code) in about a second while the real modes are elsewhere.

use std::time::{Duration, Instant};

use crate::args::parse_duration;
use crate::outcome::{latency_histogram, Outcome, RunContext};
use crate::progress::Plan;

/// How often the synthetic load completes a batch of operations.
const SLICE: Duration = Duration::from_millis(10);
/// A limit on the synthetic rate: it only has to exercise the driver.
pub const RATE_PER_S_MAX: u64 = 1_000_000;

#[derive(clap::Args, Debug, Clone)]
pub struct SelftestArgs {
    /// How long to run, e.g. 1s, 500ms.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Synthetic operations completed per second.
    #[arg(long, default_value_t = 10_000)]
    pub rate: u64,
    /// Seed of the synthetic latencies.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Fail after the run, to test the exit code.
    #[arg(long)]
    pub fail: bool,
}

pub fn run(args: &SelftestArgs, ctx: &RunContext) -> anyhow::Result<Outcome> {
    anyhow::ensure!(
        args.rate <= RATE_PER_S_MAX,
        "--rate is at most {RATE_PER_S_MAX}"
    );
    let per_slice = args.rate * SLICE.as_millis() as u64 / 1000;
    let mut rng = args.seed | 1;
    let mut latency = latency_histogram();
    let mut ops = 0u64;
    let mut marked = false;
    let data_dir = ctx.open_data_dir()?;
    std::fs::write(data_dir.path().join("selftest.txt"), "synthetic run\n")?;
    ctx.progress
        .phase("selftest", "ops", Plan::For(args.duration));
    let started = Instant::now();
    while started.elapsed() < args.duration {
        for _ in 0..per_slice {
            latency.saturating_record(synthetic_latency_us(&mut rng));
        }
        ops += per_slice;
        ctx.progress.add(per_slice);
        if !marked && started.elapsed() >= args.duration / 2 {
            ctx.progress.mark("half way");
            marked = true;
        }
        std::thread::sleep(SLICE);
    }
    let elapsed_s = started.elapsed().as_secs_f64();
    anyhow::ensure!(!args.fail, "selftest failed on request (--fail)");
    let mut outcome = Outcome::new("selftest");
    outcome.config("duration_s", args.duration.as_secs_f64());
    outcome.config("rate", args.rate);
    outcome.config("seed", args.seed);
    outcome.set("ops", ops);
    outcome.set("errors", 0);
    outcome.set("writes_per_s", ops as f64 / elapsed_s);
    outcome.latency_us = Some(latency);
    outcome.say("synthetic operations: no cluster, no disk");
    Ok(outcome)
}

/// Mostly 100–999 µs, one in a thousand a 5–10 ms outlier (xorshift64).
fn synthetic_latency_us(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    if *state % 1000 == 0 {
        5_000 + *state / 1000 % 5_000
    } else {
        100 + *state % 900
    }
}
