//! The default `myriad-bench` run end to end, in a small shape: an embedded
//! 3-node cluster over loopback TCP with fsynced WALs; the JSON has every
//! common field of BENCH.md with sane values.

mod common;

use std::time::Duration;

#[test]
fn default_mode_writes_through_an_embedded_cluster() {
    let data = common::data_dir();
    let args = ["--groups", "20", "--clients", "32", "--duration", "1s", "--read-ratio", "0.2", "--quiet"];
    let r = common::run_bench(&args, Some(data.path()), Duration::from_secs(60), Some("write")).result;
    assert_eq!(r["mode"], "write");
    for (k, v) in [("nodes", 3), ("groups", 20), ("clients", 32), ("payload_bytes", 64)] {
        assert_eq!(r["config"][k], v, "config.{k}");
    }
    assert_eq!(r["config"]["sync"], true);
    let ops = r["ops"].as_u64().unwrap();
    assert!(ops > 0, "{r}");
    assert!(r["writes_per_s"].as_f64().unwrap() > 0.0 && r["reads_per_s"].as_f64().unwrap() > 0.0, "{r}");
    let lat = &r["latency_us"];
    let (p50, p99, max) = (lat["p50"].as_u64().unwrap(), lat["p99"].as_u64().unwrap(), lat["max"].as_u64().unwrap());
    assert!(0 < p50 && p50 <= p99 && p99 <= max, "{lat}");
    assert!(r["fsyncs"].as_u64().unwrap() > 0);
    assert!(r["entries_per_fsync"].as_f64().unwrap() >= 1.0, "{r}");
    assert!(r["frames_sent"].as_u64().unwrap() > 0);
    assert_eq!(r["snapshot_save_failures"], 0, "{r}");
    // Four in five operations are writes: each at least an append and its answer.
    let per_op = r["messages_per_op"].as_f64().unwrap();
    assert!(per_op >= 1.0, "{r}");
    // The same messages by kind: they add up, and the appends with entries
    // and their answers are among them.
    let kind = |k: &str| r[format!("messages_per_op_{k}").as_str()].as_f64().unwrap_or_else(|| panic!("messages_per_op_{k} missing: {r}"));
    let kinds = ["appends", "empty_appends", "append_answers", "heartbeats_asking", "heartbeats", "heartbeat_answers", "elections", "snapshot_chunks", "snapshot_answers", "read_index"];
    let sum: f64 = kinds.iter().map(|k| kind(k)).sum();
    assert!((sum - per_op).abs() <= 0.01 * per_op, "kinds sum to {sum}, messages_per_op is {per_op}: {r}");
    assert!(kind("appends") > 0.0 && kind("append_answers") > 0.0, "{r}");
    for k in ["errors", "heartbeat_frames", "frames_dropped", "leader_stepdowns", "snapshots", "snapshot_save_failures", "log_entries_in_memory", "mib_per_s", "cpu_user_s", "cpu_sys_s", "rss_max_bytes", "elapsed_s"] {
        assert!(r.get(k).is_some(), "field {k} missing: {r}");
    }
    // The CPU is the measured window's: no more than every CPU of the
    // machine for elapsed_s (setup and warm-up are not in it).
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let cpu_s = r["cpu_user_s"].as_f64().unwrap() + r["cpu_sys_s"].as_f64().unwrap();
    assert!(cpu_s <= cpus * r["elapsed_s"].as_f64().unwrap() * 1.05 + 0.05, "{cpu_s} CPU seconds on {cpus} CPUs: {r}");
    // --data-dir keeps the WAL of every node and core.
    assert!(data.path().join("node-1").join("core-0").join("wal").is_dir());
}
