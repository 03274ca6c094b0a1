//! The state machine of one queue. Time is a parameter (`now`, milliseconds since the Unix
//! epoch), so every behaviour, TTL included, is testable without a clock.
//!
//! Messages are kept by offset. A ready message waits in `ready` (ordered by offset, so a
//! requeued message returns to its original position, as RabbitMQ's classic queues do); a
//! delivered one is indexed by (channel, delivery tag) until it is acked, rejected or
//! requeued. Dead-lettered messages collect in an outbox the caller drains with
//! [`Queue::take_dead_letters`] and republishes through the router.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::args::{Overflow, QueueArguments};
use super::error::QueueError;
use super::message::{
    ChannelKey, ConsumerId, DeadLetter, DeadLetterTarget, DeathReason, Delivery, Message, Offset,
    dead_letter,
};

/// A consumer attached to the queue (`basic.consume`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumer {
    pub id: ConsumerId,
    pub channel: ChannelKey,
    pub tag: String,
    /// Most unacknowledged deliveries (`basic.qos` prefetch-count per consumer); 0 = no limit.
    pub prefetch: u16,
    /// Deliveries are settled when sent (`no-ack`); prefetch does not apply.
    pub no_ack: bool,
    unacked: u32,
}

impl Consumer {
    pub fn new(
        id: ConsumerId,
        channel: ChannelKey,
        tag: &str,
        prefetch: u16,
        no_ack: bool,
    ) -> Self {
        Self {
            id,
            channel,
            tag: tag.to_owned(),
            prefetch,
            no_ack,
            unacked: 0,
        }
    }

    /// Unacknowledged deliveries it holds.
    pub fn unacked(&self) -> u32 {
        self.unacked
    }

    /// Whether its prefetch window has room for one more delivery.
    pub fn has_credit(&self) -> bool {
        self.no_ack || self.prefetch == 0 || self.unacked < u32::from(self.prefetch)
    }
}

/// What `basic.cancel` does with the consumer's unacknowledged messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnCancel {
    /// Keep them with the channel: the client may still ack them (spec and RabbitMQ behaviour
    /// for `basic.cancel`).
    KeepUnacked,
    /// Return them to ready, marked redelivered (the consumer's channel or connection is gone).
    Requeue,
}

/// Result of a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishOutcome {
    /// Stored at this offset.
    Enqueued(Offset),
    /// Refused by `x-overflow = reject-publish(-dlx)`: nack the publisher.
    Rejected,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Ready,
    Unacked {
        consumer: Option<ConsumerId>,
        channel: ChannelKey,
        tag: u64,
    },
}

#[derive(Debug, Clone)]
struct Entry {
    message: Arc<Message>,
    expires_at: Option<u64>,
    redelivered: bool,
    delivery_count: u32,
    state: State,
}

/// One queue's messages, consumers and deliveries.
#[derive(Debug, Clone)]
pub struct Queue {
    name: String,
    args: QueueArguments,
    next_offset: Offset,
    entries: BTreeMap<Offset, Entry>,
    ready: BTreeSet<Offset>,
    ready_bytes: u64,
    unacked: BTreeMap<(ChannelKey, u64), Offset>,
    consumers: Vec<Consumer>,
    /// Index of the consumer to try first next time (round-robin).
    cursor: usize,
    dead_letters: Vec<DeadLetter>,
}

impl Queue {
    pub fn new(name: &str, args: QueueArguments) -> Self {
        Self {
            name: name.to_owned(),
            args,
            next_offset: 0,
            entries: BTreeMap::new(),
            ready: BTreeSet::new(),
            ready_bytes: 0,
            unacked: BTreeMap::new(),
            consumers: Vec::new(),
            cursor: 0,
            dead_letters: Vec::new(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn arguments(&self) -> &QueueArguments {
        &self.args
    }

    /// Ready messages (`queue.declare-ok`'s message-count).
    pub fn message_count(&self) -> usize {
        self.ready.len()
    }

    /// Body bytes of the ready messages.
    pub fn ready_bytes(&self) -> u64 {
        self.ready_bytes
    }

    /// Delivered, not yet acknowledged messages.
    pub fn unacked_count(&self) -> usize {
        self.unacked.len()
    }

    pub fn consumer_count(&self) -> usize {
        self.consumers.len()
    }

    pub fn consumers(&self) -> &[Consumer] {
        &self.consumers
    }

    /// The offset the next publish gets.
    pub fn next_offset(&self) -> Offset {
        self.next_offset
    }

    /// The lowest offset still held (ready or unacked): everything below it is settled, so a
    /// storage stream may be trimmed there.
    pub fn ack_floor(&self) -> Offset {
        self.entries
            .keys()
            .next()
            .copied()
            .unwrap_or(self.next_offset)
    }

    /// Drains the messages dead-lettered so far, to republish to their exchanges.
    pub fn take_dead_letters(&mut self) -> Vec<DeadLetter> {
        std::mem::take(&mut self.dead_letters)
    }

    /// Stores a published message at the next offset of its own. Its TTL is the smaller of
    /// `x-message-ttl` and its `expiration` property; a malformed `expiration` is 406. When
    /// the queue is full, `x-overflow` decides: drop (or dead-letter) the oldest ready
    /// messages, or refuse this one.
    pub fn publish(&mut self, message: Message, now: u64) -> Result<PublishOutcome, QueueError> {
        self.publish_at(self.next_offset, message, now)
    }

    /// Stores a published message at `offset`, which the caller chose: the offset of the record
    /// in the stream backing a durable queue, so that the queue's ids are the stream's offsets.
    /// Offsets must grow with each call (the caller appends and publishes under one lock);
    /// offsets skipped (refused publishes, other records) are simply never held.
    pub fn publish_at(
        &mut self,
        offset: Offset,
        message: Message,
        now: u64,
    ) -> Result<PublishOutcome, QueueError> {
        let ttl = self.ttl_of(&message)?;
        let size = message.body.len() as u64;
        if self.rejects_publish(size) {
            if self.args.overflow == Overflow::RejectPublishDlx {
                self.dead_letter_message(&message, DeathReason::MaxLen, now);
            }
            return Ok(PublishOutcome::Rejected);
        }
        self.next_offset = self.next_offset.max(offset.saturating_add(1));
        self.entries.insert(
            offset,
            Entry {
                message: Arc::new(message),
                expires_at: ttl.map(|ttl| now.saturating_add(ttl)),
                redelivered: false,
                delivery_count: 0,
                state: State::Ready,
            },
        );
        self.mark_ready(offset);
        self.drop_head_over_limits(now);
        Ok(PublishOutcome::Enqueued(offset))
    }

    /// Puts back a message read from the queue's stream at start: `published_at` (the record's
    /// timestamp) is when its TTL started, and `redelivered` says whether it may have been
    /// delivered before the restart. Limits are applied as after a publish.
    pub fn restore(
        &mut self,
        offset: Offset,
        message: Message,
        published_at: u64,
        redelivered: bool,
        now: u64,
    ) {
        let ttl = self.ttl_of(&message).ok().flatten();
        self.next_offset = self.next_offset.max(offset.saturating_add(1));
        self.entries.insert(
            offset,
            Entry {
                message: Arc::new(message),
                expires_at: ttl.map(|ttl| published_at.saturating_add(ttl)),
                redelivered,
                delivery_count: 0,
                state: State::Ready,
            },
        );
        self.mark_ready(offset);
        self.drop_head_over_limits(now);
    }

    /// Raises the offset the next [`Queue::publish`] gets (a durable queue starts at its
    /// stream's high watermark). Never lowers it.
    pub fn set_next_offset(&mut self, offset: Offset) {
        self.next_offset = self.next_offset.max(offset);
    }

    /// The smaller of `x-message-ttl` and the message's `expiration`, in ms.
    fn ttl_of(&self, message: &Message) -> Result<Option<u64>, QueueError> {
        let ttl = match message.properties.expiration() {
            Some(exp) => Some(parse_expiration(exp.as_str())?),
            None => None,
        };
        Ok(match (ttl, self.args.message_ttl) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    /// Whether `x-max-length` or `x-max-length-bytes` applies.
    pub fn limits_length(&self) -> bool {
        self.args.max_length.is_some() || self.args.max_length_bytes.is_some()
    }

    /// Whether a publish of `size` body bytes would be refused now (`x-overflow` =
    /// `reject-publish(-dlx)` and the queue full), so that a durable queue can refuse before
    /// appending to its stream.
    pub fn rejects_publish(&self, size: u64) -> bool {
        self.args.overflow != Overflow::DropHead && self.would_overflow(size)
    }

    /// When the message at the head expires, if it has a TTL: the moment to run
    /// [`Queue::expire`] (it expires strictly after this instant).
    pub fn next_expiry(&self) -> Option<u64> {
        let head = self.ready.first()?;
        self.entries.get(head)?.expires_at
    }

    /// Offsets held (ready or unacknowledged), in order: what a restart must restore.
    pub fn held_offsets(&self) -> impl Iterator<Item = Offset> + '_ {
        self.entries.keys().copied()
    }

    fn would_overflow(&self, incoming: u64) -> bool {
        self.args
            .max_length
            .is_some_and(|max| self.ready.len() as u64 >= max)
            || self
                .args
                .max_length_bytes
                .is_some_and(|max| self.ready_bytes.saturating_add(incoming) > max)
    }

    fn over_limits(&self) -> bool {
        self.args
            .max_length
            .is_some_and(|max| self.ready.len() as u64 > max)
            || self
                .args
                .max_length_bytes
                .is_some_and(|max| self.ready_bytes > max)
    }

    /// With `drop-head`, trims the oldest ready messages until the limits hold. Run after a
    /// publish and after requeues, which can also overfill the queue (RabbitMQ's
    /// `maybe_drop_head` runs in both places). `reject-publish` queues refuse only publishes,
    /// so requeues may leave them over the limit until consumers catch up.
    fn drop_head_over_limits(&mut self, now: u64) {
        if self.args.overflow != Overflow::DropHead {
            return;
        }
        while self.over_limits() {
            let Some(head) = self.ready.first().copied() else {
                break;
            };
            self.remove_ready(head, Some(DeathReason::MaxLen), now);
        }
    }

    /// Drops the expired messages at the head of the queue (dead-lettering them, reason
    /// `expired`, when the queue has a dead-letter exchange). Like RabbitMQ, only the head is
    /// examined: a message behind one that lives longer waits until it reaches the head.
    /// A message lives through `now == publish time + ttl` and expires after, so that a TTL of
    /// 0 still reaches a consumer waiting at the moment of publish. Returns how many expired.
    pub fn expire(&mut self, now: u64) -> usize {
        let mut expired = 0;
        while let Some(head) = self.ready.first().copied() {
            let is_expired = self
                .entries
                .get(&head)
                .and_then(|e| e.expires_at)
                .is_some_and(|at| now > at);
            if !is_expired {
                break;
            }
            self.remove_ready(head, Some(DeathReason::Expired), now);
            expired += 1;
        }
        expired
    }

    /// Attaches a consumer. Returns false (and changes nothing) if its id is already attached.
    pub fn add_consumer(&mut self, consumer: Consumer) -> bool {
        if self.consumers.iter().any(|c| c.id == consumer.id) {
            return false;
        }
        self.consumers.push(consumer);
        true
    }

    /// Detaches a consumer; its unacknowledged messages stay with the channel or are requeued.
    /// Returns it, or `None` if it was not attached.
    pub fn cancel_consumer(
        &mut self,
        id: ConsumerId,
        on_cancel: OnCancel,
        now: u64,
    ) -> Option<Consumer> {
        let at = self.consumers.iter().position(|c| c.id == id)?;
        let consumer = self.consumers.remove(at);
        if at < self.cursor {
            self.cursor -= 1;
        }
        let held: Vec<((ChannelKey, u64), Offset)> = self
            .unacked
            .iter()
            .filter(|(_, offset)| {
                self.entries.get(offset).is_some_and(
                    |e| matches!(e.state, State::Unacked { consumer: Some(c), .. } if c == id),
                )
            })
            .map(|(key, offset)| (*key, *offset))
            .collect();
        match on_cancel {
            OnCancel::Requeue => {
                for (key, _) in held {
                    self.requeue(key);
                }
                self.drop_head_over_limits(now);
            }
            OnCancel::KeepUnacked => {
                // The channel keeps them; they no longer count against any consumer's
                // prefetch, even one that later reuses the id.
                for (_, offset) in held {
                    if let Some(Entry {
                        state: State::Unacked { consumer, .. },
                        ..
                    }) = self.entries.get_mut(&offset)
                    {
                        *consumer = None;
                    }
                }
            }
        }
        Some(consumer)
    }

    /// The channel closed: its consumers go and everything it held returns to ready,
    /// redelivered. Returns how many messages were requeued.
    pub fn close_channel(&mut self, channel: ChannelKey, now: u64) -> usize {
        let ids: Vec<ConsumerId> = self
            .consumers
            .iter()
            .filter(|c| c.channel == channel)
            .map(|c| c.id)
            .collect();
        for id in ids {
            self.cancel_consumer(id, OnCancel::KeepUnacked, now);
        }
        self.recover(channel, now)
    }

    /// `basic.recover requeue=true`: everything the channel holds returns to ready,
    /// redelivered. Returns how many.
    pub fn recover(&mut self, channel: ChannelKey, now: u64) -> usize {
        let keys: Vec<(ChannelKey, u64)> = self
            .unacked
            .range((channel, 0)..=(channel, u64::MAX))
            .map(|(key, _)| *key)
            .collect();
        for key in &keys {
            self.requeue(*key);
        }
        self.drop_head_over_limits(now);
        keys.len()
    }

    /// Hands the head message to the next consumer in round-robin order that can take it:
    /// its prefetch has room, and `delivery_tag` — the tag allocator of the consumer's channel,
    /// which returns `None` when the channel itself has no credit (global `basic.qos`,
    /// `channel.flow`) — gives it a tag. The allocator sees the whole consumer, so that a
    /// no-ack consumer is not held back by its channel's prefetch. Expired messages at the head
    /// are dropped first. `None` when nothing is ready or no consumer can take more.
    pub fn next_delivery(
        &mut self,
        now: u64,
        delivery_tag: &mut dyn FnMut(&Consumer) -> Option<u64>,
    ) -> Option<Delivery> {
        self.expire(now);
        let head = self.ready.first().copied()?;
        let n = self.consumers.len();
        for step in 0..n {
            let at = (self.cursor + step) % n;
            let consumer = &self.consumers[at];
            if !consumer.has_credit() {
                continue;
            }
            let Some(tag) = delivery_tag(consumer) else {
                continue;
            };
            self.cursor = (at + 1) % n;
            let consumer = &mut self.consumers[at];
            let (id, channel, no_ack) = (consumer.id, consumer.channel, consumer.no_ack);
            if !no_ack {
                consumer.unacked += 1;
            }
            return self.deliver(head, Some(id), channel, tag, no_ack);
        }
        None
    }

    /// Delivers as much as consumers and channels can take now.
    pub fn deliver_all(
        &mut self,
        now: u64,
        delivery_tag: &mut dyn FnMut(&Consumer) -> Option<u64>,
    ) -> Vec<Delivery> {
        let mut out = Vec::new();
        while let Some(delivery) = self.next_delivery(now, delivery_tag) {
            out.push(delivery);
        }
        out
    }

    /// `basic.get`: the head message, outside any consumer and prefetch. The tag is only
    /// allocated when there is a message.
    pub fn get(
        &mut self,
        channel: ChannelKey,
        no_ack: bool,
        now: u64,
        delivery_tag: impl FnOnce() -> u64,
    ) -> Option<Delivery> {
        // A `get` is not a consumer waiting at the moment of publish: a message whose time is
        // up now is expired for it (RabbitMQ: a TTL of 0 only reaches a waiting consumer).
        self.expire(now.saturating_add(1));
        let head = self.ready.first().copied()?;
        self.deliver(head, None, channel, delivery_tag(), no_ack)
    }

    fn deliver(
        &mut self,
        offset: Offset,
        consumer: Option<ConsumerId>,
        channel: ChannelKey,
        tag: u64,
        no_ack: bool,
    ) -> Option<Delivery> {
        self.unmark_ready(offset);
        let message_count = u32::try_from(self.ready.len()).unwrap_or(u32::MAX);
        let entry = if no_ack {
            self.entries.remove(&offset)?
        } else {
            let entry = self.entries.get_mut(&offset)?;
            entry.state = State::Unacked {
                consumer,
                channel,
                tag,
            };
            entry.delivery_count += 1;
            self.unacked.insert((channel, tag), offset);
            entry.clone()
        };
        Some(Delivery {
            offset,
            consumer,
            channel,
            delivery_tag: tag,
            redelivered: entry.redelivered,
            delivery_count: if no_ack {
                entry.delivery_count + 1
            } else {
                entry.delivery_count
            },
            message: entry.message,
            message_count,
        })
    }

    /// `basic.ack`. Single: the tag must be held by this channel here, else 406. Multiple:
    /// every tag up to and including `tag` (all of them when `tag` is 0, §basic.ack); the
    /// channel's other queues take their share, so 0 acknowledged is not an error here.
    /// Returns how many were acknowledged.
    pub fn ack(
        &mut self,
        channel: ChannelKey,
        tag: u64,
        multiple: bool,
    ) -> Result<usize, QueueError> {
        if !multiple {
            // The common case, without the list of targets.
            let offset = self
                .unacked
                .remove(&(channel, tag))
                .ok_or(QueueError::UnknownDeliveryTag { tag })?;
            self.settle(offset);
            return Ok(1);
        }
        let keys = self.targets(channel, tag, multiple)?;
        for key in &keys {
            if let Some(offset) = self.unacked.remove(key) {
                self.settle(offset);
            }
        }
        Ok(keys.len())
    }

    /// `basic.nack` (and `basic.reject` with `multiple = false`). Requeue: back to ready at
    /// their original position, redelivered. Otherwise dead-lettered (reason `rejected`) when
    /// the queue has a dead-letter exchange, else dropped. Returns how many.
    pub fn nack(
        &mut self,
        channel: ChannelKey,
        tag: u64,
        multiple: bool,
        requeue: bool,
        now: u64,
    ) -> Result<usize, QueueError> {
        let keys = self.targets(channel, tag, multiple)?;
        for key in &keys {
            if requeue {
                self.requeue(*key);
            } else if let Some(offset) = self.unacked.remove(key)
                && let Some(message) = self.settle(offset)
            {
                self.dead_letter_message(&message, DeathReason::Rejected, now);
            }
        }
        if requeue {
            self.drop_head_over_limits(now);
        }
        Ok(keys.len())
    }

    /// `basic.reject`.
    pub fn reject(
        &mut self,
        channel: ChannelKey,
        tag: u64,
        requeue: bool,
        now: u64,
    ) -> Result<usize, QueueError> {
        self.nack(channel, tag, false, requeue, now)
    }

    /// `queue.purge`: drops every ready message (not the unacknowledged ones, §queue.purge),
    /// without dead-lettering. Returns how many.
    pub fn purge(&mut self) -> usize {
        let offsets: Vec<Offset> = self.ready.iter().copied().collect();
        for offset in &offsets {
            self.remove_ready(*offset, None, 0);
        }
        offsets.len()
    }

    fn targets(
        &self,
        channel: ChannelKey,
        tag: u64,
        multiple: bool,
    ) -> Result<Vec<(ChannelKey, u64)>, QueueError> {
        if !multiple {
            return match self.unacked.contains_key(&(channel, tag)) {
                true => Ok(vec![(channel, tag)]),
                false => Err(QueueError::UnknownDeliveryTag { tag }),
            };
        }
        let upto = if tag == 0 { u64::MAX } else { tag };
        Ok(self
            .unacked
            .range((channel, 0)..=(channel, upto))
            .map(|(key, _)| *key)
            .collect())
    }

    /// Removes an acknowledged (or rejected) message, releasing its consumer's prefetch slot.
    fn settle(&mut self, offset: Offset) -> Option<Arc<Message>> {
        let entry = self.entries.remove(&offset)?;
        if let State::Unacked {
            consumer: Some(id), ..
        } = entry.state
        {
            self.release_slot(id);
        }
        Some(entry.message)
    }

    fn requeue(&mut self, key: (ChannelKey, u64)) {
        let Some(offset) = self.unacked.remove(&key) else {
            return;
        };
        let Some(entry) = self.entries.get_mut(&offset) else {
            return;
        };
        let previous = std::mem::replace(&mut entry.state, State::Ready);
        entry.redelivered = true;
        if let State::Unacked {
            consumer: Some(id), ..
        } = previous
        {
            self.release_slot(id);
        }
        self.mark_ready(offset);
    }

    fn release_slot(&mut self, id: ConsumerId) {
        if let Some(c) = self.consumers.iter_mut().find(|c| c.id == id) {
            c.unacked = c.unacked.saturating_sub(1);
        }
    }

    fn mark_ready(&mut self, offset: Offset) {
        if let Some(entry) = self.entries.get(&offset)
            && self.ready.insert(offset)
        {
            self.ready_bytes += entry.message.body.len() as u64;
        }
    }

    fn unmark_ready(&mut self, offset: Offset) {
        if self.ready.remove(&offset)
            && let Some(entry) = self.entries.get(&offset)
        {
            self.ready_bytes -= entry.message.body.len() as u64;
        }
    }

    /// Removes a ready message, dead-lettering it for `reason` if given.
    fn remove_ready(&mut self, offset: Offset, reason: Option<DeathReason>, now: u64) {
        self.unmark_ready(offset);
        if let Some(entry) = self.entries.remove(&offset)
            && let Some(reason) = reason
        {
            self.dead_letter_message(&entry.message, reason, now);
        }
    }

    fn dead_letter_message(&mut self, message: &Message, reason: DeathReason, now: u64) {
        let Some(exchange) = self.args.dead_letter_exchange.as_deref() else {
            return;
        };
        let target = DeadLetterTarget {
            queue: &self.name,
            exchange,
            routing_key: self.args.dead_letter_routing_key.as_deref(),
        };
        let letter = dead_letter(message, &target, reason, now);
        self.dead_letters.push(letter);
    }
}

/// `expiration` is a string of milliseconds (RabbitMQ's per-message TTL): digits only.
pub fn parse_expiration(value: &str) -> Result<u64, QueueError> {
    let invalid = || QueueError::InvalidExpiration {
        value: value.to_owned(),
    };
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    value.parse().map_err(|_| invalid())
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
