//! Assembles the JSON result of shared/BENCH.md from a mode's `Outcome` and
//! the driver's own measurements, and writes the human summary for stdout.

use hdrhistogram::Histogram;
use serde_json::{Map, Value};

use crate::format;
use crate::outcome::Outcome;
use crate::process_stats::ProcessStats;
use crate::progress::Progress;

/// The latency percentiles written under `latency_us`, with their JSON names.
pub const LATENCY_QUANTILES: [(&str, f64); 4] =
    [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999)];

/// What the driver measured around the mode's run.
#[derive(Debug, Clone, Copy)]
pub struct Measured {
    /// CPU used during the run; peak RSS of the process.
    pub stats: ProcessStats,
    /// Wall-clock seconds of the whole run (setup included).
    pub elapsed_s: f64,
}

/// Fills `per_second`, its unit and `marks` from the run's progress where the
/// mode left them empty.
pub fn adopt_progress(outcome: &mut Outcome, progress: &Progress) {
    if outcome.per_second.is_empty() {
        outcome.per_second = progress.per_second();
        if outcome.per_second_unit.is_empty() {
            outcome.per_second_unit = progress.unit().unwrap_or("ops").to_owned();
        }
    }
    if outcome.marks.is_empty() {
        outcome.marks = progress.marks();
    }
    if outcome.per_second_unit.is_empty() {
        outcome.per_second_unit = "ops".to_owned();
    }
}

/// `{p50, p90, p99, p999, max}` of a histogram; `None` when it is empty.
pub fn latency_fields(histogram: &Histogram<u64>) -> Option<Map<String, Value>> {
    if histogram.is_empty() {
        return None;
    }
    let mut fields = Map::new();
    for (name, quantile) in LATENCY_QUANTILES {
        fields.insert(
            name.to_owned(),
            histogram.value_at_quantile(quantile).into(),
        );
    }
    fields.insert("max".to_owned(), histogram.max().into());
    Some(fields)
}

/// The JSON result: `mode`, `config`, the mode's fields, then the common
/// fields the mode did not set itself.
pub fn assemble(outcome: &Outcome, measured: &Measured) -> Map<String, Value> {
    assert!(measured.elapsed_s >= 0.0, "elapsed time is never negative");
    let mut result = Map::new();
    result.insert("mode".into(), outcome.mode.into());
    result.insert("config".into(), Value::Object(outcome.config.clone()));
    result.extend(outcome.fields.clone());
    let mut common = Map::new();
    if let Some(latency) = outcome.latency_us.as_ref().and_then(latency_fields) {
        common.insert("latency_us".into(), Value::Object(latency));
    }
    common.insert(
        "cpu_user_s".into(),
        round_to(measured.stats.cpu_user_s, 1e-6).into(),
    );
    common.insert(
        "cpu_sys_s".into(),
        round_to(measured.stats.cpu_sys_s, 1e-6).into(),
    );
    common.insert("rss_max_bytes".into(), measured.stats.rss_max_bytes.into());
    common.insert(
        "elapsed_s".into(),
        round_to(measured.elapsed_s, 1e-6).into(),
    );
    for (name, value) in common {
        result.entry(name).or_insert(value);
    }
    result
}

fn round_to(value: f64, step: f64) -> f64 {
    (value / step).round() * step
}

/// The human summary for stdout: mode and config, the common figures that
/// apply, then the mode's own lines.
pub fn summary(outcome: &Outcome, result: &Map<String, Value>) -> String {
    let mut lines = vec![headline(outcome)];
    let mut push = |label: &str, text: String| {
        if !text.is_empty() {
            lines.push(format!("  {label:<11} {text}"));
        }
    };
    push("throughput", throughput_words(result));
    push("operations", operation_words(result));
    push("latency", latency_words(result));
    push("fsync", fsync_words(result));
    push("cpu", cpu_words(result));
    if let Some(rss) = result.get("rss_max_bytes").and_then(Value::as_u64) {
        push("memory", format!("rss max {}", format::bytes(rss)));
    }
    if let Some(elapsed) = result.get("elapsed_s").and_then(Value::as_f64) {
        push("elapsed", format!("{} s", format::number(elapsed)));
    }
    lines.extend(outcome.summary.iter().map(|line| format!("  {line}")));
    lines.join("\n")
}

fn headline(outcome: &Outcome) -> String {
    let config: Vec<String> = outcome
        .config
        .iter()
        .map(|(k, v)| format!("{k}={}", format::json_value(v)))
        .collect();
    if config.is_empty() {
        format!("myriad-bench {}", outcome.mode)
    } else {
        format!("myriad-bench {}: {}", outcome.mode, config.join(" "))
    }
}

/// "a · b · c" of the fields present, each as "<value><suffix>".
fn words(result: &Map<String, Value>, fields: &[(&str, &str)]) -> String {
    let present = fields.iter().filter_map(|(name, suffix)| {
        result
            .get(*name)
            .filter(|v| v.is_number())
            .map(|v| format!("{}{suffix}", format::json_value(v)))
    });
    present.collect::<Vec<_>>().join(" · ")
}

fn throughput_words(result: &Map<String, Value>) -> String {
    words(
        result,
        &[
            ("writes_per_s", " writes/s"),
            ("reads_per_s", " reads/s"),
            ("entries_per_s", " entries/s"),
            ("mib_per_s", " MiB/s"),
            ("fsyncs_per_s", " fsyncs/s"),
        ],
    )
}

fn operation_words(result: &Map<String, Value>) -> String {
    words(result, &[("ops", " ok"), ("errors", " errors")])
}

fn fsync_words(result: &Map<String, Value>) -> String {
    words(
        result,
        &[
            ("fsyncs", " fsyncs"),
            ("entries_per_fsync", " entries per fsync"),
        ],
    )
}

fn latency_words(result: &Map<String, Value>) -> String {
    let Some(Value::Object(latency)) = result.get("latency_us") else {
        return String::new();
    };
    let names = [
        ("p50", "p50"),
        ("p90", "p90"),
        ("p99", "p99"),
        ("p999", "p99.9"),
        ("max", "max"),
    ];
    let present = names.iter().filter_map(|(name, shown)| {
        latency
            .get(*name)
            .map(|v| format!("{shown} {} µs", format::json_value(v)))
    });
    present.collect::<Vec<_>>().join(" · ")
}

fn cpu_words(result: &Map<String, Value>) -> String {
    let get = |name: &str| result.get(name).and_then(Value::as_f64);
    let (Some(user), Some(sys)) = (get("cpu_user_s"), get("cpu_sys_s")) else {
        return String::new();
    };
    let mut text = format!(
        "user {} s · sys {} s",
        format::number(user),
        format::number(sys)
    );
    if let Some(elapsed) = get("elapsed_s").filter(|e| *e > 0.0) {
        text.push_str(&format!(
            " · {} cores",
            format::number((user + sys) / elapsed)
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::latency_histogram;

    fn measured() -> Measured {
        Measured {
            stats: ProcessStats {
                cpu_user_s: 1.5,
                cpu_sys_s: 0.25,
                rss_max_bytes: 64 << 20,
            },
            elapsed_s: 2.0,
        }
    }

    #[test]
    fn every_common_field_is_added_and_mode_fields_win() {
        let mut outcome = Outcome::new("wal");
        outcome.config("groups", 10);
        outcome.set("entries_per_s", 1234.5);
        outcome.set("elapsed_s", 1.0);
        let mut histogram = latency_histogram();
        (1..=1000u64).for_each(|us| histogram.record(us).unwrap());
        outcome.latency_us = Some(histogram);
        let result = assemble(&outcome, &measured());
        assert_eq!(result["mode"], "wal");
        assert_eq!(result["config"]["groups"], 10);
        assert_eq!(result["cpu_user_s"], 1.5);
        assert_eq!(result["cpu_sys_s"], 0.25);
        assert_eq!(result["rss_max_bytes"], 64u64 << 20);
        assert_eq!(result["elapsed_s"], 1.0, "the mode's own elapsed_s wins");
        let latency = &result["latency_us"];
        let p = |name: &str| latency[name].as_u64().unwrap();
        assert_eq!(p("p50"), 500);
        assert!(p("p50") <= p("p90") && p("p90") <= p("p99") && p("p99") <= p("p999"));
        assert!(p("p999") <= p("max") && p("max") == 1000);
    }

    #[test]
    fn no_latency_without_operations() {
        let mut outcome = Outcome::new("idle");
        assert!(!assemble(&outcome, &measured()).contains_key("latency_us"));
        outcome.latency_us = Some(latency_histogram());
        assert!(!assemble(&outcome, &measured()).contains_key("latency_us"));
    }

    #[test]
    fn summary_reads_the_result() {
        let mut outcome = Outcome::new("write");
        outcome.config("nodes", 3);
        outcome.set("writes_per_s", 12345.0);
        outcome.set("ops", 24690);
        outcome.set("errors", 0);
        outcome.set("entries_per_fsync", 7.5);
        outcome.say("groups led: 10");
        let mut histogram = latency_histogram();
        histogram.record(250).unwrap();
        outcome.latency_us = Some(histogram);
        let text = summary(&outcome, &assemble(&outcome, &measured()));
        for expected in [
            "myriad-bench write: nodes=3",
            "12,345 writes/s",
            "24,690 ok · 0 errors",
            "p99 250 µs",
            "7.50 entries per fsync",
            "user 1.50 s · sys 0.25 s · 0.88 cores",
            "rss max 64 MiB",
            "  groups led: 10",
        ] {
            assert!(text.contains(expected), "{expected:?} missing from\n{text}");
        }
    }
}
