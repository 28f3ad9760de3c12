//! One read-only pass over a WAL directory through the engine's own scan, so
//! the tool judges every byte exactly as recovery does, plus the few things
//! recovery decides without telling: the torn tail it would cut and the
//! unused segments it would delete.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use engine::wal::batch::ArchivedBatch;
use engine::wal::format::{parse_segment_file_name, record_at, segment_file_name, Record};
use engine::wal::limits::{BLOCK_BYTES, SEGMENT_HEADER_BYTES};
use engine::wal::scan::{scan_wal, DirSource, Image, ScanError, ScanReport, SegmentSource};
use engine::wal::{RecordSeq, SegmentSeq};

/// Other file names shown when a directory holds no segment.
const OTHER_NAMES_SHOWN_MAX: usize = 5;

/// What the scan concluded.
pub enum Outcome {
    /// Recovery would open this WAL (possibly cutting a torn tail).
    Healthy(ScanReport),
    /// Recovery would refuse it; the error names file and offset.
    Corrupt(ScanError),
}

/// Checks that `dir` is a directory holding at least one segment file.
pub fn check_dir(dir: &Path) -> anyhow::Result<()> {
    let meta = fs::metadata(dir)
        .with_context(|| format!("cannot open WAL directory {}", dir.display()))?;
    if !meta.is_dir() {
        bail!(
            "{} is not a directory; pass the WAL directory of one core",
            dir.display()
        );
    }
    let listing =
        fs::read_dir(dir).with_context(|| format!("listing WAL directory {}", dir.display()))?;
    let mut segments = 0u64;
    let mut others = Vec::new();
    for entry in listing {
        let entry = entry.with_context(|| format!("listing WAL directory {}", dir.display()))?;
        let name = entry.file_name();
        match name.to_str().and_then(parse_segment_file_name) {
            Some(_) => segments += 1,
            None => others.push(name.to_string_lossy().into_owned()),
        }
    }
    if segments > 0 {
        return Ok(());
    }
    if others.is_empty() {
        bail!(
            "{} is empty: no WAL segment files (named like {})",
            dir.display(),
            segment_file_name(SegmentSeq(1))
        );
    }
    others.sort_unstable();
    let more = others.len().saturating_sub(OTHER_NAMES_SHOWN_MAX);
    others.truncate(OTHER_NAMES_SHOWN_MAX);
    let more = if more > 0 {
        format!(" and {more} more")
    } else {
        String::new()
    };
    bail!(
        "{} is not a WAL directory: no segment files named like {} (found {}{more})",
        dir.display(),
        segment_file_name(SegmentSeq(1)),
        others.join(", ")
    )
}

/// Scans the WAL in `dir`, calling `visit` for every valid record in log
/// order. I/O errors (and errors of `visit`) are `Err`; corruption is an
/// `Outcome`.
pub fn scan<F>(dir: &Path, mut visit: F) -> anyhow::Result<Outcome>
where
    F: FnMut(SegmentSeq, &Record<'_>, &ArchivedBatch) -> anyhow::Result<()>,
{
    check_dir(dir)?;
    let src = DirSource {
        dir: dir.to_owned(),
    };
    let mut failed: Option<anyhow::Error> = None;
    let result = scan_wal(&src, |segment, record, batch| {
        check_indexable(&src, segment, record, batch)?;
        visit(segment, record, batch).map_err(|e| {
            failed = Some(e);
            // Any error stops the scan; the real one is in `failed`.
            ScanError::Io {
                path: src.path(segment),
                source: std::io::Error::other("stopped"),
            }
        })
    });
    if let Some(e) = failed {
        return Err(e);
    }
    match result {
        Ok(report) => Ok(Outcome::Healthy(report)),
        Err(ScanError::Io { path, source }) => {
            Err(anyhow::Error::new(source).context(format!("reading {}", path.display())))
        }
        Err(corrupt) => Ok(Outcome::Corrupt(corrupt)),
    }
}

/// Rejects what the record format allows but the engine's index cannot take
/// (it would panic on it): an entry at log index 0, an offset beyond u32.
fn check_indexable(
    src: &DirSource,
    segment: SegmentSeq,
    record: &Record<'_>,
    batch: &ArchivedBatch,
) -> Result<(), ScanError> {
    let corrupt = |what: String| ScanError::Corrupt {
        path: src.path(segment),
        offset_bytes: record.offset_bytes,
        what,
    };
    if u32::try_from(record.next_offset()).is_err() {
        return Err(corrupt("record lies beyond 4 GiB into its segment".into()));
    }
    if let Some((slot, e)) = batch.entries().enumerate().find(|(_, e)| e.index.0 == 0) {
        let what = format!("entry {slot} (group {}) has log index 0", e.group);
        return Err(corrupt(what));
    }
    Ok(())
}

/// One line naming the file and offset of a corruption.
pub fn describe(e: &ScanError) -> String {
    match e {
        ScanError::Corrupt {
            path,
            offset_bytes,
            what,
        } => format!(
            "corruption in {} at offset {offset_bytes}: {what}",
            path.display()
        ),
        ScanError::MissingSegment { dir, missing } => format!(
            "corruption in {}: segment file {} is missing between existing segments",
            dir.display(),
            segment_file_name(*missing)
        ),
        ScanError::Io { .. } => e.to_string(),
    }
}

/// Where the log ends in bytes that are not zero: a write cut short by a crash.
pub struct TornTail {
    pub path: PathBuf,
    pub offset_bytes: u64,
    pub why: String,
}

impl fmt::Display for TornTail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "torn tail at {}:{} ({}): a write cut short, or records of a reused segment's earlier life; cleared on recovery",
            self.path.display(),
            self.offset_bytes,
            self.why
        )
    }
}

/// The torn tail of the last used segment, if its end is followed by
/// non-zero bytes (a clean end is followed by zeroes only).
pub fn torn_tail(report: &ScanReport) -> Option<TornTail> {
    let last = report.used.last()?;
    report.dirty_end_bytes?;
    Some(TornTail {
        path: last.path.clone(),
        offset_bytes: last.end_offset_bytes,
        why: last
            .stop
            .clone()
            .unwrap_or_else(|| "non-zero bytes after the last record".into()),
    })
}

/// A segment after the last used one whose header does not read back.
pub enum Unused {
    /// All zero: preallocated, never written.
    Blank,
    /// Its first write tore (header unwritten or damaged).
    Torn,
    /// It holds a valid record written after `missing` was reported durable,
    /// so its header was damaged after the fact: recovery deletes the
    /// segment and loses acknowledged records.
    Lost {
        offset_bytes: u64,
        seq: RecordSeq,
        missing: RecordSeq,
    },
}

/// Classifies each unused segment of `report` by reading it again.
pub fn unused_segments(
    dir: &Path,
    report: &ScanReport,
) -> anyhow::Result<Vec<(SegmentSeq, PathBuf, Unused)>> {
    let src = DirSource {
        dir: dir.to_owned(),
    };
    let mut image = Image::new();
    let mut out = Vec::new();
    for &segment in &report.unused {
        let path = src.path(segment);
        src.read(segment, &mut image)
            .with_context(|| format!("reading {}", path.display()))?;
        let kind = classify_unused(&image, report.next_seq);
        out.push((segment, path, kind));
    }
    Ok(out)
}

fn classify_unused(image: &[u8], missing: RecordSeq) -> Unused {
    if image.iter().all(|&b| b == 0) {
        return Unused::Blank;
    }
    let firsts = std::iter::once(SEGMENT_HEADER_BYTES);
    let blocks = (1..).map(|b| b * BLOCK_BYTES);
    for offset in firsts.chain(blocks) {
        if offset >= image.len() as u64 {
            break;
        }
        if let Ok(r) = record_at(image, offset) {
            if r.header.synced_seq >= missing {
                return Unused::Lost {
                    offset_bytes: offset,
                    seq: r.header.seq,
                    missing,
                };
            }
        }
    }
    Unused::Torn
}

/// The file name of a path, for tables.
pub fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// What a healthy scan leaves unsaid, in words.
#[derive(Default)]
pub struct Findings {
    /// Torn writes recovery would cut or delete.
    pub warnings: Vec<String>,
    /// Preallocated segments and the like.
    pub notes: Vec<String>,
    /// Acknowledged records recovery would delete without an error.
    pub lost: Vec<String>,
}

pub fn findings(dir: &Path, report: &ScanReport) -> anyhow::Result<Findings> {
    let mut f = Findings::default();
    if let Some(tail) = torn_tail(report) {
        f.warnings.push(tail.to_string());
    }
    let mut blank = Vec::new();
    for (_, path, kind) in unused_segments(dir, report)? {
        match kind {
            Unused::Blank => blank.push(file_name(&path)),
            Unused::Torn => f.warnings.push(format!(
                "torn tail at {}:0 (segment header unwritten or torn), the segment would be removed on recovery",
                path.display()
            )),
            Unused::Lost {
                offset_bytes,
                seq,
                missing,
            } => f.lost.push(format!(
                "corruption in {} at offset 0: segment header unreadable, but record {seq} at offset \
                 {offset_bytes} was written after record {missing} was durable; recovery would delete \
                 this segment and the acknowledged records in it",
                path.display()
            )),
        }
    }
    if !blank.is_empty() {
        f.notes.push(format!(
            "{} preallocated segment(s) not yet written: {}",
            blank.len(),
            blank.join(", ")
        ));
    }
    Ok(f)
}

/// For commands whose stdout is data: says on stderr what recovery would
/// cut, and whether the WAL is corrupt.
pub fn conclude_on_stderr(dir: &Path, outcome: &Outcome) -> anyhow::Result<crate::Verdict> {
    match outcome {
        Outcome::Healthy(report) => {
            let f = findings(dir, report)?;
            for w in &f.warnings {
                eprintln!("myriad-log: warning: {w}");
            }
            for l in &f.lost {
                eprintln!("myriad-log: {l}");
            }
            Ok(if f.lost.is_empty() {
                crate::Verdict::Healthy
            } else {
                crate::Verdict::Corrupt
            })
        }
        Outcome::Corrupt(e) => {
            eprintln!("myriad-log: {}", describe(e));
            Ok(crate::Verdict::Corrupt)
        }
    }
}
