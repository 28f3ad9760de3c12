//! `myriad-bench`: the load generator. Its flags and JSON output are the
//! public contract of shared/BENCH.md.

mod alloc_count;
mod cluster;
mod load;
// The API that modes use: parts of it wait for the modes that need them.
#[allow(dead_code)]
mod args;
#[allow(dead_code)]
mod data_dir;
mod format;
mod modes;
#[allow(dead_code)]
mod outcome;
mod plot;
mod process_stats;
#[allow(dead_code)]
mod progress;
mod report;
mod result;
mod selftest;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::{Parser, Subcommand};
use outcome::{Outcome, RunContext};
use process_stats::ProcessStats;
use progress::{Display, Progress};

#[global_allocator]
pub(crate) static GLOBAL: alloc_count::CountingAlloc = alloc_count::CountingAlloc::new();

#[derive(Parser, Debug)]
#[command(
    name = "myriad-bench",
    version,
    about = "Myriad's load generator",
    long_about = "Myriad's load generator. Without a mode it runs the default write workload \
                  against an embedded 3-node cluster. A human summary goes to stdout; \
                  --json and --report write the result to files."
)]
struct Cli {
    #[command(subcommand)]
    mode: Option<Mode>,
    /// The default write workload's shape (used when no mode is given).
    #[command(flatten)]
    write: modes::write::WriteArgs,
    /// Write the JSON result (mode, config and every measured figure) to FILE; stdout keeps the human summary.
    #[arg(long, global = true, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write a self-contained HTML report to FILE: throughput per second, latency by
    /// percentile, configuration and results (inline SVG, no network, no scripts).
    #[arg(long, global = true, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Keep WAL and snapshots in DIR after the run (default: a temporary directory, removed).
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Show no progress on stderr (progress is also off when stderr is not a terminal,
    /// except for one-line notes such as failover marks).
    #[arg(long, short, global = true)]
    quiet: bool,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// The WAL alone on one core, no consensus.
    Wal(modes::wal::WalArgs),
    /// The Raft core alone: 3 replicas in one thread, no network, no disk.
    Raftcore(modes::raftcore::RaftcoreArgs),
    /// CPU and memory of an idle cluster with many groups.
    Idle(modes::idle::IdleArgs),
    /// Kill one node under load and measure the recovery of service.
    Failover(modes::failover::FailoverArgs),
    /// Write a WAL, restart the node, measure replay time.
    Recovery(modes::recovery::RecoveryArgs),
    /// Record a read/write/cas history for a linearizability checker.
    LinKv(modes::lin_kv::LinKvArgs),
    /// Synthetic operations that exercise the driver (tests only).
    #[command(hide = true)]
    Selftest(selftest::SelftestArgs),
}

fn run_mode(cli: &Cli, ctx: &RunContext) -> anyhow::Result<Outcome> {
    match &cli.mode {
        None => modes::write::run(&cli.write, ctx),
        Some(Mode::Wal(a)) => modes::wal::run(a, ctx),
        Some(Mode::Raftcore(a)) => modes::raftcore::run(a, ctx),
        Some(Mode::Idle(a)) => modes::idle::run(a, ctx),
        Some(Mode::Failover(a)) => modes::failover::run(a, ctx),
        Some(Mode::Recovery(a)) => modes::recovery::run(a, ctx),
        Some(Mode::LinKv(a)) => modes::lin_kv::run(a, ctx),
        Some(Mode::Selftest(a)) => selftest::run(a, ctx),
    }
}

/// Runs the mode, measures the process around it, prints the summary and
/// writes the requested files.
fn drive(cli: &Cli) -> anyhow::Result<()> {
    let display = if cli.quiet {
        Display::Off
    } else if std::io::stderr().is_terminal() {
        Display::Bar
    } else {
        Display::Lines
    };
    let ctx = RunContext {
        data_dir: cli.data_dir.clone(),
        progress: Progress::new(display),
    };
    let stats_before = ProcessStats::now();
    let started = Instant::now();
    let outcome = run_mode(cli, &ctx);
    ctx.progress.finish();
    let mut outcome = outcome?;
    let measured = result::Measured {
        stats: ProcessStats::now().since(&stats_before),
        elapsed_s: started.elapsed().as_secs_f64(),
    };
    result::adopt_progress(&mut outcome, &ctx.progress);
    let fields = result::assemble(&outcome, &measured);
    println!("{}", result::summary(&outcome, &fields));
    if let Some(path) = &cli.json {
        let text = serde_json::to_string_pretty(&fields).expect("a JSON map serializes");
        write_file(path, &(text + "\n"))?;
    }
    if let Some(path) = &cli.report {
        write_file(path, &report::html(&outcome, &fields))?;
    }
    Ok(())
}

fn write_file(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

fn main() -> ExitCode {
    engine::configure_heap();
    // Three nodes, their clients and the load's connections in one process.
    if let Err(e) = engine::raise_open_files_limit() {
        eprintln!("myriad-bench: raising the open-files limit: {e}");
    }
    let cli = Cli::parse();
    match drive(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("myriad-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
