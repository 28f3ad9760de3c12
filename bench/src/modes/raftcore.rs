//! The `raftcore` mode: 3 replicas of G groups in one thread, messages handed
//! over in memory, no network, no disk. See shared/BENCH.md.

use crate::outcome::{Outcome, RunContext};

#[derive(clap::Args, Debug, Clone)]
pub struct RaftcoreArgs {}

pub fn run(_args: &RaftcoreArgs, _ctx: &RunContext) -> anyhow::Result<Outcome> {
    anyhow::bail!("mode `raftcore` is not yet available: it needs raftcore (issue 2)")
}
