//! OffsetCommit and OffsetFetch. Commits go through the replicated routing table, so they
//! survive a restart and are visible on every broker.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopics;
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse, TopicName,
};
use switchboard_router::{CommittedOffset, OffsetCommit, now_ms};

use super::{Request, str_bytes, stream_name, topic_name};
use crate::KafkaContext;
use crate::errors::router_error_code;

pub async fn offset_commit(
    ctx: &KafkaContext,
    _req: &Request<'_>,
    body: OffsetCommitRequest,
) -> OffsetCommitResponse {
    let group = body.group_id.0.to_string();
    let check = ctx.coordinator.validate_commit(
        &group,
        body.generation_id_or_member_epoch,
        body.member_id.as_str(),
    );
    let mut commits = Vec::new();
    let mut topics = Vec::with_capacity(body.topics.len());
    for t in &body.topics {
        let stream = stream_name(&t.name).filter(|s| ctx.router.stream(s).is_some());
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            let code = match &stream {
                _ if check != 0 => check,
                Some(s) if p.partition_index >= 0 => {
                    commits.push(OffsetCommit {
                        stream: s.clone(),
                        partition: p.partition_index as u32,
                        committed: CommittedOffset {
                            offset: p.committed_offset,
                            leader_epoch: p.committed_leader_epoch,
                            metadata: p
                                .committed_metadata
                                .as_ref()
                                .map(|m| m.to_string())
                                .unwrap_or_default(),
                            commit_ms: now_ms(),
                        },
                    });
                    0
                }
                _ => ResponseError::UnknownTopicOrPartition.code(),
            };
            partitions.push(
                OffsetCommitResponsePartition::default()
                    .with_partition_index(p.partition_index)
                    .with_error_code(code),
            );
        }
        topics.push(
            OffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(partitions),
        );
    }
    if !commits.is_empty()
        && let Err(e) = ctx.router.commit_offsets(&group, commits).await
    {
        {
            tracing::warn!(group = %group, error = %e, "offset commit failed");
            let code = router_error_code(&e);
            for t in &mut topics {
                for p in &mut t.partitions {
                    if p.error_code == 0 {
                        p.error_code = code;
                    }
                }
            }
        }
    }
    OffsetCommitResponse::default().with_topics(topics)
}

/// (partition, offset, leader epoch, metadata) of one committed offset; offset -1 if none.
type Row = (i32, i64, i32, String);

/// Rows for the partitions asked, or for every committed one.
fn lookup(
    ctx: &KafkaContext,
    group: &str,
    topics: Option<Vec<(TopicName, Vec<i32>)>>,
) -> Vec<(TopicName, Vec<Row>)> {
    let entry = |t: &TopicName, p: i32| {
        let committed = stream_name(t)
            .filter(|_| p >= 0)
            .and_then(|s| ctx.router.committed(group, &s, p as u32));
        match committed {
            Some(c) => (p, c.offset, c.leader_epoch, c.metadata),
            None => (p, -1, -1, String::new()),
        }
    };
    match topics {
        Some(topics) => topics
            .into_iter()
            .map(|(t, parts)| {
                let rows = parts.into_iter().map(|p| entry(&t, p)).collect();
                (t, rows)
            })
            .collect(),
        None => {
            let all: Vec<_> = ctx.router.meta().read(|table| {
                table
                    .group_offsets(group)
                    .map(|((s, p), c)| (s.clone(), *p, c.clone()))
                    .collect()
            });
            let mut out: Vec<(TopicName, Vec<Row>)> = Vec::new();
            for (s, p, c) in all {
                let name = topic_name(&s);
                let row = (p as i32, c.offset, c.leader_epoch, c.metadata);
                match out.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, rows)) => rows.push(row),
                    None => out.push((name, vec![row])),
                }
            }
            out
        }
    }
}

pub async fn offset_fetch(
    ctx: &KafkaContext,
    req: &Request<'_>,
    body: OffsetFetchRequest,
) -> OffsetFetchResponse {
    if req.version >= 8 {
        let groups = body
            .groups
            .into_iter()
            .map(|g| {
                let wanted = g.topics.map(|ts: Vec<OffsetFetchRequestTopics>| {
                    ts.into_iter()
                        .map(|t| (t.name, t.partition_indexes))
                        .collect()
                });
                let topics = lookup(ctx, g.group_id.0.as_str(), wanted)
                    .into_iter()
                    .map(|(name, rows)| {
                        let partitions = rows
                            .into_iter()
                            .map(|(p, off, epoch, meta)| {
                                OffsetFetchResponsePartitions::default()
                                    .with_partition_index(p)
                                    .with_committed_offset(off)
                                    .with_committed_leader_epoch(epoch)
                                    .with_metadata(Some(str_bytes(meta)))
                            })
                            .collect();
                        OffsetFetchResponseTopics::default()
                            .with_name(name)
                            .with_partitions(partitions)
                    })
                    .collect();
                OffsetFetchResponseGroup::default()
                    .with_group_id(g.group_id)
                    .with_topics(topics)
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let wanted = body.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name, t.partition_indexes))
            .collect()
    });
    let topics = lookup(ctx, body.group_id.0.as_str(), wanted)
        .into_iter()
        .map(|(name, rows)| {
            let partitions = rows
                .into_iter()
                .map(|(p, off, epoch, meta)| {
                    OffsetFetchResponsePartition::default()
                        .with_partition_index(p)
                        .with_committed_offset(off)
                        .with_committed_leader_epoch(epoch)
                        .with_metadata(Some(str_bytes(meta)))
                })
                .collect();
            OffsetFetchResponseTopic::default()
                .with_name(name)
                .with_partitions(partitions)
        })
        .collect();
    OffsetFetchResponse::default().with_topics(topics)
}
