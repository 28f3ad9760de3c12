//! Round trips, roll-over, interleaved groups and truncation of the WAL, on
//! real O_DIRECT files and on the simulated disk.

mod wal_common;

use engine::wal::{Batch, GroupId, HardState, LogIndex, SimIo, Term, Wal, WalOptions};
use wal_common::{check, check_replay, disk_dir, run, small_opts, Model};

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
        wal.close().await.expect("close");
        // The scan's reader threads hand over images that the replay then
        // serves from (the first segment's only, or all of them); the
        // images nobody kept go back to the readers.
        let segment = small_opts().segment_size_bytes as usize;
        for budget in [segment, usize::MAX] {
            let (wal, kept) = Wal::open_dir_keeping(&path, small_opts(), budget)
                .await
                .expect("reopen keeping");
            assert!(kept.bytes() > 0 && kept.bytes() <= budget, "{} of {budget}", kept.bytes());
            check_replay(&wal, &model, kept).await;
            wal.close().await.expect("close");
        }
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

fn invalid_group(err: &engine::wal::WalError) -> Option<GroupId> {
    match err {
        engine::wal::WalError::InvalidBatch { group, .. } => Some(*group),
        _ => None,
    }
}

#[test]
fn impossible_log_indexes_are_refused_at_submit() {
    run(async {
        let wal = Wal::open(SimIo::new(), small_opts()).await.expect("open");
        let g = GroupId(3);
        let mut cases = Vec::new();
        let mut batch = Batch::new();
        batch.push_entry(g, Term(1), LogIndex(0), b"zero");
        cases.push(("entry 0", batch));
        let mut batch = Batch::new();
        batch.push_entry(g, Term(1), LogIndex(1), b"one");
        batch.push_entry(g, Term(1), LogIndex(u64::MAX), b"max");
        cases.push(("entry u64::MAX", batch));
        let mut batch = Batch::new();
        batch.truncate(g, LogIndex(0));
        cases.push(("truncation from 0", batch));
        let mut batch = Batch::new();
        batch.compact(g, LogIndex(u64::MAX));
        cases.push(("compaction through u64::MAX", batch));
        for (what, batch) in &cases {
            let err = wal.submit(batch).expect_err(what);
            assert_eq!(invalid_group(&err), Some(g), "{what}: {err}");
            assert!(err.to_string().contains("index"), "{what}: {err}");
        }
        // Nothing was queued: the WAL goes on, and group 3 never existed.
        assert_eq!(wal.stats().records, 0);
        assert!(wal.group(g).is_none());
        let mut model = Model::default();
        let mut batch = Batch::new();
        model.push(&mut batch, 3, 1, 1, 10);
        wal.append(&batch)
            .await
            .expect("a valid batch after refused ones");
        check(&wal, &model).await;
        wal.close().await.expect("close");
    });
}

#[test]
fn a_log_that_jumps_forward_records_a_compaction_mark() {
    run(async {
        let io = SimIo::new();
        let wal = Wal::open(io.clone(), small_opts()).await.expect("open");
        let g = GroupId(4);
        let mut batch = Batch::new();
        for i in 1..=5 {
            batch.push_entry(g, Term(1), LogIndex(i), &[i as u8; 8]);
        }
        wal.append(&batch).await.expect("append 1..=5");
        // Entries after a snapshot that the WAL never saw compacted.
        let mut batch = Batch::new();
        for i in 20..=22 {
            batch.push_entry(g, Term(2), LogIndex(i), &[i as u8; 8]);
        }
        wal.append(&batch).await.expect("a jump is a restart");
        let expect = |info: engine::wal::GroupInfo| {
            assert_eq!(
                (info.first_index, info.last_index, info.compacted),
                (LogIndex(20), LogIndex(22), LogIndex(19))
            );
        };
        expect(wal.group(g).expect("group"));
        // An entry below the restart of the same batch would be compacted away.
        let mut batch = Batch::new();
        batch.push_entry(g, Term(2), LogIndex(30), b"30");
        batch.push_entry(g, Term(2), LogIndex(25), b"25");
        let err = wal
            .submit(&batch)
            .expect_err("entry below the implied mark");
        assert_eq!(invalid_group(&err), Some(g), "{err}");
        // Nor may an entry go back below a recorded mark.
        let mut batch = Batch::new();
        batch.push_entry(g, Term(2), LogIndex(19), b"19");
        let err = wal
            .submit(&batch)
            .expect_err("entry at the compaction mark");
        assert!(err.to_string().contains("compaction mark 19"), "{err}");
        // The node's snapshot install: its own mark, no implied one.
        let mut batch = Batch::new();
        batch.truncate(GroupId(5), LogIndex(41));
        batch.compact(GroupId(5), LogIndex(40));
        batch.push_entry(GroupId(5), Term(3), LogIndex(41), b"41");
        wal.append(&batch).await.expect("snapshot install");
        wal.close().await.expect("close");
        let wal = Wal::open(io, small_opts())
            .await
            .expect("recovery accepts a recorded restart");
        expect(wal.group(g).expect("group after reopen"));
        let got = wal
            .entries(g, LogIndex(20), LogIndex(23))
            .await
            .expect("read");
        assert_eq!(
            got.iter().map(|e| e.payload[0]).collect::<Vec<_>>(),
            [20, 21, 22]
        );
        let info = wal.group(GroupId(5)).expect("group 5");
        assert_eq!(
            (info.first_index, info.compacted),
            (LogIndex(41), LogIndex(40))
        );
    });
}

/// Whether another process could take the directory's lock now (a second
/// `flock` on its own open file behaves as another process's would).
fn lock_is_free(dir: &std::path::Path) -> bool {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(dir.join(engine::wal::lock::LOCK_FILE_NAME)).expect("lock file");
    // SAFETY: flock on a descriptor `file` keeps open; closing it unlocks.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

#[test]
fn a_wal_directory_has_one_writer_at_a_time() {
    let dir = disk_dir("wal-lock");
    let path = dir.path().to_owned();
    run(async move {
        let wal = Wal::open_dir(&path, small_opts()).await.expect("open");
        let mut batch = Batch::new();
        batch.push_entry(GroupId(1), Term(1), LogIndex(1), b"one");
        wal.append(&batch).await.expect("append");
        match Wal::open_dir(&path, small_opts()).await {
            Err(err @ engine::wal::WalError::Locked { .. }) => {
                let msg = err.to_string();
                assert!(msg.contains("is in use by another process"), "{msg}");
                assert!(msg.contains(&path.display().to_string()), "{msg}");
                assert!(
                    msg.contains(&format!("pid {}", std::process::id())),
                    "{msg}"
                );
            }
            Err(e) => panic!("expected the directory to be locked, got {e}"),
            Ok(_) => panic!("a second writer opened a locked WAL directory"),
        }
        assert!(!lock_is_free(&path), "another process could take the lock");
        // Readers such as myriad-log take no lock.
        let src = engine::wal::scan::DirSource { dir: path.clone() };
        engine::wal::scan::scan_wal(&src, |_, _, _| Ok(())).expect("scan beside the writer");

        // `close` releases the lock, and the closed WAL takes no batches.
        let other = wal.clone();
        wal.close().await.expect("close");
        assert!(lock_is_free(&path));
        assert!(matches!(
            other.submit(&batch),
            Err(engine::wal::WalError::Closed)
        ));
        drop(other);

        // Without `close`, the lock goes with the last handle.
        let wal = Wal::open_dir(&path, small_opts())
            .await
            .expect("reopen after close");
        let other = wal.clone();
        drop(wal);
        assert!(!lock_is_free(&path), "a handle is left");
        let mut batch = Batch::new();
        batch.push_entry(GroupId(1), Term(1), LogIndex(2), b"two");
        other
            .submit(&batch)
            .expect("submit, then drop before it is written");
        drop(other);
        assert!(lock_is_free(&path));
        let wal = Wal::open_dir(&path, small_opts())
            .await
            .expect("reopen after drop");
        let info = wal.group(GroupId(1)).expect("group 1");
        assert_eq!(info.first_index, LogIndex(1));
        wal.close().await.expect("close");
    });
}

/// A handle that is never dropped (a task that never finished on an executor
/// that stopped) must not keep the directory locked once its thread ended:
/// the node reopens its WAL on a new executor thread after a shutdown.
#[test]
fn a_leaked_wal_releases_its_directory_when_its_thread_ends() {
    let dir = disk_dir("wal-lock-leak");
    let path = dir.path().to_owned();
    let leaked = path.clone();
    std::thread::spawn(move || {
        run(async move {
            let wal = Wal::open_dir(&leaked, small_opts()).await.expect("open");
            std::mem::forget(wal);
        })
    })
    .join()
    .expect("thread");
    assert!(lock_is_free(&path));
    run(async move {
        let wal = Wal::open_dir(&path, small_opts())
            .await
            .expect("reopen after the thread ended");
        wal.close().await.expect("close");
    });
}
