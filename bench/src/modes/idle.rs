//! The `idle` mode: see shared/BENCH.md. It needs the multi-Raft node
//! (issue 4) and refuses to run until the node exists.

use crate::outcome::{Outcome, RunContext};

#[derive(clap::Args, Debug, Clone)]
pub struct IdleArgs {}

pub fn run(_args: &IdleArgs, _ctx: &RunContext) -> anyhow::Result<Outcome> {
    anyhow::bail!("mode `idle` is not yet available: it needs the multi-Raft node (issue 4)")
}
