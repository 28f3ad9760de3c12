//! `myriad-bench failover` end to end in a small shape: an embedded 3-node
//! cluster under unique-key write load loses its busiest node; every group
//! gets a leader again and every acknowledged write is read back.

mod common;

use std::process::Command;
use std::time::Duration;

#[test]
fn failover_re_elects_and_loses_no_acknowledged_write() {
    let data = common::data_dir();
    let args = ["failover", "--groups", "20", "--clients", "16", "--before", "2s", "--after", "4s", "--quiet"];
    let common::Run { stdout, result: r } = common::run_bench(&args, Some(data.path()), Duration::from_secs(60), Some("failover"));
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
