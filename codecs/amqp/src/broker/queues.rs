//! A queue as the broker shares it: the pure [`Queue`] state machine behind a lock, the
//! consumers' channels it delivers to, and what the broker needs around it (ownership,
//! auto-delete, expiry timers, the stream that backs a durable queue).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use amq_protocol::types::FieldTable;
use switchboard_model::{Offset, TopicPartition};

use super::flow::FlowWaiter;
use super::lock;
use super::outbox::{AckTarget, ChannelShared, OutgoingKind};
use crate::ReplyCode;
use crate::error::AmqpError;
use crate::queue::{ConsumerId, DeadLetter, Queue};
use crate::settings::FlowSettings;

/// What kind of queue, and where its messages are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backing {
    /// Transient: messages live in memory only.
    Memory,
    /// Durable classic queue: every message is also appended to this stream (one partition);
    /// the queue's ids are its offsets, so persistent messages can be restored at start.
    Stream(TopicPartition),
    /// RabbitMQ stream queue (`x-queue-type: stream`): the stream *is* the queue; consumers
    /// read it from a position of their choice and acks only return credit.
    StreamQueue(switchboard_model::StreamName),
}

/// How a queue was declared, fixed for its life.
#[derive(Debug, Clone)]
pub struct QueueSpec {
    pub name: String,
    pub durable: bool,
    /// Connection that owns an exclusive queue.
    pub exclusive_owner: Option<u64>,
    pub auto_delete: bool,
    /// The declare's arguments, kept for equivalence checks and for the definitions.
    pub arguments: FieldTable,
    /// `x-expires`: deleted after this many ms unused.
    pub expires_ms: Option<u64>,
    pub backing: Backing,
}

/// A consumer's link to its channel.
pub(crate) struct ConsumerLink {
    pub channel: Arc<ChannelShared>,
    pub tag: Arc<str>,
    pub exclusive: bool,
    pub no_ack: bool,
}

pub(crate) struct QueueInner {
    pub queue: Queue,
    pub consumers: HashMap<ConsumerId, ConsumerLink>,
    /// Auto-delete applies only to a queue that has had a consumer (RabbitMQ).
    pub had_consumer: bool,
    /// Last declare, `basic.get` or consumer change, for `x-expires`.
    pub last_used: u64,
    /// Deadline of the armed TTL timer, so a publish does not arm one per message.
    pub expiry_armed: Option<u64>,
    /// Settlement changed since the ack state was last written (durable queues).
    pub dirty: bool,
    /// Highest offset ever delivered: after a restart, held messages at or below it are
    /// marked redelivered.
    pub delivered_upto: Option<Offset>,
    /// Connections paused by this queue's backlog (flow control), to wake when it drains.
    pub flow_waiters: Vec<FlowWaiter>,
}

pub struct QueueHandle {
    pub spec: QueueSpec,
    pub vhost: String,
    inner: Mutex<QueueInner>,
    /// Held across "append to the stream, then publish at that offset" so the queue sees
    /// offsets in the order the stream assigned them.
    pub(crate) append_lock: tokio::sync::Mutex<()>,
    deleted: AtomicBool,
}

/// What a dispatch left to do: dead letters to republish and a TTL deadline to arm.
pub(crate) struct Dispatched {
    pub dead_letters: Vec<DeadLetter>,
    pub next_expiry: Option<u64>,
}

impl QueueHandle {
    pub(crate) fn new(vhost: &str, spec: QueueSpec, queue: Queue, now: u64) -> Arc<Self> {
        Arc::new(Self {
            spec,
            vhost: vhost.to_owned(),
            inner: Mutex::new(QueueInner {
                queue,
                consumers: HashMap::new(),
                had_consumer: false,
                last_used: now,
                expiry_armed: None,
                dirty: false,
                delivered_upto: None,
                flow_waiters: Vec::new(),
            }),
            append_lock: tokio::sync::Mutex::new(()),
            deleted: AtomicBool::new(false),
        })
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, QueueInner> {
        lock(&self.inner)
    }

    pub fn is_stream_queue(&self) -> bool {
        matches!(self.spec.backing, Backing::StreamQueue(_))
    }

    /// The stream partition a durable classic queue appends to.
    pub fn backing_partition(&self) -> Option<&TopicPartition> {
        match &self.spec.backing {
            Backing::Stream(tp) => Some(tp),
            _ => None,
        }
    }

    pub fn message_count(&self) -> u32 {
        u32::try_from(self.lock().queue.message_count()).unwrap_or(u32::MAX)
    }

    pub fn consumer_count(&self) -> u32 {
        u32::try_from(self.lock().consumers.len()).unwrap_or(u32::MAX)
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    pub(crate) fn mark_deleted(&self) {
        self.deleted.store(true, Ordering::Release);
    }

    /// Whether `conn` may use the queue: an exclusive queue belongs to one connection and
    /// is 405 RESOURCE_LOCKED to every other (RabbitMQ's wording).
    pub fn check_owner(&self, conn: u64) -> Result<(), AmqpError> {
        match self.spec.exclusive_owner {
            Some(owner) if owner != conn => Err(AmqpError::channel(
                ReplyCode::ResourceLocked,
                format!(
                    "cannot obtain exclusive access to locked queue '{}' in vhost '{}'. It could \
                     be originally declared on another connection or the exclusive property \
                     value does not match that of the original declaration.",
                    self.spec.name, self.vhost
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Attaches a consumer. `exclusive` asks to be the only one; either way an existing
    /// exclusive consumer keeps everyone else out (403 ACCESS_REFUSED, as RabbitMQ).
    pub(crate) fn add_consumer(
        &self,
        consumer: crate::queue::Consumer,
        link: ConsumerLink,
        now: u64,
    ) -> Result<(), AmqpError> {
        let mut inner = self.lock();
        if inner.consumers.values().any(|c| c.exclusive) {
            return Err(AmqpError::channel(
                ReplyCode::AccessRefused,
                format!(
                    "queue '{}' in vhost '{}' in exclusive use",
                    self.spec.name, self.vhost
                ),
            ));
        }
        if link.exclusive && !inner.consumers.is_empty() {
            return Err(AmqpError::channel(
                ReplyCode::AccessRefused,
                format!(
                    "queue '{}' in vhost '{}' in use by other consumers",
                    self.spec.name, self.vhost
                ),
            ));
        }
        // Stream queues deliver outside the state machine; only the link is kept.
        if !self.is_stream_queue() {
            inner.queue.add_consumer(consumer.clone());
        }
        inner.consumers.insert(consumer.id, link);
        inner.had_consumer = true;
        inner.last_used = now;
        Ok(())
    }

    /// Detaches a consumer. Returns whether the queue is now due for auto-delete.
    pub(crate) fn remove_consumer(
        &self,
        id: ConsumerId,
        on_cancel: crate::queue::OnCancel,
        now: u64,
    ) -> bool {
        let mut inner = self.lock();
        if inner.consumers.remove(&id).is_none() {
            return false;
        }
        inner.queue.cancel_consumer(id, on_cancel, now);
        inner.last_used = now;
        if inner.consumers.is_empty() {
            // Nothing drains the queue now: its paused publishers go on.
            inner.wake_publishers();
        }
        self.spec.auto_delete && inner.had_consumer && inner.consumers.is_empty()
    }

    /// Delivers what the consumers and their channels can take now, and wakes the publishers
    /// paused by the backlog once it is small enough (`flow`).
    pub(crate) fn dispatch(self: &Arc<Self>, now: u64, flow: &FlowSettings) -> Dispatched {
        let mut guard = self.lock();
        let inner = &mut *guard;
        if self.is_deleted() || self.is_stream_queue() {
            return Dispatched {
                dead_letters: Vec::new(),
                next_expiry: None,
            };
        }
        let held_before = inner.queue.message_count() + inner.queue.unacked_count();
        let consumers = &inner.consumers;
        let mut alloc = |c: &crate::queue::Consumer| {
            let link = consumers.get(&c.id)?;
            link.channel.alloc_tag(!c.no_ack)
        };
        while let Some(d) = inner.queue.next_delivery(now, &mut alloc) {
            let Some(link) = d.consumer.and_then(|id| consumers.get(&id)) else {
                continue;
            };
            inner.delivered_upto = inner.delivered_upto.max(Some(d.offset));
            link.channel.push(OutgoingKind::Deliver {
                consumer_tag: link.tag.clone(),
                delivery_tag: d.delivery_tag,
                redelivered: d.redelivered,
                message: d.message,
                ack: (!link.no_ack).then(|| AckTarget::Queue(self.clone())),
                counted: !link.no_ack,
                stream_offset: None,
            });
        }
        inner.wake_publishers_if_drained(flow);
        let dead_letters = inner.queue.take_dead_letters();
        // Expired (with or without a dead-letter exchange) or no-ack delivered: settled.
        if inner.queue.message_count() + inner.queue.unacked_count() < held_before {
            inner.dirty = true;
        }
        let next_expiry = inner.queue.next_expiry();
        let next_expiry = match (next_expiry, inner.expiry_armed) {
            (Some(at), Some(armed)) if armed <= at => None,
            (Some(at), _) => {
                inner.expiry_armed = Some(at);
                Some(at)
            }
            (None, _) => None,
        };
        Dispatched {
            dead_letters,
            next_expiry,
        }
    }

    /// Server-side cancel of every consumer (the queue is being deleted): their channels get
    /// `basic.cancel` if the client understands it.
    pub(crate) fn cancel_all_consumers(&self) {
        let links: Vec<ConsumerLink> = {
            let mut inner = self.lock();
            inner.wake_publishers();
            inner.consumers.drain().map(|(_, l)| l).collect()
        };
        for link in links {
            link.channel.push(OutgoingKind::Cancel {
                consumer_tag: link.tag,
            });
        }
    }
}
