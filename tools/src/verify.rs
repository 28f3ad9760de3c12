//! `verify`: reads every record as recovery would (CRC, sequence continuity
//! across segments, archive validation, index rebuild) and says whether
//! recovery would open the WAL, cut a torn tail, or refuse it.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;

use engine::wal::index::Index;
use engine::wal::LogIndex;
use engine::wal::RecordLoc;

use crate::walk::{self, Outcome};
use crate::Verdict;

#[derive(Default)]
struct Counts {
    records: u64,
    entries: u64,
    record_bytes: u64,
    groups: BTreeSet<u64>,
}

pub fn run(dir: &Path, out: &mut dyn Write) -> anyhow::Result<Verdict> {
    let mut counts = Counts::default();
    let mut index = Index::default();
    let outcome = walk::scan(dir, |segment, record, batch| {
        counts.records += 1;
        counts.entries += batch.entry_count() as u64;
        counts.record_bytes += record.header.total_len();
        counts.groups.extend(batch.entries().map(|e| e.group.0));
        let loc = RecordLoc {
            segment,
            offset_bytes: record.offset_bytes,
        };
        // Rebuilding the index as recovery does checks that it accepts every record.
        index.apply(batch, loc, record.header.total_len());
        Ok(())
    })?;
    let report = match outcome {
        Outcome::Corrupt(e) => {
            writeln!(out, "{}", walk::describe(&e))?;
            writeln!(
                out,
                "CORRUPT: recovery would refuse to open {} ({} valid record(s) before the corruption)",
                dir.display(),
                counts.records
            )?;
            return Ok(Verdict::Corrupt);
        }
        Outcome::Healthy(report) => report,
    };
    let findings = walk::findings(dir, &report)?;
    let segments = match (report.used.first(), report.used.last()) {
        (Some(first), Some(last)) => format!(
            "{} segment(s) {}..={}",
            report.used.len(),
            walk::file_name(&first.path),
            walk::file_name(&last.path)
        ),
        _ => "no segment with records".into(),
    };
    writeln!(
        out,
        "{segments}, {} record(s) (seq {}..={}), {} entries of {} group(s), {} bytes of records",
        counts.records,
        report
            .used
            .first()
            .map_or(1, |s| s.header.first_record_seq.0),
        report.next_seq.0 - 1,
        counts.entries,
        counts.groups.len(),
        counts.record_bytes,
    )?;
    writeln!(out, "{} group(s) live after recovery", index.len())?;
    for note in &findings.notes {
        writeln!(out, "note: {note}")?;
    }
    for warning in &findings.warnings {
        writeln!(out, "warning: {warning}")?;
    }
    let gaps = gaps(&index);
    for gap in &gaps {
        writeln!(out, "warning: {gap}")?;
    }
    if !findings.lost.is_empty() {
        for lost in &findings.lost {
            writeln!(out, "{lost}")?;
        }
        writeln!(
            out,
            "CORRUPT: acknowledged records would be lost on recovery"
        )?;
        return Ok(Verdict::Corrupt);
    }
    match findings.warnings.len() + gaps.len() {
        0 => writeln!(out, "OK")?,
        n => writeln!(out, "OK, with {n} warning(s)")?,
    }
    Ok(Verdict::Healthy)
}

/// Groups whose log starts above their compaction point: the entries in
/// between are neither held nor compacted. The format allows it (an entry
/// beyond `last + 1` restarts a log), but the node always writes a
/// compaction mark with a snapshot, so such a gap means entries were lost.
fn gaps(index: &Index) -> Vec<String> {
    let mut out: Vec<(u64, String)> = index
        .logs()
        .filter(|(_, log)| !log.spans.is_empty())
        .filter(|(_, log)| log.first_index() > LogIndex(log.compacted.0 + 1))
        .map(|(g, log)| {
            let (first, compacted) = (log.first_index(), log.compacted);
            let what = format!(
                "group {g} holds entries from {first} but is compacted only through {compacted}: \
                 entries {}..={} are missing without a compaction mark",
                compacted.0 + 1,
                first.0 - 1
            );
            (g.0, what)
        })
        .collect();
    out.sort_unstable();
    out.into_iter().map(|(_, w)| w).collect()
}
