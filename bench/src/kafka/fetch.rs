//! Reading one partition with fetch requests (rskafka's `PartitionClient`), as a consumer
//! without a group does: from an offset, each fetch asking for at least one byte and letting
//! the broker wait at most `max_wait_ms` for it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};
use rskafka::client::Client;
use rskafka::client::partition::{OffsetAt, PartitionClient, UnknownTopicHandling};
use rskafka::record::RecordAndOffset;
use tokio_util::sync::CancellationToken;

use crate::probe::{self, Receipts};

/// Totals over all readers, for the coordinator and the progress line.
#[derive(Default)]
pub struct ReadCounters {
    /// Records of this run received.
    pub received: AtomicU64,
    /// [`probe::now_ns`] of the latest one.
    pub last_ns: AtomicU64,
    /// Fetch responses that carried at least one record: records per fetch tell how much a
    /// broker answers with at once.
    pub fetches: AtomicU64,
}

impl ReadCounters {
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

/// What a reader reads and keeps.
pub struct Reader {
    pub partition: i32,
    /// First offset to read.
    pub from: i64,
    /// Stop once this offset is reached (`None`: read until `stop`).
    pub until: Option<i64>,
    pub max_bytes: i32,
    /// Longest time the broker may hold a fetch. With min bytes 1, a broker answers as soon as
    /// it has a record; tansu 0.6 holds every fetch this long (bench/README.md).
    pub max_wait_ms: i32,
    /// Only records whose key starts with this are counted (`None`: every record).
    pub key_prefix: Option<Vec<u8>>,
    /// Number of publishers the probe headers may name.
    pub publishers: u32,
}

pub async fn partition_client(
    client: &Client,
    topic: &str,
    partition: i32,
) -> Result<PartitionClient> {
    client
        .partition_client(topic, partition, UnknownTopicHandling::Retry)
        .await
        .with_context(|| format!("opening {topic}/{partition}"))
}

/// The offset the next record of the partition will get.
pub async fn end_offset(pc: &PartitionClient) -> Result<i64> {
    pc.get_offset(OffsetAt::Latest)
        .await
        .with_context(|| format!("ListOffsets of {}/{}", pc.topic(), pc.partition()))
}

/// Fetches until `until` or `stop`, recording each of the run's records in the receipts.
pub async fn read(
    pc: PartitionClient,
    reader: Reader,
    stop: CancellationToken,
    counters: Arc<ReadCounters>,
) -> Result<Receipts> {
    let mut receipts = Receipts::new(reader.publishers);
    let mut offset = reader.from;
    while reader.until.is_none_or(|end| offset < end) {
        let fetched = tokio::select! {
            _ = stop.cancelled() => break,
            fetched = pc.fetch_records(offset, 1..reader.max_bytes, reader.max_wait_ms) => fetched,
        };
        let (records, _high_watermark) = fetched
            .with_context(|| format!("fetching {}/{} at {offset}", pc.topic(), reader.partition))?;
        let now = probe::now_ns();
        if !records.is_empty() {
            counters.fetches.fetch_add(1, Ordering::Relaxed);
        }
        let mut ours = 0;
        for r in &records {
            offset = offset.max(r.offset + 1);
            if matches_prefix(r, reader.key_prefix.as_deref())
                && let Some(value) = &r.record.value
            {
                receipts.record(value, now);
                ours += 1;
            }
        }
        if ours > 0 {
            counters.received.fetch_add(ours, Ordering::Relaxed);
            counters.last_ns.fetch_max(now, Ordering::Relaxed);
        }
    }
    Ok(receipts)
}

fn matches_prefix(r: &RecordAndOffset, prefix: Option<&[u8]>) -> bool {
    prefix.is_none_or(|p| r.record.key.as_deref().is_some_and(|k| k.starts_with(p)))
}
