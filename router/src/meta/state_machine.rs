//! The routing table as openraft's state machine.
//!
//! The table lives in memory and is shared with [`super::MetaStore::read`]. It is persisted
//! only as snapshots (in redb, see [`super::store`]); on start the last snapshot is loaded and
//! openraft replays the log entries after it.

use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use openraft::storage::RaftStateMachine;
use openraft::{
    AnyError, BasicNode, EntryPayload, LogId, RaftSnapshotBuilder, Snapshot, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership,
};
use redb::{Durability, ReadableTable};

use super::TypeConfig;
use super::store::{Db, DbError, SNAPSHOT, encode};
use crate::table::{Applied, RoutingTable};

type NodeId = u64;
type Entry = openraft::Entry<TypeConfig>;
type Meta = SnapshotMeta<NodeId, BasicNode>;

const SNAPSHOT_META: &str = "meta";
const SNAPSHOT_DATA: &str = "data";

/// A snapshot as stored: its metadata and the table's own serialization.
pub(super) struct StoredSnapshot {
    pub(super) meta: Meta,
    pub(super) data: Vec<u8>,
}

impl StoredSnapshot {
    /// Loads the current snapshot from `db`, if one was ever built or installed.
    pub(super) fn load(db: &Db) -> Result<Option<Self>, DbError> {
        let Some(meta) = db.get::<Meta>(SNAPSHOT, SNAPSHOT_META)? else {
            return Ok(None);
        };
        let data = db.get_bytes(SNAPSHOT, SNAPSHOT_DATA)?.unwrap_or_default();
        Ok(Some(Self { meta, data }))
    }

    /// Stores this snapshot as the current one. Unless `replace` is set, a snapshot that is not
    /// newer than the stored one is dropped: a build that raced an install must not win.
    async fn save(self, db: &Arc<Db>, replace: bool) -> Result<Self, DbError> {
        let meta_bytes = encode("snapshot meta", &self.meta)?;
        db.write(Durability::Immediate, move |txn| {
            let mut t = txn.open_table(SNAPSHOT)?;
            let stored_last = match t.get(SNAPSHOT_META)? {
                Some(v) => serde_json::from_slice::<Meta>(v.value())
                    .ok()
                    .and_then(|m| m.last_log_id),
                None => None,
            };
            if replace || stored_last < self.meta.last_log_id {
                t.insert(SNAPSHOT_META, meta_bytes.as_slice())?;
                t.insert(SNAPSHOT_DATA, self.data.as_slice())?;
            }
            Ok(self)
        })
        .await
    }

    fn into_snapshot(self) -> Snapshot<TypeConfig> {
        Snapshot {
            meta: self.meta,
            snapshot: Box::new(Cursor::new(self.data)),
        }
    }
}

fn sm_read_err(e: &DbError) -> StorageError<NodeId> {
    StorageIOError::<NodeId>::read_state_machine(AnyError::new(e)).into()
}

fn snapshot_write_err(meta: &Meta, e: &DbError) -> StorageError<NodeId> {
    StorageIOError::<NodeId>::write_snapshot(Some(meta.signature()), AnyError::new(e)).into()
}

/// The table, the last applied log id and membership.
pub(super) struct StateMachine {
    db: Arc<Db>,
    table: Arc<RwLock<RoutingTable>>,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    /// Tells snapshots built at the same log id apart (openraft wants distinct ids).
    builds: Arc<AtomicU64>,
}

impl StateMachine {
    /// A state machine restored from `snapshot` (or empty), publishing its table into `table`.
    pub(super) fn new(
        db: Arc<Db>,
        table: Arc<RwLock<RoutingTable>>,
        snapshot: Option<StoredSnapshot>,
    ) -> Result<Self, String> {
        let mut sm = Self {
            db,
            table,
            last_applied: None,
            membership: StoredMembership::default(),
            builds: Arc::new(AtomicU64::new(0)),
        };
        if let Some(s) = snapshot {
            let restored = RoutingTable::from_snapshot(&s.data)
                .map_err(|e| format!("snapshot at {:?}: {e}", s.meta.last_log_id))?;
            sm.replace(restored, &s.meta);
        }
        Ok(sm)
    }

    fn replace(&mut self, table: RoutingTable, meta: &Meta) {
        *self.table.write().unwrap_or_else(PoisonError::into_inner) = table;
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), StorageError<NodeId>>
    {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut table = self.table.write().unwrap_or_else(PoisonError::into_inner);
        let mut out = Vec::new();
        for entry in entries {
            self.last_applied = Some(entry.log_id);
            out.push(match entry.payload {
                EntryPayload::Blank => Applied::Done,
                EntryPayload::Normal(cmd) => table.apply(cmd),
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), m);
                    Applied::Done
                }
            });
        }
        Ok(out)
    }

    /// Serializes the table now, in the apply order, so the snapshot is exactly the state at
    /// `last_applied`; persisting it happens in the builder, off the apply path.
    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        let data = self
            .table
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .to_snapshot();
        SnapshotBuilder {
            db: self.db.clone(),
            last_applied: self.last_applied,
            membership: self.membership.clone(),
            data,
            build: self.builds.fetch_add(1, Ordering::Relaxed),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: snapshot.into_inner(),
        };
        let table = RoutingTable::from_snapshot(&stored.data).map_err(|e| {
            StorageError::from(StorageIOError::<NodeId>::read_snapshot(
                Some(meta.signature()),
                AnyError::new(&e),
            ))
        })?;
        stored
            .save(&self.db, true)
            .await
            .map_err(|e| snapshot_write_err(meta, &e))?;
        self.replace(table, meta);
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let db = self.db.clone();
        let stored = tokio::task::spawn_blocking(move || StoredSnapshot::load(&db))
            .await
            .map_err(|e| DbError::Task(e.to_string()))
            .and_then(|loaded| loaded)
            .map_err(|e| sm_read_err(&e))?;
        Ok(stored.map(StoredSnapshot::into_snapshot))
    }
}

/// A frozen copy of the table, persisted as the current snapshot when built.
pub(super) struct SnapshotBuilder {
    db: Arc<Db>,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    data: Vec<u8>,
    build: u64,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let snapshot_id = match self.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, self.build),
            None => format!("none-{}", self.build),
        };
        let stored = StoredSnapshot {
            meta: SnapshotMeta {
                last_log_id: self.last_applied,
                last_membership: self.membership.clone(),
                snapshot_id,
            },
            data: std::mem::take(&mut self.data),
        };
        let meta = stored.meta.clone();
        let saved = stored
            .save(&self.db, false)
            .await
            .map_err(|e| snapshot_write_err(&meta, &e))?;
        Ok(saved.into_snapshot())
    }
}
