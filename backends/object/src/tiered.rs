//! Tiered mode: a local backend (the native log) takes every write and acknowledges it under
//! its own durability rules; in the background, what it holds is copied into an object store
//! log at the same offsets, and local data older than a byte budget is dropped once copied.
//! Reads below the local log's start are served from the store, so a consumer sees one
//! partition from the oldest copied offset to the local end.
//!
//! Uploads of all partitions run concurrently each round, so the object writer gathers them
//! into one object per round rather than one per partition.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use switchboard_model::{Offset, RecordBatch, TopicPartition};
use switchboard_storage::{
    Appended, Bounds, Durability, ReadChunk, Retention, SharedStorage, Storage, StorageError,
    StorageResult,
};
use tokio::sync::oneshot;

use crate::ObjectStorage;

/// Bytes read from the local log per upload step.
const UPLOAD_READ_BYTES: usize = 4 << 20;
/// Upload steps per partition per round, so one busy partition cannot hold a round forever.
const UPLOAD_STEPS: usize = 64;

#[derive(Debug, Clone)]
pub struct TierConfig {
    /// How often local data is copied to the store.
    pub upload_interval: Duration,
    /// Bytes per partition kept locally once copied.
    pub local_retention_bytes: u64,
}

struct Inner {
    local: SharedStorage,
    remote: ObjectStorage,
    cfg: TierConfig,
    open: Mutex<HashSet<TopicPartition>>,
    /// Held by an upload round and by deletions, so a round never copies data that a
    /// concurrent deletion is removing (which would bring it back in the store).
    rounds: tokio::sync::Mutex<()>,
}

/// The tiered backend.
pub struct TieredStorage {
    inner: Arc<Inner>,
    _stop: oneshot::Sender<()>,
}

impl TieredStorage {
    /// Starts tiering `local` into `remote`; the uploader runs until this value is dropped.
    pub fn new(local: SharedStorage, remote: ObjectStorage, cfg: TierConfig) -> Self {
        let inner = Arc::new(Inner {
            local,
            remote,
            cfg,
            open: Mutex::new(HashSet::new()),
            rounds: tokio::sync::Mutex::new(()),
        });
        let (stop, stopped) = oneshot::channel();
        tokio::spawn(upload_loop(Arc::clone(&inner), stopped));
        Self { inner, _stop: stop }
    }

    /// Copies everything the local log holds now, and trims it; what the background task does
    /// every `upload_interval`.
    pub async fn upload_now(&self) -> StorageResult<()> {
        self.inner.upload_round().await
    }
}

async fn upload_loop(inner: Arc<Inner>, mut stopped: oneshot::Receiver<()>) {
    let mut tick = tokio::time::interval(inner.cfg.upload_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = inner.upload_round().await {
            tracing::warn!(error = %e, "tiered upload round failed; the next round retries");
        }
    }
}

impl Inner {
    fn open_set(&self) -> MutexGuard<'_, HashSet<TopicPartition>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn upload_round(&self) -> StorageResult<()> {
        let _round = self.rounds.lock().await;
        let tps: Vec<TopicPartition> = self.open_set().iter().cloned().collect();
        let results =
            futures_util::future::join_all(tps.iter().map(|tp| self.upload_partition(tp))).await;
        // A partition removed meanwhile is not a failure of the round.
        results
            .into_iter()
            .find(|r| !matches!(r, Ok(()) | Err(StorageError::UnknownPartition(_))))
            .unwrap_or(Ok(()))
    }

    async fn upload_partition(&self, tp: &TopicPartition) -> StorageResult<()> {
        let local = self.local.bounds(tp).await?;
        let copied = self.remote.bounds(tp).await?.high_watermark;
        let mut from = copied.max(local.log_start);
        for _ in 0..UPLOAD_STEPS {
            if from >= local.high_watermark {
                break;
            }
            let chunk = match self.local.read(tp, from, UPLOAD_READ_BYTES).await {
                Ok(c) => c,
                // Deleted locally meanwhile (retention, DeleteRecords): start past it.
                Err(StorageError::OffsetOutOfRange { log_start, .. }) if log_start > from => {
                    from = log_start;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if chunk.batches.is_empty() {
                break;
            }
            let batches = chunk
                .batches
                .into_iter()
                .map(RecordBatch::parse)
                .collect::<Result<Vec<_>, _>>()?;
            from = self.remote.place(tp, batches).await?.last_offset + 1;
        }
        if let Some(keep_from) = self.remote.keep_from(tp, self.cfg.local_retention_bytes)
            && keep_from > local.log_start
        {
            self.local.delete_before(tp, keep_from).await?;
        }
        Ok(())
    }

    /// The partition's bounds across both tiers: from the oldest copied offset (or the local
    /// start, when nothing older is in the store) to the local end.
    async fn bounds(&self, tp: &TopicPartition) -> StorageResult<Bounds> {
        let local = self.local.bounds(tp).await?;
        Ok(self.with_store(tp, local).await)
    }

    /// `local` (the local log's bounds) widened by what the store holds below them.
    async fn with_store(&self, tp: &TopicPartition, local: Bounds) -> Bounds {
        let log_start = match self.remote.bounds(tp).await.ok() {
            Some(r) if r.high_watermark > r.log_start && r.log_start < local.log_start => {
                r.log_start
            }
            _ => local.log_start,
        };
        Bounds {
            log_start,
            high_watermark: local.high_watermark,
        }
    }
}

#[async_trait]
impl Storage for TieredStorage {
    fn kind(&self) -> &'static str {
        "tiered"
    }

    async fn open_partition(&self, tp: &TopicPartition) -> StorageResult<Bounds> {
        self.inner.local.open_partition(tp).await?;
        self.inner.remote.open_partition(tp).await?;
        self.inner.open_set().insert(tp.clone());
        self.inner.bounds(tp).await
    }

    async fn append(
        &self,
        tp: &TopicPartition,
        batches: Vec<RecordBatch>,
        durability: Durability,
    ) -> StorageResult<Appended> {
        self.inner.local.append(tp, batches, durability).await
    }

    async fn read(
        &self,
        tp: &TopicPartition,
        from: Offset,
        max_bytes: usize,
    ) -> StorageResult<ReadChunk> {
        let local_start = self.inner.local.bounds(tp).await?.log_start;
        if from >= local_start {
            match self.inner.local.read(tp, from, max_bytes).await {
                Ok(mut chunk) => {
                    chunk.bounds = self.inner.with_store(tp, chunk.bounds).await;
                    return Ok(chunk);
                }
                // Trimmed after the check: by then the offsets are in the store.
                Err(StorageError::OffsetOutOfRange { log_start, .. }) if log_start > from => {}
                Err(e) => return Err(e),
            }
        }
        let mut chunk = self.inner.remote.read(tp, from, max_bytes).await?;
        chunk.bounds = self.inner.bounds(tp).await?;
        Ok(chunk)
    }

    async fn bounds(&self, tp: &TopicPartition) -> StorageResult<Bounds> {
        self.inner.bounds(tp).await
    }

    async fn offset_for_timestamp(
        &self,
        tp: &TopicPartition,
        timestamp_ms: i64,
    ) -> StorageResult<Option<(Offset, i64)>> {
        let local_start = self.inner.local.bounds(tp).await?.log_start;
        if let Some((offset, ts)) = self
            .inner
            .remote
            .offset_for_timestamp(tp, timestamp_ms)
            .await?
            && offset < local_start
        {
            return Ok(Some((offset, ts)));
        }
        self.inner
            .local
            .offset_for_timestamp(tp, timestamp_ms)
            .await
    }

    async fn delete_before(&self, tp: &TopicPartition, offset: Offset) -> StorageResult<Offset> {
        let _round = self.inner.rounds.lock().await;
        self.inner.remote.delete_before(tp, offset).await?;
        self.inner.local.delete_before(tp, offset).await?;
        Ok(self.inner.bounds(tp).await?.log_start)
    }

    async fn apply_retention(
        &self,
        tp: &TopicPartition,
        retention: Retention,
        now_ms: i64,
    ) -> StorageResult<Offset> {
        // The store holds the older data, so its cut goes first; the local log then applies
        // the same limits to what it still holds.
        let _round = self.inner.rounds.lock().await;
        self.inner
            .remote
            .apply_retention(tp, retention, now_ms)
            .await?;
        let remote_start = self.inner.remote.bounds(tp).await?.log_start;
        if remote_start > self.inner.local.bounds(tp).await?.log_start {
            self.inner.local.delete_before(tp, remote_start).await?;
        }
        self.inner
            .local
            .apply_retention(tp, retention, now_ms)
            .await?;
        Ok(self.inner.bounds(tp).await?.log_start)
    }

    async fn flush(&self) -> StorageResult<()> {
        self.inner.local.flush().await
    }

    async fn sync(&self, tp: &TopicPartition) -> StorageResult<()> {
        self.inner.local.sync(tp).await
    }

    async fn stored_partitions(&self) -> StorageResult<Vec<TopicPartition>> {
        self.inner.remote.stored_partitions().await
    }

    async fn store_blob(&self, name: &str, bytes: bytes::Bytes) -> StorageResult<bool> {
        self.inner.remote.store_blob(name, bytes).await
    }

    async fn load_blob(&self, name: &str) -> StorageResult<Option<bytes::Bytes>> {
        self.inner.remote.load_blob(name).await
    }

    async fn remove_partition(&self, tp: &TopicPartition) -> StorageResult<()> {
        let _round = self.inner.rounds.lock().await;
        self.inner.open_set().remove(tp);
        self.inner.remote.remove_partition(tp).await?;
        self.inner.local.remove_partition(tp).await
    }
}
