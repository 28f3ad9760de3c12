//! `myriad-bench lin-kv` end to end against the embedded cluster: the
//! history file follows the format of BENCH.md, every invoke completes at
//! most once, and with a single client the history is a valid sequential
//! register history.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

/// Runs lin-kv with `extra` flags; returns the JSON result and the history events.
fn lin_kv(extra: &[&str]) -> (Value, Vec<Value>) {
    let dir = tempfile::tempdir().unwrap();
    let history = dir.path().join("history.jsonl");
    let data = common::data_dir();
    let mut args = vec!["lin-kv", "--duration", "2s", "--quiet", "--history", history.to_str().unwrap()];
    args.extend_from_slice(extra);
    let r = common::run_bench(&args, Some(data.path()), Duration::from_secs(40), None).result;
    (r, read_history(&history))
}

fn read_history(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.ends_with('\n'), "every event ends its line");
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("`{l}`: {e}")))
        .collect()
}

/// Checks each event's fields and the invoke/completion pairing; returns
/// the number of `info` completions.
fn check_format(events: &[Value], keys: u64) -> u64 {
    let key_names: BTreeSet<String> = (0..keys).map(|k| format!("k{k}")).collect();
    let mut open: BTreeMap<u64, &Value> = BTreeMap::new();
    let mut retired = BTreeSet::new();
    let mut last_ns = 0;
    let mut infos = 0;
    for e in events {
        let obj = e.as_object().unwrap();
        let names: Vec<&str> = obj.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            ["process", "type", "f", "key", "value", "time_ns"],
            "{e}"
        );
        let process = e["process"].as_u64().unwrap();
        let time_ns = e["time_ns"].as_u64().unwrap();
        assert!(time_ns >= last_ns, "events are in time order: {e}");
        last_ns = time_ns;
        assert!(key_names.contains(e["key"].as_str().unwrap()), "{e}");
        let f = e["f"].as_str().unwrap();
        let value = &e["value"];
        assert!(
            !retired.contains(&process),
            "a process is never reused after info: {e}"
        );
        match e["type"].as_str().unwrap() {
            "invoke" => {
                match f {
                    "read" => assert!(value.is_null(), "{e}"),
                    "write" => assert!(value.is_u64(), "{e}"),
                    "cas" => assert!(
                        value
                            .as_array()
                            .is_some_and(|a| a.len() == 2 && a.iter().all(Value::is_u64)),
                        "{e}"
                    ),
                    _ => panic!("unknown f: {e}"),
                }
                assert!(
                    open.insert(process, e).is_none(),
                    "one operation at a time per process: {e}"
                );
            }
            kind @ ("ok" | "fail" | "info") => {
                let invoke = open
                    .remove(&process)
                    .unwrap_or_else(|| panic!("a completion without an open invoke: {e}"));
                assert_eq!(
                    (invoke["f"].as_str(), invoke["key"].as_str()),
                    (Some(f), e["key"].as_str()),
                    "{e}"
                );
                if f != "read" || kind != "ok" {
                    if f != "read" {
                        assert_eq!(&invoke["value"], value, "{e}");
                    }
                } else {
                    assert!(value.is_null() || value.is_u64(), "{e}");
                }
                if kind == "info" {
                    infos += 1;
                    retired.insert(process);
                }
            }
            other => panic!("unknown type {other}: {e}"),
        }
    }
    assert!(
        open.is_empty(),
        "every operation completed before the run ended: {open:?}"
    );
    infos
}

#[test]
fn lin_kv_writes_a_well_formed_history() {
    let (r, events) = lin_kv(&[
        "--clients",
        "4",
        "--keys",
        "3",
        "--groups",
        "2",
        "--seed",
        "7",
    ]);
    assert_eq!(r["mode"], "lin-kv");
    assert_eq!(r["keys"], 3);
    assert_eq!(r["history_events"].as_u64().unwrap(), events.len() as u64);
    assert!(events.len() > 20, "some operations in 2 s: {r}");
    let infos = check_format(&events, 3);
    assert_eq!(r["info_ops"].as_u64().unwrap(), infos);
    for f in ["read", "write", "cas"] {
        assert!(
            events.iter().any(|e| e["f"] == f && e["type"] == "ok"),
            "some {f} succeeded"
        );
    }
    // Written values are unique per key.
    let mut written = BTreeSet::new();
    for e in events
        .iter()
        .filter(|e| e["type"] == "invoke" && e["f"] != "read")
    {
        let v = if e["f"] == "write" {
            e["value"].as_u64()
        } else {
            e["value"][1].as_u64()
        };
        assert!(
            written.insert((e["key"].as_str().unwrap().to_owned(), v.unwrap())),
            "value written twice: {e}"
        );
    }
    for k in ["ops", "errors", "latency_us", "elapsed_s"] {
        assert!(r.get(k).is_some(), "field {k} missing: {r}");
    }
}

/// A register seen through one client: a read returns the last value written.
#[test]
fn lin_kv_single_client_history_is_sequentially_valid() {
    let (r, events) = lin_kv(&["--clients", "1", "--keys", "1"]);
    check_format(&events, 1);
    // Some(v): known value (None: absent); unknown after an info write.
    let mut register: Option<Option<u64>> = Some(None);
    let mut reads = 0;
    // A `fail` that is no cas mismatch (an error) says nothing of the value.
    let no_errors = r["errors"] == 0;
    for pair in events.chunks(2) {
        let (invoke, done) = (&pair[0], &pair[1]);
        assert_eq!(
            invoke["type"], "invoke",
            "one client: invoke and completion alternate"
        );
        let kind = done["type"].as_str().unwrap();
        match (done["f"].as_str().unwrap(), kind) {
            ("read", "ok") => {
                let seen = done["value"].as_u64();
                if let Some(expected) = register {
                    assert_eq!(
                        seen, expected,
                        "a read returns the last value written: {done}"
                    );
                }
                register = Some(seen);
                reads += 1;
            }
            ("write", "ok") => register = Some(done["value"].as_u64()),
            ("cas", "ok") => {
                let (from, to) = (done["value"][0].as_u64(), done["value"][1].as_u64());
                if let Some(expected) = register {
                    assert_eq!(
                        from, expected,
                        "a cas succeeds only from the current value: {done}"
                    );
                }
                register = Some(to);
            }
            ("cas", "fail") if no_errors => {
                if let Some(expected) = register {
                    assert_ne!(
                        done["value"][0].as_u64(),
                        expected,
                        "a cas from the current value does not fail: {done}"
                    );
                }
            }
            (_, "info") => register = None,
            (_, "fail") => {}
            other => panic!("unexpected completion {other:?}: {done}"),
        }
    }
    assert!(reads > 0, "some reads were checked: {r}");
}
