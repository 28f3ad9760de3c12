//! `cargo bench -p raftcore`: steady-state replication through the in-memory
//! three-replica harness on one core (no network, no disk). The reproducible
//! figure for the README comes from `myriad-bench raftcore`; this is the quick
//! loop for development. `RAFTCORE_BENCH_SECONDS` sets the time per shape.

use std::time::{Duration, Instant};

use raftcore::harness::{Harness, HarnessShape};

fn run(shape: HarnessShape, seconds: f64) {
    let mut h = Harness::new(shape.clone());
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs_f64(seconds) {
        h.round();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let s = h.stats;
    println!(
        "groups {:>5}  batch {:>4} x {:>4} B: {:>10.0} committed entries/s  ({:.2} readies/round, {:.1} entries/message)",
        shape.groups,
        shape.batch_entries,
        shape.payload_bytes,
        s.committed_entries as f64 / elapsed,
        s.readies as f64 / s.rounds.max(1) as f64,
        s.committed_entries as f64 * 2.0 / s.messages.max(1) as f64,
    );
}

fn main() {
    let seconds: f64 = std::env::var("RAFTCORE_BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(2.0);
    for (groups, batch_entries) in [(1, 64), (100, 64), (1000, 16), (1000, 64), (10_000, 8)] {
        run(HarnessShape { groups, payload_bytes: 64, batch_entries }, seconds);
    }
}
