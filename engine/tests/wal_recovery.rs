//! Recovery: torn tails at every byte of the last record, flipped bits that
//! must be refused, simulated power cuts with torn unsynced writes, and
//! compaction with rewrite (also interrupted by a crash).

mod wal_common;

use std::cell::RefCell;
use std::rc::Rc;

use engine::wal::scan::{scan_wal, ScanError};
use engine::wal::sim::{yield_now, SimRng};
use engine::wal::{Batch, GroupId, LogIndex, SegmentSeq, SimIo, Wal, WalError};
use wal_common::{check, check_replay, gc_opts, run, small_opts, write_rounds, Model};

/// (segment, offset, length) of every valid record, in order.
fn records(io: &SimIo) -> Vec<(SegmentSeq, u64, u64)> {
    let mut out = Vec::new();
    scan_wal(io, |seg, r, _| {
        out.push((seg, r.offset_bytes, r.header.total_len()));
        Ok(())
    })
    .expect("scan");
    out
}

#[test]
fn torn_last_record_at_every_offset_truncates() {
    run(async {
        let io = SimIo::new();
        let mut before = Model::default();
        let wal = Wal::open(io.clone(), small_opts()).await.expect("open");
        write_rounds(&wal, &mut before, 5, 30).await;
        let mut after = before.clone();
        write_rounds(&wal, &mut after, 1, 30).await;
        wal.close().await.expect("close");
        let &(seg, start, len) = records(&io).last().expect("records");
        let image = io.durable_image(seg).expect("image");
        for cut in start..start + len {
            let torn = io.crash(0);
            torn.poke(seg, cut, &vec![0; (start + len - cut) as usize]);
            let survives = image[cut as usize..(start + len) as usize]
                .iter()
                .all(|&b| b == 0);
            let expect = if survives { &after } else { &before };
            let wal = Wal::open(torn.clone(), small_opts())
                .await
                .expect("torn tail recovers");
            check(&wal, expect).await;
            let mut model = expect.clone();
            write_rounds(&wal, &mut model, 2, 7).await;
            wal.close().await.expect("close");
            let wal = Wal::open(torn, small_opts())
                .await
                .expect("reopen after new writes");
            check(&wal, &model).await;
        }
    });
}

fn expect_corrupt(result: Result<Wal<SimIo>, WalError>, offset: u64, file: &str) {
    match result {
        Err(WalError::Scan(ScanError::Corrupt {
            path,
            offset_bytes,
            what,
        })) => {
            assert_eq!(offset_bytes, offset, "{what}");
            assert!(path.to_string_lossy().ends_with(file), "{}", path.display());
        }
        Err(e) => panic!("expected a corruption error, got {e}"),
        Ok(_) => panic!("a flipped bit mid-log must refuse to open"),
    }
}

#[test]
fn flipped_bit_mid_segment_refuses_to_open() {
    run(async {
        let io = SimIo::new();
        let mut model = Model::default();
        let wal = Wal::open(io.clone(), small_opts()).await.expect("open");
        write_rounds(&wal, &mut model, 10, 40).await;
        wal.close().await.expect("close");
        let recs = records(&io);
        let (seg, offset, _) = recs[4];
        let flipped = io.crash(0);
        flipped.flip_bit(seg, offset + 50, 3);
        expect_corrupt(
            Wal::open(flipped, small_opts()).await,
            offset,
            "00000000000000000001.wal",
        );
    });
}

#[test]
fn flipped_bit_in_older_segment_refuses_to_open() {
    run(async {
        let io = SimIo::new();
        let mut model = Model::default();
        let wal = Wal::open(io.clone(), small_opts()).await.expect("open");
        write_rounds(&wal, &mut model, 40, 1000).await;
        wal.close().await.expect("close");
        let recs = records(&io);
        assert!(recs.last().expect("records").0 > SegmentSeq(2));
        let (seg, offset, _) = recs
            .iter()
            .rev()
            .find(|r| r.0 == SegmentSeq(1))
            .copied()
            .expect("seg 1");
        let flipped = io.crash(0);
        flipped.flip_bit(seg, offset + 40, 0);
        expect_corrupt(
            Wal::open(flipped, small_opts()).await,
            offset,
            "00000000000000000001.wal",
        );
    });
}

/// Writers append concurrently; at a seeded moment the power fails. Every
/// append that returned must be intact after recovery.
#[test]
fn simulated_power_cuts_keep_acknowledged_appends() {
    for seed in 0..40 {
        run(async move { power_cut(seed).await });
    }
}

async fn power_cut(seed: u64) {
    let mut rng = SimRng(seed);
    let io = SimIo::new();
    let wal = Wal::open(io.clone(), small_opts()).await.expect("open");
    let acked = Rc::new(RefCell::new(Model::default()));
    for writer in 0..3u64 {
        let (wal, acked) = (wal.clone(), acked.clone());
        let len = 1 + (seed * 37 + writer * 500) as usize % 1500;
        glommio::spawn_local(async move {
            let mut pending = Model::default();
            for index in 1..=200 {
                let mut batch = Batch::new();
                pending.push(&mut batch, writer, index, 1, len);
                if wal.append(&batch).await.is_err() {
                    return;
                }
                acked
                    .borrow_mut()
                    .groups
                    .insert(writer, pending.groups[&writer].clone());
            }
        })
        .detach();
    }
    for _ in 0..rng.below(400) {
        yield_now().await;
    }
    let crashed = io.crash(rng.next_u64());
    let acked = acked.borrow().clone();
    let wal = Wal::open(crashed, small_opts())
        .await
        .expect("recover after power cut");
    for (&group, log) in &acked.groups {
        let last = *log.keys().next_back().expect("non-empty");
        let got = wal
            .entries(GroupId(group), LogIndex(1), LogIndex(last + 1))
            .await
            .expect("acked entries");
        for e in got {
            assert_eq!(
                e.payload, log[&e.index.0].1,
                "seed {seed} group {group} index {}",
                e.index
            );
        }
    }
}

/// Group 0 writes a little and then lags; groups 1..=4 write and compact.
async fn churn(wal: &Wal<SimIo>, model: &mut Model, rounds: u64) {
    for _ in 0..rounds {
        let mut batch = Batch::new();
        for group in 1..=4 {
            let index = model.last(group) + 1;
            model.push(&mut batch, group, index, 1, 700);
            if index > 3 {
                model.compact(&mut batch, group, index - 3);
            }
        }
        wal.append(&batch).await.expect("append");
    }
}

async fn lagging_start(wal: &Wal<SimIo>, model: &mut Model) {
    let mut batch = Batch::new();
    for index in 1..=5 {
        model.push(&mut batch, 0, index, 1, 100);
    }
    batch.set_hard_state(
        GroupId(0),
        engine::wal::HardState {
            term: engine::wal::Term(1),
            vote: 1,
            commit: LogIndex(5),
        },
    );
    wal.append(&batch).await.expect("append");
}

#[test]
fn compaction_and_rewrite_bound_disk_use() {
    run(async {
        let io = SimIo::new();
        let mut model = Model::default();
        let wal = Wal::open(io.clone(), gc_opts()).await.expect("open");
        lagging_start(&wal, &mut model).await;
        let mut rewritten = 0;
        for _ in 0..20 {
            churn(&wal, &mut model, 10).await;
            rewritten += wal.purge().await.expect("purge").groups_rewritten;
            let (first, head) = wal.segment_range();
            assert!(
                head.0 - first.0 < 6,
                "segments {first}..={head} not bounded"
            );
        }
        assert!(rewritten > 0, "the lagging group must have been rewritten");
        check(&wal, &model).await;
        assert!(wal.group(GroupId(0)).and_then(|g| g.hard_state).is_some());
        wal.close().await.expect("close");
        let wal = Wal::open(io.clone(), gc_opts()).await.expect("reopen");
        check(&wal, &model).await;
        assert!(wal.group(GroupId(0)).and_then(|g| g.hard_state).is_some());
        wal.remove_group(GroupId(0)).await.expect("remove");
        assert!(wal.group(GroupId(0)).is_none());
        model.groups.remove(&0);
        wal.purge().await.expect("purge");
        wal.close().await.expect("close");
        let wal = Wal::open(io, gc_opts()).await.expect("reopen");
        assert!(wal.group(GroupId(0)).is_none());
        check(&wal, &model).await;
    });
}

#[test]
fn replay_takes_kept_payloads_and_reads_the_rest() {
    run(async {
        let io = SimIo::new();
        let mut model = Model::default();
        let wal = Wal::open(io.clone(), gc_opts()).await.expect("open");
        lagging_start(&wal, &mut model).await;
        for _ in 0..4 {
            churn(&wal, &mut model, 10).await;
            wal.purge().await.expect("purge");
        }
        wal.close().await.expect("close");
        // Nothing kept, one segment image kept (the rest read), everything.
        let segment = gc_opts().segment_size_bytes as usize;
        for budget in [0, segment, usize::MAX] {
            let (wal, kept) = Wal::open_keeping(io.clone(), gc_opts(), budget)
                .await
                .expect("reopen");
            let kept_bytes = kept.bytes();
            assert!(kept_bytes <= budget);
            assert_eq!(kept_bytes == 0, budget == 0, "budget {budget}");
            if budget == usize::MAX {
                let (first, head) = wal.segment_range();
                assert!(head.0 > first.0, "the test needs several segments");
                assert!(kept_bytes > segment, "every image kept: {kept_bytes}");
            }
            // Written after open: never kept, found in the write cache.
            let mut batch = Batch::new();
            let index = model.last(9) + 1;
            model.push(&mut batch, 9, index, 1, 50);
            wal.append(&batch).await.expect("append");
            check_replay(&wal, &model, kept).await;
            wal.close().await.expect("close");
        }
    });
}

#[test]
fn crash_mid_rewrite_recovers() {
    for seed in 0..12 {
        run(async move {
            let io = SimIo::new();
            let mut model = Model::default();
            let wal = Wal::open(io.clone(), gc_opts()).await.expect("open");
            lagging_start(&wal, &mut model).await;
            churn(&wal, &mut model, 60).await;
            let purging = wal.clone();
            glommio::spawn_local(async move { purging.purge().await.map(drop) }).detach();
            for _ in 0..seed * 3 {
                yield_now().await;
            }
            let crashed = io.crash(seed);
            let wal = Wal::open(crashed, gc_opts())
                .await
                .expect("recover mid-rewrite");
            check(&wal, &model).await;
            wal.purge().await.expect("purge after recovery");
            check(&wal, &model).await;
        });
    }
}

// ------------------------------------------------ damaged segment headers

/// Appends batches one at a time (one write each) until the log is in
/// segment `segment`, with `writes` writes there; returns the model.
async fn fill_into(wal: &Wal<SimIo>, segment: u64, writes: u64) -> Model {
    let mut model = Model::default();
    let mut in_segment = 0;
    while in_segment < writes {
        let mut batch = Batch::new();
        let index = model.last(1) + 1;
        // Over a block, so a write's first record spans blocks 0 and 1.
        model.push(&mut batch, 1, index, 1, 5000);
        wal.append(&batch).await.expect("append");
        if wal.segment_range().1 == SegmentSeq(segment) {
            in_segment += 1;
        }
    }
    model
}

fn expect_refused(result: Result<Wal<SimIo>, WalError>, offset: u64, file: &str, says: &str) {
    match result {
        Err(WalError::Scan(ScanError::Corrupt {
            path,
            offset_bytes,
            what,
        })) => {
            assert_eq!(offset_bytes, offset, "{what}");
            assert!(
                path.to_string_lossy().ends_with(file),
                "{}: {what}",
                path.display()
            );
            assert!(what.contains(says), "{what}");
        }
        Err(e) => panic!("expected a corruption error, got {e}"),
        Ok(_) => panic!("recovery must refuse this WAL"),
    }
}

const SEGMENT_3: &str = "00000000000000000003.wal";

#[test]
fn damaged_header_of_the_last_segment_refuses_to_open() {
    run(async {
        let io = SimIo::new();
        let wal = Wal::open(io.clone(), small_opts()).await.expect("open");
        fill_into(&wal, 3, 3).await;
        wal.close().await.expect("close");
        // A flipped bit: the header is not blank, so it was written.
        let flipped = io.crash(0);
        flipped.flip_bit(SegmentSeq(3), 20, 1);
        expect_refused(
            Wal::open(flipped, small_opts()).await,
            0,
            SEGMENT_3,
            "checksum",
        );
        // A zeroed header beside the first record's bytes in its sector.
        let zeroed = io.crash(0);
        zeroed.poke(SegmentSeq(3), 0, &[0; 64]);
        expect_refused(
            Wal::open(zeroed, small_opts()).await,
            0,
            SEGMENT_3,
            "non-zero byte at offset 64",
        );
        // The whole first block lost: later writes saw the first record durable.
        let lost = io.crash(0);
        lost.poke(SegmentSeq(3), 0, &[0; 4096]);
        expect_refused(
            Wal::open(lost, small_opts()).await,
            0,
            SEGMENT_3,
            "was durable",
        );
        // The original still opens, with every record.
        let wal = Wal::open(io.crash(0), small_opts())
            .await
            .expect("undamaged copy opens");
        assert_eq!(wal.segment_range().1, SegmentSeq(3));
    });
}

/// The first write of a segment tore: its first block (with the header)
/// never reached the disk, a later one did. Nothing proves the write was
/// acknowledged, so the segment counts as unused and the log ends before it.
#[test]
fn torn_first_write_of_a_segment_is_unused() {
    run(async {
        let io = SimIo::new();
        let wal = Wal::open(io.clone(), small_opts()).await.expect("open");
        let model = fill_into(&wal, 3, 1).await;
        wal.close().await.expect("close");
        let torn = io.crash(0);
        torn.poke(SegmentSeq(3), 0, &[0; 4096]);
        let wal = Wal::open(torn, small_opts())
            .await
            .expect("a torn first write recovers");
        let mut before = model.clone();
        let last = before.last(1);
        before.groups.get_mut(&1).expect("group 1").remove(&last);
        check(&wal, &before).await;
        assert_eq!(wal.segment_range().1, SegmentSeq(2));
    });
}

// ------------------------------------------------ what the index relies on

/// Encodes `batch` as the record after the last one, straight onto the
/// disk (past `submit`'s checks); returns its segment and offset.
fn poke_record(io: &SimIo, batch: &Batch) -> (SegmentSeq, u64) {
    use engine::wal::format::{encode_record, record_len_bound};
    use engine::wal::RecordSeq;
    let mut last = None;
    scan_wal(io, |seg, r, _| {
        last = Some((seg, r.next_offset(), r.header.seq));
        Ok(())
    })
    .expect("scan");
    let (seg, offset, seq) = last.expect("records");
    let mut buf = engine::wal::scan::Image::new();
    buf.resize(record_len_bound(batch), 0);
    let encoded = encode_record(&mut buf, seq.next(), RecordSeq(seq.0), batch);
    io.poke(seg, offset, &buf[..encoded.header.total_len() as usize]);
    (seg, offset)
}

#[test]
fn log_index_zero_on_disk_is_corruption() {
    run(async {
        let io = SimIo::new();
        let mut model = Model::default();
        let wal = Wal::open(io.clone(), small_opts()).await.expect("open");
        write_rounds(&wal, &mut model, 3, 30).await;
        wal.close().await.expect("close");
        let mut batch = Batch::new();
        batch.push_entry(GroupId(1), engine::wal::Term(1), LogIndex(0), b"zero");
        let (_, offset) = poke_record(&io, &batch);
        let file = "00000000000000000001.wal";
        expect_refused(
            Wal::open(io, small_opts()).await,
            offset,
            file,
            "entry index 0",
        );
    });
}

/// Entries a group still holds are gone with their segment: recovery must
/// say so, not start the group's log at the next entry it finds.
#[test]
fn entries_missing_without_compaction_refuse_to_open() {
    run(async {
        use engine::wal::WalIo;
        let io = SimIo::new();
        let wal = Wal::open(io.clone(), small_opts()).await.expect("open");
        fill_into(&wal, 3, 1).await;
        wal.close().await.expect("close");
        io.remove(SegmentSeq(1)).await.expect("remove segment 1");
        let second = "00000000000000000002.wal";
        expect_refused(
            Wal::open(io, small_opts()).await,
            64,
            second,
            "neither held nor compacted",
        );
    });
}

// ------------------------------------------------ rewrites and recovery

/// Busy groups that compact lazily, one that lags, `purge` after every
/// append; every few rounds the WAL is recovered from its disk and must hold
/// exactly the model. Recovery then replays only the segments left, in which
/// rewrite copies sit before and after the newer entries they precede.
#[test]
fn purged_logs_recover_exactly_after_many_rewrites() {
    for seed in 0..4 {
        run(async move { purge_and_recover(seed).await });
    }
}

async fn purge_and_recover(seed: u64) {
    let mut rng = SimRng(seed);
    let io = SimIo::new();
    let wal = Wal::open(io.clone(), gc_opts()).await.expect("open");
    let mut model = Model::default();
    lagging_start(&wal, &mut model).await;
    let mut rewritten = 0;
    for round in 1..=160u64 {
        let mut batch = Batch::new();
        for group in 1..=3 {
            if rng.below(4) == 0 {
                continue;
            }
            for _ in 0..1 + rng.below(3) {
                let index = model.last(group) + 1;
                model.push(&mut batch, group, index, 1, 100 + rng.below(900) as usize);
            }
            let last = model.last(group);
            let lag = 20 + 30 * group;
            if rng.below(15) == 0 && last > lag {
                model.compact(&mut batch, group, last - lag);
            }
        }
        if batch.is_empty() {
            continue;
        }
        wal.append(&batch).await.expect("append");
        rewritten += wal.purge().await.expect("purge").groups_rewritten;
        if round % 8 == 0 {
            // Every record is durable; a crash may still bring back segments
            // whose retirement the directory has not recorded durably.
            let wal = Wal::open(io.crash(round), gc_opts())
                .await
                .unwrap_or_else(|e| panic!("seed {seed} round {round}: recovery failed: {e}"));
            check(&wal, &model).await;
        }
    }
    assert!(rewritten > 0, "seed {seed}: nothing was rewritten");
    check(&wal, &model).await;
    wal.close().await.expect("close");
    let wal = Wal::open(io, gc_opts()).await.expect("reopen");
    check(&wal, &model).await;
}

/// A batch submitted while a rewrite waits for earlier batches to become
/// durable is in neither the rewrite's snapshot nor (yet) the index: the
/// rewrite must leave its groups out, not copy their stale state after it.
#[test]
fn batch_submitted_while_a_rewrite_starts_is_not_undone() {
    for yields in 0..12 {
        run(async move {
            let io = SimIo::new();
            let wal = Wal::open(io.clone(), gc_opts()).await.expect("open");
            let mut model = Model::default();
            lagging_start(&wal, &mut model).await;
            churn(&wal, &mut model, 80).await;
            let mut a = Batch::new();
            let index = model.last(1) + 1;
            model.push(&mut a, 1, index, 1, 700);
            let a = wal.submit(&a).expect("submit a");
            let purging = wal.clone();
            let purge = glommio::spawn_local(async move { purging.purge().await });
            for _ in 0..yields {
                yield_now().await;
            }
            // Group 0, which pins the oldest segment, compacts everything.
            let mut b = Batch::new();
            let index = model.last(0) + 1;
            model.push(&mut b, 0, index, 1, 100);
            model.compact(&mut b, 0, index - 1);
            let b = wal.submit(&b).expect("submit b");
            purge.await.expect("purge");
            wal.wait_durable(a.max(b)).await.expect("durable");
            check(&wal, &model).await;
            wal.purge().await.expect("purge again");
            check(&wal, &model).await;
            assert!(
                wal.segment_range().0 > SegmentSeq(1),
                "{yields} yields: nothing purged"
            );
            wal.close().await.expect("close");
            let wal = Wal::open(io, gc_opts()).await.expect("reopen");
            check(&wal, &model).await;
        });
    }
}
