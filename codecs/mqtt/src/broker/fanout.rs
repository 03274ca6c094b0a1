//! Fan-out: one tailer per partition of each MQTT-visible stream reads what was appended and
//! pushes each record to the sessions whose subscriptions match its topic. An MQTT publisher
//! delivers its own messages as soon as they are stored, on its own task, when the tailer has
//! nothing older left to deliver: the tailer then only has records from other front ends (a
//! Kafka producer) and publishes that came in while it was busy.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use switchboard_model::{Offset, TopicPartition, next_offset, records_from};
use switchboard_router::now_ms;

use super::{Broker, Delivery, PublishError, SessionShared, lock, read};
use crate::mapping::Message;
use crate::wire::QoS;

/// How often the partition counts of MQTT-visible streams are checked.
const PARTITION_CHECK: Duration = Duration::from_secs(5);

/// Where a partition's fan-out stands: every record below `pos` has been handed to the
/// sessions. The tailer and publishers delivering their own messages take `turn` to deliver,
/// so each record is delivered once and in offset order.
pub(super) struct Tail {
    pos: Arc<AtomicU64>,
    turn: Mutex<()>,
}

/// Up to this many matching subscriptions, sessions are told apart by a scan of the targets
/// found so far rather than by a map.
const LINEAR_DEDUP: usize = 16;

/// One session's share of a record: the highest QoS of its matching subscriptions, the
/// retain flag to send, and the matching subscription ids.
struct Target {
    session: Arc<SessionShared>,
    qos: QoS,
    retain: bool,
    ids: Vec<u32>,
}

impl Broker {
    /// Starts a tailer for every partition of the MQTT-visible streams, and a watch that
    /// starts more when a stream grows (a Kafka client may add partitions).
    pub(super) async fn start_tailers(self: &Arc<Self>) -> Result<(), PublishError> {
        self.start_missing_tailers().await?;
        let broker = self.clone();
        self.tracker
            .spawn(async move { broker.watch_partitions().await });
        Ok(())
    }

    async fn start_missing_tailers(self: &Arc<Self>) -> Result<(), PublishError> {
        let streams = read(&self.streams).clone();
        for (stream, partitions) in streams {
            for p in 0..partitions {
                let tp = TopicPartition::new(stream.clone(), p);
                if lock(&self.tails).contains_key(&tp) {
                    continue;
                }
                let hw = self.router.bounds(&tp).await?.high_watermark;
                let tail = Arc::new(Tail {
                    pos: Arc::new(AtomicU64::new(hw)),
                    turn: Mutex::new(()),
                });
                lock(&self.tails).insert(tp.clone(), tail.clone());
                let broker = self.clone();
                self.tracker
                    .spawn(async move { broker.tail(tp, tail).await });
            }
        }
        Ok(())
    }

    /// Re-reads the partition counts of the MQTT-visible streams from the routing table. A
    /// metadata check every few seconds, not a storage poll: records are still pushed.
    async fn watch_partitions(self: Arc<Self>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(PARTITION_CHECK) => {}
                _ = self.cancel.cancelled() => return,
            }
            let mut grew = false;
            {
                let mut streams = super::write(&self.streams);
                for (name, partitions) in streams.iter_mut() {
                    if let Some(meta) = self.router.stream(name)
                        && meta.partitions > *partitions
                    {
                        *partitions = meta.partitions;
                        grew = true;
                    }
                }
            }
            if grew && let Err(e) = self.start_missing_tailers().await {
                tracing::warn!(error = %e, "cannot start MQTT fan-out for new partitions");
            }
        }
    }

    /// Current tailer positions.
    pub(crate) fn tail_positions(&self) -> super::Positions {
        lock(&self.tails)
            .iter()
            .map(|(tp, tail)| (tp.clone(), tail.pos.load(Ordering::Acquire)))
            .collect()
    }

    async fn tail(self: Arc<Self>, tp: TopicPartition, tail: Arc<Tail>) {
        let handle = |from: Offset, batches: Vec<Bytes>| {
            let _turn = lock(&tail.turn);
            // A publisher may have delivered part of the chunk since it was read.
            let from = from.max(tail.pos.load(Ordering::Acquire));
            let next = self.fan_out(&tp, from, batches).max(from);
            tail.pos.store(next, Ordering::Release);
            std::future::ready(next)
        };
        self.router
            .tail(&tp, tail.pos.clone(), |_| true, &self.cancel, handle)
            .await;
    }

    /// Delivers messages a publisher has just stored in `tp` from `base` on, if everything
    /// before them has been delivered and the tailer is not delivering right now; otherwise the
    /// tailer delivers them when it reads them. Runs before the append wakes the tailer
    /// ([`Router::append_then`]), so a tailer that is left with nothing sleeps on.
    pub(super) fn deliver_own(
        &self,
        tp: &TopicPartition,
        base: Offset,
        msgs: Vec<Message>,
        backlog: &mut Vec<Arc<SessionShared>>,
    ) {
        let Some(tail) = lock(&self.tails).get(tp).cloned() else {
            return;
        };
        let Ok(_turn) = tail.turn.try_lock() else {
            return;
        };
        if tail.pos.load(Ordering::Acquire) != base {
            return;
        }
        let next = base + msgs.len() as Offset;
        for (offset, msg) in (base..).zip(msgs) {
            self.deliver(tp, offset, Arc::new(msg), Some(&mut *backlog));
        }
        tail.pos.store(next, Ordering::Release);
    }

    /// Delivers the records at or after `from`; returns the offset after the last batch.
    fn fan_out(&self, tp: &TopicPartition, from: Offset, batches: Vec<Bytes>) -> Offset {
        if next_offset(&batches, from) <= from {
            return from;
        }
        let followed = records_from(batches, from);
        if followed.unreadable > 0 {
            tracing::warn!(%tp, from, batches = followed.unreadable,
                "MQTT subscribers cannot receive batches that do not decode");
        }
        for r in &followed.records {
            let msg = Message::from_record(tp.stream.as_str(), r);
            self.deliver(tp, r.offset, Arc::new(msg), None);
        }
        followed.next
    }

    /// Queues `msg` for the sessions it matches. `backlog`: the publisher's, when it delivers
    /// its own message (flow control).
    fn deliver(
        &self,
        tp: &TopicPartition,
        offset: Offset,
        msg: Arc<Message>,
        mut backlog: Option<&mut Vec<Arc<SessionShared>>>,
    ) {
        if msg.is_expired(now_ms()) {
            return;
        }
        let origin = Some((tp.clone(), offset));
        for t in self.targets(&msg) {
            let d = Delivery {
                msg: msg.clone(),
                qos: t.qos,
                retain: t.retain,
                subscription_ids: t.ids,
                origin: origin.clone(),
            };
            let queued = t.session.push(d, self.settings.max_queued_messages);
            // QoS 0 is not queued for a disconnected client by design: that is no drop.
            if !queued && (t.qos != QoS::AtMostOnce || t.session.is_online()) {
                self.metrics.messages_dropped.inc();
            }
            if let Some(backlog) = backlog.as_deref_mut() {
                self.note_backlog(&t.session, &msg, backlog);
            }
        }
    }

    /// The sessions a message goes to. A client with several matching subscriptions gets it
    /// once, at the highest of their QoS, with all their identifiers (MQTT 5 §3.3.4); a shared
    /// group gets it once, at one member, preferring members that are online.
    fn targets(&self, msg: &Message) -> Vec<Target> {
        let subs = read(&self.subs);
        let matched = subs.matches(&msg.topic);
        // One target per session, however many of its subscriptions match: found by a scan
        // while the matches are few (the common case, and no map to allocate), by an index of
        // session identities beyond.
        let mut out: Vec<Target> = Vec::with_capacity(matched.plain.len());
        let mut index: HashMap<*const SessionShared, usize> = HashMap::new();
        let scan = matched.plain.len() <= LINEAR_DEDUP;
        for (client, e) in matched.plain {
            if e.options.no_local && msg.publisher.as_deref() == Some(client.as_str()) {
                continue;
            }
            let seen = if scan {
                out.iter().position(|t| Arc::ptr_eq(&t.session, &e.session))
            } else {
                index.get(&Arc::as_ptr(&e.session)).copied()
            };
            match seen {
                Some(i) => out[i].absorb(msg, e),
                None => {
                    if !scan {
                        index.insert(Arc::as_ptr(&e.session), out.len());
                    }
                    out.push(Target::new(msg, e));
                }
            }
        }
        // Each shared group delivers its own copy to the member it picks, even to a session
        // that also gets the message through its own subscriptions (MQTT 5 §4.8.2: a copy per
        // matching subscription that is shared; mosquitto does the same).
        for (_group, members) in matched.shared {
            let online = members.values().filter(|e| e.session.is_online()).count();
            let pool = if online > 0 { online } else { members.len() };
            let pick = (self.shared_cursor.fetch_add(1, Ordering::Relaxed) % pool as u64) as usize;
            let chosen = members
                .iter()
                .filter(|(_, e)| online == 0 || e.session.is_online())
                .nth(pick);
            if let Some((_, e)) = chosen {
                out.push(Target::new(msg, e));
            }
        }
        out
    }
}

impl Target {
    fn new(msg: &Message, e: &super::SubEntry) -> Self {
        Self {
            session: e.session.clone(),
            qos: msg.qos.min(e.options.qos),
            retain: e.options.retain_as_published && msg.retain,
            ids: e.id.into_iter().collect(),
        }
    }

    /// Another subscription of the same session matches too.
    fn absorb(&mut self, msg: &Message, e: &super::SubEntry) {
        self.qos = self.qos.max(msg.qos.min(e.options.qos));
        self.retain |= e.options.retain_as_published && msg.retain;
        self.ids.extend(e.id);
    }
}
