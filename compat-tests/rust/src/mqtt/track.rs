//! What the event loop saw, in library-neutral terms, and the commands waiting for it.
//!
//! rumqttc's `publish` / `subscribe` only queue a request; the packet id it gets and the
//! broker's acknowledgement come back as events of the event loop. Requests are handled in the
//! order they were queued (the caller keeps that order, see `Link::order`), so the n-th
//! `Outgoing::Publish` event is the n-th queued publish: a waiter is queued with its request,
//! bound to the packet id when the packet is written, and answered by the PUBACK / PUBCOMP
//! (SUBACK, UNSUBACK) with that id.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

use serde_json::Value;
use tokio::sync::oneshot;

use crate::waiters::Arrivals;

/// An event of either protocol version's event loop.
pub enum Seen {
    Message(Value),
    /// A PUBLISH was written (packet id 0 at QoS 0) or is held back until its id is free.
    PublishSent(u16),
    /// The broker's PUBACK (QoS 1) or PUBCOMP (QoS 2); `Err` for an MQTT 5 failure reason.
    PublishDone(u16, Result<(), String>),
    SubscribeSent(u16),
    /// SUBACK: one code per filter (the granted QoS, or a failure code).
    SubAck(u16, Vec<u8>),
    UnsubscribeSent(u16),
    UnsubAck(u16),
    DisconnectSent,
    Other,
}

type Reply<T> = oneshot::Sender<Result<T, String>>;

/// Waiters of one kind of request: queued in request order, then keyed by packet id.
struct Waiting<T> {
    queued: VecDeque<Reply<T>>,
    sent: HashMap<u16, Reply<T>>,
}

impl<T> Default for Waiting<T> {
    fn default() -> Self {
        Self {
            queued: VecDeque::new(),
            sent: HashMap::new(),
        }
    }
}

impl<T> Waiting<T> {
    fn queue(&mut self) -> oneshot::Receiver<Result<T, String>> {
        let (tx, rx) = oneshot::channel();
        self.queued.push_back(tx);
        rx
    }

    /// The oldest queued request was written with `pkid`. A packet held back by a packet id
    /// collision is reported twice (AwaitAck, then Publish): the second report binds nothing.
    fn bind(&mut self, pkid: u16) {
        if self.sent.contains_key(&pkid) {
            return;
        }
        if let Some(reply) = self.queued.pop_front() {
            self.sent.insert(pkid, reply);
        }
    }

    fn answer(&mut self, pkid: u16, result: Result<T, String>) {
        if let Some(reply) = self.sent.remove(&pkid) {
            let _ = reply.send(result);
        }
    }

    fn fail_all(&mut self, why: &str) {
        for reply in self
            .queued
            .drain(..)
            .chain(self.sent.drain().map(|(_, r)| r))
        {
            let _ = reply.send(Err(why.to_string()));
        }
    }
}

#[derive(Default)]
struct Pending {
    publishes: Waiting<()>,
    subscribes: Waiting<Vec<u8>>,
    unsubscribes: Waiting<()>,
    disconnect: Option<oneshot::Sender<()>>,
    /// Why the connection ended, once it did: later requests fail with it at once.
    lost: Option<String>,
}

/// Messages received, PUBLISH packets written, and the requests waiting for the broker.
#[derive(Default)]
pub struct Tracker {
    messages: Mutex<Vec<Value>>,
    sent: Mutex<Vec<Value>>,
    pending: Mutex<Pending>,
    pub arrived: Arrivals,
}

pub type Answer<T> = oneshot::Receiver<Result<T, String>>;

impl Tracker {
    pub fn on(&self, seen: Seen) {
        let mut p = self.pending();
        match seen {
            Seen::Message(m) => {
                lock(&self.messages).push(m);
                self.arrived.notify();
            }
            Seen::PublishSent(pkid) => {
                p.publishes.bind(pkid);
                if pkid == 0 {
                    // QoS 0: written is all there is.
                    p.publishes.answer(0, Ok(()));
                }
            }
            Seen::PublishDone(pkid, result) => p.publishes.answer(pkid, result),
            Seen::SubscribeSent(pkid) => p.subscribes.bind(pkid),
            Seen::SubAck(pkid, codes) => p.subscribes.answer(pkid, Ok(codes)),
            Seen::UnsubscribeSent(pkid) => p.unsubscribes.bind(pkid),
            Seen::UnsubAck(pkid) => p.unsubscribes.answer(pkid, Ok(())),
            Seen::DisconnectSent => {
                if let Some(done) = p.disconnect.take() {
                    let _ = done.send(());
                }
            }
            Seen::Other => {}
        }
    }

    /// The connection ended: every waiting request fails with `why`.
    pub fn lost(&self, why: String) {
        let mut p = self.pending();
        p.publishes.fail_all(&why);
        p.subscribes.fail_all(&why);
        p.unsubscribes.fail_all(&why);
        p.disconnect = None;
        p.lost = Some(why);
    }

    /// A fresh connection: nothing is lost (messages and written packets are kept, as the
    /// Node adapter keeps them across connections).
    pub fn connected(&self) {
        self.pending().lost = None;
    }

    pub fn lost_reason(&self) -> Option<String> {
        self.pending().lost.clone()
    }

    pub fn expect_publish(&self) -> Answer<()> {
        self.pending().publishes.queue()
    }

    pub fn expect_suback(&self) -> Answer<Vec<u8>> {
        self.pending().subscribes.queue()
    }

    pub fn expect_unsuback(&self) -> Answer<()> {
        self.pending().unsubscribes.queue()
    }

    pub fn expect_disconnect(&self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.pending().disconnect = Some(tx);
        rx
    }

    pub fn record_sent(&self, packet: Value) {
        lock(&self.sent).push(packet);
    }

    pub fn sent(&self) -> Vec<Value> {
        lock(&self.sent).clone()
    }

    pub fn messages(&self) -> Vec<Value> {
        lock(&self.messages).clone()
    }

    pub fn count(&self) -> usize {
        lock(&self.messages).len()
    }

    fn pending(&self) -> MutexGuard<'_, Pending> {
        lock(&self.pending)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
