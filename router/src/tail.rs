//! Following a partition as it grows: the loop every reader that is not a Kafka fetch uses
//! (MQTT fan-out, the MQTT ↔ AMQP link). Woken by appends; nothing polls.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use switchboard_model::{Offset, TopicPartition};
use switchboard_storage::StorageError;
use tokio_util::sync::CancellationToken;

use crate::{MAX_WAIT, Router, RouterError, Waiter};

/// Bytes read from the partition at a time.
const TAIL_READ_BYTES: usize = 1024 * 1024;
/// Pause after a storage error before trying again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

impl Router {
    /// Reads `tp` from `position` on, forever: each chunk of batches that becomes readable is
    /// given to `handle` with the offset it was read from, which returns the offset to continue
    /// at (normally after the chunk's last batch). Returns when `cancel` fires. Retention that
    /// removes unread records moves the reader to the new log start; storage errors are logged
    /// and retried after a pause; a deleted stream ends the loop.
    ///
    /// `position` is where reading goes on: `tail` raises it past every chunk handled, and a
    /// caller that hands records out by another path too (MQTT delivers its own publishes at
    /// once, see [`Router::append_then`]) may raise it as well, so that they are not read again
    /// and their appends do not wake the loop. An append past `position` wakes the loop if
    /// `wake` accepts its high watermark: a follower that does not want the records now (the
    /// MQTT to AMQP link with nothing bound) may raise `position` there instead.
    pub async fn tail<F, Fut>(
        &self,
        tp: &TopicPartition,
        position: Arc<AtomicU64>,
        wake: impl Fn(Offset) -> bool + Send + Sync + 'static,
        cancel: &CancellationToken,
        mut handle: F,
    ) where
        F: FnMut(Offset, Vec<Bytes>) -> Fut,
        Fut: Future<Output = Offset>,
    {
        let waiter = Waiter::following(position.clone(), wake);
        while !cancel.is_cancelled() {
            let from = position.load(Ordering::Acquire);
            match self.read(tp, from, TAIL_READ_BYTES).await {
                Ok(chunk) if !chunk.batches.is_empty() => {
                    let next = handle(from, chunk.batches).await;
                    if next <= from {
                        // Nothing could be read past `from`: wait rather than spin on it.
                        let e = RouterError::Storage(StorageError::Corrupt {
                            tp: tp.clone(),
                            reason: format!("no readable batch at offset {from}"),
                        });
                        pause_after(tp, &e, cancel).await;
                    }
                    position.fetch_max(next, Ordering::AcqRel);
                }
                Ok(chunk) if from < chunk.bounds.log_start => {
                    position.fetch_max(chunk.bounds.log_start, Ordering::AcqRel);
                }
                Ok(_) => {
                    // Register first, then look again, so an append in between is not missed.
                    if let Err(e) = self.watch(tp, &waiter).await {
                        pause_after(tp, &e, cancel).await;
                        continue;
                    }
                    match self.bounds(tp).await {
                        Ok(b) if b.high_watermark > from => continue,
                        Ok(_) => {}
                        Err(e) => {
                            pause_after(tp, &e, cancel).await;
                            continue;
                        }
                    }
                    tokio::select! {
                        _ = waiter.wait(MAX_WAIT) => {}
                        _ = cancel.cancelled() => return,
                    }
                }
                Err(RouterError::Storage(StorageError::OffsetOutOfRange { log_start, .. }))
                    if from < log_start =>
                {
                    position.fetch_max(log_start, Ordering::AcqRel);
                }
                // The stream was deleted: there is nothing left to follow.
                Err(RouterError::UnknownStream(_) | RouterError::UnknownPartition(_)) => return,
                Err(e) => pause_after(tp, &e, cancel).await,
            }
        }
    }
}

async fn pause_after(tp: &TopicPartition, e: &RouterError, cancel: &CancellationToken) {
    tracing::warn!(%tp, error = %e, "cannot read the partition; retrying");
    tokio::select! {
        _ = tokio::time::sleep(RETRY_AFTER) => {}
        _ = cancel.cancelled() => {}
    }
}
