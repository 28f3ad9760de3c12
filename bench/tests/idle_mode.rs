//! `myriad-bench idle` end to end in a small shape: an embedded 3-node
//! cluster elects a leader for every group, settles, and the JSON has every
//! field BENCH.md gives the mode, with sane values.

mod common;

use std::process::Command;
use std::time::Duration;

#[test]
fn idle_mode_elects_and_measures() {
    let data = common::data_dir();
    let args = ["idle", "--groups", "200", "--cores", "1", "--settle", "2s", "--measure", "1s", "--quiet"];
    let common::Run { stdout, result: r } = common::run_bench(&args, Some(data.path()), Duration::from_secs(60), Some("idle"));
    assert!(stdout.contains("idle cpu"), "{stdout}");

    assert_eq!(r["mode"], "idle");
    assert_eq!(r["config"]["nodes"], 3);
    assert_eq!(r["config"]["groups"], 200);
    assert_eq!(r["groups"], 200);
    assert_eq!(r["leaders_elected"], 200, "{r}");
    let election_s = r["election_s"]
        .as_f64()
        .expect("every group elected a leader");
    assert!(election_s > 0.0 && election_s < 60.0, "{r}");
    let quiesced = r["quiesced_groups"].as_u64().unwrap();
    assert!(quiesced <= 600, "at most every replica of every group: {r}");

    let fraction = r["idle_cpu_core_fraction"].as_f64().unwrap();
    // Two busy cores at most on a loaded test machine; an idle cluster far less.
    assert!((0.0..=4.0).contains(&fraction), "{r}");
    let per_node = r["idle_cpu_core_fraction_per_node"].as_f64().unwrap();
    assert!((per_node * 3.0 - fraction).abs() < 1e-9, "{r}");
    let window = r["idle_window_s"].as_f64().unwrap();
    assert!((1.0..10.0).contains(&window), "{r}");

    let rss_max = r["rss_max_bytes"].as_u64().unwrap();
    let rss_idle = r["rss_idle_bytes"].as_u64().unwrap();
    assert!(rss_idle > 1 << 20 && rss_idle <= rss_max, "{r}");
    let per_group = r["rss_per_group_bytes"].as_u64().unwrap();
    assert!(per_group < rss_idle / 200 + 1, "{r}");
    for k in [
        "quiesce_s",
        "idle_cpu_user_s",
        "idle_cpu_sys_s",
        "idle_frames_sent",
        "idle_heartbeat_frames",
        "idle_keepalive_frames",
        "idle_wal_syncs",
        "rss_per_group_replica_bytes",
        "cpu_user_s",
        "cpu_sys_s",
        "elapsed_s",
    ] {
        assert!(r.get(k).is_some(), "field {k} missing: {r}");
    }
    assert!(data
        .path()
        .join("node-3")
        .join("core-0")
        .join("wal")
        .is_dir());
}

#[test]
fn idle_mode_refuses_a_zero_measure_window() {
    let output = Command::new(env!("CARGO_BIN_EXE_myriad-bench"))
        .args(["idle", "--groups", "10", "--measure", "0s", "--quiet"])
        .output()
        .expect("running myriad-bench idle");
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("--measure"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
