//! The `write` mode: see shared/BENCH.md. It needs the multi-Raft node
//! (issue 4) and refuses to run until the node exists.

use crate::outcome::{Outcome, RunContext};

#[derive(clap::Args, Debug, Clone)]
pub struct WriteArgs {}

pub fn run(_args: &WriteArgs, _ctx: &RunContext) -> anyhow::Result<Outcome> {
    anyhow::bail!("mode `write` is not yet available: it needs the multi-Raft node (issue 4)")
}
