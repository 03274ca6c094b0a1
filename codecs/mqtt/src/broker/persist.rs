//! A session's life: opening it (with takeover of a live connection), parking it when its
//! connection ends, expiring it, keeping persistent sessions in the routing table's
//! `mqtt.sessions` space, and restoring them — with the messages they missed — after a restart.
//!
//! A stored session holds its subscriptions and, per partition, the offset from which it has
//! not yet received everything. After a restart its queue is refilled by reading the log from
//! there: the log is the queue, as DESIGN.md's unified model has it.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchboard_model::{Offset, StreamName, TopicPartition};
use switchboard_router::now_ms;

use super::sessions::{Registered, low_mark};
use super::{Broker, Delivery, Positions, SessionShared, SessionState, Subscription, lock};
use crate::mapping::Message;
use crate::topic::{self, FilterSpec};
use crate::wire::{QoS, SubscriptionOptions};

const SPACE: &str = "mqtt.sessions";
/// How long a new connection waits for the one it takes over to let go of the session.
const TAKEOVER_WAIT: Duration = Duration::from_secs(5);
/// Bytes read at a time when refilling a restored session's queue.
const REPLAY_READ_BYTES: usize = 1024 * 1024;

/// A session handed to a new connection.
pub struct Opened {
    pub shared: Arc<SessionShared>,
    pub state: SessionState,
    /// The session existed and is resumed (CONNACK Session Present).
    pub session_present: bool,
    pub generation: u64,
}

#[derive(Serialize, Deserialize)]
struct StoredSession {
    expiry_interval: u32,
    saved_ms: i64,
    subscriptions: Vec<StoredSubscription>,
    positions: Vec<(StreamName, u32, Offset)>,
}

#[derive(Serialize, Deserialize)]
struct StoredSubscription {
    filter: String,
    qos: u8,
    no_local: bool,
    retain_as_published: bool,
    retain_handling: u8,
    id: Option<u32>,
}

impl Broker {
    /// Opens (or resumes) the session of `client_id` for a new connection, taking it over from
    /// a connection that still holds it.
    pub async fn open_session(
        self: &Arc<Self>,
        client_id: &str,
        clean_start: bool,
        expiry_interval: u32,
    ) -> Opened {
        loop {
            let shared = {
                let mut sessions = lock(&self.sessions);
                match sessions.get(client_id) {
                    Some(r) => r.0.clone(),
                    None => {
                        let shared = SessionShared::new(client_id.to_owned());
                        sessions.insert(Registered(shared.clone()));
                        shared
                    }
                }
            };
            let _serial = shared.connect_lock.lock().await;
            // The session may have expired while we waited for the lock: start over with the
            // registry's current entry.
            let current = lock(&self.sessions).get(client_id).map(|r| r.0.clone());
            if !current.is_some_and(|c| Arc::ptr_eq(&c, &shared)) {
                continue;
            }
            let previous = shared.holder();
            if previous != 0 {
                shared.kick(previous);
                if !self.wait_released(&shared, TAKEOVER_WAIT).await {
                    tracing::warn!(client_id, "the connection taken over did not close in time");
                }
            }
            let parked = lock(&shared.parked).take();
            let had_state = parked.is_some();
            let (mut state, session_present) = match parked.map(|b| *b) {
                Some(st) if !clean_start => (st, true),
                Some(st) => {
                    self.drop_subscriptions(&shared, &st);
                    shared.clear_outbox();
                    (SessionState::default(), false)
                }
                None => (SessionState::default(), false),
            };
            let was_stored = state.expiry_interval > 0;
            state.expiry_interval = expiry_interval;
            if had_state && was_stored && (!session_present || expiry_interval == 0) {
                self.forget_stored(client_id).await;
            }
            let generation = shared
                .generation
                .fetch_add(1, std::sync::atomic::Ordering::AcqRel)
                + 1;
            shared.hold(generation);
            shared.set_online(true);
            if self.cancel.is_cancelled() {
                // Shutdown began after the connection was accepted: it closes at once.
                shared.kick(generation);
            }
            return Opened {
                shared: shared.clone(),
                state,
                session_present,
                generation,
            };
        }
    }

    /// Waits until no connection holds `shared`, at most `within`; false on time-out.
    async fn wait_released(&self, shared: &SessionShared, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if shared.holder() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, released).await.is_err() {
                return false;
            }
        }
    }

    /// Called when a connection ends: keeps the session for its expiry interval (stored, so it
    /// survives a restart) or ends it now.
    pub async fn park(
        self: &Arc<Self>,
        shared: Arc<SessionShared>,
        generation: u64,
        state: SessionState,
    ) {
        shared.set_online(false);
        // A disconnected subscriber holds no publisher back.
        self.release_publishers(&shared);
        // The session stays held until it is parked: a connection taking over meanwhile waits
        // for the release instead of finding neither a live connection nor a parked state.
        if state.expiry_interval == 0 {
            // A connection taking over holds the connect lock and will reuse this entry; the
            // registry must keep pointing at it.
            let taken_over = shared.connect_lock.try_lock().is_err();
            self.end_session(&shared, &state, !taken_over);
        } else {
            self.store_session(&shared, &state).await;
            let expiry = state.expiry_interval;
            *lock(&shared.parked) = Some(Box::new(state));
            if expiry != u32::MAX {
                self.schedule_expiry(
                    shared.clone(),
                    generation,
                    Duration::from_secs(expiry.into()),
                );
            }
        }
        shared.release(generation);
        self.released.notify_waiters();
    }

    /// Removes a session that has ended: its subscriptions, queue and (with `unregister`)
    /// registry entry.
    fn end_session(&self, shared: &Arc<SessionShared>, state: &SessionState, unregister: bool) {
        self.drop_subscriptions(shared, state);
        shared.clear_outbox();
        if !unregister {
            return;
        }
        let mut sessions = lock(&self.sessions);
        if sessions
            .get(shared.client_id.as_str())
            .is_some_and(|r| Arc::ptr_eq(&r.0, shared))
        {
            sessions.remove(shared.client_id.as_str());
        }
    }

    fn drop_subscriptions(&self, shared: &SessionShared, state: &SessionState) {
        for sub in state.subscriptions.values() {
            self.remove_subscription(&shared.client_id, &sub.spec);
        }
    }

    fn schedule_expiry(
        self: &Arc<Self>,
        shared: Arc<SessionShared>,
        generation: u64,
        after: Duration,
    ) {
        let broker = self.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(after) => {}
                _ = broker.cancel.cancelled() => return,
            }
            let _serial = shared.connect_lock.lock().await;
            let current = shared.generation.load(std::sync::atomic::Ordering::Acquire);
            if current != generation || shared.is_online() {
                return;
            }
            let Some(state) = lock(&shared.parked).take() else {
                return;
            };
            tracing::debug!(client_id = %shared.client_id, "session expired");
            broker.end_session(&shared, &state, true);
            broker.forget_stored(&shared.client_id).await;
        });
    }

    /// Publishes a will message after `delay`, unless the client has reconnected by then
    /// (MQTT 5 §3.1.3.2).
    pub fn schedule_will(
        self: &Arc<Self>,
        shared: Arc<SessionShared>,
        generation: u64,
        will: Message,
        delay: Duration,
    ) {
        let broker = self.clone();
        self.tracker.spawn(async move {
            if !delay.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = broker.cancel.cancelled() => return,
                }
                let current = shared.generation.load(std::sync::atomic::Ordering::Acquire);
                if current != generation {
                    return;
                }
            }
            let durable = will.qos != QoS::AtMostOnce;
            if let Err(e) = broker.publish(vec![will], durable).await {
                tracing::warn!(client_id = %shared.client_id, error = %e, "will message not published");
            }
        });
    }

    /// Writes a persistent session to the routing table. Failures are logged: the session
    /// lives on in memory, only a restart would lose it.
    pub async fn store_session(&self, shared: &SessionShared, state: &SessionState) {
        if state.expiry_interval == 0 {
            return;
        }
        let mut marks = self.tail_positions();
        let mut low = Positions::new();
        shared.queued_low_marks(&mut low);
        for inflight in state.inflight.values() {
            low_mark(&mut low, &inflight.delivery);
        }
        for (tp, offset) in low {
            marks.entry(tp).and_modify(|o| *o = (*o).min(offset));
        }
        let stored = StoredSession {
            expiry_interval: state.expiry_interval,
            saved_ms: now_ms(),
            subscriptions: state
                .subscriptions
                .iter()
                .map(|(f, s)| stored_sub(f, s))
                .collect(),
            positions: marks
                .into_iter()
                .map(|(tp, o)| (tp.stream, tp.partition, o))
                .collect(),
        };
        let bytes = match serde_json::to_vec(&stored) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode a session");
                return;
            }
        };
        if let Err(e) = self.router.put(SPACE, &shared.client_id, Some(bytes)).await {
            tracing::warn!(client_id = %shared.client_id, error = %e, "session not stored");
        }
    }

    async fn forget_stored(&self, client_id: &str) {
        if let Err(e) = self.router.put(SPACE, client_id, None).await {
            tracing::warn!(client_id, error = %e, "stored session not removed");
        }
    }

    /// Restores stored sessions, offline, with the messages they missed queued. Runs before
    /// the tailers start, so the log's end is where replay stops and live delivery begins.
    pub(super) async fn restore_sessions(self: &Arc<Self>) {
        for (client_id, bytes) in self.router.space(SPACE) {
            let stored: StoredSession = match serde_json::from_slice(&bytes) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(%client_id, error = %e, "skipping a stored session that does not decode");
                    continue;
                }
            };
            let elapsed_s = (now_ms() - stored.saved_ms).max(0) / 1000;
            let left = if stored.expiry_interval == u32::MAX {
                None
            } else {
                let left = i64::from(stored.expiry_interval) - elapsed_s;
                if left <= 0 {
                    self.forget_stored(&client_id).await;
                    continue;
                }
                Some(Duration::from_secs(left as u64))
            };
            let shared = SessionShared::new(client_id.clone());
            let mut state = SessionState {
                expiry_interval: stored.expiry_interval,
                ..Default::default()
            };
            for s in &stored.subscriptions {
                let Some(sub) = restored_sub(s) else { continue };
                self.add_subscription(&shared, &sub);
                state.subscriptions.insert(s.filter.clone(), sub);
            }
            for (stream, partition, from) in &stored.positions {
                let tp = TopicPartition::new(stream.clone(), *partition);
                self.replay(&shared, &state, &tp, *from).await;
            }
            tracing::info!(%client_id, queued = shared.queued(), "restored MQTT session");
            *lock(&shared.parked) = Some(Box::new(state));
            lock(&self.sessions).replace(Registered(shared.clone()));
            if let Some(after) = left {
                self.schedule_expiry(shared, 0, after);
            }
        }
    }

    /// Queues for a restored session what it missed in one partition.
    async fn replay(
        &self,
        shared: &SessionShared,
        state: &SessionState,
        tp: &TopicPartition,
        mut from: Offset,
    ) {
        loop {
            let chunk = match self.router.read(tp, from, REPLAY_READ_BYTES).await {
                Ok(c) if !c.batches.is_empty() => c,
                Ok(_) => return,
                Err(e) => {
                    tracing::warn!(%tp, error = %e, "cannot replay a restored session's messages");
                    return;
                }
            };
            let followed = switchboard_model::records_from(chunk.batches, from);
            for r in &followed.records {
                let msg = Message::from_record(tp.stream.as_str(), r);
                let Some((qos, ids)) = best_match(&shared.client_id, state, &msg) else {
                    continue;
                };
                if qos == QoS::AtMostOnce || msg.is_expired(now_ms()) {
                    continue;
                }
                let d = Delivery {
                    msg: Arc::new(msg),
                    qos,
                    retain: false,
                    subscription_ids: ids,
                    origin: Some((tp.clone(), r.offset)),
                };
                shared.push(d, self.settings.max_queued_messages);
            }
            if followed.next <= from {
                tracing::warn!(%tp, from, "replay stops at a batch that does not decode");
                return;
            }
            from = followed.next;
        }
    }
}

/// The delivery QoS and subscription ids of a message for one session's own subscriptions.
fn best_match(client_id: &str, state: &SessionState, msg: &Message) -> Option<(QoS, Vec<u32>)> {
    let mut best: Option<(QoS, Vec<u32>)> = None;
    for sub in state.subscriptions.values() {
        if !topic::matches(&sub.spec.filter, &msg.topic) {
            continue;
        }
        if sub.options.no_local && msg.publisher.as_deref() == Some(client_id) {
            continue;
        }
        let qos = msg.qos.min(sub.options.qos);
        let entry = best.get_or_insert((qos, Vec::new()));
        entry.0 = entry.0.max(qos);
        entry.1.extend(sub.id);
    }
    best
}

fn stored_sub(filter: &str, s: &Subscription) -> StoredSubscription {
    StoredSubscription {
        filter: filter.to_owned(),
        qos: s.options.qos as u8,
        no_local: s.options.no_local,
        retain_as_published: s.options.retain_as_published,
        retain_handling: s.options.retain_handling,
        id: s.id,
    }
}

fn restored_sub(s: &StoredSubscription) -> Option<Subscription> {
    Some(Subscription {
        spec: FilterSpec::parse(&s.filter).ok()?,
        options: SubscriptionOptions {
            qos: QoS::from_u8(s.qos)?,
            no_local: s.no_local,
            retain_as_published: s.retain_as_published,
            retain_handling: s.retain_handling,
        },
        id: s.id,
    })
}
