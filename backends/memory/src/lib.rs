//! `memory://`: batches held in process memory. Nothing survives the process; instances built
//! from the same [`MemoryStorage::shared`] handle see each other's data, which is how tests
//! model a reopen.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use bytes::Bytes;
use switchboard_model::{Offset, RecordBatch, TopicPartition};
use switchboard_storage::{
    Appended, Bounds, Durability, ReadChunk, Retention, Storage, StorageError, StorageResult,
};

struct Stored {
    base: Offset,
    last: Offset,
    max_ts: i64,
    bytes: Bytes,
}

#[derive(Default)]
struct Partition {
    batches: VecDeque<Stored>,
    log_start: Offset,
    next: Offset,
}

impl Partition {
    fn bounds(&self) -> Bounds {
        Bounds {
            log_start: self.log_start,
            high_watermark: self.next,
        }
    }

    fn byte_len(&self) -> u64 {
        self.batches.iter().map(|b| b.bytes.len() as u64).sum()
    }

    fn drop_front_while(&mut self, mut drop: impl FnMut(&Stored, u64) -> bool) {
        let mut remaining = self.byte_len();
        while let Some(front) = self.batches.front() {
            if !drop(front, remaining) {
                break;
            }
            remaining -= front.bytes.len() as u64;
            self.log_start = front.last + 1;
            self.batches.pop_front();
        }
    }
}

type Partitions = HashMap<TopicPartition, Partition>;

/// The in-memory backend.
#[derive(Clone, Default)]
pub struct MemoryStorage {
    state: Arc<Mutex<Partitions>>,
}

impl MemoryStorage {
    pub fn new() -> Self {
        Self::default()
    }

    /// Another instance over the same data.
    pub fn shared(&self) -> Self {
        self.clone()
    }

    fn lock(&self) -> MutexGuard<'_, Partitions> {
        // A panic while holding this lock would be a bug in this file; the data stays
        // consistent because every mutation completes before unlocking.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn unknown(tp: &TopicPartition) -> StorageError {
    StorageError::UnknownPartition(tp.clone())
}

#[async_trait]
impl Storage for MemoryStorage {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn open_partition(&self, tp: &TopicPartition) -> StorageResult<Bounds> {
        Ok(self.lock().entry(tp.clone()).or_default().bounds())
    }

    async fn append(
        &self,
        tp: &TopicPartition,
        batches: Vec<RecordBatch>,
        _durability: Durability,
    ) -> StorageResult<Appended> {
        let mut all = self.lock();
        let p = all.get_mut(tp).ok_or_else(|| unknown(tp))?;
        let base_offset = p.next;
        for batch in batches {
            let placed = batch.with_base_offset(p.next);
            let last = placed.last_offset() as Offset;
            p.batches.push_back(Stored {
                base: p.next,
                last,
                max_ts: placed.header().max_timestamp,
                bytes: placed.into_bytes(),
            });
            p.next = last + 1;
        }
        Ok(Appended {
            base_offset,
            last_offset: p.next.saturating_sub(1),
        })
    }

    async fn read(
        &self,
        tp: &TopicPartition,
        from: Offset,
        max_bytes: usize,
    ) -> StorageResult<ReadChunk> {
        let all = self.lock();
        let p = all.get(tp).ok_or_else(|| unknown(tp))?;
        if from < p.log_start || from > p.next {
            return Err(StorageError::OffsetOutOfRange {
                tp: tp.clone(),
                offset: from,
                log_start: p.log_start,
                high_watermark: p.next,
            });
        }
        let first = p.batches.partition_point(|b| b.last < from);
        let mut out = ReadChunk {
            batches: Vec::new(),
            bounds: p.bounds(),
        };
        let mut used = 0;
        for b in p.batches.range(first..) {
            if !out.batches.is_empty() && used + b.bytes.len() > max_bytes {
                break;
            }
            used += b.bytes.len();
            out.batches.push(b.bytes.clone());
        }
        Ok(out)
    }

    async fn bounds(&self, tp: &TopicPartition) -> StorageResult<Bounds> {
        self.lock()
            .get(tp)
            .map(Partition::bounds)
            .ok_or_else(|| unknown(tp))
    }

    async fn offset_for_timestamp(
        &self,
        tp: &TopicPartition,
        timestamp_ms: i64,
    ) -> StorageResult<Option<(Offset, i64)>> {
        let all = self.lock();
        let p = all.get(tp).ok_or_else(|| unknown(tp))?;
        for b in &p.batches {
            if b.max_ts < timestamp_ms {
                continue;
            }
            let batch = RecordBatch::parse(b.bytes.clone())?;
            // Uncompressed batches can be searched record by record; compressed ones answer
            // with the batch start, as Kafka does for batches it does not expand.
            let hit = batch.records().ok().and_then(|rs| {
                rs.into_iter()
                    .find(|r| r.timestamp_ms >= timestamp_ms)
                    .map(|r| (r.offset, r.timestamp_ms))
            });
            return Ok(Some(hit.unwrap_or((b.base, b.max_ts))));
        }
        Ok(None)
    }

    async fn delete_before(&self, tp: &TopicPartition, offset: Offset) -> StorageResult<Offset> {
        let mut all = self.lock();
        let p = all.get_mut(tp).ok_or_else(|| unknown(tp))?;
        let target = offset.min(p.next);
        p.drop_front_while(|b, _| b.last < target);
        p.log_start = p.log_start.max(target);
        Ok(p.log_start)
    }

    async fn apply_retention(
        &self,
        tp: &TopicPartition,
        retention: Retention,
        now_ms: i64,
    ) -> StorageResult<Offset> {
        let mut all = self.lock();
        let p = all.get_mut(tp).ok_or_else(|| unknown(tp))?;
        if let Some(max) = retention.max_bytes {
            p.drop_front_while(|b, remaining| remaining - b.bytes.len() as u64 >= max);
        }
        if let Some(age) = retention.max_age_ms {
            p.drop_front_while(|b, _| b.max_ts < now_ms - age);
        }
        Ok(p.log_start)
    }

    async fn flush(&self) -> StorageResult<()> {
        Ok(())
    }

    async fn remove_partition(&self, tp: &TopicPartition) -> StorageResult<()> {
        self.lock().remove(tp);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_storage::SharedStorage;
    use switchboard_storage::conformance::{Harness, run_all};

    struct Mem(MemoryStorage);

    #[async_trait]
    impl Harness for Mem {
        async fn open(&self) -> SharedStorage {
            Arc::new(self.0.shared())
        }
        async fn tear_tail(&self, _tp: &TopicPartition) -> bool {
            false
        }
    }

    #[tokio::test]
    async fn memory_backend_passes_the_conformance_suite() {
        run_all(&Mem(MemoryStorage::new())).await;
    }
}
