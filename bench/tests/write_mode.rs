//! The default `myriad-bench` run end to end, in a small shape: an embedded
//! 3-node cluster over loopback TCP with fsynced WALs; the JSON has every
//! common field of BENCH.md with sane values.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

#[test]
fn default_mode_writes_through_an_embedded_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("write.json");
    let data = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_myriad-bench"))
        .args(["--groups", "20", "--clients", "32", "--duration", "1s", "--read-ratio", "0.2", "--quiet"])
        .args(["--json", json.to_str().unwrap(), "--data-dir", data.path().to_str().unwrap()])
        .output()
        .expect("running myriad-bench");
    assert!(started.elapsed() < Duration::from_secs(60), "a short run stays short");
    assert!(output.status.success(), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(stdout.starts_with("myriad-bench write:"), "{stdout}");

    let r: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
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
    for k in ["errors", "heartbeat_frames", "mib_per_s", "cpu_user_s", "cpu_sys_s", "rss_max_bytes", "elapsed_s"] {
        assert!(r.get(k).is_some(), "field {k} missing: {r}");
    }
    // --data-dir keeps the WAL of every node and core.
    assert!(data.path().join("node-1").join("core-0").join("wal").is_dir());
}
