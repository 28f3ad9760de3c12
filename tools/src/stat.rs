//! `stat`: each group as recovery would rebuild it, using the engine's own
//! index, plus the payload bytes its live entries hold.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use engine::wal::index::{GroupLog, Index};
use engine::wal::{RecordLoc, SegmentSeq};
use serde_json::json;

use crate::walk::{self, Outcome};
use crate::Verdict;

/// Payload length of every entry slot of every record holding entries.
type SlotLens = HashMap<(SegmentSeq, u64), Vec<u32>>;

pub fn run(dir: &Path, as_json: bool, out: &mut dyn Write) -> anyhow::Result<Verdict> {
    let mut index = Index::default();
    let mut lens = SlotLens::new();
    let outcome = walk::scan(dir, |segment, record, batch| {
        let loc = RecordLoc {
            segment,
            offset_bytes: record.offset_bytes,
        };
        index.apply(batch, loc, record.header.total_len());
        if batch.entry_count() > 0 {
            let slots = batch.entries().map(|e| e.payload.len() as u32).collect();
            lens.insert((segment, record.offset_bytes), slots);
        }
        Ok(())
    })?;
    if let Outcome::Healthy(_) = outcome {
        print_groups(&index, &lens, as_json, out)?;
    }
    out.flush()?;
    walk::conclude_on_stderr(dir, &outcome)
}

fn payload_bytes(log: &GroupLog, lens: &SlotLens) -> u64 {
    let mut total = 0;
    for span in &log.spans {
        let key = (span.segment, u64::from(span.offset_bytes));
        let Some(slots) = lens.get(&key) else {
            continue; // Unreachable: every span points at a record we saw.
        };
        let range = span.slot as usize..(span.slot + span.count) as usize;
        total += slots
            .get(range)
            .map_or(0, |s| s.iter().map(|&l| u64::from(l)).sum());
    }
    total
}

fn print_groups(
    index: &Index,
    lens: &SlotLens,
    as_json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let mut groups: Vec<_> = index.logs().collect();
    groups.sort_unstable_by_key(|(g, _)| *g);
    if !as_json {
        writeln!(
            out,
            "{:>8}  {:>10}  {:>10}  {:>9}  {:>9}  {:>12}  {:>10}  {:>8}  HARD_STATE",
            "GROUP", "FIRST", "LAST", "LAST_TERM", "ENTRIES", "BYTES", "COMPACTED", "OLDEST"
        )?;
    }
    let (mut entries_total, mut bytes_total) = (0u64, 0u64);
    for (group, log) in groups.iter().copied() {
        let bytes = payload_bytes(log, lens);
        let entries = log.entry_count();
        entries_total += entries;
        bytes_total += bytes;
        let hard = log.hard_state.map(|(h, _)| h);
        if as_json {
            let line = json!({
                "group": group.0,
                "first_index": log.first_index().0,
                "last_index": log.last_index().0,
                "last_term": log.last_term().map(|t| t.0),
                "entries": entries,
                "payload_bytes": bytes,
                "compacted": log.compacted.0,
                "oldest_segment": log.oldest_segment().map(|s| s.0),
                "hard_state": hard.map(|h| json!({
                    "term": h.term.0, "vote": h.vote, "commit": h.commit.0,
                })),
            });
            writeln!(out, "{line}")?;
            continue;
        }
        let last_term = log.last_term().map_or("-".into(), |t| t.to_string());
        let oldest = log.oldest_segment().map_or("-".into(), |s| s.to_string());
        let hard = hard.map_or("-".into(), |h| {
            format!("term={} vote={} commit={}", h.term, h.vote, h.commit)
        });
        writeln!(
            out,
            "{group:>8}  {:>10}  {:>10}  {last_term:>9}  {entries:>9}  {bytes:>12}  {:>10}  {oldest:>8}  {hard}",
            log.first_index(),
            log.last_index(),
            log.compacted,
        )?;
    }
    if !as_json {
        writeln!(
            out,
            "{} group(s), {entries_total} live entries, {bytes_total} payload bytes",
            groups.len()
        )?;
    }
    Ok(())
}
