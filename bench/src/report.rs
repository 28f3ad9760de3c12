//! `--report FILE.html`: one self-contained page (inline SVG and CSS, no
//! scripts, no network) with the throughput per second, the latency
//! percentile distribution and every figure of the run, for people who would
//! rather look than read.

use std::fmt::Write;

use hdrhistogram::Histogram;
use serde_json::{Map, Value};

use crate::format;
use crate::outcome::Outcome;
use crate::plot::{escape, Axis, Chart, Scale};
use crate::result::latency_fields;

/// Quantile steps per halving of the distance to 100 %, as wrk2 plots use.
pub const QUANTILE_TICKS_PER_HALF: u32 = 5;

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:900px}\
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:2em}\
table{border-collapse:collapse}td,th{padding:2px 12px;border-bottom:1px solid #ddd;text-align:left}\
td.n{text-align:right;font-variant-numeric:tabular-nums}\
svg text{font-size:12px;fill:#333}svg .title{font-size:14px;font-weight:600}\
svg .grid{stroke:#e4e4e4}svg .axis{stroke:#555;fill:none}\
svg .series{stroke:#1f6fb2;stroke-width:2;fill:none}\
svg .mark{stroke:#c0392b;stroke-dasharray:5 4}svg .marklabel{fill:#c0392b}\
svg .dot{fill:#c0392b}svg .dotlabel{fill:#333}p.caption{color:#555;margin:0 0 1em 0}";

/// The whole page for a run: `result` is the assembled JSON result.
pub fn html(outcome: &Outcome, result: &Map<String, Value>) -> String {
    let mut page = String::new();
    let title = format!("myriad-bench {}", outcome.mode);
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body>\n<h1>{}</h1>\n",
        escape(&title),
        escape(&title)
    );
    page.push_str("<h2>Throughput</h2>\n");
    page.push_str(&throughput_section(outcome));
    page.push_str("<h2>Latency</h2>\n");
    page.push_str(&latency_section(outcome.latency_us.as_ref()));
    page.push_str("<h2>Configuration</h2>\n");
    page.push_str(&table(&outcome.config));
    let figures: Map<String, Value> = result
        .iter()
        .filter(|(k, _)| *k != "config")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    page.push_str("<h2>Result</h2>\n");
    page.push_str(&table(&figures));
    if !outcome.summary.is_empty() {
        page.push_str("<h2>Notes</h2>\n<ul>");
        for line in &outcome.summary {
            let _ = write!(page, "<li>{}</li>", escape(line));
        }
        page.push_str("</ul>\n");
    }
    page.push_str("</body></html>\n");
    page
}

/// Units per second over the run as a step line, marks as vertical lines.
fn throughput_section(outcome: &Outcome) -> String {
    if outcome.per_second.is_empty() {
        return "<p class=\"caption\">This mode recorded no per-second series.</p>\n".to_owned();
    }
    let unit = if outcome.per_second_unit.is_empty() {
        "ops"
    } else {
        &outcome.per_second_unit
    };
    let seconds = outcome.per_second.len();
    let (peak_at, peak) =
        outcome
            .per_second
            .iter()
            .copied()
            .enumerate()
            .fold(
                (0, f64::MIN),
                |best, (i, v)| if v > best.1 { (i, v) } else { best },
            );
    let mean = outcome.per_second.iter().sum::<f64>() / seconds as f64;
    let mut line = Vec::with_capacity(2 * seconds);
    for (i, &value) in outcome.per_second.iter().enumerate() {
        line.push((i as f64, value));
        line.push((i as f64 + 1.0, value));
    }
    let chart = Chart {
        title: format!("{unit} per second"),
        // At least a second per tick; headroom above the peak for its label.
        x: Axis::linear("seconds since start", 0.0, seconds as f64, seconds.min(10)),
        y: Axis::linear(&format!("{unit}/s"), 0.0, peak.max(0.0) * 1.1, 5),
        line,
        marks: outcome.marks.clone(),
        dots: vec![(
            peak_at as f64 + 0.5,
            peak,
            format!("peak {} {unit}/s", format::number(peak)),
        )],
    };
    format!(
        "{}\n<p class=\"caption\">Peak {} {unit}/s, mean {} {unit}/s over {seconds} whole seconds.</p>\n",
        chart.svg(),
        escape(&format::number(peak)),
        escape(&format::number(mean)),
    )
}

/// Latency against percentile, x = 1/(1 − p) on a log scale (HdrHistogram's
/// percentile plot), so the tail gets as much room as the median.
fn latency_section(histogram: Option<&Histogram<u64>>) -> String {
    let Some((histogram, fields)) = histogram.and_then(|h| latency_fields(h).map(|f| (h, f)))
    else {
        return "<p class=\"caption\">This mode measured no per-operation latency.</p>\n"
            .to_owned();
    };
    // The deepest percentile the sample count resolves, rounded up to a nine.
    let decades = (histogram.len().max(10) as f64).log10().ceil().max(2.0) as i32;
    let x_max = 10f64.powi(decades);
    let line: Vec<(f64, f64)> = histogram
        .iter_quantiles(QUANTILE_TICKS_PER_HALF)
        .map(|v| {
            (
                percentile_x(v.quantile_iterated_to(), x_max),
                v.value_iterated_to() as f64,
            )
        })
        .collect();
    let ticks = (0..=decades)
        .map(|d| 10f64.powi(d))
        .map(|x| (x, percentile_label(x)))
        .collect();
    let x = Axis {
        label: "percentile".into(),
        min: 1.0,
        max: x_max,
        scale: Scale::Log10,
        ticks,
    };
    let value = |name: &str| fields[name].as_u64().expect("latency fields are integers");
    let mut dots = vec![
        (2.0, value("p50"), "p50"),
        (10.0, value("p90"), "p90"),
        (100.0, value("p99"), "p99"),
    ];
    if x_max >= 1000.0 {
        dots.push((1000.0, value("p999"), "p99.9"));
    }
    dots.push((x_max, value("max"), "max"));
    let chart = Chart {
        title: "latency by percentile".into(),
        x,
        y: Axis::linear("latency (µs)", 0.0, histogram.max() as f64, 5),
        line,
        marks: Vec::new(),
        dots: dots
            .into_iter()
            .map(|(x, v, name)| (x, v as f64, format!("{name} {} µs", format::count(v))))
            .collect(),
    };
    format!(
        "{}\n<p class=\"caption\">{} operations; p50 {} µs, p99 {} µs, p99.9 {} µs, max {} µs.</p>\n",
        chart.svg(),
        format::count(histogram.len()),
        format::count(value("p50")),
        format::count(value("p99")),
        format::count(value("p999")),
        format::count(value("max")),
    )
}

/// x of quantile `q`: 1/(1 − q), the last point (q = 1) at `x_max`.
fn percentile_x(quantile: f64, x_max: f64) -> f64 {
    if quantile >= 1.0 {
        return x_max;
    }
    (1.0 / (1.0 - quantile)).min(x_max)
}

/// `1` → `0%`, `10` → `90%`, `1000` → `99.9%`.
fn percentile_label(x: f64) -> String {
    assert!(x >= 1.0, "the percentile axis starts at 1");
    let nines = x.log10().round() as usize;
    match nines {
        0 => "0%".to_owned(),
        1 => "90%".to_owned(),
        n => format!("99.{}%", "9".repeat(n - 2)).replace(".%", "%"),
    }
}

/// A two-column table of the fields, nested objects flattened (`latency_us.p99`).
fn table(fields: &Map<String, Value>) -> String {
    let mut rows = Vec::new();
    flatten("", fields, &mut rows);
    let mut html = String::from("<table>\n");
    for (name, value) in rows {
        let class = if value.is_number() {
            " class=\"n\""
        } else {
            ""
        };
        let _ = writeln!(
            html,
            "<tr><th>{}</th><td{class}>{}</td></tr>",
            escape(&name),
            escape(&format::json_value(&value))
        );
    }
    html.push_str("</table>\n");
    html
}

fn flatten(prefix: &str, fields: &Map<String, Value>, rows: &mut Vec<(String, Value)>) {
    for (name, value) in fields {
        let full = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        match value {
            Value::Object(inner) => flatten(&full, inner, rows),
            other => rows.push((full, other.clone())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_axis() {
        assert_eq!(percentile_label(1.0), "0%");
        assert_eq!(percentile_label(10.0), "90%");
        assert_eq!(percentile_label(100.0), "99%");
        assert_eq!(percentile_label(1000.0), "99.9%");
        assert_eq!(percentile_label(100_000.0), "99.999%");
        assert_eq!(percentile_x(0.0, 1000.0), 1.0);
        assert!((percentile_x(0.99, 1000.0) - 100.0).abs() < 1e-6);
        assert_eq!(percentile_x(1.0, 1000.0), 1000.0);
        assert_eq!(percentile_x(0.99999, 1000.0), 1000.0);
    }

    /// A run with known numbers: latencies 1..=1000 µs plus one 50 ms
    /// outlier, a 10-second series peaking at 1,500 ops/s, a kill mark.
    fn synthetic_run() -> (Outcome, Map<String, Value>) {
        let mut outcome = Outcome::new("failover");
        outcome.config("nodes", 3);
        outcome.config("groups", 10_000);
        outcome.config("payload_bytes", 64);
        let mut histogram = crate::outcome::latency_histogram();
        (1..=1000u64).for_each(|us| histogram.record(us).unwrap());
        histogram.record(50_000).unwrap();
        outcome.latency_us = Some(histogram);
        outcome.per_second = vec![
            1000.0, 1200.0, 1500.0, 1400.0, 0.0, 0.0, 300.0, 900.0, 1300.0, 1350.0,
        ];
        outcome.mark(4.2, "kill node <2>");
        outcome.set("ops", 8950);
        outcome.set("all_releaded_s", 1.75);
        outcome.say("groups led by the killed node: 3,333");
        let measured = crate::result::Measured {
            stats: crate::process_stats::ProcessStats {
                cpu_user_s: 3.0,
                cpu_sys_s: 1.0,
                rss_max_bytes: 1 << 26,
            },
            elapsed_s: 10.5,
        };
        let result = crate::result::assemble(&outcome, &measured);
        (outcome, result)
    }

    #[test]
    fn report_is_self_contained_and_carries_the_numbers() {
        let (outcome, result) = synthetic_run();
        let page = html(&outcome, &result);
        for forbidden in ["http://", "https://", "<script", "<link", "@import", "url("] {
            assert!(
                !page.contains(forbidden),
                "the report must not fetch anything: {forbidden}"
            );
        }
        assert_eq!(
            page.matches("<svg").count(),
            2,
            "throughput and latency plots"
        );
        let p99 = result["latency_us"]["p99"].as_u64().unwrap();
        assert!(
            (985..=995).contains(&p99),
            "p99 of 1..=1000 and one outlier: {p99}"
        );
        for expected in [
            format!("p99 {} µs", format::count(p99)),
            format!(
                "max {} µs",
                format::count(result["latency_us"]["max"].as_u64().unwrap())
            ),
            "peak 1,500 ops/s".to_owned(),
            "kill node &lt;2&gt;".to_owned(),
            "<th>groups</th><td class=\"n\">10,000</td>".to_owned(),
            "<th>payload_bytes</th><td class=\"n\">64</td>".to_owned(),
            "<th>all_releaded_s</th><td class=\"n\">1.75</td>".to_owned(),
            "<th>elapsed_s</th><td class=\"n\">10.5</td>".to_owned(),
            ">99.9%<".to_owned(),
            "groups led by the killed node: 3,333".to_owned(),
        ] {
            assert!(
                page.contains(&expected),
                "{expected:?} missing from the report"
            );
        }
        assert!(!page.contains("kill node <2>"), "labels are escaped");
    }

    #[test]
    fn report_without_series_or_latency_says_so() {
        let outcome = Outcome::new("idle");
        let page = html(&outcome, &Map::new());
        assert!(page.contains("no per-second series") && page.contains("no per-operation latency"));
        assert!(!page.contains("<svg"));
    }

    #[test]
    fn latency_line_rises_with_the_percentile() {
        let (outcome, _) = synthetic_run();
        let histogram = outcome.latency_us.as_ref().unwrap();
        let points: Vec<(f64, u64)> = histogram
            .iter_quantiles(QUANTILE_TICKS_PER_HALF)
            .map(|v| {
                (
                    percentile_x(v.quantile_iterated_to(), 10_000.0),
                    v.value_iterated_to(),
                )
            })
            .collect();
        assert!(points.len() > 20);
        assert!(points
            .windows(2)
            .all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
        assert_eq!(points.last().unwrap().1, histogram.max());
    }

    #[test]
    fn nested_fields_are_flattened() {
        let fields = serde_json::json!({"a": 1, "latency_us": {"p99": 7}})
            .as_object()
            .unwrap()
            .clone();
        let mut rows = Vec::new();
        flatten("", &fields, &mut rows);
        assert_eq!(
            rows,
            vec![
                ("a".into(), Value::from(1)),
                ("latency_us.p99".into(), Value::from(7))
            ]
        );
    }
}
