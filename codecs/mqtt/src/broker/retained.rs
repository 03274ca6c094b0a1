//! Retained messages (MQTT 5 §3.3.1.3): the last retained message per topic, kept in memory for
//! matching and in the routing table's `mqtt.retained` space so they survive a restart.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use switchboard_model::{BatchBuilder, RecordBatch};
use switchboard_router::{Router, RouterError};

use crate::mapping::Message;
use crate::topic;

const SPACE: &str = "mqtt.retained";

#[derive(Default)]
pub(crate) struct RetainedStore {
    by_topic: RwLock<BTreeMap<String, Arc<Message>>>,
}

impl RetainedStore {
    /// Loads what the routing table holds. An entry that does not decode is skipped with a
    /// warning: a retained message is not worth refusing to start over.
    pub(crate) fn restore(&self, router: &Router) {
        let mut map = self.by_topic.write().unwrap_or_else(|e| e.into_inner());
        for (topic, bytes) in router.space(SPACE) {
            match decode(&bytes) {
                Some(m) => {
                    map.insert(topic, Arc::new(m));
                }
                None => tracing::warn!(%topic, "skipping a retained message that does not decode"),
            }
        }
    }

    /// Replaces the topic's retained message in memory, or clears it when the payload is empty
    /// (§3.3.1.3). Returns what [`RetainedStore::persist`] must write: done before the message
    /// is appended, so that a client that saw it live finds it retained when it subscribes.
    pub(crate) fn remember(&self, m: &Message) -> Option<Option<Vec<u8>>> {
        if m.payload.is_empty() {
            let existed = self.write().remove(&m.topic).is_some();
            return existed.then_some(None);
        }
        self.write().insert(m.topic.clone(), Arc::new(m.clone()));
        Some(Some(encode(m)))
    }

    /// Writes a change made by [`RetainedStore::remember`] to the routing table.
    pub(crate) async fn persist(
        &self,
        router: &Router,
        topic: &str,
        change: Option<Vec<u8>>,
    ) -> Result<(), RouterError> {
        router.put(SPACE, topic, change).await
    }

    /// Unexpired retained messages whose topic matches `filter`.
    pub(crate) fn matching(&self, filter: &str, now_ms: i64) -> Vec<Arc<Message>> {
        let map = self.by_topic.read().unwrap_or_else(|e| e.into_inner());
        let live = |m: &&Arc<Message>| !m.is_expired(now_ms);
        if !filter.contains(['+', '#']) {
            return map.get(filter).filter(live).cloned().into_iter().collect();
        }
        map.iter()
            .filter(|(t, _)| topic::matches(filter, t))
            .map(|(_, m)| m)
            .filter(live)
            .cloned()
            .collect()
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Arc<Message>>> {
        self.by_topic.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// A retained message is kept as a one-record v2 batch, the same form as in a stream.
fn encode(m: &Message) -> Vec<u8> {
    let mut b = BatchBuilder::new();
    m.write_to(&mut b);
    b.build()
        .map(|batch| batch.bytes().to_vec())
        .unwrap_or_default()
}

fn decode(bytes: &[u8]) -> Option<Message> {
    let batch = RecordBatch::parse(Bytes::copy_from_slice(bytes)).ok()?;
    let record = batch.records().ok()?.into_iter().next()?;
    let mut m = Message::from_record("", &record);
    m.retain = true;
    Some(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_round_trips() {
        let m = Message {
            topic: "a/b".into(),
            payload: Bytes::from_static(b"v"),
            retain: true,
            qos: crate::wire::QoS::AtLeastOnce,
            timestamp_ms: 9,
            ..Default::default()
        };
        assert_eq!(decode(&encode(&m)), Some(m));
    }

    #[test]
    fn matching_skips_expired_and_respects_wildcards() {
        let store = RetainedStore::default();
        let mut w = store.write();
        for (t, exp) in [("a/b", None), ("a/c", Some(50)), ("$x/y", None)] {
            let m = Message {
                topic: t.into(),
                payload: Bytes::from_static(b"v"),
                expiry_at_ms: exp,
                ..Default::default()
            };
            w.insert(t.into(), Arc::new(m));
        }
        drop(w);
        let topics = |f: &str, now| {
            store
                .matching(f, now)
                .iter()
                .map(|m| m.topic.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(topics("a/+", 10), vec!["a/b", "a/c"]);
        assert_eq!(topics("a/+", 100), vec!["a/b"]);
        assert_eq!(topics("#", 10), vec!["a/b", "a/c"]);
        assert_eq!(topics("$x/y", 10), vec!["$x/y"]);
    }
}
