//! Rebuilding a core's groups at start: each from its snapshot file, then
//! the entries after it from one pass over the WAL (`Wal::replay_entries`),
//! mostly from the payloads the WAL's open scan kept: a record is read once
//! however many groups it holds. Entries share their record's allocation
//! until every entry of it is compacted away.

use std::sync::Arc;

use raftcore::{Config, ConfState, EntryKind, MemStorage, NodeId, RawNode, Storage};

use super::group::Group;
use crate::group_table::GroupTable;
use super::id_map::IdMap;
use super::shard::wal_error;
use super::snapshot_file::SnapshotDir;
use crate::kv::{KvStore, StateMachine};
use crate::wal::{self, DmaIo, Wal};

/// A group between its snapshot and its rebuilt log.
struct Pending {
    sm: KvStore,
    storage: MemStorage,
    /// The WAL entries the group needs: `lo..=last` (none when `lo > last`).
    lo: u64,
    last: u64,
    entries: Vec<raftcore::Entry>,
    /// The hard state the WAL holds for the group.
    hard_state: Option<wal::HardState>,
}

/// Rebuilds `groups` from `snapshots` and `wal`.
pub async fn recover_groups(
    wal: &Wal<DmaIo>,
    kept: wal::Kept,
    snapshots: &SnapshotDir,
    groups: impl IntoIterator<Item = u64>,
    voters: &[NodeId],
    cfg: Arc<Config>,
) -> anyhow::Result<GroupTable<Group>> {
    let mut pending = IdMap::default();
    for group in groups {
        pending.insert(group, from_snapshot(wal, snapshots, group, voters)?);
    }
    let mut bad_entry = None;
    wal.replay_entries(kept, |e| {
        let Some(p) = pending.get_mut(&e.group.0) else {
            return; // A group of another core, or one removed.
        };
        if !(p.lo..=p.last).contains(&e.index.0) {
            return; // Covered by the snapshot.
        }
        match to_raft_entry(e) {
            Ok(entry) => p.entries.push(entry),
            Err(err) => {
                bad_entry.get_or_insert(err);
            }
        }
    })
    .await
    .map_err(wal_error)?;
    if let Some(err) = bad_entry {
        return Err(err);
    }
    let mut out = GroupTable::default();
    for (group, p) in pending {
        out.insert(group, Box::new(finish(group, p, cfg.clone())?));
    }
    Ok(out)
}

/// The group as its snapshot file (or, without one, its voters) leaves it,
/// and the WAL entries it still needs.
fn from_snapshot(
    wal: &Wal<DmaIo>,
    snapshots: &SnapshotDir,
    group: u64,
    voters: &[NodeId],
) -> anyhow::Result<Pending> {
    let mut sm = KvStore::new();
    let storage = match snapshots.load(group)? {
        Some(s) => {
            sm.restore(&s.data)
                .map_err(|e| anyhow::anyhow!("group {group}: snapshot does not restore: {e}"))?;
            let mut storage = MemStorage::default();
            storage.apply_snapshot(s);
            storage
        }
        None => MemStorage::new(ConfState {
            voters: voters.to_vec(),
            ..Default::default()
        }),
    };
    let base = storage.last_index().0;
    let info = wal.group(wal::GroupId(group));
    let (lo, last) = match info {
        Some(info) => {
            let lo = info.first_index.0.max(base + 1);
            anyhow::ensure!(
                info.last_index.0 < lo || info.first_index.0 <= base + 1,
                "group {group}: the WAL starts at entry {} but the snapshot ends at {base}: entries are missing",
                info.first_index.0,
            );
            (lo, info.last_index.0)
        }
        None => (base + 1, base),
    };
    let wanted = (last + 1).saturating_sub(lo) as usize;
    Ok(Pending {
        sm,
        storage,
        lo,
        last,
        entries: Vec::with_capacity(wanted),
        hard_state: info.and_then(|i| i.hard_state),
    })
}

/// Puts the replayed entries and the WAL's hard state into the group.
fn finish(group: u64, mut p: Pending, cfg: Arc<Config>) -> anyhow::Result<Group> {
    if !p.entries.is_sorted_by_key(|e| e.index) {
        p.entries.sort_unstable_by_key(|e| e.index);
    }
    let expected = (p.last + 1).saturating_sub(p.lo);
    let contiguous = p
        .entries
        .iter()
        .zip(p.lo..)
        .all(|(e, index)| e.index.0 == index);
    anyhow::ensure!(
        p.entries.len() as u64 == expected && contiguous,
        "group {group}: the WAL replay gave {} entries for {}..={}, not each once",
        p.entries.len(),
        p.lo,
        p.last
    );
    let base = p.storage.last_index();
    p.storage.append_owned(p.entries);
    if let Some(hs) = p.hard_state {
        let commit = raftcore::LogIndex(hs.commit.0)
            .max(base)
            .min(p.storage.last_index());
        p.storage.set_hard_state(raftcore::HardState {
            term: raftcore::Term(hs.term.0),
            vote: NodeId(hs.vote),
            commit,
        });
    }
    p.sm.set_applied(p.storage.first_index().prev());
    let raw = RawNode::new_shared(cfg, group, p.storage)?;
    Ok(Group::new(group, raw, p.sm))
}

/// A WAL entry as a raftcore entry: the first payload byte is the kind.
fn to_raft_entry(e: wal::ReplayedEntry) -> anyhow::Result<raftcore::Entry> {
    let kind = e.payload.first().and_then(|&b| EntryKind::from_u8(b));
    let Some(kind) = kind else {
        anyhow::bail!(
            "group {}: WAL entry {} has no valid kind byte",
            e.group.0,
            e.index.0
        );
    };
    Ok(raftcore::Entry {
        term: raftcore::Term(e.term.0),
        index: raftcore::LogIndex(e.index.0),
        kind,
        data: e.payload.slice(1..),
    })
}
