//! Produce: batches are validated (magic 2, CRC) and stored exactly as sent, so compression
//! passes through untouched. acks=all waits for durability (the storage's fsync policy);
//! acks=0 gets no answer at all.

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use switchboard_model::{BatchError, RecordBatch, StreamName, TopicPartition, split_batches};
use switchboard_router::now_ms;
use switchboard_storage::Durability;

use super::{Request, ensure_topic, stream_name};
use crate::KafkaContext;
use crate::errors::router_error_code;

/// A produce request whose batches are appended: its answer, and the partitions an fsync must
/// cover before the answer goes out (acks=all).
pub struct Appended {
    pub acks: i16,
    pub response: ProduceResponse,
    pub to_sync: Vec<TopicPartition>,
}

/// Appends the request's batches without waiting for an fsync; [`sync`] finishes an acks=all
/// answer. The connection reads the next produce request in between, so one fsync can cover
/// several requests (`conn.rs`).
pub async fn append(ctx: &KafkaContext, _req: &Request<'_>, body: ProduceRequest) -> Appended {
    let acks = body.acks;
    let durability = match acks {
        -1 => Durability::Sync,
        0 | 1 => Durability::Buffered,
        _ => {
            return Appended {
                acks,
                response: invalid_acks(body),
                to_sync: Vec::new(),
            };
        }
    };
    let mut responses = Vec::with_capacity(body.topic_data.len());
    let mut to_sync = Vec::new();
    for topic in body.topic_data {
        let stream = stream_name(&topic.name);
        let exists = match &stream {
            Some(s) => ensure_topic(ctx, s, true).await,
            None => false,
        };
        let mut partitions = Vec::with_capacity(topic.partition_data.len());
        for p in topic.partition_data {
            let resp = match (&stream, exists) {
                (Some(s), true) => {
                    let tp = TopicPartition::new(s.clone(), p.index.max(0) as u32);
                    let r = append_one(ctx, s, p.index, &tp, p.records).await;
                    if r.error_code == 0 && durability == Durability::Sync && !to_sync.contains(&tp)
                    {
                        to_sync.push(tp);
                    }
                    r.with_index(p.index)
                }
                (None, _) => error(p.index, ResponseError::InvalidTopicException),
                (Some(_), false) => error(p.index, ResponseError::UnknownTopicOrPartition),
            };
            partitions.push(resp);
        }
        responses.push(
            TopicProduceResponse::default()
                .with_name(topic.name)
                .with_partition_responses(partitions),
        );
    }
    Appended {
        acks,
        response: ProduceResponse::default().with_responses(responses),
        to_sync,
    }
}

/// Makes an acks=all request's appends durable and returns its answer; a partition whose fsync
/// failed answers KAFKA_STORAGE_ERROR. Appends went in buffered and concurrent requests sync
/// afterwards, so they share fsyncs (group commit) instead of paying one each.
pub async fn sync(ctx: &KafkaContext, appended: Appended) -> ProduceResponse {
    let mut response = appended.response;
    for tp in appended.to_sync {
        if let Err(e) = ctx.router.storage().sync(&tp).await {
            tracing::warn!(partition = %tp, error = %e, "sync for acks=all failed");
            fail_partition(
                &mut response.responses,
                &tp,
                ResponseError::KafkaStorageError.code(),
            );
        }
    }
    response
}

async fn append_one(
    ctx: &KafkaContext,
    stream: &StreamName,
    index: i32,
    tp: &TopicPartition,
    records: Option<Bytes>,
) -> PartitionProduceResponse {
    if index < 0 {
        return error(index, ResponseError::UnknownTopicOrPartition);
    }
    let Some(records) = records else {
        return error(index, ResponseError::InvalidRecord);
    };
    let batches = match split_batches(records) {
        Ok(b) if !b.is_empty() => b,
        Ok(_) => return error(index, ResponseError::InvalidRecord),
        Err(BatchError::UnsupportedMagic(_)) => {
            return error(index, ResponseError::UnsupportedForMessageFormat);
        }
        Err(BatchError::CrcMismatch { .. }) => return error(index, ResponseError::CorruptMessage),
        Err(_) => return error(index, ResponseError::InvalidRecord),
    };
    if batches
        .iter()
        .any(|b| b.len() > ctx.settings.max_message_bytes)
    {
        return error(index, ResponseError::MessageTooLarge);
    }
    let append_time = log_append_time(ctx, stream);
    let batches: Vec<RecordBatch> = match append_time {
        Some(now) => batches
            .iter()
            .map(|b| b.with_log_append_time(now))
            .collect(),
        None => batches,
    };
    let records: i64 = batches
        .iter()
        .map(|b| i64::from(b.header().record_count))
        .sum();
    match ctx.router.append(tp, batches, Durability::Buffered).await {
        Ok(at) => {
            ctx.metrics.produced_records.inc_by(records.max(0) as u64);
            let log_start = ctx
                .router
                .bounds(tp)
                .await
                .map_or(-1, |b| b.log_start as i64);
            PartitionProduceResponse::default()
                .with_base_offset(at.base_offset as i64)
                .with_log_append_time_ms(append_time.unwrap_or(-1))
                .with_log_start_offset(log_start)
        }
        Err(e) => {
            tracing::debug!(partition = %tp, error = %e, "produce refused");
            PartitionProduceResponse::default()
                .with_error_code(router_error_code(&e))
                .with_base_offset(-1)
                .with_log_append_time_ms(-1)
                .with_log_start_offset(-1)
        }
    }
}

/// `Some(now)` when the topic stamps records with the broker's time.
fn log_append_time(ctx: &KafkaContext, stream: &StreamName) -> Option<i64> {
    let meta = ctx.router.stream(stream)?;
    (meta
        .config
        .get("message.timestamp.type")
        .map(String::as_str)
        == Some("LogAppendTime"))
    .then(now_ms)
}

fn error(index: i32, e: ResponseError) -> PartitionProduceResponse {
    PartitionProduceResponse::default()
        .with_index(index)
        .with_error_code(e.code())
        .with_base_offset(-1)
        .with_log_append_time_ms(-1)
        .with_log_start_offset(-1)
}

fn fail_partition(responses: &mut [TopicProduceResponse], tp: &TopicPartition, code: i16) {
    for t in responses
        .iter_mut()
        .filter(|t| t.name.0.as_str() == tp.stream.as_str())
    {
        for p in t
            .partition_responses
            .iter_mut()
            .filter(|p| p.index == tp.partition as i32)
        {
            p.error_code = code;
        }
    }
}

fn invalid_acks(body: ProduceRequest) -> ProduceResponse {
    let responses = body
        .topic_data
        .into_iter()
        .map(|t| {
            let parts = t
                .partition_data
                .iter()
                .map(|p| error(p.index, ResponseError::InvalidRequiredAcks))
                .collect();
            TopicProduceResponse::default()
                .with_name(t.name)
                .with_partition_responses(parts)
        })
        .collect();
    ProduceResponse::default().with_responses(responses)
}
