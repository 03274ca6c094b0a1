//! Broker-wide AMQP state shared by every connection: virtual hosts with their exchanges,
//! bindings and queues, the publish path, and dispatch from queues to consumers.
//!
//! A publish is routed by the vhost's [`Topology`], stored in every queue it reaches (durable
//! queues append it to their stream first), and each queue then dispatches to its consumers'
//! channels ([`outbox`]). Dead letters go round the same path. Nothing polls: deliveries are
//! pushed when a message arrives or credit frees up, and TTLs arm one timer per queue.

pub(crate) mod append;
mod declare;
pub(crate) mod flow;
pub mod outbox;
mod persist;
pub mod queues;
pub mod streams;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use amq_protocol::protocol::BasicProperties;
use amq_protocol::types::AMQPValue;
use bytes::Bytes;
use switchboard_model::{BatchBuilder, TopicPartition};
use switchboard_router::{Router, RouterError, now_ms};
use switchboard_storage::Durability;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[cfg(test)]
pub(crate) use declare::durable_stream_name;
pub use declare::{DeclaredQueue, QueueDeclare};
pub(crate) use flow::Backlogged;
pub use queues::{Backing, QueueHandle, QueueSpec};

use append::PendingAppends;

use crate::error::AmqpError;
use crate::mapping;
use crate::metrics::AmqpMetrics;
use crate::model::{Destination, Topology};
use crate::queue::{DeadLetter, Message, PublishOutcome, parse_expiration};
use crate::settings::AmqpSettings;
use crate::{ReplyCode, mapping::is_persistent};

/// Dead letters followed per settle before giving up on a chain (a DLX cycle that keeps
/// refilling itself), so one client action cannot spin the broker.
const MAX_DEAD_LETTER_HOPS: usize = 10_000;

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("restoring AMQP definitions failed: {0}")]
    Router(#[from] RouterError),
    #[error("stored AMQP definitions of vhost '{vhost}' are unreadable: {reason}")]
    Corrupt { vhost: String, reason: String },
}

/// One virtual host: its own exchanges, bindings and queues.
pub struct VHost {
    pub name: String,
    state: Mutex<VhostState>,
    /// Serializes rewrites of the stored definitions so the last write holds the last state.
    defs_lock: tokio::sync::Mutex<()>,
}

pub(crate) struct VhostState {
    pub topology: Topology,
    pub queues: HashMap<String, Arc<QueueHandle>>,
}

impl VHost {
    fn new(name: &str) -> Arc<Self> {
        Arc::new(Self {
            name: name.to_owned(),
            state: Mutex::new(VhostState {
                topology: Topology::new(),
                queues: HashMap::new(),
            }),
            defs_lock: tokio::sync::Mutex::new(()),
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, VhostState> {
        lock(&self.state)
    }

    pub fn queue(&self, name: &str) -> Option<Arc<QueueHandle>> {
        self.lock().queues.get(name).cloned()
    }

    /// The queues a message published to `exchange` reaches.
    fn route(
        &self,
        exchange: &str,
        routing_key: &str,
        properties: &BasicProperties,
    ) -> Result<Vec<Arc<QueueHandle>>, AmqpError> {
        let state = self.lock();
        if exchange.is_empty() {
            // The default exchange routes to the queue named by the key and nowhere else
            // (§3.1.3.1; it cannot be bound or given an alternate): one lookup, without the
            // general walk over exchange-to-exchange bindings and its sets.
            return Ok(state.queues.get(routing_key).cloned().into_iter().collect());
        }
        let destinations =
            state
                .topology
                .route(exchange, routing_key, properties.headers().as_ref())?;
        Ok(destinations
            .into_iter()
            .filter_map(|d| match d {
                Destination::Queue(q) => state.queues.get(&q).cloned(),
                Destination::Exchange(_) => None,
            })
            .collect())
    }
}

/// What became of a publish.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Published {
    /// Queues that stored it.
    pub stored: usize,
    /// Queues that refused it (`x-overflow = reject-publish`, a storage failure): the
    /// publisher gets `basic.nack`.
    pub refused: usize,
    /// Stream partitions a persistent copy was appended to without an fsync yet: synced once
    /// per read by the session before it confirms (one fsync for a burst of publishes instead
    /// of one each), and at once by [`AmqpBroker::publish`].
    pub(crate) unsynced: Vec<TopicPartition>,
}

impl Published {
    /// No queue matched: `basic.return` when mandatory.
    pub fn unroutable(&self) -> bool {
        self.stored == 0 && self.refused == 0
    }
}

/// Where publishes to `amq.topic` in the default vhost also go: the MQTT topic space, which
/// that exchange shares with MQTT (as RabbitMQ's MQTT plugin does). Set by the server when both
/// front ends run; see [`AmqpBroker::set_topic_bridge`].
pub trait TopicBridge: Send + Sync {
    /// Stores the message under the MQTT topic for `routing_key`; false if it could not be
    /// (the routing key has no MQTT form, or storing failed).
    fn forward<'a>(
        &'a self,
        routing_key: &'a str,
        properties: &'a BasicProperties,
        body: &'a Bytes,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + 'a>>;
}

/// The exchange and vhost that [`TopicBridge`] links to MQTT.
pub const BRIDGED_EXCHANGE: &str = "amq.topic";
pub const BRIDGED_VHOST: &str = "/";

pub struct AmqpBroker {
    topic_bridge: std::sync::OnceLock<Arc<dyn TopicBridge>>,
    router: Arc<Router>,
    pub settings: AmqpSettings,
    pub metrics: AmqpMetrics,
    /// Looked up for every publish, MQTT's too (the `amq.topic` link): foldhash.
    vhosts: HashMap<String, Arc<VHost>, foldhash::fast::RandomState>,
    next_id: AtomicU64,
    live_connections: AtomicUsize,
    connections_gone: Notify,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl AmqpBroker {
    /// Restores the durable definitions and queue contents of every vhost, and starts the
    /// background tasks (ack-state persistence, stream trimming).
    pub async fn start(
        router: Arc<Router>,
        settings: AmqpSettings,
        metrics: AmqpMetrics,
        cancel: CancellationToken,
        tracker: TaskTracker,
    ) -> Result<Arc<Self>, StartError> {
        let mut names = settings.vhosts.clone();
        if names.is_empty() {
            names.push("/".to_owned());
        }
        let vhosts = names.iter().map(|n| (n.clone(), VHost::new(n))).collect();
        let broker = Arc::new(Self {
            topic_bridge: std::sync::OnceLock::new(),
            router,
            settings,
            metrics,
            vhosts,
            next_id: AtomicU64::new(1),
            live_connections: AtomicUsize::new(0),
            connections_gone: Notify::new(),
            cancel,
            tracker,
        });
        for vhost in broker.vhosts.values() {
            broker.restore_vhost(vhost).await?;
        }
        let b = broker.clone();
        broker.tracker.spawn(async move { b.persist_loop().await });
        Ok(broker)
    }

    pub fn router(&self) -> &Arc<Router> {
        &self.router
    }

    pub fn vhost(&self, name: &str) -> Option<&Arc<VHost>> {
        self.vhosts.get(name)
    }

    pub fn cancel_token(&self) -> &CancellationToken {
        &self.cancel
    }

    pub fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }

    /// A broker-wide unique id (connections, consumers).
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Checks a user's password, and that loopback-only users come from a loopback address.
    pub fn check_credentials(&self, user: &str, password: &str, loopback_peer: bool) -> bool {
        let known = self
            .settings
            .users
            .get(user)
            .is_some_and(|p| p.as_str() == password);
        known && (loopback_peer || !self.settings.loopback_only_users.iter().any(|u| u == user))
    }

    pub(crate) fn connection_opened(&self) {
        self.live_connections.fetch_add(1, Ordering::AcqRel);
    }

    pub(crate) fn connection_closed(&self) {
        if self.live_connections.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.connections_gone.notify_waiters();
        }
    }

    /// Publishes a message as `basic.publish` does, for other front ends (MQTT's link to
    /// `amq.topic`) as much as for AMQP sessions: routes it from `exchange` in `vhost`,
    /// stores it in every queue reached and wakes their consumers. Returns once it is stored
    /// (after an fsync for a persistent message in a durable queue).
    pub async fn publish(
        self: &Arc<Self>,
        vhost: &str,
        exchange: &str,
        routing_key: &str,
        properties: BasicProperties,
        body: Bytes,
    ) -> Result<Published, AmqpError> {
        let vhost = self.vhost(vhost).ok_or_else(|| {
            AmqpError::connection(ReplyCode::NotAllowed, format!("vhost '{vhost}' not found"))
        })?;
        let message = Message::new(exchange, routing_key, properties, body);
        let mut published = self.route_and_store(vhost, message, None).await?;
        self.sync(&mut published).await;
        Ok(published)
    }

    /// Makes the persistent copies of a publish durable: fsyncs (under the storage's fsync
    /// policy) every partition it was appended to. A failed sync turns the stored copies into
    /// refusals, so the publisher is nacked rather than told a lie.
    pub(crate) async fn sync(&self, published: &mut Published) {
        if !self
            .sync_partitions(std::mem::take(&mut published.unsynced))
            .await
        {
            published.refused += published.stored;
            published.stored = 0;
        }
    }

    /// Fsyncs each partition once (under the storage's fsync policy); false if one failed.
    pub(crate) async fn sync_partitions(&self, mut tps: Vec<TopicPartition>) -> bool {
        tps.sort();
        tps.dedup();
        let mut ok = true;
        for tp in tps {
            if let Err(e) = self.router.sync(&tp).await {
                tracing::warn!(%tp, error = %e, "persistent messages not synced");
                ok = false;
            }
        }
        ok
    }

    /// Links `amq.topic` of the default vhost with MQTT: publishes there are also forwarded to
    /// `bridge`. Messages coming the other way enter through [`AmqpBroker::publish`], which
    /// does not forward, so nothing loops. Set once; later calls are ignored.
    pub fn set_topic_bridge(&self, bridge: Arc<dyn TopicBridge>) {
        let _ = self.topic_bridge.set(bridge);
    }

    /// Whether anything is bound to `exchange` in `vhost`: the MQTT link skips routing
    /// messages nobody would receive.
    pub fn has_bindings(&self, vhost: &str, exchange: &str) -> bool {
        self.vhost(vhost)
            .is_some_and(|v| !v.lock().topology.bindings_from(exchange).is_empty())
    }

    /// A publish from an AMQP client: routed and stored like [`AmqpBroker::publish`], and for
    /// `amq.topic` in the default vhost also forwarded to the MQTT topic space, where it
    /// counts as routed. Queues it leaves above their high-water mark go to `backlogged`
    /// (flow control).
    pub(crate) async fn publish_message(
        self: &Arc<Self>,
        vhost: &Arc<VHost>,
        message: Message,
        backlogged: &mut Backlogged,
        pending: &mut PendingAppends,
    ) -> Result<Published, AmqpError> {
        let bridge = self
            .topic_bridge
            .get()
            .filter(|_| message.exchange == BRIDGED_EXCHANGE && vhost.name == BRIDGED_VHOST)
            .cloned();
        let Some(bridge) = bridge else {
            return self
                .route_and_store(vhost, message, Some((backlogged, pending)))
                .await;
        };
        let forwarded = bridge
            .forward(&message.routing_key, &message.properties, &message.body)
            .await;
        let mut published = self
            .route_and_store(vhost, message, Some((backlogged, pending)))
            .await?;
        if forwarded {
            published.stored += 1;
        }
        Ok(published)
    }

    /// Routes and stores a message. From a session (`round`: its flow-control notes and held
    /// appends), copies for durable queues may wait for the end of the round
    /// ([`append`]); without one, everything is stored before this returns.
    async fn route_and_store(
        self: &Arc<Self>,
        vhost: &Arc<VHost>,
        message: Message,
        round: Option<(&mut Backlogged, &mut PendingAppends)>,
    ) -> Result<Published, AmqpError> {
        // An invalid expiration is refused before the message reaches any queue, so it is
        // never half-published.
        if let Some(exp) = message.properties.expiration() {
            parse_expiration(exp.as_str()).map_err(|e| AmqpError::from(e).at((60, 40)))?;
        }
        let targets = vhost.route(&message.exchange, &message.routing_key, &message.properties)?;
        self.metrics.publishes_received.inc();
        if targets.is_empty() {
            self.metrics.messages_unroutable.inc();
            return Ok(Published::default());
        }
        let (targets, held, backlogged) = match round {
            // Held copies are dispatched, and checked for backlog, when the round's appends
            // run: only the queues stored into now are settled here.
            Some((backlogged, pending)) => {
                let (held, now): (Vec<_>, Vec<_>) =
                    targets.into_iter().partition(|q| q.takes_held_appends());
                pending.hold(&held, &message);
                (now, held.len(), Some(backlogged))
            }
            None => (targets, 0, None),
        };
        let mut published = self.store(&targets, message).await;
        published.stored += held;
        self.settle(vhost, targets.iter().cloned()).await;
        if let Some(backlogged) = backlogged {
            // After dispatch: what a waiting consumer took at once is no backlog.
            let flow = &self.settings.flow;
            for q in targets.into_iter().filter(|q| q.above_high_water(flow)) {
                backlogged.add(q);
            }
        }
        Ok(published)
    }

    /// Stores `message` in each queue. Failures are counted, not returned: the publisher is
    /// nacked and the other queues keep their copy.
    async fn store(&self, targets: &[Arc<QueueHandle>], message: Message) -> Published {
        let mut published = Published::default();
        let message = Arc::new(message);
        let now = now_ms().max(0) as u64;
        for q in targets {
            let result = match &q.spec.backing {
                Backing::Memory => q
                    .lock()
                    .queue
                    .publish((*message).clone(), now)
                    .map_err(AmqpError::from),
                Backing::Stream(_) => {
                    self.store_durable(q, &message, now, &mut published.unsynced)
                        .await
                }
                Backing::StreamQueue(_) => {
                    self.append_to_stream_queue(q, &message, &mut published.unsynced)
                        .await
                }
            };
            match result {
                Ok(PublishOutcome::Enqueued(_)) => published.stored += 1,
                Ok(PublishOutcome::Rejected) => published.refused += 1,
                Err(e) => {
                    tracing::warn!(queue = q.name(), error = %e, "cannot store a message");
                    published.refused += 1;
                }
            }
        }
        published
    }

    /// A durable classic queue: append to its stream (a persistent message's partition goes to
    /// `unsynced`, to be fsynced before it is confirmed), then hold the message at the offset
    /// the stream gave it.
    async fn store_durable(
        &self,
        q: &Arc<QueueHandle>,
        message: &Message,
        now: u64,
        unsynced: &mut Vec<TopicPartition>,
    ) -> Result<PublishOutcome, AmqpError> {
        let Some(tp) = q.backing_partition() else {
            return Err(AmqpError::internal("durable queue without a stream"));
        };
        let _order = q.append_lock.lock().await;
        {
            // Refuse before appending, so a refused message leaves nothing to restore.
            let mut inner = q.lock();
            if inner.queue.rejects_publish(message.body.len() as u64) {
                let next = inner.queue.next_offset();
                return Ok(inner.queue.publish_at(next, message.clone(), now)?);
            }
        }
        let mut batch = BatchBuilder::new();
        mapping::write_record(message, now as i64, &mut batch);
        let Some(batch) = batch.build() else {
            return Err(AmqpError::internal("cannot encode a record batch"));
        };
        let appended = self
            .router
            .append(tp, vec![batch], Durability::Buffered)
            .await?;
        if is_persistent(&message.properties) {
            unsynced.push(tp.clone());
        }
        let mut inner = q.lock();
        let outcome = inner
            .queue
            .publish_at(appended.base_offset, message.clone(), now);
        // A refused publish (raced with a requeue that filled the queue) or a head dropped by
        // `x-max-length` leaves settled offsets that the next ack-state write records.
        inner.dirty = true;
        Ok(outcome?)
    }

    /// Runs dispatch on `queues` and follows the dead letters they produce (and the dispatch
    /// of the queues those reach), arming TTL timers on the way.
    pub(crate) async fn settle(
        self: &Arc<Self>,
        vhost: &Arc<VHost>,
        queues: impl IntoIterator<Item = Arc<QueueHandle>>,
    ) {
        self.settle_at(vhost, queues, None).await;
    }

    /// [`AmqpBroker::settle`], dispatching as of `at` (ms) when given: the moment the queues'
    /// new messages entered them, so that a TTL of 0 still reaches a waiting consumer however
    /// long storing them took.
    pub(crate) async fn settle_at(
        self: &Arc<Self>,
        vhost: &Arc<VHost>,
        queues: impl IntoIterator<Item = Arc<QueueHandle>>,
        at: Option<u64>,
    ) {
        let mut pending: VecDeque<Arc<QueueHandle>> = queues.into_iter().collect();
        let mut letters: VecDeque<(String, DeadLetter)> = VecDeque::new();
        let mut hops = 0;
        loop {
            while let Some(q) = pending.pop_front() {
                let now = at.unwrap_or_else(|| now_ms().max(0) as u64);
                let done = q.dispatch(now, &self.settings.flow);
                if let Some(at) = done.next_expiry {
                    self.arm_expiry(vhost, &q, at);
                }
                letters.extend(
                    done.dead_letters
                        .into_iter()
                        .map(|l| (q.name().to_owned(), l)),
                );
            }
            let Some((from, letter)) = letters.pop_front() else {
                return;
            };
            hops += 1;
            if hops > MAX_DEAD_LETTER_HOPS {
                tracing::warn!(
                    queue = from,
                    "dead-letter chain too long; dropping the rest"
                );
                return;
            }
            let targets = match vhost.route(
                &letter.exchange,
                &letter.routing_key,
                &letter.message.properties,
            ) {
                Ok(t) => t,
                // A missing dead-letter exchange drops the message, as in RabbitMQ.
                Err(_) => continue,
            };
            let targets = without_cycles(targets, &letter);
            let mut message = letter.message;
            message.exchange = letter.exchange;
            message.routing_key = letter.routing_key;
            self.store(&targets, message).await;
            pending.extend(targets);
        }
    }

    /// Arms a one-shot timer that expires the head of `q` at `at` (ms since the epoch).
    fn arm_expiry(self: &Arc<Self>, vhost: &Arc<VHost>, q: &Arc<QueueHandle>, at: u64) {
        let broker = self.clone();
        let (vhost, q) = (vhost.clone(), q.clone());
        let cancel = self.cancel.clone();
        self.tracker.spawn(async move {
            let wait = at.saturating_sub(now_ms().max(0) as u64) + 1;
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
                _ = cancel.cancelled() => return,
            }
            {
                let mut inner = q.lock();
                if inner.expiry_armed == Some(at) {
                    inner.expiry_armed = None;
                }
            }
            if !q.is_deleted() {
                broker.settle(&vhost, [q]).await;
            }
        });
    }
}

/// RabbitMQ's dead-letter cycle rule: a message is not dead-lettered into a queue it already
/// died in, unless a client rejected it somewhere on the way (then the loop is the client's
/// choice, and each turn needs its action).
fn without_cycles(targets: Vec<Arc<QueueHandle>>, letter: &DeadLetter) -> Vec<Arc<QueueHandle>> {
    let Some(AMQPValue::FieldArray(deaths)) = letter
        .message
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-death").cloned())
    else {
        return targets;
    };
    let mut queues = HashSet::new();
    let mut rejected = false;
    for death in deaths.as_slice() {
        if let AMQPValue::FieldTable(t) = death {
            if let Some(AMQPValue::LongString(q)) = t.inner().get("queue") {
                queues.insert(String::from_utf8_lossy(q.as_bytes()).into_owned());
            }
            if let Some(AMQPValue::LongString(r)) = t.inner().get("reason") {
                rejected |= r.as_bytes() == b"rejected";
            }
        }
    }
    if rejected {
        return targets;
    }
    targets
        .into_iter()
        .filter(|q| !queues.contains(q.name()))
        .collect()
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
