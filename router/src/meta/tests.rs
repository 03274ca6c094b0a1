use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use switchboard_model::StreamName;
use tempfile::TempDir;

use super::*;
use crate::table::{CommittedOffset, OffsetCommit, StreamMeta};

fn name(s: &str) -> StreamName {
    StreamName::new(s).expect("valid stream name")
}

fn create(s: &str, partitions: u32) -> Command {
    Command::CreateStream {
        name: name(s),
        // Real topic ids use all 128 bits; they must survive JSON in the log and snapshots.
        id: u128::MAX - 42,
        partitions,
        config: BTreeMap::new(),
        created_ms: 1,
    }
}

fn commit(group: &str, stream: &str, partition: u32, offset: i64) -> Command {
    Command::CommitOffsets {
        group: group.into(),
        offsets: vec![OffsetCommit {
            stream: name(stream),
            partition,
            committed: CommittedOffset {
                offset,
                leader_epoch: 0,
                metadata: String::new(),
                commit_ms: 2,
            },
        }],
    }
}

/// Options that snapshot every `every` entries and keep no log behind a snapshot.
fn snapshotting(every: u64) -> MetaOptions {
    MetaOptions {
        snapshot_every: every,
        logs_kept_after_snapshot: 0,
        ..MetaOptions::default()
    }
}

fn offset(store: &MetaStore, group: &str, stream: &str, partition: u32) -> Option<i64> {
    store.read(|t| {
        t.committed(group, &name(stream), partition)
            .map(|c| c.offset)
    })
}

async fn propose(store: &MetaStore, cmd: Command) -> Applied {
    match store.propose(cmd).await {
        Ok(applied) => applied,
        Err(e) => panic!("proposal failed: {e}"),
    }
}

async fn next_producer_id(store: &MetaStore) -> Applied {
    propose(store, Command::AllocateProducerId).await
}

#[tokio::test]
async fn proposals_apply_and_are_readable() {
    let dir = TempDir::new().expect("tempdir");
    let store = MetaStore::open(dir.path()).await.expect("open");

    let created = propose(&store, create("orders", 3)).await;
    assert!(matches!(
        created,
        Applied::Stream(StreamMeta { partitions: 3, .. })
    ));
    assert_eq!(
        propose(&store, create("orders", 3)).await,
        Applied::Rejected(crate::table::Rejection::StreamExists(name("orders")))
    );
    assert_eq!(
        propose(&store, commit("g", "orders", 1, 17)).await,
        Applied::Done
    );
    assert_eq!(next_producer_id(&store).await, Applied::ProducerId(0));

    assert_eq!(
        store.read(|t| t.stream(&name("orders")).map(|s| s.partitions)),
        Some(3)
    );
    assert_eq!(offset(&store, "g", "orders", 1), Some(17));
    store.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn table_is_restored_after_shutdown_and_reopen() {
    let dir = TempDir::new().expect("tempdir");
    let store = MetaStore::open(dir.path()).await.expect("open");
    propose(&store, create("orders", 2)).await;
    propose(&store, create("payments", 1)).await;
    propose(&store, commit("billing", "orders", 0, 99)).await;
    propose(&store, Command::AllocateProducerId).await;
    propose(&store, Command::AllocateProducerId).await;
    store.shutdown().await.expect("shutdown");

    let reopened = MetaStore::open(dir.path()).await.expect("reopen");
    let names: Vec<String> = reopened.read(|t| t.streams().map(|s| s.name.to_string()).collect());
    assert_eq!(names, ["orders", "payments"]);
    assert_eq!(offset(&reopened, "billing", "orders", 0), Some(99));
    assert_eq!(next_producer_id(&reopened).await, Applied::ProducerId(2));
    reopened.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_dropped_store_can_be_reopened_at_once() {
    let dir = TempDir::new().expect("tempdir");
    let store = MetaStore::open(dir.path()).await.expect("open");
    propose(&store, create("orders", 2)).await;
    drop(store);

    let reopened = MetaStore::open(dir.path())
        .await
        .expect("reopen after drop");
    let id = reopened.read(|t| t.stream(&name("orders")).map(|s| s.id));
    assert_eq!(id, Some(u128::MAX - 42));
    reopened.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_directory_held_by_a_live_store_is_refused() {
    let dir = TempDir::new().expect("tempdir");
    let store = MetaStore::open(dir.path()).await.expect("open");
    let second = MetaStore::open(dir.path()).await;
    assert!(
        matches!(second, Err(MetaError::Database { .. })),
        "{:?}",
        second.err()
    );
    store.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn proposals_after_shutdown_fail_as_closed() {
    let dir = TempDir::new().expect("tempdir");
    let store = MetaStore::open(dir.path()).await.expect("open");
    store.shutdown().await.expect("shutdown");
    let err = store.propose(Command::AllocateProducerId).await;
    assert!(matches!(err, Err(MetaError::Closed)), "{err:?}");
}

#[tokio::test]
async fn reopen_after_snapshots_restores_snapshot_and_log_tail() {
    let dir = TempDir::new().expect("tempdir");
    let store = MetaStore::open_with_options(dir.path(), snapshotting(10))
        .await
        .expect("open");
    propose(&store, create("orders", 1)).await;
    for i in 0..30 {
        propose(&store, commit("g", "orders", 0, i)).await;
    }
    let mut metrics = store.raft.metrics();
    let snapshotted = tokio::time::timeout(Duration::from_secs(10), async {
        metrics
            .wait_for(|m| {
                m.snapshot.map(|l| l.index) >= Some(20) && m.purged.map(|l| l.index) >= Some(20)
            })
            .await
            .is_ok()
    })
    .await;
    assert_eq!(
        snapshotted,
        Ok(true),
        "no snapshot was built and the log not purged"
    );
    // A tail of entries after the last snapshot, replayed from the log on reopen.
    for _ in 0..3 {
        propose(&store, Command::AllocateProducerId).await;
    }
    store.shutdown().await.expect("shutdown");

    let reopened = MetaStore::open_with_options(dir.path(), snapshotting(10))
        .await
        .expect("reopen");
    let ids: Vec<u128> = reopened.read(|t| t.streams().map(|s| s.id).collect());
    assert_eq!(ids, [u128::MAX - 42]);
    assert_eq!(offset(&reopened, "g", "orders", 0), Some(29));
    assert_eq!(next_producer_id(&reopened).await, Applied::ProducerId(3));
    reopened.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_proposals_apply_exactly_once() {
    const TASKS: i64 = 32;
    const EACH: i64 = 20;
    let dir = TempDir::new().expect("tempdir");
    let store = MetaStore::open_with_options(dir.path(), snapshotting(100))
        .await
        .expect("open");

    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..TASKS {
        let store = store.clone();
        tasks.spawn(async move {
            let mut ids = Vec::new();
            for _ in 0..EACH {
                match store.propose(Command::AllocateProducerId).await {
                    Ok(Applied::ProducerId(id)) => ids.push(id),
                    other => panic!("unexpected answer {other:?}"),
                }
            }
            ids
        });
    }
    let mut ids: Vec<i64> = tasks.join_all().await.into_iter().flatten().collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..TASKS * EACH).collect::<Vec<_>>());
    store.shutdown().await.expect("shutdown");

    let reopened = MetaStore::open(dir.path()).await.expect("reopen");
    assert_eq!(
        next_producer_id(&reopened).await,
        Applied::ProducerId(TASKS * EACH)
    );
    reopened.shutdown().await.expect("shutdown");
}

/// Dropping the runtime ends every task mid-flight, as close to `kill -9` as one process gets:
/// nothing is flushed or shut down, yet every acknowledged proposal is back after reopen.
#[test]
fn acknowledged_proposals_survive_an_abrupt_stop() {
    let dir = TempDir::new().expect("tempdir");
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
    };

    let first = runtime();
    first.block_on(async {
        let store = MetaStore::open(dir.path()).await.expect("open");
        propose(&store, create("orders", 4)).await;
        propose(&store, commit("g", "orders", 3, 7)).await;
        // Proposed but never awaited: it may or may not survive, but must not corrupt.
        let pending = store.clone();
        tokio::spawn(async move { pending.propose(Command::AllocateProducerId).await });
    });
    first.shutdown_timeout(Duration::from_secs(5));

    runtime().block_on(async {
        let store = MetaStore::open(dir.path())
            .await
            .expect("reopen after abrupt stop");
        assert_eq!(
            store.read(|t| t.stream(&name("orders")).map(|s| s.partitions)),
            Some(4)
        );
        assert_eq!(offset(&store, "g", "orders", 3), Some(7));
        assert!(matches!(
            propose(&store, Command::AllocateProducerId).await,
            Applied::ProducerId(0 | 1)
        ));
        store.shutdown().await.expect("shutdown");
    });
}

#[tokio::test]
async fn single_node_becomes_leader_quickly_on_first_start_and_restart() {
    let dir = TempDir::new().expect("tempdir");
    for _ in 0..2 {
        let started = Instant::now();
        let store = MetaStore::open(dir.path()).await.expect("open");
        // Generous for slow CI machines; a sole voter normally leads within milliseconds.
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        propose(&store, Command::AllocateProducerId).await;
        store.shutdown().await.expect("shutdown");
    }
}

#[tokio::test]
async fn a_directory_refuses_another_node_id() {
    let dir = TempDir::new().expect("tempdir");
    MetaStore::open(dir.path())
        .await
        .expect("open")
        .shutdown()
        .await
        .expect("shutdown");
    let other = MetaStore::open_with(dir.path(), 7, BTreeMap::new()).await;
    assert!(
        matches!(other, Err(MetaError::Config(_))),
        "{:?}",
        other.err()
    );
}

#[tokio::test]
async fn a_group_with_unreachable_peers_reports_no_leader() {
    let dir = TempDir::new().expect("tempdir");
    let own = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    // A peer that never accepts: connections hang in its backlog, the handshake times out.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = |l: &tokio::net::TcpListener| l.local_addr().expect("addr").to_string();
    let options = MetaOptions {
        members: BTreeMap::from([(1, addr(&own)), (2, addr(&silent))]),
        ready_timeout: Duration::from_millis(800),
        ..MetaOptions::default()
    };
    let opened = MetaStore::open_with_listener(dir.path(), options.clone(), own).await;
    let err = opened.err();
    assert!(matches!(err, Some(MetaError::NoLeader(_))), "{err:?}");
    assert!(err.is_some_and(|e| e.is_retryable()));
    // The failed open released the directory and the port: opening it again, binding the
    // node's own address itself, gets as far as the election.
    let options = MetaOptions {
        ready_timeout: Duration::from_millis(300),
        ..options
    };
    let again = MetaStore::open_with_options(dir.path(), options).await;
    assert!(
        matches!(again, Err(MetaError::NoLeader(_))),
        "{:?}",
        again.err()
    );
}

#[tokio::test]
async fn a_store_formed_alone_refuses_a_member_list() {
    let dir = TempDir::new().expect("tempdir");
    MetaStore::open(dir.path())
        .await
        .expect("open")
        .shutdown()
        .await
        .expect("shutdown");

    let own = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let options = MetaOptions {
        members: BTreeMap::from([
            (1, own.local_addr().expect("addr").to_string()),
            (2, "127.0.0.1:1".into()),
        ]),
        ..MetaOptions::default()
    };
    let refused = MetaStore::open_with_listener(dir.path(), options, own).await;
    let err = refused.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("not supported yet"), "{err}");
    // Nothing was changed: it still opens as the group of one it was.
    MetaStore::open(dir.path())
        .await
        .expect("reopen alone")
        .shutdown()
        .await
        .expect("shutdown");
}

const CRASH_DIR_ENV: &str = "SWITCHBOARD_META_CRASH_DIR";

/// Run by `acknowledged_proposals_survive_kill_9` in a child process: allocates producer ids
/// and prints each one once `propose` has acknowledged it, until it is killed.
#[tokio::test]
#[ignore = "child process of acknowledged_proposals_survive_kill_9"]
async fn crash_child_proposes_until_killed() {
    let Some(dir) = std::env::var_os(CRASH_DIR_ENV) else {
        return;
    };
    let store = MetaStore::open(std::path::Path::new(&dir))
        .await
        .expect("open");
    for _ in 0..100_000 {
        if let Applied::ProducerId(id) = propose(&store, Command::AllocateProducerId).await {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "ACK {id}");
            let _ = out.flush();
        }
    }
}

#[test]
fn acknowledged_proposals_survive_kill_9() {
    use std::io::BufRead;
    use std::process::{Command as Process, Stdio};

    let dir = TempDir::new().expect("tempdir");
    let mut child = Process::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "meta::tests::crash_child_proposes_until_killed"])
        .args(["--ignored", "--nocapture", "--test-threads=1"])
        .env(CRASH_DIR_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("child stdout");
    let mut acked = None;
    for line in std::io::BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if let Some(id) = line
            .strip_prefix("ACK ")
            .and_then(|s| s.parse::<i64>().ok())
        {
            acked = Some(id);
            if id >= 200 {
                break;
            }
        }
    }
    child.kill().expect("SIGKILL the child");
    let _ = child.wait();
    let acked = acked.expect("the child acknowledged proposals before being killed");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let store = MetaStore::open(dir.path())
            .await
            .expect("reopen after kill -9");
        match propose(&store, Command::AllocateProducerId).await {
            Applied::ProducerId(next) => assert!(next > acked, "acked {acked}, next {next}"),
            other => panic!("unexpected answer {other:?}"),
        }
        store.shutdown().await.expect("shutdown");
    });
}
