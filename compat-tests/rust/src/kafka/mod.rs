//! rskafka as a Kafka client, with the commands of compat-tests/node/kafkajs.js where rskafka
//! can do them: `init` first, then topic admin, offsets, produce, and partition consumers
//! whose records are collected until a test asks for them. Keys, values and header values
//! cross the JSON boundary as text; offsets in admin answers are strings, as kafkajs gives them.
//!
//! rskafka is a partition-level client: it has no consumer groups (no JoinGroup, SyncGroup,
//! OffsetCommit or OffsetFetch), no idempotent producer and no CreatePartitions, so `commit`,
//! `fetchOffsets`, `assignment`, `createPartitions` and `idempotent: true` answer "unsupported"
//! and the suite leaves those cases out for it (compat-tests/python/test_kafka_rust.py).

mod admin;
mod consume;
mod metadata;
mod produce;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rskafka::BackoffConfig;
use rskafka::client::partition::{PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::{AdapterError, Result, parse};
use crate::waiters::Arrivals;

/// rskafka retries without end by default; every command here gives up after this long.
const RETRY_DEADLINE: Duration = Duration::from_secs(10);
/// Broker-side timeout of CreateTopics / DeleteTopics.
const ADMIN_TIMEOUT_MS: i32 = 5000;
const NO_GROUPS: &str = "rskafka has no consumer groups (no JoinGroup, SyncGroup, OffsetCommit \
                         or OffsetFetch): it reads partitions by offset";

/// The connected client, once `init` ran.
struct Session {
    client: Client,
    brokers: Vec<String>,
    client_id: String,
    /// One PartitionClient (one leader connection) per topic partition, made on first use.
    partitions: tokio::sync::Mutex<HashMap<(String, i32), Arc<PartitionClient>>>,
}

#[derive(Default)]
pub struct Kafka {
    session: Mutex<Option<Arc<Session>>>,
    consumers: Mutex<HashMap<String, Arc<consume::Consumer>>>,
    arrived: Arc<Arrivals>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InitArgs {
    brokers: Vec<String>,
    client_id: Option<String>,
}

impl Kafka {
    pub async fn call(&self, op: &str, args: &str) -> Result<Value> {
        match op {
            "init" => self.init(parse(op, args)?).await,
            "createTopics" => admin::create_topics(&*self.session()?, parse(op, args)?).await,
            "listTopics" => admin::list_topics(&*self.session()?).await,
            "fetchTopicMetadata" => metadata::describe(&*self.session()?, parse(op, args)?).await,
            "deleteTopics" => admin::delete_topics(&*self.session()?, parse(op, args)?).await,
            "fetchTopicOffsets" => admin::topic_offsets(&*self.session()?, parse(op, args)?).await,
            "fetchTopicOffsetsByTimestamp" => {
                admin::offsets_by_timestamp(&*self.session()?, parse(op, args)?).await
            }
            "produce" => produce::produce(&*self.session()?, parse(op, args)?).await,
            "consume" => self.consume(parse(op, args)?).await,
            "expect" => self.expect(parse(op, args)?).await,
            "stop" => self.stop(parse(op, args)?),
            "createPartitions" => Err(AdapterError::Unsupported(
                "rskafka has no CreatePartitions request".into(),
            )),
            "fetchOffsets" | "commit" | "assignment" => {
                Err(AdapterError::Unsupported(NO_GROUPS.into()))
            }
            _ => Err(AdapterError::UnknownOp(op.into())),
        }
    }

    pub async fn close(&self) {
        let consumers: Vec<_> = self.consumers().drain().map(|(_, c)| c).collect();
        for c in consumers {
            c.stop();
        }
    }

    async fn init(&self, a: InitArgs) -> Result<Value> {
        let client_id = a.client_id.unwrap_or_else(|| "switchboard-compat".into());
        let build = ClientBuilder::new(a.brokers.clone())
            .client_id(client_id.as_str())
            .backoff_config(backoff())
            .build();
        let client = tokio::time::timeout(RETRY_DEADLINE, build)
            .await
            .map_err(|_| AdapterError::Timeout("init".into(), RETRY_DEADLINE.as_millis() as u64))?
            .map_err(library_error)?;
        let session = Session {
            client,
            brokers: a.brokers,
            client_id,
            partitions: Default::default(),
        };
        *self.session.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(session));
        Ok(json!({}))
    }

    fn session(&self) -> Result<Arc<Session>> {
        self.session
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(|| {
                AdapterError::State(r#"send {"op":"init","brokers":[...]} first"#.into())
            })
    }

    fn consumers(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<consume::Consumer>>> {
        self.consumers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Session {
    /// The client of one partition; an unknown topic is retried (and, by a broker that does
    /// so, auto-created through the metadata request rskafka sends for it).
    async fn partition(&self, topic: &str, partition: i32) -> Result<Arc<PartitionClient>> {
        let mut known = self.partitions.lock().await;
        let key = (topic.to_string(), partition);
        if let Some(client) = known.get(&key) {
            return Ok(Arc::clone(client));
        }
        let client = self
            .client
            .partition_client(topic, partition, UnknownTopicHandling::Retry)
            .await
            .map_err(library_error)?;
        let client = Arc::new(client);
        known.insert(key, Arc::clone(&client));
        Ok(client)
    }

    /// The partition numbers of `topic`, from fresh metadata.
    async fn partitions_of(&self, topic: &str) -> Result<Vec<i32>> {
        let topics = self.client.list_topics().await.map_err(library_error)?;
        topics
            .into_iter()
            .find(|t| t.name == topic)
            .map(|t| t.partitions.into_iter().collect())
            .ok_or_else(|| {
                AdapterError::library(
                    format!("unknown topic {topic:?}"),
                    "UNKNOWN_TOPIC_OR_PARTITION",
                )
            })
    }

    async fn forget_topic(&self, topic: &str) {
        self.partitions.lock().await.retain(|(t, _), _| t != topic);
    }
}

fn backoff() -> BackoffConfig {
    BackoffConfig {
        init_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(1),
        base: 2.0,
        deadline: Some(RETRY_DEADLINE),
    }
}

/// An rskafka error as a reply: a broker's error keeps its Kafka error name as the code.
fn library_error(e: rskafka::client::error::Error) -> AdapterError {
    let code = match &e {
        rskafka::client::error::Error::ServerError { protocol_error, .. } => {
            json!(protocol_error_name(protocol_error))
        }
        _ => Value::Null,
    };
    AdapterError::library(e, code)
}

/// `TopicAlreadyExists` -> "TOPIC_ALREADY_EXISTS", the spelling kafkajs and Kafka use.
fn protocol_error_name(e: &rskafka::protocol::error::Error) -> String {
    let mut out = String::new();
    for (i, ch) in format!("{e:?}").chars().enumerate() {
        if ch.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(ch.to_ascii_uppercase());
    }
    out
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConsumeArgs {
    consumer: String,
    // kafkajs's `groupId` is ignored: rskafka joins no group (see NO_GROUPS).
    topics: Vec<String>,
    from_beginning: Option<bool>,
    auto_commit: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExpectArgs {
    consumer: String,
    count: usize,
    timeout_ms: Option<u64>,
}

#[derive(Deserialize)]
struct StopArgs {
    consumer: String,
}

impl Kafka {
    /// Starts reading every partition of `topics` (from the start unless fromBeginning is
    /// false); records are collected for `expect`.
    async fn consume(&self, a: ConsumeArgs) -> Result<Value> {
        if a.auto_commit == Some(true) {
            return Err(AdapterError::Unsupported(NO_GROUPS.into()));
        }
        let session = self.session()?;
        let consumer = Arc::new(consume::Consumer::default());
        for topic in &a.topics {
            for partition in session.partitions_of(topic).await? {
                let client = session.partition(topic, partition).await?;
                consumer.read(
                    client,
                    a.from_beginning.unwrap_or(true),
                    Arc::clone(&self.arrived),
                );
            }
        }
        if let Some(old) = self.consumers().insert(a.consumer, consumer) {
            old.stop();
        }
        Ok(json!({}))
    }

    async fn expect(&self, a: ExpectArgs) -> Result<Value> {
        let consumer = self
            .consumers()
            .get(&a.consumer)
            .cloned()
            .ok_or_else(|| AdapterError::State(format!("no consumer {:?}", a.consumer)))?;
        let timeout = crate::waiters::millis(a.timeout_ms);
        let complete = self
            .arrived
            .until(|| consumer.count() >= a.count, timeout)
            .await;
        Ok(json!({"complete": complete, "messages": consumer.messages()}))
    }

    fn stop(&self, a: StopArgs) -> Result<Value> {
        let consumer = self
            .consumers()
            .remove(&a.consumer)
            .ok_or_else(|| AdapterError::State(format!("no consumer {:?}", a.consumer)))?;
        consumer.stop();
        Ok(json!({}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_errors_are_named_as_kafka_names_them() {
        let e = rskafka::protocol::error::Error::TopicAlreadyExists;
        assert_eq!(protocol_error_name(&e), "TOPIC_ALREADY_EXISTS");
    }
}
