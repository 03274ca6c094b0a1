//! The socket loop: owns the read and write buffers, enforces the frame size limit and the
//! idle timeout, and answers requests in order (Kafka processes one request per connection at a
//! time, which is what keeps responses ordered).

use std::sync::Arc;
use std::time::Duration;
use switchboard_router::accept::accept_loop;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::KafkaContext;
use crate::dispatch::{Reply, dispatch};
use crate::wire::{self, WireError};

/// Connection-level limits.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub max_connections: usize,
}

/// Accepts connections until `cancel` fires; each runs in `tracker`.
pub async fn serve_listener(
    ctx: Arc<KafkaContext>,
    listener: TcpListener,
    limits: ConnLimits,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let max = limits.max_connections;
    let conns_cancel = cancel.clone();
    accept_loop(
        "kafka",
        listener,
        max,
        cancel,
        tracker,
        |stream, peer, slot| {
            let (ctx, cancel) = (ctx.clone(), conns_cancel.clone());
            let span = tracing::info_span!("kafka_conn", %peer);
            async move {
                let _slot = slot;
                ctx.metrics.connections.inc();
                if let Err(reason) = serve_connection(&ctx, stream, cancel).await {
                    ctx.metrics.closed_bad_input.inc();
                    tracing::warn!(%reason, "closing kafka connection");
                }
                ctx.metrics.connections.dec();
            }
            .instrument(span)
        },
    )
    .await;
}

/// Why a connection was closed by us.
#[derive(Debug, thiserror::Error)]
enum Close {
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("idle for longer than {0:?}")]
    Idle(Duration),
}

async fn serve_connection(
    ctx: &KafkaContext,
    mut stream: TcpStream,
    cancel: CancellationToken,
) -> Result<(), Close> {
    // 8 KiB covers most requests in one read; large produce requests grow the buffer.
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let idle = ctx.settings.idle_timeout;
    loop {
        while let Some(frame) = wire::next_frame(&mut buf, ctx.settings.max_frame_size)? {
            ctx.metrics.bytes_in.inc_by(frame.len() as u64 + 4);
            let reply = tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                r = dispatch(ctx, frame) => r?,
            };
            if let Reply::Frame(out) = reply {
                ctx.metrics.bytes_out.inc_by(out.len() as u64);
                if stream.write_all(&out).await.is_err() {
                    return Ok(()); // the client went away: not an error
                }
            }
        }
        let read = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            r = tokio::time::timeout(idle, stream.read_buf(&mut buf)) => r,
        };
        match read {
            Err(_) => return Err(Close::Idle(idle)),
            Ok(Ok(0)) => {
                if !buf.is_empty() {
                    tracing::debug!(pending = buf.len(), "client closed mid-frame");
                }
                return Ok(());
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "kafka read failed");
                return Ok(());
            }
        }
    }
}
