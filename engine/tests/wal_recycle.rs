//! Reused segment files: purge keeps retired segments as spares and the
//! preparer reuses them (zeroing only their header block), so a segment can
//! hold records of its earlier life after the log's end. Recovery must read
//! those as a torn tail, never as records, and never as corruption.

mod wal_common;

use std::path::Path;

use engine::wal::scan::scan_wal;
use engine::wal::{Batch, SegmentSeq, SimIo, Wal, WalIo};
use wal_common::{check, disk_dir, run, small_opts, write_rounds, Model};

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
