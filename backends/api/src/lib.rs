//! The protocol-neutral storage trait.
//!
//! A backend stores, per partition, a dense sequence of Kafka v2 record batches. It assigns base
//! offsets on append, serves reads from any offset up to a byte budget, reports the log start and
//! high watermark, deletes from the front, and finds offsets by time. Durability is explicit: an
//! append with [`Durability::Sync`] returns only once the batch would survive `kill -9` (for the
//! native log: it has been fsynced).

pub mod conformance;
mod error;
pub mod fault;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use switchboard_model::{Offset, RecordBatch, TopicPartition};

pub use error::{StorageError, StorageResult};

/// What an append must reach before it is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// In the backend's buffers; survives a process crash only if the OS survives too.
    Buffered,
    /// On stable storage (fsync for files, a completed PUT for object stores).
    Sync,
}

/// Where a successful append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub base_offset: Offset,
    pub last_offset: Offset,
}

/// The bounds of a partition: `log_start` is the first readable offset, `high_watermark` the
/// offset the next append will get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Bounds {
    pub log_start: Offset,
    pub high_watermark: Offset,
}

/// The answer to a read: whole batches, the first of which contains the requested offset.
#[derive(Debug, Clone, Default)]
pub struct ReadChunk {
    pub batches: Vec<Bytes>,
    pub bounds: Bounds,
}

impl ReadChunk {
    pub fn byte_len(&self) -> usize {
        self.batches.iter().map(Bytes::len).sum()
    }
}

/// What to keep of a partition; `None` means unbounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    pub max_bytes: Option<u64>,
    pub max_age_ms: Option<i64>,
}

/// One storage engine. Every method is safe to call concurrently; appends to one partition are
/// ordered by the backend.
#[async_trait]
pub trait Storage: Send + Sync + 'static {
    /// Short name for logs and metrics (`log`, `memory`, `s3`, …).
    fn kind(&self) -> &'static str;

    /// Makes sure the partition exists (creating it empty) and returns its bounds.
    async fn open_partition(&self, tp: &TopicPartition) -> StorageResult<Bounds>;

    /// Appends batches in order; each is placed at the next offset (its base offset rewritten).
    async fn append(
        &self,
        tp: &TopicPartition,
        batches: Vec<RecordBatch>,
        durability: Durability,
    ) -> StorageResult<Appended>;

    /// Reads whole batches starting with the one containing `from`. Returns at least one batch
    /// when `from` is below the high watermark, even if it exceeds `max_bytes` (so a consumer
    /// never stalls on a large batch), and stops before exceeding `max_bytes` otherwise.
    async fn read(
        &self,
        tp: &TopicPartition,
        from: Offset,
        max_bytes: usize,
    ) -> StorageResult<ReadChunk>;

    async fn bounds(&self, tp: &TopicPartition) -> StorageResult<Bounds>;

    /// The first offset whose batch has a max timestamp at or after `timestamp_ms`, with that
    /// timestamp; `None` if every record is older.
    async fn offset_for_timestamp(
        &self,
        tp: &TopicPartition,
        timestamp_ms: i64,
    ) -> StorageResult<Option<(Offset, i64)>>;

    /// Makes offsets below `offset` unreadable; returns the new log start. Backends may keep
    /// bytes until a whole segment is deletable, but reads below the new start fail.
    async fn delete_before(&self, tp: &TopicPartition, offset: Offset) -> StorageResult<Offset>;

    /// Drops data the policy no longer keeps; returns the new log start.
    async fn apply_retention(
        &self,
        tp: &TopicPartition,
        retention: Retention,
        now_ms: i64,
    ) -> StorageResult<Offset>;

    /// Makes every acknowledged append of every partition durable.
    async fn flush(&self) -> StorageResult<()>;

    /// Makes every append to `tp` so far durable. Concurrent callers should share one
    /// fsync (group commit); the default flushes everything.
    async fn sync(&self, tp: &TopicPartition) -> StorageResult<()> {
        let _ = tp;
        self.flush().await
    }

    /// Deletes the partition and its data.
    async fn remove_partition(&self, tp: &TopicPartition) -> StorageResult<()>;

    /// The partitions holding data that this backend found on its own, without being told to
    /// open them: what shared storage (an object store) brings to a broker started on a clean
    /// disk. Backends whose data is local answer nothing: the routing table knows their streams.
    async fn stored_partitions(&self) -> StorageResult<Vec<TopicPartition>> {
        Ok(Vec::new())
    }

    /// Keeps a named blob of metadata beside the data (the routing table of a broker over
    /// shared storage). Returns false when this backend keeps no blobs: its data is local, and
    /// so is the metadata that describes it.
    async fn store_blob(&self, name: &str, bytes: Bytes) -> StorageResult<bool> {
        let _ = (name, bytes);
        Ok(false)
    }

    /// The blob last stored under `name`, if this backend keeps blobs and has one.
    async fn load_blob(&self, name: &str) -> StorageResult<Option<Bytes>> {
        let _ = name;
        Ok(None)
    }
}

pub type SharedStorage = Arc<dyn Storage>;
