//! What a bench mode hands back to the driver: the measured fields of the
//! JSON result (see shared/BENCH.md) plus the series the report plots.

use hdrhistogram::Histogram;
use serde_json::{Map, Value};

use crate::data_dir::DataDir;
use crate::progress::Progress;

/// The slowest operation a latency histogram records exactly: a minute. Slower
/// ones are clamped to it (and are errors by any measure).
pub const LATENCY_US_MAX: u64 = 60_000_000;
/// Significant decimal digits kept by latency histograms (0.1 % resolution).
pub const LATENCY_SIGFIG: u8 = 3;

/// The result of one mode's run. The driver adds the common process figures
/// (`cpu_user_s`, `cpu_sys_s`, `rss_max_bytes`, `elapsed_s`) and the
/// `latency_us` percentiles from `latency_us`; the mode fills everything else.
/// A field the mode sets itself wins over the driver's (e.g. `idle` measuring
/// `rss_max_bytes` after elections, or a window shorter than the whole run
/// as `elapsed_s`).
///
/// `per_second` and `marks` left empty are taken from the mode's
/// `RunContext::progress` (its last phase), so a mode that reports progress
/// gets its throughput plot for free.
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
    /// What `per_second` counts (`"ops"`, `"entries"`, `"bytes"`), for the
    /// plot's axis; empty means "ops" or the progress phase's unit.
    pub per_second_unit: String,
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
            per_second_unit: String::new(),
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

    /// Marks a moment on the throughput plot, in seconds from the start of
    /// `per_second` (e.g. `"kill node 2"`).
    pub fn mark(&mut self, at_s: f64, label: impl Into<String>) {
        assert!(
            at_s.is_finite() && at_s >= 0.0,
            "a mark is at a time within the run: {at_s}"
        );
        self.marks.push((at_s, label.into()));
    }

    /// Adds a line to the human summary printed after the common figures.
    pub fn say(&mut self, line: impl Into<String>) {
        self.summary.push(line.into());
    }
}

/// An empty latency histogram of the shape every mode uses: 1 µs to
/// `LATENCY_US_MAX`, `LATENCY_SIGFIG` digits. Record with
/// `saturating_record(us)`; merge per-thread histograms with `add`.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, LATENCY_SIGFIG)
        .expect("constant bounds are valid")
}

/// What every mode is told about the run beyond its own flags.
pub struct RunContext {
    /// `--data-dir`: keep WAL and snapshots here; `None` means a temporary
    /// directory that the mode removes afterwards.
    pub data_dir: Option<std::path::PathBuf>,
    /// Progress of the run: call `progress.phase(..)` when the measured work
    /// starts, then `progress.add(n)` (or `tick(total)`) as work completes, from
    /// any thread (clone it). The driver draws it on stderr (a bar on a
    /// terminal, nothing with `--quiet`) and records the per-second series.
    pub progress: Progress,
}

impl RunContext {
    /// A context for tests: no data directory, progress hidden.
    pub fn hidden() -> RunContext {
        RunContext {
            data_dir: None,
            progress: Progress::hidden(),
        }
    }

    /// The directory for WAL and snapshots: `--data-dir` (created if missing,
    /// kept) or a temporary one, removed when the returned value drops. Warns
    /// on stderr when it is on tmpfs, where fsync costs nothing.
    pub fn open_data_dir(&self) -> anyhow::Result<DataDir> {
        let dir = DataDir::open(self.data_dir.as_deref())?;
        if dir.is_on_tmpfs() {
            self.progress.note(&format!(
                "warning: {} is on tmpfs: fsync and O_DIRECT figures from it are not a disk's",
                dir.path().display()
            ));
        }
        Ok(dir)
    }
}
