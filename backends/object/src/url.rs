//! Turns a storage URL into an object store and the prefix the backend writes under.
//!
//! - `s3://bucket/prefix`: any S3-compatible server; [`StoreOptions`] give the endpoint,
//!   region, credentials, plain HTTP and path-style addressing. Credentials not given there come
//!   from the usual `AWS_*` environment variables; with none at all, requests go unsigned
//!   (local servers that allow anonymous access, such as SeaweedFS without identities).
//! - `file:///path`: a local directory (the object layout, not the native log's).
//! - `memory://`: process memory, for tests.
//! - `hdfs://namenode:port/path` (or `hdfs://nameservice/path` with the Hadoop configuration
//!   in `HADOOP_CONF_DIR`): HDFS through the pure-Rust `hdfs-native` client, with the `hdfs`
//!   feature (on by default). A create is a write to a temporary file and a rename that refuses
//!   to replace, so wal objects are fenced as on S3.

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, RetryConfig};

/// Settings of the S3 client; empty strings mean "not set".
#[derive(Debug, Clone, Default)]
pub struct StoreOptions {
    pub endpoint: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Allow `http://` endpoints (local servers).
    pub allow_http: bool,
    /// Address buckets as `bucket.host` instead of `host/bucket`.
    pub virtual_hosted: bool,
    /// How long a failing request is retried before the error reaches the caller (and, from
    /// there, a client as a retryable error); zero keeps the client library's default.
    pub retry_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    #[error("storage URL {0:?} has no scheme (expected s3://, file:// or memory://)")]
    NoScheme(String),
    #[error("storage URL scheme {0:?} is not an object store (expected s3, hdfs, file or memory)")]
    Scheme(String),
    #[error("storage URL {0:?} names no bucket")]
    NoBucket(String),
    #[error("opening the object store: {0}")]
    Store(#[from] object_store::Error),
    #[error("creating {path}: {source}")]
    Dir {
        path: String,
        source: std::io::Error,
    },
}

/// The store a URL names, the prefix inside it, and a short kind for logs and metrics.
pub fn open_store(
    url: &str,
    opts: &StoreOptions,
) -> Result<(Arc<dyn ObjectStore>, Path, &'static str), UrlError> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| UrlError::NoScheme(url.to_string()))?;
    match scheme {
        "s3" => {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(UrlError::NoBucket(url.to_string()));
            }
            let mut b = AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .with_allow_http(opts.allow_http)
                .with_virtual_hosted_style_request(opts.virtual_hosted);
            if !opts.endpoint.is_empty() {
                b = b.with_endpoint(&opts.endpoint);
            }
            if !opts.retry_timeout.is_zero() {
                b = b.with_retry(RetryConfig {
                    retry_timeout: opts.retry_timeout,
                    ..RetryConfig::default()
                });
            }
            if !opts.region.is_empty() {
                b = b.with_region(&opts.region);
            }
            if !opts.access_key_id.is_empty() {
                b = b
                    .with_access_key_id(&opts.access_key_id)
                    .with_secret_access_key(&opts.secret_access_key);
            } else if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
                b = b.with_skip_signature(true);
            }
            Ok((Arc::new(b.build()?), Path::from(prefix), "s3"))
        }
        "file" => {
            std::fs::create_dir_all(rest).map_err(|source| UrlError::Dir {
                path: rest.to_string(),
                source,
            })?;
            let fs = LocalFileSystem::new_with_prefix(rest)?;
            Ok((Arc::new(fs), Path::from(""), "object-file"))
        }
        "memory" => Ok((Arc::new(InMemory::new()), Path::from(rest), "object-memory")),
        #[cfg(feature = "hdfs")]
        "hdfs" => {
            let (authority, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let store = hdfs_native_object_store::HdfsObjectStoreBuilder::new()
                .with_url(format!("hdfs://{authority}"))
                .build()?;
            Ok((Arc::new(store), Path::from(prefix), "hdfs"))
        }
        other => Err(UrlError::Scheme(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn schemes_pick_stores_and_prefixes() {
        let opts = StoreOptions {
            endpoint: "http://127.0.0.1:1".into(),
            allow_http: true,
            region: "us-east-1".into(),
            ..StoreOptions::default()
        };
        let (_, prefix, kind) = open_store("s3://bucket/a/b", &opts).unwrap();
        assert_eq!((prefix.as_ref(), kind), ("a/b", "s3"));
        let (_, prefix, kind) = open_store("memory://x", &opts).unwrap();
        assert_eq!((prefix.as_ref(), kind), ("x", "object-memory"));
        assert!(matches!(
            open_store("s3:///nobucket", &opts),
            Err(UrlError::NoBucket(_))
        ));
        assert!(matches!(
            open_store("gopher://x", &opts),
            Err(UrlError::Scheme(_))
        ));
        assert!(matches!(open_store("x", &opts), Err(UrlError::NoScheme(_))));
    }

    #[cfg(feature = "hdfs")]
    #[tokio::test]
    async fn an_hdfs_url_names_the_namenode_and_the_prefix() {
        // Building the client does not contact the namenode; the first request does.
        let (_, prefix, kind) =
            open_store("hdfs://127.0.0.1:1/streams/prod", &StoreOptions::default()).unwrap();
        assert_eq!((prefix.as_ref(), kind), ("streams/prod", "hdfs"));
    }
}
