//! One core of the `wal` workload: its own glommio executor and its own WAL,
//! a few writer tasks that each build a batch, submit it and wait until it is
//! durable, and a compactor that keeps the log (and the disk it takes) short,
//! as Raft snapshots would.
//!
//! Writers of a core share one cursor over the core's groups: a batch is
//! built and submitted without an await in between, so per-group indices
//! reach the log in order whichever writer carries them.

use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use engine::wal::{Batch, GroupId, LogIndex, SyncMode, Term, Wal, WalError, WalOptions, WalStats};
use hdrhistogram::Histogram;

use crate::outcome::latency_histogram;
use crate::progress::Progress;

/// Every group's entries carry this term: no elections here.
const TERM: Term = Term(1);
/// How often the compactor looks at the log.
const COMPACT_TICK: Duration = Duration::from_millis(10);
/// How long a fresh WAL may take to create its first segments.
const WARM_UP_MAX: Duration = Duration::from_secs(60);
/// Segments a fresh WAL prepares before the first write (head and next).
const WARM_SEGMENTS: u64 = 2;

/// The shape of one core's load.
#[derive(Clone, Debug)]
pub struct CoreLoad {
    pub core: usize,
    /// The CPU the executor is pinned to.
    pub cpu: usize,
    pub dir: PathBuf,
    /// The groups this core owns; never empty.
    pub groups: Vec<u64>,
    pub payload_bytes: usize,
    pub groups_per_batch: usize,
    pub entries_per_group: usize,
    pub writers: usize,
    pub duration: Duration,
    pub opts: WalOptions,
    pub io_memory_bytes: usize,
    pub spin_before_park: Duration,
    /// The compactor compacts at least this often, and also whenever the log
    /// rolled to a new segment, so only a few segments are ever on disk.
    /// Zero: never.
    pub compact_every: Duration,
}

/// Where the cores meet: all start the measured window together and all
/// stop before anyone closes its WAL (closing is not measured).
pub struct Meet {
    pub start: Barrier,
    pub end: Barrier,
}

/// What one core measured inside the window.
pub struct CoreTally {
    /// When this core's window began (its deadline is this plus the
    /// duration), so the window is never measured shorter than it ran.
    pub started: Instant,
    pub entries: u64,
    pub batches: u64,
    pub payload_bytes: u64,
    /// Submit to durable, per batch, µs.
    pub latency_us: Histogram<u64>,
    /// Time spent filling batches and in `submit` (encode: rkyv, CRC, copy).
    pub build_ns: u64,
    pub submit_ns: u64,
    /// WAL counters over the window.
    pub stats: WalStats,
    pub compactions: u64,
    pub segments_on_disk_max: u64,
}

/// Runs one core to completion on the calling thread. Always passes both
/// barriers of `meet`, also when it fails, so other cores never hang.
pub fn run_core(load: CoreLoad, meet: &Meet, progress: Progress) -> Result<CoreTally, String> {
    let executor = glommio::LocalExecutorBuilder::new(glommio::Placement::Fixed(load.cpu))
        .name(&format!("wal-core-{}", load.core))
        .io_memory(load.io_memory_bytes)
        .spin_before_park(load.spin_before_park)
        .make();
    let executor = match executor {
        Ok(e) => e,
        Err(e) => {
            meet.start.wait();
            meet.end.wait();
            return Err(format!("core {}: starting the executor: {e}", load.core));
        }
    };
    executor.run(core_main(load, meet, progress))
}

async fn core_main(load: CoreLoad, meet: &Meet, progress: Progress) -> Result<CoreTally, String> {
    let core = load.core;
    let opened = open_warm(&load).await;
    meet.start.wait();
    let measured = match &opened {
        Ok(wal) => measure(&load, wal, &progress).await,
        Err(e) => Err(e.clone()),
    };
    meet.end.wait();
    let wal = opened?;
    let closed = wal
        .close()
        .await
        .map_err(|e| format!("core {core}: closing the WAL: {e}"));
    let tally = measured?;
    closed?;
    Ok(tally)
}

/// Opens the core's WAL and waits until its first segments exist, so the
/// window measures writes, not file creation.
async fn open_warm(load: &CoreLoad) -> Result<Wal, String> {
    let core = load.core;
    let wal = Wal::open_dir(&load.dir, load.opts.clone())
        .await
        .map_err(|e| {
            format!(
                "core {core}: opening the WAL in {}: {e}",
                load.dir.display()
            )
        })?;
    let started = Instant::now();
    while wal.stats().segments_created < WARM_SEGMENTS {
        if started.elapsed() > WARM_UP_MAX {
            return Err(format!(
                "core {core}: the WAL did not prepare its first segments in {WARM_UP_MAX:?}"
            ));
        }
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
    Ok(wal)
}

/// The round-robin position over a core's groups and each group's last index.
struct Cursor {
    groups: Vec<u64>,
    last_index: Vec<u64>,
    next: usize,
}

impl Cursor {
    fn new(groups: Vec<u64>) -> Cursor {
        assert!(!groups.is_empty(), "a core owns at least one group");
        let last_index = vec![0; groups.len()];
        Cursor {
            groups,
            last_index,
            next: 0,
        }
    }

    /// Refills `batch` with `entries_per_group` consecutive entries for each
    /// of the next `groups_per_batch` groups.
    fn fill(&mut self, batch: &mut Batch, load: &CoreLoad, payload: &[u8]) {
        batch.clear();
        for _ in 0..load.groups_per_batch {
            let slot = self.next;
            self.next = (self.next + 1) % self.groups.len();
            let group = GroupId(self.groups[slot]);
            let first = self.last_index[slot] + 1;
            for index in first..first + load.entries_per_group as u64 {
                batch.push_entry(group, TERM, LogIndex(index), payload);
            }
            self.last_index[slot] += load.entries_per_group as u64;
        }
        debug_assert_eq!(
            batch.entry_count(),
            load.groups_per_batch * load.entries_per_group
        );
    }

    /// Refills `batch` with a compaction of every group up to its index in
    /// `mark` (an earlier `last_index`); returns the current `last_index`.
    fn compactions(&self, mark: &[u64], batch: &mut Batch) -> Vec<u64> {
        assert_eq!(mark.len(), self.groups.len(), "a mark covers every group");
        batch.clear();
        for ((&group, &index), &last) in self.groups.iter().zip(mark).zip(&self.last_index) {
            assert!(index <= last, "a group's index only grows");
            if index > 0 {
                batch.compact(GroupId(group), LogIndex(index));
            }
        }
        self.last_index.clone()
    }
}

struct Shared {
    load: CoreLoad,
    wal: Wal,
    cursor: RefCell<Cursor>,
    payload: Vec<u8>,
    deadline: Instant,
    progress: Progress,
    /// Set once every writer passed the deadline: the compactor stops.
    writers_done: Cell<bool>,
}

struct WriterTally {
    entries: u64,
    batches: u64,
    latency_us: Histogram<u64>,
    build_ns: u64,
    submit_ns: u64,
}

struct CompactorTally {
    compactions: u64,
    segments_on_disk_max: u64,
}

async fn measure(load: &CoreLoad, wal: &Wal, progress: &Progress) -> Result<CoreTally, String> {
    let before = wal.stats();
    let started = Instant::now();
    let shared = Rc::new(Shared {
        load: load.clone(),
        wal: wal.clone(),
        cursor: RefCell::new(Cursor::new(load.groups.clone())),
        payload: payload(load.payload_bytes, load.core as u64),
        deadline: started + load.duration,
        progress: progress.clone(),
        writers_done: Cell::new(false),
    });
    let compactor = glommio::spawn_local(compactor(shared.clone()));
    let writers: Vec<_> = (0..load.writers)
        .map(|_| glommio::spawn_local(writer(shared.clone())))
        .collect();
    let mut results = Vec::with_capacity(writers.len());
    for w in writers {
        results.push(w.await);
    }
    shared.writers_done.set(true);
    let compacted = compactor.await;
    let stats = delta(&before, &wal.stats());

    let core = load.core;
    let mut tally = CoreTally {
        started,
        entries: 0,
        batches: 0,
        payload_bytes: 0,
        latency_us: latency_histogram(),
        build_ns: 0,
        submit_ns: 0,
        stats,
        compactions: 0,
        segments_on_disk_max: 0,
    };
    for r in results {
        let w = r.map_err(|e| format!("core {core}: {e}"))?;
        tally.entries += w.entries;
        tally.batches += w.batches;
        tally.build_ns += w.build_ns;
        tally.submit_ns += w.submit_ns;
        tally
            .latency_us
            .add(&w.latency_us)
            .expect("histograms of one shape add");
    }
    tally.payload_bytes = tally.entries * load.payload_bytes as u64;
    let c = compacted.map_err(|e| format!("core {core}: compacting: {e}"))?;
    tally.compactions = c.compactions;
    tally.segments_on_disk_max = c.segments_on_disk_max;
    Ok(tally)
}

/// Build, submit, wait until durable, repeat until the deadline.
async fn writer(shared: Rc<Shared>) -> Result<WriterTally, WalError> {
    let entries_per_batch = (shared.load.groups_per_batch * shared.load.entries_per_group) as u64;
    let mut batch = Batch::new();
    let mut tally = WriterTally {
        entries: 0,
        batches: 0,
        latency_us: latency_histogram(),
        build_ns: 0,
        submit_ns: 0,
    };
    while Instant::now() < shared.deadline {
        let t_build = Instant::now();
        shared
            .cursor
            .borrow_mut()
            .fill(&mut batch, &shared.load, &shared.payload);
        let t_submit = Instant::now();
        let seq = shared.wal.submit(&batch)?;
        let t_submitted = Instant::now();
        shared.wal.wait_durable(seq).await?;
        let latency = t_submit.elapsed();
        tally
            .latency_us
            .saturating_record(latency.as_micros() as u64);
        tally.build_ns += (t_submit - t_build).as_nanos() as u64;
        tally.submit_ns += (t_submitted - t_submit).as_nanos() as u64;
        tally.entries += entries_per_batch;
        tally.batches += 1;
        shared.progress.add(entries_per_batch);
    }
    Ok(tally)
}

/// Compacts every group of the core up to what it had submitted one round
/// earlier, then purges: segments no group needs are deleted, so the disk in
/// use stays a few segments whatever the run's length.
async fn compactor(shared: Rc<Shared>) -> Result<CompactorTally, WalError> {
    let wal = &shared.wal;
    let mut tally = CompactorTally {
        compactions: 0,
        segments_on_disk_max: 0,
    };
    let mut batch = Batch::new();
    let mut mark = shared.cursor.borrow().last_index.clone();
    let mut last_round = Instant::now();
    let mut last_head = wal.segment_range().1;
    let every = shared.load.compact_every;
    while !shared.writers_done.get() {
        glommio::timer::sleep(COMPACT_TICK).await;
        let (first, head) = wal.segment_range();
        tally.segments_on_disk_max = tally.segments_on_disk_max.max(head.0 + 1 - first.0);
        if every.is_zero() || (head == last_head && last_round.elapsed() < every) {
            continue;
        }
        let now = shared.cursor.borrow().compactions(&mark, &mut batch);
        if !batch.is_empty() {
            wal.append(&batch).await?;
            wal.purge().await?;
            tally.compactions += 1;
        }
        mark = now;
        last_round = Instant::now();
        last_head = head;
    }
    Ok(tally)
}

/// Counters between two readings.
fn delta(before: &WalStats, after: &WalStats) -> WalStats {
    WalStats {
        records: after.records - before.records,
        writes: after.writes - before.writes,
        syncs: after.syncs - before.syncs,
        bytes_written: after.bytes_written - before.bytes_written,
        segments_created: after.segments_created - before.segments_created,
        segments_removed: after.segments_removed - before.segments_removed,
        cache_misses: after.cache_misses - before.cache_misses,
        segment_prepares_refused: after.segment_prepares_refused - before.segment_prepares_refused,
    }
}

/// A deterministic payload (xorshift64): distinct per core, not compressible.
fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ (seed + 1);
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// The WAL options of the run: the engine's defaults with the given segment
/// size and sync mode.
pub fn wal_options(segment_size_bytes: u64, sync_mode: SyncMode) -> WalOptions {
    WalOptions {
        segment_size_bytes,
        sync_mode,
        ..WalOptions::default()
    }
}
