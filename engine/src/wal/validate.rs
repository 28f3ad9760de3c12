//! Checking a batch at `submit`, before it can reach the disk: log indexes
//! no log can hold are refused, and so are entries at or below their group's
//! compaction mark; a group's log that would jump past its last entry gets
//! the compaction mark that makes the jump explicit. Recovery
//! treats a log with entries neither held nor compacted as corruption, so a
//! batch must never leave one behind.
//!
//! The check runs against each group's log as every batch submitted so far
//! leaves it (`Tail`), not the index, which only knows durable records.

use super::batch::{Batch, BatchDefect};
use super::error::WalError;
use super::index::{GroupMap, Index};
use super::types::{GroupId, LogIndex};
use crate::group_table::{GroupTable, Prefetch};

/// Where a group's log stands once every submitted batch is applied.
/// Invariant: `compacted <= last`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Tail {
    pub last: LogIndex,
    pub compacted: LogIndex,
}

impl Prefetch for Tail {
    type Visit = ();

    fn prefetch_parts(&self, (): ()) {}
}

/// The tails of every group a submitted batch left behind: a batch reaches
/// many cold groups, whose tails are loaded a few groups ahead.
pub(super) type Tails = GroupTable<Tail>;

/// The tails of the groups of a recovered index.
pub(super) fn tails_of(index: &Index) -> Tails {
    let mut tails = Tails::default();
    for (group, log) in index.logs() {
        let tail = Tail {
            last: log.last_index(),
            compacted: log.compacted,
        };
        tails.insert(group.0, Box::new(tail));
    }
    tails
}

/// What a checked batch changes: the new tails (`None`: group removed), and
/// the compaction marks to add to the batch before it is encoded.
pub(super) struct Checked {
    pub tails: GroupMap<Option<Tail>>,
    pub implied_compactions: Vec<(GroupId, LogIndex)>,
}

impl Checked {
    pub fn commit(self, tails: &mut Tails) {
        for (group, tail) in self.tails {
            match tail {
                Some(t) => *tails.get_or_default(group.0) = t,
                None => drop(tails.remove(group.0)),
            }
        }
    }
}

/// Applies `batch` to `tails` in the order the index applies it (truncations,
/// entries, hard states, compactions, removals) without changing them.
///
/// An entry beyond `last + 1` restarts the group's log there (a snapshot
/// covers what comes before). Unless the batch compacts through the entry
/// before it, the compaction mark is implied and returned, so that the jump
/// is recorded; an entry of the same batch at or below an implied mark is
/// refused, since the mark (applied after the entries) would discard it.
pub(super) fn check_batch(tails: &Tails, batch: &Batch) -> Result<Checked, WalError> {
    let invalid = |group: GroupId, what: String| WalError::InvalidBatch { group, what };
    if let Err(defect) = batch.check() {
        let BatchDefect::LogIndex { group, .. } = defect else {
            unreachable!("Batch::check reports log indexes only: {defect}");
        };
        return Err(invalid(GroupId(group), defect.to_string()));
    }
    let mut out = Checked {
        tails: GroupMap::with_capacity_and_hasher(batch.groups_touched().count(), Default::default()),
        implied_compactions: Vec::new(),
    };
    if batch.is_rewrite() {
        return Ok(out); // Copies: they change no log.
    }
    let current = |out: &Checked, group: GroupId| match out.tails.get(&group) {
        Some(t) => *t,
        None => tails.get(group.0).copied(),
    };
    for (group, from) in batch.truncations() {
        if let Some(mut t) = current(&out, group) {
            t.last = t.compacted.max(t.last.min(LogIndex(from.0 - 1)));
            out.tails.insert(group, Some(t));
        }
    }
    // Within a run only the first entry can jump or go back: the rest
    // follow it.
    let runs: Vec<(GroupId, LogIndex, u32)> = batch.runs().collect();
    tails.prefetch_start((), |k| runs.get(k).map(|r| r.0 .0));
    for (i, &(group, index, count)) in runs.iter().enumerate() {
        tails.prefetch_ahead((), |k| runs.get(i + k).map(|r| r.0 .0));
        let mut t = current(&out, group).unwrap_or_default();
        let implied = out
            .implied_compactions
            .iter()
            .rev()
            .find(|(g, _)| *g == group);
        if let Some(&(_, mark)) = implied.filter(|(_, mark)| index <= *mark) {
            let what = format!(
                "entry {index} lies at or below {mark}, where an earlier entry of the batch restarted the log"
            );
            return Err(invalid(group, what));
        }
        if index <= t.compacted {
            // It would lower the mark, which a compaction record (applied
            // with `max`) in a later rewrite could not restore.
            let what = format!(
                "entry {index} lies at or below the compaction mark {}",
                t.compacted
            );
            return Err(invalid(group, what));
        }
        if index.0 > t.last.0 + 1 {
            let covered = batch
                .compactions()
                .any(|(g, c)| g == group && c.0 + 1 >= index.0);
            if !covered {
                out.implied_compactions.push((group, LogIndex(index.0 - 1)));
            }
        }
        t.last = LogIndex(index.0 + u64::from(count) - 1);
        out.tails.insert(group, Some(t));
    }
    for group in batch.hard_state_groups() {
        let t = current(&out, group).unwrap_or_default();
        out.tails.insert(group, Some(t));
    }
    let implied = out.implied_compactions.clone();
    for (group, index) in batch.compactions().chain(implied) {
        let mut t = current(&out, group).unwrap_or_default();
        t.compacted = t.compacted.max(index);
        t.last = t.last.max(t.compacted);
        out.tails.insert(group, Some(t));
    }
    for group in batch.removals() {
        out.tails.insert(group, None);
    }
    Ok(out)
}
