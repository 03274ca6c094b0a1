//! Topic admin and offset look-ups: CreateTopics, Metadata, DeleteTopics and ListOffsets.

use rskafka::chrono::{TimeZone, Utc};
use rskafka::client::partition::OffsetAt;
use rskafka::protocol::error::Error as ProtocolError;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ADMIN_TIMEOUT_MS, Session, library_error};
use crate::error::{AdapterError, Result};

#[derive(Deserialize)]
pub struct CreateTopicsArgs {
    topics: Vec<TopicSpec>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TopicSpec {
    topic: String,
    num_partitions: Option<i32>,
    replication_factor: Option<i16>,
    #[serde(default)]
    config_entries: Vec<Value>,
}

/// -> {created}: false when a topic already existed (kafkajs's answer).
pub async fn create_topics(session: &Session, a: CreateTopicsArgs) -> Result<Value> {
    let controller = session.client.controller_client().map_err(library_error)?;
    let mut created = true;
    for spec in a.topics {
        if !spec.config_entries.is_empty() {
            return Err(AdapterError::Unsupported(
                "rskafka's create_topic takes no topic configs".into(),
            ));
        }
        let made = controller
            .create_topic(
                spec.topic.as_str(),
                spec.num_partitions.unwrap_or(1),
                // One broker under test: one replica unless a test asks otherwise.
                spec.replication_factor.unwrap_or(1),
                ADMIN_TIMEOUT_MS,
            )
            .await;
        match made {
            Ok(()) => {}
            Err(rskafka::client::error::Error::ServerError {
                protocol_error: ProtocolError::TopicAlreadyExists,
                ..
            }) => created = false,
            Err(e) => return Err(library_error(e)),
        }
    }
    Ok(json!({"created": created}))
}

pub async fn list_topics(session: &Session) -> Result<Value> {
    let topics = session.client.list_topics().await.map_err(library_error)?;
    let names: Vec<String> = topics.into_iter().map(|t| t.name).collect();
    Ok(json!({"topics": names}))
}

#[derive(Deserialize)]
pub struct DeleteTopicsArgs {
    topics: Vec<String>,
}

pub async fn delete_topics(session: &Session, a: DeleteTopicsArgs) -> Result<Value> {
    let controller = session.client.controller_client().map_err(library_error)?;
    for topic in a.topics {
        controller
            .delete_topic(topic.as_str(), ADMIN_TIMEOUT_MS)
            .await
            .map_err(library_error)?;
        session.forget_topic(&topic).await;
    }
    Ok(json!({}))
}

#[derive(Deserialize)]
pub struct TopicArgs {
    topic: String,
}

/// -> {partitions: [{partition, offset, high, low}]}: offset is the high watermark.
pub async fn topic_offsets(session: &Session, a: TopicArgs) -> Result<Value> {
    let mut out = Vec::new();
    for partition in session.partitions_of(&a.topic).await? {
        let client = session.partition(&a.topic, partition).await?;
        let low = client.get_offset(OffsetAt::Earliest).await;
        let high = client.get_offset(OffsetAt::Latest).await;
        let (low, high) = (low.map_err(library_error)?, high.map_err(library_error)?);
        out.push(json!({"partition": partition, "offset": high.to_string(),
                        "high": high.to_string(), "low": low.to_string()}));
    }
    Ok(json!({"partitions": out}))
}

#[derive(Deserialize)]
pub struct ByTimestampArgs {
    topic: String,
    timestamp: i64,
}

/// -> {partitions: [{partition, offset}]}: the first offset whose timestamp is at or after the
/// one given; where there is none (ListOffsets answers -1), the partition's end offset, as
/// kafkajs answers.
pub async fn offsets_by_timestamp(session: &Session, a: ByTimestampArgs) -> Result<Value> {
    let at = Utc
        .timestamp_millis_opt(a.timestamp)
        .single()
        .ok_or_else(|| AdapterError::State(format!("timestamp {} out of range", a.timestamp)))?;
    let mut out = Vec::new();
    for partition in session.partitions_of(&a.topic).await? {
        let client = session.partition(&a.topic, partition).await?;
        let mut offset = client
            .get_offset(OffsetAt::Timestamp(at))
            .await
            .map_err(library_error)?;
        if offset < 0 {
            offset = client
                .get_offset(OffsetAt::Latest)
                .await
                .map_err(library_error)?;
        }
        out.push(json!({"partition": partition, "offset": offset.to_string()}));
    }
    Ok(json!({"partitions": out}))
}
