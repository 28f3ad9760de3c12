//! `myriad-bench`: the load generator. Its flags and JSON output are the
//! public contract of shared/BENCH.md.

mod modes;
mod outcome;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use outcome::{Outcome, RunContext};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(name = "myriad-bench", version, about = "Myriad's load generator")]
struct Cli {
    #[command(subcommand)]
    mode: Option<Mode>,
    /// The default write workload's shape (used when no mode is given).
    #[command(flatten)]
    write: modes::write::WriteArgs,
    /// Write the JSON result to this file.
    #[arg(long, global = true)]
    json: Option<PathBuf>,
    /// Keep WAL and snapshots in this directory (default: a temporary one, removed).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
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
}

fn run(cli: &Cli) -> anyhow::Result<Outcome> {
    let ctx = RunContext { data_dir: cli.data_dir.clone(), progress: false };
    match &cli.mode {
        None => modes::write::run(&cli.write, &ctx),
        Some(Mode::Wal(a)) => modes::wal::run(a, &ctx),
        Some(Mode::Raftcore(a)) => modes::raftcore::run(a, &ctx),
        Some(Mode::Idle(a)) => modes::idle::run(a, &ctx),
        Some(Mode::Failover(a)) => modes::failover::run(a, &ctx),
        Some(Mode::Recovery(a)) => modes::recovery::run(a, &ctx),
        Some(Mode::LinKv(a)) => modes::lin_kv::run(a, &ctx),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(outcome) => {
            let mut result = serde_json::Map::new();
            result.insert("mode".into(), outcome.mode.into());
            result.insert("config".into(), outcome.config.into());
            result.extend(outcome.fields);
            let text = serde_json::to_string_pretty(&result).expect("a JSON map serializes");
            println!("{text}");
            if let Some(path) = &cli.json {
                if let Err(e) = std::fs::write(path, text) {
                    eprintln!("myriad-bench: cannot write {}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("myriad-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
