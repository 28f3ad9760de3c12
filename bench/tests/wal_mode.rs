//! `myriad-bench wal` end to end: a short run of a small shape on the real
//! disk writes a JSON result with every field BENCH.md lists for the mode,
//! with sane values, and `--data-dir` keeps one WAL per core.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The run takes about two seconds; a hung binary fails the test instead.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// A directory on the real disk (O_DIRECT and fsync mean nothing on tmpfs).
fn disk_dir() -> tempfile::TempDir {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(base).unwrap();
    tempfile::Builder::new()
        .prefix("wal-mode")
        .tempdir_in(base)
        .unwrap()
}

fn run_wal(args: &[&str], json: &Path) -> String {
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_myriad-bench"))
        .arg("wal")
        .args(args)
        .args(["--quiet", "--json", json.to_str().unwrap()])
        .output()
        .expect("running myriad-bench");
    assert!(
        started.elapsed() < RUN_TIMEOUT,
        "a short run stays short: {:?}",
        started.elapsed()
    );
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn num(result: &Value, name: &str) -> f64 {
    result[name]
        .as_f64()
        .unwrap_or_else(|| panic!("{name} missing or not a number in {result:#}"))
}

#[test]
fn wal_mode_reports_throughput_fsyncs_latency_and_the_raw_disk() {
    let dir = disk_dir();
    let json = dir.path().join("wal.json");
    let data = dir.path().join("data");
    let stdout = run_wal(
        &[
            "--groups",
            "200",
            "--payload",
            "100",
            "--groups-per-batch",
            "10",
            "--entries-per-group",
            "4",
            "--writers",
            "2",
            "--cores",
            "2",
            "--duration",
            "1s",
            "--segment-size",
            "1MiB",
            "--raw-duration",
            "200ms",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &json,
    );
    assert!(stdout.starts_with("myriad-bench wal:"), "{stdout}");

    let result: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(result["mode"], "wal");
    let config = &result["config"];
    for (name, value) in [
        ("groups", 200),
        ("payload_bytes", 100),
        ("groups_per_batch", 10),
        ("entries_per_group", 4),
    ] {
        assert_eq!(config[name], value, "config.{name}");
    }
    assert_eq!(config["writers"], 2);
    assert_eq!(config["cores"], 2);
    assert_eq!(config["sync"], true);
    assert_eq!(config["sync_mode"], "dsync", "the mode a node's WAL runs");

    let entries = result["ops"].as_u64().unwrap();
    assert!(
        entries > 0 && entries % 40 == 0,
        "whole batches of 10 x 4 entries: {entries}"
    );
    assert_eq!(result["errors"], 0);
    let elapsed_s = num(&result, "elapsed_s");
    assert!(
        (1.0..30.0).contains(&elapsed_s),
        "the window is the run: {elapsed_s}"
    );
    let entries_per_s = num(&result, "entries_per_s");
    assert!(entries_per_s > 0.0);
    assert!(
        (entries_per_s * elapsed_s - entries as f64).abs() <= 0.01 * entries as f64,
        "rate is entries over the window"
    );
    let mib_per_s = num(&result, "mib_per_s");
    let expected_mib = entries_per_s * 100.0 / (1 << 20) as f64;
    assert!(
        (mib_per_s - expected_mib).abs() <= 0.01 + 0.01 * expected_mib,
        "payload MiB/s {mib_per_s} vs {expected_mib}"
    );
    assert!(
        num(&result, "wal_mib_per_s") >= mib_per_s,
        "framing only adds bytes"
    );

    let fsyncs = result["fsyncs"].as_u64().unwrap();
    assert!(fsyncs > 0);
    assert!(num(&result, "fsyncs_per_s") > 0.0);
    let per_fsync = num(&result, "entries_per_fsync");
    assert!(per_fsync >= 1.0, "entries_per_fsync {per_fsync}");
    assert!((per_fsync - entries as f64 / fsyncs as f64).abs() < 0.01);
    assert!(result["wal_writes"].as_u64().unwrap() >= 1);

    let latency = &result["latency_us"];
    let p = |name: &str| {
        latency[name]
            .as_u64()
            .unwrap_or_else(|| panic!("latency_us.{name} in {latency}"))
    };
    assert!(p("p50") >= 1, "a durable batch takes time");
    assert!(
        p("p50") <= p("p90")
            && p("p90") <= p("p99")
            && p("p99") <= p("p999")
            && p("p999") <= p("max")
    );

    let cpu = num(&result, "cpu_s_per_million_entries");
    assert!(
        cpu > 0.0 && cpu.is_finite(),
        "cpu_s_per_million_entries {cpu}"
    );
    assert!(num(&result, "raw_odirect_mib_per_s") > 0.0);
    assert!(num(&result, "raw_synced_mib_per_s") > 0.0);
    assert!(num(&result, "raw_fsync_us_p50") >= 1.0);
    assert!(num(&result, "raw_fsync_us_p99") >= num(&result, "raw_fsync_us_p50"));
    for name in [
        "cpu_user_s",
        "cpu_sys_s",
        "rss_max_bytes",
        "segments_on_disk_max",
        "compactions",
    ] {
        assert!(result[name].is_number(), "{name} in {result:#}");
    }

    // --data-dir keeps one WAL per core, and compaction keeps it short.
    for core in 0..2 {
        let wal_dir = data.join(format!("core-{core}"));
        let segments = std::fs::read_dir(&wal_dir)
            .unwrap_or_else(|e| panic!("{}: {e}", wal_dir.display()))
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".wal")
            })
            .count();
        assert!(
            (1..=16).contains(&segments),
            "core {core}: {segments} segments kept"
        );
    }
    assert!(
        !data.join("raw-disk.scratch").exists(),
        "the raw disk scratch file is removed"
    );
}

#[test]
fn wal_mode_rejects_a_bad_shape() {
    let output = Command::new(env!("CARGO_BIN_EXE_myriad-bench"))
        .args(["wal", "--groups", "0", "--quiet"])
        .output()
        .expect("running myriad-bench");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--groups"), "{stderr}");
}
