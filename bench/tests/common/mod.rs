//! Running the `myriad-bench` binary from the mode tests: one run with a JSON
//! result, bounded in time, its success and human summary checked.

#![allow(dead_code)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

/// What one run printed and wrote.
pub struct Run {
    pub stdout: String,
    pub result: Value,
}

/// Runs `myriad-bench <args> --json <file>` (plus `--data-dir data` when
/// given) and asserts that it succeeds within `time_max` and that its
/// summary starts with `myriad-bench <mode>:` when `mode` is given.
pub fn run_bench(args: &[&str], data: Option<&Path>, time_max: Duration, mode: Option<&str>) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("result.json");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_myriad-bench"));
    cmd.args(args).args(["--json", json.to_str().unwrap()]);
    if let Some(data) = data {
        cmd.args(["--data-dir", data.to_str().unwrap()]);
    }
    let started = Instant::now();
    let output = cmd.output().expect("running myriad-bench");
    assert!(started.elapsed() < time_max, "a short run stays short: {:?}", started.elapsed());
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&output.stderr));
    if let Some(mode) = mode {
        assert!(stdout.starts_with(&format!("myriad-bench {mode}:")), "{stdout}");
    }
    let result = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    Run { stdout, result }
}

/// A data directory on the real disk (O_DIRECT needs one; the target
/// directory is on one).
pub fn data_dir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}
