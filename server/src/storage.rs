//! Builds the storage backend named by `storage.url`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use switchboard_config::{Config, FsyncPolicy, ObjectMode};
use switchboard_log::{LogConfig, LogStorage};
use switchboard_memory::MemoryStorage;
use switchboard_object::{ObjectConfig, ObjectStorage, StoreOptions, TierConfig, TieredStorage};
use switchboard_storage::SharedStorage;

pub async fn open(config: &Config) -> anyhow::Result<SharedStorage> {
    let url = config.storage_url();
    if url == "memory://" || url.starts_with("memory://") {
        tracing::warn!("storage is memory://: nothing survives a restart");
        return Ok(Arc::new(MemoryStorage::new()));
    }
    if let Some(path) = url.strip_prefix("file://") {
        return Ok(Arc::new(open_log(config, path).await?));
    }
    // `object+file://` and `object+memory://` select the object layout over a local directory
    // or memory; `s3://` needs no marker.
    let object_url = url.strip_prefix("object+").unwrap_or(&url);
    if !object_url.starts_with("s3://")
        && !object_url.starts_with("hdfs://")
        && !object_url.starts_with("file://")
        && !object_url.starts_with("memory://")
    {
        bail!(
            "storage.url {url:?} has an unsupported scheme: use file://PATH (native log), \
             memory://, s3://BUCKET/PREFIX, hdfs://NAMENODE/PREFIX, object+file://PATH or object+memory://"
        );
    }
    let o = &config.storage.object;
    let opts = StoreOptions {
        endpoint: o.endpoint.clone(),
        region: o.region.clone(),
        access_key_id: o.access_key_id.clone(),
        secret_access_key: o.secret_access_key.clone(),
        allow_http: o.allow_http,
        virtual_hosted: o.virtual_hosted,
        retry_timeout: o.retry_timeout.0,
    };
    let (store, prefix, kind) = switchboard_object::open_store(object_url, &opts)
        .with_context(|| format!("opening the object store {url}"))?;
    let cfg = ObjectConfig {
        flush_interval: o.flush_interval.0,
        flush_bytes: o.flush_size.as_usize(),
        cache_bytes: o.cache_size.as_usize(),
        compact_target: o.compact_size.bytes(),
        compact_interval: Some(o.compact_interval.0),
        ..ObjectConfig::default()
    };
    let remote = ObjectStorage::open(store, prefix, cfg, kind)
        .await
        .with_context(|| format!("reading the object log at {url}"))?;
    match o.mode {
        ObjectMode::Direct => {
            tracing::info!(%url, "storage: object store, direct mode (no local data)");
            Ok(Arc::new(remote))
        }
        ObjectMode::Tiered => {
            let local_dir = config.data_dir.join("streams");
            let local = open_log(config, &local_dir.to_string_lossy()).await?;
            tracing::info!(%url, local = %local_dir.display(), "storage: native log tiered to an object store");
            let tier = TierConfig {
                upload_interval: o.upload_interval.0,
                local_retention_bytes: o.local_retention.bytes(),
            };
            Ok(Arc::new(TieredStorage::new(Arc::new(local), remote, tier)))
        }
    }
}

/// The native log under `path`, with `[storage.log]`'s settings.
async fn open_log(config: &Config, path: &str) -> anyhow::Result<LogStorage> {
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
    LogStorage::open(&root, cfg)
        .await
        .with_context(|| format!("opening the native log at {}", root.display()))
}
