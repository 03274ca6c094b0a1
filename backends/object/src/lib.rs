//! Object-storage backend ("direct" mode): every partition lives in an object store (any
//! S3-compatible server, a local directory, memory) through the `object_store` crate, with no
//! local state. A broker started on a clean disk over the same bucket and prefix serves the
//! same partitions.
//!
//! Writes are gathered for `flush_interval` or `flush_bytes`, whichever comes first, and put as
//! one object holding every partition written meanwhile; an append is acknowledged only once
//! that put succeeded, whatever durability it asks for. The layout is in [`layout`]; the index
//! that maps offsets to objects and byte ranges in [`index`]. Two brokers writing to one prefix
//! cannot both place data at one offset: objects are numbered, created with a conditional put,
//! and a writer that loses a number reads what the winner wrote before it tries again.

mod cache;
mod compact;
pub mod index;
pub mod layout;
pub mod tiered;
pub mod url;
mod writer;

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::TryStreamExt;
use object_store::ObjectStore;
use object_store::path::Path;
use switchboard_model::batch::peek_header;
use switchboard_model::{Offset, RecordBatch, TopicPartition};
use switchboard_storage::{
    Appended, Bounds, Durability, ReadChunk, Retention, Storage, StorageError, StorageResult,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::cache::Cache;
use crate::index::{Entry, State};
use crate::writer::Request;

pub use crate::tiered::{TierConfig, TieredStorage};
pub use crate::url::{StoreOptions, open_store};

/// Tuning of the direct mode.
#[derive(Debug, Clone)]
pub struct ObjectConfig {
    /// The longest an append waits for others to share its object.
    pub flush_interval: Duration,
    /// An object is written as soon as this many bytes are waiting.
    pub flush_bytes: usize,
    /// Bytes of recently written or read object ranges kept in memory.
    pub cache_bytes: usize,
    /// A manifest (the whole index) is written every this many wal objects.
    pub manifest_every: u64,
    /// Wal objects no partition reads any more are deleted once this old.
    pub gc_grace: Duration,
    /// Small runs of a partition are merged into run objects of up to this many bytes.
    pub compact_target: u64,
    /// How often compaction looks for small runs; `None` leaves it to [`ObjectStorage::compact_once`].
    pub compact_interval: Option<Duration>,
}

impl Default for ObjectConfig {
    fn default() -> Self {
        Self {
            flush_interval: Duration::from_millis(10),
            flush_bytes: 4 << 20,
            cache_bytes: 64 << 20,
            manifest_every: 256,
            gc_grace: Duration::from_secs(3600),
            compact_target: 8 << 20,
            compact_interval: Some(Duration::from_secs(30)),
        }
    }
}

/// What the writer task and the storage handle share.
pub(crate) struct Shared {
    store: Arc<dyn ObjectStore>,
    root: Path,
    cfg: ObjectConfig,
    state: Mutex<State>,
    cache: Mutex<Cache>,
    /// Whether the writer must read the log's end before its next put, and when it last did.
    sync: Mutex<SyncState>,
}

struct SyncState {
    stale: bool,
    last_synced: Instant,
    last_manifest: u64,
}

pub(crate) fn unavailable(what: &str, e: impl std::fmt::Display) -> StorageError {
    StorageError::Unavailable(format!("{what}: {e}"))
}

impl Shared {
    pub(crate) fn lock_state(&self) -> MutexGuard<'_, State> {
        // Every mutation completes before unlocking, so a poisoned lock still holds a
        // consistent index.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_cache(&self) -> MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_sync(&self) -> MutexGuard<'_, SyncState> {
        self.sync.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn needs_resync(&self) -> bool {
        let s = self.lock_sync();
        s.stale || s.last_synced.elapsed() >= writer::RESYNC_AFTER
    }

    pub(crate) fn mark_stale(&self) {
        self.lock_sync().stale = true;
    }

    /// Brings the index up to the log's end: the newest manifest if it is ahead of us, then
    /// every wal object after what we have.
    pub(crate) async fn resync(&self) -> StorageResult<()> {
        let have = self.lock_state().next_seq;
        if let Some(m) = self.latest_manifest().await?
            && m >= have
        {
            let key = layout::manifest_key(&self.root, m);
            let bytes = self.get(&key).await?;
            let state = State::from_manifest(&bytes)
                .map_err(|e| StorageError::CorruptStore(format!("manifest {key}: {e}")))?;
            let mut current = self.lock_state();
            let opened_empty: Vec<TopicPartition> = current
                .parts
                .iter()
                .filter(|(tp, p)| p.next == 0 && !state.parts.contains_key(*tp))
                .map(|(tp, _)| tp.clone())
                .collect();
            *current = state;
            // Partitions opened here but never written are in no manifest; keep them open.
            for tp in opened_empty {
                current.parts.entry(tp).or_default();
            }
            drop(current);
            self.lock_sync().last_manifest = m;
        }
        loop {
            let seq = self.lock_state().next_seq;
            let key = layout::wal_key(&self.root, seq);
            let object = match self.store.get(&key).await {
                Ok(got) => got
                    .bytes()
                    .await
                    .map_err(|e| unavailable("reading wal", e))?,
                Err(object_store::Error::NotFound { .. }) => break,
                Err(e) => return Err(unavailable("reading wal", e)),
            };
            let ops = layout::decode(&object)
                .map_err(|e| StorageError::CorruptStore(format!("wal object {key}: {e}")))?;
            self.lock_state().apply(seq, &ops);
        }
        let mut s = self.lock_sync();
        s.stale = false;
        s.last_synced = Instant::now();
        Ok(())
    }

    async fn latest_manifest(&self) -> StorageResult<Option<u64>> {
        let prefix = self.root.child("manifest");
        let metas: Vec<_> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| unavailable("listing manifests", e))?;
        Ok(metas
            .iter()
            .filter_map(|m| layout::seq_of(&m.location))
            .max())
    }

    async fn get(&self, key: &Path) -> StorageResult<Bytes> {
        let got = self
            .store
            .get(key)
            .await
            .map_err(|e| unavailable("reading", e))?;
        got.bytes().await.map_err(|e| unavailable("reading", e))
    }

    /// Applies wal object `seq`, just written by this instance.
    pub(crate) fn committed(&self, seq: u64, ops: &[layout::Op], runs: Vec<(Entry, Bytes)>) {
        self.lock_state().apply(seq, ops);
        {
            let mut cache = self.lock_cache();
            for (mut entry, bytes) in runs {
                entry.seq = seq;
                cache.insert(&entry, bytes);
            }
        }
        let due = {
            let mut s = self.lock_sync();
            s.last_synced = Instant::now();
            seq >= s.last_manifest + self.cfg.manifest_every
        };
        if due {
            self.lock_sync().last_manifest = seq;
            let manifest = self.lock_state().to_manifest();
            let store = Arc::clone(&self.store);
            let root = self.root.clone();
            let grace = self.cfg.gc_grace;
            let referenced = self.lock_state().referenced();
            tokio::spawn(write_manifest_and_collect(
                store, root, seq, manifest, referenced, grace,
            ));
        }
    }

    /// The bytes of one run: from the cache, or one ranged GET.
    async fn run_bytes(&self, tp: &TopicPartition, e: &Entry) -> StorageResult<Bytes> {
        if let Some(bytes) = self.lock_cache().get(e) {
            return Ok(bytes);
        }
        let key = layout::entry_key(&self.root, e);
        let bytes = self
            .store
            .get_range(&key, e.pos..e.pos + e.len)
            .await
            .map_err(|err| match err {
                object_store::Error::NotFound { .. } => StorageError::Corrupt {
                    tp: tp.clone(),
                    reason: format!("{key} is gone but still indexed"),
                },
                other => unavailable("reading", other),
            })?;
        if bytes.len() as u64 != e.len {
            return Err(StorageError::Corrupt {
                tp: tp.clone(),
                reason: format!("{key}: short range read"),
            });
        }
        self.lock_cache().insert(e, bytes.clone());
        Ok(bytes)
    }
}

/// Writes manifest `seq`, then deletes what it makes unnecessary: older manifests but the one
/// before, wal objects below the previous manifest that no partition reads, and compacted run
/// objects no partition reads — each only once older than the grace period. A writer that was
/// away reads the log's end well within it, so it never reuses a deleted number; a run object
/// whose compaction is not recorded yet is younger than that.
async fn write_manifest_and_collect(
    store: Arc<dyn ObjectStore>,
    root: Path,
    seq: u64,
    manifest: Vec<u8>,
    (wal_used, runs_used): (HashSet<u64>, HashSet<u64>),
    grace: Duration,
) {
    let key = layout::manifest_key(&root, seq);
    if let Err(e) = store.put(&key, manifest.into()).await {
        tracing::warn!(%key, error = %e, "writing a manifest failed; the next one will retry");
        return;
    }
    let Ok(manifests) = list(&*store, &root.child("manifest")).await else {
        return;
    };
    let mut seqs: Vec<u64> = manifests
        .iter()
        .filter_map(|m| layout::seq_of(&m.location))
        .collect();
    seqs.sort_unstable();
    let Some(&previous) = seqs.iter().rev().nth(1) else {
        return;
    };
    for old in seqs.iter().filter(|&&s| s < previous) {
        let _ = store.delete(&layout::manifest_key(&root, *old)).await;
    }
    let cutoff = unix_ms_ago(grace);
    let mut deleted = 0usize;
    if let Ok(wal) = list(&*store, &root.child("wal")).await {
        for meta in wal {
            let Some(s) = layout::seq_of(&meta.location) else {
                continue;
            };
            if s < previous
                && !wal_used.contains(&s)
                && meta.last_modified.timestamp_millis() < cutoff
                && store.delete(&meta.location).await.is_ok()
            {
                deleted += 1;
            }
        }
    }
    if let Ok(runs) = list(&*store, &root.child("runs")).await {
        for meta in runs {
            let id = meta
                .location
                .filename()
                .and_then(|f| u64::from_str_radix(f, 16).ok());
            if id.is_some_and(|id| !runs_used.contains(&id))
                && meta.last_modified.timestamp_millis() < cutoff
                && store.delete(&meta.location).await.is_ok()
            {
                deleted += 1;
            }
        }
    }
    if deleted > 0 {
        tracing::info!(deleted, "collected objects no partition reads");
    }
}

async fn list(store: &dyn ObjectStore, prefix: &Path) -> Result<Vec<object_store::ObjectMeta>, ()> {
    store
        .list(Some(prefix))
        .try_collect()
        .await
        .map_err(|e| tracing::warn!(%prefix, error = %e, "listing for collection failed"))
}

fn unix_ms_ago(d: Duration) -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.as_millis() as i64);
    now - d.as_millis() as i64
}

/// Compacts every `every` until the storage is dropped (its writer channel closes).
async fn compact_loop(
    shared: Arc<Shared>,
    tx: mpsc::WeakSender<Request>,
    kind: &'static str,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(tx) = tx.upgrade() else {
            return;
        };
        let storage = ObjectStorage {
            shared: Arc::clone(&shared),
            tx,
            kind,
        };
        match storage.compact_once().await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(groups = n, "compacted small runs"),
            Err(e) => tracing::warn!(error = %e, "compaction failed; the next round retries"),
        }
    }
}

/// The direct-mode backend.
pub struct ObjectStorage {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Request>,
    kind: &'static str,
}

impl ObjectStorage {
    /// Opens the log under `root` in `store`, reading its index from the store.
    pub async fn open(
        store: Arc<dyn ObjectStore>,
        root: Path,
        cfg: ObjectConfig,
        kind: &'static str,
    ) -> StorageResult<Self> {
        let shared = Arc::new(Shared {
            store,
            root,
            state: Mutex::new(State::default()),
            cache: Mutex::new(Cache::new(cfg.cache_bytes)),
            sync: Mutex::new(SyncState {
                stale: true,
                last_synced: Instant::now(),
                last_manifest: 0,
            }),
            cfg,
        });
        shared.resync().await?;
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(writer::run(Arc::clone(&shared), rx));
        if let Some(every) = shared.cfg.compact_interval {
            tokio::spawn(compact_loop(
                Arc::clone(&shared),
                tx.downgrade(),
                kind,
                every,
            ));
        }
        Ok(Self { shared, tx, kind })
    }

    async fn submit<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<StorageResult<T>>) -> Request,
    ) -> StorageResult<T> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| StorageError::Closed)?;
        rx.await.map_err(|_| StorageError::Closed)?
    }

    /// Stores batches copied from another log at their own offsets (see [`TieredStorage`]).
    pub async fn place(
        &self,
        tp: &TopicPartition,
        batches: Vec<RecordBatch>,
    ) -> StorageResult<Appended> {
        self.part(tp, |_| ())?;
        self.submit(|reply| Request::Place {
            tp: tp.clone(),
            batches,
            reply,
        })
        .await
    }

    /// The first offset of about the newest `keep_bytes` stored: what a local copy must keep
    /// for its newest `keep_bytes` to stay local. Within the run that crosses the mark the
    /// offset is taken in proportion to its bytes, so one large run (an upload that found much
    /// to copy) does not pin the whole local log. `None` when nothing is stored.
    pub fn keep_from(&self, tp: &TopicPartition, keep_bytes: u64) -> Option<Offset> {
        self.part(tp, |p| {
            let mut kept = 0u64;
            let mut from = p.next;
            for e in p.entries.iter().rev() {
                if kept >= keep_bytes {
                    break;
                }
                let need = keep_bytes - kept;
                if e.len > need && e.last >= e.base {
                    let count = e.last - e.base + 1;
                    let share = u128::from(count) * u128::from(need) / u128::from(e.len);
                    let keep = u64::try_from(share).unwrap_or(count).clamp(1, count);
                    from = (e.last + 1 - keep).max(p.log_start);
                    break;
                }
                kept += e.len;
                from = e.base.max(p.log_start);
            }
            (!p.entries.is_empty()).then_some(from)
        })
        .ok()
        .flatten()
    }

    fn part<T>(&self, tp: &TopicPartition, f: impl FnOnce(&index::Part) -> T) -> StorageResult<T> {
        let state = self.shared.lock_state();
        state
            .parts
            .get(tp)
            .map(f)
            .ok_or_else(|| StorageError::UnknownPartition(tp.clone()))
    }
}

/// The batches of a run, in order, each as its own bytes.
fn batches_of(
    tp: &TopicPartition,
    mut run: Bytes,
) -> StorageResult<Vec<(Offset, Offset, i64, Bytes)>> {
    let mut out = Vec::new();
    while !run.is_empty() {
        let h = peek_header(&run).map_err(|e| StorageError::Corrupt {
            tp: tp.clone(),
            reason: e.to_string(),
        })?;
        let total = h.total_len();
        if total > run.len() {
            return Err(StorageError::Corrupt {
                tp: tp.clone(),
                reason: "a batch runs past its object range".into(),
            });
        }
        let base = h.base_offset as Offset;
        out.push((
            base,
            base + h.offset_count() - 1,
            h.max_timestamp,
            run.split_to(total),
        ));
    }
    Ok(out)
}

#[async_trait]
impl Storage for ObjectStorage {
    fn kind(&self) -> &'static str {
        self.kind
    }

    async fn open_partition(&self, tp: &TopicPartition) -> StorageResult<Bounds> {
        let mut state = self.shared.lock_state();
        Ok(state.parts.entry(tp.clone()).or_default().bounds())
    }

    async fn append(
        &self,
        tp: &TopicPartition,
        batches: Vec<RecordBatch>,
        _durability: Durability,
    ) -> StorageResult<Appended> {
        self.part(tp, |_| ())?;
        self.submit(|reply| Request::Append {
            tp: tp.clone(),
            batches,
            reply,
        })
        .await
    }

    async fn read(
        &self,
        tp: &TopicPartition,
        from: Offset,
        max_bytes: usize,
    ) -> StorageResult<ReadChunk> {
        // Up to this many runs are considered per read; only the first may cost a GET.
        const RUNS_PER_READ: usize = 16;
        let (entries, bounds) = self.part(tp, |p| {
            let first = p.entry_at(from);
            let entries: Vec<Entry> = p
                .entries
                .iter()
                .skip(first)
                .take(RUNS_PER_READ)
                .copied()
                .collect();
            (entries, p.bounds())
        })?;
        if from < bounds.log_start || from > bounds.high_watermark {
            return Err(StorageError::OffsetOutOfRange {
                tp: tp.clone(),
                offset: from,
                log_start: bounds.log_start,
                high_watermark: bounds.high_watermark,
            });
        }
        let mut out = ReadChunk {
            batches: Vec::new(),
            bounds,
        };
        let mut used = 0usize;
        for (i, e) in entries.iter().enumerate() {
            let run = if i == 0 {
                self.shared.run_bytes(tp, e).await?
            } else {
                match self.shared.lock_cache().get(e) {
                    Some(b) => b,
                    None => break,
                }
            };
            for (_, last, _, bytes) in batches_of(tp, run)? {
                if last < from {
                    continue;
                }
                if !out.batches.is_empty() && used + bytes.len() > max_bytes {
                    return Ok(out);
                }
                used += bytes.len();
                out.batches.push(bytes);
            }
        }
        Ok(out)
    }

    async fn bounds(&self, tp: &TopicPartition) -> StorageResult<Bounds> {
        self.part(tp, index::Part::bounds)
    }

    async fn offset_for_timestamp(
        &self,
        tp: &TopicPartition,
        timestamp_ms: i64,
    ) -> StorageResult<Option<(Offset, i64)>> {
        let (candidate, log_start) = self.part(tp, |p| {
            (
                p.entries.iter().find(|e| e.max_ts >= timestamp_ms).copied(),
                p.log_start,
            )
        })?;
        let Some(entry) = candidate else {
            return Ok(None);
        };
        let run = self.shared.run_bytes(tp, &entry).await?;
        for (base, last, max_ts, bytes) in batches_of(tp, run)? {
            if last < log_start || max_ts < timestamp_ms {
                continue;
            }
            let batch = RecordBatch::parse(bytes)?;
            // Uncompressed and compressed batches alike are searched record by record when
            // they decode; otherwise the batch start answers, as Kafka does.
            let hit = batch.records().ok().and_then(|rs| {
                rs.into_iter()
                    .find(|r| r.timestamp_ms >= timestamp_ms && r.offset >= log_start)
                    .map(|r| (r.offset, r.timestamp_ms))
            });
            return Ok(Some(hit.unwrap_or((base.max(log_start), max_ts))));
        }
        Ok(None)
    }

    async fn delete_before(&self, tp: &TopicPartition, offset: Offset) -> StorageResult<Offset> {
        let current = self.part(tp, |p| p.log_start)?;
        if offset <= current {
            return Ok(current);
        }
        self.submit(|reply| Request::DeleteBefore {
            tp: tp.clone(),
            offset,
            reply,
        })
        .await
    }

    async fn apply_retention(
        &self,
        tp: &TopicPartition,
        retention: Retention,
        now_ms: i64,
    ) -> StorageResult<Offset> {
        let (start, target) = self.part(tp, |p| {
            let mut target = p.log_start;
            let mut remaining = p.byte_len();
            for e in &p.entries {
                let too_big = retention
                    .max_bytes
                    .is_some_and(|max| remaining - e.len >= max);
                let too_old = retention
                    .max_age_ms
                    .is_some_and(|age| e.max_ts < now_ms - age);
                if !(too_big || too_old) {
                    break;
                }
                remaining -= e.len;
                target = e.last + 1;
            }
            (p.log_start, target)
        })?;
        if target <= start {
            return Ok(start);
        }
        self.delete_before(tp, target).await
    }

    async fn flush(&self) -> StorageResult<()> {
        // Every acknowledged append is already in the store.
        Ok(())
    }

    async fn store_blob(&self, name: &str, bytes: Bytes) -> StorageResult<bool> {
        let key = layout::blob_key(&self.shared.root, name);
        self.shared
            .store
            .put(&key, bytes.into())
            .await
            .map_err(|e| unavailable("storing a blob", e))?;
        Ok(true)
    }

    async fn load_blob(&self, name: &str) -> StorageResult<Option<Bytes>> {
        let key = layout::blob_key(&self.shared.root, name);
        match self.shared.store.get(&key).await {
            Ok(got) => Ok(Some(
                got.bytes()
                    .await
                    .map_err(|e| unavailable("reading a blob", e))?,
            )),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(unavailable("reading a blob", e)),
        }
    }

    async fn stored_partitions(&self) -> StorageResult<Vec<TopicPartition>> {
        let state = self.shared.lock_state();
        Ok(state
            .parts
            .iter()
            .filter(|(_, p)| p.next > 0)
            .map(|(tp, _)| tp.clone())
            .collect())
    }

    async fn remove_partition(&self, tp: &TopicPartition) -> StorageResult<()> {
        if self.part(tp, |_| ()).is_err() {
            return Ok(());
        }
        self.submit(|reply| Request::Remove {
            tp: tp.clone(),
            reply,
        })
        .await
    }
}

#[cfg(test)]
mod tests;
