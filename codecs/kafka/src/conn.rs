//! The socket loop: owns the read and write buffers, enforces the frame size limit and the
//! idle timeout, and answers requests in order. Kafka processes one request per connection at a
//! time, which is what keeps responses ordered; here produce requests waiting for an fsync
//! (acks=all) overlap: the next produce is read and appended while earlier ones wait, so one
//! fsync covers the client's whole window of requests in flight instead of one each. Answers
//! still go out in request order, and any other request waits until every earlier answer is
//! written, so it sees what they wrote acknowledged.

use std::sync::Arc;
use std::time::Duration;
use switchboard_router::accept::accept_loop;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use kafka_protocol::messages::ApiKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::KafkaContext;
use crate::dispatch::{Pending, Reply, dispatch};
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

/// Produce requests that may wait for their fsync at once on one connection; a client sending
/// more waits for the oldest (Kafka clients keep at most 5 in flight by default).
const MAX_WAITING: usize = 16;

async fn serve_connection(
    ctx: &KafkaContext,
    mut stream: TcpStream,
    cancel: CancellationToken,
) -> Result<(), Close> {
    // 8 KiB covers most requests in one read; large produce requests grow the buffer.
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let idle = ctx.settings.idle_timeout;
    // Answers not yet written, in request order.
    let mut waiting: FuturesOrdered<Pending<'_>> = FuturesOrdered::new();
    loop {
        while let Some(frame) = wire::next_frame(&mut buf, ctx.settings.max_frame_size)? {
            ctx.metrics.bytes_in.inc_by(frame.len() as u64 + 4);
            let produce = wire::peek_preamble(&frame)?.api_key == ApiKey::Produce as i16;
            let keep = if produce { MAX_WAITING - 1 } else { 0 };
            while waiting.len() > keep {
                let next = tokio::select! {
                    _ = cancel.cancelled() => return Ok(()),
                    next = waiting.next() => next,
                };
                if let Some(out) = next
                    && !send(ctx, &mut stream, out?).await
                {
                    return Ok(());
                }
            }
            // Earlier answers go out as they become ready while this request is handled: a
            // finished fsync is published to its other waiters only when its future is polled.
            let handling = dispatch(ctx, frame);
            tokio::pin!(handling);
            let reply = loop {
                tokio::select! {
                    _ = cancel.cancelled() => return Ok(()),
                    r = &mut handling => break r?,
                    Some(out) = waiting.next(), if !waiting.is_empty() => {
                        if !send(ctx, &mut stream, out?).await {
                            return Ok(());
                        }
                    }
                }
            };
            match reply {
                Reply::Frame(out) if waiting.is_empty() => {
                    if !send(ctx, &mut stream, out).await {
                        return Ok(());
                    }
                }
                Reply::Frame(out) => waiting.push_back(Box::pin(std::future::ready(Ok(out)))),
                Reply::Later(answer) => waiting.push_back(answer),
                Reply::Nothing => {}
            }
        }
        let read = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            Some(out) = waiting.next(), if !waiting.is_empty() => {
                if !send(ctx, &mut stream, out?).await {
                    return Ok(());
                }
                continue;
            }
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

/// Writes one answer; false when the client has gone away (not an error).
async fn send(ctx: &KafkaContext, stream: &mut TcpStream, out: Bytes) -> bool {
    ctx.metrics.bytes_out.inc_by(out.len() as u64);
    stream.write_all(&out).await.is_ok()
}
