//! `fetchTopicMetadata`: a Metadata request through rskafka's own connection type and wire
//! types (public with its "unstable-fuzzing" feature), because the high-level client keeps
//! partition leaders and errors to itself.

use rskafka::messenger::Messenger;
use rskafka::protocol::messages::{MetadataRequest, MetadataRequestTopic, MetadataResponseTopic};
use rskafka::protocol::primitives::{Boolean, Int16, String_};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpStream;

use super::{RETRY_DEADLINE, Session};
use crate::error::{AdapterError, Result};

/// Largest response frame accepted (the client's default).
const MAX_MESSAGE: usize = 100 * 1024 * 1024;

#[derive(Deserialize)]
pub struct DescribeArgs {
    topics: Option<Vec<String>>,
}

/// -> {topics: [{name, partitions: [{partitionErrorCode, partitionId, leader, replicas,
/// isr}]}]}, as kafkajs's fetchTopicMetadata. Topics are not auto-created by asking.
pub async fn describe(session: &Session, a: DescribeArgs) -> Result<Value> {
    let messenger = connect(session).await?;
    let request = MetadataRequest {
        topics: a.topics.map(|names| {
            names
                .into_iter()
                .map(|name| MetadataRequestTopic {
                    name: String_(name),
                })
                .collect()
        }),
        allow_auto_topic_creation: Some(Boolean(false)),
    };
    let response = tokio::time::timeout(RETRY_DEADLINE, messenger.request(request))
        .await
        .map_err(|_| timeout("Metadata"))?
        .map_err(|e| AdapterError::library(e, Value::Null))?;
    let topics = response
        .topics
        .into_iter()
        .map(topic_json)
        .collect::<Result<Vec<_>>>()?;
    Ok(json!({"topics": topics}))
}

fn topic_json(t: MetadataResponseTopic) -> Result<Value> {
    if let Some(e) = t.error {
        return Err(AdapterError::library(
            format!("topic {:?}: {e}", t.name.0),
            super::protocol_error_name(&e),
        ));
    }
    let partitions: Vec<Value> = t
        .partitions
        .into_iter()
        .map(|p| {
            json!({
                "partitionErrorCode": Int16::from(p.error).0,
                "partitionId": p.partition_index.0,
                "leader": p.leader_id.0,
                "replicas": p.replica_nodes.0.unwrap_or_default().iter().map(|r| r.0).collect::<Vec<_>>(),
                "isr": p.isr_nodes.0.unwrap_or_default().iter().map(|r| r.0).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(json!({"name": t.name.0, "partitions": partitions}))
}

/// A connection to the first bootstrap broker that answers, versions negotiated.
async fn connect(session: &Session) -> Result<Messenger<TcpStream>> {
    let mut last = String::from("no brokers given");
    for broker in &session.brokers {
        let open = async {
            let stream = TcpStream::connect(broker.as_str())
                .await
                .map_err(|e| format!("{broker}: {e}"))?;
            let mut messenger =
                Messenger::new(stream, MAX_MESSAGE, session.client_id.as_str().into());
            messenger
                .sync_versions()
                .await
                .map_err(|e| format!("{broker}: ApiVersions: {e}"))?;
            Ok::<_, String>(messenger)
        };
        match tokio::time::timeout(RETRY_DEADLINE, open).await {
            Ok(Ok(messenger)) => return Ok(messenger),
            Ok(Err(e)) => last = e,
            Err(_) => last = format!("{broker}: no ApiVersions answer"),
        }
    }
    Err(AdapterError::library(last, Value::Null))
}

fn timeout(what: &str) -> AdapterError {
    AdapterError::Timeout(what.into(), RETRY_DEADLINE.as_millis() as u64)
}
