//! Helpers shared by the WAL tests: an executor, deterministic payloads, and
//! a model of what every group's log should hold.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use engine::wal::{Batch, GroupId, Kept, LogIndex, Term, Wal, WalIo, WalOptions};

pub use engine::wal::sim::run;

/// A directory on the real disk (not tmpfs) for O_DIRECT tests.
pub fn disk_dir(name: &str) -> tempfile::TempDir {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&base).expect("target tmpdir");
    tempfile::Builder::new()
        .prefix(name)
        .tempdir_in(base)
        .expect("tempdir")
}

pub fn small_opts() -> WalOptions {
    WalOptions {
        segment_size_bytes: 64 << 10,
        write_bytes_max: 32 << 10,
        ..WalOptions::default()
    }
}

/// The payload of (group, index, term): checkable after recovery.
pub fn payload(group: u64, index: u64, term: u64, len: usize) -> Vec<u8> {
    let seed =
        group.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ index.rotate_left(17) ^ term.rotate_left(40);
    (0..len)
        .map(|i| {
            (seed
                .wrapping_add(i as u64)
                .wrapping_mul(0x2545_F491_4F6C_DD1D)
                >> 56) as u8
        })
        .collect()
}

/// Small segments and rewrites past 4 of them: purges rewrite soon.
pub fn gc_opts() -> WalOptions {
    WalOptions {
        segments_soft_max: 4,
        ..small_opts()
    }
}

/// Appends `rounds` batches, each one `round` of entries of `len` bytes.
pub async fn write_rounds<I: WalIo>(wal: &Wal<I>, model: &mut Model, rounds: u64, len: usize) {
    for _ in 0..rounds {
        wal.append(&round(model, len)).await.expect("append");
    }
}

/// A batch of the next entry of `len` bytes for groups 1..=3.
pub fn round(model: &mut Model, len: usize) -> Batch {
    let mut batch = Batch::new();
    for group in 1..=3 {
        let index = model.last(group) + 1;
        model.push(&mut batch, group, index, 1, len);
    }
    batch
}

/// What each group's log must hold: index -> (term, payload).
#[derive(Clone, Debug, Default)]
pub struct Model {
    pub groups: BTreeMap<u64, BTreeMap<u64, (u64, Vec<u8>)>>,
}

impl Model {
    pub fn push(&mut self, batch: &mut Batch, group: u64, index: u64, term: u64, len: usize) {
        let p = payload(group, index, term, len);
        batch.push_entry(GroupId(group), Term(term), LogIndex(index), &p);
        let log = self.groups.entry(group).or_default();
        log.split_off(&index);
        log.insert(index, (term, p));
    }

    pub fn compact(&mut self, batch: &mut Batch, group: u64, index: u64) {
        batch.compact(GroupId(group), LogIndex(index));
        if let Some(log) = self.groups.get_mut(&group) {
            *log = log.split_off(&(index + 1));
        }
    }

    pub fn last(&self, group: u64) -> u64 {
        self.groups
            .get(&group)
            .and_then(|l| l.keys().next_back().copied())
            .unwrap_or(0)
    }
}

/// Asserts the WAL holds exactly what the model says, for every model group,
/// read group by group and in one pass (`replay_entries`).
pub async fn check<I: WalIo>(wal: &Wal<I>, model: &Model) {
    check_reads(wal, model).await;
    check_replay(wal, model, Kept::default()).await;
}

/// The one-pass replay, with what open kept, hands out every model entry
/// exactly once.
pub async fn check_replay<I: WalIo>(wal: &Wal<I>, model: &Model, kept: Kept) {
    let mut replayed: BTreeMap<u64, BTreeMap<u64, (u64, Vec<u8>)>> = BTreeMap::new();
    let mut others = 0u64;
    let visited = wal
        .replay_entries(kept, |e| {
            if !model.groups.contains_key(&e.group.0) {
                others += 1;
                return;
            }
            let old = replayed
                .entry(e.group.0)
                .or_default()
                .insert(e.index.0, (e.term.0, e.payload.to_vec()));
            assert!(old.is_none(), "{}/{} replayed twice", e.group, e.index);
        })
        .await
        .expect("replay");
    let expected: BTreeMap<u64, BTreeMap<u64, (u64, Vec<u8>)>> = model
        .groups
        .iter()
        .filter(|(_, log)| !log.is_empty())
        .map(|(&g, log)| (g, log.clone()))
        .collect();
    assert!(replayed == expected, "replay differs from the model");
    let model_entries: u64 = expected.values().map(|l| l.len() as u64).sum();
    assert_eq!(visited, model_entries + others);
}

async fn check_reads<I: WalIo>(wal: &Wal<I>, model: &Model) {
    for (&group, log) in &model.groups {
        let Some((&first, _)) = log.iter().next() else {
            continue;
        };
        let last = *log.keys().next_back().expect("non-empty");
        let info = wal
            .group(GroupId(group))
            .unwrap_or_else(|| panic!("group {group} missing"));
        assert_eq!(
            (info.first_index.0, info.last_index.0),
            (first, last),
            "group {group} range"
        );
        let got = wal
            .entries(GroupId(group), LogIndex(first), LogIndex(last + 1))
            .await
            .expect("read");
        assert_eq!(got.len() as u64, last - first + 1);
        for e in got {
            let (term, p) = &log[&e.index.0];
            assert_eq!(
                (e.term.0, &e.payload),
                (*term, p),
                "group {group} index {}",
                e.index
            );
        }
    }
}
