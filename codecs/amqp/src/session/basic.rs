//! `basic.*`, `confirm.select` and `tx.*`: consuming, getting, settling and publishing.

use std::sync::Arc;

use amq_protocol::protocol::{AMQPClass, basic, confirm, tx};
use switchboard_router::now_ms;

use super::Session;
use super::channel::{ConsumerEntry, TxOp, Unacked, add_unique};
use super::declare::unexpected;
use crate::ReplyCode;
use crate::broker::outbox::AckTarget;
use crate::broker::queues::ConsumerLink;
use crate::error::AmqpError;
use crate::queue::{Consumer, ConsumerId, Message, OnCancel};
use crate::wire::{PublishedMessage, out};

/// How settled deliveries are settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settle {
    Ack,
    Requeue,
    Discard,
}

fn now() -> u64 {
    now_ms().max(0) as u64
}

impl Session {
    pub(super) async fn on_basic(
        &mut self,
        ch: u16,
        m: basic::AMQPMethod,
    ) -> Result<(), AmqpError> {
        use basic::AMQPMethod as M;
        match m {
            M::Qos(q) => self.on_qos(ch, q).await,
            M::Consume(c) => self.on_consume(ch, c).await,
            M::Cancel(c) => self.on_cancel(ch, c).await,
            M::Get(g) => self.on_get(ch, g).await,
            M::Ack(a) => {
                if let Some(tx) = &mut self.channel(ch)?.tx {
                    tx.push(TxOp::Ack {
                        tag: a.delivery_tag,
                        multiple: a.multiple,
                    });
                    return Ok(());
                }
                self.settle(ch, a.delivery_tag, a.multiple, Settle::Ack)
                    .await
            }
            M::Nack(n) => {
                if let Some(tx) = &mut self.channel(ch)?.tx {
                    tx.push(TxOp::Nack {
                        tag: n.delivery_tag,
                        multiple: n.multiple,
                        requeue: n.requeue,
                    });
                    return Ok(());
                }
                let how = if n.requeue {
                    Settle::Requeue
                } else {
                    Settle::Discard
                };
                self.settle(ch, n.delivery_tag, n.multiple, how).await
            }
            M::Reject(r) => {
                if let Some(tx) = &mut self.channel(ch)?.tx {
                    tx.push(TxOp::Nack {
                        tag: r.delivery_tag,
                        multiple: false,
                        requeue: r.requeue,
                    });
                    return Ok(());
                }
                let how = if r.requeue {
                    Settle::Requeue
                } else {
                    Settle::Discard
                };
                self.settle(ch, r.delivery_tag, false, how).await
            }
            // requeue=false asks to redeliver to the same consumer, which RabbitMQ does not
            // do either: both requeue.
            M::Recover(_) => {
                self.recover(ch).await?;
                self.send(ch, AMQPClass::Basic(M::RecoverOk(basic::RecoverOk {})));
                Ok(())
            }
            M::RecoverAsync(_) => self.recover(ch).await,
            _ => Err(unexpected()),
        }
    }

    /// RabbitMQ's reading of `basic.qos`: `global=false` sets the prefetch of each consumer
    /// created afterwards, `global=true` a limit shared by the channel's consumers.
    async fn on_qos(&mut self, ch: u16, q: basic::Qos) -> Result<(), AmqpError> {
        let queues = {
            let c = self.channel(ch)?;
            if q.global {
                c.shared.set_global_limit(q.prefetch_count);
            } else {
                c.prefetch = q.prefetch_count;
            }
            c.consumed_queues()
        };
        self.send(
            ch,
            AMQPClass::Basic(basic::AMQPMethod::QosOk(basic::QosOk {})),
        );
        let vhost = self.vhost()?;
        self.broker.settle(&vhost, queues).await;
        Ok(())
    }

    async fn on_consume(&mut self, ch: u16, c: basic::Consume) -> Result<(), AmqpError> {
        let vhost = self.vhost()?;
        let conn = self.conn.id;
        let name = self.channel(ch)?.queue_name(c.queue.as_str())?;
        let q = self.broker.queue_for(&vhost, conn, &name)?;
        let tag = if c.consumer_tag.as_str().is_empty() {
            self.broker.generated_name("amq.ctag-")
        } else {
            c.consumer_tag.as_str().to_owned()
        };
        let channel = self.channel(ch)?;
        if channel.consumers.contains_key(&tag) {
            return Err(AmqpError::connection(
                ReplyCode::NotAllowed,
                format!("attempt to reuse consumer tag '{tag}'"),
            ));
        }
        let (shared, prefetch) = (channel.shared.clone(), channel.prefetch);
        let id = ConsumerId(self.broker.next_id());
        let tag_arc: Arc<str> = Arc::from(tag.as_str());
        let link = ConsumerLink {
            channel: shared.clone(),
            tag: tag_arc.clone(),
            exclusive: c.exclusive,
            no_ack: c.no_ack,
        };
        let consumer = Consumer::new(id, shared.key, &tag, prefetch, c.no_ack);
        let stream = if q.is_stream_queue() {
            if c.no_ack {
                return Err(AmqpError::channel(
                    ReplyCode::PreconditionFailed,
                    "consumers of stream queues must acknowledge (no-ack is not supported)",
                ));
            }
            q.add_consumer(consumer, link, now())?;
            match self
                .broker
                .start_stream_consumer(&q, shared, tag_arc, prefetch, &c.arguments)
                .await
            {
                Ok(s) => Some(s),
                Err(e) => {
                    q.remove_consumer(id, OnCancel::KeepUnacked, now());
                    return Err(e);
                }
            }
        } else {
            q.add_consumer(consumer, link, now())?;
            None
        };
        self.channel(ch)?.consumers.insert(
            tag.clone(),
            ConsumerEntry {
                id,
                queue: q.clone(),
                stream,
            },
        );
        if !c.nowait {
            self.send(ch, out::basic_consume_ok(&tag)?);
        }
        self.broker.settle(&vhost, [q]).await;
        Ok(())
    }

    async fn on_cancel(&mut self, ch: u16, c: basic::Cancel) -> Result<(), AmqpError> {
        let vhost = self.vhost()?;
        let tag = c.consumer_tag.as_str().to_owned();
        if let Some(consumer) = self.channel(ch)?.consumers.remove(&tag) {
            if let Some(stream) = &consumer.stream {
                stream.stop();
            }
            let unused = consumer
                .queue
                .remove_consumer(consumer.id, OnCancel::KeepUnacked, now());
            if unused {
                self.broker.remove_queue(&vhost, &consumer.queue).await?;
            }
        }
        // Deliveries dispatched before the cancel go out before cancel-ok: after it, the
        // client expects nothing more for this tag.
        self.pump();
        if !c.nowait {
            self.send(
                ch,
                AMQPClass::Basic(basic::AMQPMethod::CancelOk(basic::CancelOk {
                    consumer_tag: c.consumer_tag,
                })),
            );
        }
        Ok(())
    }

    async fn on_get(&mut self, ch: u16, g: basic::Get) -> Result<(), AmqpError> {
        let vhost = self.vhost()?;
        let name = self.channel(ch)?.queue_name(g.queue.as_str())?;
        let q = self.broker.queue_for(&vhost, self.conn.id, &name)?;
        if q.is_stream_queue() {
            return Err(AmqpError::channel(
                ReplyCode::PreconditionFailed,
                format!("queue '{name}' is a stream queue, which does not support basic.get"),
            ));
        }
        let shared = self.channel(ch)?.shared.clone();
        let delivery = {
            let mut inner = q.lock();
            inner.last_used = now();
            let d = inner
                .queue
                .get(shared.key, g.no_ack, now(), || shared.alloc_get_tag());
            if let Some(d) = &d {
                inner.delivered_upto = inner.delivered_upto.max(Some(d.offset));
                if g.no_ack {
                    inner.dirty = true;
                }
            }
            d
        };
        match delivery {
            Some(d) => {
                let method = out::basic_get_ok(
                    d.delivery_tag,
                    d.redelivered,
                    &d.message.exchange,
                    &d.message.routing_key,
                    d.message_count,
                )?;
                out::encode_message(
                    ch,
                    &method,
                    &d.message.properties,
                    &d.message.body,
                    self.frame_max,
                    &mut self.out,
                )?;
                self.broker.metrics.messages_delivered.inc();
                if !g.no_ack {
                    self.channel(ch)?.unacked.insert(
                        d.delivery_tag,
                        Unacked {
                            target: AckTarget::Queue(q.clone()),
                            counted: false,
                        },
                    );
                }
            }
            None => self.send(ch, out::basic_get_empty()),
        }
        self.broker.settle(&vhost, [q]).await;
        Ok(())
    }

    /// Acks, nacks or rejects deliveries of the channel. The queues they came from, and those
    /// the channel's consumers read (its global prefetch may have room now), deliver into the
    /// freed credit at the end of the round ([`Session::end_round`]): a read of a hundred acks
    /// dispatches once, not a hundred times.
    async fn settle(
        &mut self,
        ch: u16,
        tag: u64,
        multiple: bool,
        how: Settle,
    ) -> Result<(), AmqpError> {
        let Some(channel) = self.channels.get_mut(&ch) else {
            return Err(AmqpError::connection(
                ReplyCode::ChannelError,
                format!("channel {ch} is not open"),
            ));
        };
        let key = channel.shared.key;
        let mut taken = std::mem::take(&mut self.taken);
        channel.take_unacked(tag, multiple, &mut taken)?;
        for c in channel.consumers.values() {
            add_unique(&mut self.settled, &c.queue);
        }
        let now = now();
        let mut counted = 0u32;
        // Deliveries of one queue come in runs: each run settles under one lock.
        let mut at = 0;
        while at < taken.len() {
            let q = match &taken[at].1.target {
                AckTarget::Queue(q) => q.clone(),
                AckTarget::Stream(credit) => {
                    counted += u32::from(taken[at].1.counted);
                    credit.release(1);
                    at += 1;
                    continue;
                }
            };
            let mut inner = q.lock();
            while let Some((tag, u)) = taken.get(at)
                && matches!(&u.target, AckTarget::Queue(x) if Arc::ptr_eq(x, &q))
            {
                counted += u32::from(u.counted);
                // A deleted queue forgot its messages: settling them is a no-op.
                let _ = match how {
                    Settle::Ack => inner.queue.ack(key, *tag, false),
                    Settle::Requeue => inner.queue.nack(key, *tag, false, true, now),
                    Settle::Discard => inner.queue.nack(key, *tag, false, false, now),
                };
                at += 1;
            }
            inner.dirty = true;
            drop(inner);
            add_unique(&mut self.settled, &q);
        }
        channel.shared.release(counted);
        taken.clear();
        self.taken = taken;
        Ok(())
    }

    /// Runs dispatch on the queues that settles of this round touched.
    pub(super) async fn dispatch_settled(&mut self) {
        if self.settled.is_empty() {
            return;
        }
        let mut queues = std::mem::take(&mut self.settled);
        if let Ok(vhost) = self.vhost() {
            self.broker.settle(&vhost, queues.drain(..)).await;
        }
        queues.clear();
        self.settled = queues;
    }

    /// `basic.recover`: everything the channel holds goes back to its queues, redelivered.
    async fn recover(&mut self, ch: u16) -> Result<(), AmqpError> {
        // Deliveries already dispatched become held first, so the queues' requeue and the
        // channel's view agree on what was outstanding.
        self.pump();
        let vhost = self.vhost()?;
        let channel = self.channel(ch)?;
        let key = channel.shared.key;
        let mut queues = channel.consumed_queues();
        let mut counted = 0u32;
        for (_, u) in std::mem::take(&mut channel.unacked) {
            counted += u32::from(u.counted);
            match u.target {
                AckTarget::Queue(q) => add_unique(&mut queues, &q),
                AckTarget::Stream(credit) => credit.release(1),
            }
        }
        channel.shared.release(counted);
        let now = now();
        for q in &queues {
            q.lock().queue.recover(key, now);
        }
        self.broker.settle(&vhost, queues).await;
        Ok(())
    }

    /// A complete `basic.publish`: routed and stored now, or held for `tx.commit`.
    pub(super) async fn on_publish(
        &mut self,
        ch: u16,
        msg: PublishedMessage,
    ) -> Result<(), AmqpError> {
        if let Some(tx) = &mut self.channel(ch)?.tx {
            tx.push(TxOp::Publish(Box::new(msg)));
            return Ok(());
        }
        self.publish_now(ch, msg)
            .await
            .map_err(|e| e.at((60, 40)).on_channel(ch))
    }

    async fn publish_now(&mut self, ch: u16, msg: PublishedMessage) -> Result<(), AmqpError> {
        if msg.publish.immediate {
            return Err(AmqpError::connection(
                ReplyCode::NotImplemented,
                "immediate=true",
            ));
        }
        if let Some(user_id) = msg.properties.user_id()
            && user_id.as_str() != self.user
        {
            return Err(AmqpError::channel(
                ReplyCode::PreconditionFailed,
                format!(
                    "user_id property set to '{}' but authenticated user was '{}'",
                    user_id.as_str(),
                    self.user
                ),
            ));
        }
        let vhost = self.vhost()?;
        let exchange = msg.publish.exchange.as_str().to_owned();
        let routing_key = msg.publish.routing_key.as_str().to_owned();
        let message = Message::new(&exchange, &routing_key, msg.properties, msg.body);
        let mandatory_copy = msg.publish.mandatory.then(|| message.clone());
        let mark = self.pending.mark();
        let mut published = self
            .broker
            .publish_message(&vhost, message, &mut self.backlogged, &mut self.pending)
            .await?;
        self.unsynced.append(&mut published.unsynced);
        if published.unroutable()
            && let Some(m) = mandatory_copy
        {
            let method = out::basic_return(ReplyCode::NoRoute, &exchange, &routing_key)?;
            out::encode_message(
                ch,
                &method,
                &m.properties,
                &m.body,
                self.frame_max,
                &mut self.out,
            )?;
        }
        let channel = self.channel(ch)?;
        if let Some(seq) = &mut channel.confirm {
            *seq += 1;
            let seq = *seq;
            channel.confirms.push((seq, published.refused == 0));
            self.pending.tag_since(mark, (ch, seq));
        }
        Ok(())
    }

    /// Appends the copies this round held for durable queues ([`crate::broker::append`]);
    /// the confirms of those that could not be stored become nacks. Returns how many could
    /// not be stored.
    pub(super) async fn append_pending(&mut self) -> usize {
        if self.pending.is_empty() {
            return 0;
        }
        let Ok(vhost) = self.vhost() else {
            return 0;
        };
        let unstored = self
            .broker
            .append_pending(
                &vhost,
                &mut self.pending,
                &mut self.backlogged,
                &mut self.unsynced,
            )
            .await;
        for (ch, seq) in unstored.confirms {
            if let Some(c) = self.channels.get_mut(&ch)
                && let Some(entry) = c.confirms.iter_mut().find(|(s, _)| *s == seq)
            {
                entry.1 = false;
            }
        }
        unstored.count
    }

    /// Fsyncs the partitions that persistent messages of this read were appended to; false if
    /// one failed.
    pub(super) async fn sync_published(&mut self) -> bool {
        let unsynced = std::mem::take(&mut self.unsynced);
        self.broker.sync_partitions(unsynced).await
    }

    /// Confirms the publishes of the last read: one `basic.ack multiple` per run of stored
    /// messages, a `basic.nack` for each refused one. Persistent messages are synced first, once
    /// for the whole read; if that fails, every confirm of the read is a nack.
    pub(super) async fn flush_confirms(&mut self) {
        let confirming = self.channels.values().any(|c| !c.confirms.is_empty());
        if !confirming {
            // Nobody waits for these to be on disk; the fsync policy's own schedule applies.
            self.unsynced.clear();
        } else if !self.sync_published().await {
            for c in self.channels.values_mut() {
                for (_, ok) in c.confirms.iter_mut() {
                    *ok = false;
                }
            }
        }
        let mut frames = Vec::new();
        for (ch, c) in self.channels.iter_mut() {
            if c.confirms.is_empty() {
                continue;
            }
            let mut run: Option<(u64, usize)> = None;
            for (seq, ok) in c.confirms.drain(..) {
                if ok {
                    run = Some((seq, run.map_or(1, |(_, n)| n + 1)));
                    continue;
                }
                if let Some((last, n)) = run.take() {
                    frames.push((*ch, out::basic_ack(last, n > 1)));
                }
                frames.push((*ch, out::basic_nack(seq, false)));
            }
            if let Some((last, n)) = run {
                frames.push((*ch, out::basic_ack(last, n > 1)));
            }
        }
        for (ch, m) in frames {
            self.send(ch, m);
        }
    }

    pub(super) fn on_confirm(&mut self, ch: u16, m: confirm::AMQPMethod) -> Result<(), AmqpError> {
        let confirm::AMQPMethod::Select(s) = m else {
            return Err(unexpected());
        };
        let c = self.channel(ch)?;
        if c.tx.is_some() {
            return Err(AmqpError::channel(
                ReplyCode::PreconditionFailed,
                "cannot switch from tx to confirm mode",
            ));
        }
        c.confirm.get_or_insert(0);
        if !s.nowait {
            self.send(
                ch,
                AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(confirm::SelectOk {})),
            );
        }
        Ok(())
    }

    pub(super) async fn on_tx(&mut self, ch: u16, m: tx::AMQPMethod) -> Result<(), AmqpError> {
        let not_tx = || {
            AmqpError::channel(
                ReplyCode::PreconditionFailed,
                "channel is not transactional",
            )
        };
        let reply = match m {
            tx::AMQPMethod::Select(_) => {
                let c = self.channel(ch)?;
                if c.confirm.is_some() {
                    return Err(AmqpError::channel(
                        ReplyCode::PreconditionFailed,
                        "cannot switch from confirm to tx mode",
                    ));
                }
                c.tx.get_or_insert_with(Vec::new);
                tx::AMQPMethod::SelectOk(tx::SelectOk {})
            }
            tx::AMQPMethod::Commit(_) => {
                let ops = std::mem::take(self.channel(ch)?.tx.as_mut().ok_or_else(not_tx)?);
                // The channel stays transactional: a new transaction starts empty.
                self.run_tx(ch, ops).await?;
                if self.append_pending().await > 0 {
                    return Err(AmqpError::channel(
                        ReplyCode::InternalError,
                        "committed messages could not be stored",
                    ));
                }
                // Committed persistent messages are on disk before commit-ok.
                if !self.sync_published().await {
                    return Err(AmqpError::channel(
                        ReplyCode::InternalError,
                        "committed messages could not be synced to disk",
                    ));
                }
                tx::AMQPMethod::CommitOk(tx::CommitOk {})
            }
            tx::AMQPMethod::Rollback(_) => {
                self.channel(ch)?.tx.as_mut().ok_or_else(not_tx)?.clear();
                tx::AMQPMethod::RollbackOk(tx::RollbackOk {})
            }
            _ => return Err(unexpected()),
        };
        self.send(ch, AMQPClass::Tx(reply));
        Ok(())
    }

    async fn run_tx(&mut self, ch: u16, ops: Vec<TxOp>) -> Result<(), AmqpError> {
        for op in ops {
            match op {
                TxOp::Publish(msg) => self.publish_now(ch, *msg).await?,
                TxOp::Ack { tag, multiple } => self.settle(ch, tag, multiple, Settle::Ack).await?,
                TxOp::Nack {
                    tag,
                    multiple,
                    requeue,
                } => {
                    let how = if requeue {
                        Settle::Requeue
                    } else {
                        Settle::Discard
                    };
                    self.settle(ch, tag, multiple, how).await?
                }
            }
        }
        Ok(())
    }
}
