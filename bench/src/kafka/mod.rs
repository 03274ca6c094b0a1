//! Kafka scenarios, on rskafka (a pure-Rust client).
//!
//! Topic creation, metadata and fetching go through rskafka's `Client` and `PartitionClient`.
//! Produce requests go through rskafka's connection type (`Messenger`: version negotiation,
//! framing, pipelining by correlation id) with request values built here, because
//! `PartitionClient::produce` always asks for `acks = -1` and the produce scenario compares
//! `acks = 1` with `acks = all` on one code path. See bench/README.md.

mod bridge;
mod consume;
mod fetch;
mod produce;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use rskafka::BackoffConfig;
use rskafka::client::{Client, ClientBuilder};
use rskafka::messenger::Messenger;
use tokio::net::TcpStream;

use crate::cli::{KafkaScenario, KafkaTarget, Limits};
use crate::report::Report;

/// Largest response the bench accepts, bytes (a fetch answer for many partitions).
const MAX_MESSAGE: usize = 256 << 20;
/// How often the coordinators look at the counters.
const TICK: Duration = Duration::from_millis(50);

pub async fn run(scenario: KafkaScenario) -> Result<Report> {
    match scenario {
        KafkaScenario::Produce(a) => produce::run(a).await,
        KafkaScenario::Consume(a) => consume::run(a).await,
        KafkaScenario::MqttToKafka(a) => bridge::run(a).await,
    }
}

fn bootstrap(target: &KafkaTarget) -> String {
    format!("{}:{}", target.host, target.port)
}

/// rskafka's client (metadata, topics, fetches). Its retries end at the connect timeout, so a
/// broker that keeps failing fails the run instead of hanging it.
async fn client(target: &KafkaTarget, limits: &Limits, id: &str) -> Result<Client> {
    let backoff = BackoffConfig {
        init_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_secs(1),
        base: 2.0,
        deadline: Some(limits.connect_timeout),
    };
    let build = ClientBuilder::new(vec![bootstrap(target)])
        .client_id(format!("sbbench-{id}"))
        .max_message_size(MAX_MESSAGE)
        .backoff_config(backoff)
        .build();
    tokio::time::timeout(limits.connect_timeout, build)
        .await
        .map_err(|_| {
            anyhow!(
                "no Kafka metadata from {} within {:?}",
                bootstrap(target),
                limits.connect_timeout
            )
        })?
        .with_context(|| format!("connecting to Kafka at {}", bootstrap(target)))
}

/// One Kafka connection for produce requests, versions negotiated (ApiVersions).
pub type Connection = Arc<Messenger<TcpStream>>;

async fn connection(target: &KafkaTarget, limits: &Limits, id: &str) -> Result<Connection> {
    let address = bootstrap(target);
    let open = async {
        let stream = TcpStream::connect(&address)
            .await
            .with_context(|| format!("connecting to {address}"))?;
        // Small produce requests must not wait for the previous one's ACK (Nagle).
        stream.set_nodelay(true).context("setting TCP_NODELAY")?;
        let mut messenger = Messenger::new(stream, MAX_MESSAGE, format!("sbbench-{id}").into());
        messenger
            .sync_versions()
            .await
            .with_context(|| format!("ApiVersions with {address}"))?;
        Ok::<_, anyhow::Error>(Arc::new(messenger))
    };
    tokio::time::timeout(limits.connect_timeout, open)
        .await
        .map_err(|_| {
            anyhow!(
                "no ApiVersions answer from {address} within {:?}",
                limits.connect_timeout
            )
        })?
}

/// Creates `topic` with `partitions` partitions and waits until the broker's metadata lists
/// all of them.
async fn create_topic(
    client: &Client,
    topic: &str,
    partitions: u32,
    limits: &Limits,
) -> Result<()> {
    let n = i32::try_from(partitions).context("partition count")?;
    let timeout_ms = i32::try_from(limits.connect_timeout.as_millis()).unwrap_or(i32::MAX);
    client
        .controller_client()
        .context("controller client")?
        .create_topic(topic, n, 1, timeout_ms)
        .await
        .with_context(|| format!("creating topic {topic} ({partitions} partitions)"))?;
    let deadline = tokio::time::Instant::now() + limits.connect_timeout;
    loop {
        let listed = partitions_of(client, topic).await?;
        if listed.len() >= partitions as usize {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "topic {topic} created, but the metadata still lists {} of its {partitions} \
                 partitions after {:?}",
                listed.len(),
                limits.connect_timeout
            );
        }
        tokio::time::sleep(TICK).await;
    }
}

/// The partitions of `topic` the broker's metadata lists (empty when there is no such topic).
async fn partitions_of(client: &Client, topic: &str) -> Result<Vec<i32>> {
    let topics = client.list_topics().await.context("listing topics")?;
    let mut partitions: Vec<i32> = topics
        .into_iter()
        .filter(|t| t.name == topic)
        .flat_map(|t| t.partitions)
        .collect();
    partitions.sort_unstable();
    Ok(partitions)
}

/// Deletes a topic the run created. A failure is reported, not fatal: the result stands.
async fn delete_topic(client: &Client, topic: &str, limits: &Limits) {
    let timeout_ms = i32::try_from(limits.connect_timeout.as_millis()).unwrap_or(i32::MAX);
    let deleted = async {
        client
            .controller_client()?
            .delete_topic(topic, timeout_ms)
            .await
    };
    match tokio::time::timeout(limits.connect_timeout, deleted).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("switchboard-bench: could not delete topic {topic}: {e}"),
        Err(_) => eprintln!("switchboard-bench: deleting topic {topic} timed out"),
    }
}
