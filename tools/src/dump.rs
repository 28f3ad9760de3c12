//! `dump`: every record in log order with what it carries, as text for
//! people or as one JSON object per line for scripts.

use std::io::Write;
use std::path::PathBuf;

use anyhow::bail;
use engine::wal::batch::ArchivedBatch;
use engine::wal::format::{segment_file_name, Record};
use engine::wal::{EntryRef, GroupId, HardState, LogIndex, SegmentSeq};
use serde_json::json;

use crate::payload;
use crate::walk;
use crate::Verdict;

#[derive(clap::Args)]
pub struct Args {
    /// The WAL directory of one core.
    dir: PathBuf,
    /// Only what concerns this group; records without any are left out.
    #[arg(long)]
    group: Option<u64>,
    /// Only entries at or above this log index (and the truncations and
    /// compactions that affect them; hard states are then left out).
    #[arg(long)]
    from: Option<u64>,
    /// Only entries at or below this log index (as for --from).
    #[arg(long)]
    to: Option<u64>,
    /// One JSON object per line: each record, then each of its items.
    #[arg(long)]
    json: bool,
    /// Print payloads whole instead of cut to a screen width.
    #[arg(long)]
    full: bool,
}

/// What to show. Invariant: `from <= to`.
struct Filter {
    group: Option<GroupId>,
    from: LogIndex,
    to: LogIndex,
    ranged: bool,
}

impl Filter {
    fn any(&self) -> bool {
        self.group.is_some() || self.ranged
    }
    fn group(&self, g: GroupId) -> bool {
        self.group.is_none_or(|want| want == g)
    }
    fn index(&self, i: LogIndex) -> bool {
        (self.from..=self.to).contains(&i)
    }
}

/// One thing a record carries, in the order recovery applies them.
enum Item<'a> {
    Truncation(GroupId, LogIndex),
    Entry(EntryRef<'a>),
    HardState(GroupId, HardState),
    Compaction(GroupId, LogIndex),
    Removal(GroupId),
}

pub fn run(args: &Args, out: &mut dyn Write) -> anyhow::Result<Verdict> {
    let filter = Filter {
        group: args.group.map(GroupId),
        from: LogIndex(args.from.unwrap_or(0)),
        to: LogIndex(args.to.unwrap_or(u64::MAX)),
        ranged: args.from.is_some() || args.to.is_some(),
    };
    if filter.from > filter.to {
        bail!("--from {} is above --to {}", filter.from, filter.to);
    }
    let outcome = walk::scan(&args.dir, |segment, record, batch| {
        let items = select(&filter, batch);
        if filter.any() && items.is_empty() {
            return Ok(());
        }
        if args.json {
            print_json(out, segment, record, batch, &items, args.full)
        } else {
            print_text(out, segment, record, batch, &items, args.full)
        }
    })?;
    out.flush()?;
    walk::conclude_on_stderr(&args.dir, &outcome)
}

fn select<'a>(f: &Filter, batch: &'a ArchivedBatch) -> Vec<Item<'a>> {
    let mut items = Vec::new();
    for (g, from) in batch.truncations() {
        if f.group(g) && from <= f.to {
            items.push(Item::Truncation(g, from));
        }
    }
    for e in batch.entries() {
        if f.group(e.group) && f.index(e.index) {
            items.push(Item::Entry(e));
        }
    }
    for (g, h) in batch.hard_states() {
        if f.group(g) && !f.ranged {
            items.push(Item::HardState(g, h));
        }
    }
    for (g, index) in batch.compactions() {
        if f.group(g) && index >= f.from {
            items.push(Item::Compaction(g, index));
        }
    }
    for g in batch.removals() {
        if f.group(g) {
            items.push(Item::Removal(g));
        }
    }
    items
}

fn print_text(
    out: &mut dyn Write,
    segment: SegmentSeq,
    record: &Record<'_>,
    batch: &ArchivedBatch,
    items: &[Item<'_>],
    full: bool,
) -> anyhow::Result<()> {
    let h = &record.header;
    write!(
        out,
        "record seq={} file={} offset={} len={} body={} synced={} entries={}",
        h.seq,
        segment_file_name(segment),
        record.offset_bytes,
        h.total_len(),
        h.body_len,
        h.synced_seq,
        batch.entry_count()
    )?;
    match batch.rewrite_cut_segment() {
        Some(cut) => writeln!(out, " rewrite-of-segments<={cut}")?,
        None => writeln!(out)?,
    }
    for item in items {
        match item {
            Item::Truncation(g, from) => writeln!(out, "  truncate group={g} from={from}")?,
            Item::Entry(e) => writeln!(
                out,
                "  entry    group={} index={} term={} len={} {}",
                e.group,
                e.index,
                e.term,
                e.payload.len(),
                payload::show(e.payload, full).human()
            )?,
            Item::HardState(g, s) => writeln!(
                out,
                "  hard     group={g} term={} vote={} commit={}",
                s.term, s.vote, s.commit
            )?,
            Item::Compaction(g, index) => writeln!(out, "  compact  group={g} through={index}")?,
            Item::Removal(g) => writeln!(out, "  remove   group={g}")?,
        }
    }
    Ok(())
}

fn print_json(
    out: &mut dyn Write,
    segment: SegmentSeq,
    record: &Record<'_>,
    batch: &ArchivedBatch,
    items: &[Item<'_>],
    full: bool,
) -> anyhow::Result<()> {
    let h = &record.header;
    let seq = h.seq.0;
    let head = json!({
        "kind": "record",
        "seq": seq,
        "segment": segment.0,
        "file": segment_file_name(segment),
        "offset": record.offset_bytes,
        "len": h.total_len(),
        "body_len": h.body_len,
        "pad_len": h.pad_len,
        "synced_seq": h.synced_seq.0,
        "entries": batch.entry_count(),
        "payload_bytes": batch.payload_bytes(),
        "rewrite_cut_segment": batch.rewrite_cut_segment(),
    });
    writeln!(out, "{head}")?;
    for item in items {
        let line = match item {
            Item::Truncation(g, from) => json!({
                "kind": "truncation", "seq": seq, "group": g.0, "from_index": from.0,
            }),
            Item::Entry(e) => {
                let p = payload::show(e.payload, full);
                json!({
                    "kind": "entry", "seq": seq, "group": e.group.0, "term": e.term.0,
                    "index": e.index.0, "payload_len": e.payload.len(),
                    "payload": p.text, "payload_encoding": p.encoding.name(),
                    "payload_truncated": p.truncated(),
                })
            }
            Item::HardState(g, s) => json!({
                "kind": "hard_state", "seq": seq, "group": g.0, "term": s.term.0,
                "vote": s.vote, "commit": s.commit.0,
            }),
            Item::Compaction(g, index) => json!({
                "kind": "compaction", "seq": seq, "group": g.0, "index": index.0,
            }),
            Item::Removal(g) => json!({ "kind": "removal", "seq": seq, "group": g.0 }),
        };
        writeln!(out, "{line}")?;
    }
    Ok(())
}
