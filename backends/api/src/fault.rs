//! A wrapper that injects failures into any backend, so tests can break storage on demand.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use async_trait::async_trait;
use switchboard_model::{Offset, RecordBatch, TopicPartition};

use crate::{
    Appended, Bounds, Durability, ReadChunk, Retention, SharedStorage, Storage, StorageError,
    StorageResult,
};

/// Switches a test flips while the wrapped storage is in use.
#[derive(Debug, Default)]
pub struct Faults {
    down: AtomicBool,
    failing_appends: AtomicU32,
    failing_reads: AtomicU32,
    syncs_held: AtomicBool,
    syncs_released: tokio::sync::Notify,
}

impl Faults {
    /// Every operation fails with a retryable error until [`Faults::set_down`] `(false)`.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }
    /// The next `n` appends fail (without writing anything).
    pub fn fail_next_appends(&self, n: u32) {
        self.failing_appends.store(n, Ordering::SeqCst);
    }
    pub fn fail_next_reads(&self, n: u32) {
        self.failing_reads.store(n, Ordering::SeqCst);
    }
    /// `sync` calls wait from now until `hold_syncs(false)`: an fsync that takes as long as
    /// the test likes.
    pub fn hold_syncs(&self, hold: bool) {
        self.syncs_held.store(hold, Ordering::SeqCst);
        if !hold {
            self.syncs_released.notify_waiters();
        }
    }

    async fn held_sync(&self) {
        loop {
            let released = self.syncs_released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if !self.syncs_held.load(Ordering::SeqCst) {
                return;
            }
            released.await;
        }
    }

    fn check(&self, op: &str) -> StorageResult<()> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StorageError::Unavailable(format!(
                "injected outage during {op}"
            )));
        }
        Ok(())
    }

    fn take(counter: &AtomicU32) -> bool {
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

/// Delegates to `inner` unless a fault says otherwise.
pub struct FaultyStorage {
    inner: SharedStorage,
    faults: Arc<Faults>,
}

impl FaultyStorage {
    pub fn new(inner: SharedStorage) -> (Self, Arc<Faults>) {
        let faults = Arc::new(Faults::default());
        (
            Self {
                inner,
                faults: faults.clone(),
            },
            faults,
        )
    }
}

#[async_trait]
impl Storage for FaultyStorage {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    async fn open_partition(&self, tp: &TopicPartition) -> StorageResult<Bounds> {
        self.faults.check("open")?;
        self.inner.open_partition(tp).await
    }

    async fn append(
        &self,
        tp: &TopicPartition,
        batches: Vec<RecordBatch>,
        durability: Durability,
    ) -> StorageResult<Appended> {
        self.faults.check("append")?;
        if Faults::take(&self.faults.failing_appends) {
            return Err(StorageError::Unavailable("injected append failure".into()));
        }
        self.inner.append(tp, batches, durability).await
    }

    async fn read(
        &self,
        tp: &TopicPartition,
        from: Offset,
        max_bytes: usize,
    ) -> StorageResult<ReadChunk> {
        self.faults.check("read")?;
        if Faults::take(&self.faults.failing_reads) {
            return Err(StorageError::Unavailable("injected read failure".into()));
        }
        self.inner.read(tp, from, max_bytes).await
    }

    async fn bounds(&self, tp: &TopicPartition) -> StorageResult<Bounds> {
        self.faults.check("bounds")?;
        self.inner.bounds(tp).await
    }

    async fn offset_for_timestamp(
        &self,
        tp: &TopicPartition,
        timestamp_ms: i64,
    ) -> StorageResult<Option<(Offset, i64)>> {
        self.faults.check("offset_for_timestamp")?;
        self.inner.offset_for_timestamp(tp, timestamp_ms).await
    }

    async fn delete_before(&self, tp: &TopicPartition, offset: Offset) -> StorageResult<Offset> {
        self.faults.check("delete_before")?;
        self.inner.delete_before(tp, offset).await
    }

    async fn apply_retention(
        &self,
        tp: &TopicPartition,
        retention: Retention,
        now_ms: i64,
    ) -> StorageResult<Offset> {
        self.faults.check("retention")?;
        self.inner.apply_retention(tp, retention, now_ms).await
    }

    async fn flush(&self) -> StorageResult<()> {
        self.faults.check("flush")?;
        self.inner.flush().await
    }

    async fn sync(&self, tp: &TopicPartition) -> StorageResult<()> {
        self.faults.check("sync")?;
        self.faults.held_sync().await;
        self.inner.sync(tp).await
    }

    async fn remove_partition(&self, tp: &TopicPartition) -> StorageResult<()> {
        self.faults.check("remove")?;
        self.inner.remove_partition(tp).await
    }
}
