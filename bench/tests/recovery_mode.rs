//! `myriad-bench recovery` end to end in a small shape: a single node fills
//! its WAL, restarts and serves every group again; a second run on the kept
//! data directory replays the same WAL without writing and times the phases.

mod common;

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

const WAL_BYTES: u64 = 32 << 20;

fn recovery(data: &Path, extra: &[&str]) -> Value {
    let wal_bytes = WAL_BYTES.to_string();
    let mut args = vec!["recovery", "--wal-bytes", &wal_bytes, "--groups", "20", "--quiet"];
    args.extend_from_slice(extra);
    let run = common::run_bench(&args, Some(data), Duration::from_secs(60), Some("recovery"));
    assert!(run.stdout.contains("replay"), "{}", run.stdout);
    run.result
}

fn check_replay(r: &Value) {
    assert_eq!(r["mode"], "recovery");
    assert_eq!(r["config"]["nodes"], 1);
    assert_eq!(r["config"]["groups"], 20);
    assert_eq!(r["config"]["compact_every_entries"], 1u64 << 40);
    let wal_bytes = r["wal_bytes"].as_u64().unwrap();
    assert!(wal_bytes >= WAL_BYTES, "{r}");
    assert!(r["wal_payload_bytes"].as_u64().unwrap() <= wal_bytes, "{r}");
    assert!(
        r["wal_entries"].as_u64().unwrap() >= WAL_BYTES / 4096,
        "{r}"
    );
    let replay_s = r["replay_s"].as_f64().unwrap();
    assert!(replay_s > 0.0 && replay_s < 60.0, "{r}");
    let open_s = r["open_s"].as_f64().unwrap();
    let first_s = r["first_serve_s"].as_f64().unwrap();
    assert!(
        0.0 < open_s && open_s <= first_s && first_s <= replay_s,
        "{r}"
    );
    let rate = r["replay_mib_per_s"].as_f64().unwrap();
    let expected = wal_bytes as f64 / (1 << 20) as f64 / replay_s;
    assert!((rate - expected).abs() <= 1e-6 * expected, "{r}");
    assert_eq!(r["page_cache_dropped"], true, "{r}");
    assert!(
        r["rebuild_read_bytes"].as_u64().unwrap() >= r["wal_payload_bytes"].as_u64().unwrap(),
        "{r}"
    );
    for k in [
        "wal_scan_s",
        "wal_records",
        "wal_segments",
        "wal_file_bytes",
        "rebuild_reads",
        "elected_s",
        "cpu_user_s",
        "cpu_sys_s",
        "rss_max_bytes",
        "elapsed_s",
    ] {
        assert!(r.get(k).is_some(), "field {k} missing: {r}");
    }
}

#[test]
fn recovery_mode_fills_the_wal_restarts_and_replays_it_again() {
    let data = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let first = recovery(data.path(), &[]);
    check_replay(&first);
    assert!(
        first["write_ops"].as_u64().unwrap() >= WAL_BYTES / 4096,
        "{first}"
    );
    assert_eq!(first["write_errors"], 0, "{first}");
    assert!(data
        .path()
        .join("node-1")
        .join("core-0")
        .join("wal")
        .is_dir());

    // The kept WAL is large enough already: no writing, the same replay, and
    // the phases timed apart.
    let second = recovery(data.path(), &["--breakdown"]);
    check_replay(&second);
    assert!(second.get("write_ops").is_none(), "{second}");
    assert!(
        second["wal_entries"].as_u64().unwrap() >= first["wal_entries"].as_u64().unwrap(),
        "{second}"
    );
    assert!(
        second["breakdown_wal_open_s"].as_f64().unwrap() > 0.0,
        "{second}"
    );
    assert!(
        second["breakdown_read_entries_s"].as_f64().unwrap() >= 0.0,
        "{second}"
    );
    // The timed restart appended each group's new-term entry after the scan.
    assert!(
        second["breakdown_entries"].as_u64().unwrap()
            >= second["wal_live_entries"].as_u64().unwrap(),
        "{second}"
    );
}
