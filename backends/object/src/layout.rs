//! What the backend writes to the store, and where.
//!
//! Under the backend's prefix:
//! - `wal/<seq>`: the log of the whole backend, one object per flush, numbered densely from 0
//!   (20 zero-padded digits, so listing order is numeric order). Each object carries the batches
//!   of every partition written in that flush, one contiguous run per partition, and the list of
//!   operations (appends, deletions, removals) that replaying it applies. Objects are created
//!   with a conditional put (`If-None-Match: *`): a number is taken once, so two writers can
//!   never both place data at the same position of the log.
//! - `runs/<id>` (16 hex digits): compacted runs, one partition's batches over a range of
//!   offsets copied out of many small wal runs (see [`crate::compact`]).
//! - `meta/<name>`: blobs of metadata kept beside the data (the routing table).
//! - `manifest/<seq>`: the whole index as of `wal/<seq>` included, so a start does not replay
//!   the log from the beginning.
//!
//! A wal object is `SBW1`, a big-endian u32 header length, the header (JSON: the operations)
//! and the data. Append operations locate their bytes as absolute positions in the object, so a
//! read is one ranged GET.

use bytes::{BufMut, Bytes, BytesMut};
use object_store::path::Path;
use serde::{Deserialize, Serialize};
use switchboard_model::{Offset, TopicPartition};

const MAGIC: &[u8; 4] = b"SBW1";
const PREAMBLE: usize = 8;

pub fn wal_key(root: &Path, seq: u64) -> Path {
    root.child("wal").child(format!("{seq:020}"))
}

pub fn manifest_key(root: &Path, seq: u64) -> Path {
    root.child("manifest").child(format!("{seq:020}"))
}

/// A compacted run object: one partition's batches over a range of offsets.
pub fn run_key(root: &Path, run: u64) -> Path {
    root.child("runs").child(format!("{run:016x}"))
}

/// The object holding an index entry's bytes.
pub fn entry_key(root: &Path, e: &crate::index::Entry) -> Path {
    if e.run == 0 {
        wal_key(root, e.seq)
    } else {
        run_key(root, e.run)
    }
}

pub fn blob_key(root: &Path, name: &str) -> Path {
    root.child("meta").child(name)
}

/// The sequence number a `wal/` or `manifest/` key names.
pub fn seq_of(key: &Path) -> Option<u64> {
    key.filename()?.parse().ok()
}

/// One change to the index, as written in a wal object and replayed on start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Batches `base..=last` of `tp` are bytes `pos..pos + len` of this object.
    Append {
        tp: TopicPartition,
        base: Offset,
        last: Offset,
        max_ts: i64,
        pos: u64,
        len: u64,
    },
    /// Offsets below `log_start` are deleted.
    DeleteBefore {
        tp: TopicPartition,
        log_start: Offset,
    },
    /// The partition and its data are gone; a later append starts it again at offset 0.
    Remove { tp: TopicPartition },
    /// The runs covering `base..=last` were copied, in order, into run object `run` (`len`
    /// bytes); reads use it from now on (see [`crate::compact`]).
    Compact {
        tp: TopicPartition,
        base: Offset,
        last: Offset,
        max_ts: i64,
        run: u64,
        len: u64,
    },
}

#[derive(Serialize, Deserialize)]
struct Header {
    ops: Vec<Op>,
}

/// Data of one partition in an object being built, before positions are known.
pub struct Run {
    pub tp: TopicPartition,
    pub base: Offset,
    pub last: Offset,
    pub max_ts: i64,
    pub chunks: Vec<Bytes>,
}

impl Run {
    fn len(&self) -> u64 {
        self.chunks.iter().map(|c| c.len() as u64).sum()
    }
}

/// Lays out a wal object: the header, then each run's bytes. `order` lists the operations in
/// the order replay must apply them: a run (by index into `runs`) or one of `other`. Returns the
/// object and its operations with absolute positions, as [`decode`] would return them.
pub fn encode(runs: &[Run], order: &[Slot], other: &[Op]) -> (Bytes, Vec<Op>) {
    // The header stores positions relative to the data; absolute ones need the header's length.
    let relative = ops_with_positions(runs, order, other, 0);
    let header = serde_json::to_vec(&Header { ops: relative }).unwrap_or_default();
    let start = (PREAMBLE + header.len()) as u64;
    let mut out = BytesMut::with_capacity(start as usize + data_len(runs));
    out.put_slice(MAGIC);
    out.put_u32(header.len() as u32);
    out.put_slice(&header);
    for run in runs {
        for chunk in &run.chunks {
            out.put_slice(chunk);
        }
    }
    (out.freeze(), ops_with_positions(runs, order, other, start))
}

/// Where an operation of the object comes from.
#[derive(Debug, Clone, Copy)]
pub enum Slot {
    Run(usize),
    Other(usize),
}

fn data_len(runs: &[Run]) -> usize {
    runs.iter().map(|r| r.len() as usize).sum()
}

fn ops_with_positions(runs: &[Run], order: &[Slot], other: &[Op], start: u64) -> Vec<Op> {
    let mut positions = Vec::with_capacity(runs.len());
    let mut at = start;
    for run in runs {
        positions.push(at);
        at += run.len();
    }
    order
        .iter()
        .map(|slot| match *slot {
            Slot::Run(i) => Op::Append {
                tp: runs[i].tp.clone(),
                base: runs[i].base,
                last: runs[i].last,
                max_ts: runs[i].max_ts,
                pos: positions[i],
                len: runs[i].len(),
            },
            Slot::Other(i) => other[i].clone(),
        })
        .collect()
}

/// Why an object is not a wal object this backend can replay.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not a Switchboard wal object (bad magic or short preamble)")]
    Magic,
    #[error("wal header: {0}")]
    Header(String),
    #[error("wal operation points outside the object ({pos}+{len} > {size})")]
    Range { pos: u64, len: u64, size: u64 },
}

/// The operations of a wal object, with absolute positions checked against its size.
pub fn decode(object: &[u8]) -> Result<Vec<Op>, DecodeError> {
    if object.len() < PREAMBLE || &object[..4] != MAGIC {
        return Err(DecodeError::Magic);
    }
    let header_len = u32::from_be_bytes([object[4], object[5], object[6], object[7]]) as usize;
    let header = object
        .get(PREAMBLE..PREAMBLE + header_len)
        .ok_or(DecodeError::Magic)?;
    let header: Header =
        serde_json::from_slice(header).map_err(|e| DecodeError::Header(e.to_string()))?;
    let size = object.len() as u64;
    let start = (PREAMBLE + header_len) as u64;
    let mut ops = header.ops;
    for op in &mut ops {
        if let Op::Append { pos, len, .. } = op {
            *pos = pos.saturating_add(start);
            if pos.checked_add(*len).is_none_or(|end| end > size) {
                return Err(DecodeError::Range {
                    pos: *pos,
                    len: *len,
                    size,
                });
            }
        }
    }
    Ok(ops)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use switchboard_model::StreamName;

    fn tp(n: &str) -> TopicPartition {
        TopicPartition::new(StreamName::new(n).unwrap(), 1)
    }

    #[test]
    fn appends_point_at_their_bytes() {
        let runs = vec![
            Run {
                tp: tp("a"),
                base: 0,
                last: 9,
                max_ts: 5,
                chunks: vec![Bytes::from_static(b"hello"), Bytes::from_static(b" world")],
            },
            Run {
                tp: tp("b"),
                base: 100,
                last: 100,
                max_ts: 7,
                chunks: vec![Bytes::from(vec![7u8; 1000])],
            },
        ];
        let other = vec![Op::Remove { tp: tp("c") }];
        let order = [Slot::Run(0), Slot::Other(0), Slot::Run(1)];
        let (object, ops) = encode(&runs, &order, &other);
        assert_eq!(decode(&object).unwrap(), ops);
        let Op::Append { pos, len, .. } = ops[0] else {
            panic!("first op is the first run")
        };
        assert_eq!(&object[pos as usize..(pos + len) as usize], b"hello world");
        assert_eq!(ops[1], Op::Remove { tp: tp("c") });
        let Op::Append { pos, len, .. } = ops[2] else {
            panic!("third op is the second run")
        };
        assert_eq!(
            &object[pos as usize..(pos + len) as usize],
            &[7u8; 1000][..]
        );
    }

    #[test]
    fn garbage_and_lies_are_rejected() {
        assert!(matches!(decode(b"nope"), Err(DecodeError::Magic)));
        assert!(matches!(
            decode(b"SBW1\0\0\0\x05{bad}"),
            Err(DecodeError::Header(_))
        ));
        let header = br#"{"ops":[{"append":{"tp":{"stream":"a","partition":0},"base":0,"last":0,"max_ts":0,"pos":0,"len":999}}]}"#;
        let mut object = b"SBW1".to_vec();
        object.extend_from_slice(&(header.len() as u32).to_be_bytes());
        object.extend_from_slice(header);
        assert!(matches!(decode(&object), Err(DecodeError::Range { .. })));
    }

    #[test]
    fn keys_sort_numerically_and_parse_back() {
        let root = Path::from("p/q");
        let k = wal_key(&root, 42);
        assert_eq!(k.as_ref(), "p/q/wal/00000000000000000042");
        assert_eq!(seq_of(&k), Some(42));
        assert!(wal_key(&root, 9) < wal_key(&root, 10));
    }
}
