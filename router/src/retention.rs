//! Periodic retention: drops data older or larger than each stream's policy.

use std::sync::Arc;
use std::time::Duration;

use switchboard_model::TopicPartition;
use switchboard_storage::{Retention, StorageError};
use tokio_util::sync::CancellationToken;

use crate::{Router, StreamMeta, now_ms};

/// Server-wide retention used when a stream has no `retention.ms` / `retention.bytes` of its own.
#[derive(Debug, Clone, Copy, Default)]
pub struct RetentionDefaults {
    pub max_age_ms: Option<i64>,
    pub max_bytes: Option<u64>,
}

/// Kafka's convention: a negative value means unlimited.
fn parse_limit(v: Option<&String>) -> Option<Option<i64>> {
    let n: i64 = v?.parse().ok()?;
    Some((n >= 0).then_some(n))
}

/// The policy for one stream: its own overrides, else the defaults.
pub fn policy(meta: &StreamMeta, defaults: RetentionDefaults) -> Retention {
    let age = parse_limit(meta.config.get("retention.ms")).unwrap_or(defaults.max_age_ms);
    let bytes = parse_limit(meta.config.get("retention.bytes"))
        .map(|b| b.map(|b| b as u64))
        .unwrap_or(defaults.max_bytes);
    Retention {
        max_bytes: bytes,
        max_age_ms: age,
    }
}

/// Runs retention over every partition every `interval` until `cancel` fires.
pub fn spawn_retention(
    router: Arc<Router>,
    defaults: RetentionDefaults,
    interval: Duration,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            for meta in router.streams() {
                let retention = policy(&meta, defaults);
                if retention == Retention::default() {
                    continue;
                }
                for p in 0..meta.partitions {
                    let tp = TopicPartition::new(meta.name.clone(), p);
                    match router
                        .storage()
                        .apply_retention(&tp, retention, now_ms())
                        .await
                    {
                        Ok(_) => {}
                        // Created in the routing table, not yet written to: nothing to remove.
                        Err(StorageError::UnknownPartition(_)) => {}
                        Err(e) => {
                            tracing::warn!(partition = %tp, error = %e, "retention pass failed");
                        }
                    }
                }
            }
        }
    })
}
