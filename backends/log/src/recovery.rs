//! Opening partitions found on disk.
//!
//! The last segment of a partition is always recovered: its batches are validated (length,
//! magic, CRC, offsets following on), the file is cut back to the valid prefix, dropping a write
//! torn by a crash, and its indexes are rebuilt. Sealed segments were fsynced when rolled, so
//! they are trusted as long as their indexes look whole; otherwise their indexes are rebuilt,
//! and a sealed segment with invalid bytes fails the partition's opening rather than be cut,
//! which would leave a hole in the offsets.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::path::Path;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use switchboard_model::batch::{HEADER_LEN, peek_header, valid_prefix_len};
use switchboard_model::{Offset, TopicPartition};
use switchboard_storage::{StorageError, StorageResult};

use crate::config::LogConfig;
use crate::fsio::{PosReader, read_exact_at, remove_if_present, sync_dir};
use crate::index::{Indexer, OffsetEntry, TimeEntry};
use crate::partition::{Partition, View, Writer};
use crate::retention::read_log_start;
use crate::segment::{INDEX_EXT, LOG_EXT, Segment, TIME_INDEX_EXT, file_name, parse_file_name};

/// What a scan of a segment's log found.
pub(crate) struct Scan {
    /// Bytes of whole, valid batches from the start of the file.
    pub valid_len: u64,
    /// The offset after the last valid batch.
    pub next: Offset,
    pub indexer: Indexer,
    pub offsets: Vec<OffsetEntry>,
    pub times: Vec<TimeEntry>,
    pub max_ts: i64,
    /// Why the scan stopped before the end of the file, if it did.
    pub stopped: Option<String>,
}

/// Reads every batch of a segment's log, checking each one, and computes the indexes it should
/// have. Memory use is bounded by the largest batch, not the segment.
pub(crate) fn scan(log: &File, base: Offset, len: u64, interval: u32) -> io::Result<Scan> {
    let mut out = Scan {
        valid_len: 0,
        next: base,
        indexer: Indexer::new(interval),
        offsets: Vec::new(),
        times: Vec::new(),
        max_ts: i64::MIN,
        stopped: None,
    };
    let mut reader = BufReader::with_capacity(64 * 1024, PosReader::new(log, 0));
    let mut batch = Vec::new();
    while out.valid_len < len {
        let pos = out.valid_len;
        let left = len - pos;
        if left < HEADER_LEN as u64 {
            out.stopped = Some(format!("{left} bytes, less than a batch header"));
            break;
        }
        batch.resize(HEADER_LEN, 0);
        reader.read_exact(&mut batch)?;
        let h = match peek_header(&batch) {
            Ok(h) => h,
            Err(e) => {
                out.stopped = Some(e.to_string());
                break;
            }
        };
        let total = h.total_len() as u64;
        let last = out.next + h.offset_count() - 1;
        let problem = if h.base_offset != out.next as i64 {
            Some(format!(
                "base offset {} where {} was expected",
                h.base_offset, out.next
            ))
        } else if total > left {
            Some(format!("a batch of {total} bytes with {left} left"))
        } else if h.last_offset_delta < 0
            || h.record_count < 0
            || (h.record_count > 0 && h.last_offset_delta < h.record_count - 1)
            || last - base > u64::from(u32::MAX)
        {
            Some(format!(
                "impossible counts: {} records, last offset delta {}",
                h.record_count, h.last_offset_delta
            ))
        } else if pos > u64::from(u32::MAX) {
            Some("a batch beyond the 4 GiB an index can address".into())
        } else {
            None
        };
        if problem.is_some() {
            out.stopped = problem;
            break;
        }
        batch.resize(total as usize, 0);
        reader.read_exact(&mut batch[HEADER_LEN..])?;
        if valid_prefix_len(&batch) != batch.len() {
            out.stopped = Some("CRC mismatch".into());
            break;
        }
        let rel = (out.next - base) as u32;
        let (o, t) = out
            .indexer
            .on_batch(rel, pos as u32, total, h.max_timestamp);
        out.offsets.extend(o);
        out.times.extend(t);
        out.max_ts = out.max_ts.max(h.max_timestamp);
        out.valid_len += total;
        out.next = last + 1;
    }
    Ok(out)
}

/// Whether the file goes on with zero bytes at `pos`, where a scan stopped (a batch header of
/// zeros is never valid: its magic byte is 0), looking at `upto` bytes at most.
fn reads_zeros(log: &File, pos: u64, upto: u64) -> io::Result<bool> {
    let mut reader = BufReader::with_capacity(64 * 1024, PosReader::new(log, pos).take(upto));
    let mut chunk = [0u8; 8192];
    let mut any = false;
    loop {
        match reader.read(&mut chunk)? {
            0 => return Ok(any),
            n if chunk[..n].iter().any(|&b| b != 0) => return Ok(false),
            _ => any = true,
        }
    }
}

/// Bytes [`ends_with_a_batch`] reads at once. What follows a segment's last index entry is
/// about one index interval: one read covers the walk over its batches, not one read each.
const TAIL_WINDOW: u64 = 64 * 1024;

/// Whether walking batch headers from `from` (a batch boundary) ends exactly at `len`, the
/// file's length: a sealed segment's file holds nothing after its last batch.
pub(crate) fn ends_with_a_batch(log: &File, from: u64, len: u64) -> io::Result<bool> {
    let mut window = vec![0u8; len.saturating_sub(from).min(TAIL_WINDOW) as usize];
    read_exact_at(log, &mut window, from)?;
    let mut header = [0u8; HEADER_LEN];
    let mut pos = from;
    while pos < len {
        if len - pos < HEADER_LEN as u64 {
            return Ok(false);
        }
        let at = (pos - from) as usize;
        let bytes = match window.get(at..at + HEADER_LEN) {
            Some(bytes) => bytes,
            None => {
                read_exact_at(log, &mut header, pos)?;
                &header
            }
        };
        let Ok(h) = peek_header(bytes) else {
            return Ok(false);
        };
        pos += h.total_len() as u64;
    }
    Ok(pos == len)
}

fn corrupt(tp: &TopicPartition, reason: String) -> StorageError {
    StorageError::Corrupt {
        tp: tp.clone(),
        reason,
    }
}

/// Segment base offsets found in `dir`, sorted; removes leftovers of interrupted operations
/// (index files without a log, temporary files).
fn list_segments(dir: &Path) -> io::Result<Vec<Offset>> {
    let mut logs = Vec::new();
    let mut indexes = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        match parse_file_name(name) {
            Some((base, LOG_EXT)) => logs.push(base),
            Some((base, INDEX_EXT | TIME_INDEX_EXT)) => indexes.push((base, entry.path())),
            _ if name.ends_with(".tmp") => remove_if_present(&entry.path())?,
            _ => {}
        }
    }
    logs.sort_unstable();
    for (base, path) in indexes {
        if logs.binary_search(&base).is_err() {
            remove_if_present(&path)?;
        }
    }
    Ok(logs)
}

/// Opens a sealed segment, rebuilding its indexes if they do not look whole.
fn open_sealed(
    tp: &TopicPartition,
    dir: &Path,
    base: Offset,
    config: &LogConfig,
) -> StorageResult<Segment> {
    let mut segment = Segment::open(dir, base, false, false)?;
    let mut len = segment.log.metadata()?.len();
    let last_time = segment.times.last()?;
    let last_offset = segment.offsets.last()?;
    let whole = segment.offsets.is_whole()
        && segment.times.is_whole()
        && (len == 0 || last_time.is_some())
        && last_offset.is_none_or(|e| u64::from(e.pos) < len)
        && ends_with_a_batch(
            &segment.log,
            last_offset.map_or(0, |e| u64::from(e.pos)),
            len,
        )?;
    if whole {
        segment.set_loaded(len, last_time.map_or(i64::MIN, |e| e.ts))?;
        return Ok(segment);
    }
    tracing::warn!(partition = %tp, base, "rebuilding the indexes of a sealed segment");
    let mut found = scan(&segment.log, base, len, config.index_interval_bytes)?;
    if found.stopped.is_some() && reads_zeros(&segment.log, found.valid_len, u64::MAX)? {
        // Sealing cuts an active segment's reserved tail and fsyncs the cut; without fsync
        // (`fsync = never`) a crash can undo the cut. Only zeros follow the batches: nothing
        // was lost, the reserve is cut again.
        tracing::warn!(
            partition = %tp,
            segment = base,
            kept = found.valid_len,
            "cutting a reserved tail off a sealed segment"
        );
        segment.log.set_len(found.valid_len)?;
        len = found.valid_len;
        found.stopped = None;
    }
    if let Some(why) = found.stopped {
        // The indexes are suspect (and may have just been created empty): remove them so the
        // next attempt checks the log again instead of trusting them.
        for ext in [INDEX_EXT, TIME_INDEX_EXT] {
            let _ = remove_if_present(&dir.join(file_name(base, ext)));
        }
        return Err(corrupt(
            tp,
            format!(
                "sealed segment {base} has invalid data at byte {} ({why}); \
                 move the segment away to open the partition without it",
                found.valid_len
            ),
        ));
    }
    found.times.extend(found.indexer.seal());
    segment.offsets.rewrite(&found.offsets)?;
    segment.times.rewrite(&found.times)?;
    if config.fsync.syncs() {
        segment.sync_all()?;
    }
    segment.set_loaded(len, found.max_ts)?;
    Ok(segment)
}

/// When the file at `log` was created (or, where that is not recorded, last modified), in
/// milliseconds since the epoch: the age of a recovered active segment.
fn file_time_ms(log: &File) -> Option<i64> {
    let meta = log.metadata().ok()?;
    let at = meta.created().or_else(|_| meta.modified()).ok()?;
    let ms = at.duration_since(UNIX_EPOCH).ok()?.as_millis();
    i64::try_from(ms).ok()
}

/// Recovers the last segment: cuts a torn tail, rebuilds the indexes, syncs the result.
fn recover_active(
    tp: &TopicPartition,
    dir: &Path,
    base: Offset,
    config: &LogConfig,
) -> StorageResult<(Segment, Writer, Offset)> {
    let mut segment = Segment::open(dir, base, false, config.fsync.syncs())?;
    let len = segment.log.metadata()?.len();
    let found = scan(&segment.log, base, len, config.index_interval_bytes)?;
    if found.stopped.is_some() && reads_zeros(&segment.log, found.valid_len, 64 * 1024)? {
        // The rest of the file was reserved ahead of the batches (see `segment`) and never
        // written: the log ends here, nothing was torn. (64 KiB of zeros tell a reserve from a
        // torn write well enough: this only decides how the cut is reported.)
        tracing::debug!(partition = %tp, segment = base, "cutting off a reserved tail");
        segment.log.set_len(found.valid_len)?;
    } else if let Some(why) = &found.stopped {
        tracing::warn!(
            partition = %tp,
            segment = base,
            kept = found.valid_len,
            dropped = len - found.valid_len,
            "truncating a torn or corrupt tail ({why})"
        );
        segment.log.set_len(found.valid_len)?;
    }
    segment.offsets.rewrite(&found.offsets)?;
    segment.times.rewrite(&found.times)?;
    if config.fsync.syncs() {
        // What survived the crash is what we now serve: make it (and the cut) durable.
        segment.sync_all()?;
    }
    segment.set_loaded(found.valid_len, found.max_ts)?;
    let writer = Writer {
        indexer: found.indexer,
        active_since_ms: (found.valid_len > 0)
            .then(|| file_time_ms(&segment.log))
            .flatten(),
        removed: false,
    };
    Ok((segment, writer, found.next))
}

fn fresh_segment(dir: &Path, base: Offset, config: &LogConfig) -> StorageResult<(Segment, Writer)> {
    let segment = Segment::open(dir, base, true, config.fsync.syncs())?;
    if config.fsync.syncs() {
        sync_dir(dir)?;
    }
    let writer = Writer {
        indexer: Indexer::new(config.index_interval_bytes),
        active_since_ms: None,
        removed: false,
    };
    Ok((segment, writer))
}

/// Opens the partition stored in `dir`, creating it empty if the directory has no segments.
pub(crate) fn load(
    tp: TopicPartition,
    dir: &Path,
    config: Arc<LogConfig>,
) -> StorageResult<Partition> {
    fs::create_dir_all(dir)?;
    let bases = list_segments(dir)?;
    let persisted_start = read_log_start(dir, &tp)?;
    let mut segments = BTreeMap::new();
    let (active, mut writer, mut next) = match bases.split_last() {
        Some((&last, sealed)) => {
            for &base in sealed {
                let segment = open_sealed(&tp, dir, base, &config)?;
                segments.insert(base, Arc::new(segment));
            }
            recover_active(&tp, dir, last, &config)?
        }
        None => {
            let base = persisted_start.unwrap_or(0);
            let (segment, writer) = fresh_segment(dir, base, &config)?;
            (segment, writer, base)
        }
    };
    let mut active = Arc::new(active);
    segments.insert(active.base(), active.clone());
    let first = segments.keys().next().copied().unwrap_or(next);
    let log_start = persisted_start.unwrap_or(0).max(first);
    if next < log_start {
        // Appends lost in a crash after `delete_before` had moved the start past them: the log
        // is empty and continues at its start, as Kafka does.
        tracing::warn!(partition = %tp, next, log_start, "log ends before its start; emptying it");
        for segment in std::mem::take(&mut segments).into_values() {
            segment.remove_files()?;
        }
        let (segment, fresh_writer) = fresh_segment(dir, log_start, &config)?;
        active = Arc::new(segment);
        segments.insert(log_start, active.clone());
        writer = fresh_writer;
        next = log_start;
    }
    let view = View {
        segments,
        active,
        log_start,
        next,
    };
    Ok(Partition::new(tp, dir.to_path_buf(), config, view, writer))
}
