//! End-to-end runs of the built `myriad-bench` binary through the hidden
//! `selftest` mode: flags, exit codes, the JSON file and the HTML report.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Every run here is a second or so; a hung binary fails the test instead.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

fn bench(args: &[&str]) -> Output {
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_myriad-bench"))
        .args(args)
        .output()
        .expect("running myriad-bench");
    assert!(
        started.elapsed() < RUN_TIMEOUT,
        "myriad-bench {args:?} took {:?}",
        started.elapsed()
    );
    output
}

fn read_json(path: &Path) -> serde_json::Map<String, Value> {
    let text = std::fs::read_to_string(path).expect("the JSON file was written");
    serde_json::from_str::<Value>(&text)
        .expect("valid JSON")
        .as_object()
        .expect("a JSON object")
        .clone()
}

#[test]
fn selftest_writes_json_and_report_and_a_human_summary() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("result.json");
    let report = dir.path().join("report.html");
    let output = bench(&[
        "selftest",
        "--duration",
        "1200ms",
        "--rate",
        "5000",
        "--json",
        json.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.starts_with("myriad-bench selftest:"),
        "human summary on stdout:\n{stdout}"
    );
    assert!(!stdout.contains('{'), "no JSON on stdout:\n{stdout}");
    assert!(
        stdout.contains("latency") && stdout.contains("p99"),
        "{stdout}"
    );

    let result = read_json(&json);
    assert_eq!(result["mode"], "selftest");
    assert_eq!(result["config"]["rate"], 5000);
    assert!(result["ops"].as_u64().unwrap() > 0);
    assert!(result["elapsed_s"].as_f64().unwrap() >= 1.2);
    for name in ["cpu_user_s", "cpu_sys_s"] {
        assert!(result[name].as_f64().unwrap() >= 0.0, "{name}");
    }
    assert!(result["rss_max_bytes"].as_u64().unwrap() > 1 << 20);
    let latency = |name: &str| result["latency_us"][name].as_u64().unwrap();
    assert!(100 <= latency("p50") && latency("p50") <= latency("p90"));
    assert!(latency("p90") <= latency("p99") && latency("p99") <= latency("p999"));
    assert!(latency("p999") <= latency("max") && latency("max") < 10_100);

    let page = std::fs::read_to_string(&report).unwrap();
    assert!(!page.contains("http://") && !page.contains("https://") && !page.contains("<script"));
    assert!(page.contains("<svg"));
    assert!(
        page.contains("half way"),
        "the progress mark reaches the plot"
    );
    assert!(page.contains(&format!("p99 {}", thousands(latency("p99")))));
}

#[test]
fn a_failing_mode_exits_nonzero_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("result.json");
    let output = bench(&[
        "selftest",
        "--duration",
        "100ms",
        "--fail",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("failed on request"));
    assert!(!json.exists());
}

#[test]
fn data_dir_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let output = bench(&[
        "selftest",
        "--duration",
        "100ms",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(output.status.success());
    assert!(data.join("selftest.txt").is_file());
}

#[test]
fn quiet_runs_print_nothing_on_stderr() {
    let output = bench(&["selftest", "--duration", "600ms", "--quiet"]);
    assert!(output.status.success());
    assert_eq!(String::from_utf8_lossy(&output.stderr), "");
}

#[test]
fn help_documents_every_global_flag_and_hides_selftest() {
    let output = bench(&["--help"]);
    let help = String::from_utf8(output.stdout).unwrap();
    for flag in [
        "--json <FILE>",
        "--report <FILE>",
        "--data-dir <DIR>",
        "--quiet",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help:\n{help}");
    }
    assert!(!help.contains("selftest"));
}

#[test]
fn bad_flag_values_are_refused() {
    let output = bench(&["selftest", "--duration", "soon"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("not a duration"));
}

fn thousands(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}
