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
}

impl Waiter {
    pub fn new() -> Self {
        Self::default()
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
    waiters: Mutex<Vec<Arc<Notify>>>,
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
        w.retain(|n| Arc::strong_count(n) > 1);
        w.push(waiter.notify.clone());
    }

    pub(crate) fn advance(&self, high_watermark: u64) {
        self.high_watermark
            .fetch_max(high_watermark, Ordering::AcqRel);
        self.wake_all();
    }

    pub(crate) fn wake_all(&self) {
        let waiters = std::mem::take(&mut *self.waiters.lock().unwrap_or_else(|e| e.into_inner()));
        for n in waiters {
            n.notify_one();
        }
    }
}
