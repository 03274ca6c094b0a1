//! What survives a restart, in the routing table:
//!
//! - space `amqp.definitions`, key = vhost: the durable exchanges, queues and bindings as one
//!   JSON document, rewritten (and awaited) on each change before the method's `-ok`;
//! - space `amqp.queues`, key = `["<vhost>","<queue>"]`: each durable queue's ack state — the
//!   floor below which every offset of its stream is settled, the settled ranges above it, and
//!   the highest offset ever delivered. Written at most once a second when it changed, and at
//!   shutdown, so a crash redelivers at most the last second of acks (marked redelivered).
//!
//! At start each durable queue reads its stream from the floor and holds again every
//! persistent message not settled. Streams are trimmed below the floor now and then.

use std::sync::Arc;
use std::time::Duration;

use amq_protocol::types::FieldTable;
use serde::{Deserialize, Serialize};
use switchboard_model::{RecordBatch, StreamName, TopicPartition};
use switchboard_router::now_ms;

use super::queues::{Backing, QueueHandle, QueueSpec};
use super::{AmqpBroker, StartError, VHost};
use crate::error::AmqpError;
use crate::mapping;
use crate::model::{Binding, Destination, Exchange, ExchangeKind};
use crate::queue::{Queue, QueueArguments};

const DEFINITIONS: &str = "amqp.definitions";
const QUEUES: &str = "amqp.queues";
/// How often changed ack states are written.
const PERSIST_EVERY: Duration = Duration::from_secs(1);
/// Streams are trimmed every this many persist passes.
const TRIM_EVERY: u32 = 10;
/// How long shutdown waits for connections to requeue before the last ack-state write.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);
/// Bytes read at a time when restoring a queue.
const RESTORE_READ_BYTES: usize = 1024 * 1024;

#[derive(Debug, Default, Serialize, Deserialize)]
struct Definitions {
    exchanges: Vec<ExchangeDef>,
    queues: Vec<QueueDef>,
    bindings: Vec<BindingDef>,
}

#[derive(Debug, Serialize, Deserialize)]
struct ExchangeDef {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    auto_delete: bool,
    internal: bool,
    arguments: FieldTable,
}

#[derive(Debug, Serialize, Deserialize)]
struct QueueDef {
    name: String,
    auto_delete: bool,
    arguments: FieldTable,
}

#[derive(Debug, Serialize, Deserialize)]
struct BindingDef {
    source: String,
    destination: String,
    /// `queue` or `exchange`.
    destination_type: String,
    routing_key: String,
    arguments: FieldTable,
}

/// A durable queue's settlement, as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct AckState {
    /// Every offset below is settled.
    pub floor: u64,
    /// Half-open ranges `[start, end)` above the floor that are settled too.
    pub settled: Vec<(u64, u64)>,
    /// Highest offset ever delivered.
    pub delivered_upto: Option<u64>,
}

impl AckState {
    /// The state of `queue`: held offsets are unsettled, every other offset below its next
    /// offset is settled.
    pub(crate) fn of(queue: &Queue, delivered_upto: Option<u64>) -> Self {
        let next = queue.next_offset();
        let mut held = queue.held_offsets();
        let Some(floor) = held.next() else {
            return Self {
                floor: next,
                settled: Vec::new(),
                delivered_upto,
            };
        };
        let mut settled = Vec::new();
        let mut prev = floor;
        for offset in held.chain(std::iter::once(next)) {
            if offset > prev + 1 {
                settled.push((prev + 1, offset));
            }
            prev = offset;
        }
        Self {
            floor,
            settled,
            delivered_upto,
        }
    }

    pub(crate) fn is_settled(&self, offset: u64) -> bool {
        offset < self.floor
            || self
                .settled
                .iter()
                .any(|(start, end)| (*start..*end).contains(&offset))
    }
}

fn queue_key(vhost: &str, queue: &str) -> String {
    serde_json::to_string(&(vhost, queue)).unwrap_or_default()
}

impl AmqpBroker {
    /// Rewrites the vhost's durable definitions.
    pub(crate) async fn persist_definitions(&self, vhost: &VHost) -> Result<(), AmqpError> {
        let _one_writer = vhost.defs_lock.lock().await;
        let json = {
            let state = vhost.lock();
            let mut defs = Definitions::default();
            for e in state.topology.exchanges() {
                if e.durable && !e.name.is_empty() && !e.name.starts_with("amq.") {
                    defs.exchanges.push(ExchangeDef {
                        name: e.name.clone(),
                        kind: e.kind.as_str().to_owned(),
                        auto_delete: e.auto_delete,
                        internal: e.internal,
                        arguments: e.arguments.clone(),
                    });
                }
            }
            let durable_queue = |name: &str| {
                state
                    .queues
                    .get(name)
                    .is_some_and(|q| q.spec.durable && q.spec.exclusive_owner.is_none())
            };
            for q in state.queues.values() {
                if durable_queue(q.name()) {
                    defs.queues.push(QueueDef {
                        name: q.name().to_owned(),
                        auto_delete: q.spec.auto_delete,
                        arguments: q.spec.arguments.clone(),
                    });
                }
            }
            for e in state.topology.exchanges().filter(|e| e.durable) {
                for b in state.topology.bindings_from(&e.name) {
                    let (destination, destination_type) = match &b.destination {
                        Destination::Queue(q) if durable_queue(q) => (q.clone(), "queue"),
                        Destination::Exchange(x)
                            if state.topology.exchange(x).is_some_and(|x| x.durable) =>
                        {
                            (x.clone(), "exchange")
                        }
                        _ => continue,
                    };
                    defs.bindings.push(BindingDef {
                        source: b.source,
                        destination,
                        destination_type: destination_type.to_owned(),
                        routing_key: b.routing_key,
                        arguments: b.arguments,
                    });
                }
            }
            serde_json::to_vec(&defs).map_err(AmqpError::internal)?
        };
        self.router()
            .put(DEFINITIONS, &vhost.name, Some(json))
            .await?;
        Ok(())
    }

    /// Writes a durable queue's ack state now.
    pub(crate) async fn persist_ack_state(&self, q: &QueueHandle) -> Result<(), AmqpError> {
        let state = {
            let mut inner = q.lock();
            inner.dirty = false;
            AckState::of(&inner.queue, inner.delivered_upto)
        };
        let json = serde_json::to_vec(&state).map_err(AmqpError::internal)?;
        self.router()
            .put(QUEUES, &queue_key(&q.vhost, q.name()), Some(json))
            .await?;
        Ok(())
    }

    pub(crate) async fn forget_ack_state(&self, q: &QueueHandle) -> Result<(), AmqpError> {
        self.router()
            .put(QUEUES, &queue_key(&q.vhost, q.name()), None)
            .await?;
        Ok(())
    }

    /// Rebuilds a vhost from its stored definitions and its durable queues' streams.
    pub(super) async fn restore_vhost(
        self: &Arc<Self>,
        vhost: &Arc<VHost>,
    ) -> Result<(), StartError> {
        let Some((_, json)) = self
            .router()
            .space(DEFINITIONS)
            .into_iter()
            .find(|(k, _)| k == &vhost.name)
        else {
            return Ok(());
        };
        let corrupt = |reason: String| StartError::Corrupt {
            vhost: vhost.name.clone(),
            reason,
        };
        let defs: Definitions =
            serde_json::from_slice(&json).map_err(|e| corrupt(e.to_string()))?;
        let ack_states: std::collections::HashMap<String, Vec<u8>> =
            self.router().space(QUEUES).into_iter().collect();
        for def in &defs.queues {
            let q = self
                .restore_queue(
                    vhost,
                    def,
                    ack_states.get(&queue_key(&vhost.name, &def.name)),
                )
                .await?;
            {
                let mut state = vhost.lock();
                state.topology.add_queue(&def.name);
                state.queues.insert(def.name.clone(), q.clone());
            }
            if let Some(ms) = q.spec.expires_ms {
                self.watch_expires(vhost, &q, ms);
            }
        }
        let mut state = vhost.lock();
        for def in defs.exchanges {
            let kind = ExchangeKind::parse(&def.kind).map_err(|e| corrupt(e.to_string()))?;
            let exchange = Exchange {
                name: def.name,
                kind,
                durable: true,
                auto_delete: def.auto_delete,
                internal: def.internal,
                arguments: def.arguments,
            };
            if let Err(e) = state.topology.declare_exchange(exchange, false) {
                tracing::warn!(vhost = vhost.name, error = %e, "stored exchange not restored");
            }
        }
        for def in defs.bindings {
            let destination = match def.destination_type.as_str() {
                "exchange" => Destination::Exchange(def.destination),
                _ => Destination::Queue(def.destination),
            };
            let binding = Binding {
                source: def.source,
                destination,
                routing_key: def.routing_key,
                arguments: def.arguments,
            };
            if let Err(e) = state.topology.bind(binding) {
                tracing::warn!(vhost = vhost.name, error = %e, "stored binding not restored");
            }
        }
        Ok(())
    }

    async fn restore_queue(
        &self,
        vhost: &Arc<VHost>,
        def: &QueueDef,
        ack_state: Option<&Vec<u8>>,
    ) -> Result<Arc<QueueHandle>, StartError> {
        let now = now_ms().max(0) as u64;
        let args = QueueArguments::from_table(&def.arguments).unwrap_or_default();
        let is_stream = matches!(
            def.arguments.inner().get("x-queue-type"),
            Some(amq_protocol::types::AMQPValue::LongString(s)) if s.as_bytes() == b"stream"
        );
        let backing = if is_stream {
            match StreamName::new(&def.name) {
                Ok(name) => Backing::StreamQueue(name),
                Err(_) => Backing::Memory,
            }
        } else {
            let stream = super::declare::durable_stream_name(&vhost.name, &def.name);
            Backing::Stream(TopicPartition::new(stream, 0))
        };
        let mut queue = Queue::new(&def.name, args);
        let mut delivered_upto = None;
        if let Backing::Stream(tp) = &backing {
            let state: AckState = ack_state
                .and_then(|j| serde_json::from_slice(j).ok())
                .unwrap_or_default();
            delivered_upto = state.delivered_upto;
            if self.router().stream(&tp.stream).is_some() {
                self.restore_messages(tp, &state, &mut queue, now).await?;
            }
        }
        let spec = QueueSpec {
            name: def.name.clone(),
            durable: true,
            exclusive_owner: None,
            auto_delete: def.auto_delete,
            arguments: def.arguments.clone(),
            expires_ms: super::declare::expires_argument(&def.arguments).unwrap_or(None),
            backing,
        };
        let handle = QueueHandle::new(&vhost.name, spec, queue, now);
        {
            let mut inner = handle.lock();
            inner.delivered_upto = delivered_upto;
            inner.dirty = true;
        }
        Ok(handle)
    }

    /// Holds again every persistent, unsettled message of the queue's stream.
    async fn restore_messages(
        &self,
        tp: &TopicPartition,
        state: &AckState,
        queue: &mut Queue,
        now: u64,
    ) -> Result<(), StartError> {
        let bounds = self.router().bounds(tp).await?;
        let mut from = state.floor.max(bounds.log_start);
        while from < bounds.high_watermark {
            let chunk = self.router().read(tp, from, RESTORE_READ_BYTES).await?;
            if chunk.batches.is_empty() {
                break;
            }
            let mut next = from;
            for bytes in chunk.batches {
                let Ok(batch) = RecordBatch::parse(bytes) else {
                    continue;
                };
                next = next.max(batch.last_offset().max(0) as u64 + 1);
                let Ok(records) = batch.records() else {
                    continue;
                };
                for r in records.iter().filter(|r| r.offset >= from) {
                    if state.is_settled(r.offset) {
                        continue;
                    }
                    let message = mapping::from_record(r);
                    if !mapping::is_persistent(&message.properties) {
                        continue;
                    }
                    let redelivered = state.delivered_upto.is_some_and(|d| r.offset <= d);
                    let published = r.timestamp_ms.max(0) as u64;
                    queue.restore(r.offset, message, published, redelivered, now);
                }
            }
            if next <= from {
                break;
            }
            from = next;
        }
        queue.set_next_offset(bounds.high_watermark);
        Ok(())
    }

    /// Writes changed ack states every second, trims streams now and then, and writes them
    /// all once more at shutdown, after the connections have requeued what they held.
    pub(super) async fn persist_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(PERSIST_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut pass = 0u32;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.cancel_token().cancelled() => break,
            }
            pass = pass.wrapping_add(1);
            self.persist_pass(pass.is_multiple_of(TRIM_EVERY)).await;
        }
        let gone = self.connections_gone.notified();
        if self
            .live_connections
            .load(std::sync::atomic::Ordering::Acquire)
            > 0
        {
            let _ = tokio::time::timeout(SHUTDOWN_WAIT, gone).await;
        }
        self.persist_pass(false).await;
    }

    async fn persist_pass(&self, trim: bool) {
        for vhost in self.vhosts.values() {
            let durable: Vec<Arc<QueueHandle>> = vhost
                .lock()
                .queues
                .values()
                .filter(|q| q.backing_partition().is_some())
                .cloned()
                .collect();
            for q in durable {
                let dirty = q.lock().dirty;
                if dirty && let Err(e) = self.persist_ack_state(&q).await {
                    tracing::warn!(queue = q.name(), error = %e, "cannot store ack state");
                }
                if trim && let Some(tp) = q.backing_partition() {
                    let floor = q.lock().queue.ack_floor();
                    if let Err(e) = self.router().delete_before(tp, floor).await {
                        tracing::debug!(queue = q.name(), error = %e, "cannot trim queue stream");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::Message;
    use amq_protocol::protocol::BasicProperties;
    use bytes::Bytes;

    fn queue_with_offsets(held: &[u64], next: u64) -> Queue {
        let mut q = Queue::new("q", QueueArguments::default());
        for &o in held {
            q.publish_at(
                o,
                Message::new("", "q", BasicProperties::default(), Bytes::new()),
                0,
            )
            .unwrap();
        }
        q.set_next_offset(next);
        q
    }

    #[test]
    fn an_empty_queue_is_settled_up_to_its_next_offset() {
        let state = AckState::of(&queue_with_offsets(&[], 7), None);
        assert_eq!(state.floor, 7);
        assert!(state.settled.is_empty());
        assert!(state.is_settled(6) && !state.is_settled(7));
    }

    #[test]
    fn gaps_between_held_offsets_are_settled_ranges() {
        let state = AckState::of(&queue_with_offsets(&[3, 4, 8], 12), Some(8));
        assert_eq!(state.floor, 3);
        assert_eq!(state.settled, vec![(5, 8), (9, 12)]);
        assert!(!state.is_settled(3) && !state.is_settled(4) && !state.is_settled(8));
        assert!(state.is_settled(5) && state.is_settled(7) && state.is_settled(11));
        assert!(
            !state.is_settled(12),
            "appended after the write: not settled"
        );
    }

    #[test]
    fn ack_state_round_trips_through_json() {
        let state = AckState {
            floor: 2,
            settled: vec![(4, 6)],
            delivered_upto: Some(5),
        };
        let json = serde_json::to_vec(&state).unwrap();
        assert_eq!(serde_json::from_slice::<AckState>(&json).unwrap(), state);
    }
}
