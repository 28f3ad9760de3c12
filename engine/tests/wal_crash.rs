//! kill -9 of a real writer process at seeded random moments. The writer
//! appends from several tasks at once (group commit, two writes in flight),
//! sets hard states, compacts, optionally purges (so segments get deleted
//! and lagging groups rewritten); after each `wait_durable` it reports what
//! became durable on stdout. After each kill the parent recovers a copy of
//! the WAL and checks that everything acknowledged is there and intact, that
//! every recovered entry has the content it was written with, and that a
//! log once recovered never changes; then the next writer resumes on the
//! crashed (not the copied) directory, so it also recovers raw crash states.
//!
//! The test binary is its own writer: `writer_process` does nothing unless
//! `WRITER_DIR_ENV` is set, and the parent re-executes this binary with it.
//!
//! `MYRIAD_CRASH_SEED` replays a seed, `MYRIAD_CRASH_ITERS` sets the kills,
//! `MYRIAD_CRASH_PURGE=0` takes garbage collection out of the writer (on by
//! default), `MYRIAD_CRASH_KEEP=1` keeps the directory for `myriad-log`.
//! The seed fixes every choice of the test, not the moment the kernel
//! delivers the signal.

mod wal_common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use engine::wal::sim::SimRng;
use engine::wal::{Batch, GroupId, HardState, LogIndex, Term, Wal, WalOptions};
use wal_common::{check, disk_dir, run, small_opts, Model as LogModel};

const WRITER_DIR_ENV: &str = "MYRIAD_WAL_CRASH_WRITER_DIR";
const WRITER_GEN_ENV: &str = "MYRIAD_WAL_CRASH_WRITER_GEN";
const WRITER_SEED_ENV: &str = "MYRIAD_WAL_CRASH_WRITER_SEED";
const WRITER_PURGE_ENV: &str = "MYRIAD_WAL_CRASH_WRITER_PURGE";
const SEED_DEFAULT: u64 = 0x5EED_0C0A_5417;
const ITERS_DEFAULT: u64 = 5;
/// The writer purges (rewrites lagging groups, deletes segments) by default.
const PURGE_DEFAULT: u64 = 1;
/// Marks protocol lines, which may follow the test harness's own output.
const MARK: &str = "@@ ";

/// Groups 1..=GROUPS are busy and compact; group 0 lags and pins old segments.
const GROUPS: u64 = 6;
const WRITER_TASKS: u64 = 3;
/// Entries a busy group keeps when it compacts.
const KEEP_ENTRIES: u64 = 32;
/// A writer that is never killed stops by itself after this.
const WRITER_RUN_MAX: Duration = Duration::from_secs(5);
const WRITER_BATCHES_MAX: u64 = 100_000;
const PURGE_EVERY: Duration = Duration::from_millis(15);
const READY_WAIT_MAX: Duration = Duration::from_secs(30);
const KILL_AFTER_READY_MS_MAX: u64 = 400;
const KILL_EARLY_MS_MAX: u64 = 150;
const SETTLE_WAIT: Duration = Duration::from_millis(20);
const SETTLE_TRIES_MAX: u32 = 50;

fn crash_opts() -> WalOptions {
    WalOptions {
        segment_size_bytes: 64 << 10,
        write_bytes_max: 32 << 10,
        segments_soft_max: 4,
        ..WalOptions::default()
    }
}

/// The payload of (writer generation, group, index): the parent recomputes
/// it for every recovered entry. The generation is `term - 1`.
fn payload(gen: u64, group: u64, index: u64) -> Vec<u8> {
    let mut rng = SimRng(gen.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ group.rotate_left(24) ^ index);
    let len = match rng.below(20) {
        // Up to 12 of these in one batch must still fit a 64 KiB segment.
        0 => 1500 + rng.below(2500),
        _ => 8 + rng.below(1200),
    };
    (0..len).map(|_| rng.next_u64() as u8).collect()
}

/// FNV-1a: the payload hash the writer acknowledges.
fn hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let parsed = match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => v.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{name}={v} is not a number")))
}

// ---------------------------------------------------------------- writer

/// The writer child; a no-op in a normal test run.
#[test]
fn writer_process() {
    let Some(dir) = std::env::var_os(WRITER_DIR_ENV) else {
        return;
    };
    let gen = env_u64(WRITER_GEN_ENV).expect("writer generation");
    let seed = env_u64(WRITER_SEED_ENV).expect("writer seed");
    let purge = env_u64(WRITER_PURGE_ENV).expect("writer purge") != 0;
    run(writer(PathBuf::from(dir), gen, seed, purge));
}

/// Writes protocol lines in one write, so a line is whole or absent.
fn say(lines: &str) {
    let mut out = std::io::stdout().lock();
    if out
        .write_all(lines.as_bytes())
        .and_then(|()| out.flush())
        .is_err()
    {
        std::process::exit(4); // The parent is gone.
    }
}

fn fail(what: impl std::fmt::Display) -> ! {
    say(&format!("{MARK}FAIL {what}\n"));
    std::process::exit(3)
}

async fn writer(dir: PathBuf, gen: u64, seed: u64, purge: bool) {
    let wal = Wal::open_dir(&dir, crash_opts())
        .await
        .unwrap_or_else(|e| fail(e));
    let mut opened = String::new();
    for g in wal.groups() {
        let info = wal.group(g).expect("listed group");
        opened += &format!(
            "{MARK}OPENED {g} {} {}\n",
            info.first_index, info.last_index
        );
    }
    say(&format!("{opened}{MARK}READY {gen}\n"));
    let deadline = Instant::now() + WRITER_RUN_MAX;
    let tasks: Vec<_> = (0..WRITER_TASKS)
        .map(|t| glommio::spawn_local(write_task(wal.clone(), gen, seed ^ (t << 56), t, deadline)))
        .collect();
    let purger = purge.then(|| glommio::spawn_local(purge_task(wal.clone(), deadline)));
    for task in tasks {
        task.await;
    }
    if let Some(purger) = purger {
        purger.await;
    }
    wal.close().await.unwrap_or_else(|e| fail(e));
    say(&format!("{MARK}DONE\n"));
}

async fn purge_task(wal: Wal, deadline: Instant) {
    while Instant::now() < deadline {
        glommio::timer::sleep(PURGE_EVERY).await;
        wal.purge().await.unwrap_or_else(|e| fail(e));
    }
}

/// Where a group's log stands in the writer.
#[derive(Clone, Copy)]
struct Cursor {
    group: u64,
    next: u64,
    compacted: u64,
}

async fn write_task(wal: Wal, gen: u64, seed: u64, task: u64, deadline: Instant) {
    let mut rng = SimRng(seed);
    let mut cursors: Vec<Cursor> = (0..=GROUPS)
        .filter(|g| g % WRITER_TASKS == task)
        .map(|group| {
            let info = wal.group(GroupId(group));
            let next = info.map_or(1, |i| i.last_index.0 + 1);
            let compacted = info.map_or(0, |i| i.compacted.0);
            Cursor {
                group,
                next,
                compacted,
            }
        })
        .collect();
    let term = gen + 1;
    for _ in 0..WRITER_BATCHES_MAX {
        if Instant::now() >= deadline {
            return;
        }
        let mut batch = Batch::new();
        let (mut intents, mut acks) = (String::new(), String::new());
        for c in cursors.iter_mut() {
            let lagging = c.group == 0;
            if (lagging && rng.below(16) != 0) || (!lagging && rng.below(3) == 0) {
                continue;
            }
            for _ in 0..1 + rng.below(4) {
                let p = payload(gen, c.group, c.next);
                batch.push_entry(GroupId(c.group), Term(term), LogIndex(c.next), &p);
                acks += &format!("{MARK}ACK {} {} {term} {}\n", c.group, c.next, hash(&p));
                c.next += 1;
            }
            let commit = c.next - 1;
            let state = HardState {
                term: Term(term),
                vote: 1,
                commit: LogIndex(commit),
            };
            batch.set_hard_state(GroupId(c.group), state);
            acks += &format!("{MARK}HS {} {term} {commit}\n", c.group);
            let upto = c.next.saturating_sub(1 + KEEP_ENTRIES);
            if !lagging && upto > c.compacted && rng.below(4) == 0 {
                batch.compact(GroupId(c.group), LogIndex(upto));
                c.compacted = upto;
                intents += &format!("{MARK}CINTENT {} {upto}\n", c.group);
                acks += &format!("{MARK}COMPACT {} {upto}\n", c.group);
            }
        }
        if batch.is_empty() {
            glommio::yield_if_needed().await;
            continue;
        }
        say(&intents);
        wal.append(&batch).await.unwrap_or_else(|e| fail(e));
        say(&acks);
    }
}

// ---------------------------------------------------------------- parent

/// What the parent knows of one group.
#[derive(Clone, Debug, Default)]
struct GroupModel {
    /// index -> (term, payload hash): acknowledged, or seen after a recovery.
    entries: BTreeMap<u64, (u64, u64)>,
    /// Highest index that must be present.
    last_min: u64,
    /// Compaction point that must be reached, and the highest one requested.
    compact_acked: u64,
    compact_intended: u64,
    commit_acked: u64,
    /// (first, last) after the last recovery, which the next writer must see.
    recovered: Option<(u64, u64)>,
}

#[derive(Default)]
struct Model {
    groups: BTreeMap<u64, GroupModel>,
    acks: u64,
}

fn fields<const N: usize>(line: &str) -> [u64; N] {
    let mut out = [0; N];
    let mut words = line.split_whitespace().skip(1);
    for slot in &mut out {
        let w = words
            .next()
            .unwrap_or_else(|| panic!("short protocol line {line:?}"));
        *slot = w
            .parse()
            .unwrap_or_else(|_| panic!("bad number in {line:?}"));
    }
    out
}

impl Model {
    /// Takes in what one writer said. Panics on anything contradicting what
    /// an earlier recovery showed.
    fn absorb(&mut self, gen: u64, lines: &[String]) {
        for line in lines {
            let kind = line.split_whitespace().next().unwrap_or("");
            match kind {
                "ACK" => {
                    let [g, index, term, h] = fields(line);
                    let m = self.groups.entry(g).or_default();
                    if let Some(&old) = m.entries.get(&index) {
                        panic!("gen {gen}: writer rewrote {g}/{index} {old:?}: it was lost on recovery");
                    }
                    m.entries.insert(index, (term, h));
                    m.last_min = m.last_min.max(index);
                    self.acks += 1;
                }
                "HS" => {
                    let [g, _term, commit] = fields(line);
                    let m = self.groups.entry(g).or_default();
                    m.commit_acked = m.commit_acked.max(commit);
                }
                "CINTENT" => {
                    let [g, upto] = fields(line);
                    let m = self.groups.entry(g).or_default();
                    m.compact_intended = m.compact_intended.max(upto);
                }
                "COMPACT" => {
                    let [g, upto] = fields(line);
                    let m = self.groups.entry(g).or_default();
                    m.compact_acked = m.compact_acked.max(upto);
                }
                "OPENED" => {
                    let [g, first, last] = fields(line);
                    let seen = self.groups.get(&g).and_then(|m| m.recovered);
                    assert_eq!(
                        seen,
                        Some((first, last)),
                        "gen {gen}: writer recovered group {g} differently"
                    );
                }
                "FAIL" => panic!("gen {gen}: writer failed: {line}"),
                "READY" | "DONE" => {}
                _ => panic!("gen {gen}: unknown protocol line {line:?}"),
            }
        }
    }
}

#[test]
fn sigkill_keeps_acknowledged_appends() {
    let seed = env_u64("MYRIAD_CRASH_SEED").unwrap_or(SEED_DEFAULT);
    let iters = env_u64("MYRIAD_CRASH_ITERS").unwrap_or(ITERS_DEFAULT);
    let purge = env_u64("MYRIAD_CRASH_PURGE").unwrap_or(PURGE_DEFAULT) != 0;
    eprintln!(
        "wal_crash: seed {seed:#x} (MYRIAD_CRASH_SEED), {iters} kills (MYRIAD_CRASH_ITERS), \
         purge {purge} (MYRIAD_CRASH_PURGE)"
    );
    let tmp = KeepOnFailure(Some(disk_dir("wal-crash")));
    let wal_dir = tmp.path().join("wal");
    let mut rng = SimRng(seed);
    let mut model = Model::default();
    for gen in 0..iters {
        let started = Instant::now();
        let stderr_path = tmp.path().join(format!("writer-{gen}.stderr"));
        let child = spawn_writer(&wal_dir, gen, rng.next_u64(), purge, &stderr_path);
        let (lines, killed) = kill_at_random(child, &mut rng, &stderr_path);
        let acks_before = model.acks;
        model.absorb(gen, &lines);
        let copy = tmp.path().join(format!("check-{gen}"));
        copy_settled(&wal_dir, &copy);
        let checked = run(check_recovered(
            copy.clone(),
            gen,
            std::mem::take(&mut model.groups),
        ));
        model.groups = checked;
        std::fs::remove_dir_all(&copy).expect("remove copy");
        eprintln!(
            "wal_crash: gen {gen}: {} acks, {}, checked in {:?}",
            model.acks - acks_before,
            if killed { "killed" } else { "finished" },
            started.elapsed()
        );
    }
    assert!(
        model.acks > 0,
        "no writer acknowledged anything before its kill"
    );
}

/// The test's directory; kept for `myriad-log` when the test fails or
/// `MYRIAD_CRASH_KEEP=1`.
struct KeepOnFailure(Option<tempfile::TempDir>);

impl KeepOnFailure {
    fn path(&self) -> &Path {
        self.0.as_ref().expect("until dropped").path()
    }
}

impl Drop for KeepOnFailure {
    fn drop(&mut self) {
        let keep = std::thread::panicking() || env_u64("MYRIAD_CRASH_KEEP").is_some_and(|k| k != 0);
        if let (true, Some(dir)) = (keep, self.0.take()) {
            eprintln!("wal_crash: WAL kept in {}", dir.keep().display());
        }
    }
}

fn spawn_writer(dir: &Path, gen: u64, seed: u64, purge: bool, stderr_path: &Path) -> Child {
    let stderr = std::fs::File::create(stderr_path).expect("stderr file");
    Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "writer_process",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(WRITER_DIR_ENV, dir)
        .env(WRITER_GEN_ENV, gen.to_string())
        .env(WRITER_SEED_ENV, seed.to_string())
        .env(WRITER_PURGE_ENV, u64::from(purge).to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("spawn writer")
}

/// Kills the writer with SIGKILL, either early (maybe mid-recovery) or a
/// while after it is ready; returns its whole protocol lines and whether
/// the kill (rather than the writer itself) ended it.
fn kill_at_random(mut child: Child, rng: &mut SimRng, stderr_path: &Path) -> (Vec<String>, bool) {
    let out = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut out = BufReader::new(out);
        let mut line = String::new();
        while matches!(out.read_line(&mut line), Ok(n) if n > 0) {
            // A line cut by the kill has no newline: never acknowledged.
            if let (true, Some(at)) = (line.ends_with('\n'), line.find(MARK)) {
                let _ = tx.send(line[at + MARK.len()..].trim_end().to_owned());
            }
            line.clear();
        }
    });
    let mut lines = Vec::new();
    if rng.below(5) == 0 {
        std::thread::sleep(Duration::from_millis(rng.below(KILL_EARLY_MS_MAX)));
    } else {
        let deadline = Instant::now() + READY_WAIT_MAX;
        while !lines
            .last()
            .is_some_and(|l: &String| l.starts_with("READY"))
        {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => lines.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    panic!(
                        "writer not ready in {READY_WAIT_MAX:?}: {}",
                        stderr_of(stderr_path)
                    );
                }
            }
        }
        std::thread::sleep(Duration::from_millis(rng.below(KILL_AFTER_READY_MS_MAX)));
    }
    let _ = child.kill(); // SIGKILL; fails only if it already exited.
    let status = child.wait().expect("wait writer");
    reader.join().expect("reader thread");
    lines.extend(rx.try_iter());
    use std::os::unix::process::ExitStatusExt;
    let killed = status.signal() == Some(libc::SIGKILL);
    let finished = status.success() && lines.last().is_some_and(|l| l == "DONE");
    let failures: Vec<&String> = lines.iter().filter(|l| l.starts_with("FAIL")).collect();
    assert!(
        (killed || finished) && failures.is_empty(),
        "writer ended with {status}: {failures:?}\n{}",
        stderr_of(stderr_path)
    );
    (lines, killed)
}

fn stderr_of(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Copies the segment files once they stopped changing, so the parent's
/// recovery leaves the crashed directory for the next writer to recover
/// itself. Writes the killed writer had in flight in io_uring can still land
/// after it was reaped, so a copy taken too early would be an earlier state
/// than the one the next writer finds.
fn copy_settled(from: &Path, to: &Path) {
    for _ in 0..SETTLE_TRIES_MAX {
        let _ = std::fs::remove_dir_all(to);
        std::fs::create_dir_all(to).expect("copy dir");
        let copied = segment_images(from);
        for (name, bytes) in &copied {
            std::fs::write(to.join(name), bytes).expect("copy segment");
        }
        std::thread::sleep(SETTLE_WAIT);
        if segment_images(from) == copied {
            return;
        }
        eprintln!("wal_crash: segments changed after the writer was reaped; copying again");
    }
    panic!("segments in {} still changing", from.display());
}

/// Every segment file's bytes (none if the writer died before creating
/// the directory).
fn segment_images(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let Ok(listing) = std::fs::read_dir(dir) else {
        return BTreeMap::new();
    };
    let mut out = BTreeMap::new();
    for entry in listing {
        let entry = entry.expect("list");
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".wal") {
            out.insert(name, std::fs::read(entry.path()).expect("read segment"));
        }
    }
    out
}

/// Recovers the WAL in `dir`, checks it against `model`, and returns the
/// model updated to what was recovered (which must never change later).
async fn check_recovered(
    dir: PathBuf,
    gen: u64,
    mut model: BTreeMap<u64, GroupModel>,
) -> BTreeMap<u64, GroupModel> {
    let wal = Wal::open_dir(&dir, crash_opts())
        .await
        .unwrap_or_else(|e| panic!("gen {gen}: recovery after SIGKILL failed: {e}"));
    for g in wal.groups() {
        model.entry(g.0).or_default();
    }
    for (&g, m) in model.iter_mut() {
        check_group(&wal, gen, g, m).await;
    }
    wal.close().await.expect("close");
    model
}

async fn check_group(wal: &Wal, gen: u64, g: u64, m: &mut GroupModel) {
    let ctx = format!("gen {gen} group {g}");
    let Some(info) = wal.group(GroupId(g)) else {
        assert!(
            m.entries.is_empty() && m.last_min == 0,
            "{ctx}: group lost, model {m:?}"
        );
        return;
    };
    let (first, last) = (info.first_index.0, info.last_index.0);
    assert!(
        last >= m.last_min,
        "{ctx}: log ends at {last}, {} was acknowledged",
        m.last_min
    );
    assert!(
        first > m.compact_acked,
        "{ctx}: first index {first}, compaction to {} acknowledged",
        m.compact_acked
    );
    assert!(
        first <= m.compact_intended + 1,
        "{ctx}: first index {first}, compaction only up to {}",
        m.compact_intended
    );
    if m.commit_acked > 0 {
        let hs = info
            .hard_state
            .unwrap_or_else(|| panic!("{ctx}: hard state lost"));
        assert!(
            hs.commit.0 >= m.commit_acked,
            "{ctx}: commit {} < acknowledged {}",
            hs.commit,
            m.commit_acked
        );
        assert!(
            hs.commit.0 <= last,
            "{ctx}: commit {} beyond log end {last}",
            hs.commit
        );
    }
    let entries = wal
        .entries(GroupId(g), LogIndex(first), LogIndex(last + 1))
        .await
        .unwrap_or_else(|e| panic!("{ctx}: reading {first}..={last}: {e}"));
    assert_eq!(entries.len() as u64, last + 1 - first, "{ctx}: entries");
    let mut recovered = BTreeMap::new();
    for e in entries {
        let (index, term) = (e.index.0, e.term.0);
        assert!(
            term >= 1 && term <= gen + 1,
            "{ctx}: index {index} has term {term}"
        );
        assert!(
            e.payload == payload(term - 1, g, index),
            "{ctx}: index {index} payload damaged"
        );
        if let Some(&(t, h)) = m.entries.get(&index) {
            assert_eq!(
                (t, h),
                (term, hash(&e.payload)),
                "{ctx}: index {index} changed"
            );
        }
        recovered.insert(index, (term, hash(&e.payload)));
    }
    if let Some((&lost, _)) = m.entries.range(..first).next_back() {
        assert!(
            lost <= m.compact_intended,
            "{ctx}: entry {lost} gone without compaction"
        );
    }
    m.entries = recovered;
    m.last_min = last;
    m.compact_acked = first - 1;
    m.compact_intended = first - 1;
    m.commit_acked = info.hard_state.map_or(0, |h| h.commit.0);
    m.recovered = Some((first, last));
}

// ---------------------------------------------------------------- GC

/// The smallest case the kill test found, without a kill: one group appends
/// and compacts lazily while `purge` runs. The rewrite copies the group's
/// entries in segments `<= cut` forward; its entries in segments between
/// the cut and the head must survive the segment deletion that follows.
#[test]
fn purge_keeps_entries_of_a_rewritten_busy_group() {
    run(async {
        let io = engine::wal::SimIo::new();
        let opts = WalOptions {
            segments_soft_max: 4,
            ..small_opts()
        };
        let wal = Wal::open(io.clone(), opts.clone()).await.expect("open");
        let mut model = LogModel::default();
        for round in 1..=120u64 {
            let mut batch = Batch::new();
            let index = model.last(1) + 1;
            model.push(&mut batch, 1, index, 1, 1000);
            if round % 20 == 0 && index > 90 {
                model.compact(&mut batch, 1, index - 90);
            }
            wal.append(&batch).await.expect("append");
            let report = wal.purge().await.expect("purge");
            let info = wal.group(GroupId(1)).expect("group 1");
            let hi = LogIndex(info.last_index.0 + 1);
            if let Err(e) = wal.entries(GroupId(1), info.first_index, hi).await {
                panic!("round {round}, after {report:?}: {e}");
            }
        }
        check(&wal, &model).await;
        wal.close().await.expect("close");
        let wal = Wal::open(io, opts).await.expect("reopen");
        check(&wal, &model).await;
    });
}
