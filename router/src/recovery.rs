//! A broker over shared storage (an object store) keeps its routing table beside the data, so
//! a broker started on a clean disk takes up where the last one stopped: the table is saved to
//! storage every few seconds and at shutdown, and restored at start into an empty table. What
//! the table had not saved yet (at most one interval of commits) is lost with the disk:
//! consumer groups then re-read from an older committed offset, which at-least-once delivery
//! tolerates.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use switchboard_model::StreamName;
use tokio_util::sync::CancellationToken;

use crate::table::{Applied, Command};
use crate::{Router, RouterResult, now_ms};

/// The blob the routing table is saved under.
pub const TABLE_BLOB: &str = "routing-table.json";

/// What [`Router::recover_from_storage`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// The routing table was restored from storage.
    pub restored_table: bool,
    /// Streams storage holds that the table did not know, registered now.
    pub adopted: Vec<StreamName>,
}

impl Router {
    /// Makes the routing table consistent with what storage already holds, when a broker
    /// starts:
    /// - an empty table takes the one saved in storage, if the backend keeps one;
    /// - streams storage holds but the table does not know are registered with as many
    ///   partitions as storage has (their configs and offsets start empty);
    /// - producer ids are raised past a floor from the clock (milliseconds × 1024), so a table
    ///   rebuilt on a clean disk never hands out an id whose batches storage holds, unless an
    ///   earlier table handed out 1024 ids per millisecond since.
    pub async fn recover_from_storage(&self) -> RouterResult<Recovered> {
        let mut found = Recovered::default();
        if self.meta.read(|t| t.is_empty())
            && let Some(snapshot) = self.storage.load_blob(TABLE_BLOB).await?
        {
            let cmd = Command::Restore {
                snapshot: snapshot.to_vec(),
            };
            match self.meta.propose(cmd).await? {
                Applied::Done => found.restored_table = true,
                other => {
                    tracing::warn!(answer = ?other, "the saved routing table was not restored")
                }
            }
        }
        let floor = now_ms().saturating_mul(1024);
        self.meta
            .propose(Command::RaiseProducerIds { floor })
            .await?;
        let mut stored: BTreeMap<StreamName, u32> = BTreeMap::new();
        for tp in self.storage.stored_partitions().await? {
            let count = stored.entry(tp.stream.clone()).or_default();
            *count = (*count).max(tp.partition + 1);
        }
        for (name, partitions) in stored {
            if self.stream(&name).is_some() {
                continue;
            }
            self.create_stream(name.clone(), partitions, BTreeMap::new())
                .await?;
            found.adopted.push(name);
        }
        Ok(found)
    }

    /// Saves the routing table to storage. Returns false when the backend keeps no blobs.
    pub async fn save_table(&self) -> RouterResult<bool> {
        let snapshot = Bytes::from(self.meta.read(|t| t.to_snapshot()));
        Ok(self.storage.store_blob(TABLE_BLOB, snapshot).await?)
    }
}

/// Saves the routing table every `interval` when it changed, and once more when `cancel`
/// fires; ends at once if the backend keeps no blobs.
pub fn spawn_table_backup(
    router: Arc<Router>,
    interval: Duration,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut saved: Option<Vec<u8>> = None;
        loop {
            let stopping = tokio::select! {
                _ = cancel.cancelled() => true,
                _ = tick.tick() => false,
            };
            let snapshot = router.meta.read(|t| t.to_snapshot());
            if saved.as_ref() != Some(&snapshot) {
                match router
                    .storage
                    .store_blob(TABLE_BLOB, snapshot.clone().into())
                    .await
                {
                    Ok(true) => saved = Some(snapshot),
                    Ok(false) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "saving the routing table to storage failed; retrying")
                    }
                }
            }
            if stopping {
                return;
            }
        }
    })
}
