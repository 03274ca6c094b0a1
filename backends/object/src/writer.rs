//! The single writer of a backend instance: it gathers appends and deletions for a bounded
//! time or size, places them at the log's next offsets, writes one wal object with a
//! conditional put, and only then applies them to the index and answers the callers.
//!
//! Offsets are assigned when the object is built, from the index as of the last object, so a
//! put that fails or loses a race leaves nothing behind: the next attempt re-assigns them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::{PutMode, PutOptions, PutPayload};
use switchboard_model::{Offset, RecordBatch, TopicPartition};
use switchboard_storage::{Appended, StorageError, StorageResult};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::Shared;
use crate::index::{Entry, State};
use crate::layout::{self, Op, Run, Slot};

/// How often a lost race for the next object is retried before the callers get an error.
const MAX_ATTEMPTS: usize = 8;

pub enum Request {
    Append {
        tp: TopicPartition,
        batches: Vec<RecordBatch>,
        reply: oneshot::Sender<StorageResult<Appended>>,
    },
    /// Batches copied from another log, kept at their offsets (tiered mode's uploads). The
    /// first may start past the partition's end: what lies between was deleted before upload.
    Place {
        tp: TopicPartition,
        batches: Vec<RecordBatch>,
        reply: oneshot::Sender<StorageResult<Appended>>,
    },
    DeleteBefore {
        tp: TopicPartition,
        offset: Offset,
        reply: oneshot::Sender<StorageResult<Offset>>,
    },
    Remove {
        tp: TopicPartition,
        reply: oneshot::Sender<StorageResult<()>>,
    },
    /// Records a compaction (an [`Op::Compact`]); applying it checks it still fits.
    Compact {
        op: Op,
        reply: oneshot::Sender<StorageResult<()>>,
    },
}

impl Request {
    fn bytes(&self) -> usize {
        match self {
            Self::Append { batches, .. } | Self::Place { batches, .. } => {
                batches.iter().map(RecordBatch::len).sum()
            }
            _ => 0,
        }
    }
}

/// What one request will get once the object holding it is written.
enum Outcome {
    Appended(Appended),
    Deleted(Offset),
    Done,
    Failed(StorageError),
}

/// Gathers requests into groups and writes each group as one object, until every sender is
/// gone; then writes what is left and ends.
pub async fn run(shared: Arc<Shared>, mut rx: mpsc::Receiver<Request>) {
    let linger = shared.cfg.flush_interval;
    let max_bytes = shared.cfg.flush_bytes;
    loop {
        let Some(first) = rx.recv().await else {
            return;
        };
        let mut bytes = first.bytes();
        let mut group = vec![first];
        let deadline = Instant::now() + linger;
        while bytes < max_bytes {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(r)) => {
                    bytes += r.bytes();
                    group.push(r);
                }
                Ok(None) | Err(_) => break,
            }
        }
        write_group(&shared, group).await;
    }
}

async fn write_group(shared: &Shared, group: Vec<Request>) {
    let mut last_error = String::new();
    for _ in 0..MAX_ATTEMPTS {
        if shared.needs_resync()
            && let Err(e) = shared.resync().await
        {
            last_error = format!("reading the log's end: {e}");
            break;
        }
        let (seq, built) = {
            let state = shared.lock_state();
            (state.next_seq, build(&state, &group))
        };
        let Some(Object { bytes, ops, runs }) = built.object else {
            // Nothing to write: every request failed validation.
            reply(group, built.outcomes);
            return;
        };
        let key = layout::wal_key(&shared.root, seq);
        let opts = PutOptions::from(PutMode::Create);
        match shared
            .store
            .put_opts(&key, PutPayload::from_bytes(bytes), opts)
            .await
        {
            Ok(_) => {
                shared.committed(seq, &ops, runs);
                reply(group, built.outcomes);
                return;
            }
            Err(object_store::Error::AlreadyExists { .. }) => {
                tracing::warn!(
                    seq,
                    "another writer took wal object {seq}; catching up and retrying"
                );
                shared.mark_stale();
                last_error = format!("wal object {seq} was taken by another writer");
            }
            Err(e) => {
                // The put may or may not have landed: find out before the next write.
                shared.mark_stale();
                last_error = format!("writing wal object {seq}: {e}");
                break;
            }
        }
    }
    tracing::warn!(error = %last_error, "object store write failed; the callers get a retryable error");
    let failed = group
        .iter()
        .map(|_| Outcome::Failed(StorageError::Unavailable(last_error.clone())))
        .collect();
    reply(group, failed);
}

fn reply(group: Vec<Request>, outcomes: Vec<Outcome>) {
    for (request, outcome) in group.into_iter().zip(outcomes) {
        // A caller that gave up waiting dropped its receiver; nothing to tell it.
        match (request, outcome) {
            (
                Request::Append { reply, .. } | Request::Place { reply, .. },
                Outcome::Appended(a),
            ) => drop(reply.send(Ok(a))),
            (Request::Place { reply, .. }, Outcome::Failed(e)) => drop(reply.send(Err(e))),
            (Request::DeleteBefore { reply, .. }, Outcome::Deleted(o)) => drop(reply.send(Ok(o))),
            (Request::Remove { reply, .. } | Request::Compact { reply, .. }, Outcome::Done) => {
                drop(reply.send(Ok(())))
            }
            (Request::Compact { reply, .. }, Outcome::Failed(e)) => drop(reply.send(Err(e))),
            (Request::Append { reply, .. }, Outcome::Failed(e)) => drop(reply.send(Err(e))),
            (Request::DeleteBefore { reply, .. }, Outcome::Failed(e)) => drop(reply.send(Err(e))),
            (Request::Remove { reply, .. }, Outcome::Failed(e)) => drop(reply.send(Err(e))),
            // build() answers each request with its own kind.
            _ => {}
        }
    }
}

/// A wal object ready to put.
struct Object {
    bytes: Bytes,
    ops: Vec<Op>,
    /// Each run's index entry (its sequence number still 0) and bytes, for the cache.
    runs: Vec<(Entry, Bytes)>,
}

struct Built {
    /// `None` when there is nothing to write.
    object: Option<Object>,
    outcomes: Vec<Outcome>,
}

/// A partition as this group leaves it.
struct Working {
    exists: bool,
    log_start: Offset,
    next: Offset,
    run: Option<usize>,
}

fn build(state: &State, group: &[Request]) -> Built {
    let mut working: HashMap<TopicPartition, Working> = HashMap::new();
    let mut runs: Vec<Run> = Vec::new();
    let mut order: Vec<Slot> = Vec::new();
    let mut other: Vec<Op> = Vec::new();
    let mut outcomes = Vec::with_capacity(group.len());
    for request in group {
        // Each arm pushes exactly one outcome.
        if let Request::Compact { op, .. } = request {
            other.push(op.clone());
            order.push(Slot::Other(other.len() - 1));
            outcomes.push(Outcome::Done);
            continue;
        }
        let tp = match request {
            Request::Append { tp, .. }
            | Request::Place { tp, .. }
            | Request::DeleteBefore { tp, .. }
            | Request::Remove { tp, .. } => tp,
            Request::Compact { .. } => continue,
        };
        let w = working.entry(tp.clone()).or_insert_with(|| {
            let part = state.parts.get(tp);
            Working {
                exists: part.is_some(),
                log_start: part.map_or(0, |p| p.log_start),
                next: part.map_or(0, |p| p.next),
                run: None,
            }
        });
        if !w.exists {
            outcomes.push(Outcome::Failed(StorageError::UnknownPartition(tp.clone())));
            continue;
        }
        match request {
            Request::Append { batches, .. } | Request::Place { batches, .. }
                if batches.is_empty() =>
            {
                outcomes.push(Outcome::Appended(Appended {
                    base_offset: w.next,
                    last_offset: w.next.saturating_sub(1),
                }));
            }
            Request::Place { batches, .. } => {
                let first = batches[0].base_offset() as Offset;
                let fits = first == w.next || (first > w.next && w.run.is_none());
                let dense = batches
                    .windows(2)
                    .all(|p| p[0].last_offset() + 1 == p[1].base_offset());
                if !fits || !dense {
                    outcomes.push(Outcome::Failed(StorageError::Corrupt {
                        tp: tp.clone(),
                        reason: format!(
                            "copied batches from {first} do not continue the store at {}",
                            w.next
                        ),
                    }));
                    continue;
                }
                // Offsets below the first copied one were deleted before they were copied.
                w.next = first;
                outcomes.push(place(&mut runs, &mut order, tp, w, batches));
            }
            Request::Append { batches, .. } => {
                outcomes.push(place(&mut runs, &mut order, tp, w, batches));
            }
            Request::DeleteBefore { offset, .. } => {
                w.log_start = w.log_start.max((*offset).min(w.next));
                other.push(Op::DeleteBefore {
                    tp: tp.clone(),
                    log_start: w.log_start,
                });
                order.push(Slot::Other(other.len() - 1));
                outcomes.push(Outcome::Deleted(w.log_start));
            }
            Request::Remove { .. } => {
                other.push(Op::Remove { tp: tp.clone() });
                order.push(Slot::Other(other.len() - 1));
                *w = Working {
                    exists: false,
                    log_start: 0,
                    next: 0,
                    run: None,
                };
                outcomes.push(Outcome::Done);
            }
            // Handled before the partition lookup.
            Request::Compact { .. } => {}
        }
    }
    // A run whose partition was removed later in the group is still written: replay applies
    // it and then the removal, as this group did.
    if order.is_empty() {
        return Built {
            object: None,
            outcomes,
        };
    }
    let (object, ops) = layout::encode(&runs, &order, &other);
    let cached = ops
        .iter()
        .filter_map(|op| match op {
            Op::Append {
                base,
                last,
                max_ts,
                pos,
                len,
                ..
            } => {
                let bytes = object.slice(*pos as usize..(*pos + *len) as usize);
                let entry = Entry {
                    base: *base,
                    last: *last,
                    max_ts: *max_ts,
                    seq: 0,
                    pos: *pos,
                    len: *len,
                    run: 0,
                };
                Some((entry, bytes))
            }
            _ => None,
        })
        .collect();
    Built {
        object: Some(Object {
            bytes: object,
            ops,
            runs: cached,
        }),
        outcomes,
    }
}

/// Adds `batches` to `tp`'s run in the object being built, at the partition's next offsets.
fn place(
    runs: &mut Vec<Run>,
    order: &mut Vec<Slot>,
    tp: &TopicPartition,
    w: &mut Working,
    batches: &[RecordBatch],
) -> Outcome {
    let base_offset = w.next;
    let run = *w.run.get_or_insert_with(|| {
        runs.push(Run {
            tp: tp.clone(),
            base: base_offset,
            last: base_offset,
            max_ts: i64::MIN,
            chunks: Vec::new(),
        });
        order.push(Slot::Run(runs.len() - 1));
        runs.len() - 1
    });
    for batch in batches {
        let placed = batch.with_base_offset(w.next);
        let last = placed.last_offset() as Offset;
        let r = &mut runs[run];
        r.last = last;
        r.max_ts = r.max_ts.max(placed.header().max_timestamp);
        r.chunks.push(placed.into_bytes());
        w.next = last + 1;
    }
    Outcome::Appended(Appended {
        base_offset,
        last_offset: w.next.saturating_sub(1),
    })
}

/// How long a writer may go without reading the log's end before it checks it again; well
/// below the garbage collector's grace period, so a writer never reuses a collected number.
pub const RESYNC_AFTER: Duration = Duration::from_secs(300);
