//! A full disk (or a process out of file descriptors): the WAL keeps what it
//! wrote, keeps writing into the segment it has, holds back only the writes
//! that need a new segment, and goes on by itself once space (or a
//! descriptor) is freed.

mod wal_common;

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use engine::wal::sim::SimIo;
use engine::wal::Wal;
use wal_common::{check, round, run, small_opts, write_rounds, Model};

/// Waits up to `limit` for `done`.
async fn wait_for(done: &Cell<bool>, limit: Duration) -> bool {
    let step = Duration::from_millis(10);
    let mut waited = Duration::ZERO;
    while !done.get() && waited < limit {
        glommio::timer::sleep(step).await;
        waited += step;
    }
    done.get()
}

#[test]
fn a_full_disk_holds_writes_that_need_a_new_segment_until_space_is_freed() {
    new_files_refused_hold_writes_until_they_are_not(libc::ENOSPC);
}

/// A flood of connections can take every file descriptor the process may
/// have: that too only holds the writes back.
#[test]
fn no_file_descriptor_left_holds_writes_that_need_a_new_segment_until_one_is_freed() {
    new_files_refused_hold_writes_until_they_are_not(libc::EMFILE);
}

fn new_files_refused_hold_writes_until_they_are_not(errno: i32) {
    run(async move {
        let io = SimIo::without_reuse();
        let mut model = Model::default();
        let wal = Wal::open(io.clone(), small_opts()).await.expect("open");
        write_rounds(&wal, &mut model, 3, 500).await;
        io.refuse_new_files(Some(errno));

        // Appends go on while the segments already made have room; the one
        // that needs a segment the disk has no space for waits.
        let mut acked_while_full = 0;
        let (held, held_model) = loop {
            let before = model.clone();
            let batch = round(&mut model, 500);
            let done = Rc::new(Cell::new(false));
            let (w, d) = (wal.clone(), done.clone());
            glommio::spawn_local(async move {
                w.append(&batch).await.expect("an append on a full disk waits, never fails");
                d.set(true);
            })
            .detach();
            if !wait_for(&done, Duration::from_secs(1)).await {
                break (done, before);
            }
            acked_while_full += 1;
            assert!(acked_while_full < 1_000, "the disk never filled up");
        };
        assert!(acked_while_full > 0, "the segments made before the disk filled took no writes");
        assert!(wal.disk_full());
        assert!(wal.stats().segment_prepares_refused > 0);
        // Still held across several retries, and nothing it acknowledged
        // is lost or changed meanwhile.
        assert!(!wait_for(&held, Duration::from_millis(800)).await, "written without a segment");
        assert!(wal.stats().segment_prepares_refused > 1, "the preparer tries again");
        check(&wal, &held_model).await;

        io.refuse_new_files(None);
        assert!(wait_for(&held, Duration::from_secs(5)).await, "the held write went on once space was freed");
        assert!(!wal.disk_full());
        write_rounds(&wal, &mut model, 20, 500).await;
        check(&wal, &model).await;
        wal.close().await.expect("close");

        // Every acknowledged write survives a crash, the held one included.
        for seed in 0..4 {
            let wal = Wal::open(io.crash(seed), small_opts()).await.expect("recover");
            check(&wal, &model).await;
            wal.close().await.expect("close");
        }
    });
}
