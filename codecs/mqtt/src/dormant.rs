//! Dormant connections: an MQTT client that stays quiet gives up its task and its registration
//! with tokio's reactor, and one thread holds its socket and session in an epoll set of its own
//! until the client sends a byte, a delivery is queued for it, the server closes it (takeover,
//! shutdown) or its keep-alive runs out. Then it gets a task again and carries on where it was.
//!
//! A task with the connection loop's future and a reactor registration cost about 1.4 KB per
//! connection; a dormant one costs a slot here (under 64 bytes) plus its session. Most of the
//! clients of a large MQTT deployment are idle most of the time, which is what makes this worth
//! a thread: the same shape mosquitto's single epoll loop has for every connection.
//!
//! The connection loop decides when to sleep (`conn.rs`); this module only keeps the sleepers and
//! wakes them. Waking goes through [`Alarm`]: a session's queue holds the alarm of its dormant
//! connection, and whoever queues a delivery or kicks the session rings it.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use switchboard_router::accept::ConnectionSlot;
use tokio::runtime::Handle;
use tokio_util::task::task_tracker::TaskTrackerToken;

use crate::session::Session;

/// The poller's own token, for requests from other threads.
const WAKER: Token = Token(usize::MAX);
/// Readiness events taken per poll.
const EVENTS: usize = 1024;
/// Keep-alive deadlines are kept in these units and checked this often, so that a slot is 16
/// bytes and no timer per connection is needed: a connection may outlive its keep-alive by up to
/// the sum of the two.
const TICK: Duration = Duration::from_millis(100);
const SCAN_EVERY: Duration = Duration::from_millis(250);

/// A connection asleep: its socket, its session and what the loop needs to carry on.
pub struct Dormant {
    pub stream: std::net::TcpStream,
    pub session: Box<Session>,
    /// When the client was last heard from (keep-alive counts from here).
    pub last_heard: Instant,
    /// Keeps the server's shutdown waiting for this connection as for a running one.
    pub tracked: TaskTrackerToken,
    /// Keeps counting it under the listener's connection limit.
    pub slot: ConnectionSlot,
}

/// Where a dormant connection sits: a slot and that slot's use count, so a late wake-up for an
/// earlier sleeper in the same slot does nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    slot: u32,
    seq: u32,
}

impl Key {
    fn token(self) -> Token {
        Token((self.seq as usize) << 32 | self.slot as usize)
    }

    fn from_token(t: Token) -> Self {
        Key {
            slot: (t.0 & 0xffff_ffff) as u32,
            seq: (t.0 >> 32) as u32,
        }
    }
}

/// Wakes one dormant connection. Held by its session's queue while it sleeps.
pub struct Alarm {
    lot: Arc<Shared>,
    key: Key,
}

impl Alarm {
    pub fn ring(self) {
        self.lot.request(Request::Wake(self.key));
    }
}

enum Request {
    /// A connection to hold, and when its keep-alive runs out.
    Sleep(Box<Dormant>, Option<Instant>),
    Wake(Key),
    WakeAll,
    Stop,
}

struct Queue {
    requests: Vec<Request>,
    /// After shutdown began, connections are resumed at once instead of put to sleep.
    closing: bool,
}

struct Shared {
    waker: mio::Waker,
    queue: Mutex<Queue>,
}

impl Shared {
    fn request(&self, r: Request) {
        crate::broker::lock(&self.queue).requests.push(r);
        if let Err(e) = self.waker.wake() {
            tracing::error!(error = %e, "cannot wake the dormant-connection thread");
        }
    }
}

/// The holder of dormant connections: one thread with its own epoll set.
pub struct Lot {
    shared: Arc<Shared>,
    runtime: Handle,
    resume: fn(Dormant),
}

impl Lot {
    /// Starts the thread. `resume` gives a woken connection its task back; it is called with
    /// the runtime entered, from the lot's thread or from [`Lot::sleep`].
    pub fn start(resume: fn(Dormant)) -> io::Result<Self> {
        let poll = Poll::new()?;
        let waker = mio::Waker::new(poll.registry(), WAKER)?;
        let shared = Arc::new(Shared {
            waker,
            queue: Mutex::new(Queue {
                requests: Vec::new(),
                closing: false,
            }),
        });
        let runtime = Handle::current();
        let keeper = Keeper {
            poll,
            shared: shared.clone(),
            runtime: runtime.clone(),
            resume,
            slots: Vec::new(),
            free: Vec::new(),
            epoch: Instant::now(),
        };
        std::thread::Builder::new()
            .name("mqtt-dormant".into())
            .spawn(move || keeper.run())?;
        Ok(Lot {
            shared,
            runtime,
            resume,
        })
    }

    /// Puts a connection to sleep until something wakes it or `deadline` (its keep-alive)
    /// passes; after shutdown began it is resumed at once instead.
    pub fn sleep(&self, d: Box<Dormant>, deadline: Option<Instant>) {
        let mut q = crate::broker::lock(&self.shared.queue);
        if q.closing {
            drop(q);
            let _entered = self.runtime.enter();
            (self.resume)(*d);
            return;
        }
        q.requests.push(Request::Sleep(d, deadline));
        drop(q);
        if let Err(e) = self.shared.waker.wake() {
            tracing::error!(error = %e, "cannot wake the dormant-connection thread");
        }
    }

    /// Wakes every dormant connection and keeps new ones awake (server shutdown).
    pub fn wake_all(&self) {
        crate::broker::lock(&self.shared.queue).closing = true;
        self.shared.request(Request::WakeAll);
    }
}

impl Drop for Lot {
    fn drop(&mut self) {
        self.shared.request(Request::Stop);
    }
}

struct Slot {
    seq: u32,
    /// Keep-alive deadline in [`TICK`]s since the keeper's epoch; `u32::MAX`: none.
    deadline: u32,
    dormant: Option<Box<Dormant>>,
}

/// The lot's thread state.
struct Keeper {
    poll: Poll,
    shared: Arc<Shared>,
    runtime: Handle,
    resume: fn(Dormant),
    slots: Vec<Slot>,
    free: Vec<u32>,
    epoch: Instant,
}

impl Keeper {
    fn run(mut self) {
        let mut events = Events::with_capacity(EVENTS);
        let mut next_scan = Instant::now() + SCAN_EVERY;
        loop {
            let timeout =
                (self.sleeping() > 0).then(|| next_scan.saturating_duration_since(Instant::now()));
            if let Err(e) = self.poll.poll(&mut events, timeout)
                && e.kind() != io::ErrorKind::Interrupted
            {
                tracing::error!(error = %e, "dormant-connection poll failed; waking them all");
                self.wake_all();
                std::thread::sleep(SCAN_EVERY);
            }
            let mut requests = false;
            for ev in events.iter() {
                if ev.token() == WAKER {
                    requests = true;
                } else {
                    self.wake(Key::from_token(ev.token()));
                }
            }
            if requests && !self.take_requests() {
                return;
            }
            let now = Instant::now();
            if now >= next_scan {
                // Rounded down, as deadlines are rounded up: never early.
                self.wake_expired(self.ticks(now).saturating_sub(1));
                next_scan = now + SCAN_EVERY;
            }
        }
    }

    /// `at` in [`TICK`]s since the epoch, rounded up.
    fn ticks(&self, at: Instant) -> u32 {
        let d = at.saturating_duration_since(self.epoch);
        let ticks = d.as_nanos().div_ceil(TICK.as_nanos());
        u32::try_from(ticks).unwrap_or(u32::MAX - 1)
    }

    /// Wakes the connections whose keep-alive ran out by `now` (in ticks).
    fn wake_expired(&mut self, now: u32) {
        self.wake_where(|s| s.deadline <= now);
    }

    /// Wakes every sleeping connection whose slot satisfies `pick`.
    fn wake_where(&mut self, pick: impl Fn(&Slot) -> bool) {
        let keys: Vec<Key> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.dormant.is_some() && pick(s))
            .map(|(i, s)| Key {
                slot: i as u32,
                seq: s.seq,
            })
            .collect();
        for key in keys {
            self.wake(key);
        }
    }

    /// Handles queued requests; false when the lot is to stop.
    fn take_requests(&mut self) -> bool {
        let requests = std::mem::take(&mut crate::broker::lock(&self.shared.queue).requests);
        for r in requests {
            match r {
                Request::Sleep(d, deadline) => self.put(d, deadline),
                Request::Wake(key) => self.wake(key),
                Request::WakeAll => self.wake_all(),
                Request::Stop => {
                    self.wake_all();
                    return false;
                }
            }
        }
        true
    }

    fn put(&mut self, d: Box<Dormant>, deadline: Option<Instant>) {
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(Slot {
                    seq: 0,
                    deadline: u32::MAX,
                    dormant: None,
                });
                (self.slots.len() - 1) as u32
            }
        };
        let entry = &mut self.slots[slot as usize];
        entry.seq = entry.seq.wrapping_add(1);
        let key = Key {
            slot,
            seq: entry.seq,
        };
        let fd = d.stream.as_raw_fd();
        if let Err(e) =
            self.poll
                .registry()
                .register(&mut SourceFd(&fd), key.token(), Interest::READABLE)
        {
            // It cannot sleep here: it carries on awake.
            tracing::warn!(error = %e, "cannot hold a dormant connection; it stays awake");
            self.free.push(slot);
            self.resume(*d);
            return;
        }
        let deadline = deadline.map_or(u32::MAX, |at| self.ticks(at));
        let alarm = Alarm {
            lot: self.shared.clone(),
            key,
        };
        let waiting = d.session.set_alarm(alarm);
        let entry = &mut self.slots[slot as usize];
        entry.deadline = deadline;
        entry.dormant = Some(d);
        if waiting {
            // A delivery or a kick came while it was on its way here.
            self.wake(key);
        }
    }

    fn holds(&self, key: Key) -> bool {
        self.slots
            .get(key.slot as usize)
            .is_some_and(|s| s.seq == key.seq && s.dormant.is_some())
    }

    fn sleeping(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    fn wake(&mut self, key: Key) {
        if !self.holds(key) {
            return;
        }
        let Some(d) = self.slots[key.slot as usize].dormant.take() else {
            return;
        };
        self.free.push(key.slot);
        let fd = d.stream.as_raw_fd();
        if let Err(e) = self.poll.registry().deregister(&mut SourceFd(&fd)) {
            tracing::debug!(error = %e, "deregistering a dormant connection");
        }
        d.session.clear_alarm();
        self.resume(*d);
    }

    fn wake_all(&mut self) {
        self.wake_where(|_| true);
    }

    fn resume(&self, d: Dormant) {
        let _entered = self.runtime.enter();
        (self.resume)(d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_carry_slot_and_use_count() {
        let key = Key {
            slot: 7,
            seq: u32::MAX,
        };
        assert_eq!(Key::from_token(key.token()), key);
        assert_ne!(key.token(), WAKER);
    }
}
