//! The replicated metadata store: the routing table behind a Raft log.
//!
//! This module is the only one that imports openraft. The table ([`RoutingTable`]) is the
//! state machine; its log, vote and snapshots live in one redb file under the store's
//! directory ([`store`] describes the layout). A single-node group is the default: on first
//! start the node makes itself the only voter, and on every start a sole voter elects itself
//! at once, so [`MetaStore::open`] returns within a few hundred milliseconds with the table as
//! it was (last snapshot plus the log entries after it).
//!
//! A group of three or five nodes is formed from configuration ([`MetaOptions::members`]):
//! nodes talk over TCP ([`wire`] is the protocol, [`network`] the client, [`server`] the
//! listener). Any node takes proposals: a follower forwards them to the leader and answers once
//! it has applied the entry itself, so a broker reads its own writes. Reads use the local copy
//! of the table, which on a follower may lag the leader by a heartbeat or so for writes made
//! through other nodes.

mod conn;
#[cfg(test)]
mod group_tests;
mod network;
mod registry;
mod server;
mod state_machine;
mod store;
#[cfg(test)]
mod tests;
mod wire;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use openraft::error::{Fatal, InitializeError, RaftError};
use openraft::{BasicNode, Config, Raft, RaftMetrics, ServerState, SnapshotPolicy, TokioRuntime};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;

use crate::table::{Applied, Command, RoutingTable};
use network::{Identity, Network, Peers};
use state_machine::{StateMachine, StoredSnapshot};
use store::{Db, LogStore};
use wire::Refusal;

openraft::declare_raft_types!(
    /// The openraft types of the metadata group: the log carries [`Command`]s, applying one
    /// answers an [`Applied`].
    TypeConfig:
        D = Command,
        R = Applied,
        NodeId = u64,
        Node = BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = TokioRuntime,
);

/// The node id of the default single-node group.
pub const DEFAULT_NODE_ID: u64 = 1;

/// The cluster name peers must share unless [`MetaOptions::cluster`] says otherwise.
pub const DEFAULT_CLUSTER: &str = "switchboard";

/// How long a proposal waits after "no leader" (or "not the leader any more") before asking
/// again, unless this node learns of a new leader sooner.
const RETRY_PAUSE: Duration = Duration::from_millis(250);

/// Errors of the metadata store.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("metadata storage failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("metadata snapshot is corrupt: {0}")]
    Corrupt(String),
    #[error("no metadata leader is available: {0}")]
    NoLeader(String),
    #[error(
        "proposal to metadata leader {leader} was not confirmed ({reason}); it may or may not \
         have been applied"
    )]
    Unconfirmed { leader: u64, reason: String },
    #[error("metadata store is shut down")]
    Closed,
    #[error("metadata database {path} cannot be used: {reason}")]
    Database { path: PathBuf, reason: String },
    #[error("metadata consensus failed: {0}")]
    Consensus(String),
    #[error("invalid metadata group configuration: {0}")]
    Config(String),
    #[error("metadata listener cannot bind {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

impl MetaError {
    /// True when the same proposal may succeed later (a new leader, the disk back). After
    /// [`MetaError::Unconfirmed`] the first attempt may have been applied too.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::NoLeader(_) | Self::Unconfirmed { .. } | Self::Io(_)
        )
    }
}

/// How a metadata node is set up. [`Default`] is the embedded single-node group.
#[derive(Debug, Clone)]
pub struct MetaOptions {
    /// This node's id in the group; fixed for the life of its directory.
    pub node_id: u64,
    /// The voters of a new group: node id → address ("host:port") where peers reach it. Empty
    /// means a group of this node alone. Every node must be given the same list (peers with
    /// another list are refused). A new group is formed with it; a formed one must still match
    /// it, as changing the members of a group is not supported yet.
    pub members: BTreeMap<u64, String>,
    /// Peers of another cluster name are refused.
    pub cluster: String,
    /// Where to listen for peers; `None` is this node's own address in `members`. Only used by
    /// [`MetaStore::open_with_options`] when the group has other members.
    pub listen: Option<String>,
    /// Build a snapshot once this many entries were applied since the last one.
    pub snapshot_every: u64,
    /// Entries kept in the log behind a snapshot, so a briefly lagging follower catches up
    /// from the log instead of a whole snapshot.
    pub logs_kept_after_snapshot: u64,
    /// How long `open` waits for a leader before giving up.
    pub ready_timeout: Duration,
    /// How long a proposal waits for a leader (elected or reachable) before it fails with
    /// [`MetaError::NoLeader`].
    pub propose_timeout: Duration,
}

impl Default for MetaOptions {
    fn default() -> Self {
        Self {
            node_id: DEFAULT_NODE_ID,
            members: BTreeMap::new(),
            cluster: DEFAULT_CLUSTER.into(),
            listen: None,
            snapshot_every: 1000,
            logs_kept_after_snapshot: 100,
            ready_timeout: Duration::from_secs(10),
            propose_timeout: Duration::from_secs(5),
        }
    }
}

impl MetaOptions {
    /// Timings for a group on one host or a LAN. A sole voter elects itself at once on start.
    /// With peers, heartbeats every 100 ms and an election after 0.5–1 s of silence: openraft
    /// gives an AppendEntries one heartbeat interval to be answered, and a follower answers
    /// only after its fsync, so the interval leaves room for a slow disk.
    fn raft_config(&self) -> Result<Config, MetaError> {
        let (heartbeat, election) = if self.has_peers() {
            (100, (500, 1000))
        } else {
            (50, (150, 300))
        };
        Config {
            cluster_name: "switchboard-meta".into(),
            election_timeout_min: election.0,
            election_timeout_max: election.1,
            heartbeat_interval: heartbeat,
            // Per snapshot chunk, each written with an fsync by the follower.
            install_snapshot_timeout: 2000,
            // Chunks stay far below the frame limit even as JSON arrays (see wire::MAX_FRAME).
            snapshot_max_chunk_size: 1 << 20,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_every.max(1)),
            max_in_snapshot_log_to_keep: self.logs_kept_after_snapshot,
            ..Config::default()
        }
        .validate()
        .map_err(|e| MetaError::Config(e.to_string()))
    }

    /// True when the group has a member other than this node.
    fn has_peers(&self) -> bool {
        self.members.keys().any(|id| *id != self.node_id)
    }

    fn voters(&self) -> Result<BTreeMap<u64, BasicNode>, MetaError> {
        if self.members.is_empty() {
            return Ok(BTreeMap::from([(self.node_id, BasicNode::default())]));
        }
        if !self.members.contains_key(&self.node_id) {
            return Err(MetaError::Config(format!(
                "node {} is not in the member list {:?}",
                self.node_id,
                self.members.keys().collect::<Vec<_>>()
            )));
        }
        Ok(self
            .members
            .iter()
            .map(|(id, addr)| (*id, BasicNode::new(addr)))
            .collect())
    }

    /// The address to listen on for peers, when the group has any.
    fn peer_listen_addr(&self) -> Option<String> {
        if !self.has_peers() {
            return None;
        }
        self.listen
            .clone()
            .or_else(|| self.members.get(&self.node_id).cloned())
    }
}

/// Handle to the metadata store; cheap to clone.
#[derive(Clone)]
pub struct MetaStore {
    raft: Raft<TypeConfig>,
    id: u64,
    table: Arc<RwLock<RoutingTable>>,
    peers: Arc<Peers>,
    propose_timeout: Duration,
    /// Stops the peer listener and its connections.
    cancel: CancellationToken,
    /// The peer listener and its connections.
    tasks: TaskTracker,
    /// Reports (by closing) when the Raft tasks have dropped the database.
    db_closed: watch::Receiver<()>,
    /// Shared by all clones; when the last one goes, the Raft node stops (openraft stops when
    /// every `Raft` handle is dropped) and the directory can be reopened.
    live: Arc<()>,
    /// Cancels the peer listener when the last clone goes: its tasks hold `Raft` handles too.
    _stop_listener: Arc<DropGuard>,
}

impl MetaStore {
    /// Opens (or creates) the single-node store under `dir` and waits until it leads.
    pub async fn open(dir: &Path) -> Result<Self, MetaError> {
        Self::open_with_options(dir, MetaOptions::default()).await
    }

    /// Opens node `node_id` of a group whose voters are `members` (node id → address).
    pub async fn open_with(
        dir: &Path,
        node_id: u64,
        members: BTreeMap<u64, String>,
    ) -> Result<Self, MetaError> {
        let options = MetaOptions {
            node_id,
            members,
            ..MetaOptions::default()
        };
        Self::open_with_options(dir, options).await
    }

    /// Opens a node with every setting explicit. A node with peers binds its peer listener
    /// ([`MetaOptions::listen`]) first.
    pub async fn open_with_options(dir: &Path, options: MetaOptions) -> Result<Self, MetaError> {
        let listener = match options.peer_listen_addr() {
            Some(addr) => Some(
                TcpListener::bind(&addr)
                    .await
                    .map_err(|source| MetaError::Bind { addr, source })?,
            ),
            None => None,
        };
        Self::open_node(dir, options, listener).await
    }

    /// Opens a node whose peer listener is already bound (a server binds every port before it
    /// starts anything; tests bind port 0). `options.listen` is ignored.
    pub async fn open_with_listener(
        dir: &Path,
        options: MetaOptions,
        listener: TcpListener,
    ) -> Result<Self, MetaError> {
        Self::open_node(dir, options, Some(listener)).await
    }

    async fn open_node(
        dir: &Path,
        options: MetaOptions,
        listener: Option<TcpListener>,
    ) -> Result<Self, MetaError> {
        let started = Instant::now();
        let config = Arc::new(options.raft_config()?);
        let voters = options.voters()?;
        std::fs::create_dir_all(dir)?;
        let dir = std::fs::canonicalize(dir)?;
        registry::wait_released(&dir).await?;
        let (db, db_closed, snapshot) = open_db(&dir, options.node_id).await?;

        let table = Arc::new(RwLock::new(RoutingTable::default()));
        let sm =
            StateMachine::new(db.clone(), table.clone(), snapshot).map_err(MetaError::Corrupt)?;
        let identity = Identity {
            cluster: options.cluster.clone(),
            id: options.node_id,
            members: options.members.clone(),
        };
        let peers = Arc::new(Peers::new(identity.clone()));
        let network = Network::new(peers.clone());
        let raft = Raft::new(options.node_id, config, network, LogStore::new(db), sm)
            .await
            .map_err(fatal)?;
        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();
        if let Some(listener) = listener {
            let addr = listener
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_default();
            tracing::debug!(
                node_id = options.node_id,
                %addr,
                members = ?options.members,
                "metadata listener accepting peers"
            );
            let identity = Arc::new(identity);
            tasks.spawn(server::serve(
                listener,
                raft.clone(),
                identity,
                cancel.clone(),
                tasks.clone(),
            ));
        }
        let store = Self {
            raft,
            id: options.node_id,
            table,
            peers,
            propose_timeout: options.propose_timeout,
            _stop_listener: Arc::new(cancel.clone().drop_guard()),
            cancel,
            tasks,
            db_closed,
            live: Arc::new(()),
        };
        if let Err(e) = store.start(voters, options.ready_timeout).await {
            // Free the directory and the port so that a retry can open them.
            let _ = store.shutdown().await;
            return Err(e);
        }
        registry::register(dir.clone(), &store.live, store.db_closed.clone());
        tracing::info!(
            node_id = options.node_id,
            leader = store.leader(),
            dir = %dir.display(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "metadata store ready"
        );
        Ok(store)
    }

    /// Forms the group on a fresh store, or checks that a formed one has the configured
    /// members, then waits for a leader.
    ///
    /// Every member of a new group initializes it, each with the same member list, rather than
    /// only the lowest id: the group then forms as soon as any majority is up, instead of
    /// depending on one particular node being among the first to start (with lowest-id-only,
    /// a group whose node 1 is down at first start cannot form at all). openraft allows this
    /// when the lists are equal, as the initial entries are then identical; the peer handshake
    /// refuses a peer with another list ([`server::check_hello`]), so unequal lists cannot
    /// form two groups.
    async fn start(
        &self,
        voters: BTreeMap<u64, BasicNode>,
        timeout: Duration,
    ) -> Result<(), MetaError> {
        let (nodes, voter_ids) = self.formed_members().await?;
        if voter_ids.is_empty() {
            // Nothing in the log yet. `initialize` is refused (NotAllowed) if a peer already
            // asked for this node's vote; the leader then sends it the group's first entry.
            match self.raft.initialize(voters).await {
                Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
                Err(RaftError::APIError(e)) => return Err(MetaError::Config(e.to_string())),
                Err(RaftError::Fatal(e)) => return Err(fatal(e)),
            }
        } else {
            check_members(&nodes, &voter_ids, &voters)?;
        }
        self.wait_ready(timeout).await
    }

    /// The members of the group as the log (or snapshot) has them: nodes and voter ids, both
    /// empty before the group's first entry reached this node.
    async fn formed_members(&self) -> Result<(BTreeMap<u64, String>, BTreeSet<u64>), MetaError> {
        self.raft
            .with_raft_state(|st| {
                let m = st.membership_state.effective();
                let nodes = m.nodes().map(|(id, n)| (*id, n.addr.clone())).collect();
                (nodes, m.voter_ids().collect())
            })
            .await
            .map_err(fatal)
    }

    /// Waits until a leader is known and, when it is this node, until it has applied its whole
    /// log, so that reads see every entry acknowledged before a restart.
    async fn wait_ready(&self, timeout: Duration) -> Result<(), MetaError> {
        let mut metrics = self.raft.metrics();
        let waited = tokio::time::timeout(timeout, async {
            metrics
                .wait_for(|m| m.running_state.is_err() || is_ready(m))
                .await
                .map(|m| m.running_state.as_ref().err().map(|e| fatal(e.clone())))
        })
        .await;
        match waited {
            Err(_) => Err(MetaError::NoLeader(format!(
                "no leader elected within {timeout:?} (a majority of the members must be up and \
                 reach each other)"
            ))),
            Ok(Err(_)) => Err(MetaError::Closed),
            Ok(Ok(Some(stopped))) => Err(stopped),
            Ok(Ok(None)) => Ok(()),
        }
    }

    /// This node's id in the group.
    pub fn node_id(&self) -> u64 {
        self.id
    }

    /// The leader this node knows of, if any.
    pub fn leader(&self) -> Option<u64> {
        self.raft.metrics().borrow().current_leader
    }

    /// Applies `cmd` once it is durable on a majority and returns what the table answered.
    /// On a follower the proposal is forwarded to the leader, and the answer returned once this
    /// node has applied the entry too (or a moment later, if it lags), so that reads here see
    /// it. While no leader is known, waits for one up to the proposal timeout.
    pub async fn propose(&self, cmd: Command) -> Result<Applied, MetaError> {
        let deadline = Instant::now() + self.propose_timeout;
        loop {
            let seen = self.leader_and_term();
            let why = match self.try_propose(&cmd, deadline).await? {
                Ok(applied) => return Ok(applied),
                Err(why) => why,
            };
            if Instant::now() >= deadline {
                return Err(MetaError::NoLeader(format!(
                    "{why} (gave up after {:?})",
                    self.propose_timeout
                )));
            }
            self.wait_for_new_leader(seen, deadline).await;
        }
    }

    /// One attempt: here if this node leads, else at the leader it knows. `Ok(Err(why))` when
    /// nothing was written and another attempt may succeed.
    async fn try_propose(
        &self,
        cmd: &Command,
        deadline: Instant,
    ) -> Result<Result<Applied, String>, MetaError> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let local = tokio::time::timeout(remaining, server::write(&self.raft, cmd.clone())).await;
        let Ok(local) = local else {
            // This node leads (or believed it did) and appended the entry, but no majority
            // confirmed it in time; it commits if one does later.
            return Err(MetaError::Unconfirmed {
                leader: self.id,
                reason: format!("no majority acknowledged it within {remaining:?}"),
            });
        };
        let (leader, node) = match local {
            Ok(written) => return Ok(Ok(written.applied)),
            Err(Refusal::NotLeader {
                leader: Some((leader, node)),
            }) if leader != self.id => (leader, node),
            Err(Refusal::NotLeader { .. }) => return Ok(Err("no leader is elected".into())),
            Err(Refusal::Stopped) => return Err(MetaError::Closed),
            Err(Refusal::Failed(e)) => return Err(MetaError::Consensus(e)),
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Ok(Err(format!(
                "node {leader} leads, but no time is left to ask it"
            )));
        }
        match self
            .peers
            .forward(leader, &node.addr, cmd.clone(), remaining)
            .await
        {
            Ok(Ok(written)) => {
                self.wait_applied(written.index, deadline).await;
                Ok(Ok(written.applied))
            }
            Ok(Err(Refusal::NotLeader { .. })) => Ok(Err(format!("node {leader} no longer leads"))),
            Ok(Err(Refusal::Stopped)) => Ok(Err(format!("leader {leader} is shutting down"))),
            Ok(Err(Refusal::Failed(e))) => Err(MetaError::Consensus(format!(
                "leader {leader} failed the proposal: {e}"
            ))),
            Err(e) if e.maybe_delivered() => Err(MetaError::Unconfirmed {
                leader,
                reason: e.to_string(),
            }),
            Err(e) => Ok(Err(e.to_string())),
        }
    }

    fn leader_and_term(&self) -> (Option<u64>, u64) {
        let m = self.raft.metrics();
        let m = m.borrow();
        (m.current_leader, m.current_term)
    }

    /// Waits until this node knows of a leader other than the one `seen` (or the same one
    /// elected again), for at most [`RETRY_PAUSE`]: a leader that refused may still lead by
    /// this node's stale view, and then asking again after a pause is all there is to do.
    async fn wait_for_new_leader(&self, seen: (Option<u64>, u64), deadline: Instant) {
        let pause = RETRY_PAUSE.min(deadline.saturating_duration_since(Instant::now()));
        let mut metrics = self.raft.metrics();
        let _ = tokio::time::timeout(
            pause,
            metrics.wait_for(|m| {
                m.current_leader.is_some() && (m.current_leader, m.current_term) != seen
            }),
        )
        .await;
    }

    /// Waits (bounded) until this node has applied log entry `index`, so that its reads see
    /// what the leader wrote for it. Past the deadline the answer is returned anyway: the entry
    /// is committed, this node is only slow to apply it.
    async fn wait_applied(&self, index: u64, deadline: Instant) {
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .max(RETRY_PAUSE);
        let mut metrics = self.raft.metrics();
        let applied = tokio::time::timeout(
            wait,
            metrics.wait_for(|m| m.last_applied.map(|l| l.index) >= Some(index)),
        )
        .await;
        if applied.is_err() {
            tracing::debug!(index, "forwarded proposal not yet applied locally");
        }
    }

    /// Runs `f` over the current table. On a follower it may lag the leader slightly (see the
    /// module documentation), though it includes this node's own acknowledged proposals unless
    /// applying them took longer than the proposal timeout.
    pub fn read<R>(&self, f: impl FnOnce(&RoutingTable) -> R) -> R {
        f(&self.table.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Stops the Raft node and the peer listener and waits until the database is closed, so
    /// the directory and the port can be opened again. Proposals after this fail with
    /// [`MetaError::Closed`].
    pub async fn shutdown(&self) -> Result<(), MetaError> {
        self.cancel.cancel();
        self.peers.close();
        self.raft
            .shutdown()
            .await
            .map_err(|e| MetaError::Consensus(format!("raft task failed: {e}")))?;
        self.tasks.close();
        // The listener and connection tasks end at the cancellation, at their next await.
        let _ = tokio::time::timeout(registry::RELEASE_TIMEOUT, self.tasks.wait()).await;
        registry::wait_closed(self.db_closed.clone()).await
    }
}

/// Refuses to run a formed group under another member list: peers dial the addresses in the
/// log, not in the configuration, and a node that started a group of its own (the single-node
/// default) would otherwise go on alone while its configured peers formed another one.
fn check_members(
    nodes: &BTreeMap<u64, String>,
    voter_ids: &BTreeSet<u64>,
    voters: &BTreeMap<u64, BasicNode>,
) -> Result<(), MetaError> {
    let configured: BTreeMap<u64, String> =
        voters.iter().map(|(id, n)| (*id, n.addr.clone())).collect();
    if *nodes == configured && voter_ids.iter().eq(configured.keys()) {
        return Ok(());
    }
    let show = |m: &BTreeMap<u64, String>| {
        m.iter()
            .map(|(id, addr)| match addr.as_str() {
                "" => format!("{id} (alone)"),
                addr => format!("{id} = {addr}"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    Err(MetaError::Config(format!(
        "this store belongs to a group of [{}], but the configured members are [{}]; changing \
         the members of a group is not supported yet (start from an empty directory to form a \
         new group)",
        show(nodes),
        show(&configured)
    )))
}

fn is_ready(m: &RaftMetrics<u64, BasicNode>) -> bool {
    match m.current_leader {
        Some(leader) if leader == m.id => {
            m.state == ServerState::Leader && m.last_applied.map(|l| l.index) >= m.last_log_index
        }
        Some(_) => true,
        None => false,
    }
}

fn fatal(e: Fatal<u64>) -> MetaError {
    match e {
        Fatal::Stopped => MetaError::Closed,
        other => MetaError::Consensus(other.to_string()),
    }
}

/// Opens the database file and loads the last snapshot, off the async workers (redb may
/// have to repair the file after a crash).
async fn open_db(
    dir: &Path,
    node_id: u64,
) -> Result<(Arc<Db>, watch::Receiver<()>, Option<StoredSnapshot>), MetaError> {
    let path = dir.join("meta.redb");
    let dir = dir.to_path_buf();
    let db_err = |reason: String| MetaError::Database {
        path: path.clone(),
        reason,
    };
    let opened = tokio::task::spawn_blocking(move || {
        let (db, closed) = Db::open(&dir)?;
        let stored_id = db.check_node_id(node_id)?;
        let snapshot = StoredSnapshot::load(&db)?;
        Ok::<_, store::DbError>((db, closed, stored_id, snapshot))
    })
    .await
    .map_err(|e| db_err(e.to_string()))?;
    let (db, closed, stored_id, snapshot) = opened.map_err(|e| db_err(e.to_string()))?;
    match stored_id {
        Some(id) if id != node_id => Err(MetaError::Config(format!(
            "{} belongs to node {id}, not node {node_id}",
            path.display()
        ))),
        _ => Ok((db, closed, snapshot)),
    }
}
