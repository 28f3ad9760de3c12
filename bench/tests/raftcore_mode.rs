//! `myriad-bench raftcore` end to end: a short run of a small shape writes a
//! JSON result with every field BENCH.md lists for the mode, with sane values.

mod common;

use std::time::Duration;

#[test]
fn raftcore_mode_reports_throughput_cpu_and_idle_memory() {
    let args = ["raftcore", "--groups", "20", "--batch", "8", "--duration", "400ms", "--idle-groups", "200", "--quiet"];
    let result = common::run_bench(&args, None, Duration::from_secs(60), Some("raftcore")).result;
    assert_eq!(result["mode"], "raftcore");
    assert_eq!(result["config"]["groups"], 20);
    assert_eq!(result["config"]["batch_entries"], 8);
    let ops = result["ops"].as_u64().unwrap();
    assert!(ops > 0 && ops % 8 == 0, "whole batches commit: {ops}");
    let entries_per_s = result["entries_per_s"].as_f64().unwrap();
    let elapsed_s = result["elapsed_s"].as_f64().unwrap();
    assert!(elapsed_s >= 0.4, "{elapsed_s}");
    assert!((entries_per_s * elapsed_s - ops as f64).abs() <= 1.0, "the rate is ops over the measured time");
    let cores = result["cpu_cores_used"].as_f64().unwrap();
    assert!(cores > 0.2 && cores < 1.5, "one thread drives every replica: {cores}");
    // A quiesced replica holds its state, progress for 3 peers and storage:
    // hundreds of bytes, not nothing, and within the 1 KiB target (a log
    // buffer kept after compaction once made it 1,914).
    let idle = result["idle_group_bytes"].as_i64().unwrap();
    assert!((200..=1024).contains(&idle), "idle_group_bytes {idle}");
}
