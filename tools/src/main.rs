//! `myriad-log`: read-only inspection of one core's WAL directory. Every
//! command reads the segments with plain buffered reads through the engine's
//! own format and scan code, so it judges each byte exactly as recovery does;
//! it never writes to the directory and takes no lock, so it can run beside a
//! live node.
//!
//! Exit status: 0 healthy (a torn tail is only a warning), 1 corruption that
//! recovery would refuse, 2 usage or I/O errors.

mod dump;
mod payload;
mod segments;
mod stat;
mod verify;
mod walk;

use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "myriad-log",
    version,
    about = "Read-only inspection of a Myriad WAL directory (one core's WAL)",
    after_help = "Exit status: 0 healthy (a torn tail is a warning), 1 corruption, 2 usage or I/O error."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// List segment files: size, records, sequence range, groups, bytes used.
    Segments {
        /// The WAL directory of one core.
        dir: PathBuf,
    },
    /// Print records with their entries, hard states, truncations and
    /// compaction marks, in log order.
    Dump(dump::Args),
    /// Per group: first/last index, last term, entries, payload bytes, hard
    /// state, as recovery would rebuild them.
    Stat {
        /// The WAL directory of one core.
        dir: PathBuf,
        /// One JSON object per group, one per line.
        #[arg(long)]
        json: bool,
    },
    /// Check every record (CRC, sequence continuity, archive validation) and
    /// name the file and offset of the first corruption.
    Verify {
        /// The WAL directory of one core.
        dir: PathBuf,
    },
}

/// What a command concluded about the WAL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Recovery would open it (possibly truncating a torn tail).
    Healthy,
    /// Recovery would refuse it.
    Corrupt,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut out = BufWriter::new(io::stdout().lock());
    let result = match cli.cmd {
        Cmd::Segments { dir } => segments::run(&dir, &mut out),
        Cmd::Dump(args) => dump::run(&args, &mut out),
        Cmd::Stat { dir, json } => stat::run(&dir, json, &mut out),
        Cmd::Verify { dir } => verify::run(&dir, &mut out),
    };
    let result = result.and_then(|verdict| {
        out.flush()?;
        Ok(verdict)
    });
    match result {
        Ok(Verdict::Healthy) => ExitCode::SUCCESS,
        Ok(Verdict::Corrupt) => ExitCode::from(1),
        // `myriad-log dump DIR | head`: the reader has seen enough.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("myriad-log: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}
