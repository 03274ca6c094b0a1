//! Builds the storage backend named by `storage.url`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use switchboard_config::{Config, FsyncPolicy};
use switchboard_log::{LogConfig, LogStorage};
use switchboard_memory::MemoryStorage;
use switchboard_storage::SharedStorage;

pub async fn open(config: &Config) -> anyhow::Result<SharedStorage> {
    let url = config.storage_url();
    if url == "memory://" || url.starts_with("memory://") {
        tracing::warn!("storage is memory://: nothing survives a restart");
        return Ok(Arc::new(MemoryStorage::new()));
    }
    let Some(path) = url.strip_prefix("file://") else {
        bail!(
            "storage.url {url:?} has an unsupported scheme: use file://PATH or memory:// \
             (object storage arrives with the object backend)"
        );
    };
    let log = &config.storage.log;
    let fsync = match log.fsync {
        FsyncPolicy::OnAckAll => switchboard_log::FsyncPolicy::OnSync,
        FsyncPolicy::Always => switchboard_log::FsyncPolicy::Always,
        FsyncPolicy::Interval => switchboard_log::FsyncPolicy::Interval(log.fsync_interval.0),
        FsyncPolicy::Never => switchboard_log::FsyncPolicy::Never,
    };
    let cfg = LogConfig {
        segment_bytes: log.segment_size.0,
        segment_ms: Some(log.segment_age.0.as_millis() as u64),
        index_interval_bytes: u32::try_from(log.index_interval.0).unwrap_or(u32::MAX),
        fsync,
        tail_cache_bytes: log.tail_cache.as_usize(),
    };
    let root = PathBuf::from(path);
    let storage = LogStorage::open(&root, cfg)
        .await
        .with_context(|| format!("opening the native log at {}", root.display()))?;
    Ok(Arc::new(storage))
}
