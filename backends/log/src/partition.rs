//! One partition: its segments, the writer that appends and rolls them, and the readers' view.
//!
//! Appends are serialised by an async mutex around the [`Writer`]; the file writes themselves
//! run on the blocking pool while the mutex is held. Readers never take that mutex: they copy
//! what they need (segments, bounds) out of the [`View`] under a short std `RwLock` and read
//! the files with positional reads. The writer updates the view only after bytes are written,
//! so a reader sees an offset below the high watermark only once its batch is in the file.

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use switchboard_model::{BatchError, Offset, RecordBatch, TopicPartition};
use switchboard_storage::{Appended, Bounds, Durability, ReadChunk, StorageError, StorageResult};

use crate::commit::GroupCommit;
use crate::config::{LogConfig, MAX_SEGMENT_BYTES};
use crate::fsio::{blocking, sync_dir};
use crate::index::Indexer;
use crate::segment::{Segment, Staged};
use crate::tail::TailCache;

/// Appends at most this large are written on the calling task rather than the blocking pool:
/// a write to the page cache copies at several GB/s, so even a Kafka producer's 100 KB batch
/// takes less than the hand-off and the two thread wake-ups it costs (perf showed those at a
/// third of the broker's CPU in a 1 KiB-record produce run with a 64 KiB limit).
const INLINE_APPEND_BYTES: u64 = 256 * 1024;
/// After this many bytes appended without an fsync, one is started in the background (it does
/// not hold the writer), so that a roll, which must fsync the whole sealed segment before the
/// next append, finds little left to write: otherwise up to a GiB of dirty pages made every
/// append wait half a second at each roll of a busy partition. Small, because while ext4 writes
/// back a file it allocates its blocks, and appends to the file wait for that: with 32 MiB, the
/// eight partitions of a 250 MB/s Kafka run wrote back together about once a second, each for
/// about 100 ms, and appends on the runtime's threads stalled for 5–19 ms each (`perf trace
/// --duration 5`), which gave p99 produce latencies of 94–220 ms; with 1 MiB the p99 was 2 ms
/// and the broker used a third less CPU.
pub(crate) const EARLY_WRITEBACK_BYTES: u64 = 1024 * 1024;

/// What readers need, consistent at one instant.
#[derive(Debug)]
pub(crate) struct View {
    /// Every segment by base offset, the active one included. Never empty.
    pub segments: BTreeMap<Offset, Arc<Segment>>,
    /// The segment appends go to: the last one.
    pub active: Arc<Segment>,
    pub log_start: Offset,
    /// The high watermark: the offset the next append gets.
    pub next: Offset,
}

impl View {
    pub(crate) fn bounds(&self) -> Bounds {
        Bounds {
            log_start: self.log_start,
            high_watermark: self.next,
        }
    }
}

/// State only the appender touches.
#[derive(Debug)]
pub(crate) struct Writer {
    /// Where the active segment's next index entries go.
    pub indexer: Indexer,
    /// Wall-clock time of the active segment's first append, for rolling by age.
    pub active_since_ms: Option<i64>,
    /// Set once the partition is removed; appends queued behind the removal then fail.
    pub removed: bool,
}

pub(crate) struct Partition {
    pub(crate) tp: TopicPartition,
    pub(crate) dir: PathBuf,
    pub(crate) config: Arc<LogConfig>,
    writer: Arc<tokio::sync::Mutex<Writer>>,
    view: RwLock<View>,
    pub(crate) commit: GroupCommit,
    /// Why the partition refuses appends, after a failure that left its files in doubt (an
    /// fsync error, an unrecoverable partial write). Reopening the storage recovers it.
    poisoned: OnceLock<String>,
    /// Data fsyncs of this partition's segment logs so far; tests check that group commit
    /// shares them.
    pub(crate) fsyncs: AtomicU64,
    /// The batches appended last; see [`TailCache`].
    tail: std::sync::Mutex<TailCache>,
    /// Bytes appended since the last fsync (early writeback or group commit) started (see
    /// [`EARLY_WRITEBACK_BYTES`]).
    pub(crate) unflushed: AtomicU64,
    /// An early writeback is running.
    flushing: std::sync::atomic::AtomicBool,
    /// Held while an fsync of the partition's files runs; see [`Partition::fsync_exclusive`].
    fsync_lock: std::sync::Mutex<()>,
}

/// Data fsyncs of segment logs run by every native log in this process (see [`fsyncs_total`]).
static FSYNCS: AtomicU64 = AtomicU64::new(0);

/// How many data fsyncs of segment logs the native logs of this process have run: the
/// acknowledgement fsyncs of group commit, early writeback and the fsync that seals a segment.
pub fn fsyncs_total() -> u64 {
    FSYNCS.load(Ordering::Relaxed)
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Partition {
    pub(crate) fn new(
        tp: TopicPartition,
        dir: PathBuf,
        config: Arc<LogConfig>,
        view: View,
        writer: Writer,
    ) -> Self {
        Self {
            tp,
            dir,
            writer: Arc::new(tokio::sync::Mutex::new(writer)),
            commit: GroupCommit::new(view.next),
            view: RwLock::new(view),
            poisoned: OnceLock::new(),
            fsyncs: AtomicU64::new(0),
            tail: std::sync::Mutex::new(TailCache::new(config.tail_cache_bytes)),
            unflushed: AtomicU64::new(0),
            flushing: std::sync::atomic::AtomicBool::new(false),
            fsync_lock: std::sync::Mutex::new(()),
            config,
        }
    }

    fn tail(&self) -> std::sync::MutexGuard<'_, TailCache> {
        self.tail.lock().unwrap_or_else(|e| e.into_inner())
    }

    // The view is only mutated by complete assignments, so a panic elsewhere while it was
    // locked cannot have left it half-updated: ignore lock poisoning.
    pub(crate) fn view(&self) -> RwLockReadGuard<'_, View> {
        self.view.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn view_mut(&self) -> RwLockWriteGuard<'_, View> {
        self.view.write().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn bounds(&self) -> Bounds {
        self.view().bounds()
    }

    pub(crate) fn poison(&self, why: String) {
        tracing::error!(
            partition = %self.tp,
            "{why}; appends to the partition are refused until the storage is reopened"
        );
        let _ = self.poisoned.set(why);
    }

    pub(crate) fn check_healthy(&self) -> StorageResult<()> {
        match self.poisoned.get() {
            None => Ok(()),
            Some(why) => Err(StorageError::Unavailable(format!(
                "partition {} failed ({why}); reopen the storage to recover",
                self.tp
            ))),
        }
    }

    /// Runs `f` on the blocking pool with the writer locked: every change to the partition's
    /// files (append, roll, retention) goes through here, one at a time.
    pub(crate) async fn with_writer<T, F>(self: &Arc<Self>, f: F) -> StorageResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Partition, &mut Writer) -> StorageResult<T> + Send + 'static,
    {
        let mut writer = self.writer.clone().lock_owned().await;
        let me = self.clone();
        blocking(move || {
            if writer.removed {
                return Err(StorageError::UnknownPartition(me.tp.clone()));
            }
            f(&me, &mut writer)
        })
        .await
    }

    /// Marks the partition removed once in-flight appends are done.
    pub(crate) async fn mark_removed(&self) {
        self.writer.lock().await.removed = true;
    }

    pub(crate) async fn append(
        self: &Arc<Self>,
        batches: Vec<RecordBatch>,
        durability: Durability,
    ) -> StorageResult<Appended> {
        if batches.is_empty() {
            // Nothing to place or to sync; answer as the memory backend does.
            let next = self.view().next;
            return Ok(Appended {
                base_offset: next,
                last_offset: next.saturating_sub(1),
            });
        }
        let bytes: u64 = batches.iter().map(|b| b.len() as u64).sum();
        let inline = if bytes <= INLINE_APPEND_BYTES {
            let mut writer = self.writer.lock().await;
            if writer.removed {
                return Err(StorageError::UnknownPartition(self.tp.clone()));
            }
            let offsets: u64 = batches.iter().map(|b| b.header().offset_count()).sum();
            let last = self.view().next + offsets.max(1) - 1;
            // A roll fsyncs the whole sealed segment (up to a GiB of dirty pages): never on a
            // runtime thread.
            // Both checks see the same `next` (the writer is held) and the same `now`.
            let now = now_ms();
            if self.should_roll(&writer, bytes, last, now) {
                Err(batches)
            } else {
                Ok(self.append_locked(&mut writer, batches, now)?)
            }
        } else {
            Err(batches)
        };
        let appended = match inline {
            Ok(appended) => appended,
            Err(batches) => {
                self.with_writer(|p, w| p.append_locked(w, batches, now_ms()))
                    .await?
            }
        };
        self.write_back_early(bytes);
        // The writer is free again: the next appends write while this one waits, and one
        // fsync covers them all.
        if self.config.fsync.waits_for(durability) {
            self.wait_durable(appended.last_offset + 1).await?;
        }
        Ok(appended)
    }

    /// Runs an fsync of this partition's files with no other running (Linux reports a writeback
    /// error to only one of two overlapping fsyncs: the other could then publish data as durable
    /// that is not), and refuses to once the partition is poisoned.
    pub(crate) fn fsync_exclusive(&self, sync: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
        let _one = self.fsync_lock.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(why) = self.poisoned.get() {
            return Err(io::Error::other(why.clone()));
        }
        sync()?;
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        FSYNCS.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Starts an fsync of the active segment in the background once enough was appended since
    /// the last one, so that the roll that seals it has little left to write. It promises
    /// nothing (durability marks are the group commit's), but a failure poisons the partition
    /// as any failed fsync does, and it never overlaps another fsync of the partition.
    fn write_back_early(self: &Arc<Self>, bytes: u64) {
        if !self.config.fsync.syncs()
            || self.unflushed.fetch_add(bytes, Ordering::AcqRel) + bytes < EARLY_WRITEBACK_BYTES
            || self.flushing.swap(true, Ordering::AcqRel)
        {
            return;
        }
        self.unflushed.store(0, Ordering::Release);
        let me = self.clone();
        let segment = self.view().active.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = me.fsync_exclusive(|| segment.sync()) {
                me.poison(format!("fsync of segment {} failed: {e}", segment.base()));
            }
            me.flushing.store(false, Ordering::Release);
        });
    }

    /// Writes a non-empty list of batches at the high watermark.
    fn append_locked(
        &self,
        w: &mut Writer,
        batches: Vec<RecordBatch>,
        now: i64,
    ) -> StorageResult<Appended> {
        self.check_healthy()?;
        let next = self.view().next;
        let bytes: u64 = batches.iter().map(|b| b.len() as u64).sum();
        let offsets: u64 = batches.iter().map(|b| b.header().offset_count()).sum();
        check_append_limits(bytes, offsets)?;
        if self.should_roll(w, bytes, next + offsets - 1, now) {
            self.roll(w, next)?;
        }
        let active = self.view().active.clone();
        let before = w.indexer.clone();
        let (staged, placed) = stage(&mut w.indexer, &active, next, batches, bytes);
        if let Err(failure) = active.append(&staged) {
            w.indexer = before;
            if !failure.rolled_back {
                self.poison(format!(
                    "a failed append could not be undone: {}",
                    failure.error
                ));
            }
            return Err(failure.error.into());
        }
        w.active_since_ms.get_or_insert(now);
        let last = next + offsets - 1;
        {
            let mut tail = self.tail();
            for (base, batch) in placed {
                let after = base + batch.header().offset_count();
                tail.push(base, after, batch.into_bytes());
            }
        }
        self.view_mut().next = last + 1;
        Ok(Appended {
            base_offset: next,
            last_offset: last,
        })
    }

    /// Roll before an append that would overfill the active segment or outgrow its 32-bit
    /// relative offsets, or once the segment is older than `segment_ms`; never roll an empty
    /// segment, so an append larger than a segment still lands somewhere.
    fn should_roll(&self, w: &Writer, bytes: u64, last: Offset, now: i64) -> bool {
        let active = self.view().active.clone();
        let size = active.size();
        if size == 0 {
            return false;
        }
        let too_old = match (self.config.segment_ms, w.active_since_ms) {
            (Some(max_age), Some(since)) => {
                now.saturating_sub(since) >= i64::try_from(max_age).unwrap_or(i64::MAX)
            }
            _ => false,
        };
        size + bytes > self.config.effective_segment_bytes()
            || last - active.base() > u64::from(u32::MAX)
            || too_old
    }

    /// Seals the active segment and starts a new one at `next`. Unless fsync is off, the sealed
    /// segment and the new file's directory entry are fsynced first, so everything below the
    /// active segment is always on disk and trusted on reopen.
    pub(crate) fn roll(&self, w: &mut Writer, next: Offset) -> StorageResult<()> {
        let old = self.view().active.clone();
        if old.size() == 0 {
            return Ok(());
        }
        // A sealed segment's file must end with its last batch (its length is trusted on
        // reopen), and be cut before its fsync makes that length durable.
        old.release_reserve()?;
        let before = w.indexer.clone();
        if let Some(last) = w.indexer.seal()
            && let Err(e) = old.times.append(&[last])
        {
            w.indexer = before;
            return Err(e.into());
        }
        let syncs = self.config.fsync.syncs();
        if syncs && let Err(e) = self.fsync_exclusive(|| old.sync_all()) {
            self.poison(format!("fsync of segment {} failed: {e}", old.base()));
            return Err(e.into());
        }
        let fresh = Arc::new(Segment::open(&self.dir, next, true, syncs)?);
        if syncs && let Err(e) = sync_dir(&self.dir) {
            let _ = fresh.remove_files();
            return Err(e.into());
        }
        tracing::debug!(partition = %self.tp, base = next, "rolled a new segment");
        let mut view = self.view_mut();
        view.segments.insert(next, fresh.clone());
        view.active = fresh;
        drop(view);
        w.indexer = Indexer::new(self.config.index_interval_bytes);
        w.active_since_ms = None;
        Ok(())
    }

    pub(crate) async fn read(
        self: &Arc<Self>,
        from: Offset,
        max_bytes: usize,
    ) -> StorageResult<ReadChunk> {
        let (segment, bounds) = {
            let view = self.view();
            let bounds = view.bounds();
            if from < bounds.log_start || from > bounds.high_watermark {
                return Err(self.out_of_range(from, bounds));
            }
            if from == bounds.high_watermark {
                return Ok(ReadChunk {
                    batches: Vec::new(),
                    bounds,
                });
            }
            if let Some(batches) = self.tail().read(from, max_bytes, bounds.high_watermark)
                && !batches.is_empty()
            {
                return Ok(ReadChunk { batches, bounds });
            }
            let segment = view
                .segments
                .range(..=from)
                .next_back()
                .map(|(_, s)| s.clone());
            (segment, bounds)
        };
        let tp = self.tp.clone();
        let batches = blocking(move || match segment {
            Some(s) => s.read(&tp, from, max_bytes, bounds.high_watermark),
            None => Ok(Vec::new()),
        })
        .await?;
        if batches.is_empty() {
            return Err(StorageError::Corrupt {
                tp: self.tp.clone(),
                reason: format!("no segment holds offset {from}, below the high watermark"),
            });
        }
        Ok(ReadChunk { batches, bounds })
    }

    fn out_of_range(&self, offset: Offset, bounds: Bounds) -> StorageError {
        StorageError::OffsetOutOfRange {
            tp: self.tp.clone(),
            offset,
            log_start: bounds.log_start,
            high_watermark: bounds.high_watermark,
        }
    }

    pub(crate) async fn offset_for_timestamp(
        self: &Arc<Self>,
        target: i64,
    ) -> StorageResult<Option<(Offset, i64)>> {
        let (segments, bounds) = {
            let view = self.view();
            let segments: Vec<_> = view.segments.values().cloned().collect();
            (segments, view.bounds())
        };
        let tp = self.tp.clone();
        blocking(move || {
            // Timestamps need not grow with offsets: take the first segment, in offset order,
            // holding a batch new enough.
            for segment in segments {
                let hit =
                    segment.find_timestamp(&tp, target, bounds.log_start, bounds.high_watermark)?;
                if hit.is_some() {
                    return Ok(hit);
                }
            }
            Ok(None)
        })
        .await
    }
}

/// Refuses appends the index formats cannot describe: more bytes than a segment may hold, or
/// more offsets than a 32-bit relative offset spans.
fn check_append_limits(bytes: u64, offsets: u64) -> StorageResult<()> {
    if bytes > MAX_SEGMENT_BYTES {
        return Err(BatchError::BadLength(i32::try_from(bytes).unwrap_or(i32::MAX)).into());
    }
    if offsets > u64::from(u32::MAX) {
        return Err(BatchError::BadCount {
            count: i32::MAX,
            last_delta: i32::try_from(offsets - 1).unwrap_or(i32::MAX),
        }
        .into());
    }
    Ok(())
}

/// Places `batches` at `next` and beyond in `segment`: rewrites their base offsets (outside the
/// CRC, so compressed payloads stay untouched; in place unless the bytes are shared) and
/// collects the index entries they earn. Returns what to write and the placed batches
/// themselves (for the tail cache).
fn stage(
    indexer: &mut Indexer,
    segment: &Segment,
    mut next: Offset,
    batches: Vec<RecordBatch>,
    bytes: u64,
) -> (Staged, Vec<(Offset, RecordBatch)>) {
    let mut staged = Staged {
        batches: Vec::with_capacity(batches.len()),
        len: bytes,
        max_ts: i64::MIN,
        ..Staged::default()
    };
    let mut placed_all = Vec::with_capacity(batches.len());
    let mut pos = segment.size();
    for batch in batches {
        let placed = batch.into_base_offset(next);
        let h = placed.header();
        // Both fit in u32: the roll decision and `check_append_limits` saw to it.
        let rel = (next - segment.base()) as u32;
        let (offset_entry, time_entry) =
            indexer.on_batch(rel, pos as u32, placed.len() as u64, h.max_timestamp);
        staged.offsets.extend(offset_entry);
        staged.times.extend(time_entry);
        staged.max_ts = staged.max_ts.max(h.max_timestamp);
        staged.batches.push(placed.bytes().clone());
        pos += placed.len() as u64;
        let count = h.offset_count();
        placed_all.push((next, placed));
        next += count;
    }
    (staged, placed_all)
}
