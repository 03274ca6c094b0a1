//! One channel's state inside a session: content assembly, consumers, the deliveries it holds
//! unacknowledged, prefetch, and the confirm and transaction modes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::ReplyCode;
use crate::broker::QueueHandle;
use crate::broker::outbox::{AckTarget, ChannelShared};
use crate::broker::streams::StreamConsumer;
use crate::error::AmqpError;
use crate::queue::ConsumerId;
use crate::wire::{ContentAssembler, PublishedMessage};

/// A consumer of this channel.
pub(crate) struct ConsumerEntry {
    pub id: ConsumerId,
    pub queue: Arc<QueueHandle>,
    /// Set for a consumer of a stream queue: its reader tasks.
    pub stream: Option<StreamConsumer>,
}

/// A delivery the client has not settled yet.
pub(crate) struct Unacked {
    pub target: AckTarget,
    /// Whether it holds a slot of the channel's global prefetch.
    pub counted: bool,
}

/// An operation held until `tx.commit`.
pub(crate) enum TxOp {
    Publish(Box<PublishedMessage>),
    Ack {
        tag: u64,
        multiple: bool,
    },
    Nack {
        tag: u64,
        multiple: bool,
        requeue: bool,
    },
}

pub(crate) struct Channel {
    pub shared: Arc<ChannelShared>,
    /// The server sent `channel.close` and waits for `close-ok`; other frames are dropped.
    pub closing: bool,
    pub assembler: ContentAssembler,
    pub consumers: HashMap<String, ConsumerEntry>,
    pub unacked: BTreeMap<u64, Unacked>,
    /// `basic.qos global=false`: the prefetch of consumers created from now on.
    pub prefetch: u16,
    /// Confirm mode: the sequence number of the last publish.
    pub confirm: Option<u64>,
    /// Publish outcomes not yet confirmed to the client: (sequence number, stored).
    pub confirms: Vec<(u64, bool)>,
    /// Transaction mode: what waits for `tx.commit`.
    pub tx: Option<Vec<TxOp>>,
    /// The last queue declared on the channel, which an empty queue name refers to.
    pub last_queue: Option<String>,
}

impl Channel {
    pub fn new(shared: Arc<ChannelShared>, max_message_size: usize) -> Self {
        Self {
            assembler: ContentAssembler::new(shared.key.channel, max_message_size as u64),
            shared,
            closing: false,
            consumers: HashMap::new(),
            unacked: BTreeMap::new(),
            prefetch: 0,
            confirm: None,
            confirms: Vec::new(),
            tx: None,
            last_queue: None,
        }
    }

    /// Resolves the queue a method names: the empty name is the channel's last declared
    /// queue (§ queue.bind, basic.consume, …).
    pub fn queue_name(&self, name: &str) -> Result<String, AmqpError> {
        if !name.is_empty() {
            return Ok(name.to_owned());
        }
        self.last_queue
            .clone()
            .ok_or_else(|| AmqpError::channel(ReplyCode::NotFound, "no previously declared queue"))
    }

    /// Takes the deliveries an ack, nack or reject settles into `taken`: `tag` alone (406 if
    /// the channel does not hold it), or with `multiple` every held tag up to it (all for tag
    /// 0). Only deliveries already written to the client can be held, so `multiple` never
    /// settles one the client has not seen.
    pub fn take_unacked(
        &mut self,
        tag: u64,
        multiple: bool,
        taken: &mut Vec<(u64, Unacked)>,
    ) -> Result<(), AmqpError> {
        if !multiple {
            let u = self.unacked.remove(&tag).ok_or_else(|| unknown_tag(tag))?;
            taken.push((tag, u));
            return Ok(());
        }
        let upto = if tag == 0 { u64::MAX } else { tag };
        let before = taken.len();
        while let Some(held) = self.unacked.first_entry()
            && *held.key() <= upto
        {
            taken.push(held.remove_entry());
        }
        if taken.len() == before && tag != 0 {
            return Err(unknown_tag(tag));
        }
        Ok(())
    }

    /// The queues this channel's consumers read: credit freed on the channel may let any of
    /// them deliver.
    pub fn consumed_queues(&self) -> Vec<Arc<QueueHandle>> {
        let mut out: Vec<Arc<QueueHandle>> = Vec::new();
        for c in self.consumers.values() {
            if !out.iter().any(|q| Arc::ptr_eq(q, &c.queue)) {
                out.push(c.queue.clone());
            }
        }
        out
    }
}

/// RabbitMQ's reply to an ack of a tag the channel does not hold.
pub(crate) fn unknown_tag(tag: u64) -> AmqpError {
    AmqpError::channel(
        ReplyCode::PreconditionFailed,
        format!("unknown delivery tag {tag}"),
    )
}

/// Adds `q` to `queues` unless it is there already.
pub(crate) fn add_unique(queues: &mut Vec<Arc<QueueHandle>>, q: &Arc<QueueHandle>) {
    if !queues.iter().any(|x| Arc::ptr_eq(x, q)) {
        queues.push(q.clone());
    }
}
