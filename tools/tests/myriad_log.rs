//! `myriad-log` against WALs written by the engine on the real disk: every
//! subcommand on a healthy log, corruption named by file and offset, a torn
//! tail only warned about, bad directories refused, and the directory never
//! written.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use engine::wal::scan::{scan_wal, DirSource};
use engine::wal::{Batch, GroupId, HardState, LogIndex, SegmentSeq, Term, Wal, WalOptions};
use serde_json::Value;

const SEGMENT_1: &str = "00000000000000000001.wal";

fn myriad_log(args: &[&str], dir: &Path) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_myriad-log"))
        .args(args)
        .arg(dir)
        .output()
        .expect("run myriad-log");
    eprintln!(
        "$ myriad-log {} {}\n-> {:?}\n--- stdout\n{}--- stderr\n{}",
        args.join(" "),
        dir.display(),
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("utf-8 output")
}

/// A directory on the real disk (the WAL writes with O_DIRECT).
fn disk_dir(name: &str) -> tempfile::TempDir {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&base).expect("target tmpdir");
    tempfile::Builder::new()
        .prefix(name)
        .tempdir_in(base)
        .expect("tempdir")
}

fn text_payload(group: u64, index: u64) -> Vec<u8> {
    format!("group {group} entry {index}").into_bytes()
}

/// Group 3 carries binary payloads, to exercise the hex rendering.
fn binary_payload(index: u64) -> Vec<u8> {
    (0..40)
        .map(|i| (index as u8).wrapping_mul(31) ^ i)
        .chain([0u8])
        .collect()
}

/// What was written: (group, index) -> (term, payload), last write wins.
type Written = BTreeMap<(u64, u64), (u64, Vec<u8>)>;

/// Writes `rounds` sequential appends of groups 1..=3 on a small-segment WAL
/// (each append is one record padded to its own 4 KiB block, so segments
/// roll over every ~15 rounds), with a hard state, a compaction and a
/// truncation on the way.
fn build_wal(dir: &Path, rounds: u64) -> Written {
    let dir = dir.to_owned();
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(256 << 10)
        .make()
        .expect("executor")
        .run(async move {
            let opts = WalOptions {
                segment_size_bytes: 64 << 10,
                write_bytes_max: 32 << 10,
                ..WalOptions::default()
            };
            let wal = Wal::open_dir(&dir, opts).await.expect("open");
            let mut written = Written::new();
            let mut last = [0u64; 4];
            for round in 1..=rounds {
                let mut batch = Batch::new();
                if round == 20 {
                    // Group 3 drops its last two entries (a follower's
                    // conflict) and writes index 18 again.
                    batch.truncate(GroupId(3), LogIndex(last[3] - 1));
                    last[3] -= 2;
                }
                for group in 1..=3u64 {
                    let index = last[group as usize] + 1;
                    let p = match group {
                        3 => binary_payload(index),
                        _ => text_payload(group, index),
                    };
                    batch.push_entry(GroupId(group), Term(2), LogIndex(index), &p);
                    written.insert((group, index), (2, p));
                    last[group as usize] = index;
                }
                let state = HardState {
                    term: Term(2),
                    vote: 1,
                    commit: LogIndex(round),
                };
                batch.set_hard_state(GroupId(1), state);
                if round == 10 {
                    batch.compact(GroupId(2), LogIndex(5));
                }
                wal.append(&batch).await.expect("append");
            }
            wal.close().await.expect("close");
            written
        })
}

/// (segment, offset, body_len) of every valid record, in order.
fn records(dir: &Path) -> Vec<(SegmentSeq, u64, u64)> {
    let src = DirSource {
        dir: dir.to_owned(),
    };
    let mut out = Vec::new();
    scan_wal(&src, |segment, r, _| {
        out.push((segment, r.offset_bytes, u64::from(r.header.body_len)));
        Ok(())
    })
    .expect("scan");
    out
}

fn flip_byte(path: &Path, offset: u64) {
    let mut bytes = std::fs::read(path).expect("read segment");
    bytes[offset as usize] ^= 0x10;
    std::fs::write(path, bytes).expect("write segment");
}

fn json_lines(out: &Output) -> Vec<Value> {
    stdout(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Every file's name, length, mtime and bytes: what must not change.
fn snapshot(dir: &Path) -> BTreeMap<String, (std::time::SystemTime, Vec<u8>)> {
    std::fs::read_dir(dir)
        .expect("list")
        .map(|e| {
            let e = e.expect("entry");
            let meta = e.metadata().expect("meta");
            let bytes = std::fs::read(e.path()).expect("read");
            let name = e.file_name().to_string_lossy().into_owned();
            (name, (meta.modified().expect("mtime"), bytes))
        })
        .collect()
}

#[test]
fn healthy_wal_inspected_without_writing() {
    let dir = disk_dir("myriad-log-healthy");
    let written = build_wal(dir.path(), 40);
    let before = snapshot(dir.path());

    let segs = myriad_log(&["segments"], dir.path());
    assert_eq!(segs.status.code(), Some(0));
    let text = stdout(&segs);
    assert!(text.contains(SEGMENT_1) && text.contains("00000000000000000003.wal"));
    assert!(text.contains("40 record(s)"), "{text}");

    let verify = myriad_log(&["verify"], dir.path());
    assert_eq!(verify.status.code(), Some(0));
    let text = stdout(&verify);
    assert!(text.contains("40 record(s) (seq 1..=40)") && text.trim_end().ends_with("OK"));

    let stat = myriad_log(&["stat", "--json"], dir.path());
    assert_eq!(stat.status.code(), Some(0));
    let groups = json_lines(&stat);
    assert_eq!(groups.len(), 3);
    let g = |n: u64| groups.iter().find(|v| v["group"] == n).expect("group");
    assert_eq!(
        (g(1)["first_index"].as_u64(), g(1)["last_index"].as_u64()),
        (Some(1), Some(40))
    );
    assert_eq!(g(1)["hard_state"]["commit"], 40);
    assert_eq!(g(1)["last_term"], 2);
    assert_eq!(
        (g(2)["first_index"].as_u64(), g(2)["compacted"].as_u64()),
        (Some(6), Some(5))
    );
    assert_eq!(g(2)["entries"], 35);
    let g1_bytes: usize = (1..=40).map(|i| text_payload(1, i).len()).sum();
    assert_eq!(g(1)["payload_bytes"], g1_bytes);
    // Truncated at round 20 back to 17, then one entry per round again.
    assert_eq!(
        (g(3)["last_index"].as_u64(), g(3)["entries"].as_u64()),
        (Some(38), Some(38))
    );
    let stat_text = myriad_log(&["stat"], dir.path());
    assert_eq!(stat_text.status.code(), Some(0));
    assert!(stdout(&stat_text).contains("term=2 vote=1 commit=40"));

    let dump = myriad_log(&["dump", "--json", "--full"], dir.path());
    assert_eq!(dump.status.code(), Some(0));
    let lines = json_lines(&dump);
    assert_eq!(lines.iter().filter(|v| v["kind"] == "record").count(), 40);
    let mut dumped = Written::new();
    for v in lines.iter().filter(|v| v["kind"] == "entry") {
        let payload = match v["payload_encoding"].as_str() {
            Some("utf8") => v["payload"].as_str().expect("text").as_bytes().to_vec(),
            _ => unhex(v["payload"].as_str().expect("hex")),
        };
        assert_eq!(v["payload_len"].as_u64(), Some(payload.len() as u64));
        let key = (v["group"].as_u64().unwrap(), v["index"].as_u64().unwrap());
        dumped.insert(key, (v["term"].as_u64().unwrap(), payload));
    }
    assert_eq!(dumped, written, "dump --json shows every entry written");
    assert!(lines
        .iter()
        .any(|v| v["kind"] == "compaction" && v["group"] == 2 && v["index"] == 5));
    assert!(lines
        .iter()
        .any(|v| v["kind"] == "truncation" && v["group"] == 3 && v["from_index"] == 18));
    assert_eq!(
        lines.iter().filter(|v| v["kind"] == "hard_state").count(),
        40
    );

    let only2 = myriad_log(
        &["dump", "--json", "--group", "2", "--from", "7", "--to", "9"],
        dir.path(),
    );
    assert_eq!(only2.status.code(), Some(0));
    let items: Vec<Value> = json_lines(&only2)
        .into_iter()
        .filter(|v| v["kind"] != "record")
        .collect();
    let indexes: Vec<u64> = items.iter().map(|v| v["index"].as_u64().unwrap()).collect();
    assert!(
        items
            .iter()
            .all(|v| v["kind"] == "entry" && v["group"] == 2),
        "{items:?}"
    );
    assert_eq!(indexes, [7, 8, 9]);

    let human = myriad_log(&["dump", "--group", "3"], dir.path());
    assert_eq!(human.status.code(), Some(0));
    let text = stdout(&human);
    assert!(
        text.contains("group=3 index=1 term=2 len=41 0x"),
        "binary payloads in hex"
    );
    assert!(text.contains("…(+9 bytes)"), "long binary payloads cut");
    assert!(!text.contains("group=1"));
    let human1 = myriad_log(&["dump", "--group", "1", "--to", "1"], dir.path());
    assert!(stdout(&human1).contains("group=1 index=1 term=2 len=15 \"group 1 entry 1\""));

    assert_eq!(snapshot(dir.path()), before, "myriad-log must not write");
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

#[test]
fn flipped_byte_in_older_segment_is_named() {
    let dir = disk_dir("myriad-log-flip-old");
    build_wal(dir.path(), 40);
    let recs = records(dir.path());
    let in_first: Vec<_> = recs.iter().filter(|r| r.0 == SegmentSeq(1)).collect();
    let &&(_, offset, body) = in_first
        .get(in_first.len() / 2)
        .expect("records in segment 1");
    flip_byte(&dir.path().join(SEGMENT_1), offset + 32 + body / 2);

    let verify = myriad_log(&["verify"], dir.path());
    assert_eq!(verify.status.code(), Some(1));
    let text = stdout(&verify);
    assert!(
        text.contains(&format!("{SEGMENT_1} at offset {offset}")),
        "{text}"
    );
    assert!(text.contains("checksum"), "{text}");

    for cmd in [&["dump"][..], &["stat"], &["segments"]] {
        let out = myriad_log(cmd, dir.path());
        assert_eq!(out.status.code(), Some(1), "{cmd:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("{SEGMENT_1} at offset {offset}")),
            "{err}"
        );
    }
    let segs = myriad_log(&["segments"], dir.path());
    assert!(stdout(&segs).contains(&format!("CORRUPT at {offset}")));
}

#[test]
fn flipped_byte_mid_last_segment_is_named() {
    let dir = disk_dir("myriad-log-flip-last");
    build_wal(dir.path(), 40);
    let recs = records(dir.path());
    let last_segment = recs.last().expect("records").0;
    let in_last: Vec<_> = recs.iter().filter(|r| r.0 == last_segment).collect();
    assert!(
        in_last.len() >= 3,
        "need a middle record in the last segment"
    );
    let &&(_, offset, body) = in_last.get(in_last.len() / 2).expect("middle");
    let file = engine::wal::format::segment_file_name(last_segment);
    flip_byte(&dir.path().join(&file), offset + 32 + body / 2);

    let verify = myriad_log(&["verify"], dir.path());
    assert_eq!(verify.status.code(), Some(1));
    let text = stdout(&verify);
    assert!(
        text.contains(&format!("{file} at offset {offset}")),
        "{text}"
    );
}

#[test]
fn torn_tail_is_a_warning() {
    let dir = disk_dir("myriad-log-torn");
    build_wal(dir.path(), 20);
    let &(segment, offset, body) = records(dir.path()).last().expect("records");
    let file = engine::wal::format::segment_file_name(segment);
    flip_byte(&dir.path().join(&file), offset + 32 + body / 2);

    let verify = myriad_log(&["verify"], dir.path());
    assert_eq!(verify.status.code(), Some(0));
    let text = stdout(&verify);
    assert!(text.contains("19 record(s) (seq 1..=19)"), "{text}");
    assert!(text.contains(&format!(
        "torn tail at {}:{offset}",
        dir.path().join(&file).display()
    )));
    assert!(text.contains("cleared on recovery"));
    assert!(text.trim_end().ends_with("OK, with 1 warning(s)"), "{text}");
    let dump = myriad_log(&["dump", "--json"], dir.path());
    assert_eq!(dump.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&dump.stderr).contains("torn tail at"));
    assert_eq!(
        json_lines(&dump)
            .iter()
            .filter(|v| v["kind"] == "record")
            .count(),
        19
    );
}

#[test]
fn damaged_header_of_last_segment_is_corruption() {
    let dir = disk_dir("myriad-log-header");
    build_wal(dir.path(), 40);
    let last_segment = records(dir.path()).last().expect("records").0;
    let file = engine::wal::format::segment_file_name(last_segment);
    flip_byte(&dir.path().join(&file), 20);

    let verify = myriad_log(&["verify"], dir.path());
    assert_eq!(verify.status.code(), Some(1));
    let text = stdout(&verify);
    assert!(text.contains(&format!("{file} at offset 0")), "{text}");
}

#[test]
fn bad_directories_are_usage_errors() {
    let dir = disk_dir("myriad-log-bad");
    let missing = dir.path().join("nope");
    let out = myriad_log(&["verify"], &missing);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"));

    std::fs::write(dir.path().join("notes.txt"), "hello").expect("write");
    for cmd in ["verify", "dump", "stat", "segments"] {
        let out = myriad_log(&[cmd], dir.path());
        assert_eq!(out.status.code(), Some(2), "{cmd}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("not a WAL directory"));
    }
    let out = myriad_log(&["verify"], &dir.path().join("notes.txt"));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a directory"));

    std::fs::write(dir.path().join(SEGMENT_1), vec![0xA5u8; 8192]).expect("write");
    let out = myriad_log(&["dump", "--from", "5", "--to", "2"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    // A garbage file named like a segment: its header sector is not blank,
    // so recovery refuses it as corruption, and so does verify.
    let out = myriad_log(&["verify"], dir.path());
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
}

#[test]
fn missing_middle_segment_is_corruption() {
    let dir = disk_dir("myriad-log-missing");
    build_wal(dir.path(), 40);
    std::fs::remove_file(dir.path().join("00000000000000000002.wal")).expect("remove");
    let verify = myriad_log(&["verify"], dir.path());
    assert_eq!(verify.status.code(), Some(1));
    assert!(stdout(&verify).contains("segment file 00000000000000000002.wal is missing"));
}

#[test]
fn an_oversized_segment_file_is_refused_not_allocated() {
    let dir = disk_dir("myriad-log-huge");
    build_wal(dir.path(), 40);
    // A sparse 3 GiB file under a segment's name: reading it whole would
    // allocate 3 GiB; it is refused as no segment this WAL could write.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.path().join("00000000000000000002.wal"))
        .expect("open");
    file.set_len(3 << 30).expect("grow");
    let verify = myriad_log(&["verify"], dir.path());
    assert_ne!(verify.status.code(), Some(0));
    let text = format!("{}{}", stdout(&verify), String::from_utf8_lossy(&verify.stderr));
    assert!(text.contains("00000000000000000002.wal") && text.contains("more than any segment"), "{text}");
}

#[test]
fn a_log_jump_is_recorded_with_a_compaction_mark() {
    let dir = disk_dir("myriad-log-gap");
    let path = dir.path().to_owned();
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(256 << 10)
        .make()
        .expect("executor")
        .run(async move {
            let wal = Wal::open_dir(&path, WalOptions::default())
                .await
                .expect("open");
            for index in [1, 2, 3, 9] {
                let mut batch = Batch::new();
                batch.push_entry(GroupId(7), Term(1), LogIndex(index), b"x");
                wal.append(&batch).await.expect("append");
            }
            wal.close().await.expect("close");
        });
    // The WAL explains the jump with a compaction mark at 8, so the log has
    // no gap and verify is content.
    let verify = myriad_log(&["verify"], dir.path());
    assert_eq!(verify.status.code(), Some(0));
    let dump = stdout(&myriad_log(&["dump", "--group", "7"], dir.path()));
    assert!(dump.contains("compact  group=7 through=8"), "{dump}");
}
