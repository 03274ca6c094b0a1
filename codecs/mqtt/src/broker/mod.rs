//! Broker-wide MQTT state shared by every connection: the session registry, the subscription
//! tree, retained messages, the publish path into streams and the fan-out from streams.
//!
//! Every publish is appended to a stream first (the routing table says which one). One tailer
//! per partition of every MQTT-visible stream reads what was appended — by MQTT clients or by
//! anyone else, a Kafka producer included — and pushes it to the matching sessions. Tailers are
//! woken by appends; nothing polls.

mod fanout;
mod flow;
mod persist;
mod retained;
mod sessions;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use switchboard_model::{BatchBuilder, Offset, StreamName, TopicPartition, stable_hash};
use switchboard_router::{Router, RouterError, now_ms};
use switchboard_storage::{Appended, Durability};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use flow::MqttFlow;
pub use persist::Opened;
use sessions::Registered;
pub use sessions::{Delivery, Inflight, SessionShared, SessionState, Subscription};

use crate::dormant::Lot;
use crate::mapping::Message;
use crate::metrics::MqttMetrics;
use crate::topic::{self, FilterSpec, SubscriptionTree};
use retained::RetainedStore;

/// Settings of the MQTT front end, taken from the server config.
#[derive(Debug, Clone)]
pub struct MqttSettings {
    pub allow_anonymous: bool,
    /// user name → password.
    pub users: HashMap<String, String>,
    /// Largest packet accepted from a client (announced to MQTT 5 clients).
    pub max_packet_size: u32,
    /// QoS 1/2 publishes a client may have unacknowledged towards us.
    pub receive_maximum: u16,
    /// Highest keep-alive we accept; a client asking for more (or for none) is told this one
    /// (MQTT 5 Server Keep Alive). 0 accepts whatever the client asks.
    pub max_keep_alive: u16,
    pub topic_alias_maximum: u16,
    /// Messages queued per session before new ones are dropped.
    pub max_queued_messages: usize,
    /// Upper bound on a session's expiry interval, in seconds (`u32::MAX`: none).
    pub max_session_expiry: u32,
    /// How long a new connection may take to send CONNECT.
    pub connect_timeout: Duration,
    /// How soon after a connected persistent session acknowledged messages its position is
    /// stored, so that a crash redelivers little of what was already acknowledged.
    pub checkpoint_interval: Duration,
    /// A connected client quiet for this long goes dormant (`crate::dormant`); zero: never.
    pub dormant_after: Duration,
    /// Publisher flow control (`flow`).
    pub flow: MqttFlow,
    /// Stream that receives topics no route names.
    pub default_stream: StreamName,
    /// Partitions of a stream the MQTT front end creates.
    pub stream_partitions: u32,
    /// Topic filter → stream, first match wins.
    pub routes: Vec<(String, StreamName)>,
}

impl Default for MqttSettings {
    fn default() -> Self {
        Self {
            allow_anonymous: true,
            users: HashMap::new(),
            max_packet_size: 1024 * 1024,
            receive_maximum: 1024,
            max_keep_alive: 0,
            topic_alias_maximum: 1024,
            max_queued_messages: 10_000,
            max_session_expiry: u32::MAX,
            connect_timeout: Duration::from_secs(10),
            checkpoint_interval: Duration::from_secs(5),
            dormant_after: Duration::from_secs(2),
            flow: MqttFlow {
                high: 1000,
                low: 500,
                max_pause: Duration::from_secs(1),
            },
            #[allow(clippy::unwrap_used)] // a constant that is a valid name
            default_stream: StreamName::new("mqtt").unwrap(),
            stream_partitions: 8,
            routes: Vec::new(),
        }
    }
}

/// Why a publish could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("storing the message failed: {0}")]
    Router(#[from] RouterError),
    #[error("stream {0} is not known to the MQTT front end")]
    UnknownStream(StreamName),
}

/// A subscription as the tree holds it.
#[derive(Clone)]
pub(crate) struct SubEntry {
    pub session: Arc<SessionShared>,
    pub options: crate::wire::SubscriptionOptions,
    pub id: Option<u32>,
}

pub struct Broker {
    router: Arc<Router>,
    pub settings: MqttSettings,
    pub metrics: MqttMetrics,
    sessions: Mutex<HashSet<Registered>>,
    subs: RwLock<SubscriptionTree<String, SubEntry>>,
    retained: RetainedStore,
    /// Partitions per MQTT-visible stream.
    streams: RwLock<BTreeMap<StreamName, u32>>,
    /// Fan-out position of each partition: everything below has been delivered.
    tails: Mutex<BTreeMap<TopicPartition, Arc<fanout::Tail>>>,
    shared_cursor: AtomicU64,
    next_client_id: AtomicU64,
    cancel: CancellationToken,
    tracker: TaskTracker,
    /// Woken whenever a connection lets go of its session (a takeover waits for that).
    released: tokio::sync::Notify,
    /// Holds dormant connections; `None` when `dormant_after` is zero or it could not start.
    lot: Option<Lot>,
    /// Publishers paused by flow control (`flow`).
    flow: flow::FlowWaiters,
}

impl Broker {
    /// Creates the MQTT streams if needed, restores persistent sessions and retained messages,
    /// and starts the tailers.
    pub async fn start(
        router: Arc<Router>,
        settings: MqttSettings,
        metrics: MqttMetrics,
        cancel: CancellationToken,
        tracker: TaskTracker,
    ) -> Result<Arc<Self>, PublishError> {
        let lot = if settings.dormant_after.is_zero() {
            None
        } else {
            Lot::start(crate::conn::resume)
                .inspect_err(|e| {
                    tracing::warn!(error = %e, "connections cannot go dormant: they stay awake");
                })
                .ok()
        };
        let broker = Arc::new(Self {
            retained: RetainedStore::default(),
            router,
            settings,
            metrics,
            sessions: Mutex::new(HashSet::new()),
            subs: RwLock::new(SubscriptionTree::new()),
            streams: RwLock::new(BTreeMap::new()),
            tails: Mutex::new(BTreeMap::new()),
            shared_cursor: AtomicU64::new(0),
            next_client_id: AtomicU64::new(1),
            cancel,
            tracker,
            lot,
            released: tokio::sync::Notify::new(),
            flow: flow::FlowWaiters::default(),
        });
        // At shutdown every connection is told to close, the dormant ones woken for it.
        let weak = Arc::downgrade(&broker);
        let shutdown = broker.cancel.clone();
        broker.tracker.spawn(async move {
            shutdown.cancelled().await;
            if let Some(broker) = weak.upgrade() {
                broker.kick_all();
            }
        });
        broker.ensure_streams().await?;
        broker.retained.restore(&broker.router);
        broker.restore_sessions().await;
        broker.start_tailers().await?;
        Ok(broker)
    }

    pub fn router(&self) -> &Arc<Router> {
        &self.router
    }

    async fn ensure_streams(&self) -> Result<(), PublishError> {
        let mut names = vec![self.settings.default_stream.clone()];
        names.extend(self.settings.routes.iter().map(|(_, s)| s.clone()));
        for name in names {
            let partitions = match self.router.stream(&name) {
                Some(meta) => meta.partitions,
                None => match self
                    .router
                    .create_stream(
                        name.clone(),
                        self.settings.stream_partitions,
                        BTreeMap::new(),
                    )
                    .await
                {
                    Ok(meta) => meta.partitions,
                    // Created concurrently (another front end): use it.
                    Err(RouterError::Rejected(_)) => self
                        .router
                        .stream(&name)
                        .map_or(self.settings.stream_partitions, |m| m.partitions),
                    Err(e) => return Err(e.into()),
                },
            };
            write(&self.streams).insert(name, partitions);
        }
        Ok(())
    }

    /// The stream partition a topic is stored in: the first matching route's stream (else the
    /// default one), partitioned by a hash of the topic so each topic keeps its order.
    pub fn partition_for(&self, topic: &str) -> Result<TopicPartition, PublishError> {
        let stream = self
            .settings
            .routes
            .iter()
            .find(|(filter, _)| topic::matches(filter, topic))
            .map_or(&self.settings.default_stream, |(_, s)| s);
        let partitions = *read(&self.streams)
            .get(stream)
            .ok_or_else(|| PublishError::UnknownStream(stream.clone()))?;
        let p = stable_hash(topic.as_bytes()) % u64::from(partitions.max(1));
        Ok(TopicPartition::new(stream.clone(), p as u32))
    }

    /// Stores messages (in order per topic), then updates the retained store. With `durable`,
    /// returns once the storage's fsync policy considers them acknowledged.
    pub async fn publish(&self, msgs: Vec<Message>, durable: bool) -> Result<(), PublishError> {
        let written = self.store(msgs, &mut Vec::new()).await?;
        if durable {
            for tp in &written {
                self.router.sync(tp).await?;
            }
        }
        Ok(())
    }

    /// Stores messages (in order per topic) without waiting for an fsync, then updates the
    /// retained store. Subscribers and readers see them at once; they are durable once
    /// [`Router::sync`] has run on each partition returned. Connected subscribers that the
    /// messages left with a backlog that holds their publisher back go to `backlog` (`flow`).
    pub async fn store(
        &self,
        msgs: Vec<Message>,
        backlog: &mut Vec<Arc<SessionShared>>,
    ) -> Result<Vec<TopicPartition>, PublishError> {
        self.metrics.publishes_received.inc_by(msgs.len() as u64);
        // Grouped by partition, in the order partitions first appear; a read holds publishes
        // for a handful of partitions at most, so a list beats a map. Most reads hold one
        // publish: its list is the group.
        let mut by_partition: Vec<(TopicPartition, Vec<Message>)> = Vec::with_capacity(1);
        if let [one] = msgs.as_slice() {
            by_partition.push((self.partition_for(&one.topic)?, msgs));
        } else {
            for m in msgs {
                let tp = self.partition_for(&m.topic)?;
                match by_partition.iter_mut().find(|(p, _)| *p == tp) {
                    Some((_, group)) => group.push(m),
                    None => by_partition.push((tp, vec![m])),
                }
            }
        }
        // A topic's messages share a partition, so this keeps each topic's order.
        let retained: Vec<(String, Option<Vec<u8>>)> = by_partition
            .iter()
            .flat_map(|(_, group)| group)
            .filter(|m| m.retain)
            .filter_map(|m| Some((m.topic.clone(), self.retained.remember(m)?)))
            .collect();
        let mut written = Vec::with_capacity(by_partition.len());
        for (tp, msgs) in by_partition {
            let mut builder = BatchBuilder::default();
            for m in &msgs {
                m.write_to(&mut builder);
            }
            if let Some(batch) = builder.build() {
                let deliver = |a: &Appended| self.deliver_own(&tp, a.base_offset, msgs, backlog);
                self.router
                    .append_then(&tp, vec![batch], Durability::Buffered, deliver)
                    .await?;
                written.push(tp);
            }
        }
        for (topic, change) in retained {
            self.retained.persist(&self.router, &topic, change).await?;
        }
        Ok(written)
    }

    /// The MQTT-visible streams and their partition counts.
    pub fn streams(&self) -> Vec<(StreamName, u32)> {
        read(&self.streams)
            .iter()
            .map(|(s, p)| (s.clone(), *p))
            .collect()
    }

    /// A fresh client id for a client that sent an empty one.
    pub fn assign_client_id(&self) -> String {
        let n = self.next_client_id.fetch_add(1, Ordering::Relaxed);
        format!("sb-{:x}-{n}", now_ms())
    }

    pub fn check_credentials(&self, username: Option<&str>, password: Option<&[u8]>) -> bool {
        match username {
            None => self.settings.allow_anonymous,
            Some(user) => self
                .settings
                .users
                .get(user)
                .is_some_and(|p| Some(p.as_bytes()) == password),
        }
    }

    /// Where connections sleep, if they may.
    pub fn lot(&self) -> Option<&Lot> {
        self.lot.as_ref()
    }

    /// Tells every connected client's connection to close (server shutdown).
    fn kick_all(&self) {
        let sessions: Vec<Arc<SessionShared>> =
            lock(&self.sessions).iter().map(|r| r.0.clone()).collect();
        for s in sessions {
            let holder = s.holder();
            if holder != 0 {
                s.kick(holder);
            }
        }
        if let Some(lot) = &self.lot {
            lot.wake_all();
        }
    }

    pub fn cancel_token(&self) -> &CancellationToken {
        &self.cancel
    }

    pub fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }

    /// Adds a session's subscription to the tree; returns whether it replaced one.
    pub(crate) fn add_subscription(
        &self,
        session: &Arc<SessionShared>,
        sub: &Subscription,
    ) -> bool {
        let entry = SubEntry {
            session: session.clone(),
            options: sub.options,
            id: sub.id,
        };
        write(&self.subs)
            .insert(&sub.spec, session.client_id.clone(), entry)
            .is_some()
    }

    pub(crate) fn remove_subscription(&self, client_id: &str, spec: &FilterSpec) -> bool {
        write(&self.subs)
            .remove(spec, &client_id.to_owned())
            .is_some()
    }

    /// Retained messages matching `filter` that have not expired.
    pub fn retained_matching(&self, filter: &str) -> Vec<Arc<Message>> {
        self.retained.matching(filter, now_ms())
    }

    /// Number of sessions the broker knows, online or not.
    pub fn session_count(&self) -> usize {
        lock(&self.sessions).len()
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|e| e.into_inner())
}

/// Offsets of a partition as the tailers see them.
pub(crate) type Positions = BTreeMap<TopicPartition, Offset>;
