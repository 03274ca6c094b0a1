//! Copies for durable queues held back within a session's round, so that each queue's copies
//! are appended to its stream as one write instead of one each.
//!
//! A publish is routed at once; for a durable classic queue without a length limit its copy
//! waits in [`PendingAppends`] until the session's round ends or a frame other than a publish or
//! an acknowledgement arrives (anything that could look at the queue: `queue.purge`,
//! `basic.get`, `channel.close`, …). Then [`AmqpBroker::append_pending`] appends every queue's
//! copies in order, holds them at the offsets the stream gave, and dispatches. The publisher's
//! confirm is sent after that, so a copy that could not be stored is nacked, as before.
//!
//! Queues with `x-max-length` or `x-max-length-bytes` still store each copy on its own: whether
//! one is refused depends on the copies before it being in the queue already.

use std::sync::Arc;

use switchboard_model::{BatchBuilder, RecordBatch, TopicPartition};
use switchboard_router::now_ms;
use switchboard_storage::Durability;

use super::flow::Backlogged;
use super::{AmqpBroker, QueueHandle, VHost};
use crate::error::AmqpError;
use crate::mapping::{self, is_persistent};
use crate::queue::{Message, PublishOutcome};

/// Records per batch at most bytes: a round of large messages becomes several batches, still
/// written by one append.
const BATCH_BYTES: usize = 1 << 20;
/// Bytes per append at most: a large transaction's copies go in several appends, each far
/// below what one append may hold (`storage.log` refuses appends over 2 GiB).
const APPEND_BYTES: usize = 64 << 20;

/// A publish's confirm: the channel and the confirm sequence number.
pub(crate) type ConfirmTag = (u16, u64);

/// Copies waiting to be appended, in the order they were published.
#[derive(Default)]
pub(crate) struct PendingAppends {
    entries: Vec<PendingCopy>,
}

struct PendingCopy {
    queue: Arc<QueueHandle>,
    message: Message,
    /// When it was published (ms): its record's timestamp.
    published: u64,
    /// The publish to nack if the copy cannot be stored; `None` outside confirm mode.
    confirm: Option<ConfirmTag>,
}

impl PendingAppends {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Where copies of the next publish will start: see [`PendingAppends::tag_since`].
    pub fn mark(&self) -> usize {
        self.entries.len()
    }

    /// Ties the copies held since `mark` to the confirm of the publish they came from.
    pub fn tag_since(&mut self, mark: usize, tag: ConfirmTag) {
        for e in self.entries.iter_mut().skip(mark) {
            e.confirm = Some(tag);
        }
    }

    /// Holds a copy of `message` for each of `queues` (counted as stored by the publish; a
    /// copy that cannot be stored nacks it when the round's appends run).
    pub(super) fn hold(&mut self, queues: &[Arc<QueueHandle>], message: &Message) {
        let published = now_ms().max(0) as u64;
        self.entries.extend(queues.iter().map(|q| PendingCopy {
            queue: q.clone(),
            message: message.clone(),
            published,
            confirm: None,
        }));
    }
}

/// Copies that could not be stored: the confirms to turn into nacks, and how many there were
/// (some may belong to publishes outside confirm mode).
#[derive(Debug, Default)]
pub(crate) struct Unstored {
    pub confirms: Vec<ConfirmTag>,
    pub count: usize,
}

impl Unstored {
    fn add(&mut self, confirm: Option<ConfirmTag>) {
        self.count += 1;
        if let Some(tag) = confirm
            && !self.confirms.contains(&tag)
        {
            self.confirms.push(tag);
        }
    }
}

impl QueueHandle {
    /// Whether copies for this queue may wait for the end of the round: a durable classic
    /// queue whose publishes are never refused for length.
    pub(super) fn takes_held_appends(&self) -> bool {
        self.backing_partition().is_some() && !self.lock().queue.limits_length()
    }
}

impl AmqpBroker {
    /// Appends the held copies, one append per queue, holds each at its offset, dispatches the
    /// queues and notes those left above their high-water mark. Partitions that got a
    /// persistent copy go to `unsynced`.
    pub(crate) async fn append_pending(
        self: &Arc<Self>,
        vhost: &Arc<VHost>,
        pending: &mut PendingAppends,
        backlogged: &mut Backlogged,
        unsynced: &mut Vec<TopicPartition>,
    ) -> Unstored {
        let mut groups: Vec<(Arc<QueueHandle>, Vec<PendingCopy>)> = Vec::new();
        for copy in pending.entries.drain(..) {
            match groups.iter_mut().find(|(q, _)| Arc::ptr_eq(q, &copy.queue)) {
                Some((_, group)) => group.push(copy),
                None => groups.push((copy.queue.clone(), vec![copy])),
            }
        }
        let mut unstored = Unstored::default();
        // The copies' time in their queues (for TTLs) starts here, and the queues dispatch as
        // of the same moment: a copy with a TTL of 0 reaches a waiting consumer, as it did when
        // each was stored on its own.
        let now = now_ms().max(0) as u64;
        for (q, group) in &mut groups {
            if let Err(e) = self
                .append_group(q, std::mem::take(group), now, unsynced, &mut unstored)
                .await
            {
                tracing::warn!(queue = q.name(), error = %e, "cannot store messages");
            }
        }
        let queues: Vec<Arc<QueueHandle>> = groups.into_iter().map(|(q, _)| q).collect();
        self.settle_at(vhost, queues.iter().cloned(), Some(now))
            .await;
        let flow = &self.settings.flow;
        for q in queues.into_iter().filter(|q| q.above_high_water(flow)) {
            backlogged.add(q);
        }
        unstored
    }

    /// One queue's copies: appended (one append per [`APPEND_BYTES`]), then each held at its
    /// offset. A copy not stored (an append failed, the queue was deleted meanwhile, the queue
    /// refused it) goes to `unstored`.
    async fn append_group(
        &self,
        q: &QueueHandle,
        group: Vec<PendingCopy>,
        now: u64,
        unsynced: &mut Vec<TopicPartition>,
        unstored: &mut Unstored,
    ) -> Result<(), AmqpError> {
        let Some(tp) = q.backing_partition() else {
            group.iter().for_each(|c| unstored.add(c.confirm));
            return Err(AmqpError::internal("durable queue without a stream"));
        };
        let _order = q.append_lock.lock().await;
        if q.is_deleted() {
            // Deleted by another connection since the copies were routed to it.
            group.iter().for_each(|c| unstored.add(c.confirm));
            return Ok(());
        }
        let mut rest = group;
        while !rest.is_empty() {
            let mut bytes = 0;
            let take = rest
                .iter()
                .position(|c| {
                    bytes += c.message.body.len();
                    bytes > APPEND_BYTES
                })
                .unwrap_or(rest.len())
                .max(1);
            let tail = rest.split_off(take);
            let chunk = std::mem::replace(&mut rest, tail);
            if let Err(e) = self
                .append_chunk(q, tp, chunk, now, unsynced, unstored)
                .await
            {
                rest.iter().for_each(|c| unstored.add(c.confirm));
                return Err(e);
            }
        }
        Ok(())
    }

    /// Appends copies as one write and holds each at its offset, in the queue as of `now`.
    async fn append_chunk(
        &self,
        q: &QueueHandle,
        tp: &TopicPartition,
        chunk: Vec<PendingCopy>,
        now: u64,
        unsynced: &mut Vec<TopicPartition>,
        unstored: &mut Unstored,
    ) -> Result<(), AmqpError> {
        let batches = encode(&chunk);
        let appended = match self.router.append(tp, batches, Durability::Buffered).await {
            Ok(appended) => appended,
            Err(e) => {
                chunk.iter().for_each(|c| unstored.add(c.confirm));
                return Err(e.into());
            }
        };
        if chunk.iter().any(|c| is_persistent(&c.message.properties)) && !unsynced.contains(tp) {
            unsynced.push(tp.clone());
        }
        let mut inner = q.lock();
        for (offset, copy) in (appended.base_offset..).zip(chunk) {
            let confirm = copy.confirm;
            match inner.queue.publish_at(offset, copy.message, now) {
                Ok(PublishOutcome::Enqueued(_)) => {}
                Ok(PublishOutcome::Rejected) | Err(_) => unstored.add(confirm),
            }
        }
        // Offsets the queue does not hold (a refused copy) are settled: the next ack-state
        // write records them.
        inner.dirty = true;
        Ok(())
    }
}

/// The group's records in batches of about [`BATCH_BYTES`], in order.
fn encode(group: &[PendingCopy]) -> Vec<RecordBatch> {
    let mut batches = Vec::new();
    let mut builder = BatchBuilder::new();
    let mut bytes = 0;
    for copy in group {
        if bytes >= BATCH_BYTES {
            batches.extend(std::mem::take(&mut builder).build());
            bytes = 0;
        }
        mapping::write_record(&copy.message, copy.published as i64, &mut builder);
        bytes += copy.message.body.len() + copy.message.routing_key.len();
    }
    batches.extend(builder.build());
    batches
}
