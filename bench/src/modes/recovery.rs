//! The `recovery` mode: how long a node takes to come back with a large WAL.
//! It writes through a single-node cluster until the WAL holds `--wal-bytes`
//! of records, stops the node, drops the WAL files from the page cache, then
//! times the restart until every group answers a linearizable read. See
//! shared/BENCH.md.
//!
//! Compaction is switched off (`compact_every_entries` set beyond reach) so
//! the WAL really holds what was written: with the default the node would
//! snapshot every group and drop the segments, and a large WAL would never
//! exist. The node's own segment purge still runs and may copy live entries
//! forward; it never drops them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use engine::client::proto::{Consistency, Op, Reply, Request};
use engine::client::{ClusterMap, Connection};
use engine::node::{core_of, Cluster, NodeConfig};
use engine::wal::index::Index;
use engine::wal::scan::{scan_wal, DirSource};
use engine::wal::RecordLoc;

use crate::cluster::TICK_MS;
use crate::format;
use crate::load::{key_bytes, Load, LoadShape};
use crate::outcome::{Outcome, RunContext};
use crate::progress::{Plan, Progress};

#[derive(clap::Args, Debug, Clone)]
pub struct RecoveryArgs {
    /// Bytes of WAL records to write before the restart (the WAL of a
    /// --data-dir kept from an earlier run counts).
    #[arg(long, default_value = "1GiB", value_parser = crate::args::parse_bytes)]
    pub wal_bytes: u64,
    /// Raft groups of the node.
    #[arg(long, default_value_t = 1000)]
    pub groups: u64,
    /// Bytes of each written value.
    #[arg(long, default_value = "4KiB", value_parser = crate::args::parse_bytes)]
    pub payload: u64,
    /// Executor cores (and WALs) of the node.
    #[arg(long, default_value_t = 1)]
    pub cores: u32,
    /// Writes in flight while the WAL is filled.
    #[arg(long, default_value_t = 256)]
    pub clients: usize,
    /// Keys per group that writes overwrite (keeps the state machine small).
    #[arg(long, default_value_t = 16)]
    pub keys_per_group: u64,
    /// Do not fsync while filling the WAL (faster on slow disks; the replay
    /// reads the same records either way).
    #[arg(long)]
    pub no_sync: bool,
    /// Longest wait, once the restarted node has opened (WAL read, groups
    /// rebuilt), for every group to serve.
    #[arg(long, default_value = "60s", value_parser = crate::args::parse_duration)]
    pub serve_timeout: Duration,
    /// After the timed restart, open the WAL alone and read every group's
    /// entries back, timing both (where the replay time goes); the page
    /// cache is dropped again first.
    #[arg(long)]
    pub breakdown: bool,
}

/// `compact_every_entries` of this mode: never reached, so nothing compacts.
pub const COMPACT_NEVER_ENTRIES: u64 = 1 << 40;
/// The writing stops with an error when no write was acknowledged this long.
const WRITE_STALL_MAX: Duration = Duration::from_secs(30);
/// Pause between rounds of reads to the restarted node.
const SERVE_RETRY_INTERVAL: Duration = Duration::from_millis(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

pub fn run(args: &RecoveryArgs, ctx: &RunContext) -> anyhow::Result<Outcome> {
    anyhow::ensure!(
        args.groups >= 1 && args.cores >= 1 && args.clients >= 1,
        "--groups, --cores and --clients must be positive"
    );
    anyhow::ensure!(
        (8..=1 << 20).contains(&args.payload),
        "--payload must be within 8 B..=1 MiB"
    );
    let sync = !args.no_sync;
    let mut out = Outcome::new("recovery");
    out.config("nodes", 1);
    out.config("groups", args.groups);
    out.config("cores", args.cores);
    out.config("payload_bytes", args.payload);
    out.config("clients", args.clients as u64);
    out.config("keys_per_group", args.keys_per_group);
    out.config("wal_bytes_target", args.wal_bytes);
    out.config("compact_every_entries", COMPACT_NEVER_ENTRIES);
    out.config("tick_ms", TICK_MS);
    out.config("sync", sync);

    let dir = ctx.open_data_dir()?;
    let node_dir = dir.path().join("node-1");
    let found = scan_node_wal(&node_dir)?;
    if found.record_bytes > 0 {
        out.say(format!(
            "found a WAL of {} in {}",
            format::bytes(found.record_bytes),
            node_dir.display()
        ));
    }
    if found.record_bytes < args.wal_bytes {
        fill_wal(args, ctx, dir.path(), found.record_bytes, sync, &mut out)?;
    }
    // Cold, like the scan that opens the WAL: the engine's scan and index
    // over every segment file, timed.
    evict_wal_from_page_cache(&node_dir);
    let scan_started = Instant::now();
    let wal = scan_node_wal(&node_dir)?;
    let scan_s = scan_started.elapsed().as_secs_f64();
    anyhow::ensure!(
        wal.record_bytes > 0,
        "the WAL in {} is empty",
        node_dir.display()
    );
    if wal.record_bytes < args.wal_bytes {
        out.say(format!(
            "warning: the WAL holds {} of records, less than the {} asked for",
            format::bytes(wal.record_bytes),
            format::bytes(args.wal_bytes)
        ));
    }
    let evicted = evict_wal_from_page_cache(&node_dir);

    ctx.progress
        .phase("replaying", "groups", Plan::Units(args.groups));
    let restart = restart(args, dir.path(), &ctx.progress)?;
    report(&mut out, &wal, scan_s, &restart, evicted);

    if args.breakdown {
        let evicted = evict_wal_from_page_cache(&node_dir);
        ctx.progress
            .phase("breakdown", "groups", Plan::Units(args.groups));
        let phases = breakdown(args, &node_dir, &ctx.progress)?;
        report_breakdown(&mut out, &wal, &phases, evicted);
    }
    drop(dir);
    Ok(out)
}

/// Node configs of this mode: one node, a free port run, no compaction.
fn node_config(args: &RecoveryArgs, data_dir: &Path, sync: bool) -> anyhow::Result<NodeConfig> {
    let mut peers = BTreeMap::new();
    peers.insert(
        1,
        SocketAddr::from(([127, 0, 0, 1], engine::loopback::free_port_runs(1, args.cores as u16)?[0])),
    );
    Ok(NodeConfig {
        node_id: 1,
        peers,
        client_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        data_dir: data_dir.to_path_buf(),
        cores: args.cores,
        groups: args.groups,
        cluster_id: 0x4D59_5249_4144,
        tick_ms: TICK_MS,
        sync,
        pin_cores: false,
        compact_every_entries: COMPACT_NEVER_ENTRIES,
        log_entries_in_memory_max: COMPACT_NEVER_ENTRIES,
        client_connections_max: engine::node::CLIENT_CONNECTIONS_MAX_DEFAULT,
        client_hello_timeout_ms: engine::node::CLIENT_HELLO_TIMEOUT_MS_DEFAULT,
        stop_drain_ms: engine::node::STOP_DRAIN_MS_DEFAULT,
        balance_leaders: true,
        wal_segment_size_bytes: engine::wal::limits::SEGMENT_SIZE_BYTES_DEFAULT,
        wal_rewrite_after_segments: None,
    })
}

fn start_node(
    args: &RecoveryArgs,
    data_dir: &Path,
    sync: bool,
) -> anyhow::Result<(Cluster, ClusterMap)> {
    let cfg = node_config(args, data_dir, sync)?;
    let cluster = Cluster::start(vec![cfg], Some(args.cores)).context("starting the node")?;
    let map = ClusterMap {
        nodes: [(1, cluster.client_addrs(1))].into_iter().collect(),
    };
    Ok((cluster, map))
}

/// Writes until the acknowledged payload (plus the WAL found) reaches the
/// target: every acknowledged entry is in the WAL with its payload and
/// more, so the WAL then holds at least the target.
fn fill_wal(
    args: &RecoveryArgs,
    ctx: &RunContext,
    data_dir: &Path,
    found_bytes: u64,
    sync: bool,
    out: &mut Outcome,
) -> anyhow::Result<()> {
    ctx.progress
        .phase("writing the WAL", "bytes", Plan::Units(args.wal_bytes));
    let (cluster, map) = start_node(args, data_dir, sync)?;
    let shape = LoadShape {
        groups: args.groups,
        clients: args.clients,
        payload_bytes: args.payload as usize,
        read_ratio: 0.0,
        keys_per_group: args.keys_per_group.max(1),
        request_timeout: REQUEST_TIMEOUT,
    };
    // The load counts acknowledged writes on its own progress counter.
    let acked = Progress::hidden();
    let load = Load::start(&map, &shape, acked.clone())?;
    load.begin_measuring();
    let started = Instant::now();
    let (mut last_acked, mut last_change) = (0, Instant::now());
    let stalled = loop {
        let done = acked.done();
        let bytes = found_bytes + done * args.payload;
        ctx.progress.tick(bytes);
        if bytes >= args.wal_bytes {
            break false;
        }
        if done != last_acked {
            (last_acked, last_change) = (done, Instant::now());
        } else if last_change.elapsed() > WRITE_STALL_MAX {
            break true;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let report = load.finish();
    let write_s = started.elapsed().as_secs_f64();
    let metrics = cluster.metrics(1);
    cluster
        .shutdown()
        .context("stopping the node after writing")?;
    anyhow::ensure!(
        !stalled,
        "no write was acknowledged for {} s while filling the WAL ({} errors)",
        WRITE_STALL_MAX.as_secs(),
        report.errors
    );
    out.set("write_phase_s", write_s);
    out.set("write_ops", report.writes);
    out.set("write_errors", report.errors);
    out.set(
        "write_mib_per_s",
        (report.writes * args.payload) as f64 / write_s.max(1e-9) / (1 << 20) as f64,
    );
    out.set("write_fsyncs", metrics.wal_syncs);
    out.say(format!(
        "writing     {} writes of {} in {:.1} s ({:.0} MiB/s, {} errors, {} fsyncs)",
        format::count(report.writes),
        format::bytes(args.payload),
        write_s,
        (report.writes * args.payload) as f64 / write_s.max(1e-9) / (1 << 20) as f64,
        report.errors,
        metrics.wal_syncs
    ));
    Ok(())
}

/// What the WAL directories of one node hold, read with the engine's own
/// scan and index (as recovery reads them).
#[derive(Debug, Default, Clone)]
struct WalImage {
    /// Segment files, used or preallocated.
    segments: u64,
    /// Bytes of every file in the WAL directories (the segments, and a
    /// segment being preallocated when the node stopped): opening the WAL
    /// reads every segment file whole.
    file_bytes: u64,
    records: u64,
    /// Bytes of valid records (headers, bodies, padding): `wal_bytes`.
    record_bytes: u64,
    entries: u64,
    payload_bytes: u64,
    /// Entries still live in the index (a rewrite leaves older copies behind
    /// until their segment goes).
    live_entries: u64,
    /// Bytes the group rebuild reads back (`Wal::replay_entries`): every
    /// segment holding a live entry, read whole once.
    rebuild_read_bytes: u64,
    /// Segments the rebuild reads (one read each).
    rebuild_reads: u64,
}

fn scan_node_wal(node_dir: &Path) -> anyhow::Result<WalImage> {
    let mut image = WalImage::default();
    for wal_dir in wal_dirs(node_dir)? {
        let mut index = Index::default();
        let src = DirSource {
            dir: wal_dir.clone(),
        };
        let report = scan_wal(&src, |segment, record, batch| {
            let loc = RecordLoc {
                segment,
                offset_bytes: record.offset_bytes,
            };
            index.apply(batch, loc, record.header.total_len());
            image.records += 1;
            image.record_bytes += record.header.total_len();
            image.entries += batch.entry_count() as u64;
            image.payload_bytes += batch.entries().map(|e| e.payload.len() as u64).sum::<u64>();
            Ok(())
        })
        .with_context(|| format!("scanning the WAL in {}", wal_dir.display()))?;
        image.segments += (report.used.len() + report.unused.len()) as u64;
        for entry in std::fs::read_dir(&wal_dir)? {
            let meta = entry?.metadata()?;
            if meta.is_file() {
                image.file_bytes += meta.len();
            }
        }
        let mut live_segments = std::collections::BTreeSet::new();
        for (_, log) in index.logs() {
            image.live_entries += log.entry_count();
            live_segments.extend(log.spans.iter().map(|s| s.segment));
        }
        for summary in report.used.iter().filter(|s| live_segments.contains(&s.segment)) {
            image.rebuild_read_bytes += summary.file_bytes;
            image.rebuild_reads += 1;
        }
    }
    Ok(image)
}

/// The `core-*/wal` directories of a node (none if it never ran).
fn wal_dirs(node_dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if !node_dir.exists() {
        return Ok(Vec::new());
    }
    let mut dirs = Vec::new();
    for entry in
        std::fs::read_dir(node_dir).with_context(|| format!("listing {}", node_dir.display()))?
    {
        let path = entry?.path();
        let is_core = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("core-"));
        if is_core && path.join("wal").is_dir() {
            dirs.push(path.join("wal"));
        }
    }
    dirs.sort();
    Ok(dirs)
}

/// Asks the kernel to drop the cached pages of every WAL and snapshot file
/// of the node, so the restart reads from the disk as after a crash (the
/// node writes with O_DIRECT, so only our own scan cached them). Returns
/// whether every file was advised.
fn evict_wal_from_page_cache(node_dir: &Path) -> bool {
    let Ok(cores) = std::fs::read_dir(node_dir) else {
        return false;
    };
    let mut all = true;
    for core in cores.flatten() {
        for sub in ["wal", "snapshots"] {
            let Ok(files) = std::fs::read_dir(core.path().join(sub)) else {
                continue;
            };
            for file in files.flatten() {
                let Ok(f) = std::fs::File::open(file.path()) else {
                    all = false;
                    continue;
                };
                // SAFETY: a valid open descriptor; offset 0 and length 0 mean the whole file.
                let rc =
                    unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
                all &= rc == 0;
            }
        }
    }
    all
}

/// The timed restart.
struct Restart {
    /// `Cluster::start` returned: WAL scanned, every group rebuilt.
    open_s: f64,
    /// The node reported a leader for every group (tick resolution).
    elected_s: Option<f64>,
    first_serve_s: f64,
    /// Every group answered a linearizable read: `replay_s`.
    all_serve_s: f64,
    rss_after_bytes: u64,
}

fn restart(args: &RecoveryArgs, data_dir: &Path, progress: &Progress) -> anyhow::Result<Restart> {
    let cfg = node_config(args, data_dir, !args.no_sync)?;
    let started = Instant::now();
    let cluster = Cluster::start(vec![cfg], Some(args.cores)).context("restarting the node")?;
    let open_s = started.elapsed().as_secs_f64();
    let addrs = cluster.client_addrs(1);
    let served = serve_every_group(&cluster, &addrs, args, started, progress);
    let rss_after_bytes = super::idle::vm_status_bytes("VmRSS:").unwrap_or(0);
    let stopped = cluster.shutdown();
    let (first_serve_s, all_serve_s, elected_s) = served?;
    stopped.context("stopping the restarted node")?;
    Ok(Restart {
        open_s,
        elected_s,
        first_serve_s,
        all_serve_s,
        rss_after_bytes,
    })
}

/// Sends a linearizable read to every group (pipelined, one connection per
/// core) until each has answered with a value; returns seconds since
/// `started` until the first and the last answer, and until the node
/// counted a leader for every group.
fn serve_every_group(
    cluster: &Cluster,
    addrs: &[SocketAddr],
    args: &RecoveryArgs,
    started: Instant,
    progress: &Progress,
) -> anyhow::Result<(f64, f64, Option<f64>)> {
    let cores = addrs.len() as u32;
    let mut pending: Vec<Vec<u64>> = (0..cores)
        .map(|k| {
            (1..=args.groups)
                .filter(|&g| core_of(g, cores) == k)
                .collect()
        })
        .collect();
    let mut conns: Vec<Option<Connection>> = (0..cores).map(|_| None).collect();
    let (mut first, mut elected) = (None, None);
    let mut served = 0u64;
    let mut next_id = 1u64;
    let key = key_bytes(0);
    let opened = Instant::now();
    while served < args.groups {
        anyhow::ensure!(
            opened.elapsed() < args.serve_timeout,
            "{} of {} groups served {} s after the node opened",
            served,
            args.groups,
            args.serve_timeout.as_secs()
        );
        if elected.is_none() && cluster.metrics(1).leaders >= args.groups {
            elected = Some(started.elapsed().as_secs_f64());
        }
        for (core, groups) in pending.iter_mut().enumerate() {
            if groups.is_empty() {
                continue;
            }
            let conn = match &mut conns[core] {
                Some(c) => c,
                slot => match Connection::connect(addrs[core], REQUEST_TIMEOUT) {
                    Ok(c) => slot.insert(c),
                    Err(_) => continue,
                },
            };
            match read_round(conn, groups, &key, &mut next_id) {
                Ok(answered) => {
                    if answered > 0 && first.is_none() {
                        first = Some(started.elapsed().as_secs_f64());
                    }
                    served += answered;
                    progress.tick(served);
                }
                Err(_) => conns[core] = None,
            }
        }
        if served < args.groups {
            std::thread::sleep(SERVE_RETRY_INTERVAL);
        }
    }
    let all = started.elapsed().as_secs_f64();
    // The leader count is published once per tick: give it two to catch up.
    let published = Instant::now();
    while elected.is_none() && published.elapsed() < Duration::from_millis(2 * TICK_MS + 20) {
        if cluster.metrics(1).leaders >= args.groups {
            elected = Some(started.elapsed().as_secs_f64());
        }
        std::thread::sleep(SERVE_RETRY_INTERVAL);
    }
    Ok((first.unwrap_or(all), all, elected))
}

/// One pipelined round: a read of each group in `groups`; removes those
/// answered with a value and returns how many were.
fn read_round(
    conn: &mut Connection,
    groups: &mut Vec<u64>,
    key: &Bytes,
    next_id: &mut u64,
) -> Result<u64, engine::client::ConnectionError> {
    let first_id = *next_id;
    for &group in groups.iter() {
        conn.queue(&Request {
            id: *next_id,
            group,
            op: Op::Get {
                key: key.clone(),
                consistency: Consistency::Linearizable,
            },
        });
        *next_id += 1;
    }
    conn.flush()?;
    let mut answered = Vec::new();
    let mut replies = 0;
    let mut batch = Vec::new();
    while replies < groups.len() {
        batch.clear();
        conn.recv_batch(&mut batch)?;
        for resp in &batch {
            let Some(slot) = resp
                .id
                .checked_sub(first_id)
                .filter(|&s| s < groups.len() as u64)
            else {
                continue;
            };
            replies += 1;
            if matches!(resp.reply, Reply::Value(_)) {
                answered.push(groups[slot as usize]);
            }
        }
    }
    let count = answered.len() as u64;
    groups.retain(|g| !answered.contains(g));
    Ok(count)
}

fn report(out: &mut Outcome, wal: &WalImage, scan_s: f64, r: &Restart, evicted: bool) {
    let mib = wal.record_bytes as f64 / (1 << 20) as f64;
    out.set("wal_bytes", wal.record_bytes);
    out.set("replay_s", r.all_serve_s);
    out.set("replay_mib_per_s", mib / r.all_serve_s.max(1e-9));
    out.set("open_s", r.open_s);
    out.set("elected_s", r.elected_s);
    out.set("first_serve_s", r.first_serve_s);
    out.set("wal_records", wal.records);
    out.set("wal_entries", wal.entries);
    out.set("wal_live_entries", wal.live_entries);
    out.set("wal_payload_bytes", wal.payload_bytes);
    out.set("wal_segments", wal.segments);
    out.set("wal_file_bytes", wal.file_bytes);
    out.set("rebuild_read_bytes", wal.rebuild_read_bytes);
    out.set("rebuild_reads", wal.rebuild_reads);
    out.set("wal_scan_s", scan_s);
    out.set("page_cache_dropped", evicted);
    out.set("rss_after_replay_bytes", r.rss_after_bytes);
    out.say(format!(
        "wal         {} in {} records, {} entries ({} live), {} segment files of {}",
        format::bytes(wal.record_bytes),
        format::count(wal.records),
        format::count(wal.entries),
        format::count(wal.live_entries),
        wal.segments,
        format::bytes(wal.file_bytes)
    ));
    out.say(format!(
        "cold scan   {scan_s:.3} s: the engine's WAL scan and index alone, outside the node (opening the WAL does this before rebuilding groups)"
    ));
    out.say(format!(
        "replay      {:.3} s to serve every group ({:.0} MiB/s of WAL){}",
        r.all_serve_s,
        mib / r.all_serve_s.max(1e-9),
        if evicted {
            ", WAL dropped from the page cache first"
        } else {
            ", page cache NOT dropped"
        }
    ));
    let elected = r.elected_s.map_or("-".to_owned(), |s| format!("{s:.3} s"));
    out.say(format!(
        "phases      node open (WAL scan + group rebuild) {:.3} s · first read +{:.3} s (each group, its only voter, elects itself at its first tick: {TICK_MS} ms) · every group +{:.3} s · leaders counted at {elected}",
        r.open_s,
        r.first_serve_s - r.open_s,
        r.all_serve_s - r.first_serve_s
    ));
    out.say(format!(
        "rebuild io  {} segment reads of {} in total ({:.1}x the WAL; the scan read it before)",
        format::count(wal.rebuild_reads),
        format::bytes(wal.rebuild_read_bytes),
        wal.rebuild_read_bytes as f64 / wal.record_bytes.max(1) as f64
    ));
}

/// Phases of recovery timed apart, outside the node.
struct Phases {
    wal_open_s: f64,
    read_entries_s: f64,
    entries: u64,
}

/// Opens each core's WAL on a glommio executor of its own, as the node
/// does, then reads back every group's entries as the group rebuild does.
fn breakdown(args: &RecoveryArgs, node_dir: &Path, progress: &Progress) -> anyhow::Result<Phases> {
    let mut phases = Phases {
        wal_open_s: 0.0,
        read_entries_s: 0.0,
        entries: 0,
    };
    let cores = args.cores;
    for (core, wal_dir) in wal_dirs(node_dir)?.into_iter().enumerate() {
        let groups: Vec<u64> = (1..=args.groups)
            .filter(|&g| core_of(g, cores) == core as u32)
            .collect();
        let progress = progress.clone();
        let executor = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .name("bench-breakdown")
            .io_memory(2 << 20);
        let (open_s, read_s, entries) = executor
            .spawn(move || async move {
                let opts = engine::wal::WalOptions {
                    sync_mode: engine::wal::SyncMode::NoSync,
                    ..Default::default()
                };
                let t = Instant::now();
                let (wal, kept) = engine::wal::Wal::open_dir_keeping(&wal_dir, opts, engine::node::shard::REPLAY_KEPT_BYTES_MAX)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                let open_s = t.elapsed().as_secs_f64();
                let t = Instant::now();
                // As the node's rebuild does: payloads kept by the open scan,
                // one pass over the rest.
                let mut copied: Vec<Vec<bytes::Bytes>> = vec![Vec::new(); groups.len()];
                let slot_of: std::collections::HashMap<u64, usize> =
                    groups.iter().enumerate().map(|(i, &g)| (g, i)).collect();
                let entries = wal
                    .replay_entries(kept, |e| {
                        if let Some(&i) = slot_of.get(&e.group.0) {
                            copied[i].push(e.payload);
                        }
                    })
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                progress.add(groups.len() as u64);
                drop(copied);
                let read_s = t.elapsed().as_secs_f64();
                wal.close().await.map_err(|e| anyhow::anyhow!("{e}"))?;
                anyhow::Ok((open_s, read_s, entries))
            })
            .map_err(|e| anyhow::anyhow!("starting an executor: {e}"))?
            .join()
            .map_err(|e| anyhow::anyhow!("the breakdown executor failed: {e}"))??;
        phases.wal_open_s += open_s;
        phases.read_entries_s += read_s;
        phases.entries += entries;
    }
    Ok(phases)
}

fn report_breakdown(out: &mut Outcome, wal: &WalImage, p: &Phases, evicted: bool) {
    out.set("breakdown_wal_open_s", p.wal_open_s);
    out.set("breakdown_read_entries_s", p.read_entries_s);
    out.set("breakdown_entries", p.entries);
    out.set("breakdown_page_cache_dropped", evicted);
    out.say(format!(
        "breakdown   WAL open (scan {} of files, index) {:.3} s · reading {} entries back ({} segment reads, {}) {:.3} s",
        format::bytes(wal.file_bytes),
        p.wal_open_s,
        format::count(p.entries),
        format::count(wal.rebuild_reads),
        format::bytes(wal.rebuild_read_bytes),
        p.read_entries_s
    ));
}
