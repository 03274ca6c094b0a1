//! Fetch with long polling: when less than `min_bytes` is ready, the request parks on a
//! [`Waiter`] registered on every requested partition and is woken by the next append, or
//! answers at `max_wait_ms`. Fetch sessions (KIP-227) are declined with session id 0, so
//! clients send full requests.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse};
use switchboard_model::TopicPartition;
use switchboard_router::{MAX_WAIT, RouterError, Waiter};
use switchboard_storage::StorageError;

use super::{Request, stream_name};
use crate::KafkaContext;
use crate::errors::router_error_code;

struct Wanted {
    tp: Option<TopicPartition>,
    index: i32,
    offset: i64,
    max_bytes: usize,
}

pub async fn handle(ctx: &KafkaContext, _req: &Request<'_>, body: FetchRequest) -> FetchResponse {
    let wait = Duration::from_millis(body.max_wait_ms.max(0) as u64).min(MAX_WAIT);
    let deadline = Instant::now() + wait;
    let min_bytes = body.min_bytes.max(0) as usize;
    let max_bytes = if body.max_bytes <= 0 {
        usize::MAX
    } else {
        body.max_bytes as usize
    };
    let topics: Vec<_> = body
        .topics
        .into_iter()
        .map(|t| {
            let stream = stream_name(&t.topic);
            let parts: Vec<Wanted> = t
                .partitions
                .iter()
                .map(|p| Wanted {
                    tp: stream
                        .clone()
                        .filter(|_| p.partition >= 0)
                        .map(|s| TopicPartition::new(s, p.partition as u32)),
                    index: p.partition,
                    offset: p.fetch_offset,
                    max_bytes: p.partition_max_bytes.max(0) as usize,
                })
                .collect();
            (t.topic, parts)
        })
        .collect();
    // Bounded: each round either returns or waits until woken or the deadline. Watches are
    // registered only when a read came up short, then the read is repeated so an append that
    // landed in between is not missed; a fetch that finds data pays for no registration.
    for _ in 0..10_000 {
        let (responses, total, any_error) = read_all(ctx, &topics, max_bytes).await;
        if total >= min_bytes || any_error || Instant::now() >= deadline {
            return FetchResponse::default().with_responses(responses);
        }
        let waiter = Waiter::new();
        for (_, parts) in &topics {
            for w in parts.iter().filter_map(|w| w.tp.as_ref()) {
                // Registration errors surface in the read below.
                let _ = ctx.router.watch(w, &waiter).await;
            }
        }
        let (responses, total, any_error) = read_all(ctx, &topics, max_bytes).await;
        let now = Instant::now();
        if total >= min_bytes || any_error || now >= deadline {
            return FetchResponse::default().with_responses(responses);
        }
        waiter.wait(deadline - now).await;
    }
    FetchResponse::default().with_error_code(ResponseError::RequestTimedOut.code())
}

async fn read_all(
    ctx: &KafkaContext,
    topics: &[(kafka_protocol::messages::TopicName, Vec<Wanted>)],
    max_bytes: usize,
) -> (Vec<FetchableTopicResponse>, usize, bool) {
    let mut total = 0usize;
    let mut any_error = false;
    let mut out = Vec::with_capacity(topics.len());
    for (name, parts) in topics {
        let mut partitions = Vec::with_capacity(parts.len());
        for w in parts {
            // KIP-74: the response limit may be exceeded by the first batch only.
            let budget = w.max_bytes.min(max_bytes.saturating_sub(total));
            let budget = if total == 0 { budget.max(1) } else { budget };
            let data = read_one(ctx, w, budget).await;
            if data.error_code != 0 {
                any_error = true;
            }
            total += data.records.as_ref().map_or(0, |r| r.len());
            partitions.push(data);
        }
        out.push(
            FetchableTopicResponse::default()
                .with_topic(name.clone())
                .with_partitions(partitions),
        );
    }
    (out, total, any_error)
}

async fn read_one(ctx: &KafkaContext, w: &Wanted, budget: usize) -> PartitionData {
    let base = PartitionData::default()
        .with_partition_index(w.index)
        .with_preferred_read_replica(BrokerId(-1));
    let Some(tp) = &w.tp else {
        return base.with_error_code(ResponseError::UnknownTopicOrPartition.code());
    };
    if w.offset < 0 {
        return base.with_error_code(ResponseError::OffsetOutOfRange.code());
    }
    if budget == 0 {
        return match ctx.router.bounds(tp).await {
            Ok(b) => with_bounds(base, b.log_start, b.high_watermark)
                .with_records(Some(Default::default())),
            Err(e) => base.with_error_code(router_error_code(&e)),
        };
    }
    match ctx.router.read(tp, w.offset as u64, budget).await {
        Ok(chunk) => {
            let mut records = BytesMut::with_capacity(chunk.byte_len());
            for b in &chunk.batches {
                records.extend_from_slice(b);
            }
            with_bounds(base, chunk.bounds.log_start, chunk.bounds.high_watermark)
                .with_records(Some(records.freeze()))
        }
        Err(RouterError::Storage(StorageError::OffsetOutOfRange {
            log_start,
            high_watermark,
            ..
        })) => with_bounds(base, log_start, high_watermark)
            .with_error_code(ResponseError::OffsetOutOfRange.code()),
        Err(e) => {
            tracing::debug!(partition = %tp, error = %e, "fetch failed");
            base.with_error_code(router_error_code(&e))
                .with_high_watermark(-1)
                .with_last_stable_offset(-1)
                .with_log_start_offset(-1)
        }
    }
}

fn with_bounds(p: PartitionData, log_start: u64, high_watermark: u64) -> PartitionData {
    p.with_high_watermark(high_watermark as i64)
        .with_last_stable_offset(high_watermark as i64)
        .with_log_start_offset(log_start as i64)
}
