//! The redb file that holds the Raft log, the vote and the current snapshot, and the
//! [`RaftLogStorage`] over it.
//!
//! Layout of `meta.redb` (values are JSON unless noted):
//!
//! | table        | key             | value                                              |
//! |--------------|-----------------|----------------------------------------------------|
//! | `raft_log`   | log index (u64) | one `Entry` (log id + command or membership)       |
//! | `raft_state` | `"vote"`        | the last saved `Vote`                              |
//! |              | `"committed"`   | the last committed `LogId` (a hint, see below)     |
//! |              | `"purged"`      | the last purged `LogId`                            |
//! |              | `"node_id"`     | the node id this file belongs to                   |
//! | `snapshot`   | `"meta"`        | `SnapshotMeta`: last applied log id and membership |
//! |              | `"data"`        | `RoutingTable::to_snapshot()` bytes                |
//!
//! Every write that Raft relies on for safety (vote, appended entries, truncation, purge,
//! snapshot) is its own redb transaction committed with `Durability::Immediate` (fsync) before
//! Raft hears about it.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    AnyError, ErrorSubject, ErrorVerb, LogId, LogState, RaftLogReader, StorageError,
    StorageIOError, Vote,
};
use redb::{Database, Durability, ReadableTable, TableDefinition, WriteTransaction};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use super::TypeConfig;

type Entry = openraft::Entry<TypeConfig>;
type NodeId = u64;

pub(super) const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
pub(super) const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_state");
pub(super) const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshot");

const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const PURGED: &str = "purged";
const NODE_ID: &str = "node_id";

/// The open database file. When the last `Arc<Db>` is gone (the Raft tasks have all ended),
/// the file lock is released and `_alive` is dropped, which tells
/// [`Db::closed`] watchers that the directory can be opened again.
pub(super) struct Db {
    db: Database,
    _alive: watch::Sender<()>,
}

/// Why a database operation failed, before it is wrapped into openraft's error.
#[derive(Debug, thiserror::Error)]
pub(super) enum DbError {
    #[error(transparent)]
    Redb(Box<redb::Error>),
    #[error("cannot decode {what}: {source}")]
    Decode {
        what: String,
        source: serde_json::Error,
    },
    #[error("cannot encode {what}: {source}")]
    Encode {
        what: &'static str,
        source: serde_json::Error,
    },
    #[error("database task failed: {0}")]
    Task(String),
}

/// redb has one error type per operation; all of them become a boxed `redb::Error` (it is
/// large, and errors are rare).
macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for DbError {
            fn from(e: $t) -> Self {
                Self::Redb(Box::new(e.into()))
            }
        }
    )*};
}

from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

fn decode<T: DeserializeOwned>(what: impl Into<String>, bytes: &[u8]) -> Result<T, DbError> {
    serde_json::from_slice(bytes).map_err(|source| DbError::Decode {
        what: what.into(),
        source,
    })
}

pub(super) fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, DbError> {
    serde_json::to_vec(value).map_err(|source| DbError::Encode { what, source })
}

impl Db {
    /// Opens (or creates) `meta.redb` under `dir` and makes sure every table exists, so that
    /// readers never see a missing table. Returns the handle and a receiver that reports when
    /// the handle has been dropped.
    pub(super) fn open(dir: &Path) -> Result<(Arc<Self>, watch::Receiver<()>), DbError> {
        let db = Database::create(dir.join("meta.redb"))?;
        let txn = db.begin_write()?;
        txn.open_table(LOG)?;
        txn.open_table(STATE)?;
        txn.open_table(SNAPSHOT)?;
        txn.commit()?;
        let (alive, closed) = watch::channel(());
        Ok((Arc::new(Self { db, _alive: alive }), closed))
    }

    /// Records the node id on first open and refuses a different one later: a Raft log
    /// written under one id must never be served under another.
    pub(super) fn check_node_id(&self, node_id: NodeId) -> Result<Option<NodeId>, DbError> {
        let stored: Option<NodeId> = self.get(STATE, NODE_ID)?;
        if stored.is_none() {
            let bytes = encode("node id", &node_id)?;
            self.write_now(Durability::Immediate, |txn| {
                txn.open_table(STATE)?.insert(NODE_ID, bytes.as_slice())?;
                Ok(())
            })?;
        }
        Ok(stored)
    }

    /// Reads and decodes one value of a `&str`-keyed table.
    pub(super) fn get<T: DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
    ) -> Result<Option<T>, DbError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(table)?;
        match t.get(key)? {
            Some(v) => decode(key, v.value()).map(Some),
            None => Ok(None),
        }
    }

    /// Reads raw bytes of one value of a `&str`-keyed table.
    pub(super) fn get_bytes(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
    ) -> Result<Option<Vec<u8>>, DbError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(table)?;
        Ok(t.get(key)?.map(|v| v.value().to_vec()))
    }

    /// Runs `f` in one write transaction and commits it with `durability`, on this thread.
    fn write_now<T>(
        &self,
        durability: Durability,
        f: impl FnOnce(&WriteTransaction) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(durability);
        let out = f(&txn)?;
        txn.commit()?;
        Ok(out)
    }

    /// Runs `f` in one write transaction on the blocking pool: a commit waits for fsync, and
    /// redb serializes writers, so neither may stall the async workers.
    pub(super) async fn write<T, F>(
        self: &Arc<Self>,
        durability: Durability,
        f: F,
    ) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&WriteTransaction) -> Result<T, DbError> + Send + 'static,
    {
        let db = self.clone();
        tokio::task::spawn_blocking(move || db.write_now(durability, f))
            .await
            .map_err(|e| DbError::Task(e.to_string()))?
    }
}

fn read_err(e: &DbError) -> StorageError<NodeId> {
    StorageIOError::<NodeId>::read_logs(AnyError::new(e)).into()
}

fn write_err(e: &DbError) -> StorageError<NodeId> {
    StorageIOError::<NodeId>::write_logs(AnyError::new(e)).into()
}

/// The Raft log and vote, in redb. Cloning is cheap; every clone is a reader of the same file.
#[derive(Clone)]
pub(super) struct LogStore {
    db: Arc<Db>,
}

impl LogStore {
    pub(super) fn new(db: Arc<Db>) -> Self {
        Self { db }
    }

    fn entries(&self, range: (Bound<u64>, Bound<u64>)) -> Result<Vec<Entry>, DbError> {
        let txn = self.db.db.begin_read()?;
        let t = txn.open_table(LOG)?;
        let mut out = Vec::new();
        for row in t.range::<u64>(range)? {
            let (k, v) = row?;
            out.push(decode(format!("log entry {}", k.value()), v.value())?);
        }
        Ok(out)
    }

    fn last_entry(&self) -> Result<Option<Entry>, DbError> {
        let txn = self.db.db.begin_read()?;
        let t = txn.open_table(LOG)?;
        match t.last()? {
            Some((k, v)) => decode(format!("log entry {}", k.value()), v.value()).map(Some),
            None => Ok(None),
        }
    }

    async fn put_state<T: Serialize>(
        &self,
        key: &'static str,
        value: &T,
        durability: Durability,
    ) -> Result<(), DbError> {
        let bytes = encode(key, value)?;
        self.db
            .write(durability, move |txn| {
                txn.open_table(STATE)?.insert(key, bytes.as_slice())?;
                Ok(())
            })
            .await
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError<NodeId>> {
        let range = (range.start_bound().cloned(), range.end_bound().cloned());
        self.entries(range).map_err(|e| read_err(&e))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let purged: Option<LogId<NodeId>> = self.db.get(STATE, PURGED).map_err(|e| read_err(&e))?;
        let last = self.last_entry().map_err(|e| read_err(&e))?;
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last.map(|e| e.log_id).or(purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.put_state(VOTE, vote, Durability::Immediate)
            .await
            .map_err(|e| StorageIOError::<NodeId>::write_vote(AnyError::new(&e)).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        self.db
            .get(STATE, VOTE)
            .map_err(|e| StorageIOError::<NodeId>::read_vote(AnyError::new(&e)).into())
    }

    /// The committed id only lets a restart replay committed entries before the node is leader
    /// again; losing it is harmless (the leader re-commits them), so it is written without an
    /// fsync of its own and becomes durable with the next append.
    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        self.put_state(COMMITTED, &committed, Durability::None)
            .await
            .map_err(|e| write_err(&e))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        let committed: Option<Option<LogId<NodeId>>> =
            self.db.get(STATE, COMMITTED).map_err(|e| read_err(&e))?;
        Ok(committed.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let rows = entries
            .into_iter()
            .map(|e| Ok((e.log_id.index, encode("log entry", &e)?)))
            .collect::<Result<Vec<_>, DbError>>()
            .map_err(|e| write_err(&e))?;
        // The entries are readable and durable once this commit returns; only then is Raft
        // told they are flushed, so an acknowledged proposal survives `kill -9`.
        let res = self
            .db
            .write(Durability::Immediate, move |txn| {
                let mut t = txn.open_table(LOG)?;
                for (index, bytes) in &rows {
                    t.insert(index, bytes.as_slice())?;
                }
                Ok(())
            })
            .await;
        match res {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(io::Error::other(e.to_string())));
                Err(write_err(&e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.db
            .write(Durability::Immediate, move |txn| {
                txn.open_table(LOG)?
                    .retain_in(log_id.index.., |_, _| false)?;
                Ok(())
            })
            .await
            .map_err(|e| write_err(&e))
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let bytes = encode(PURGED, &log_id).map_err(|e| write_err(&e))?;
        self.db
            .write(Durability::Immediate, move |txn| {
                txn.open_table(STATE)?.insert(PURGED, bytes.as_slice())?;
                txn.open_table(LOG)?
                    .retain_in(..=log_id.index, |_, _| false)?;
                Ok(())
            })
            .await
            .map_err(|e| {
                StorageError::from(StorageIOError::<NodeId>::new(
                    ErrorSubject::Logs,
                    ErrorVerb::Delete,
                    AnyError::new(&e),
                ))
            })
    }
}
