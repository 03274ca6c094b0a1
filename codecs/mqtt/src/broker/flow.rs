//! Publisher flow control: a subscriber slower than its publishers.
//!
//! A publish is delivered into the queues of the sessions it matches as soon as it is stored,
//! and QoS 1 publishes are acknowledged then. Without a brake, publishers faster than one of
//! their subscribers fill its queue up to `max_queued_messages`: every message waits behind the
//! whole queue, and past it QoS 0 messages are dropped. mosquitto, a single loop, writes to the
//! subscriber's socket between its reads of the publishers; here each connection has its own
//! task, so the queue has to push back instead, as AMQP's flow control does (`amqp::flow`).
//!
//! When a publisher's own delivery leaves a connected subscriber with `high` or more queued
//! deliveries, the publisher's connection stops reading its socket (TCP pushes back) until that
//! queue is down to `low`, or for at most `max_pause`. It still writes its acknowledgements and
//! its own deliveries. The subscriber wakes it from [`Broker::wake_publishers`] after taking
//! deliveries off its queue.
//!
//! No deadlock: a publisher is never held back by its own subscriptions (its queue drains only
//! as it reads its client's acknowledgements), and longer cycles (two clients each publishing
//! to the other, both paused, neither reading the other's acknowledgements) end with
//! `max_pause`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use super::{Broker, SessionShared, lock};
use crate::mapping::Message;

/// The flow-control marks; `high` 0 turns it off.
#[derive(Debug, Clone, Copy)]
pub struct MqttFlow {
    /// Queued deliveries of a connected subscriber at which its publishers pause.
    pub high: usize,
    /// Queued deliveries at or below which they resume.
    pub low: usize,
    /// The longest one pause lasts.
    pub max_pause: Duration,
}

/// Publishers paused on subscribers' queues.
#[derive(Default)]
pub(crate) struct FlowWaiters {
    /// Whether `waiting` may hold anything: subscribers skip the lock when not.
    any: AtomicBool,
    /// (subscriber, publisher waiting for its queue to drain).
    waiting: Mutex<Vec<(Weak<SessionShared>, Weak<SessionShared>)>>,
}

impl Broker {
    /// Notes `target` in `backlog` if the delivery of `msg` just left its queue at the high mark
    /// and it holds its publisher back.
    pub(super) fn note_backlog(
        &self,
        target: &Arc<SessionShared>,
        msg: &Message,
        backlog: &mut Vec<Arc<SessionShared>>,
    ) {
        let flow = &self.settings.flow;
        if flow.high == 0
            || target.queued() < flow.high
            || !target.is_online()
            || msg.publisher.as_deref() == Some(target.client_id.as_str())
            || backlog.iter().any(|s| Arc::ptr_eq(s, target))
        {
            return;
        }
        backlog.push(target.clone());
    }

    /// Keeps the subscribers of `backlog` that still hold `publisher` back (connected, queue
    /// above the low mark) and arranges for `publisher` to be woken when they drain; true if
    /// any does.
    pub fn holds(
        &self,
        publisher: &Arc<SessionShared>,
        backlog: &mut Vec<Arc<SessionShared>>,
    ) -> bool {
        backlog.retain(|s| s.is_online());
        if backlog.is_empty() {
            return false;
        }
        {
            // Registered before looking at the queues: a subscriber that drains in between
            // then finds the registration and wakes the publisher.
            let mut waiting = lock(&self.flow.waiting);
            for s in backlog.iter() {
                let known = waiting.iter().any(|(sub, publ)| {
                    std::ptr::eq(sub.as_ptr(), Arc::as_ptr(s))
                        && std::ptr::eq(publ.as_ptr(), Arc::as_ptr(publisher))
                });
                if !known {
                    waiting.push((Arc::downgrade(s), Arc::downgrade(publisher)));
                }
            }
            self.flow.any.store(true, Ordering::SeqCst);
        }
        let low = self.settings.flow.low;
        backlog.retain(|s| s.queued() > low);
        !backlog.is_empty()
    }

    /// Wakes the publishers paused on `subscriber` once its queue is down to the low mark. Run
    /// after the subscriber takes deliveries off its queue.
    pub(crate) fn wake_publishers(&self, subscriber: &SessionShared) {
        // The flag first: the common case (nobody paused) takes no lock.
        if self.flow.any.load(Ordering::SeqCst) && subscriber.queued() <= self.settings.flow.low {
            self.release_publishers(subscriber);
        }
    }

    /// Wakes every publisher paused on `subscriber` (drained, or disconnected); each then looks
    /// at its backlog again.
    pub(crate) fn release_publishers(&self, subscriber: &SessionShared) {
        if !self.flow.any.load(Ordering::SeqCst) {
            return;
        }
        let mut waiting = lock(&self.flow.waiting);
        waiting.retain(|(sub, publisher)| {
            let gone = sub.strong_count() == 0;
            if !gone && !std::ptr::eq(sub.as_ptr(), subscriber) {
                return true;
            }
            if let Some(p) = publisher.upgrade() {
                p.notify.notify_one();
            }
            false
        });
        self.flow.any.store(!waiting.is_empty(), Ordering::SeqCst);
    }
}
