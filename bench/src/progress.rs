//! Progress of a run as modes see it: a cheap, thread-safe counter that the
//! driver turns into a bar on stderr and into the per-second throughput series
//! of the report, so that no mode has to know about indicatif or clocks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::format;

/// A phase draws nothing during its first seconds: short runs stay quiet.
pub const DRAW_AFTER: Duration = Duration::from_secs(2);
/// How often the bar is redrawn.
pub const REDRAW_INTERVAL: Duration = Duration::from_millis(200);
/// A limit on the per-second series (a day of seconds) and on marks.
pub const SERIES_LEN_MAX: usize = 86_400;
pub const MARKS_MAX: usize = 1_000;

/// What a phase is expected to cover, for the bar's length.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Plan {
    /// The phase runs for this long (a timed workload).
    For(Duration),
    /// The phase is done when the counter reaches this many units.
    Units(u64),
    /// No known end (a spinner).
    Open,
}

/// What is shown on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Display {
    /// A bar redrawn in place (stderr is a terminal), plus notes.
    Bar,
    /// Notes and marks only, one line each (stderr is a file or a pipe).
    Lines,
    /// Nothing at all (`--quiet`).
    Off,
}

/// The handle modes get in `RunContext::progress`. Clones share one counter,
/// so worker threads can each hold one and `add` as they complete work.
#[derive(Clone)]
pub struct Progress {
    shared: Arc<Shared>,
}

struct Shared {
    display: Display,
    /// Units completed in the current phase (operations, entries, bytes).
    done: AtomicU64,
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    phase: Option<Phase>,
    /// Completed units in each whole second of the current phase.
    series: Vec<f64>,
    /// The counter at the end of the last recorded second.
    series_done: u64,
    /// (seconds since the phase started, label).
    marks: Vec<(f64, String)>,
    bar: Option<ProgressBar>,
    ticker: Option<JoinHandle<()>>,
    /// Set to stop the current phase's ticker thread.
    stopping: bool,
}

struct Phase {
    name: String,
    unit: &'static str,
    plan: Plan,
    started: Instant,
}

impl Progress {
    pub fn new(display: Display) -> Progress {
        Progress {
            shared: Arc::new(Shared {
                display,
                done: AtomicU64::new(0),
                state: Mutex::new(State::default()),
                wake: Condvar::new(),
            }),
        }
    }

    /// A handle that counts and samples but never draws (tests, `--quiet`).
    pub fn hidden() -> Progress {
        Progress::new(Display::Off)
    }

    /// Starts a phase (`"load"`, `"writing WAL"`, `"replay"`) counting `unit`s
    /// (`"ops"`, `"entries"`, `"bytes"`): the counter, the per-second series
    /// and the marks restart from zero. Ends the previous phase, if any.
    pub fn phase(&self, name: &str, unit: &'static str, plan: Plan) {
        self.finish();
        let mut state = self.state();
        state.series.clear();
        state.series_done = 0;
        state.marks.clear();
        state.stopping = false;
        self.shared.done.store(0, Ordering::Relaxed);
        state.phase = Some(Phase {
            name: name.to_owned(),
            unit,
            plan,
            started: Instant::now(),
        });
        let shared = Arc::clone(&self.shared);
        let ticker = std::thread::Builder::new()
            .name("bench-progress".into())
            .spawn(move || tick_loop(&shared))
            .expect("spawning the progress thread");
        state.ticker = Some(ticker);
    }

    /// Adds `units` completed units; cheap (one atomic add), any thread.
    pub fn add(&self, units: u64) {
        self.shared.done.fetch_add(units, Ordering::Relaxed);
    }

    /// Reports that `done_units` units of the phase are complete in total;
    /// the counter never goes backwards.
    pub fn tick(&self, done_units: u64) {
        self.shared.done.fetch_max(done_units, Ordering::Relaxed);
    }

    /// Units completed so far in the current phase.
    pub fn done(&self) -> u64 {
        self.shared.done.load(Ordering::Relaxed)
    }

    /// Seconds since the current phase started (0 without a phase): the
    /// clock of the per-second series and of the marks.
    pub fn elapsed_s(&self) -> f64 {
        self.state()
            .phase
            .as_ref()
            .map_or(0.0, |p| p.started.elapsed().as_secs_f64())
    }

    /// Marks this moment on the throughput plot (e.g. `"kill node 2"`) and
    /// notes it on stderr.
    pub fn mark(&self, label: &str) {
        let at_s = self.elapsed_s();
        {
            let mut state = self.state();
            if state.marks.len() < MARKS_MAX {
                state.marks.push((at_s, label.to_owned()));
            }
        }
        self.note(&format!("[{at_s:.1} s] {label}"));
    }

    /// Prints a line on stderr above the bar (nothing with `--quiet`).
    pub fn note(&self, line: &str) {
        if self.shared.display == Display::Off {
            return;
        }
        match &self.state().bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    /// Ends the current phase: records its last whole seconds, stops the
    /// ticker and clears the bar. Idempotent.
    pub fn finish(&self) {
        let ticker = {
            let mut state = self.state();
            state.stopping = true;
            state.ticker.take()
        };
        self.shared.wake.notify_all();
        if let Some(ticker) = ticker {
            ticker.join().expect("the progress thread does not panic");
        }
        let mut state = self.state();
        record_whole_seconds(&mut state, self.done());
        if let Some(bar) = state.bar.take() {
            bar.finish_and_clear();
        }
    }

    /// Completed units in each whole second of the current (or last) phase.
    pub fn per_second(&self) -> Vec<f64> {
        self.state().series.clone()
    }

    /// The marks of the current (or last) phase.
    pub fn marks(&self) -> Vec<(f64, String)> {
        self.state().marks.clone()
    }

    /// The unit of the current (or last) phase, if one was started.
    pub fn unit(&self) -> Option<&'static str> {
        self.state().phase.as_ref().map(|p| p.unit)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.shared
            .state
            .lock()
            .expect("progress state lock is never poisoned")
    }
}

/// The ticker thread of one phase: records each whole second and redraws.
fn tick_loop(shared: &Shared) {
    let mut state = shared.state.lock().expect("progress state lock");
    while !state.stopping {
        let done = shared.done.load(Ordering::Relaxed);
        record_whole_seconds(&mut state, done);
        if shared.display == Display::Bar {
            redraw(&mut state, done);
        }
        state = shared
            .wake
            .wait_timeout(state, REDRAW_INTERVAL)
            .expect("progress state lock")
            .0;
    }
}

/// Appends one entry per whole second elapsed since the last one recorded;
/// seconds the ticker slept through share the units evenly.
fn record_whole_seconds(state: &mut State, done: u64) {
    let Some(phase) = &state.phase else { return };
    let whole_s = phase.started.elapsed().as_secs() as usize;
    let missing = whole_s.saturating_sub(state.series.len());
    if missing == 0 || state.series.len() >= SERIES_LEN_MAX {
        return;
    }
    let per_s = done.saturating_sub(state.series_done) as f64 / missing as f64;
    let room = SERIES_LEN_MAX - state.series.len();
    state
        .series
        .extend(std::iter::repeat_n(per_s, missing.min(room)));
    state.series_done = done;
}

fn redraw(state: &mut State, done: u64) {
    let Some(phase) = &state.phase else { return };
    let elapsed = phase.started.elapsed();
    if elapsed < DRAW_AFTER {
        return;
    }
    let rate = state
        .series
        .last()
        .copied()
        .unwrap_or(done as f64 / elapsed.as_secs_f64());
    let rate_text = if phase.unit == "bytes" {
        format!("{}/s", format::bytes(rate as u64))
    } else {
        format!("{} {}/s", format::number(rate), phase.unit)
    };
    let bar = state.bar.get_or_insert_with(|| new_bar(phase));
    match phase.plan {
        Plan::For(total) => {
            bar.set_position(elapsed.min(total).as_millis() as u64);
            bar.set_message(format!(
                "{:.0}/{:.0} s  {rate_text}",
                elapsed.as_secs_f64(),
                total.as_secs_f64()
            ));
        }
        Plan::Units(total) => {
            bar.set_position(done.min(total));
            bar.set_message(format!(
                "{} of {} {}  {rate_text}",
                format::count(done),
                format::count(total),
                phase.unit
            ));
        }
        Plan::Open => {
            bar.tick();
            bar.set_message(format!(
                "{} {}  {rate_text}",
                format::count(done),
                phase.unit
            ));
        }
    }
}

fn new_bar(phase: &Phase) -> ProgressBar {
    let (length, template) = match phase.plan {
        Plan::For(total) => (Some(total.as_millis() as u64), "{prefix} [{bar:30}] {msg}"),
        Plan::Units(total) => (Some(total), "{prefix} [{bar:30}] {msg}"),
        Plan::Open => (None, "{prefix} {spinner} {msg}"),
    };
    let style = ProgressStyle::with_template(template)
        .expect("a valid template")
        .progress_chars("=> ");
    let bar = ProgressBar::with_draw_target(length, ProgressDrawTarget::stderr()).with_style(style);
    bar.set_prefix(phase.name.clone());
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_from_many_threads_and_restarts_per_phase() {
        let progress = Progress::hidden();
        progress.phase("load", "ops", Plan::Open);
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let p = progress.clone();
                std::thread::spawn(move || (0..1000).for_each(|_| p.add(1)))
            })
            .collect();
        workers.into_iter().for_each(|w| w.join().unwrap());
        assert_eq!(progress.done(), 4000);
        progress.tick(3000);
        assert_eq!(progress.done(), 4000, "tick never goes backwards");
        progress.phase("replay", "bytes", Plan::Units(10));
        assert_eq!(progress.done(), 0);
        assert_eq!(progress.unit(), Some("bytes"));
        progress.finish();
        progress.finish();
    }

    #[test]
    fn whole_seconds_are_recorded_and_partial_ones_dropped() {
        let mut state = State {
            phase: Some(Phase {
                name: "load".into(),
                unit: "ops",
                plan: Plan::Open,
                started: Instant::now() - Duration::from_millis(3500),
            }),
            ..State::default()
        };
        record_whole_seconds(&mut state, 300);
        assert_eq!(state.series, vec![100.0, 100.0, 100.0]);
        record_whole_seconds(&mut state, 400);
        assert_eq!(
            state.series.len(),
            3,
            "the running fourth second is not recorded"
        );
    }

    #[test]
    fn marks_carry_their_time_and_label() {
        let progress = Progress::hidden();
        progress.phase("load", "ops", Plan::For(Duration::from_secs(1)));
        progress.mark("kill node 2");
        let marks = progress.marks();
        progress.finish();
        assert_eq!(marks.len(), 1);
        assert_eq!(marks[0].1, "kill node 2");
        assert!(marks[0].0 >= 0.0 && marks[0].0 < 1.0);
    }
}
