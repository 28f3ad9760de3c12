//! `segments`: one line per segment file, from the directory listing and
//! what the scan found in each.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;

use anyhow::Context;
use engine::wal::format::{parse_segment_file_name, segment_file_name};
use engine::wal::scan::ScanError;
use engine::wal::{RecordSeq, SegmentSeq};

use crate::walk::{self, Outcome};
use crate::Verdict;

/// What the scan saw of one segment's valid records.
#[derive(Default)]
struct Seen {
    records: u64,
    first_seq: Option<RecordSeq>,
    last_seq: RecordSeq,
    groups: BTreeSet<u64>,
    entries: u64,
    /// Offset after the last valid record.
    end_bytes: u64,
}

pub fn run(dir: &Path, out: &mut dyn Write) -> anyhow::Result<Verdict> {
    let mut seen: BTreeMap<SegmentSeq, Seen> = BTreeMap::new();
    let outcome = walk::scan(dir, |segment, record, batch| {
        let s = seen.entry(segment).or_default();
        s.records += 1;
        s.first_seq.get_or_insert(record.header.seq);
        s.last_seq = record.header.seq;
        s.entries += batch.entry_count() as u64;
        s.end_bytes = record.next_offset();
        s.groups.extend(batch.entries().map(|e| e.group.0));
        s.groups.extend(batch.hard_states().map(|(g, _)| g.0));
        s.groups.extend(batch.truncations().map(|(g, _)| g.0));
        s.groups.extend(batch.compactions().map(|(g, _)| g.0));
        s.groups.extend(batch.removals().map(|g| g.0));
        Ok(())
    })?;
    writeln!(
        out,
        "{:<24}  {:>10}  {:>7}  {:>21}  {:>6}  {:>8}  {:>10}  STATUS",
        "FILE", "BYTES", "RECORDS", "SEQ", "GROUPS", "ENTRIES", "USED"
    )?;
    let mut totals = (0u64, 0u64, 0u64);
    for (segment, file_bytes) in segment_files(dir)? {
        let s = seen.get(&segment);
        let status = status(&outcome, segment);
        let (records, seq, groups, entries, used) = match s {
            Some(s) => {
                totals = (totals.0 + 1, totals.1 + s.records, totals.2 + s.entries);
                let first = s.first_seq.unwrap_or_default();
                (
                    s.records.to_string(),
                    format!("{first}..={}", s.last_seq),
                    s.groups.len().to_string(),
                    s.entries.to_string(),
                    s.end_bytes.to_string(),
                )
            }
            None => ("0".into(), "-".into(), "0".into(), "0".into(), "-".into()),
        };
        writeln!(
            out,
            "{:<24}  {file_bytes:>10}  {records:>7}  {seq:>21}  {groups:>6}  {entries:>8}  {used:>10}  {status}",
            segment_file_name(segment)
        )?;
    }
    writeln!(
        out,
        "{} segment(s) with records, {} record(s), {} entries",
        totals.0, totals.1, totals.2
    )?;
    out.flush()?;
    walk::conclude_on_stderr(dir, &outcome)
}

/// Segment files in the directory with their sizes, in sequence order.
fn segment_files(dir: &Path) -> anyhow::Result<Vec<(SegmentSeq, u64)>> {
    let mut out = Vec::new();
    let listing = std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))?;
    for entry in listing {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let Some(segment) = entry.file_name().to_str().and_then(parse_segment_file_name) else {
            continue;
        };
        // A segment deleted by a running node since the scan: skip it.
        if let Ok(meta) = entry.metadata() {
            out.push((segment, meta.len()));
        }
    }
    out.sort_unstable();
    Ok(out)
}

fn status(outcome: &Outcome, segment: SegmentSeq) -> String {
    match outcome {
        Outcome::Healthy(report) => {
            if report.unused.contains(&segment) {
                return "unused (no segment header)".into();
            }
            let last = report.used.last().is_some_and(|l| l.segment == segment);
            match walk::torn_tail(report) {
                Some(tail) if last => format!("torn tail at {}", tail.offset_bytes),
                _ if report.used.iter().any(|u| u.segment == segment) => "ok".into(),
                _ => "appeared after scan".into(),
            }
        }
        Outcome::Corrupt(ScanError::Corrupt {
            path: bad,
            offset_bytes,
            ..
        }) => {
            let bad_segment = bad
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(parse_segment_file_name);
            match bad_segment {
                Some(b) if b == segment => format!("CORRUPT at {offset_bytes}"),
                Some(b) if segment < b => "ok".into(),
                _ => "not scanned".into(),
            }
        }
        Outcome::Corrupt(_) => "not scanned".into(),
    }
}
