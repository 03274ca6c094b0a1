//! DeleteRecords and OffsetForLeaderEpoch.
//!
//! Leadership never moves between epochs here (the routing table assigns it and storage is
//! shared), so every partition is at leader epoch 0 and its end offset is the high watermark.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{
    DeleteRecordsRequest, DeleteRecordsResponse, OffsetForLeaderEpochRequest,
    OffsetForLeaderEpochResponse,
};
use switchboard_model::TopicPartition;

use super::{Request, stream_name};
use crate::KafkaContext;
use crate::errors::router_error_code;

pub async fn delete_records(
    ctx: &KafkaContext,
    _req: &Request<'_>,
    body: DeleteRecordsRequest,
) -> DeleteRecordsResponse {
    let mut topics = Vec::new();
    for t in body.topics {
        let stream = stream_name(&t.name);
        let mut partitions = Vec::new();
        for p in t.partitions {
            let base = DeleteRecordsPartitionResult::default()
                .with_partition_index(p.partition_index)
                .with_low_watermark(-1);
            let res = match (&stream, p.partition_index >= 0) {
                (Some(s), true) => {
                    let tp = TopicPartition::new(s.clone(), p.partition_index as u32);
                    delete_one(ctx, &tp, p.offset, base).await
                }
                _ => base.with_error_code(ResponseError::UnknownTopicOrPartition.code()),
            };
            partitions.push(res);
        }
        topics.push(
            DeleteRecordsTopicResult::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    DeleteRecordsResponse::default().with_topics(topics)
}

async fn delete_one(
    ctx: &KafkaContext,
    tp: &TopicPartition,
    offset: i64,
    base: DeleteRecordsPartitionResult,
) -> DeleteRecordsPartitionResult {
    let bounds = match ctx.router.bounds(tp).await {
        Ok(b) => b,
        Err(e) => return base.with_error_code(router_error_code(&e)),
    };
    // -1 means "up to the high watermark".
    let target = if offset == -1 {
        bounds.high_watermark as i64
    } else {
        offset
    };
    if target < 0 || target as u64 > bounds.high_watermark {
        return base.with_error_code(ResponseError::OffsetOutOfRange.code());
    }
    match ctx.router.delete_before(tp, target as u64).await {
        Ok(start) => base.with_low_watermark(start as i64),
        Err(e) => base.with_error_code(router_error_code(&e)),
    }
}

pub async fn offset_for_leader_epoch(
    ctx: &KafkaContext,
    _req: &Request<'_>,
    body: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let mut topics = Vec::new();
    for t in body.topics {
        let stream = stream_name(&t.topic);
        let mut partitions = Vec::new();
        for p in t.partitions {
            let base = EpochEndOffset::default()
                .with_partition(p.partition)
                .with_leader_epoch(-1)
                .with_end_offset(-1);
            let res = match (&stream, p.partition >= 0) {
                (Some(_), true) if p.leader_epoch > 0 => {
                    base.with_error_code(ResponseError::UnknownLeaderEpoch.code())
                }
                (Some(s), true) => {
                    let tp = TopicPartition::new(s.clone(), p.partition as u32);
                    match ctx.router.bounds(&tp).await {
                        Ok(b) => base
                            .with_leader_epoch(0)
                            .with_end_offset(b.high_watermark as i64),
                        Err(e) => base.with_error_code(router_error_code(&e)),
                    }
                }
                _ => base.with_error_code(ResponseError::UnknownTopicOrPartition.code()),
            };
            partitions.push(res);
        }
        topics.push(
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic)
                .with_partitions(partitions),
        );
    }
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}
