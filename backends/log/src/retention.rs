//! Dropping data from the front of a partition: `delete_before` and retention policies. Both
//! delete whole segments only; `delete_before` also moves a logical log start, persisted in the
//! partition's `log-start` file, that hides the rest of a partly deleted segment.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use switchboard_model::{Offset, TopicPartition};
use switchboard_storage::{Retention, StorageResult};

use crate::fsio::write_atomically;
use crate::partition::{Partition, Writer};

/// Name of the file holding the log start set by `delete_before`, as decimal text.
pub(crate) const LOG_START_FILE: &str = "log-start";

/// The persisted log start of the partition in `dir`, if any. A file that does not parse is
/// ignored with a warning: the segments on disk still bound the log from below.
pub(crate) fn read_log_start(dir: &Path, tp: &TopicPartition) -> StorageResult<Option<Offset>> {
    let text = match fs::read_to_string(dir.join(LOG_START_FILE)) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    match text.trim().parse() {
        Ok(offset) => Ok(Some(offset)),
        Err(_) => {
            tracing::warn!(partition = %tp, content = ?text, "ignoring an unreadable log-start file");
            Ok(None)
        }
    }
}

impl Partition {
    pub(crate) async fn delete_before(self: &Arc<Self>, offset: Offset) -> StorageResult<Offset> {
        self.with_writer(move |p, _| p.delete_before_locked(offset))
            .await
    }

    fn delete_before_locked(&self, offset: Offset) -> StorageResult<Offset> {
        let (target, current) = {
            let view = self.view();
            (offset.min(view.next), view.log_start)
        };
        if target <= current {
            return Ok(current);
        }
        // Persist first: once a reader has been refused an offset, a restart must not serve it.
        let text = format!("{target}\n");
        write_atomically(
            &self.dir.join(LOG_START_FILE),
            text.as_bytes(),
            self.config.fsync.syncs(),
        )?;
        let below: Vec<Offset> = {
            let mut view = self.view_mut();
            view.log_start = target;
            // A sealed segment lies wholly below the target when its successor starts at or
            // before it.
            let bases: Vec<Offset> = view.segments.keys().copied().collect();
            bases
                .windows(2)
                .take_while(|pair| pair[1] <= target)
                .map(|pair| pair[0])
                .collect()
        };
        self.drop_segments(&below)?;
        Ok(self.view().log_start)
    }

    pub(crate) async fn apply_retention(
        self: &Arc<Self>,
        retention: Retention,
        now_ms: i64,
    ) -> StorageResult<Offset> {
        self.with_writer(move |p, w| p.apply_retention_locked(w, retention, now_ms))
            .await
    }

    /// Deletes the oldest segments while the rest still hold `max_bytes`, or while all their
    /// batches are older than `max_age_ms`. Like Kafka, the active segment goes too when it
    /// qualifies: it is rolled first, leaving an empty segment at the high watermark.
    fn apply_retention_locked(
        &self,
        w: &mut Writer,
        retention: Retention,
        now_ms: i64,
    ) -> StorageResult<Offset> {
        let (segments, active, next) = {
            let view = self.view();
            let segments: Vec<_> = view
                .segments
                .values()
                .map(|s| (s.base(), s.size(), s.max_timestamp()))
                .collect();
            (segments, view.active.base(), view.next)
        };
        let cutoff = retention.max_age_ms.map(|age| now_ms.saturating_sub(age));
        let mut remaining: u64 = segments.iter().map(|s| s.1).sum();
        let mut doomed = Vec::new();
        for (base, size, max_ts) in segments {
            let too_big = retention
                .max_bytes
                .is_some_and(|max| remaining - size >= max);
            let too_old = cutoff.is_some_and(|cutoff| max_ts < cutoff);
            if size == 0 || !(too_big || too_old) {
                break;
            }
            doomed.push(base);
            remaining -= size;
        }
        if doomed.last() == Some(&active) {
            self.roll(w, next)?;
        }
        self.drop_segments(&doomed)?;
        Ok(self.view().log_start)
    }

    /// Unlinks segments from the view, moves the log start past them, then deletes their
    /// files. Readers holding one keep reading it: an open file outlives its name.
    fn drop_segments(&self, bases: &[Offset]) -> StorageResult<()> {
        if bases.is_empty() {
            return Ok(());
        }
        let dropped: Vec<_> = {
            let mut view = self.view_mut();
            let active = view.active.base();
            let dropped = bases
                .iter()
                .filter(|&&b| b != active)
                .filter_map(|b| view.segments.remove(b))
                .collect();
            if let Some(&first) = view.segments.keys().next() {
                view.log_start = view.log_start.max(first);
            }
            dropped
        };
        let mut failure = None;
        for segment in dropped {
            tracing::debug!(partition = %self.tp, base = segment.base(), "deleting segment");
            if let Err(e) = segment.remove_files() {
                tracing::warn!(partition = %self.tp, base = segment.base(), "segment files not deleted: {e}");
                failure.get_or_insert(e);
            }
        }
        failure.map_or(Ok(()), |e| Err(e.into()))
    }
}
