//! `produce`: one record batch per partition through rskafka's PartitionClient.

use std::collections::BTreeMap;

use rskafka::chrono::{DateTime, TimeZone, Utc};
use rskafka::client::partition::Compression;
use rskafka::record::Record;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Session, library_error};
use crate::error::{AdapterError, Result};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProduceArgs {
    topic: String,
    messages: Vec<MessageArgs>,
    idempotent: Option<bool>,
    acks: Option<i16>,
    compression: Option<String>,
    // kafkajs's `producer` (a name to keep a producer under) needs nothing here: rskafka keeps
    // one connection per partition leader for the whole process.
}

#[derive(Deserialize)]
struct MessageArgs {
    key: Option<String>,
    value: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, Value>,
    partition: Option<i32>,
    /// Milliseconds since the epoch, as a string (kafkajs) or a number.
    timestamp: Option<Value>,
}

/// -> {records: [{topicName, partition, baseOffset, errorCode}]}, one per partition written.
/// A message without a partition goes to partition 0: rskafka has no partitioner.
pub async fn produce(session: &Session, a: ProduceArgs) -> Result<Value> {
    if a.idempotent == Some(true) {
        return Err(AdapterError::Unsupported(
            "rskafka has no idempotent producer (no InitProducerId)".into(),
        ));
    }
    if a.acks.is_some_and(|acks| acks != -1) {
        return Err(AdapterError::Unsupported(
            "rskafka's PartitionClient always produces with acks=-1".into(),
        ));
    }
    let compression = compression(a.compression.as_deref())?;
    let mut batches: BTreeMap<i32, Vec<Record>> = BTreeMap::new();
    for m in a.messages {
        let partition = m.partition.unwrap_or(0);
        batches.entry(partition).or_default().push(record(m)?);
    }
    let mut out = Vec::new();
    for (partition, records) in batches {
        let client = session.partition(&a.topic, partition).await?;
        let offsets = client
            .produce(records, compression)
            .await
            .map_err(library_error)?;
        out.push(json!({"topicName": a.topic, "partition": partition,
                        "baseOffset": offsets.first(), "errorCode": 0}));
    }
    Ok(json!({"records": out}))
}

fn compression(name: Option<&str>) -> Result<Compression> {
    match name.unwrap_or("none") {
        "none" => Ok(Compression::NoCompression),
        "gzip" => Ok(Compression::Gzip),
        other => Err(AdapterError::Unsupported(format!(
            "compression {other}: this build of rskafka has gzip only"
        ))),
    }
}

fn record(m: MessageArgs) -> Result<Record> {
    let mut headers = BTreeMap::new();
    for (name, value) in m.headers {
        let Value::String(text) = value else {
            return Err(AdapterError::Unsupported(format!(
                "header {name:?}: rskafka keeps one text value per header name"
            )));
        };
        headers.insert(name, text.into_bytes());
    }
    Ok(Record {
        key: m.key.map(String::into_bytes),
        value: m.value.map(String::into_bytes),
        headers,
        timestamp: timestamp(m.timestamp)?,
    })
}

fn timestamp(given: Option<Value>) -> Result<DateTime<Utc>> {
    let millis = match given {
        // chrono's clock is a feature rskafka leaves off.
        None => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .and_then(|d| i64::try_from(d.as_millis()).ok()),
        Some(Value::String(s)) => s.parse::<i64>().ok(),
        Some(Value::Number(n)) => n.as_i64(),
        Some(_) => None,
    };
    millis
        .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
        .ok_or_else(|| AdapterError::State("timestamp: want milliseconds since the epoch".into()))
}
