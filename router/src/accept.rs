//! The accept loop every front end's listener runs: a connection limit, `TCP_NODELAY`, a back-off
//! when accepting fails (out of file descriptors and the like), and each connection in a task of
//! `tracker`, so shutdown can wait for them.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A connection's place under the listener's `max_connections`: the connection holds it until
/// it closes, even where it outlives the task that serves it (a dormant MQTT connection).
pub type ConnectionSlot = OwnedSemaphorePermit;

/// Accepts connections until `cancel` fires and runs `serve(stream, peer, slot)` for each in
/// `tracker`. Past `max_connections` open at once, a new connection is closed at once, with a
/// logged reason. `protocol` names the listener in logs.
pub async fn accept_loop<F, Fut>(
    protocol: &'static str,
    listener: TcpListener,
    max_connections: usize,
    cancel: CancellationToken,
    tracker: TaskTracker,
    mut serve: F,
) where
    F: FnMut(TcpStream, SocketAddr, ConnectionSlot) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(max_connections));
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => return,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(protocol, error = %e, "accept failed; retrying shortly");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(protocol, %peer, max = max_connections, "connection limit reached; closing");
            continue;
        };
        let _ = stream.set_nodelay(true);
        tracker.spawn(serve(stream, peer, permit));
    }
}
