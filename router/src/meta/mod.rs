//! The replicated metadata store: the routing table behind a Raft log.
//!
//! This module is the only one that imports openraft. The table ([`RoutingTable`]) is the
//! state machine; its log, vote and snapshots live in one redb file under the store's
//! directory ([`store`] describes the layout). A single-node group is the default: on first
//! start the node makes itself the only voter, and on every start a sole voter elects itself
//! at once, so [`MetaStore::open`] returns within a few hundred milliseconds with the table as
//! it was (last snapshot plus the log entries after it).
//!
//! A group with peers can be configured ([`MetaStore::open_with`]) but has no transport yet
//! (see [`network`]), so it cannot elect a leader and `open` fails with
//! [`MetaError::NoLeader`].

mod network;
mod registry;
mod state_machine;
mod store;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, Fatal, InitializeError, RaftError};
use openraft::{BasicNode, Config, Raft, RaftMetrics, ServerState, SnapshotPolicy, TokioRuntime};
use tokio::sync::watch;

use crate::table::{Applied, Command, RoutingTable};
use network::Network;
use state_machine::{StateMachine, StoredSnapshot};
use store::{Db, LogStore};

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

/// Errors of the metadata store.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("metadata storage failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("metadata snapshot is corrupt: {0}")]
    Corrupt(String),
    #[error("no metadata leader is available: {0}")]
    NoLeader(String),
    #[error("metadata store is shut down")]
    Closed,
    #[error("metadata database {path} cannot be used: {reason}")]
    Database { path: PathBuf, reason: String },
    #[error("metadata consensus failed: {0}")]
    Consensus(String),
    #[error("invalid metadata group configuration: {0}")]
    Config(String),
}

impl MetaError {
    /// True when the same proposal may succeed later (a new leader, the disk back).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::NoLeader(_) | Self::Io(_))
    }
}

/// How a metadata node is set up. [`Default`] is the embedded single-node group.
#[derive(Debug, Clone)]
pub struct MetaOptions {
    /// This node's id in the group; fixed for the life of its directory.
    pub node_id: u64,
    /// The voters of a new group: node id → address. Empty means a group of this node alone.
    /// Used only on the very first start; later the membership comes from the log.
    pub members: BTreeMap<u64, String>,
    /// Build a snapshot once this many entries were applied since the last one.
    pub snapshot_every: u64,
    /// Entries kept in the log behind a snapshot, so a briefly lagging follower catches up
    /// from the log instead of a whole snapshot.
    pub logs_kept_after_snapshot: u64,
    /// How long `open` waits for a leader before giving up.
    pub ready_timeout: Duration,
}

impl Default for MetaOptions {
    fn default() -> Self {
        Self {
            node_id: DEFAULT_NODE_ID,
            members: BTreeMap::new(),
            snapshot_every: 1000,
            logs_kept_after_snapshot: 100,
            ready_timeout: Duration::from_secs(10),
        }
    }
}

impl MetaOptions {
    /// Timings for a group on one host or a LAN: a sole voter elects itself at once on start;
    /// with peers, heartbeats every 50 ms and an election after 150–300 ms of silence.
    fn raft_config(&self) -> Result<Config, MetaError> {
        Config {
            cluster_name: "switchboard-meta".into(),
            election_timeout_min: 150,
            election_timeout_max: 300,
            heartbeat_interval: 50,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_every.max(1)),
            max_in_snapshot_log_to_keep: self.logs_kept_after_snapshot,
            ..Config::default()
        }
        .validate()
        .map_err(|e| MetaError::Config(e.to_string()))
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
}

/// Handle to the metadata store; cheap to clone.
#[derive(Clone)]
pub struct MetaStore {
    raft: Raft<TypeConfig>,
    table: Arc<RwLock<RoutingTable>>,
    /// Reports (by closing) when the Raft tasks have dropped the database.
    db_closed: watch::Receiver<()>,
    /// Shared by all clones; when the last one goes, the Raft node stops (openraft stops when
    /// every `Raft` handle is dropped) and the directory can be reopened.
    live: Arc<()>,
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

    /// Opens a node with every setting explicit.
    pub async fn open_with_options(dir: &Path, options: MetaOptions) -> Result<Self, MetaError> {
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
        let raft = Raft::new(options.node_id, config, Network, LogStore::new(db), sm)
            .await
            .map_err(fatal)?;
        let store = Self {
            raft,
            table,
            db_closed,
            live: Arc::new(()),
        };
        if let Err(e) = store.start(voters, options.ready_timeout).await {
            // Free the directory so that a retry can open it.
            let _ = store.shutdown().await;
            return Err(e);
        }
        registry::register(dir.clone(), &store.live, store.db_closed.clone());
        tracing::info!(
            node_id = options.node_id,
            dir = %dir.display(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "metadata store ready"
        );
        Ok(store)
    }

    /// Forms the group on a fresh store, then waits for a leader.
    async fn start(
        &self,
        voters: BTreeMap<u64, BasicNode>,
        timeout: Duration,
    ) -> Result<(), MetaError> {
        if !self.raft.is_initialized().await.map_err(fatal)? {
            match self.raft.initialize(voters).await {
                Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
                Err(RaftError::APIError(e)) => return Err(MetaError::Config(e.to_string())),
                Err(RaftError::Fatal(e)) => return Err(fatal(e)),
            }
        }
        self.wait_ready(timeout).await
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
                "no leader elected within {timeout:?}"
            ))),
            Ok(Err(_)) => Err(MetaError::Closed),
            Ok(Ok(Some(stopped))) => Err(stopped),
            Ok(Ok(None)) => Ok(()),
        }
    }

    /// Applies `cmd` once it is durable and returns what the table answered.
    pub async fn propose(&self, cmd: Command) -> Result<Applied, MetaError> {
        match self.raft.client_write(cmd).await {
            Ok(response) => Ok(response.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(MetaError::NoLeader(match f.leader_id {
                    Some(id) => format!("node {id} leads; forwarding is not implemented yet"),
                    None => "no leader is elected".into(),
                }))
            }
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
                Err(MetaError::Consensus(e.to_string()))
            }
            Err(RaftError::Fatal(e)) => Err(fatal(e)),
        }
    }

    /// Runs `f` over the current table.
    pub fn read<R>(&self, f: impl FnOnce(&RoutingTable) -> R) -> R {
        f(&self.table.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Stops the Raft node and waits until its database is closed, so the directory can be
    /// opened again. Proposals after this fail with [`MetaError::Closed`].
    pub async fn shutdown(&self) -> Result<(), MetaError> {
        self.raft
            .shutdown()
            .await
            .map_err(|e| MetaError::Consensus(format!("raft task failed: {e}")))?;
        registry::wait_closed(self.db_closed.clone()).await
    }
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
