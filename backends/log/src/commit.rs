//! Group commit: appenders that need durability share fsyncs.
//!
//! Each partition publishes, in a watch channel, the offset below which everything is known to
//! be on disk, and whether an fsync is in flight. An appender that needs its batches durable
//! waits for that mark to pass its last offset. If no fsync is in flight it becomes the flusher:
//! it lets the tasks that are ready run first (their appends join its fsync), then notes the high
//! watermark, fsyncs the active segment on the blocking pool, and publishes the noted watermark.
//! Everyone who wrote before the fsync started is covered by it, so under load one fsync serves
//! many appends instead of one each.
//!
//! Only the active segment needs syncing: a roll fsyncs the segment it seals before any append
//! goes to the new one, and the flusher takes the watermark and the active segment under one
//! read of the view.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use switchboard_model::Offset;
use switchboard_storage::{StorageError, StorageResult};
use tokio::sync::watch;

use crate::fsio::blocking;
use crate::partition::Partition;

/// How many times the flusher lets the runtime run everything else that is ready (I/O events
/// included) before it starts an fsync. MQTT QoS 1 fan-in, 10 publishers at 10,000 msg/s in
/// all, on this 2-core machine: with none, 21.5–21.9 k fsyncs in 3 s, publish-to-receive
/// p50/p99 331–366 / 868–932 µs, broker CPU 4.5–4.7 s; with 5, 17.9–18.9 k, 130–132 / 608–627 µs,
/// 3.8–3.9 s (3 do less, 10 no more). Kafka acks=all on 8 partitions of 100 B records: 18 % more
/// throughput on 27 % less broker CPU; one partition, and a lone MQTT publisher waiting for
/// each PUBACK: unchanged.
const PASSES_BEFORE_FSYNC: u32 = 5;

#[derive(Debug, Clone, Copy)]
struct Status {
    /// Every offset below this is on disk.
    durable: Offset,
    flushing: bool,
}

pub(crate) struct GroupCommit {
    status: watch::Sender<Status>,
}

enum Turn<'a> {
    Done,
    Flush(FlushClaim<'a>),
    Wait,
}

/// The right to run the partition's next fsync. Dropping it (also when the flusher's future is
/// cancelled mid-fsync) hands the turn back, publishing the synced mark if there is one.
struct FlushClaim<'a> {
    commit: &'a GroupCommit,
    synced: Option<Offset>,
}

impl Drop for FlushClaim<'_> {
    fn drop(&mut self) {
        let synced = self.synced;
        self.commit.status.send_modify(|s| {
            s.flushing = false;
            if let Some(upto) = synced {
                s.durable = s.durable.max(upto);
            }
        });
    }
}

impl GroupCommit {
    /// `durable`: what is on disk already (the recovered log, synced when opened).
    pub(crate) fn new(durable: Offset) -> Self {
        let (status, _) = watch::channel(Status {
            durable,
            flushing: false,
        });
        Self { status }
    }

    pub(crate) fn durable(&self) -> Offset {
        self.status.borrow().durable
    }

    /// Decides atomically whether `upto` is covered, or whose turn the next fsync is.
    fn turn(&self, upto: Offset) -> Turn<'_> {
        let mut turn = Turn::Wait;
        self.status.send_if_modified(|s| {
            if s.durable >= upto {
                turn = Turn::Done;
                false
            } else if s.flushing {
                false
            } else {
                s.flushing = true;
                turn = Turn::Flush(FlushClaim {
                    commit: self,
                    synced: None,
                });
                true
            }
        });
        turn
    }
}

impl Partition {
    /// Returns once every offset below `upto` is on disk, running or joining the fsync that
    /// gets it there.
    pub(crate) async fn wait_durable(self: &Arc<Self>, upto: Offset) -> StorageResult<()> {
        // Subscribed before the first check, so no publication between a check and the wait
        // can be missed.
        let mut changes = self.commit.status.subscribe();
        loop {
            match self.commit.turn(upto) {
                Turn::Done => return Ok(()),
                Turn::Flush(mut claim) => {
                    // After a failed fsync the page cache may have dropped dirty data, so a later
                    // fsync succeeding would prove nothing: stop here.
                    self.check_healthy()?;
                    // Whoever is ready to append now is covered if it goes first (it waits for
                    // this claim instead of an fsync of its own), and a delivery waiting to be
                    // written is not held back by the fsync's CPU and wake-ups on a busy core.
                    // No timer: a lone appender loses only a few passes over an idle runtime.
                    for _ in 0..PASSES_BEFORE_FSYNC {
                        tokio::task::yield_now().await;
                    }
                    let synced = self.sync_active().await?;
                    claim.synced = Some(synced);
                    if synced < upto {
                        // Callers only wait for offsets already written; rather than spin on
                        // fsyncs that cannot get there, say so.
                        return Err(StorageError::Unavailable(format!(
                            "offset {upto} of {} was never written",
                            self.tp
                        )));
                    }
                }
                Turn::Wait => {
                    self.check_healthy()?;
                    if changes.changed().await.is_err() {
                        return Err(StorageError::Closed);
                    }
                }
            }
        }
    }

    /// Fsyncs the active segment; returns the offset everything below which it covered.
    async fn sync_active(self: &Arc<Self>) -> StorageResult<Offset> {
        let (upto, segment) = {
            let view = self.view();
            (view.next, view.active.clone())
        };
        // What was appended so far is covered: no early writeback needed for it.
        self.unflushed.store(0, Ordering::Release);
        let me = self.clone();
        blocking(move || match me.fsync_exclusive(|| segment.sync()) {
            Ok(()) => Ok(upto),
            Err(e) => {
                me.poison(format!("fsync of segment {} failed: {e}", segment.base()));
                Err(e.into())
            }
        })
        .await
    }

    /// Fsyncs the partition if anything appended is not yet on disk (`flush`, and the
    /// background flusher of `FsyncPolicy::Interval`).
    pub(crate) async fn sync_appended(self: &Arc<Self>) -> StorageResult<()> {
        if !self.config.fsync.syncs() {
            return Ok(());
        }
        let next = self.view().next;
        if self.commit.durable() >= next {
            return Ok(());
        }
        self.wait_durable(next).await
    }
}

#[cfg(test)]
impl Partition {
    /// Waits, without fsyncing, until someone else has made everything below `upto` durable.
    pub(crate) async fn durable_reaches(&self, upto: Offset) {
        let mut changes = self.commit.status.subscribe();
        // The sender lives as long as `self`, so `wait_for` cannot fail.
        let _ = changes.wait_for(|s| s.durable >= upto).await;
    }
}
