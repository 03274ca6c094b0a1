//! `file://`: the native segment log, laid out like Kafka's.
//!
//! ```text
//! <root>/<stream>-<partition>/
//!     00000000000000000000.log        whole Kafka v2 batches, exactly as appended (the
//!                                     active one may run on in zeros: see `segment`)
//!     00000000000000000000.index      sparse: relative offset → file position
//!     00000000000000000000.timeindex  sparse: max timestamp → relative offset
//!     00000000000000004211.log        the next segment, named by its base offset
//!     …
//!     log-start                       the start set by `delete_before`, if any
//! ```
//!
//! Batches are stored byte for byte as appended, with only their base offset (outside the CRC)
//! rewritten, so offsets are dense per partition and compressed payloads are never touched.
//! What an acknowledged append guarantees is set by [`FsyncPolicy`]; concurrent appends waiting
//! for an fsync share one (group commit). Opening a [`LogStorage`] opens every partition found
//! under its root and recovers each one's last segment, cutting off a write torn by a crash.
//!
//! One `LogStorage` at a time may use a root directory.

mod commit;
mod config;
mod fsio;
mod index;
mod partition;
mod read;
mod recovery;
mod retention;
mod segment;
mod tail;

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use switchboard_model::{Offset, RecordBatch, StreamName, TopicPartition};
use switchboard_storage::{
    Appended, Bounds, Durability, ReadChunk, Retention, Storage, StorageError, StorageResult,
};
use tokio::task::JoinHandle;

pub use config::{FsyncPolicy, LogConfig, MAX_SEGMENT_BYTES};
pub use partition::fsyncs_total;
pub use segment::file_name as segment_file_name;

use crate::fsio::{blocking, sync_dir};
use crate::partition::Partition;

/// Looked up for every append and read: hashed with foldhash, as SipHash cost 250 instructions
/// a lookup. Partition names come from clients; a map's random seed is the defence against
/// chosen collisions, as for the MQTT topic tree.
type Partitions = HashMap<TopicPartition, Arc<Partition>, foldhash::fast::RandomState>;

struct Inner {
    root: PathBuf,
    config: Arc<LogConfig>,
    partitions: RwLock<Partitions>,
    /// Serialises creating and removing partition directories.
    lifecycle: tokio::sync::Mutex<()>,
}

/// The native log backend: one directory per partition under a root.
///
/// When `append` returns, its batches are in the segment file (written with `write(2)`),
/// readable, and safe from the process being killed; whether they are also safe from the
/// machine crashing is the [`FsyncPolicy`]'s to say.
pub struct LogStorage {
    inner: Arc<Inner>,
    /// The periodic flusher of [`FsyncPolicy::Interval`].
    flusher: Option<JoinHandle<()>>,
}

/// The directory of a partition under the root: `<stream>-<partition>`.
pub fn partition_dir_name(tp: &TopicPartition) -> String {
    format!("{}-{}", tp.stream, tp.partition)
}

/// Directories being deleted are renamed with this suffix first, so a crash midway leaves
/// something recognisable as garbage rather than a partition with missing segments.
const DELETING_SUFFIX: &str = ".delete";

fn parse_partition_dir(name: &str) -> Option<TopicPartition> {
    let (stream, partition) = name.rsplit_once('-')?;
    if !partition.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(TopicPartition::new(
        StreamName::new(stream).ok()?,
        partition.parse().ok()?,
    ))
}

/// Opens every partition under `root`. A partition that fails to open is logged and left out,
/// so one damaged partition does not keep the others offline; opening it again reports why.
fn load_all(root: &Path, config: &Arc<LogConfig>) -> StorageResult<Partitions> {
    fs::create_dir_all(root)?;
    let mut partitions = Partitions::default();
    for entry in fs::read_dir(root)? {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(DELETING_SUFFIX) {
            // Finishes a removal a crash interrupted; garbage that will not go is no reason
            // to keep every partition offline.
            if let Err(e) = fs::remove_dir_all(entry.path()) {
                tracing::warn!(dir = name, "could not delete a removed partition: {e}");
            }
            continue;
        }
        let Some(tp) = parse_partition_dir(name) else {
            tracing::debug!(dir = name, "ignoring a directory that names no partition");
            continue;
        };
        match recovery::load(tp.clone(), &entry.path(), config.clone()) {
            Ok(p) => {
                partitions.insert(tp, Arc::new(p));
            }
            Err(e) => tracing::error!(partition = %tp, "partition not opened: {e}"),
        }
    }
    Ok(partitions)
}

impl LogStorage {
    /// Opens (creating if needed) the log under `root`, recovering every partition in it. Must
    /// be called within a tokio runtime.
    pub async fn open(root: impl Into<PathBuf>, config: LogConfig) -> StorageResult<Self> {
        let root = root.into();
        let config = Arc::new(config);
        let partitions = {
            let (root, config) = (root.clone(), config.clone());
            blocking(move || load_all(&root, &config)).await?
        };
        let inner = Arc::new(Inner {
            root,
            config,
            partitions: RwLock::new(partitions),
            lifecycle: tokio::sync::Mutex::new(()),
        });
        let flusher = match inner.config.fsync {
            FsyncPolicy::Interval(period) => Some(spawn_flusher(Arc::downgrade(&inner), period)),
            _ => None,
        };
        Ok(Self { inner, flusher })
    }

    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    pub fn config(&self) -> &LogConfig {
        &self.inner.config
    }

    fn partition(&self, tp: &TopicPartition) -> StorageResult<Arc<Partition>> {
        self.inner.partition(tp)
    }
}

impl Drop for LogStorage {
    fn drop(&mut self) {
        if let Some(flusher) = &self.flusher {
            flusher.abort();
        }
    }
}

impl Inner {
    // The map is only changed by whole inserts and removes; lock poisoning cannot leave it
    // inconsistent.
    fn read(&self) -> RwLockReadGuard<'_, Partitions> {
        self.partitions.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Partitions> {
        self.partitions.write().unwrap_or_else(|e| e.into_inner())
    }

    fn partition(&self, tp: &TopicPartition) -> StorageResult<Arc<Partition>> {
        self.read()
            .get(tp)
            .cloned()
            .ok_or_else(|| StorageError::UnknownPartition(tp.clone()))
    }

    fn all(&self) -> Vec<Arc<Partition>> {
        self.read().values().cloned().collect()
    }
}

/// Fsyncs every partition with unsynced appends once per `period`, until the storage is dropped.
fn spawn_flusher(inner: Weak<Inner>, period: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(period.max(Duration::from_millis(1)));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let Some(inner) = inner.upgrade() else { return };
            for p in inner.all() {
                if let Err(e) = p.sync_appended().await {
                    tracing::warn!(partition = %p.tp, "background fsync failed: {e}");
                }
            }
        }
    })
}

#[async_trait]
impl Storage for LogStorage {
    fn kind(&self) -> &'static str {
        "log"
    }

    async fn open_partition(&self, tp: &TopicPartition) -> StorageResult<Bounds> {
        if let Ok(p) = self.partition(tp) {
            return Ok(p.bounds());
        }
        let _lifecycle = self.inner.lifecycle.lock().await;
        if let Ok(p) = self.partition(tp) {
            return Ok(p.bounds());
        }
        let root = self.inner.root.clone();
        let config = self.inner.config.clone();
        let (tp2, syncs) = (tp.clone(), config.fsync.syncs());
        let p = blocking(move || {
            let p = recovery::load(tp2.clone(), &root.join(partition_dir_name(&tp2)), config)?;
            if syncs {
                sync_dir(&root)?;
            }
            Ok(p)
        })
        .await?;
        let bounds = p.bounds();
        self.inner.write().insert(tp.clone(), Arc::new(p));
        Ok(bounds)
    }

    async fn append(
        &self,
        tp: &TopicPartition,
        batches: Vec<RecordBatch>,
        durability: Durability,
    ) -> StorageResult<Appended> {
        self.partition(tp)?.append(batches, durability).await
    }

    async fn read(
        &self,
        tp: &TopicPartition,
        from: Offset,
        max_bytes: usize,
    ) -> StorageResult<ReadChunk> {
        self.partition(tp)?.read(from, max_bytes).await
    }

    async fn bounds(&self, tp: &TopicPartition) -> StorageResult<Bounds> {
        Ok(self.partition(tp)?.bounds())
    }

    async fn offset_for_timestamp(
        &self,
        tp: &TopicPartition,
        timestamp_ms: i64,
    ) -> StorageResult<Option<(Offset, i64)>> {
        self.partition(tp)?.offset_for_timestamp(timestamp_ms).await
    }

    async fn delete_before(&self, tp: &TopicPartition, offset: Offset) -> StorageResult<Offset> {
        self.partition(tp)?.delete_before(offset).await
    }

    async fn apply_retention(
        &self,
        tp: &TopicPartition,
        retention: Retention,
        now_ms: i64,
    ) -> StorageResult<Offset> {
        self.partition(tp)?.apply_retention(retention, now_ms).await
    }

    /// Group commit: concurrent callers share the fsync that covers them all.
    async fn sync(&self, tp: &TopicPartition) -> StorageResult<()> {
        self.partition(tp)?.sync_appended().await
    }

    async fn flush(&self) -> StorageResult<()> {
        for p in self.inner.all() {
            p.sync_appended().await?;
        }
        Ok(())
    }

    async fn remove_partition(&self, tp: &TopicPartition) -> StorageResult<()> {
        let _lifecycle = self.inner.lifecycle.lock().await;
        let Some(p) = self.inner.write().remove(tp) else {
            return Ok(());
        };
        p.mark_removed().await;
        let root = self.inner.root.clone();
        let syncs = self.inner.config.fsync.syncs();
        blocking(move || {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let name = partition_dir_name(&p.tp);
            let doomed = root.join(format!("{name}.{nanos}{DELETING_SUFFIX}"));
            fs::rename(&p.dir, &doomed)?;
            if syncs {
                sync_dir(&root)?;
            }
            fs::remove_dir_all(&doomed)?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests;
