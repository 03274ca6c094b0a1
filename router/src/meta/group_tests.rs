//! Groups of three nodes in one process, talking over loopback TCP on ports the system picked.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use switchboard_model::StreamName;
use tempfile::TempDir;
use tokio::net::TcpListener;

use super::*;
use crate::table::{CommittedOffset, OffsetCommit, Rejection, StreamMeta};

/// Bound on every wait for the group to settle: elections take about a second; this leaves room
/// for a loaded machine running other tests at once.
const SETTLE: Duration = Duration::from_secs(20);

fn name(s: &str) -> StreamName {
    StreamName::new(s).expect("valid stream name")
}

fn create(s: &str) -> Command {
    Command::CreateStream {
        name: name(s),
        id: 7,
        partitions: 3,
        config: BTreeMap::new(),
        created_ms: 1,
    }
}

fn commit(offset: i64) -> Command {
    Command::CommitOffsets {
        group: "g".into(),
        offsets: vec![OffsetCommit {
            stream: name("orders"),
            partition: 0,
            committed: CommittedOffset {
                offset,
                leader_epoch: 0,
                metadata: String::new(),
                commit_ms: 2,
            },
        }],
    }
}

fn has_stream(s: &'static str) -> impl Fn(&RoutingTable) -> bool {
    move |t| t.stream(&name(s)).is_some()
}

fn offset(t: &RoutingTable) -> Option<i64> {
    t.committed("g", &name("orders"), 0).map(|c| c.offset)
}

/// Polls `check` until it holds or `SETTLE` passes; true if it held.
async fn eventually(mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + SETTLE;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check()
}

async fn ok<F: Future<Output = Result<Applied, MetaError>>>(proposal: F) -> Applied {
    match proposal.await {
        Ok(applied) => applied,
        Err(e) => panic!("proposal failed: {e}"),
    }
}

/// Three (or more) nodes, each with its own directory, some of them running.
struct Group {
    members: BTreeMap<u64, String>,
    dirs: BTreeMap<u64, TempDir>,
    running: BTreeMap<u64, MetaStore>,
    template: MetaOptions,
}

impl Group {
    /// Binds a listener per node on a free port, then opens every node at once: each waits for
    /// a leader, which needs a majority of the others.
    async fn start(size: u64, template: MetaOptions) -> Self {
        let mut listeners = BTreeMap::new();
        for id in 1..=size {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            listeners.insert(id, listener);
        }
        let members: BTreeMap<u64, String> = listeners
            .iter()
            .map(|(id, l)| (*id, l.local_addr().expect("addr").to_string()))
            .collect();
        let mut group = Self {
            dirs: (1..=size)
                .map(|id| (id, TempDir::new().expect("tempdir")))
                .collect(),
            members,
            running: BTreeMap::new(),
            template,
        };
        let mut opening = tokio::task::JoinSet::new();
        for (id, listener) in listeners {
            let dir = group.dir(id);
            let options = group.options(id);
            opening.spawn(async move {
                let store = MetaStore::open_with_listener(&dir, options, listener).await;
                (id, store)
            });
        }
        for (id, store) in opening.join_all().await {
            let store = store.unwrap_or_else(|e| panic!("node {id} did not start: {e}"));
            group.running.insert(id, store);
        }
        group
    }

    fn dir(&self, id: u64) -> PathBuf {
        self.dirs[&id].path().to_path_buf()
    }

    fn options(&self, id: u64) -> MetaOptions {
        MetaOptions {
            node_id: id,
            members: self.members.clone(),
            ..self.template.clone()
        }
    }

    fn node(&self, id: u64) -> &MetaStore {
        &self.running[&id]
    }

    /// The leader every running node agrees on, once they do.
    async fn leader(&self) -> u64 {
        let mut agreed = None;
        let settled = eventually(|| {
            let views: BTreeSet<Option<u64>> = self.running.values().map(|n| n.leader()).collect();
            agreed = match views.into_iter().collect::<Vec<_>>()[..] {
                [Some(leader)] if self.running.contains_key(&leader) => Some(leader),
                _ => None,
            };
            agreed.is_some()
        })
        .await;
        assert!(
            settled,
            "the running nodes never agreed on a running leader"
        );
        agreed.unwrap_or_default()
    }

    fn followers(&self, leader: u64) -> Vec<u64> {
        self.running
            .keys()
            .copied()
            .filter(|id| *id != leader)
            .collect()
    }

    /// Waits until `check` holds on the table of every running node.
    async fn applied_everywhere(&self, check: impl Fn(&RoutingTable) -> bool) -> bool {
        eventually(|| self.running.values().all(|n| n.read(&check))).await
    }

    async fn stop(&mut self, id: u64) {
        let node = self.running.remove(&id).expect("node is running");
        node.shutdown().await.expect("shutdown");
    }

    /// Opens a stopped node again; it binds its own address from the member list.
    async fn restart(&mut self, id: u64) {
        let store = MetaStore::open_with_options(&self.dir(id), self.options(id))
            .await
            .unwrap_or_else(|e| panic!("node {id} did not restart: {e}"));
        self.running.insert(id, store);
    }

    async fn shutdown(mut self) {
        for id in self.running.keys().copied().collect::<Vec<_>>() {
            self.stop(id).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_one_leader_that_all_agree_on() {
    let group = Group::start(3, MetaOptions::default()).await;
    let leader = group.leader().await;
    assert!((1..=3).contains(&leader));
    assert_eq!(group.followers(leader).len(), 2);
    group.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proposal_on_a_follower_is_applied_on_all_three_nodes() {
    let group = Group::start(3, MetaOptions::default()).await;
    let leader = group.leader().await;
    let follower = group.node(group.followers(leader)[0]);

    let created = ok(follower.propose(create("orders"))).await;
    assert!(matches!(
        created,
        Applied::Stream(StreamMeta { partitions: 3, .. })
    ));
    // The follower answers once it applied the entry itself: it reads its own write at once.
    assert!(follower.read(has_stream("orders")));
    assert!(group.applied_everywhere(has_stream("orders")).await);

    // The answer is the leader's table's answer, forwarded back.
    assert_eq!(
        ok(follower.propose(create("orders"))).await,
        Applied::Rejected(Rejection::StreamExists(name("orders")))
    );
    group.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proposals_on_every_node_allocate_distinct_ids() {
    let group = Group::start(3, MetaOptions::default()).await;
    group.leader().await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        for node in group.running.values() {
            match ok(node.propose(Command::AllocateProducerId)).await {
                Applied::ProducerId(id) => ids.push(id),
                other => panic!("unexpected answer {other:?}"),
            }
        }
    }
    ids.sort_unstable();
    assert_eq!(ids, (0..9).collect::<Vec<i64>>());
    group.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_leader_stops_the_other_two_elect_a_new_one_and_accept_proposals() {
    let mut group = Group::start(3, MetaOptions::default()).await;
    let old = group.leader().await;
    ok(group.node(old).propose(create("orders"))).await;

    group.stop(old).await;
    let new = group.leader().await;
    assert_ne!(new, old);

    for id in group.followers(old) {
        ok(group
            .node(id)
            .propose(commit(i64::try_from(id).unwrap_or(0))))
        .await;
    }
    assert!(group.applied_everywhere(has_stream("orders")).await);
    assert!(group.applied_everywhere(|t| offset(t).is_some()).await);
    group.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_follower_catches_up_from_the_log() {
    let mut group = Group::start(3, MetaOptions::default()).await;
    let leader = group.leader().await;
    let away = group.followers(leader)[0];
    ok(group.node(leader).propose(create("orders"))).await;
    group.stop(away).await;

    for i in 0..10 {
        ok(group.node(leader).propose(commit(i))).await;
    }
    group.restart(away).await;
    assert!(
        eventually(|| group.node(away).read(offset) == Some(9)).await,
        "node {away} did not catch up"
    );
    group.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_follower_catches_up_through_a_snapshot() {
    // A snapshot every 5 entries and no log kept behind it: entries the follower missed are
    // purged, so only a snapshot can bring it up to date.
    let template = MetaOptions {
        snapshot_every: 5,
        logs_kept_after_snapshot: 0,
        ..MetaOptions::default()
    };
    let mut group = Group::start(3, template).await;
    let leader = group.leader().await;
    let away = group.followers(leader)[0];
    ok(group.node(leader).propose(create("orders"))).await;
    group.stop(away).await;

    for i in 0..30 {
        ok(group.node(leader).propose(commit(i))).await;
    }
    // Snapshots are built, and the log purged, in the background.
    let purged = || group.node(leader).raft.metrics().borrow().purged;
    assert!(
        eventually(|| purged().map(|p| p.index) > Some(20)).await,
        "the leader kept its log ({:?}), the test would prove nothing",
        purged()
    );
    let purged = purged();

    group.restart(away).await;
    assert!(
        eventually(|| group.node(away).read(offset) == Some(29)).await,
        "node {away} did not catch up"
    );
    let installed = group.node(away).raft.metrics().borrow().snapshot;
    assert!(
        installed.map(|s| s.index) >= purged.map(|p| p.index),
        "no snapshot installed ({installed:?}, the leader purged {purged:?})"
    );
    group.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_majority_a_follower_gives_up_with_a_retryable_no_leader() {
    let template = MetaOptions {
        propose_timeout: Duration::from_secs(2),
        ..MetaOptions::default()
    };
    let mut group = Group::start(3, template).await;
    let leader = group.leader().await;
    let followers = group.followers(leader);
    group.stop(leader).await;
    group.stop(followers[1]).await;

    let started = Instant::now();
    let refused = group
        .node(followers[0])
        .propose(Command::AllocateProducerId)
        .await;
    let waited = started.elapsed();
    assert!(
        matches!(refused, Err(MetaError::NoLeader(_))),
        "{refused:?}"
    );
    assert!(refused.is_err_and(|e| e.is_retryable()));
    assert!(
        waited >= Duration::from_secs(2) && waited < SETTLE,
        "gave up after {waited:?}"
    );
    group.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_without_a_majority_gives_up_with_a_retryable_unconfirmed() {
    let template = MetaOptions {
        propose_timeout: Duration::from_secs(2),
        ..MetaOptions::default()
    };
    let mut group = Group::start(3, template).await;
    let leader = group.leader().await;
    for id in group.followers(leader) {
        group.stop(id).await;
    }

    let refused = group
        .node(leader)
        .propose(Command::AllocateProducerId)
        .await;
    // Whether it still believes it leads (the entry waits for a majority) or has stepped down.
    assert!(
        matches!(
            refused,
            Err(MetaError::Unconfirmed { .. } | MetaError::NoLeader(_))
        ),
        "{refused:?}"
    );
    assert!(refused.is_err_and(|e| e.is_retryable()));
    group.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_configured_with_different_members_refuse_each_other() {
    let one = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let two = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let three = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = |l: &TcpListener| l.local_addr().expect("addr").to_string();
    let pair = BTreeMap::from([(1, addr(&one)), (2, addr(&two))]);
    let mut trio = pair.clone();
    trio.insert(3, addr(&three));
    drop(three);

    // Alone, either would form a group with the other: node 1 needs node 2's vote, node 2
    // needs node 1's (node 3 is down). Their lists differ, so neither may count the other.
    let dirs = [
        TempDir::new().expect("tempdir"),
        TempDir::new().expect("tempdir"),
    ];
    let options = |node_id, members| MetaOptions {
        node_id,
        members,
        ready_timeout: Duration::from_secs(3),
        ..MetaOptions::default()
    };
    let (first, second) = tokio::join!(
        MetaStore::open_with_listener(dirs[0].path(), options(1, pair), one),
        MetaStore::open_with_listener(dirs[1].path(), options(2, trio), two),
    );
    assert!(
        matches!(first, Err(MetaError::NoLeader(_))),
        "{:?}",
        first.err()
    );
    assert!(
        matches!(second, Err(MetaError::NoLeader(_))),
        "{:?}",
        second.err()
    );
}
