//! The routing table: a deterministic state machine over streams, their partitions and
//! configuration, consumer-group offsets and producer-id allocation.
//!
//! It is pure: [`RoutingTable::apply`] depends only on the table and the command, so every
//! replica that applies the same log reaches the same table. Anything time- or
//! randomness-dependent (topic ids, timestamps) is decided by the proposer and carried in the
//! command.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use switchboard_model::{PartitionId, StreamName};

/// Most partitions one stream may have; a bound so a bad request cannot allocate without limit.
pub const MAX_PARTITIONS: u32 = 10_000;

/// One stream's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamMeta {
    pub name: StreamName,
    /// A 128-bit id, as Kafka's topic id.
    pub id: u128,
    pub partitions: u32,
    /// Topic-level overrides (`retention.ms`, `retention.bytes`, `cleanup.policy`, …).
    pub config: BTreeMap<String, String>,
    pub created_ms: i64,
}

/// An offset a consumer group committed for one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_ms: i64,
}

/// One commit entry inside [`Command::CommitOffsets`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetCommit {
    pub stream: StreamName,
    pub partition: PartitionId,
    pub committed: CommittedOffset,
}

/// A change to the table. Commands are what the Raft log carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    CreateStream {
        name: StreamName,
        id: u128,
        partitions: u32,
        config: BTreeMap<String, String>,
        created_ms: i64,
    },
    DeleteStream {
        name: StreamName,
    },
    /// Grows a stream to `total` partitions; partitions never shrink.
    AddPartitions {
        name: StreamName,
        total: u32,
    },
    /// Sets (`Some`) or removes (`None`) topic-level config keys.
    AlterConfig {
        name: StreamName,
        changes: Vec<(String, Option<String>)>,
    },
    CommitOffsets {
        group: String,
        offsets: Vec<OffsetCommit>,
    },
    DeleteGroup {
        group: String,
    },
    /// Hands out the next producer id (idempotent producers).
    AllocateProducerId,
    /// Makes every later producer id at least `floor`. A broker proposes a floor from the
    /// clock when it starts, so a routing table rebuilt on a clean disk over shared storage
    /// never hands out an id whose batches storage already holds.
    RaiseProducerIds {
        floor: i64,
    },
    /// Replaces an empty table with a saved one (see [`RoutingTable::to_snapshot`]): a broker
    /// starting on a clean disk over shared storage takes the routing table its predecessor
    /// saved there. A table that holds anything is left alone.
    Restore {
        snapshot: Vec<u8>,
    },
    /// Sets (`Some`) or removes (`None`) one entry of a front end's own metadata space (MQTT
    /// sessions and retained messages, AMQP exchanges and queues). The table does not look
    /// inside `value`: each front end owns its format, so the router stays protocol-neutral.
    Put {
        space: String,
        key: String,
        value: Option<Vec<u8>>,
    },
}

/// Why the table refused a command. Deterministic: every replica refuses alike.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Rejection {
    #[error("stream {0} already exists")]
    StreamExists(StreamName),
    #[error("stream {0} does not exist")]
    UnknownStream(StreamName),
    #[error("partition count must be between 1 and {MAX_PARTITIONS}, got {0}")]
    InvalidPartitions(u32),
    #[error("stream {name} has {current} partitions; cannot change to {requested}")]
    CannotShrink {
        name: StreamName,
        current: u32,
        requested: u32,
    },
    #[error("group {0} has no committed offsets")]
    UnknownGroup(String),
    #[error("the routing table is not empty; a saved table is restored only into an empty one")]
    NotEmpty,
    #[error("the saved routing table does not parse: {0}")]
    BadSnapshot(String),
}

/// What applying a command produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Applied {
    Done,
    Stream(StreamMeta),
    ProducerId(i64),
    Rejected(Rejection),
}

/// The whole replicated metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutingTable {
    streams: BTreeMap<StreamName, StreamMeta>,
    /// group → (stream, partition) → offset. A `Vec` of pairs keeps JSON snapshots simple.
    groups: BTreeMap<String, BTreeMap<(StreamName, PartitionId), CommittedOffset>>,
    next_producer_id: i64,
    /// space → key → value; see [`Command::Put`].
    spaces: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
}

impl RoutingTable {
    pub fn apply(&mut self, cmd: Command) -> Applied {
        match cmd {
            Command::CreateStream {
                name,
                id,
                partitions,
                config,
                created_ms,
            } => self.create_stream(name, id, partitions, config, created_ms),
            Command::DeleteStream { name } => self.delete_stream(&name),
            Command::AddPartitions { name, total } => self.add_partitions(&name, total),
            Command::AlterConfig { name, changes } => self.alter_config(&name, changes),
            Command::CommitOffsets { group, offsets } => {
                let entry = self.groups.entry(group).or_default();
                for c in offsets {
                    entry.insert((c.stream, c.partition), c.committed);
                }
                Applied::Done
            }
            Command::DeleteGroup { group } => match self.groups.remove(&group) {
                Some(_) => Applied::Done,
                None => Applied::Rejected(Rejection::UnknownGroup(group)),
            },
            Command::AllocateProducerId => {
                let id = self.next_producer_id;
                self.next_producer_id += 1;
                Applied::ProducerId(id)
            }
            Command::RaiseProducerIds { floor } => {
                self.next_producer_id = self.next_producer_id.max(floor);
                Applied::Done
            }
            Command::Restore { snapshot } => {
                if !self.is_empty() {
                    return Applied::Rejected(Rejection::NotEmpty);
                }
                match Self::from_snapshot(&snapshot) {
                    Ok(mut saved) => {
                        saved.next_producer_id = saved.next_producer_id.max(self.next_producer_id);
                        *self = saved;
                        Applied::Done
                    }
                    Err(e) => Applied::Rejected(Rejection::BadSnapshot(e.to_string())),
                }
            }
            Command::Put { space, key, value } => {
                match value {
                    Some(v) => {
                        self.spaces.entry(space).or_default().insert(key, v);
                    }
                    None => {
                        if let Some(entries) = self.spaces.get_mut(&space) {
                            entries.remove(&key);
                            if entries.is_empty() {
                                self.spaces.remove(&space);
                            }
                        }
                    }
                }
                Applied::Done
            }
        }
    }

    fn create_stream(
        &mut self,
        name: StreamName,
        id: u128,
        partitions: u32,
        config: BTreeMap<String, String>,
        created_ms: i64,
    ) -> Applied {
        if self.streams.contains_key(&name) {
            return Applied::Rejected(Rejection::StreamExists(name));
        }
        if partitions == 0 || partitions > MAX_PARTITIONS {
            return Applied::Rejected(Rejection::InvalidPartitions(partitions));
        }
        let meta = StreamMeta {
            name: name.clone(),
            id,
            partitions,
            config,
            created_ms,
        };
        self.streams.insert(name, meta.clone());
        Applied::Stream(meta)
    }

    fn delete_stream(&mut self, name: &StreamName) -> Applied {
        match self.streams.remove(name) {
            Some(meta) => {
                for offsets in self.groups.values_mut() {
                    offsets.retain(|(s, _), _| s != name);
                }
                Applied::Stream(meta)
            }
            None => Applied::Rejected(Rejection::UnknownStream(name.clone())),
        }
    }

    fn add_partitions(&mut self, name: &StreamName, total: u32) -> Applied {
        let Some(meta) = self.streams.get_mut(name) else {
            return Applied::Rejected(Rejection::UnknownStream(name.clone()));
        };
        if total > MAX_PARTITIONS {
            return Applied::Rejected(Rejection::InvalidPartitions(total));
        }
        if total <= meta.partitions {
            return Applied::Rejected(Rejection::CannotShrink {
                name: name.clone(),
                current: meta.partitions,
                requested: total,
            });
        }
        meta.partitions = total;
        Applied::Stream(meta.clone())
    }

    fn alter_config(
        &mut self,
        name: &StreamName,
        changes: Vec<(String, Option<String>)>,
    ) -> Applied {
        let Some(meta) = self.streams.get_mut(name) else {
            return Applied::Rejected(Rejection::UnknownStream(name.clone()));
        };
        for (key, value) in changes {
            match value {
                Some(v) => meta.config.insert(key, v),
                None => meta.config.remove(&key),
            };
        }
        Applied::Stream(meta.clone())
    }

    pub fn stream(&self, name: &StreamName) -> Option<&StreamMeta> {
        self.streams.get(name)
    }

    pub fn streams(&self) -> impl Iterator<Item = &StreamMeta> {
        self.streams.values()
    }

    pub fn committed(
        &self,
        group: &str,
        stream: &StreamName,
        partition: PartitionId,
    ) -> Option<&CommittedOffset> {
        self.groups.get(group)?.get(&(stream.clone(), partition))
    }

    /// Every committed offset of `group`.
    pub fn group_offsets(
        &self,
        group: &str,
    ) -> impl Iterator<Item = (&(StreamName, PartitionId), &CommittedOffset)> {
        self.groups.get(group).into_iter().flatten()
    }

    pub fn groups(&self) -> impl Iterator<Item = &String> {
        self.groups.keys()
    }

    /// Every entry of a metadata space, in key order.
    pub fn space(&self, space: &str) -> impl Iterator<Item = (&String, &Vec<u8>)> {
        self.spaces.get(space).into_iter().flatten()
    }

    /// No streams, no committed offsets, no front-end metadata: a table nothing was put in.
    pub fn is_empty(&self) -> bool {
        self.streams.is_empty() && self.groups.is_empty() && self.spaces.is_empty()
    }

    pub fn get(&self, space: &str, key: &str) -> Option<&Vec<u8>> {
        self.spaces.get(space)?.get(key)
    }

    /// Serialized form for snapshots. Map keys that are tuples do not fit JSON objects, so the
    /// group map is flattened to a list first.
    pub fn to_snapshot(&self) -> Vec<u8> {
        let snap = Snapshot::from(self);
        serde_json::to_vec(&snap).unwrap_or_default()
    }

    pub fn from_snapshot(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        let snap: Snapshot = serde_json::from_slice(bytes)?;
        Ok(snap.into())
    }
}

#[derive(Serialize, Deserialize)]
struct Snapshot {
    streams: Vec<StreamMeta>,
    offsets: Vec<(String, StreamName, PartitionId, CommittedOffset)>,
    next_producer_id: i64,
    #[serde(default)]
    spaces: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
}

impl From<&RoutingTable> for Snapshot {
    fn from(t: &RoutingTable) -> Self {
        let offsets = t
            .groups
            .iter()
            .flat_map(|(g, m)| {
                m.iter()
                    .map(move |((s, p), c)| (g.clone(), s.clone(), *p, c.clone()))
            })
            .collect();
        Self {
            streams: t.streams.values().cloned().collect(),
            offsets,
            next_producer_id: t.next_producer_id,
            spaces: t.spaces.clone(),
        }
    }
}

impl From<Snapshot> for RoutingTable {
    fn from(s: Snapshot) -> Self {
        let mut t = RoutingTable {
            next_producer_id: s.next_producer_id,
            spaces: s.spaces,
            ..Default::default()
        };
        for m in s.streams {
            t.streams.insert(m.name.clone(), m);
        }
        for (g, stream, p, c) in s.offsets {
            t.groups.entry(g).or_default().insert((stream, p), c);
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> StreamName {
        StreamName::new(s).unwrap()
    }

    fn create(t: &mut RoutingTable, s: &str, partitions: u32) -> Applied {
        t.apply(Command::CreateStream {
            name: name(s),
            id: 7,
            partitions,
            config: BTreeMap::new(),
            created_ms: 1,
        })
    }

    #[test]
    fn creating_a_stream_twice_is_rejected() {
        let mut t = RoutingTable::default();
        assert!(matches!(create(&mut t, "orders", 3), Applied::Stream(_)));
        assert_eq!(
            create(&mut t, "orders", 3),
            Applied::Rejected(Rejection::StreamExists(name("orders")))
        );
        assert_eq!(
            create(&mut t, "zero", 0),
            Applied::Rejected(Rejection::InvalidPartitions(0))
        );
    }

    #[test]
    fn partitions_grow_but_never_shrink() {
        let mut t = RoutingTable::default();
        create(&mut t, "orders", 3);
        let grown = t.apply(Command::AddPartitions {
            name: name("orders"),
            total: 5,
        });
        assert!(matches!(
            grown,
            Applied::Stream(StreamMeta { partitions: 5, .. })
        ));
        let shrink = t.apply(Command::AddPartitions {
            name: name("orders"),
            total: 2,
        });
        assert!(matches!(
            shrink,
            Applied::Rejected(Rejection::CannotShrink { .. })
        ));
    }

    #[test]
    fn deleting_a_stream_drops_its_committed_offsets() {
        let mut t = RoutingTable::default();
        create(&mut t, "orders", 1);
        let committed = CommittedOffset {
            offset: 5,
            leader_epoch: 0,
            metadata: String::new(),
            commit_ms: 2,
        };
        t.apply(Command::CommitOffsets {
            group: "g".into(),
            offsets: vec![OffsetCommit {
                stream: name("orders"),
                partition: 0,
                committed,
            }],
        });
        assert_eq!(
            t.committed("g", &name("orders"), 0).map(|c| c.offset),
            Some(5)
        );
        t.apply(Command::DeleteStream {
            name: name("orders"),
        });
        assert!(t.committed("g", &name("orders"), 0).is_none());
    }

    #[test]
    fn same_commands_give_same_table_and_snapshot_round_trips() {
        let cmds = vec![
            Command::CreateStream {
                name: name("a"),
                id: 1,
                partitions: 2,
                config: BTreeMap::new(),
                created_ms: 3,
            },
            Command::AlterConfig {
                name: name("a"),
                changes: vec![("retention.ms".into(), Some("1000".into()))],
            },
            Command::AllocateProducerId,
            Command::AllocateProducerId,
            Command::Put {
                space: "mqtt.sessions".into(),
                key: "c1".into(),
                value: Some(b"state".to_vec()),
            },
        ];
        let (mut x, mut y) = (RoutingTable::default(), RoutingTable::default());
        let outs: Vec<_> = cmds.iter().cloned().map(|c| x.apply(c)).collect();
        let outs2: Vec<_> = cmds.into_iter().map(|c| y.apply(c)).collect();
        assert_eq!(outs, outs2);
        assert_eq!(outs[3], Applied::ProducerId(1));
        assert_eq!(x, y);
        assert_eq!(RoutingTable::from_snapshot(&x.to_snapshot()).unwrap(), x);
    }

    #[test]
    fn a_saved_table_is_restored_only_into_an_empty_one() {
        let mut saved = RoutingTable::default();
        create(&mut saved, "orders", 3);
        saved.apply(Command::AllocateProducerId);
        let snapshot = saved.to_snapshot();

        let mut fresh = RoutingTable::default();
        fresh.apply(Command::RaiseProducerIds { floor: 500 });
        assert!(
            fresh.is_empty(),
            "producer ids alone do not make a table non-empty"
        );
        let restore = Command::Restore {
            snapshot: snapshot.clone(),
        };
        assert_eq!(fresh.apply(restore.clone()), Applied::Done);
        assert!(fresh.stream(&name("orders")).is_some());
        assert_eq!(
            fresh.apply(Command::AllocateProducerId),
            Applied::ProducerId(500),
            "the higher of the two producer-id floors wins"
        );
        assert_eq!(fresh.apply(restore), Applied::Rejected(Rejection::NotEmpty));
        let mut empty = RoutingTable::default();
        assert!(matches!(
            empty.apply(Command::Restore {
                snapshot: b"{not json".to_vec()
            }),
            Applied::Rejected(Rejection::BadSnapshot(_))
        ));
    }

    #[test]
    fn put_sets_replaces_and_removes_space_entries() {
        let mut t = RoutingTable::default();
        let put = |key: &str, value: Option<&[u8]>| Command::Put {
            space: "s".into(),
            key: key.into(),
            value: value.map(<[u8]>::to_vec),
        };
        t.apply(put("a", Some(b"1")));
        t.apply(put("b", Some(b"2")));
        t.apply(put("a", Some(b"3")));
        assert_eq!(t.get("s", "a").map(Vec::as_slice), Some(&b"3"[..]));
        t.apply(put("b", None));
        let keys: Vec<_> = t.space("s").map(|(k, _)| k.clone()).collect();
        assert_eq!(keys, vec!["a".to_string()]);
        t.apply(put("a", None));
        assert_eq!(t.space("s").count(), 0);
        assert!(t.spaces.is_empty());
    }
}
