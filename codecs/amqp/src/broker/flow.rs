//! Publisher flow control: the queue side.
//!
//! A publish is confirmed as soon as its queues hold it, so without a brake a publisher that
//! is faster than a queue's consumers fills the queue for as long as it runs: memory grows,
//! and every message waits behind the whole backlog (seconds). RabbitMQ's credit flow stops
//! reading publishing connections whose queues fall behind; so does this.
//!
//! When a publish leaves a queue at or above the high-water mark ([`FlowSettings`]: ready
//! messages or ready body bytes), the publishing session remembers the queue, and at the end
//! of that round of frames (at most 1024) the connection loop asks
//! [`QueueHandle::hold_publisher`] whether to pause. While paused it handles no more frames
//! and does not read its socket — TCP pushes back, and the client's own confirm window stops
//! it — but it still writes deliveries and heartbeats. The queue wakes
//! the connection (`ConnShared::flow`) once dispatch has taken it to the low-water mark,
//! or when it loses its consumers or is deleted.
//!
//! A paused connection cannot deadlock on itself or with others:
//!
//! - Only queues with consumers hold publishers back: a queue without any cannot drain, and
//!   a backlog there is the point of the queue (a buffer), not a sign of slow consumers.
//! - A queue with a consumer on the publishing connection does not hold it back: that
//!   consumer's acks arrive on the socket the pause would stop reading, so the queue could
//!   only drain by `prefetch` messages and then wait for the pause to end. Such a connection
//!   publishes unthrottled into that queue, as before flow control.
//! - Longer cycles (connection A publishes into a queue B consumes, and B into one A consumes,
//!   both paused and neither reading the other's acks) and consumers that stop acking are
//!   broken by [`FlowSettings::max_pause`]: a pause never lasts longer, whatever the queue
//!   does. The connection then reads again, and pauses again after that read if the queue is
//!   still full; such a publisher is slowed down, not stopped.
//!
//! Skipping the reads skips the client's heartbeats too, so the loop does not count a pause
//! as silence; its own heartbeats go out as usual. `connection.blocked` is not sent: RabbitMQ
//! sends it for resource alarms (memory, disk), not for credit flow, and clients log it.

use std::sync::{Arc, Weak};

use super::outbox::ConnShared;
use super::queues::{QueueHandle, QueueInner};
use crate::settings::FlowSettings;

impl QueueInner {
    /// Whether the ready backlog is at or above the high-water mark.
    fn above_high(&self, flow: &FlowSettings) -> bool {
        flow.above_high(self.queue.message_count() as u64, self.queue.ready_bytes())
    }

    fn above_low(&self, flow: &FlowSettings) -> bool {
        flow.above_low(self.queue.message_count() as u64, self.queue.ready_bytes())
    }

    /// Wakes the paused publishers once the queue is down to the low-water mark. Run after
    /// every dispatch, which is where the backlog shrinks.
    pub(crate) fn wake_publishers_if_drained(&mut self, flow: &FlowSettings) {
        if !self.flow_waiters.is_empty() && !self.above_low(flow) {
            self.wake_publishers();
        }
    }

    /// Wakes every paused publisher; each then looks at the queue again.
    pub(crate) fn wake_publishers(&mut self) {
        for waiter in self.flow_waiters.drain(..) {
            if let Some(conn) = waiter.upgrade() {
                conn.flow.notify_one();
            }
        }
    }
}

impl QueueHandle {
    /// Whether a publish that just landed here should pause its connection: the queue's
    /// backlog is at or above the high-water mark.
    pub(crate) fn above_high_water(&self, flow: &FlowSettings) -> bool {
        flow.is_on() && !self.is_stream_queue() && self.lock().above_high(flow)
    }

    /// Whether the queue holds back a publisher on `conn` now: its backlog is above the
    /// low-water mark and it has consumers, none of them on `conn` (see the module
    /// documentation). If so, `conn` is woken through `ConnShared::flow` when that changes.
    pub(crate) fn hold_publisher(&self, conn: &Arc<ConnShared>, flow: &FlowSettings) -> bool {
        if self.is_deleted() || self.is_stream_queue() {
            return false;
        }
        let mut inner = self.lock();
        let holds = inner.above_low(flow)
            && !inner.consumers.is_empty()
            && inner
                .consumers
                .values()
                .all(|c| c.channel.conn.id != conn.id);
        if holds
            && !inner
                .flow_waiters
                .iter()
                .any(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(conn)))
        {
            inner.flow_waiters.push(Arc::downgrade(conn));
        }
        holds
    }
}

/// What a session keeps between a read that published into full queues and the end of the
/// pause that follows.
#[derive(Default)]
pub(crate) struct Backlogged {
    queues: Vec<Arc<QueueHandle>>,
}

impl Backlogged {
    /// Notes a queue that a publish left above its high-water mark.
    pub fn add(&mut self, q: Arc<QueueHandle>) {
        if !self.queues.iter().any(|x| Arc::ptr_eq(x, &q)) {
            self.queues.push(q);
        }
    }

    /// Keeps the queues that still hold `conn` back; true if any does.
    pub fn holds(&mut self, conn: &Arc<ConnShared>, flow: &FlowSettings) -> bool {
        self.queues.retain(|q| q.hold_publisher(conn, flow));
        !self.queues.is_empty()
    }

    pub fn clear(&mut self) {
        self.queues.clear();
    }
}

/// A dropped connection leaves a dead entry; the next wake skips it.
pub(crate) type FlowWaiter = Weak<ConnShared>;
