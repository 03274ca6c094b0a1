//! What queues hand to connections: a connection's outbox of deliveries and server-sent
//! cancels, and each channel's tag allocator with its credit.
//!
//! Queues are shared by many connections, so delivery is pushed, as in RabbitMQ where a queue
//! process sends to channel processes: whoever changes a queue (a publish, an ack, a new
//! consumer) runs its dispatch, which allocates delivery tags from the consumers' channels and
//! pushes the deliveries into their connections' outboxes; the connection task is woken and
//! writes them. Lock order: vhost → queue → channel credit → outbox; never the reverse.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::lock;
use super::queues::QueueHandle;
use super::streams::StreamCredit;
use crate::queue::{ChannelKey, Message, Offset};

/// One connection's side of the hand-over.
pub struct ConnShared {
    pub id: u64,
    outbox: Mutex<VecDeque<Outgoing>>,
    /// Woken when something is pushed.
    pub notify: Notify,
    /// Woken when a queue whose backlog paused this connection drained (flow control).
    pub flow: Notify,
}

impl ConnShared {
    pub fn new(id: u64) -> Arc<Self> {
        Arc::new(Self {
            id,
            outbox: Mutex::new(VecDeque::new()),
            notify: Notify::new(),
            flow: Notify::new(),
        })
    }

    /// Takes up to `max` items, oldest first.
    pub fn take(&self, max: usize) -> Vec<Outgoing> {
        let mut outbox = lock(&self.outbox);
        let n = outbox.len().min(max);
        outbox.drain(..n).collect()
    }

    pub fn is_empty(&self) -> bool {
        lock(&self.outbox).is_empty()
    }

    fn push(&self, item: Outgoing) {
        lock(&self.outbox).push_back(item);
        self.notify.notify_one();
    }
}

/// Where the acknowledgement of a delivery goes.
#[derive(Clone)]
pub enum AckTarget {
    /// A classic queue holds the message until it is settled.
    Queue(Arc<QueueHandle>),
    /// A stream consumer: the ack only returns prefetch credit.
    Stream(Arc<StreamCredit>),
}

/// A message on its way to a client.
pub struct Outgoing {
    pub channel: Arc<ChannelShared>,
    pub kind: OutgoingKind,
}

pub enum OutgoingKind {
    Deliver {
        consumer_tag: Arc<str>,
        delivery_tag: u64,
        redelivered: bool,
        message: Arc<Message>,
        /// `None` for no-ack deliveries, which are settled when sent.
        ack: Option<AckTarget>,
        /// Whether the delivery counts against the channel's global prefetch.
        counted: bool,
        /// For stream queues: the record's offset, sent as the `x-stream-offset` header.
        stream_offset: Option<Offset>,
    },
    /// The server cancels a consumer (its queue was deleted): RabbitMQ's consumer cancel
    /// notification.
    Cancel { consumer_tag: Arc<str> },
}

/// Delivery tags and credit of one channel, shared by the queues that deliver to it.
#[derive(Debug)]
struct Credit {
    next_tag: u64,
    open: bool,
    /// `channel.flow`: the client paused deliveries.
    flow: bool,
    /// `basic.qos global=true` (RabbitMQ: per channel); 0 = no limit.
    global_limit: u16,
    global_unacked: u32,
}

pub struct ChannelShared {
    pub key: ChannelKey,
    pub conn: Arc<ConnShared>,
    credit: Mutex<Credit>,
}

impl ChannelShared {
    pub fn new(key: ChannelKey, conn: Arc<ConnShared>) -> Arc<Self> {
        Arc::new(Self {
            key,
            conn,
            credit: Mutex::new(Credit {
                next_tag: 0,
                open: true,
                flow: true,
                global_limit: 0,
                global_unacked: 0,
            }),
        })
    }

    /// The next delivery tag for a consumer delivery, if the channel can take one: it is open,
    /// not paused by `channel.flow`, and (when `counted`) under its global prefetch.
    pub fn alloc_tag(&self, counted: bool) -> Option<u64> {
        let mut c = lock(&self.credit);
        if !c.open || !c.flow {
            return None;
        }
        if counted {
            if c.global_limit > 0 && c.global_unacked >= u32::from(c.global_limit) {
                return None;
            }
            c.global_unacked += 1;
        }
        c.next_tag += 1;
        Some(c.next_tag)
    }

    /// A tag for `basic.get`, which is outside every prefetch window.
    pub fn alloc_get_tag(&self) -> u64 {
        let mut c = lock(&self.credit);
        c.next_tag += 1;
        c.next_tag
    }

    /// Settled deliveries that counted against the global prefetch give their slots back.
    pub fn release(&self, n: u32) {
        let mut c = lock(&self.credit);
        c.global_unacked = c.global_unacked.saturating_sub(n);
    }

    pub fn set_global_limit(&self, limit: u16) {
        lock(&self.credit).global_limit = limit;
    }

    pub fn set_flow(&self, active: bool) {
        lock(&self.credit).flow = active;
    }

    /// Stops every further allocation: the channel is closing. Queues then skip its consumers
    /// until they are removed.
    pub fn close(&self) {
        lock(&self.credit).open = false;
    }

    pub fn is_open(&self) -> bool {
        lock(&self.credit).open
    }

    pub fn push(self: &Arc<Self>, kind: OutgoingKind) {
        self.conn.push(Outgoing {
            channel: self.clone(),
            kind,
        });
    }
}
