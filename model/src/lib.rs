//! The unified model every protocol front end and storage back end shares.
//!
//! A *stream* is a named, partitioned, append-only log; its on-disk and on-wire unit is a record
//! batch in Kafka's v2 format (magic 2). Kafka batches are stored exactly as produced; messages
//! from other protocols become records through [`BatchBuilder`].

pub mod batch;
pub mod builder;
pub mod names;
pub mod varint;

pub use batch::{BatchError, BatchHeader, RecordBatch, split_batches};
pub use builder::{BatchBuilder, Header, Record};
pub use names::{Offset, PartitionId, StreamName, TopicPartition};
