//! Reused segment files: purge keeps retired segments as spares and the
//! preparer reuses them (zeroing only their header block), so a segment can
//! hold records of its earlier life after the log's end. Recovery must read
//! those as a torn tail, never as records, and never as corruption. The
//! simulated disk reuses spares step by step as `DmaIo` does, so seeded
//! power cuts also fall between the steps of a reuse and before a retire's
//! rename is durable (`WAL_RECYCLE_SEEDS` sets how many).

mod wal_common;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;

use engine::wal::scan::scan_wal;
use engine::wal::sim::{yield_now, SimRng};
use engine::wal::{Batch, GroupId, LogIndex, SegmentSeq, SimIo, Term, Wal, WalIo};
use wal_common::{check, disk_dir, gc_opts, payload, run, small_opts, write_rounds, Model};

const BLOCK_BYTES: u64 = 4096;

/// Writes until the head segment is `segment`.
async fn write_until_head<I: WalIo>(wal: &Wal<I>, model: &mut Model, segment: SegmentSeq) {
    for _ in 0..10_000 {
        if wal.segment_range().1 >= segment {
            return;
        }
        write_rounds(wal, model, 1, 700).await;
    }
    panic!("the head never reached segment {segment}");
}

/// Lets the preparer run until `segment` exists on the simulated disk.
async fn prepared(io: &SimIo, segment: SegmentSeq) {
    for _ in 0..1_000 {
        if io.durable_image(segment).is_some() {
            return;
        }
        glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
    }
    panic!("segment {segment} was never prepared");
}

/// A WAL whose segment 4 got, before its first write, the records of
/// segment 1 behind a zeroed header block, as a reused spare has.
async fn wal_over_stale_segment() -> (SimIo, Wal<SimIo>, Model, Vec<u8>) {
    let io = SimIo::new();
    let mut model = Model::default();
    let wal = Wal::open(io.clone(), small_opts()).await.expect("open");
    write_until_head(&wal, &mut model, SegmentSeq(3)).await;
    prepared(&io, SegmentSeq(4)).await;
    let stale = io.durable_image(SegmentSeq(1)).expect("segment 1");
    io.poke(SegmentSeq(4), BLOCK_BYTES, &stale[BLOCK_BYTES as usize..]);
    (io, wal, model, stale)
}

#[test]
fn old_records_after_the_end_of_a_reused_segment_are_a_torn_tail() {
    run(async {
        let (io, wal, mut model, _) = wal_over_stale_segment().await;
        // Into segment 4, several writes in, and a crash with old records
        // right after the last one.
        write_until_head(&wal, &mut model, SegmentSeq(4)).await;
        write_rounds(&wal, &mut model, 3, 300).await;
        drop(wal);
        let crashed = io.crash(0);
        let wal = Wal::open(crashed.clone(), small_opts())
            .await
            .expect("old records are no corruption");
        check(&wal, &model).await;
        write_rounds(&wal, &mut model, 40, 700).await;
        assert!(
            wal.segment_range().1 > SegmentSeq(4),
            "wrote past segment 4"
        );
        wal.close().await.expect("close");
        let wal = Wal::open(crashed, small_opts()).await.expect("reopen");
        check(&wal, &model).await;
        wal.close().await.expect("close");
    });
}

/// The last write tears so that some of its blocks keep the old records
/// that were there: the record it carried is lost (it was never
/// acknowledged), everything before it stays.
#[test]
fn a_torn_write_over_old_records_loses_only_its_own_record() {
    run(async {
        let (io, wal, mut before, stale) = wal_over_stale_segment().await;
        write_until_head(&wal, &mut before, SegmentSeq(4)).await;
        write_rounds(&wal, &mut before, 2, 300).await;
        let mut after = before.clone();
        write_rounds(&wal, &mut after, 1, 3000).await;
        wal.close().await.expect("close");
        let mut last = None;
        scan_wal(&io, |seg, r, _| {
            last = Some((seg, r.offset_bytes, r.header.total_len()));
            Ok(())
        })
        .expect("scan");
        let (seg, start, len) = last.expect("records");
        assert_eq!(start % BLOCK_BYTES, 0, "each write starts a block");
        assert_eq!(
            seg,
            SegmentSeq(4),
            "the last record lies in the reused segment"
        );
        let first_block = start / BLOCK_BYTES * BLOCK_BYTES;
        let end = (start + len).div_ceil(BLOCK_BYTES) * BLOCK_BYTES;
        let mut torn_from = first_block;
        while torn_from < end {
            let torn = io.crash(0);
            let old = &stale[torn_from as usize..end as usize];
            torn.poke(seg, torn_from, old);
            let kept_whole =
                io.durable_image(seg).expect("image")[torn_from as usize..end as usize] == *old;
            let expect = if kept_whole { &after } else { &before };
            let wal = Wal::open(torn, small_opts())
                .await
                .expect("a torn write over old records recovers");
            check(&wal, expect).await;
            drop(wal);
            torn_from += BLOCK_BYTES;
        }
    });
}

fn spares(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .expect("list")
        .filter(|e| {
            let path = e.as_ref().expect("entry").path();
            path.extension().is_some_and(|x| x == "spare")
        })
        .count()
}

/// On the real disk: purge keeps retired segments as spares (a bounded
/// number), the preparer reuses them, and whatever was acknowledged comes
/// back after a crash (the last handle dropped without `close`) and after
/// a clean close, with writes going on in between.
#[test]
fn retired_segments_are_reused_and_everything_acknowledged_recovers() {
    let dir = disk_dir("wal-recycle");
    let path = dir.path().to_owned();
    run(async move {
        let mut model = Model::default();
        let mut reused = 0;
        for generation in 0..3 {
            let wal = Wal::open_dir(&path, small_opts()).await.expect("open");
            check(&wal, &model).await;
            for _ in 0..6 {
                let spares_before = spares(&path);
                let head = wal.segment_range().1;
                write_until_head(&wal, &mut model, SegmentSeq(head.0 + 2)).await;
                if spares(&path) < spares_before {
                    reused += 1;
                }
                let mut batch = Batch::new();
                for group in 1..=3 {
                    // The last entry stays: the model knows a log's end by it.
                    model.compact(&mut batch, group, model.last(group) - 1);
                }
                wal.append(&batch).await.expect("compact");
                wal.purge().await.expect("purge");
                let kept = spares(&path);
                assert!((1..=2).contains(&kept), "{kept} spares after a purge");
            }
            if generation == 1 {
                wal.close().await.expect("close");
            } else {
                drop(wal); // A crash as far as the log is concerned.
            }
        }
        assert!(reused >= 3, "spares were reused {reused} times");
        let wal = Wal::open_dir(&path, small_opts()).await.expect("reopen");
        check(&wal, &model).await;
        wal.close().await.expect("close");
    });
}

// ------------------------------------------------ power cuts while reusing

/// Crash points of `power_cut_while_purging` are drawn from this many
/// yields: the writers finish after about 600, so crashes land anywhere in
/// the run and a few after it.
const CRASH_YIELDS_MAX: u64 = 650;
const WRITER_ENTRIES: u64 = 300;
/// Entries a writer keeps behind its compaction mark.
const WRITER_LAG: u64 = 12;

/// Seeds for the power-cut simulations: `WAL_RECYCLE_SEEDS` (default 40).
fn seeds() -> u64 {
    std::env::var("WAL_RECYCLE_SEEDS")
        .ok()
        .map(|v| v.parse().expect("WAL_RECYCLE_SEEDS is a number"))
        .unwrap_or(40)
}

/// One writer's group as far as a crash is concerned. Invariant: entries
/// `compact_bound + 1 ..= last_acked` were acknowledged and not compacted,
/// so recovery must return them; any entry it returns beyond is one whose
/// append was in flight.
#[derive(Clone, Copy, Debug, Default)]
struct Acked {
    last_acked: u64,
    /// The highest compaction mark submitted, acknowledged or not.
    compact_bound: u64,
    payload_len: usize,
}

type AckedGroups = Rc<RefCell<BTreeMap<u64, Acked>>>;

/// Appends entries 1..=`WRITER_ENTRIES` of `group` one batch at a time,
/// compacting behind itself; stops at the first failed append.
async fn writer(wal: Wal<SimIo>, acked: AckedGroups, group: u64) {
    let len = acked.borrow()[&group].payload_len;
    for index in 1..=WRITER_ENTRIES {
        let mut batch = Batch::new();
        let p = payload(group, index, 1, len);
        batch.push_entry(GroupId(group), Term(1), LogIndex(index), &p);
        if index % 8 == 0 && index > WRITER_LAG {
            batch.compact(GroupId(group), LogIndex(index - WRITER_LAG));
            let mut a = acked.borrow_mut();
            let bound = &mut a.get_mut(&group).expect("group").compact_bound;
            *bound = (*bound).max(index - WRITER_LAG);
        }
        if wal.append(&batch).await.is_err() {
            return;
        }
        acked
            .borrow_mut()
            .get_mut(&group)
            .expect("group")
            .last_acked = index;
    }
}

/// Recovery returned every acknowledged entry above the compaction bound,
/// and every entry it returned is the one written at its index.
async fn check_acked(wal: &Wal<SimIo>, acked: &BTreeMap<u64, Acked>, what: &str) {
    for (&group, a) in acked {
        if a.last_acked <= a.compact_bound {
            continue;
        }
        let info = wal
            .group(GroupId(group))
            .unwrap_or_else(|| panic!("{what}: group {group} lost ({a:?})"));
        assert!(
            info.first_index.0 <= a.compact_bound + 1 && info.last_index.0 >= a.last_acked,
            "{what}: group {group} holds {}..={}, acknowledged {a:?}",
            info.first_index,
            info.last_index
        );
        let hi = LogIndex(info.last_index.0 + 1);
        let got = wal
            .entries(GroupId(group), info.first_index, hi)
            .await
            .unwrap_or_else(|e| panic!("{what}: group {group}: {e}"));
        assert_eq!(got.len() as u64, hi.0 - info.first_index.0, "{what}");
        for e in got {
            let want = payload(group, e.index.0, 1, a.payload_len);
            assert!(
                e.payload == want,
                "{what}: group {group} index {} differs",
                e.index
            );
        }
    }
}

/// What the crashes of a set of runs fell on, to show they cover reuse.
#[derive(Debug, Default)]
struct Coverage {
    runs: u64,
    /// Crashes after at least one segment was made from a spare.
    after_reuse: u64,
    /// Crashes with directory changes not yet synced (a retire, a reuse's
    /// rename, or a new segment's rename undone or not by the crash).
    dir_unsynced: u64,
    /// Crashes with a spare in the directory.
    with_spares: u64,
    /// Groups the purges rewrote forward, over all runs.
    groups_rewritten: u64,
}

impl Coverage {
    fn note(&mut self, io: &SimIo) {
        self.runs += 1;
        self.after_reuse += u64::from(io.segments_reused() > 0);
        self.dir_unsynced += u64::from(io.dir_changes_unsynced() > 0);
        self.with_spares += u64::from(!io.spares().is_empty());
    }
}

/// Writers append and compact concurrently while a task purges (rewriting a
/// lagging group forward, retiring segments into spares that the preparer
/// reuses); at a seeded moment the power fails. Every acknowledged entry
/// must come back; then the recovered WAL goes on (reusing the spares the
/// crash left) and must still hold everything after a clean reopen.
async fn power_cut_while_purging(seed: u64, coverage: &mut Coverage) {
    let mut rng = SimRng(seed);
    let io = SimIo::new();
    let wal = Wal::open(io.clone(), gc_opts()).await.expect("open");
    let acked: AckedGroups = Rc::default();
    // Group 0 writes a little and lags: purge must rewrite it forward.
    acked.borrow_mut().insert(
        0,
        Acked {
            payload_len: 100,
            ..Acked::default()
        },
    );
    let mut batch = Batch::new();
    for index in 1..=5 {
        batch.push_entry(
            GroupId(0),
            Term(1),
            LogIndex(index),
            &payload(0, index, 1, 100),
        );
    }
    wal.append(&batch).await.expect("append");
    acked.borrow_mut().get_mut(&0).expect("group 0").last_acked = 5;
    for group in 1..=3u64 {
        let payload_len = 200 + (seed * 131 + group * 377) as usize % 1300;
        acked.borrow_mut().insert(
            group,
            Acked {
                payload_len,
                ..Acked::default()
            },
        );
        glommio::spawn_local(writer(wal.clone(), acked.clone(), group)).detach();
    }
    let purging = wal.clone();
    let rewritten = Rc::new(std::cell::Cell::new(0));
    let counted = rewritten.clone();
    glommio::spawn_local(async move {
        for _ in 0..10_000 {
            match purging.purge().await {
                Ok(report) => counted.set(counted.get() + report.groups_rewritten),
                Err(_) => return,
            }
            for _ in 0..5 {
                yield_now().await;
            }
        }
    })
    .detach();
    for _ in 0..rng.below(CRASH_YIELDS_MAX) {
        yield_now().await;
    }
    coverage.note(&io);
    coverage.groups_rewritten += rewritten.get();
    let crashed = io.crash(rng.next_u64());
    let acked = acked.borrow().clone();
    let what = format!("seed {seed}");
    let wal = Wal::open(crashed.clone(), gc_opts())
        .await
        .unwrap_or_else(|e| panic!("{what}: recovery failed: {e}"));
    check_acked(&wal, &acked, &what).await;
    let model = go_on(&wal).await;
    wal.close().await.expect("close");
    let wal = Wal::open(crashed, gc_opts())
        .await
        .unwrap_or_else(|e| panic!("{what}: reopen failed: {e}"));
    check_acked(&wal, &acked, &what).await;
    check(&wal, &model).await;
}

/// Writes and compacts groups 10..=12 with a purge after every batch, so
/// segments are retired and spares reused; returns what they must hold.
async fn go_on(wal: &Wal<SimIo>) -> Model {
    let mut model = Model::default();
    for _ in 0..60 {
        let mut batch = Batch::new();
        for group in 10..=12 {
            let index = model.last(group) + 1;
            model.push(&mut batch, group, index, 1, 900);
            if index > 3 {
                model.compact(&mut batch, group, index - 3);
            }
        }
        wal.append(&batch).await.expect("append after recovery");
        wal.purge().await.expect("purge after recovery");
    }
    model
}

#[test]
fn power_cuts_while_purging_and_reusing_keep_acknowledged_entries() {
    let mut coverage = Coverage::default();
    for seed in 0..seeds() {
        coverage = run(async move {
            let mut coverage = coverage;
            power_cut_while_purging(seed, &mut coverage).await;
            coverage
        });
    }
    if seeds() >= 20 {
        assert!(
            coverage.after_reuse * 4 >= coverage.runs
                && coverage.dir_unsynced > 0
                && coverage.with_spares > 0
                && coverage.groups_rewritten > 0,
            "the crashes must fall on reuse: {coverage:?}"
        );
    }
    eprintln!("{coverage:?}");
}
