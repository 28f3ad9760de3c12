//! The `failover` mode (shared/BENCH.md): kills one node of an embedded
//! cluster under a unique-key write load (with `--drain-ms`, drains it
//! first, as a clean stop does), measures how long until every group has a
//! leader on another node and until writes flow at 90 % of their rate
//! before the stop, then reads every acknowledged write back from the
//! survivors. An acknowledged write that cannot be found is a lost write: the
//! one figure of this mode that must always be zero.

mod check;

use std::time::{Duration, Instant};

use engine::client::ClusterMap;
use engine::node::Cluster;

use crate::cluster::{Embedded, EmbeddedShape};
use crate::load::{Load, LoadShape};
use crate::modes::write::{default_cores, fill};
use crate::outcome::{Outcome, RunContext};
use crate::progress::{Plan, Progress};

#[derive(clap::Args, Debug, Clone)]
pub struct FailoverArgs {
    /// Nodes of the embedded cluster (at least 3: a majority must survive the kill).
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    /// Raft groups.
    #[arg(long, default_value_t = 1000)]
    pub groups: u64,
    /// Write operations in flight (over all connections).
    #[arg(long, default_value_t = 256)]
    pub clients: usize,
    /// Bytes of each written value.
    #[arg(long, default_value = "64", value_parser = crate::args::parse_bytes)]
    pub payload: u64,
    /// Executor cores per node (the embedded cluster runs core k of every node on executor k).
    #[arg(long, default_value_t = default_cores())]
    pub cores: u32,
    /// Measured load before the kill.
    #[arg(long, default_value = "5s", value_parser = crate::args::parse_duration)]
    pub before: Duration,
    /// Load kept running after the kill.
    #[arg(long, default_value = "10s", value_parser = crate::args::parse_duration)]
    pub after: Duration,
    /// The node to kill (default: the node leading the most groups).
    #[arg(long, value_name = "NODE")]
    pub kill: Option<u64>,
    /// Drain the node for up to this long before killing it, as `myriad
    /// serve` does on SIGTERM (`stop_drain_ms`): it hands every group it
    /// leads to another node first. 0: kill it at once, as a crash would.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub drain_ms: u64,
    /// Not supported: the bench must kill a node itself, so it needs the embedded cluster.
    #[arg(long, value_name = "ADDRS", hide = true)]
    pub target: Option<String>,
}

/// Warm-up before measuring: leaders elected and known to the load threads.
const WARMUP_MAX: Duration = Duration::from_secs(30);
const WARMUP_MIN: Duration = Duration::from_secs(1);
/// How often the survivors' leader counts are read after the kill.
const RELEAD_POLL: Duration = Duration::from_millis(10);
/// How long past `--after` the bench still waits for every group to be re-led.
const RELEAD_GRACE: Duration = Duration::from_secs(10);
/// Writes recover when a second reaches this fraction of the rate before the kill.
const RECOVERED_FRACTION: f64 = 0.9;
/// How often the count of acknowledged writes is sampled for the recovery
/// time.
const SAMPLE_EVERY: Duration = Duration::from_millis(50);
/// The window over which the write rate after the stop must be back to
/// `RECOVERED_FRACTION` of the rate before.
const RECOVERY_WINDOW_S: f64 = 0.5;

pub fn run(args: &FailoverArgs, ctx: &RunContext) -> anyhow::Result<Outcome> {
    anyhow::ensure!(
        args.target.is_none(),
        "failover needs the embedded cluster: the bench kills one of its nodes itself, which it cannot do to \
         the servers of --target (kill a server yourself while `myriad-bench --target ...` or `lin-kv` runs)"
    );
    anyhow::ensure!(
        args.nodes >= 3 && args.nodes <= 7,
        "--nodes must be 3..=7: a majority has to survive the kill"
    );
    anyhow::ensure!(
        args.groups >= 1 && args.clients >= 1,
        "--groups and --clients must be positive"
    );
    anyhow::ensure!(
        args.payload >= 8 && args.payload <= 1 << 20,
        "--payload is 8 B to 1 MiB (the value starts with its key)"
    );
    anyhow::ensure!(args.cores >= 1, "--cores must be at least 1");
    anyhow::ensure!(
        !args.before.is_zero() && !args.after.is_zero(),
        "--before and --after must be positive"
    );
    if let Some(k) = args.kill {
        anyhow::ensure!(
            (1..=args.nodes).contains(&k),
            "--kill {k}: nodes are numbered 1..={}",
            args.nodes
        );
    }
    let mut out = Outcome::new("failover");
    out.config("nodes", args.nodes);
    out.config("groups", args.groups);
    out.config("clients", args.clients as u64);
    out.config("payload_bytes", args.payload);
    out.config("before_s", args.before.as_secs_f64());
    out.config("after_s", args.after.as_secs_f64());
    out.config("cores", args.cores);
    out.config("drain_ms", args.drain_ms);
    out.config("sync", true);
    out.config("target", "embedded");

    let shape = EmbeddedShape {
        nodes: args.nodes,
        groups: args.groups,
        cores: args.cores,
        sync: true,
        log_entries_in_memory_max: engine::node::LOG_ENTRIES_IN_MEMORY_MAX_DEFAULT,
    };
    let embedded = Embedded::start(ctx, &shape, "starting the cluster", Plan::Open)?;
    let measured = measure(args, ctx, &embedded, &mut out);
    let stopped = embedded.shutdown();
    measured?;
    stopped?;
    Ok(out)
}

/// Load, kill, recovery, read-back; fills `out`.
fn measure(
    args: &FailoverArgs,
    ctx: &RunContext,
    embedded: &Embedded,
    out: &mut Outcome,
) -> anyhow::Result<()> {
    let load_shape = LoadShape {
        groups: args.groups,
        clients: args.clients,
        payload_bytes: args.payload as usize,
        read_ratio: 0.0,
        keys_per_group: 0,
        request_timeout: Duration::from_secs(5),
    };
    ctx.progress.phase("electing leaders", "ops", Plan::Open);
    let load = Load::start(&embedded.map, &load_shape, ctx.progress.clone())?;
    let warm = Instant::now();
    while warm.elapsed() < WARMUP_MIN
        || (load.leaders_known() < args.groups as usize && warm.elapsed() < WARMUP_MAX)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let victim = args.kill.unwrap_or_else(|| busiest_node(embedded));
    let survivors: Vec<u64> = embedded
        .configs
        .keys()
        .copied()
        .filter(|&n| n != victim)
        .collect();

    ctx.progress
        .phase("failover", "ops", Plan::For(args.before + args.after));
    load.begin_measuring();
    let sampler = Sampler::start(ctx.progress.clone());
    std::thread::sleep(args.before);
    let led = embedded.cluster.metrics(victim).leaders;
    let watch = Watch {
        cluster: &embedded.cluster,
        survivors: &survivors,
        groups: args.groups,
        after: args.after,
        progress: &ctx.progress,
    };
    let (stop_at_s, drained, (releaded, led_by_survivors), report, samples) = std::thread::scope(|s| {
        // Re-election and recovery count from the start of the stop: the
        // drain's start when there is one.
        let stopping = Instant::now();
        let stop_at_s = ctx.progress.elapsed_s();
        let watch = &watch;
        let watcher = s.spawn(move || watch.releaded(stopping));
        let drained = (args.drain_ms > 0).then(|| {
            ctx.progress.mark(&format!("drain node {victim}"));
            let left = embedded.cluster.drain_and_wait(victim, Duration::from_millis(args.drain_ms));
            let drained_in = stopping.elapsed();
            // As `myriad serve` does before it stops.
            embedded.cluster.close_clients_and_wait(victim, engine::node::drain::CLIENT_CLOSE_WAIT);
            (drained_in, left)
        });
        embedded.cluster.kill(victim);
        ctx.progress.mark(&format!("kill node {victim}"));
        std::thread::sleep(args.after.saturating_sub(stopping.elapsed()));
        // The series ends with the last whole second of load, before the
        // load threads wind down.
        let samples = sampler.finish();
        ctx.progress.finish();
        let report = load.finish();
        let releaded = watcher
            .join()
            .expect("the re-election watcher does not panic");
        (stop_at_s, drained, releaded, report, samples)
    });
    out.per_second = ctx.progress.per_second();
    out.per_second_unit = "ops".into();
    out.marks = ctx.progress.marks();
    fill(out, &report, args.payload);

    let recovered_s = recovery_s(&samples, stop_at_s, RECOVERED_FRACTION, RECOVERY_WINDOW_S);
    out.set("killed_node", victim);
    out.set("groups_led_by_killed_node", led);
    out.set("all_releaded_s", releaded.map(|d| d.as_secs_f64()));
    out.set("groups_led_by_survivors", led_by_survivors);
    out.set("throughput_90pct_s", recovered_s);
    out.set("drain_s", drained.map(|(d, _)| d.as_secs_f64()));
    out.set("groups_led_at_kill", drained.map_or(led, |(_, left)| left));
    match drained {
        Some((took, left)) => out.say(format!(
            "drained node {victim} from {stop_at_s:.2} s, when it led {led} of {} groups: {left} left after {:.3} s, then killed it",
            args.groups,
            took.as_secs_f64()
        )),
        None => out.say(format!(
            "killed node {victim} at {stop_at_s:.2} s; it led {led} of {} groups",
            args.groups
        )),
    }
    let stop = if drained.is_some() { "the drain began" } else { "the kill" };
    out.say(match releaded {
        Some(d) => format!(
            "every group had a leader on another node {:.3} s after {stop}",
            d.as_secs_f64()
        ),
        None => format!(
            "NOT every group had a leader on another node within {:.0} s of {stop}: the survivors led {led_by_survivors} of {}",
            (args.after + RELEAD_GRACE).as_secs_f64(),
            args.groups
        ),
    });
    out.say(match recovered_s {
        Some(s) => format!("writes back to 90 % of their rate before {stop} within {s:.2} s (the end of the first {RECOVERY_WINDOW_S} s window at that rate, windows every {} ms)", SAMPLE_EVERY.as_millis()),
        None => format!("writes did NOT come back to 90 % of their rate before {stop}"),
    });

    let survivors_map = ClusterMap {
        nodes: embedded
            .map
            .nodes
            .iter()
            .filter(|(&n, _)| n != victim)
            .map(|(&n, a)| (n, a.clone()))
            .collect(),
    };
    let started = Instant::now();
    let checked = check::read_back(
        &survivors_map,
        &report.acked,
        args.payload as usize,
        &ctx.progress,
    )?;
    ctx.progress.finish();
    out.set("acked_writes_checked", checked.checked);
    out.set("acked_writes_lost", checked.lost);
    out.set("acked_writes_unverified", checked.unverified);
    out.say(format!(
        "read back {} of {} acknowledged writes in {:.1} s: {} lost, {} could not be read",
        checked.checked,
        report.acked.len(),
        started.elapsed().as_secs_f64(),
        checked.lost,
        checked.unverified
    ));
    if checked.lost > 0 {
        let shown: Vec<String> = checked
            .lost_examples
            .iter()
            .map(|(g, k)| format!("group {g} key {k:#x}"))
            .collect();
        out.say(format!(
            "LOST acknowledged writes (a durability bug), e.g. {}",
            shown.join(", ")
        ));
    }
    Ok(())
}

/// The node leading the most groups (the lowest id among equals).
fn busiest_node(embedded: &Embedded) -> u64 {
    let led = |n: u64| embedded.cluster.metrics(n).leaders;
    embedded
        .configs
        .keys()
        .copied()
        .max_by_key(|&n| (led(n), std::cmp::Reverse(n)))
        .expect("a cluster has nodes")
}

/// Watches the surviving nodes after the kill.
struct Watch<'a> {
    cluster: &'a Cluster,
    survivors: &'a [u64],
    groups: u64,
    after: Duration,
    progress: &'a Progress,
}

impl Watch<'_> {
    /// Time from `since` (the kill, or the drain before it) until the
    /// survivors lead every group between them (`None` if that did not
    /// happen by `after` + `RELEAD_GRACE`), and the groups they led when the
    /// watch ended.
    fn releaded(&self, since: Instant) -> (Option<Duration>, u64) {
        let give_up = self.after + RELEAD_GRACE;
        let mut led = 0;
        while since.elapsed() < give_up {
            led = self
                .survivors
                .iter()
                .map(|&n| self.cluster.metrics(n).leaders)
                .sum();
            if led >= self.groups {
                let took = since.elapsed();
                if took < self.after {
                    self.progress.mark("every group re-led");
                }
                return (Some(took), led);
            }
            std::thread::sleep(RELEAD_POLL);
        }
        (None, led)
    }
}

/// Samples the count of acknowledged writes every `SAMPLE_EVERY`, with the
/// phase's elapsed time, until `finish`.
struct Sampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<(f64, u64)>>,
}

impl Sampler {
    fn start(progress: Progress) -> Sampler {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                samples.push((progress.elapsed_s(), progress.done()));
                std::thread::sleep(SAMPLE_EVERY);
            }
            samples
        });
        Sampler { stop, thread }
    }

    fn finish(self) -> Vec<(f64, u64)> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().expect("the sampler does not panic")
    }
}

/// Seconds from `stop_at_s` to the end of the first window of `window_s`
/// (starting at a sample at or after the stop) whose write rate is at least
/// `fraction` of the rate before the stop (from 1 s on: the first second
/// ramps up). `samples` are (elapsed seconds, writes acknowledged so far),
/// in time order. None if nothing flowed before, or the rate never came
/// back.
pub fn recovery_s(samples: &[(f64, u64)], stop_at_s: f64, fraction: f64, window_s: f64) -> Option<f64> {
    assert!(stop_at_s >= 0.0 && (0.0..=1.0).contains(&fraction) && window_s > 0.0, "a stop time, a fraction and a window");
    let from = samples.iter().find(|&&(t, _)| t >= 1.0)?;
    let to = samples.iter().rev().find(|&&(t, _)| t <= stop_at_s)?;
    if to.0 - from.0 < window_s {
        return None;
    }
    let rate_before = (to.1 - from.1) as f64 / (to.0 - from.0);
    if rate_before <= 0.0 {
        return None;
    }
    let after = samples.iter().position(|&(t, _)| t >= stop_at_s)?;
    samples[after..].iter().enumerate().find_map(|(i, &(t, done))| {
        let &(end, done_end) = samples[after + i..].iter().find(|&&(u, _)| u >= t + window_s)?;
        ((done_end - done) as f64 / (end - t) >= fraction * rate_before).then_some(end - stop_at_s)
    })
}

#[cfg(test)]
mod tests {
    use super::recovery_s;

    #[test]
    fn recovery_is_measured_to_the_end_of_the_first_good_window() {
        // 1,000 writes a second, sampled every 0.1 s; stopped at 3.0 s, no
        // writes for 0.5 s, then 500 a second until 4.0 s, then 1,000 again.
        let mut samples = Vec::new();
        let mut done = 0u64;
        for i in 0..80 {
            let t = f64::from(i) / 10.0;
            samples.push((t, done));
            done += match t {
                t if t < 2.95 => 100,
                t if t < 3.45 => 0,
                t if t < 3.95 => 50,
                _ => 100,
            };
        }
        // The first window at 95 %: from 4.0 s to 4.5 s (the one from
        // 3.9 s has 90 %).
        let s = recovery_s(&samples, 3.0, 0.95, 0.5).unwrap();
        assert!((s - 1.5).abs() < 1e-9, "back 1.5 s after the stop: {s}");
        // At 45 %: the window from 3.5 s (the one from 3.4 s has 40 %).
        let s = recovery_s(&samples, 3.0, 0.45, 0.5).unwrap();
        assert!((s - 1.0).abs() < 1e-9, "{s}");
        assert_eq!(recovery_s(&samples, 3.0, 1.0, 10.0), None, "no window that long after the stop");
        let flat: Vec<(f64, u64)> = (0..30).map(|i| (f64::from(i) / 10.0, 0)).collect();
        assert_eq!(recovery_s(&flat, 2.5, 0.9, 0.5), None, "nothing flowed before");
        assert_eq!(recovery_s(&samples, 1.2, 0.9, 0.5), None, "not a window's worth before the stop");
    }
}
