//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs for topics (and a read-only view
//! of the broker). Overrides live in the routing table; retention keys take effect at the next
//! retention pass.

use std::collections::BTreeMap;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse as IncResponse;
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use switchboard_model::StreamName;

use super::{Request, str_bytes};
use crate::KafkaContext;
use crate::errors::router_error_code;

const TOPIC: i8 = 2;
const BROKER: i8 = 4;
/// KIP-226 config sources.
const DYNAMIC_TOPIC_CONFIG: i8 = 1;
const DEFAULT_CONFIG: i8 = 5;
/// KIP-569 config types.
const TYPE_STRING: i8 = 2;
const TYPE_LONG: i8 = 5;

/// Topic configs we know, with Kafka's defaults and whether they are numeric.
const TOPIC_CONFIGS: &[(&str, &str, bool)] = &[
    ("cleanup.policy", "delete", false),
    ("retention.ms", "604800000", true),
    ("retention.bytes", "-1", true),
    ("segment.bytes", "1073741824", true),
    ("segment.ms", "604800000", true),
    ("max.message.bytes", "1048588", true),
    ("message.timestamp.type", "CreateTime", false),
    ("min.insync.replicas", "1", true),
    ("compression.type", "producer", false),
];

/// Checks a topic config key and value; the error names the problem for the client.
pub fn validate_topic_config(key: &str, value: &str) -> Result<(), String> {
    let Some((_, _, numeric)) = TOPIC_CONFIGS.iter().find(|(k, _, _)| *k == key) else {
        return Err(format!("unknown topic config {key}"));
    };
    if *numeric && value.parse::<i64>().is_err() {
        return Err(format!("{key} must be an integer, got {value:?}"));
    }
    if key == "message.timestamp.type" && !matches!(value, "CreateTime" | "LogAppendTime") {
        return Err(format!("{key} must be CreateTime or LogAppendTime"));
    }
    Ok(())
}

pub async fn describe_configs(
    ctx: &KafkaContext,
    _req: &Request<'_>,
    body: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let results = body
        .resources
        .into_iter()
        .map(|r| {
            let base = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            let wanted = |k: &str| {
                r.configuration_keys
                    .as_ref()
                    .is_none_or(|keys| keys.iter().any(|w| w.as_str() == k))
            };
            match r.resource_type {
                TOPIC => {
                    let meta = StreamName::new(r.resource_name.as_str())
                        .ok()
                        .and_then(|n| ctx.router.stream(&n));
                    let Some(meta) = meta else {
                        return base.with_error_code(ResponseError::UnknownTopicOrPartition.code());
                    };
                    let configs = TOPIC_CONFIGS
                        .iter()
                        .filter(|(k, _, _)| wanted(k))
                        .map(|(k, default, numeric)| {
                            let (value, source) = match meta.config.get(*k) {
                                Some(v) => (v.clone(), DYNAMIC_TOPIC_CONFIG),
                                None => ((*default).to_owned(), DEFAULT_CONFIG),
                            };
                            entry(k, value, source, *numeric)
                        })
                        .collect();
                    base.with_configs(configs)
                }
                BROKER => {
                    let broker = [
                        ("broker.id", ctx.settings.node_id.to_string()),
                        (
                            "auto.create.topics.enable",
                            ctx.settings.auto_create_topics.to_string(),
                        ),
                        (
                            "num.partitions",
                            ctx.settings.default_partitions.to_string(),
                        ),
                        (
                            "message.max.bytes",
                            ctx.settings.max_message_bytes.to_string(),
                        ),
                    ];
                    let configs = broker
                        .into_iter()
                        .filter(|(k, _)| wanted(k))
                        .map(|(k, v)| entry(k, v, DEFAULT_CONFIG, false).with_read_only(true))
                        .collect();
                    base.with_configs(configs)
                }
                _ => base.with_error_code(ResponseError::InvalidRequest.code()),
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

fn entry(key: &str, value: String, source: i8, numeric: bool) -> DescribeConfigsResourceResult {
    DescribeConfigsResourceResult::default()
        .with_name(str_bytes(key))
        .with_value(Some(str_bytes(value)))
        .with_config_source(source)
        .with_config_type(if numeric { TYPE_LONG } else { TYPE_STRING })
}

/// Applies `changes` to a topic after validating them all; `Err((code, message))` otherwise.
async fn alter_topic(
    ctx: &KafkaContext,
    name: &str,
    changes: Vec<(String, Option<String>)>,
    replace_all: bool,
    validate_only: bool,
) -> Result<(), (i16, String)> {
    let stream = StreamName::new(name)
        .map_err(|e| (ResponseError::InvalidTopicException.code(), e.to_string()))?;
    let Some(meta) = ctx.router.stream(&stream) else {
        return Err((
            ResponseError::UnknownTopicOrPartition.code(),
            format!("no topic {name}"),
        ));
    };
    for (k, v) in &changes {
        match v {
            Some(v) => validate_topic_config(k, v),
            None => validate_topic_config(
                k,
                TOPIC_CONFIGS.iter().find(|c| c.0 == k).map_or("", |c| c.1),
            ),
        }
        .map_err(|m| (ResponseError::InvalidConfig.code(), m))?;
    }
    if validate_only {
        return Ok(());
    }
    let mut all = changes;
    if replace_all {
        // AlterConfigs (non-incremental) sets the whole override set: unset keys revert.
        let given: BTreeMap<_, _> = all.iter().map(|(k, _)| (k.clone(), ())).collect();
        all.extend(
            meta.config
                .keys()
                .filter(|k| !given.contains_key(*k))
                .map(|k| (k.clone(), None)),
        );
    }
    ctx.router
        .alter_config(&stream, all)
        .await
        .map(|_| ())
        .map_err(|e| (router_error_code(&e), e.to_string()))
}

pub async fn alter_configs(
    ctx: &KafkaContext,
    _req: &Request<'_>,
    body: AlterConfigsRequest,
) -> AlterConfigsResponse {
    let mut responses = Vec::new();
    for r in body.resources {
        let base = AlterConfigsResourceResponse::default()
            .with_resource_type(r.resource_type)
            .with_resource_name(r.resource_name.clone());
        let result = if r.resource_type == TOPIC {
            let changes = r
                .configs
                .iter()
                .map(|c| (c.name.to_string(), c.value.as_ref().map(|v| v.to_string())))
                .collect();
            alter_topic(
                ctx,
                r.resource_name.as_str(),
                changes,
                true,
                body.validate_only,
            )
            .await
        } else {
            Err((
                ResponseError::InvalidRequest.code(),
                "only topic configs can be altered".into(),
            ))
        };
        responses.push(match result {
            Ok(()) => base,
            Err((code, msg)) => base
                .with_error_code(code)
                .with_error_message(Some(str_bytes(msg))),
        });
    }
    AlterConfigsResponse::default().with_responses(responses)
}

pub async fn incremental_alter_configs(
    ctx: &KafkaContext,
    _req: &Request<'_>,
    body: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    const SET: i8 = 0;
    const DELETE: i8 = 1;
    let mut responses = Vec::new();
    for r in body.resources {
        let base = IncResponse::default()
            .with_resource_type(r.resource_type)
            .with_resource_name(r.resource_name.clone());
        let mut changes = Vec::new();
        let mut unsupported = false;
        for c in &r.configs {
            match c.config_operation {
                SET => changes.push((c.name.to_string(), c.value.as_ref().map(|v| v.to_string()))),
                DELETE => changes.push((c.name.to_string(), None)),
                // APPEND and SUBTRACT apply to list-valued configs, which we do not have.
                _ => unsupported = true,
            }
        }
        let result = if r.resource_type != TOPIC {
            Err((
                ResponseError::InvalidRequest.code(),
                "only topic configs can be altered".into(),
            ))
        } else if unsupported {
            Err((
                ResponseError::InvalidConfig.code(),
                "APPEND/SUBTRACT apply to list configs only".into(),
            ))
        } else {
            alter_topic(
                ctx,
                r.resource_name.as_str(),
                changes,
                false,
                body.validate_only,
            )
            .await
        };
        responses.push(match result {
            Ok(()) => base,
            Err((code, msg)) => base
                .with_error_code(code)
                .with_error_message(Some(str_bytes(msg))),
        });
    }
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}
