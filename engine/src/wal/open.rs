//! Opening a WAL: scan every segment (CRC, sequence, archive), rebuild the
//! index, clear a torn tail so it can never be mistaken for records later,
//! and start the commit pipeline where the log ends.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use super::cache::Cache;
use super::error::WalError;
use super::index::Index;
use super::io::{IoBuf, WalIo};
use super::limits::{align_down, align_up, BLOCK_BYTES};
use super::pipeline;
use super::replay::Kept;
use super::scan::{scan_wal_sharing, ScanError, ScanReport};
use super::state::{Inner, Signal, State, Wal, WalOptions, WalStats};
use super::types::{LogIndex, RecordLoc, RecordSeq, SegmentSeq};
use super::validate;
use super::writer::{Head, Writer};

impl<I: WalIo> Wal<I> {
    /// Recovers the WAL stored in `io` and starts its pipeline. Must run on
    /// the glommio executor of the core that will own it.
    pub async fn open(io: I, opts: WalOptions) -> Result<Wal<I>, WalError> {
        Ok(Wal::open_keeping(io, opts, 0).await?.0)
    }

    /// `open`, keeping up to `kept_bytes_max` bytes of the segment images the
    /// scan reads, for a `replay_entries` that then need not read them again.
    pub async fn open_keeping(
        io: I,
        opts: WalOptions,
        kept_bytes_max: usize,
    ) -> Result<(Wal<I>, Kept), WalError> {
        opts.check()?;
        let mut index = Index::default();
        let mut kept = Kept::with_budget(kept_bytes_max);
        let report = scan_wal_sharing(&io, |segment, record, batch, image| {
            let loc = RecordLoc {
                segment,
                offset_bytes: record.offset_bytes,
            };
            index.apply(batch, loc, record.header.total_len());
            kept.keep(loc, batch, image);
            Ok(())
        })?;
        check_complete(&io, &index)?;
        for &segment in &report.unused {
            let path = io.path(segment);
            io.remove(segment).await.map_err(|source| WalError::Io {
                op: "removing unused",
                path,
                source,
            })?;
        }
        clear_torn_tail(&io, &report).await?;
        let head = head_of(&report);
        let durable_seq = RecordSeq(report.next_seq.0 - 1);
        tracing::info!(
            segments = report.used.len(),
            next_seq = report.next_seq.0,
            "WAL recovered"
        );
        let tails = validate::tails_of(&index);
        let st = State {
            writer: Writer::new(
                opts.segment_size_bytes,
                opts.write_bytes_max,
                head,
                report.next_seq,
            ),
            index,
            cache: Cache::new(opts.cache_bytes_max),
            in_flight: VecDeque::new(),
            durable_seq,
            prepared_upto: report.used.last().map_or(SegmentSeq(0), |s| s.segment),
            first_segment: report.used.first().map_or(SegmentSeq(1), |s| s.segment),
            failed: None,
            closing: false,
            disk_full: false,
            stats: WalStats::default(),
            durable_wakers: Vec::new(),
            rewriting: None,
            tails,
        };
        let inner = Rc::new(Inner {
            io,
            opts,
            st: RefCell::new(st),
            writer_wake: Signal::default(),
            syncer_wake: Signal::default(),
            preparer_wake: Signal::default(),
            prepared: Signal::default(),
            tasks: RefCell::new(Vec::new()),
            dir_lock: RefCell::new(None),
        });
        pipeline::spawn(&inner);
        Ok((Wal::from_inner(inner), kept))
    }
}

/// Refuses a WAL in which a group's log misses entries that no compaction
/// mark covers: the records holding them are gone (a deleted segment), so
/// starting would silently lose entries the log had acknowledged.
fn check_complete<I: WalIo>(io: &I, index: &Index) -> Result<(), ScanError> {
    let Some(gap) = index.first_gap() else {
        return Ok(());
    };
    let (group, next) = (gap.group, gap.next);
    let compacted = index.log(group).map_or(LogIndex(0), |log| log.compacted);
    let what = if next.first > gap.missing_from {
        format!(
            "group {group}: entry {} follows {} but entries {}..={} are neither held nor \
             compacted (compaction mark {compacted}): records holding them are missing",
            next.first,
            LogIndex(gap.missing_from.0 - 1),
            gap.missing_from,
            LogIndex(next.first.0 - 1),
        )
    } else {
        format!(
            "group {group}: entry {} lies at or below {}, where the log already is \
             (compaction mark {compacted})",
            next.first,
            LogIndex(gap.missing_from.0 - 1),
        )
    };
    Err(ScanError::Corrupt {
        path: io.path(next.segment),
        offset_bytes: u64::from(next.offset_bytes),
        what,
    })
}

/// Where writing resumes: the block holding the log's end, carrying the
/// valid bytes of that block; a fresh WAL starts at segment 1 (or after the
/// unused segments it removed, so names only grow).
fn head_of(report: &ScanReport) -> Head {
    match report.used.last() {
        Some(last) => {
            let block = align_down(last.end_offset_bytes, BLOCK_BYTES);
            assert_eq!(
                report.tail_block.len() as u64,
                last.end_offset_bytes - block
            );
            Head {
                segment: last.segment,
                file_offset: block,
                prefix: report.tail_block.clone(),
            }
        }
        None => {
            let segment = report.unused.first().copied().unwrap_or(SegmentSeq(1));
            Head {
                segment,
                file_offset: 0,
                prefix: Vec::new(),
            }
        }
    }
}

/// Zeroes the blocks after the log's end that hold torn records, so that a
/// later scan, resuming after new records, can never run into them.
async fn clear_torn_tail<I: WalIo>(io: &I, report: &ScanReport) -> Result<(), WalError> {
    let (Some(last), Some(dirty_end)) = (report.used.last(), report.dirty_end_bytes) else {
        return Ok(());
    };
    let from = align_up(last.end_offset_bytes, BLOCK_BYTES);
    if dirty_end <= from {
        return Ok(());
    }
    let path = io.path(last.segment);
    let io_err = |source| WalError::Io {
        op: "clearing torn tail of",
        path: path.clone(),
        source,
    };
    tracing::warn!(
        path = %path.display(),
        from,
        dirty_end,
        "clearing the WAL's tail: a torn write, or records of a reused segment's earlier life"
    );
    let chunk_max = 1 << 20;
    let mut at = from;
    while at < dirty_end {
        let len = chunk_max.min((dirty_end - at) as usize);
        let mut buf = io.alloc(len);
        buf.bytes_mut().fill(0);
        io.write(last.segment, at, Rc::new(buf))
            .await
            .map_err(io_err)?;
        at += len as u64;
    }
    io.sync(last.segment).await.map_err(io_err)
}
