//! The router: where a publish goes and who is woken when it lands.
//!
//! It joins the replicated routing table ([`meta::MetaStore`] over [`table::RoutingTable`]) with
//! a storage backend. Front ends call [`Router::append`] and [`Router::read`]; fetches that find
//! nothing new park on a [`Waiter`] and are woken by the next append, never by polling.

pub mod accept;
pub mod meta;
mod partition;
pub mod producers;
mod recovery;
mod retention;
pub mod table;
mod tail;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use switchboard_model::{Offset, PartitionId, RecordBatch, StreamName, TopicPartition};
use switchboard_storage::{Appended, Bounds, Durability, ReadChunk, SharedStorage, StorageError};

pub use meta::{MetaError, MetaStore};
use partition::PartitionHandle;
pub use partition::Waiter;
use producers::{ProducerStates, SequenceCheck, is_sequenced};
pub use recovery::{Recovered, TABLE_BLOB, spawn_table_backup};
pub use retention::{RetentionDefaults, spawn_retention};
pub use table::{Applied, Command, CommittedOffset, OffsetCommit, Rejection, StreamMeta};

/// Errors of the routing layer, each mapped by front ends to their protocol's own code.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("stream {0} does not exist")]
    UnknownStream(StreamName),
    #[error("partition {0} does not exist")]
    UnknownPartition(TopicPartition),
    #[error("out-of-order sequence from producer {producer_id}: expected {expected}, got {got}")]
    OutOfOrderSequence {
        producer_id: i64,
        expected: i32,
        got: i32,
    },
    #[error("producer {producer_id} epoch {got} is older than the current epoch {current}")]
    StaleProducerEpoch {
        producer_id: i64,
        current: i16,
        got: i16,
    },
    #[error("metadata change refused: {0}")]
    Rejected(#[from] Rejection),
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl RouterError {
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Meta(e) => e.is_retryable(),
            Self::Storage(e) => e.is_retryable(),
            _ => false,
        }
    }
}

pub type RouterResult<T> = Result<T, RouterError>;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The publish and subscribe path shared by every front end.
pub struct Router {
    meta: MetaStore,
    storage: SharedStorage,
    partitions: Mutex<Handles>,
}

/// Looked up for every append and read: hashed with foldhash (seeded per map) rather than
/// SipHash.
type Handles = HashMap<TopicPartition, Arc<PartitionHandle>, foldhash::fast::RandomState>;

impl Router {
    pub fn new(meta: MetaStore, storage: SharedStorage) -> Arc<Self> {
        Arc::new(Self {
            meta,
            storage,
            partitions: Mutex::new(Handles::default()),
        })
    }

    pub fn meta(&self) -> &MetaStore {
        &self.meta
    }

    pub fn storage(&self) -> &SharedStorage {
        &self.storage
    }

    fn handles(&self) -> MutexGuard<'_, Handles> {
        self.partitions.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn stream(&self, name: &StreamName) -> Option<StreamMeta> {
        self.meta.read(|t| t.stream(name).cloned())
    }

    pub fn streams(&self) -> Vec<StreamMeta> {
        self.meta.read(|t| t.streams().cloned().collect())
    }

    /// The handle of an existing partition, opening it in storage on first use.
    async fn partition(&self, tp: &TopicPartition) -> RouterResult<Arc<PartitionHandle>> {
        if let Some(h) = self.handles().get(tp) {
            return Ok(h.clone());
        }
        let meta = self
            .stream(&tp.stream)
            .ok_or_else(|| RouterError::UnknownStream(tp.stream.clone()))?;
        if tp.partition >= meta.partitions {
            return Err(RouterError::UnknownPartition(tp.clone()));
        }
        let bounds = self.storage.open_partition(tp).await?;
        let producers = self.recent_producers(tp, bounds.high_watermark).await;
        let mut handles = self.handles();
        let h = handles.entry(tp.clone()).or_insert_with(|| {
            Arc::new(PartitionHandle::with_producers(
                bounds.high_watermark,
                producers,
            ))
        });
        Ok(h.clone())
    }

    /// Rebuilds idempotent-producer state from the batches written in the last
    /// [`PRODUCER_STATE_WINDOW_MS`], so that a producer retrying across a broker restart gets
    /// its original offsets back instead of a duplicate. Retries older than that cannot happen:
    /// producers give up after `delivery.timeout.ms` (2 minutes by default). Best effort: a read
    /// error leaves the state empty, as before this existed.
    async fn recent_producers(
        &self,
        tp: &TopicPartition,
        high_watermark: Offset,
    ) -> ProducerStates {
        let mut states = ProducerStates::default();
        let since = now_ms() - PRODUCER_STATE_WINDOW_MS;
        let Ok(Some((mut from, _))) = self.storage.offset_for_timestamp(tp, since).await else {
            return states;
        };
        let mut budget = PRODUCER_STATE_READ_BYTES;
        while from < high_watermark && budget > 0 {
            let Ok(chunk) = self.storage.read(tp, from, budget.min(1 << 20)).await else {
                break;
            };
            if chunk.batches.is_empty() {
                break;
            }
            for bytes in &chunk.batches {
                budget = budget.saturating_sub(bytes.len());
                let Ok(h) = switchboard_model::batch::peek_header(bytes) else {
                    return states;
                };
                if h.producer_id >= 0 && h.base_offset >= 0 {
                    states.record(&h, h.base_offset as Offset);
                }
                from = from.max(h.base_offset.max(0) as Offset + h.offset_count());
            }
        }
        states
    }

    /// Creates a stream and its partitions.
    pub async fn create_stream(
        &self,
        name: StreamName,
        partitions: u32,
        config: BTreeMap<String, String>,
    ) -> RouterResult<StreamMeta> {
        let id = topic_id(&name);
        let cmd = Command::CreateStream {
            name,
            id,
            partitions,
            config,
            created_ms: now_ms(),
        };
        let meta = self.expect_stream(self.meta.propose(cmd).await?)?;
        for p in 0..meta.partitions {
            self.storage
                .open_partition(&TopicPartition::new(meta.name.clone(), p))
                .await?;
        }
        Ok(meta)
    }

    pub async fn delete_stream(&self, name: &StreamName) -> RouterResult<()> {
        let cmd = Command::DeleteStream { name: name.clone() };
        let meta = self.expect_stream(self.meta.propose(cmd).await?)?;
        for p in 0..meta.partitions {
            let tp = TopicPartition::new(name.clone(), p);
            if let Some(h) = self.handles().remove(&tp) {
                h.wake_all();
            }
            self.storage.remove_partition(&tp).await?;
        }
        Ok(())
    }

    pub async fn add_partitions(&self, name: &StreamName, total: u32) -> RouterResult<StreamMeta> {
        let cmd = Command::AddPartitions {
            name: name.clone(),
            total,
        };
        let meta = self.expect_stream(self.meta.propose(cmd).await?)?;
        for p in 0..meta.partitions {
            self.storage
                .open_partition(&TopicPartition::new(name.clone(), p))
                .await?;
        }
        Ok(meta)
    }

    pub async fn alter_config(
        &self,
        name: &StreamName,
        changes: Vec<(String, Option<String>)>,
    ) -> RouterResult<StreamMeta> {
        let cmd = Command::AlterConfig {
            name: name.clone(),
            changes,
        };
        self.expect_stream(self.meta.propose(cmd).await?)
    }

    fn expect_stream(&self, applied: Applied) -> RouterResult<StreamMeta> {
        match applied {
            Applied::Stream(m) => Ok(m),
            Applied::Rejected(r) => Err(r.into()),
            other => Err(RouterError::Meta(MetaError::Corrupt(format!(
                "unexpected answer {other:?}"
            )))),
        }
    }

    /// Appends batches to one partition. Idempotent-producer retries are answered with their
    /// original offsets; with [`Durability::Sync`] the call returns once the data is durable.
    /// Waiting fetches are woken as soon as the data is readable.
    pub async fn append(
        &self,
        tp: &TopicPartition,
        batches: Vec<RecordBatch>,
        durability: Durability,
    ) -> RouterResult<Appended> {
        self.append_then(tp, batches, durability, |_| {}).await
    }

    /// Like [`append`](Self::append), running `then` once the batches are stored and before
    /// anyone waiting for appends to `tp` is woken, while appends to `tp` wait: a front end
    /// that hands its own messages to its readers there (and raises their position) spares
    /// them a wake-up. Not run for a batch that was a duplicate.
    pub async fn append_then(
        &self,
        tp: &TopicPartition,
        batches: Vec<RecordBatch>,
        durability: Durability,
        then: impl FnOnce(&Appended),
    ) -> RouterResult<Appended> {
        let handle = self.partition(tp).await?;
        let appended = {
            let mut producers = handle.producers.lock().await;
            // Only an idempotent producer's batches have sequences to check and record; the
            // others (every MQTT and AMQP publish) go through as they came, with no lists built.
            let sequenced = batches.iter().any(|b| is_sequenced(b.header()));
            let fresh = if sequenced {
                let (fresh, duplicate) = screen(&producers, batches)?;
                if fresh.is_empty()
                    && let Some(d) = duplicate
                {
                    return Ok(d);
                }
                fresh
            } else {
                batches
            };
            let headers: Vec<_> = if sequenced {
                fresh.iter().map(|b| *b.header()).collect()
            } else {
                Vec::new()
            };
            let appended = self.storage.append(tp, fresh, Durability::Buffered).await?;
            let mut at = appended.base_offset;
            for h in &headers {
                producers.record(h, at);
                at += h.offset_count();
            }
            then(&appended);
            handle.advance(appended.last_offset + 1);
            appended
        };
        if durability == Durability::Sync {
            self.storage.sync(tp).await?;
        }
        Ok(appended)
    }

    /// Makes what was appended to `tp` durable, under the storage's fsync policy; concurrent
    /// callers share fsyncs.
    pub async fn sync(&self, tp: &TopicPartition) -> RouterResult<()> {
        Ok(self.storage.sync(tp).await?)
    }

    pub async fn read(
        &self,
        tp: &TopicPartition,
        from: Offset,
        max_bytes: usize,
    ) -> RouterResult<ReadChunk> {
        self.partition(tp).await?;
        Ok(self.storage.read(tp, from, max_bytes).await?)
    }

    pub async fn bounds(&self, tp: &TopicPartition) -> RouterResult<Bounds> {
        self.partition(tp).await?;
        Ok(self.storage.bounds(tp).await?)
    }

    /// Registers `waiter` to be woken by the next append to `tp`.
    pub async fn watch(&self, tp: &TopicPartition, waiter: &Waiter) -> RouterResult<()> {
        self.partition(tp).await?.register(waiter);
        Ok(())
    }

    pub async fn offset_for_timestamp(
        &self,
        tp: &TopicPartition,
        timestamp_ms: i64,
    ) -> RouterResult<Option<(Offset, i64)>> {
        self.partition(tp).await?;
        Ok(self.storage.offset_for_timestamp(tp, timestamp_ms).await?)
    }

    pub async fn delete_before(&self, tp: &TopicPartition, offset: Offset) -> RouterResult<Offset> {
        self.partition(tp).await?;
        Ok(self.storage.delete_before(tp, offset).await?)
    }

    pub async fn allocate_producer_id(&self) -> RouterResult<i64> {
        match self.meta.propose(Command::AllocateProducerId).await? {
            Applied::ProducerId(id) => Ok(id),
            Applied::Rejected(r) => Err(r.into()),
            other => Err(RouterError::Meta(MetaError::Corrupt(format!(
                "unexpected answer {other:?}"
            )))),
        }
    }

    pub async fn commit_offsets(
        &self,
        group: &str,
        offsets: Vec<OffsetCommit>,
    ) -> RouterResult<()> {
        let cmd = Command::CommitOffsets {
            group: group.to_owned(),
            offsets,
        };
        match self.meta.propose(cmd).await? {
            Applied::Rejected(r) => Err(r.into()),
            _ => Ok(()),
        }
    }

    pub fn committed(
        &self,
        group: &str,
        stream: &StreamName,
        p: PartitionId,
    ) -> Option<CommittedOffset> {
        self.meta.read(|t| t.committed(group, stream, p).cloned())
    }

    pub async fn delete_group(&self, group: &str) -> RouterResult<()> {
        match self
            .meta
            .propose(Command::DeleteGroup {
                group: group.to_owned(),
            })
            .await?
        {
            Applied::Rejected(r) => Err(r.into()),
            _ => Ok(()),
        }
    }

    /// Sets or removes an entry of a front end's metadata space; returns once it is committed.
    pub async fn put(&self, space: &str, key: &str, value: Option<Vec<u8>>) -> RouterResult<()> {
        let cmd = Command::Put {
            space: space.to_owned(),
            key: key.to_owned(),
            value,
        };
        self.meta.propose(cmd).await?;
        Ok(())
    }

    /// Every entry of a metadata space.
    pub fn space(&self, space: &str) -> Vec<(String, Vec<u8>)> {
        self.meta.read(|t| {
            t.space(space)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
    }

    /// Makes everything acknowledged durable; called on shutdown.
    pub async fn flush(&self) -> RouterResult<()> {
        Ok(self.storage.flush().await?)
    }
}

/// A topic id that is unique in practice: the name hashed with the creation time and a
/// process-random seed (std's `RandomState`), so a re-created topic gets a new id.
fn topic_id(name: &StreamName) -> u128 {
    use std::hash::{BuildHasher, Hasher};
    let mut id = 0u128;
    for round in 0..2u8 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write(name.as_str().as_bytes());
        h.write_i64(now_ms());
        h.write_u8(round);
        id = (id << 64) | u128::from(h.finish());
    }
    id
}

/// How far back producer state is rebuilt when a partition is opened.
pub const PRODUCER_STATE_WINDOW_MS: i64 = 10 * 60 * 1000;
/// Most bytes read to rebuild producer state of one partition.
const PRODUCER_STATE_READ_BYTES: usize = 64 << 20;

/// How long a fetch may wait at most, whatever the client asks (bounded waits only).
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// Checks an idempotent producer's batches against its sequences: the fresh ones to append,
/// and where the first copy of a duplicate went (the answer when nothing is fresh). A gap or a
/// fenced epoch refuses the whole request.
fn screen(
    producers: &ProducerStates,
    batches: Vec<RecordBatch>,
) -> RouterResult<(Vec<RecordBatch>, Option<Appended>)> {
    let mut fresh = Vec::with_capacity(batches.len());
    let mut duplicate = None;
    for b in batches {
        match producers.check(b.header()) {
            SequenceCheck::Append => fresh.push(b),
            SequenceCheck::Duplicate {
                base_offset,
                last_offset,
            } => {
                duplicate = Some(Appended {
                    base_offset,
                    last_offset,
                });
            }
            SequenceCheck::OutOfOrder { expected, got } => {
                return Err(RouterError::OutOfOrderSequence {
                    producer_id: b.header().producer_id,
                    expected,
                    got,
                });
            }
            SequenceCheck::StaleEpoch { current, got } => {
                return Err(RouterError::StaleProducerEpoch {
                    producer_id: b.header().producer_id,
                    current,
                    got,
                });
            }
        }
    }
    Ok((fresh, duplicate))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use switchboard_memory::MemoryStorage;
    use switchboard_model::{BatchBuilder, Record};

    fn idempotent_batch(producer_id: i64, base_sequence: i32, n: usize) -> RecordBatch {
        let mut b = BatchBuilder::new();
        for i in 0..n {
            b.push(Record::new(
                None,
                Some(Bytes::from(format!("v{i}"))),
                now_ms(),
            ));
        }
        b.idempotent(producer_id, 0, base_sequence);
        b.build().expect("a batch")
    }

    #[tokio::test]
    async fn a_retry_after_restart_gets_its_original_offsets() {
        let storage: SharedStorage = Arc::new(MemoryStorage::new());
        let dir = tempfile::tempdir().expect("temp dir");
        let meta = MetaStore::open(dir.path()).await.expect("meta");
        let router = Router::new(meta.clone(), storage.clone());
        let name = StreamName::new("idem").expect("name");
        router
            .create_stream(name.clone(), 1, BTreeMap::new())
            .await
            .expect("create");
        let tp = TopicPartition::new(name, 0);
        router
            .append(&tp, vec![idempotent_batch(7, 0, 3)], Durability::Buffered)
            .await
            .expect("append");
        let second = router
            .append(&tp, vec![idempotent_batch(7, 3, 2)], Durability::Buffered)
            .await
            .expect("append");

        // A new router over the same storage: the broker restarted.
        let restarted = Router::new(meta, storage);
        let retry = restarted
            .append(&tp, vec![idempotent_batch(7, 3, 2)], Durability::Buffered)
            .await
            .expect("retry answered");
        assert_eq!(retry, second);
        assert_eq!(
            restarted.bounds(&tp).await.expect("bounds").high_watermark,
            5
        );
        // And the producer continues where it left off.
        let next = restarted
            .append(&tp, vec![idempotent_batch(7, 5, 1)], Durability::Buffered)
            .await
            .expect("next batch");
        assert_eq!(next.base_offset, 5);
    }
}
