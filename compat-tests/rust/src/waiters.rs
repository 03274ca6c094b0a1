//! Waiting for deliveries without polling: a waiter re-checks its condition whenever the
//! library side says something arrived (the Node adapters' `Waiters`).

use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

#[derive(Debug, Default)]
pub struct Arrivals {
    notify: Notify,
}

impl Arrivals {
    /// Wakes every waiter to re-check its condition.
    pub fn notify(&self) {
        self.notify.notify_waiters();
    }

    /// Resolves with true once `done()` holds, or with its last value after `timeout`.
    pub async fn until(&self, mut done: impl FnMut() -> bool, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            // Registered before the check, so that a notify between the two is not lost.
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if done() {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return done();
            }
        }
    }
}

/// A `timeoutMs` argument (5 s when absent, as in the Node adapters).
pub fn millis(timeout_ms: Option<u64>) -> Duration {
    Duration::from_millis(timeout_ms.unwrap_or(5000))
}
