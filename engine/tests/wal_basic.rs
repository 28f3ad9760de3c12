//! Round trips, roll-over, interleaved groups and truncation of the WAL, on
//! real O_DIRECT files and on the simulated disk.

mod wal_common;

use engine::wal::{Batch, GroupId, HardState, LogIndex, SimIo, Term, Wal, WalOptions};
use wal_common::{check, disk_dir, run, small_opts, Model};

#[test]
fn round_trip_on_disk_survives_reopen() {
    let dir = disk_dir("wal-roundtrip");
    let path = dir.path().to_owned();
    run(async move {
        let mut model = Model::default();
        let wal = Wal::open_dir(&path, WalOptions::default())
            .await
            .expect("open");
        for round in 0..20u64 {
            let mut batch = Batch::new();
            for group in 1..=5 {
                for _ in 0..3 {
                    let index = model.last(group) + 1;
                    model.push(&mut batch, group, index, 1, 10 + round as usize);
                }
            }
            batch.set_hard_state(
                GroupId(1),
                HardState {
                    term: Term(1),
                    vote: 7,
                    commit: LogIndex(round),
                },
            );
            wal.append(&batch).await.expect("append");
        }
        check(&wal, &model).await;
        wal.close().await.expect("close");
        let wal = Wal::open_dir(&path, WalOptions::default())
            .await
            .expect("reopen");
        check(&wal, &model).await;
        let hs = wal
            .group(GroupId(1))
            .and_then(|g| g.hard_state)
            .expect("hard state");
        assert_eq!(
            hs,
            HardState {
                term: Term(1),
                vote: 7,
                commit: LogIndex(19)
            }
        );
        wal.close().await.expect("close");
    });
}

#[test]
fn segments_roll_over_and_recover() {
    let dir = disk_dir("wal-roll");
    let path = dir.path().to_owned();
    run(async move {
        let mut model = Model::default();
        let wal = Wal::open_dir(&path, small_opts()).await.expect("open");
        for _ in 0..60 {
            let mut batch = Batch::new();
            for group in 1..=4 {
                let index = model.last(group) + 1;
                model.push(&mut batch, group, index, 2, 900);
            }
            wal.append(&batch).await.expect("append");
        }
        let (first, head) = wal.segment_range();
        assert!(
            head.0 >= first.0 + 2,
            "expected several segments, got {first}..={head}"
        );
        check(&wal, &model).await;
        wal.close().await.expect("close");
        let wal = Wal::open_dir(&path, small_opts()).await.expect("reopen");
        check(&wal, &model).await;
        let mut batch = Batch::new();
        model.push(&mut batch, 1, model.last(1) + 1, 3, 5);
        wal.append(&batch).await.expect("append after reopen");
        wal.close().await.expect("close");
        let wal = Wal::open_dir(&path, small_opts())
            .await
            .expect("reopen twice");
        check(&wal, &model).await;
    });
}

#[test]
fn concurrent_appends_share_writes() {
    run(async {
        let io = SimIo::new();
        let wal = Wal::open(io, small_opts()).await.expect("open");
        let mut tasks = Vec::new();
        for writer in 0..4u64 {
            let wal = wal.clone();
            tasks.push(glommio::spawn_local(async move {
                for i in 1..=50u64 {
                    let mut batch = Batch::new();
                    batch.push_entry(GroupId(writer), Term(1), LogIndex(i), &[writer as u8; 40]);
                    wal.append(&batch).await.expect("append");
                }
            }));
        }
        for t in tasks {
            t.await;
        }
        let stats = wal.stats();
        assert_eq!(stats.records, 200);
        assert!(
            stats.writes < 200,
            "group commit should merge records: {stats:?}"
        );
        for writer in 0..4u64 {
            let got = wal
                .entries(GroupId(writer), LogIndex(1), LogIndex(51))
                .await
                .expect("read");
            assert!(got.iter().all(|e| e.payload == [writer as u8; 40]));
        }
    });
}

#[test]
fn interleaved_groups_match_model() {
    run(async {
        let io = SimIo::new();
        let mut model = Model::default();
        let wal = Wal::open(io.clone(), small_opts()).await.expect("open");
        let mut rng = engine::wal::sim::SimRng(7);
        for _ in 0..200 {
            let mut batch = Batch::new();
            for _ in 0..1 + rng.below(6) {
                let group = rng.below(20);
                for _ in 0..1 + rng.below(4) {
                    let index = model.last(group) + 1;
                    model.push(&mut batch, group, index, 1, rng.below(300) as usize);
                }
            }
            wal.append(&batch).await.expect("append");
        }
        check(&wal, &model).await;
        wal.close().await.expect("close");
        let wal = Wal::open(io, small_opts()).await.expect("reopen");
        check(&wal, &model).await;
    });
}

#[test]
fn conflicting_suffix_is_replaced() {
    run(async {
        let io = SimIo::new();
        let mut model = Model::default();
        let wal = Wal::open(io.clone(), small_opts()).await.expect("open");
        let mut batch = Batch::new();
        for i in 1..=10 {
            model.push(&mut batch, 9, i, 1, 20);
        }
        wal.append(&batch).await.expect("append");
        // A new leader overwrites 6.. with its own entries of term 2.
        let mut batch = Batch::new();
        for i in 6..=8 {
            model.push(&mut batch, 9, i, 2, 30);
        }
        wal.append(&batch).await.expect("append");
        check(&wal, &model).await;
        // An explicit truncation without new entries.
        let mut batch = Batch::new();
        batch.truncate(GroupId(9), LogIndex(8));
        model.groups.get_mut(&9).expect("group").split_off(&8);
        wal.append(&batch).await.expect("truncate");
        check(&wal, &model).await;
        let err = wal
            .entries(GroupId(9), LogIndex(1), LogIndex(9))
            .await
            .expect_err("8 is gone");
        assert!(err.to_string().contains("requested"), "{err}");
        wal.close().await.expect("close");
        let wal = Wal::open(io, small_opts()).await.expect("reopen");
        check(&wal, &model).await;
        assert_eq!(
            wal.group(GroupId(9)).expect("group").last_term,
            Some(Term(2))
        );
    });
}

#[test]
fn oversized_record_is_refused() {
    run(async {
        let wal = Wal::open(SimIo::new(), small_opts()).await.expect("open");
        let mut batch = Batch::new();
        batch.push_entry(GroupId(1), Term(1), LogIndex(1), &vec![0; 70 << 10]);
        let err = wal.append(&batch).await.expect_err("too large");
        assert!(
            matches!(err, engine::wal::WalError::RecordTooLarge { .. }),
            "{err}"
        );
    });
}
