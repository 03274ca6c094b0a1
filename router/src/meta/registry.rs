//! The directories this process has open.
//!
//! redb locks its file, and a dropped [`super::MetaStore`] lets go of it only once its Raft
//! tasks have ended, a moment later. Reopening such a directory waits for that instead of
//! failing; reopening one that a live store still holds fails at once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::watch;

use super::MetaError;

/// How long to wait for Raft tasks to let go of the database file.
pub(super) const RELEASE_TIMEOUT: Duration = Duration::from_secs(10);

struct Opened {
    /// Alive while any clone of the store's handle is.
    handle: Weak<()>,
    /// Closes when the database has been dropped.
    closed: watch::Receiver<()>,
}

static OPEN: Mutex<BTreeMap<PathBuf, Opened>> = Mutex::new(BTreeMap::new());

/// Waits until no store of this process holds `dir` (a canonical path); fails at once if a
/// store that is neither dropped nor shut down holds it.
pub(super) async fn wait_released(dir: &Path) -> Result<(), MetaError> {
    let previous = OPEN
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(dir)
        .map(|o| (o.handle.strong_count(), o.closed.clone()));
    match previous {
        None => Ok(()),
        // Shut down, whether or not its handles are still around.
        Some((_, closed)) if closed.has_changed().is_err() => Ok(()),
        Some((live, _)) if live > 0 => Err(MetaError::Database {
            path: dir.to_path_buf(),
            reason: "already open by another metadata store of this process".into(),
        }),
        Some((_, closed)) => wait_closed(closed).await,
    }
}

/// Records that `dir` is held by the store owning `handle` until `closed` closes.
pub(super) fn register(dir: PathBuf, handle: &Arc<()>, closed: watch::Receiver<()>) {
    let mut open = OPEN.lock().unwrap_or_else(PoisonError::into_inner);
    open.retain(|_, o| o.closed.has_changed().is_ok());
    open.insert(
        dir,
        Opened {
            handle: Arc::downgrade(handle),
            closed,
        },
    );
}

/// Waits (bounded) until the database behind `closed` has been dropped.
pub(super) async fn wait_closed(mut closed: watch::Receiver<()>) -> Result<(), MetaError> {
    tokio::time::timeout(RELEASE_TIMEOUT, async {
        // Nothing is ever sent: `changed` fails once the sender, owned by the database, is gone.
        while closed.changed().await.is_ok() {}
    })
    .await
    .map_err(|_| {
        MetaError::Consensus(format!(
            "metadata database still in use {RELEASE_TIMEOUT:?} after its store stopped"
        ))
    })
}
