//! CreateTopics, DeleteTopics, CreatePartitions: routing-table changes through Raft.

use std::collections::BTreeMap;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse, TopicName,
};
use switchboard_router::table::MAX_PARTITIONS;
use uuid::Uuid;

use super::configs::validate_topic_config;
use super::{Request, str_bytes, stream_name, topic_name};
use crate::KafkaContext;
use crate::errors::router_error_code;

pub async fn create_topics(
    ctx: &KafkaContext,
    _req: &Request<'_>,
    body: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let mut results = Vec::with_capacity(body.topics.len());
    for t in body.topics {
        let base = CreatableTopicResult::default().with_name(t.name.clone());
        let Some(name) = stream_name(&t.name) else {
            results.push(fail(
                base,
                ResponseError::InvalidTopicException,
                "invalid topic name",
            ));
            continue;
        };
        let partitions = if t.num_partitions == -1 {
            ctx.settings.default_partitions as i32
        } else {
            t.num_partitions
        };
        if partitions <= 0 || partitions as u32 > MAX_PARTITIONS {
            results.push(fail(
                base,
                ResponseError::InvalidPartitions,
                "partition count out of range",
            ));
            continue;
        }
        if t.replication_factor == 0 || t.replication_factor < -1 {
            results.push(fail(
                base,
                ResponseError::InvalidReplicationFactor,
                "replication factor must be -1 or positive",
            ));
            continue;
        }
        let mut config = BTreeMap::new();
        let mut bad = None;
        for c in &t.configs {
            let Some(v) = &c.value else { continue };
            if let Err(msg) = validate_topic_config(c.name.as_str(), v.as_str()) {
                bad = Some(msg);
                break;
            }
            config.insert(c.name.to_string(), v.to_string());
        }
        if let Some(msg) = bad {
            results.push(fail(base, ResponseError::InvalidConfig, &msg));
            continue;
        }
        if body.validate_only {
            let exists = ctx.router.stream(&name).is_some();
            results.push(if exists {
                fail(
                    base,
                    ResponseError::TopicAlreadyExists,
                    "topic already exists",
                )
            } else {
                base.with_num_partitions(partitions)
                    .with_replication_factor(1)
            });
            continue;
        }
        let res = match ctx
            .router
            .create_stream(name, partitions as u32, config)
            .await
        {
            Ok(meta) => base
                .with_topic_id(Uuid::from_u128(meta.id))
                .with_num_partitions(meta.partitions as i32)
                .with_replication_factor(1),
            Err(e) => base
                .with_error_code(router_error_code(&e))
                .with_error_message(Some(str_bytes(e.to_string())))
                .with_num_partitions(-1)
                .with_replication_factor(-1),
        };
        results.push(res);
    }
    CreateTopicsResponse::default().with_topics(results)
}

fn fail(base: CreatableTopicResult, e: ResponseError, msg: &str) -> CreatableTopicResult {
    base.with_error_code(e.code())
        .with_error_message(Some(str_bytes(msg)))
        .with_num_partitions(-1)
        .with_replication_factor(-1)
}

pub async fn delete_topics(
    ctx: &KafkaContext,
    req: &Request<'_>,
    body: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    // v6 names topics by name or id in `topics`; earlier versions list names.
    let names: Vec<(Option<TopicName>, Uuid)> = if req.version >= 6 {
        body.topics
            .into_iter()
            .map(|t| (t.name, t.topic_id))
            .collect()
    } else {
        body.topic_names
            .into_iter()
            .map(|n| (Some(n), Uuid::nil()))
            .collect()
    };
    let mut responses = Vec::with_capacity(names.len());
    for (name, id) in names {
        let stream = match &name {
            Some(n) => stream_name(n),
            None => ctx
                .router
                .streams()
                .into_iter()
                .find(|m| Uuid::from_u128(m.id) == id)
                .map(|m| m.name),
        };
        let base = DeletableTopicResult::default()
            .with_name(name.clone().or_else(|| stream.as_ref().map(topic_name)))
            .with_topic_id(id);
        let res = match stream {
            None => base.with_error_code(ResponseError::UnknownTopicOrPartition.code()),
            Some(s) => match ctx.router.delete_stream(&s).await {
                Ok(()) => base,
                Err(e) => base
                    .with_error_code(router_error_code(&e))
                    .with_error_message(Some(str_bytes(e.to_string()))),
            },
        };
        responses.push(res);
    }
    DeleteTopicsResponse::default().with_responses(responses)
}

pub async fn create_partitions(
    ctx: &KafkaContext,
    _req: &Request<'_>,
    body: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut results = Vec::new();
    for t in body.topics {
        let base = CreatePartitionsTopicResult::default().with_name(t.name.clone());
        let res = match stream_name(&t.name) {
            None => base.with_error_code(ResponseError::InvalidTopicException.code()),
            Some(_) if t.count <= 0 => {
                base.with_error_code(ResponseError::InvalidPartitions.code())
            }
            Some(s) if body.validate_only => match ctx.router.stream(&s) {
                None => base.with_error_code(ResponseError::UnknownTopicOrPartition.code()),
                Some(m) if m.partitions >= t.count as u32 => {
                    base.with_error_code(ResponseError::InvalidPartitions.code())
                }
                Some(_) => base,
            },
            Some(s) => match ctx.router.add_partitions(&s, t.count as u32).await {
                Ok(_) => base,
                Err(e) => base
                    .with_error_code(router_error_code(&e))
                    .with_error_message(Some(str_bytes(e.to_string()))),
            },
        };
        results.push(res);
    }
    CreatePartitionsResponse::default().with_results(results)
}
