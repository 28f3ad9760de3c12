//! `myriad-bench failover` end to end in a small shape: an embedded 3-node
//! cluster under unique-key write load loses its busiest node; every group
//! gets a leader again and every acknowledged write is read back.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

#[test]
fn failover_re_elects_and_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("failover.json");
    let data = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_myriad-bench"))
        .args([
            "failover",
            "--groups",
            "20",
            "--clients",
            "16",
            "--before",
            "2s",
            "--after",
            "4s",
            "--quiet",
        ])
        .args([
            "--json",
            json.to_str().unwrap(),
            "--data-dir",
            data.path().to_str().unwrap(),
        ])
        .output()
        .expect("running myriad-bench");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "a short run stays short"
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.starts_with("myriad-bench failover:"), "{stdout}");

    let r: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(r["mode"], "failover");
    assert_eq!(r["config"]["groups"], 20);
    assert_eq!(r["config"]["nodes"], 3);
    assert_eq!(
        r["acked_writes_lost"], 0,
        "acknowledged writes were lost: {stdout}\n{r}"
    );
    let checked = r["acked_writes_checked"].as_u64().unwrap();
    assert!(checked > 0, "{r}");
    assert_eq!(
        r["acked_writes_unverified"], 0,
        "every acknowledged write could be read: {r}"
    );
    let led = r["groups_led_by_killed_node"].as_u64().unwrap();
    assert!(
        led > 0 && led <= 20,
        "the busiest node led some groups: {r}"
    );
    let releaded = r["all_releaded_s"].as_f64().unwrap_or_else(|| {
        panic!("every group has a leader again (a number, not null): {stdout}\n{r}")
    });
    assert!(
        releaded.is_finite() && releaded > 0.0 && releaded < 4.0 + 20.0,
        "{r}"
    );
    assert!(
        r["ops"].as_u64().unwrap() >= checked,
        "every checked write was counted: {r}"
    );
    for k in [
        "errors",
        "writes_per_s",
        "latency_us",
        "throughput_90pct_s",
        "killed_node",
        "elapsed_s",
    ] {
        assert!(r.get(k).is_some(), "field {k} missing: {r}");
    }
}

#[test]
fn failover_refuses_a_target() {
    let output = Command::new(env!("CARGO_BIN_EXE_myriad-bench"))
        .args(["failover", "--target", "127.0.0.1:1", "--quiet"])
        .output()
        .expect("running myriad-bench");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("failover needs the embedded cluster"),
        "{stderr}"
    );
}
