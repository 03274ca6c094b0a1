//! Stream queues (RabbitMQ's `x-queue-type: stream`): the queue is a stream of the same name —
//! possibly a Kafka topic — and every consumer reads it from a position of its own
//! (`x-stream-offset`), following it with `Router::tail` (woken by appends). Acks only return prefetch
//! credit; nothing is removed. This is the bridge that lets Kafka producers feed AMQP
//! consumers and AMQP publishers feed Kafka consumers.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use amq_protocol::types::{AMQPValue, FieldTable};
use switchboard_model::{
    BatchBuilder, Offset, StreamName, TopicPartition, records_from, stable_hash,
};
use switchboard_router::now_ms;
use switchboard_storage::Durability;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::AmqpBroker;
use super::lock;
use super::outbox::{AckTarget, ChannelShared, OutgoingKind};
use super::queues::{Backing, QueueHandle};
use crate::ReplyCode;
use crate::error::AmqpError;
use crate::mapping;
use crate::queue::{Message, PublishOutcome};

/// Pause while the channel is paused by `channel.flow`.
const RETRY_AFTER: std::time::Duration = std::time::Duration::from_millis(200);

/// The prefetch window of one stream consumer: a permit per delivery it may have unacked.
pub struct StreamCredit {
    permits: Semaphore,
}

impl StreamCredit {
    /// An ack (or nack, or reject: a stream does not requeue) gives a permit back.
    pub fn release(&self, n: usize) {
        self.permits.add_permits(n);
    }
}

/// A running stream consumer, owned by its channel.
pub struct StreamConsumer {
    cancel: CancellationToken,
    /// Held while pushing a delivery and while stopping, so no delivery is pushed after
    /// [`StreamConsumer::stop`] returns (basic.cancel-ok is the last word).
    live: Arc<Mutex<bool>>,
    pub credit: Arc<StreamCredit>,
}

impl StreamConsumer {
    pub fn stop(&self) {
        *lock(&self.live) = false;
        self.cancel.cancel();
    }
}

/// Where a consumer starts, from `x-stream-offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StartAt {
    First,
    Last,
    Next,
    Offset(Offset),
    /// Milliseconds since the epoch.
    Timestamp(i64),
}

fn start_at(arguments: &FieldTable) -> Result<StartAt, AmqpError> {
    use AMQPValue as V;
    let Some(value) = arguments.inner().get("x-stream-offset") else {
        return Ok(StartAt::Next);
    };
    let text = |s: &str| match s {
        "first" => Ok(StartAt::First),
        "last" => Ok(StartAt::Last),
        "next" => Ok(StartAt::Next),
        other => Err(AmqpError::channel(
            ReplyCode::PreconditionFailed,
            format!(
                "invalid x-stream-offset '{other}': use first, last, next, an offset or a timestamp"
            ),
        )),
    };
    let number = |n: i128| Ok(StartAt::Offset(u64::try_from(n.max(0)).unwrap_or(u64::MAX)));
    match value {
        V::LongString(s) => text(&String::from_utf8_lossy(s.as_bytes())),
        V::ShortString(s) => text(s.as_str()),
        V::ShortShortInt(n) => number((*n).into()),
        V::ShortShortUInt(n) => number((*n).into()),
        V::ShortInt(n) => number((*n).into()),
        V::ShortUInt(n) => number((*n).into()),
        V::LongInt(n) => number((*n).into()),
        V::LongUInt(n) => number((*n).into()),
        V::LongLongInt(n) => number((*n).into()),
        // AMQP timestamps are seconds.
        V::Timestamp(secs) => Ok(StartAt::Timestamp(
            i64::try_from(*secs)
                .unwrap_or(i64::MAX)
                .saturating_mul(1000),
        )),
        other => Err(AmqpError::channel(
            ReplyCode::PreconditionFailed,
            format!("invalid x-stream-offset {other:?}"),
        )),
    }
}

impl AmqpBroker {
    /// Appends a message to a stream queue: partition 0, or for a multi-partition stream (a
    /// Kafka topic) the partition of its routing key, so one key keeps its order.
    pub(super) async fn append_to_stream_queue(
        &self,
        q: &QueueHandle,
        message: &Message,
        unsynced: &mut Vec<TopicPartition>,
    ) -> Result<PublishOutcome, AmqpError> {
        let Backing::StreamQueue(stream) = &q.spec.backing else {
            return Err(AmqpError::internal("not a stream queue"));
        };
        let partitions = self
            .router()
            .stream(stream)
            .map_or(1, |m| m.partitions.max(1));
        let p = if partitions == 1 {
            0
        } else {
            (stable_hash(message.routing_key.as_bytes()) % u64::from(partitions)) as u32
        };
        let tp = TopicPartition::new(stream.clone(), p);
        let mut batch = BatchBuilder::new();
        mapping::write_record(message, now_ms(), &mut batch);
        let Some(batch) = batch.build() else {
            return Err(AmqpError::internal("cannot encode a record batch"));
        };
        let appended = self
            .router()
            .append(&tp, vec![batch], Durability::Buffered)
            .await?;
        if mapping::is_persistent(&message.properties) {
            unsynced.push(tp);
        }
        Ok(PublishOutcome::Enqueued(appended.base_offset))
    }

    /// Starts a consumer on a stream queue: one reader per partition, sharing the consumer's
    /// prefetch window. RabbitMQ requires a prefetch for stream consumers, and acks.
    pub(crate) async fn start_stream_consumer(
        self: &Arc<Self>,
        q: &Arc<QueueHandle>,
        channel: Arc<ChannelShared>,
        tag: Arc<str>,
        prefetch: u16,
        arguments: &FieldTable,
    ) -> Result<StreamConsumer, AmqpError> {
        let Backing::StreamQueue(stream) = &q.spec.backing else {
            return Err(AmqpError::internal("not a stream queue"));
        };
        if prefetch == 0 {
            return Err(AmqpError::channel(
                ReplyCode::PreconditionFailed,
                "consumer prefetch count is not set for stream queue",
            ));
        }
        let start = start_at(arguments)?;
        let partitions = self.router().stream(stream).map_or(0, |m| m.partitions);
        if partitions == 0 {
            return Err(AmqpError::channel(
                ReplyCode::NotFound,
                format!("stream '{stream}' no longer exists"),
            ));
        }
        let consumer = StreamConsumer {
            cancel: self.cancel_token().child_token(),
            live: Arc::new(Mutex::new(true)),
            credit: Arc::new(StreamCredit {
                permits: Semaphore::new(usize::from(prefetch)),
            }),
        };
        for p in 0..partitions {
            let tp = TopicPartition::new(stream.clone(), p);
            let from = self.start_offset(&tp, start).await?;
            let reader = Reader {
                broker: self.clone(),
                tp,
                channel: channel.clone(),
                tag: tag.clone(),
                credit: consumer.credit.clone(),
                live: consumer.live.clone(),
                cancel: consumer.cancel.clone(),
            };
            self.tracker().spawn(reader.run(from));
        }
        Ok(consumer)
    }

    async fn start_offset(&self, tp: &TopicPartition, start: StartAt) -> Result<Offset, AmqpError> {
        let bounds = self.router().bounds(tp).await?;
        Ok(match start {
            StartAt::First => bounds.log_start,
            StartAt::Next => bounds.high_watermark,
            StartAt::Last => bounds
                .high_watermark
                .saturating_sub(1)
                .max(bounds.log_start),
            StartAt::Offset(o) => o.clamp(bounds.log_start, bounds.high_watermark),
            StartAt::Timestamp(ms) => match self.router().offset_for_timestamp(tp, ms).await? {
                Some((offset, _)) => offset,
                None => bounds.high_watermark,
            },
        })
    }
}

/// The reader of one partition for one consumer.
struct Reader {
    broker: Arc<AmqpBroker>,
    tp: TopicPartition,
    channel: Arc<ChannelShared>,
    tag: Arc<str>,
    credit: Arc<StreamCredit>,
    live: Arc<Mutex<bool>>,
    cancel: CancellationToken,
}

impl Reader {
    async fn run(self, from: Offset) {
        let router = self.broker.router().clone();
        let handle = |from: Offset, batches: Vec<bytes::Bytes>| {
            let reader = &self;
            async move {
                match reader.deliver(from, batches).await {
                    Some(next) => next,
                    None => {
                        // The consumer is gone: stop following.
                        reader.cancel.cancel();
                        from
                    }
                }
            }
        };
        router
            .tail(
                &self.tp,
                Arc::new(AtomicU64::new(from)),
                |_| true,
                &self.cancel,
                handle,
            )
            .await;
    }

    async fn pause(&self) {
        tokio::select! {
            _ = tokio::time::sleep(RETRY_AFTER) => {}
            _ = self.cancel.cancelled() => {}
        }
    }

    /// Delivers the records at or after `from`, each when credit allows. Returns the next
    /// position, or `None` when the consumer is gone.
    async fn deliver(&self, from: Offset, batches: Vec<bytes::Bytes>) -> Option<Offset> {
        let followed = records_from(batches, from);
        if followed.unreadable > 0 {
            tracing::warn!(partition = %self.tp, from, batches = followed.unreadable,
                "stream consumer skips batches it cannot read");
        }
        {
            for r in &followed.records {
                tokio::select! {
                    permit = self.credit.permits.acquire() => match permit {
                        Ok(p) => p.forget(),
                        Err(_) => return None,
                    },
                    _ = self.cancel.cancelled() => return None,
                }
                let mut message = mapping::from_record(r);
                let mut headers = message.properties.headers().clone().unwrap_or_default();
                headers.insert(
                    "x-stream-offset".into(),
                    AMQPValue::LongLongInt(i64::try_from(r.offset).unwrap_or(i64::MAX)),
                );
                message.properties = message.properties.clone().with_headers(headers);
                let mut message = Some(message);
                loop {
                    // The guard lives in this block only: it must not be held across a pause.
                    let pushed = {
                        let live = lock(&self.live);
                        if !*live || !self.channel.is_open() {
                            return None;
                        }
                        match self.channel.alloc_tag(false) {
                            Some(tag) => {
                                self.channel.push(OutgoingKind::Deliver {
                                    consumer_tag: self.tag.clone(),
                                    delivery_tag: tag,
                                    redelivered: false,
                                    message: Arc::new(message.take()?),
                                    ack: Some(AckTarget::Stream(self.credit.clone())),
                                    counted: false,
                                    stream_offset: Some(r.offset),
                                });
                                true
                            }
                            None => false,
                        }
                    };
                    if pushed {
                        break;
                    }
                    // Paused by channel.flow: a rare, client-requested state.
                    self.pause().await;
                    if self.cancel.is_cancelled() {
                        return None;
                    }
                }
            }
        }
        Some(followed.next)
    }
}

/// Whether `name` may name a stream queue (it becomes a stream name).
pub fn valid_stream_name(name: &str) -> bool {
    StreamName::new(name).is_ok()
}
