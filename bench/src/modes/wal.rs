//! The `wal` mode: the per-core WAL alone, no consensus. See shared/BENCH.md.

use crate::outcome::{Outcome, RunContext};

#[derive(clap::Args, Debug, Clone)]
pub struct WalArgs {}

pub fn run(_args: &WalArgs, _ctx: &RunContext) -> anyhow::Result<Outcome> {
    anyhow::bail!("mode `wal` is not yet available: it needs the WAL (issue 3)")
}
