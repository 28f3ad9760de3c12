//! What a bench mode hands back to the driver: the measured fields of the
//! JSON result (see shared/BENCH.md) plus the series the report plots.

use hdrhistogram::Histogram;
use serde_json::{Map, Value};

/// The result of one mode's run. The driver adds the common process figures
/// (`cpu_user_s`, `cpu_sys_s`, `rss_max_bytes`, `elapsed_s`) and the
/// `latency_us` percentiles from `latency_us`; the mode fills everything else.
pub struct Outcome {
    /// The `mode` field of the JSON result, e.g. `"write"`, `"wal"`.
    pub mode: &'static str,
    /// The run's shape, written as the `config` object.
    pub config: Map<String, Value>,
    /// Every other field the mode measured, common (`ops`, `errors`, …) and
    /// mode-specific (`entries_per_s`, `replay_s`, …), by its BENCH.md name.
    pub fields: Map<String, Value>,
    /// Per-operation latency in microseconds measured at the client, from
    /// submission to acknowledgement; `None` when the mode has no operations.
    pub latency_us: Option<Histogram<u64>>,
    /// Completed operations (or entries) in each second of the run, in order.
    pub per_second: Vec<f64>,
    /// Moments to mark on the throughput plot: (seconds from start, label).
    pub marks: Vec<(f64, String)>,
    /// Human-readable summary lines for stdout, beyond the common ones.
    pub summary: Vec<String>,
}

impl Outcome {
    pub fn new(mode: &'static str) -> Self {
        Outcome {
            mode,
            config: Map::new(),
            fields: Map::new(),
            latency_us: None,
            per_second: Vec::new(),
            marks: Vec::new(),
            summary: Vec::new(),
        }
    }

    /// Sets a field of the result; the name is the one BENCH.md gives.
    pub fn set(&mut self, name: &str, value: impl Into<Value>) {
        self.fields.insert(name.to_owned(), value.into());
    }

    /// Sets a field of the `config` object.
    pub fn config(&mut self, name: &str, value: impl Into<Value>) {
        self.config.insert(name.to_owned(), value.into());
    }
}

/// What every mode is told about the run beyond its own flags.
pub struct RunContext {
    /// `--data-dir`: keep WAL and snapshots here; `None` means a temporary
    /// directory that the mode removes afterwards.
    pub data_dir: Option<std::path::PathBuf>,
    /// Whether to draw progress on stderr (off for `--quiet` and non-terminals).
    pub progress: bool,
}
