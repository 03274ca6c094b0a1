//! Client sessions as the broker sees them: a shared handle per client id that fan-out pushes
//! deliveries into, and the protocol state a session keeps between connections.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use switchboard_model::{Offset, TopicPartition};
use tokio::sync::Notify;

use super::lock;
use crate::dormant::Alarm;
use crate::mapping::Message;
use crate::topic::FilterSpec;
use crate::wire::{QoS, SubscriptionOptions};

/// A message on its way to one session.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub msg: Arc<Message>,
    /// The QoS it is delivered at: the lower of the message's and the subscription's.
    pub qos: QoS,
    /// The RETAIN flag to send: set for retained messages sent at subscribe time and, with
    /// Retain As Published, for live messages published with it.
    pub retain: bool,
    /// Identifiers of the matching subscriptions (MQTT 5).
    pub subscription_ids: Vec<u32>,
    /// Where the message sits in the log; `None` for retained messages, which are not.
    pub origin: Option<(TopicPartition, Offset)>,
}

/// One subscription of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub spec: FilterSpec,
    pub options: SubscriptionOptions,
    pub id: Option<u32>,
}

/// An outgoing QoS 1 or 2 message the client has not finished acknowledging.
#[derive(Debug, Clone)]
pub struct Inflight {
    pub delivery: Delivery,
    /// QoS 2: PUBREC received and PUBREL sent; only PUBCOMP is awaited.
    pub released: bool,
}

/// What a session keeps between connections (MQTT 5 §4.1): subscriptions, unacknowledged
/// outgoing messages, and incoming QoS 2 packet ids not yet released.
#[derive(Debug, Clone, Default)]
pub struct SessionState {
    /// Raw filter as the client wrote it (with any `$share/` prefix) → subscription.
    pub subscriptions: BTreeMap<String, Subscription>,
    pub inflight: BTreeMap<u16, Inflight>,
    pub incoming_qos2: BTreeSet<u16>,
    pub next_packet_id: u16,
    /// Session Expiry Interval in seconds; `u32::MAX` never expires, 0 ends with the connection.
    pub expiry_interval: u32,
}

impl SessionState {
    /// A packet id not used by any in-flight message, if one is free.
    pub fn allocate_packet_id(&mut self) -> Option<u16> {
        for _ in 0..u16::MAX {
            self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
            if !self.inflight.contains_key(&self.next_packet_id) {
                return Some(self.next_packet_id);
            }
        }
        None
    }
}

/// An entry of the broker's session registry: a session keyed by its own client id, so the
/// registry holds no second copy of every id.
pub(crate) struct Registered(pub Arc<SessionShared>);

impl PartialEq for Registered {
    fn eq(&self, other: &Self) -> bool {
        self.0.client_id == other.0.client_id
    }
}

impl Eq for Registered {}

impl std::hash::Hash for Registered {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // As `str` hashes, so that lookups by `&str` find it.
        self.0.client_id.as_str().hash(state);
    }
}

impl std::borrow::Borrow<str> for Registered {
    fn borrow(&self) -> &str {
        &self.0.client_id
    }
}

/// A session's queued deliveries, and the alarm of its connection while that sleeps.
#[derive(Default)]
struct Outbox {
    queue: VecDeque<Delivery>,
    alarm: Option<Alarm>,
}

/// The broker's handle of one client id, shared by the connection, fan-out and timers.
pub struct SessionShared {
    pub client_id: String,
    outbox: Mutex<Outbox>,
    /// Woken when a delivery is queued or the connection is kicked.
    pub notify: Notify,
    online: AtomicBool,
    /// Serializes connects of the same client id.
    pub(crate) connect_lock: tokio::sync::Mutex<()>,
    /// The generation of the connection that holds the session; 0 when none does.
    holder: AtomicU64,
    /// Connections of this generation and older are to close (takeover, shutdown).
    kicked: AtomicU64,
    pub(crate) parked: Mutex<Option<Box<SessionState>>>,
    /// Bumped on every connect, so a timer armed for an older disconnect does nothing.
    pub(crate) generation: AtomicU64,
}

impl SessionShared {
    pub(crate) fn new(client_id: String) -> Arc<Self> {
        Arc::new(Self {
            client_id,
            outbox: Mutex::new(Outbox::default()),
            notify: Notify::new(),
            online: AtomicBool::new(false),
            connect_lock: tokio::sync::Mutex::new(()),
            holder: AtomicU64::new(0),
            kicked: AtomicU64::new(0),
            parked: Mutex::new(None),
            generation: AtomicU64::new(0),
        })
    }

    /// The generation of the connection holding the session; 0 when none does.
    pub(crate) fn holder(&self) -> u64 {
        self.holder.load(Ordering::Acquire)
    }

    pub(crate) fn hold(&self, generation: u64) {
        self.holder.store(generation, Ordering::Release);
    }

    /// The connection of `generation` lets go of the session, unless another holds it by now
    /// (the broker then wakes connections waiting to take a session over).
    pub(crate) fn release(&self, generation: u64) {
        let _ = self
            .holder
            .compare_exchange(generation, 0, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Tells the connection of `generation` (and any older one) to close, awake or dormant.
    pub(crate) fn kick(&self, generation: u64) {
        self.kicked.fetch_max(generation, Ordering::AcqRel);
        self.notify.notify_one();
        let alarm = lock(&self.outbox).alarm.take();
        if let Some(a) = alarm {
            a.ring();
        }
    }

    /// Whether the connection of `generation` has been told to close.
    pub fn is_kicked(&self, generation: u64) -> bool {
        self.kicked.load(Ordering::Acquire) >= generation
    }

    /// Arms the alarm of the dormant connection of `generation`, unless something already
    /// waits for it (a delivery, a kick): then it returns true and the connection must wake.
    pub(crate) fn set_alarm(&self, alarm: Alarm, generation: u64) -> bool {
        let mut q = lock(&self.outbox);
        if !q.queue.is_empty() || self.is_kicked(generation) {
            return true;
        }
        q.alarm = Some(alarm);
        false
    }

    pub(crate) fn clear_alarm(&self) {
        let alarm = lock(&self.outbox).alarm.take();
        drop(alarm);
    }

    pub fn is_online(&self) -> bool {
        self.online.load(Ordering::Acquire)
    }

    pub(crate) fn set_online(&self, online: bool) {
        self.online.store(online, Ordering::Release);
    }

    /// Queues a delivery. QoS 0 messages are not queued for a session that is offline (as
    /// Mosquitto does by default); past `max_queued` messages the newest are dropped. Returns
    /// whether it was queued (the caller counts drops).
    pub fn push(&self, delivery: Delivery, max_queued: usize) -> bool {
        if delivery.qos == QoS::AtMostOnce && !self.is_online() {
            return false;
        }
        let alarm = {
            let mut q = lock(&self.outbox);
            if q.queue.len() >= max_queued {
                return false;
            }
            q.queue.push_back(delivery);
            q.alarm.take()
        };
        self.notify.notify_one();
        if let Some(a) = alarm {
            a.ring();
        }
        true
    }

    /// Takes up to `max` queued deliveries, oldest first.
    pub fn take(&self, max: usize) -> Vec<Delivery> {
        let mut q = lock(&self.outbox);
        let n = q.queue.len().min(max);
        q.queue.drain(..n).collect()
    }

    /// Puts deliveries back at the front (they could not be sent yet), keeping their order.
    pub fn put_back(&self, deliveries: Vec<Delivery>) {
        let mut q = lock(&self.outbox);
        for d in deliveries.into_iter().rev() {
            q.queue.push_front(d);
        }
    }

    pub fn queued(&self) -> usize {
        lock(&self.outbox).queue.len()
    }

    pub(crate) fn clear_outbox(&self) {
        lock(&self.outbox).queue.clear();
    }

    /// The lowest log offset per partition among queued deliveries.
    pub(crate) fn queued_low_marks(&self, into: &mut BTreeMap<TopicPartition, Offset>) {
        for d in lock(&self.outbox).queue.iter() {
            low_mark(into, d);
        }
    }
}

/// Lowers `marks[tp]` to the delivery's offset.
pub(crate) fn low_mark(marks: &mut BTreeMap<TopicPartition, Offset>, d: &Delivery) {
    if let Some((tp, offset)) = &d.origin {
        marks
            .entry(tp.clone())
            .and_modify(|o| *o = (*o).min(*offset))
            .or_insert(*offset);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(qos: QoS) -> Delivery {
        Delivery {
            msg: Arc::new(Message::default()),
            qos,
            retain: false,
            subscription_ids: vec![],
            origin: None,
        }
    }

    #[test]
    fn offline_sessions_queue_only_qos_1_and_2() {
        let s = SessionShared::new("c".into());
        assert!(!s.push(delivery(QoS::AtMostOnce), 10));
        assert!(s.push(delivery(QoS::AtLeastOnce), 10));
        s.set_online(true);
        assert!(s.push(delivery(QoS::AtMostOnce), 10));
        assert_eq!(s.queued(), 2);
    }

    #[test]
    fn a_full_outbox_refuses_more() {
        let s = SessionShared::new("c".into());
        let pushed: Vec<bool> = (0..3)
            .map(|_| s.push(delivery(QoS::AtLeastOnce), 2))
            .collect();
        assert_eq!(pushed, vec![true, true, false]);
        assert_eq!(s.queued(), 2);
    }

    #[test]
    fn put_back_keeps_order() {
        let s = SessionShared::new("c".into());
        for i in 0..4u8 {
            let mut d = delivery(QoS::AtLeastOnce);
            d.subscription_ids = vec![u32::from(i)];
            s.push(d, 10);
        }
        let first = s.take(2);
        s.put_back(first);
        let ids: Vec<u32> = s.take(10).iter().map(|d| d.subscription_ids[0]).collect();
        assert_eq!(ids, vec![0, 1, 2, 3]);
    }

    #[test]
    fn packet_ids_skip_those_in_flight_and_zero() {
        let mut st = SessionState {
            next_packet_id: u16::MAX - 1,
            ..Default::default()
        };
        st.inflight.insert(
            u16::MAX,
            Inflight {
                delivery: delivery(QoS::AtLeastOnce),
                released: false,
            },
        );
        assert_eq!(st.allocate_packet_id(), Some(1));
    }
}
