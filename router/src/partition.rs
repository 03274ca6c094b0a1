//! Per-partition runtime state: idempotent-producer sequences and parked fetches.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use crate::producers::ProducerStates;

/// A parked reader. Register it on every partition of interest, check for data once more, then
/// [`Waiter::wait`]; an append in between is not lost because `Notify` keeps one permit.
#[derive(Clone, Default)]
pub struct Waiter {
    notify: Arc<Notify>,
    /// For a follower: whether an append ending at the given high watermark wakes it.
    wanted: Option<Arc<Wanted>>,
}

type Wanted = dyn Fn(u64) -> bool + Send + Sync;

impl Waiter {
    pub fn new() -> Self {
        Self::default()
    }

    /// A follower's waiter: woken only by an append that ends past `position` and that `wake`
    /// accepts. MQTT delivers its own publishes and raises its position before the append wakes
    /// anyone ([`Router::append_then`](crate::Router::append_then)), so its tailer sleeps
    /// through them instead of waking a thread for nothing.
    pub fn following(
        position: Arc<AtomicU64>,
        wake: impl Fn(u64) -> bool + Send + Sync + 'static,
    ) -> Self {
        Self {
            notify: Arc::default(),
            wanted: Some(Arc::new(move |hw| {
                position.load(Ordering::Acquire) < hw && wake(hw)
            })),
        }
    }

    /// Waits for an append on a registered partition or the timeout; true if woken.
    pub async fn wait(&self, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, self.notify.notified())
            .await
            .is_ok()
    }
}

pub(crate) struct PartitionHandle {
    /// Held while checking sequences and appending, so both happen as one step.
    pub(crate) producers: tokio::sync::Mutex<ProducerStates>,
    waiters: Mutex<Vec<Waiter>>,
    high_watermark: AtomicU64,
}

impl PartitionHandle {
    pub(crate) fn with_producers(high_watermark: u64, producers: ProducerStates) -> Self {
        Self {
            producers: tokio::sync::Mutex::new(producers),
            waiters: Mutex::new(Vec::new()),
            high_watermark: AtomicU64::new(high_watermark),
        }
    }

    pub(crate) fn register(&self, waiter: &Waiter) {
        let mut w = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        // Drop registrations whose fetch has finished, so an idle partition does not collect them.
        w.retain(|r| Arc::strong_count(&r.notify) > 1);
        // A follower an append did not concern is still registered.
        if !w.iter().any(|r| Arc::ptr_eq(&r.notify, &waiter.notify)) {
            w.push(waiter.clone());
        }
    }

    /// Wakes the waiters this append concerns; followers it does not concern stay registered.
    pub(crate) fn advance(&self, high_watermark: u64) {
        self.high_watermark
            .fetch_max(high_watermark, Ordering::AcqRel);
        let mut w = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        w.retain(|r| {
            let wake = r
                .wanted
                .as_ref()
                .is_none_or(|wanted| wanted(high_watermark));
            if wake {
                r.notify.notify_one();
            }
            !wake
        });
    }

    pub(crate) fn wake_all(&self) {
        let waiters = std::mem::take(&mut *self.waiters.lock().unwrap_or_else(|e| e.into_inner()));
        for r in waiters {
            r.notify.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUIET: Duration = Duration::from_millis(50);

    fn handle() -> PartitionHandle {
        PartitionHandle::with_producers(0, ProducerStates::default())
    }

    #[tokio::test]
    async fn a_follower_sleeps_through_appends_it_has_handled_and_wakes_for_others() {
        let h = handle();
        let position = Arc::new(AtomicU64::new(0));
        let waiter = Waiter::following(position.clone(), |_| true);
        h.register(&waiter);
        // The appender handed offset 0 out itself and raised the position first.
        position.store(1, Ordering::Release);
        h.advance(1);
        assert!(
            !waiter.wait(QUIET).await,
            "woken by an append it had handled"
        );
        // Still registered: the next append, which it has not handled, wakes it.
        h.advance(2);
        assert!(
            waiter.wait(QUIET).await,
            "not woken by an append past its position"
        );
    }

    #[tokio::test]
    async fn a_follower_that_declines_an_append_stays_registered_once() {
        let h = handle();
        let position = Arc::new(AtomicU64::new(0));
        let skip = position.clone();
        let waiter = Waiter::following(position.clone(), move |hw| {
            skip.fetch_max(hw, Ordering::AcqRel);
            false
        });
        h.register(&waiter);
        h.advance(3);
        assert!(!waiter.wait(QUIET).await, "woken by an append it declined");
        assert_eq!(
            position.load(Ordering::Acquire),
            3,
            "declining moves it past the append"
        );
        h.register(&waiter);
        assert_eq!(h.waiters.lock().expect("lock").len(), 1, "registered twice");
        let plain = Waiter::new();
        h.register(&plain);
        h.advance(4);
        assert!(
            plain.wait(QUIET).await,
            "a plain waiter is woken by every append"
        );
    }
}
