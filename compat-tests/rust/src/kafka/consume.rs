//! A partition consumer per topic partition (rskafka's StreamConsumer), collecting records.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use futures_util::StreamExt;
use rskafka::client::consumer::{StartOffset, StreamConsumerBuilder};
use rskafka::client::partition::PartitionClient;
use rskafka::record::RecordAndOffset;
use serde_json::{Map, Value, json};
use tokio::task::AbortHandle;

use crate::waiters::Arrivals;

/// Longest a fetch waits at the broker for records (as the kafkajs adapter's maxWaitTimeInMs).
const MAX_WAIT_MS: i32 = 200;

#[derive(Default)]
pub struct Consumer {
    messages: Mutex<Vec<Value>>,
    readers: Mutex<Vec<AbortHandle>>,
}

impl Consumer {
    /// Starts reading one partition into this consumer's messages.
    pub fn read(
        self: &Arc<Self>,
        client: Arc<PartitionClient>,
        from_start: bool,
        arrived: Arc<Arrivals>,
    ) {
        let start = if from_start {
            StartOffset::Earliest
        } else {
            StartOffset::Latest
        };
        let (topic, partition) = (client.topic().to_string(), client.partition());
        let mut stream = StreamConsumerBuilder::new(client, start)
            .with_max_wait_ms(MAX_WAIT_MS)
            .build();
        let me = Arc::clone(self);
        let reader = tokio::spawn(async move {
            while let Some(next) = stream.next().await {
                match next {
                    Ok((record, _high_watermark)) => {
                        lock(&me.messages).push(record_json(&topic, partition, record));
                        arrived.notify();
                    }
                    Err(e) => {
                        eprintln!("consumer of {topic}/{partition}: {e}");
                        return;
                    }
                }
            }
        });
        lock(&self.readers).push(reader.abort_handle());
    }

    pub fn count(&self) -> usize {
        lock(&self.messages).len()
    }

    pub fn messages(&self) -> Vec<Value> {
        lock(&self.messages).clone()
    }

    pub fn stop(&self) {
        for reader in lock(&self.readers).drain(..) {
            reader.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A record as the kafkajs adapter reports it. rskafka does not expose the batch a record
/// came in, so producerId and firstSequence are null.
fn record_json(topic: &str, partition: i32, r: RecordAndOffset) -> Value {
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    let headers: Map<String, Value> = r
        .record
        .headers
        .into_iter()
        .map(|(k, v)| (k, Value::String(text(v))))
        .collect();
    json!({
        "topic": topic,
        "partition": partition,
        "offset": r.offset,
        "key": r.record.key.map(text),
        "value": r.record.value.map(text),
        "headers": headers,
        "timestamp": r.record.timestamp.timestamp_millis(),
        "producerId": null,
        "firstSequence": null,
    })
}
