//! The socket loop: it owns the read buffer, checks the protocol header, enforces the
//! negotiated frame size, the handshake deadline and heartbeats, and hands decoded frames to
//! the [`Session`]; it writes what the session queued and wakes it when queues push
//! deliveries.
//!
//! An idle connection holds no read buffer: it waits for readability and only then reserves
//! one, and gives it back once every byte is consumed, so idle clients stay cheap.
//!
//! Flow control (`broker::flow`): after a round of frames whose publishes filled a queue, the
//! loop stops handling frames and reading for a while, until the queue drains or the pause
//! reaches its bound; frames already read wait in the buffer. It goes on writing meanwhile, and
//! does not count the pause as the client's silence: the client's heartbeats are among the
//! bytes it does not read.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use switchboard_router::accept::accept_loop;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::ReplyCode;
use crate::broker::AmqpBroker;
use crate::session::{Phase, Session};
use crate::wire::{self, AMQPFrame, HeaderCheck, PROTOCOL_HEADER};

/// Bytes reserved for a read when the buffer has no room.
const READ_CHUNK: usize = 16 * 1024;
/// Frames handled as one round: their publishes are confirmed, and the queues their acks
/// settled dispatched, together.
const MAX_FRAMES_PER_ROUND: usize = 1024;
/// A buffer that grew past this is dropped once empty rather than kept.
const KEEP_BUFFER: usize = 256 * 1024;
/// How long the server waits for `close-ok` after sending `connection.close`.
const CLOSE_OK_WAIT: Duration = Duration::from_secs(1);

/// Accepts connections until `cancel` fires; each runs in `tracker`.
pub async fn serve_listener(
    broker: Arc<AmqpBroker>,
    listener: TcpListener,
    max_connections: usize,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    accept_loop(
        "amqp",
        listener,
        max_connections,
        cancel,
        tracker,
        |stream, peer, slot| {
            let broker = broker.clone();
            let span = tracing::info_span!("amqp_conn", %peer);
            async move {
                let _slot = slot;
                serve_connection(&broker, stream, peer).await;
            }
            .instrument(span)
        },
    )
    .await;
}

/// Reads what is available into `buf`; `Ok(0)` at end of stream. Through `AsyncRead`: a read
/// that leaves room in the buffer drained the socket and tokio clears the readiness, so the
/// next read waits instead of failing with `WouldBlock` first.
async fn read(stream: &mut TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
    if buf.capacity() - buf.len() < READ_CHUNK / 2 {
        buf.reserve(READ_CHUNK);
    }
    stream.read_buf(buf).await
}

async fn serve_connection(broker: &Arc<AmqpBroker>, mut stream: TcpStream, peer: SocketAddr) {
    let deadline = Instant::now() + broker.settings.connect_timeout;
    let mut buf = BytesMut::new();
    loop {
        match wire::check_protocol_header(&buf) {
            HeaderCheck::Ok => break,
            HeaderCheck::Wrong => {
                // §4.2.2: answer with the header we speak, then close.
                broker.metrics.connections_refused.inc();
                tracing::info!("closing: not an AMQP 0-9-1 protocol header");
                let _ = stream.write_all(&PROTOCOL_HEADER).await;
                let _ = stream.shutdown().await;
                return;
            }
            HeaderCheck::NeedMore => {}
        }
        match tokio::time::timeout_at(deadline, read(&mut stream, &mut buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return,
        }
    }
    let _ = buf.split_to(PROTOCOL_HEADER.len());
    let mut session = Session::new(broker.clone(), peer);
    run(
        &mut session,
        &mut stream,
        buf,
        deadline,
        broker.cancel_token(),
    )
    .await;
    if !session.out.is_empty() {
        let _ = tokio::time::timeout(CLOSE_OK_WAIT, stream.write_all(&session.out)).await;
    }
    let _ = stream.shutdown().await;
    session.finish().await;
}

/// The connection's life after the protocol header, until the session is closed, the peer
/// goes away or stays silent too long.
async fn run(
    session: &mut Session,
    stream: &mut TcpStream,
    mut buf: BytesMut,
    handshake_deadline: Instant,
    cancel: &CancellationToken,
) {
    let far = Instant::now() + Duration::from_secs(365 * 24 * 3600);
    let conn = session.conn().clone();
    let mut last_heard = Instant::now();
    let mut last_sent = Instant::now();
    let mut closing_deadline: Option<Instant> = None;
    let mut shutting_down = false;
    let mut pause = Pause::default();
    loop {
        if pause.until.is_none() && pause.held_frames {
            // The frames a pause interrupted come before anything read later.
            pause.held_frames = false;
            handle_read(session, &mut buf, &mut pause).await;
        }
        if !session.out.is_empty() {
            if let Err(e) = stream.write_all(&session.out).await {
                tracing::debug!(error = %e, "write failed");
                return;
            }
            last_sent = Instant::now();
            session.out.clear();
            if session.out.capacity() > KEEP_BUFFER {
                session.out = BytesMut::new();
            }
        }
        let phase = session.phase();
        if phase == Phase::Closed {
            return;
        }
        if phase == Phase::Closing && closing_deadline.is_none() {
            closing_deadline = Some(Instant::now() + CLOSE_OK_WAIT);
        }
        if phase != Phase::Open && pause.until.take().is_some() {
            // A closing connection reads its close-ok, whatever the queues hold.
            last_heard = Instant::now();
            continue;
        }
        let heartbeat = session.heartbeat();
        // §4.2.7: a peer that hears nothing for two heartbeat intervals closes the
        // connection; the server sends one when it has been silent for half an interval.
        let silent_until = match (closing_deadline, phase, heartbeat) {
            (Some(at), _, _) => at,
            (None, Phase::AwaitStartOk | Phase::AwaitTuneOk | Phase::AwaitOpen, _) => {
                handshake_deadline
            }
            (None, _, Some(h)) => last_heard + 2 * h,
            (None, _, None) => far,
        };
        let silent_until = if pause.until.is_some() {
            far
        } else {
            silent_until
        };
        let beat_at = heartbeat.map_or(far, |h| last_sent + h / 2);
        tokio::select! {
            r = read(stream, &mut buf), if pause.until.is_none() => {
                match r {
                    Ok(0) => return,
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(error = %e, "read failed");
                        return;
                    }
                }
                last_heard = Instant::now();
                handle_read(session, &mut buf, &mut pause).await;
            }
            _ = conn.flow.notified(), if pause.until.is_some() => {
                if !session.held_back() {
                    pause.until = None;
                    last_heard = Instant::now();
                }
            }
            _ = tokio::time::sleep_until(pause.until.unwrap_or(far)), if pause.until.is_some() => {
                session.metrics().flow_pauses_timed_out.inc();
                session.pause_over();
                pause.until = None;
                last_heard = Instant::now();
            }
            _ = conn.notify.notified() => session.pump(),
            _ = tokio::time::sleep_until(beat_at) => {
                let _ = wire::encode_frame(&AMQPFrame::Heartbeat, &mut session.out);
            }
            _ = tokio::time::sleep_until(silent_until) => {
                match phase {
                    Phase::Closing => tracing::debug!("no close-ok in time"),
                    Phase::Open => tracing::info!("missed heartbeats from client; closing"),
                    _ => tracing::info!("handshake not finished in time; closing"),
                }
                return;
            }
            _ = cancel.cancelled(), if !shutting_down => {
                shutting_down = true;
                session.server_close(ReplyCode::ConnectionForced, "broker shutdown");
            }
        }
    }
}

/// Flow control as the socket loop sees it (`broker::flow`).
#[derive(Default)]
struct Pause {
    /// While set, the socket is not read, until this instant at the latest.
    until: Option<Instant>,
    /// The pause began with frames of the last read not handled yet: they go first after it.
    held_frames: bool,
}

/// Handles the frames in `buf`, and pauses if the session is held back by flow control.
async fn handle_read(session: &mut Session, buf: &mut BytesMut, pause: &mut Pause) {
    if handle_buffered(session, buf).await {
        session.metrics().flow_pauses.inc();
        pause.until = Some(Instant::now() + session.max_pause());
        pause.held_frames = !buf.is_empty();
    }
    if buf.is_empty() {
        *buf = BytesMut::new();
    }
}

/// Decodes and handles every complete frame in `buf`, in rounds of at most
/// [`MAX_FRAMES_PER_ROUND`]; each round ends with the session's confirms and dispatch. Frames
/// are handled as they are decoded, so the limit for the next one is always current (it
/// changes with `tune-ok`), and no frame is moved through a list. Stops early, and returns
/// true, when a round leaves the session held back by flow control: a publisher goes at most
/// one round past a queue's high-water mark, however much one read brought.
async fn handle_buffered(session: &mut Session, buf: &mut BytesMut) -> bool {
    loop {
        let mut handled = 0;
        let mut failed = None;
        while handled < MAX_FRAMES_PER_ROUND && session.phase() != Phase::Closed {
            match wire::decode_frame(buf, session.frame_max()) {
                Ok(Some(f)) => {
                    session.handle_frame(f).await;
                    handled += 1;
                }
                Ok(None) => break,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        // Frames before a bad one were valid and are handled (and confirmed).
        session.end_round().await;
        if let Some(e) = failed {
            session.decode_error(e);
            // What follows a bad frame cannot be trusted.
            buf.clear();
            return false;
        }
        if session.held_back() {
            return true;
        }
        if handled < MAX_FRAMES_PER_ROUND || session.phase() == Phase::Closed {
            return false;
        }
    }
}
