//! ListOffsets: earliest (-2), latest (-1), max timestamp (-3) or the first offset at or after
//! a timestamp.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use switchboard_model::TopicPartition;

use super::{Request, stream_name};
use crate::KafkaContext;
use crate::errors::router_error_code;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;

pub async fn handle(
    ctx: &KafkaContext,
    req: &Request<'_>,
    body: ListOffsetsRequest,
) -> ListOffsetsResponse {
    let mut topics = Vec::with_capacity(body.topics.len());
    for t in body.topics {
        let stream = stream_name(&t.name);
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let base = ListOffsetsPartitionResponse::default()
                .with_partition_index(p.partition_index)
                .with_timestamp(-1)
                .with_offset(-1)
                // Leader epochs appeared in v4; older versions must leave the field unset.
                .with_leader_epoch(if req.version >= 4 { 0 } else { -1 });
            let resp = match (&stream, p.partition_index >= 0) {
                (Some(s), true) => {
                    let tp = TopicPartition::new(s.clone(), p.partition_index as u32);
                    lookup(ctx, &tp, p.timestamp, base).await
                }
                _ => base.with_error_code(ResponseError::UnknownTopicOrPartition.code()),
            };
            partitions.push(resp);
        }
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    ListOffsetsResponse::default().with_topics(topics)
}

async fn lookup(
    ctx: &KafkaContext,
    tp: &TopicPartition,
    timestamp: i64,
    base: ListOffsetsPartitionResponse,
) -> ListOffsetsPartitionResponse {
    let bounds = match ctx.router.bounds(tp).await {
        Ok(b) => b,
        Err(e) => return base.with_error_code(router_error_code(&e)),
    };
    match timestamp {
        LATEST => base.with_offset(bounds.high_watermark as i64),
        EARLIEST => base.with_offset(bounds.log_start as i64),
        MAX_TIMESTAMP => base.with_offset(bounds.high_watermark.saturating_sub(1) as i64),
        ts if ts >= 0 => match ctx.router.offset_for_timestamp(tp, ts).await {
            Ok(Some((offset, found))) => base.with_offset(offset as i64).with_timestamp(found),
            Ok(None) => base,
            Err(e) => base.with_error_code(router_error_code(&e)),
        },
        _ => base.with_error_code(ResponseError::InvalidRequest.code()),
    }
}
