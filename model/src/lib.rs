//! The unified model every protocol front end and storage back end shares.
//!
//! A *stream* is a named, partitioned, append-only log; its on-disk and on-wire unit is a record
//! batch in Kafka's v2 format (magic 2). Kafka batches are stored exactly as produced; messages
//! from other protocols become records through [`BatchBuilder`], and any batch, compressed or
//! not, expands back into records through [`RecordBatch::records`].

pub mod batch;
pub mod builder;
pub mod compression;
pub mod follow;
pub mod names;
pub mod records;
pub mod varint;

pub use batch::{BatchError, BatchHeader, RecordBatch, split_batches};
pub use builder::{BatchBuilder, Header, Record};
pub use compression::Compression;
pub use follow::{Followed, next_offset, records_from, stable_hash};
pub use names::{Offset, PartitionId, StreamName, TopicPartition};
pub use records::{DEFAULT_MAX_RECORDS_BYTES, RecordsError};
