//! The socket loops for MQTT over TCP and over WebSocket: they own the buffers, enforce the
//! packet size limit, the CONNECT deadline and keep-alive, and hand decoded packets to the
//! [`Session`].
//!
//! An idle connection holds no read buffer: it waits for readability and only then takes
//! one, and gives it back once every byte is consumed (to a few spares kept per worker thread,
//! so a connection reading a packet at a time does not allocate and free 8 KiB per read; see
//! [`spare`]). Once it has been quiet for
//! `dormant_after` it goes dormant: it gives up its task too (`crate::dormant`). That keeps
//! 10 000 idle clients cheap.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use switchboard_router::RouterError;
use switchboard_router::accept::{ConnectionSlot, accept_loop};

use bytes::BytesMut;
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::broker::{Broker, SessionShared};
use crate::dormant::Dormant;
use crate::session::{Ending, Session, SyncJob};
use crate::wire::{self, ConnAck, DecodeError, Packet, ProtocolVersion};

/// Bytes reserved for a read when the buffer has no room.
const READ_CHUNK: usize = 8 * 1024;
/// Bytes reserved to read CONNECT: most are far smaller, and a large temporary buffer per new
/// connection fragments the heap that its long-lived state is then allocated from.
const CONNECT_CHUNK: usize = 512;
/// Packets decoded from the buffer before the session handles them as one group.
const MAX_PACKETS_PER_ROUND: usize = 1024;
/// A buffer that grew past this is dropped once empty rather than kept.
const KEEP_BUFFER: usize = 64 * 1024;

/// Read and write buffers between uses: each worker thread keeps a few that connections have
/// given back empty, for the next connection that reads or writes on it.
mod spare {
    use std::cell::RefCell;

    use bytes::BytesMut;

    use super::{KEEP_BUFFER, READ_CHUNK};

    /// Spares per thread: enough for the connections one thread reads in a row.
    const PER_THREAD: usize = 8;

    thread_local! {
        static SPARES: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
    }

    /// A buffer with room for a read of [`READ_CHUNK`] bytes.
    pub(super) fn take() -> BytesMut {
        SPARES
            .with(|s| s.borrow_mut().pop())
            .unwrap_or_else(|| BytesMut::with_capacity(READ_CHUNK))
    }

    /// Takes `buf` if it is empty (the connection then holds none), keeping it as a spare when
    /// it still has room for a read and there is room for it.
    pub(super) fn give_back(buf: &mut BytesMut) {
        if !buf.is_empty() || buf.capacity() == 0 {
            return;
        }
        let buf = std::mem::take(buf);
        if buf.capacity() < READ_CHUNK / 2 || buf.capacity() > KEEP_BUFFER {
            return;
        }
        SPARES.with(|s| {
            let mut spares = s.borrow_mut();
            if spares.len() < PER_THREAD {
                spares.push(buf);
            }
        });
    }
}

/// Which transport a listener serves.
#[derive(Debug, Clone)]
pub enum Transport {
    Tcp,
    /// WebSocket on `path`, subprotocol `mqtt`.
    WebSocket {
        path: String,
    },
}

/// Accepts connections until `cancel` fires; each runs in `tracker`.
pub async fn serve_listener(
    broker: Arc<Broker>,
    listener: TcpListener,
    transport: Transport,
    max_connections: usize,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    accept_loop(
        "mqtt",
        listener,
        max_connections,
        cancel,
        tracker,
        |stream, peer, slot| {
            let broker = broker.clone();
            let transport = transport.clone();
            // A debug span: at the default level it costs nothing, which matters with many idle
            // clients; the info-level logs below name the peer themselves.
            let span = tracing::debug_span!("mqtt_conn", %peer);
            async move {
                let io = match transport {
                    Transport::Tcp => Io::Tcp(stream),
                    Transport::WebSocket { path } => {
                        match Box::pin(accept_websocket(stream, &path)).await {
                            Ok(ws) => Io::Ws(Box::new(ws)),
                            Err(e) => {
                                tracing::debug!(error = %e, "websocket handshake failed");
                                return;
                            }
                        }
                    }
                };
                serve_connection(&broker, io, peer, slot).await;
            }
            .instrument(span)
        },
    )
    .await;
}

async fn accept_websocket(
    stream: TcpStream,
    path: &str,
) -> Result<WebSocketStream<TcpStream>, tokio_tungstenite::tungstenite::Error> {
    let path = path.to_owned();
    // The signature is tungstenite's callback type; its error is a whole HTTP response.
    #[allow(clippy::result_large_err)]
    let check = move |req: &Request, mut resp: Response| -> Result<Response, ErrorResponse> {
        if req.uri().path() != path {
            let mut not_found = ErrorResponse::new(Some("no MQTT endpoint at this path".into()));
            *not_found.status_mut() = StatusCode::NOT_FOUND;
            return Err(not_found);
        }
        // Echo the MQTT subprotocol the client offers (MQTT 5 §6: "mqtt"; old clients say
        // "mqttv3.1").
        let offered = req
            .headers()
            .get_all("sec-websocket-protocol")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(',').map(str::trim))
            .find(|p| matches!(*p, "mqtt" | "mqttv3.1"))
            .map(str::to_owned);
        if let Some(p) = offered
            && let Ok(v) = HeaderValue::from_str(&p)
        {
            resp.headers_mut().insert("sec-websocket-protocol", v);
        }
        Ok(resp)
    };
    tokio_tungstenite::accept_hdr_async(stream, check).await
}

/// The byte stream under MQTT.
enum Io {
    Tcp(TcpStream),
    Ws(Box<WebSocketStream<TcpStream>>),
}

impl Io {
    /// Reads what is available into `buf`; `Ok(0)` at end of stream.
    async fn read(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        self.read_chunked(buf, READ_CHUNK).await
    }

    /// Reads what is available into `buf`, reserving `chunk` bytes when it is short of room;
    /// `Ok(0)` at end of stream.
    async fn read_chunked(&mut self, buf: &mut BytesMut, chunk: usize) -> io::Result<usize> {
        match self {
            Io::Tcp(s) => loop {
                s.readable().await?;
                if buf.capacity() - buf.len() < chunk / 2 {
                    if buf.capacity() == 0 && chunk == READ_CHUNK {
                        *buf = spare::take();
                    } else {
                        buf.reserve(chunk);
                    }
                }
                // Through `AsyncRead` rather than `try_read_buf`: a read that leaves room in
                // the buffer drained the socket, and tokio then clears the readiness, where
                // `try_read_buf` keeps it until a second read fails with `WouldBlock` (a wasted
                // system call per packet at low rates).
                match s.read_buf(buf).now_or_never() {
                    Some(result) => return result,
                    None => {
                        // Readiness was stale: give the buffer back before waiting again, or
                        // every idle client keeps one.
                        spare::give_back(buf);
                        continue;
                    }
                }
            },
            Io::Ws(ws) => loop {
                match ws.next().await {
                    None | Some(Ok(WsMessage::Close(_))) => return Ok(0),
                    Some(Ok(WsMessage::Binary(data))) => {
                        if data.is_empty() {
                            continue;
                        }
                        buf.extend_from_slice(&data);
                        return Ok(data.len());
                    }
                    Some(Ok(WsMessage::Text(_))) => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "MQTT over WebSocket must use binary frames",
                        ));
                    }
                    // Pings are answered by tungstenite on the next write or flush.
                    Some(Ok(_)) => {
                        ws.flush().await.map_err(io::Error::other)?;
                    }
                    Some(Err(e)) => return Err(io::Error::other(e)),
                }
            },
        }
    }

    /// Reads what is already readable without waiting; true if anything was read.
    fn drain_ready(&mut self, buf: &mut BytesMut) -> bool {
        let mut got = false;
        match self {
            Io::Tcp(s) => loop {
                if buf.capacity() - buf.len() < READ_CHUNK / 2 {
                    buf.reserve(READ_CHUNK);
                }
                match s.try_read_buf(buf) {
                    Ok(n) if n > 0 => got = true,
                    _ => return got,
                }
            },
            Io::Ws(ws) => {
                while let Some(Some(Ok(WsMessage::Binary(data)))) = ws.next().now_or_never() {
                    buf.extend_from_slice(&data);
                    got = true;
                }
                got
            }
        }
    }

    async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Io::Tcp(s) => s.write_all(data).await,
            Io::Ws(ws) => ws
                .send(WsMessage::Binary(bytes::Bytes::copy_from_slice(data)))
                .await
                .map_err(io::Error::other),
        }
    }

    async fn shutdown(&mut self) {
        match self {
            Io::Tcp(s) => {
                let _ = s.shutdown().await;
            }
            Io::Ws(ws) => {
                let _ = SinkExt::close(ws).await;
            }
        }
    }
}

/// One connection. Its future lives as long as the connection is awake, so it is kept small:
/// the CONNECT exchange and the closing run in boxed futures that are freed when done, and only
/// the connected loop's state stays for an idle client until it goes dormant.
async fn serve_connection(
    broker: &Arc<Broker>,
    mut io: Io,
    peer: SocketAddr,
    slot: ConnectionSlot,
) {
    let max = broker.settings.max_packet_size as usize;
    let Some((session, buf)) = Box::pin(handshake(broker, &mut io, max, peer)).await else {
        return;
    };
    broker.metrics.connections.inc();
    connected(session, io, buf, Instant::now(), true, peer, slot).await;
}

/// The connected phase, from CONNACK or from a dormant connection's wake-up, until the
/// connection ends or goes dormant again.
async fn connected(
    mut session: Box<Session>,
    mut io: Io,
    buf: BytesMut,
    last_heard: Instant,
    fresh: bool,
    peer: SocketAddr,
    slot: ConnectionSlot,
) {
    let broker = session.broker().clone();
    let max = broker.settings.max_packet_size as usize;
    let ending = match run(&mut session, &mut io, buf, max, last_heard, fresh).await {
        Outcome::End(ending) => ending,
        Outcome::Sleep { last_heard } => match sleep(session, io, last_heard, slot) {
            Ok(()) => return,
            Err((s, e)) => {
                tracing::debug!(error = %e, "cannot go dormant");
                broker.metrics.connections.dec();
                Box::pin(s.finish(&Ending::Dropped)).await;
                return;
            }
        },
    };
    broker.metrics.connections.dec();
    Box::pin(close(&broker, *session, io, ending, peer)).await;
}

/// Hands a quiet connection to the broker's [`Lot`](crate::dormant::Lot): its task ends here.
#[allow(clippy::result_large_err)] // the error hands the session back to be finished
fn sleep(
    session: Box<Session>,
    io: Io,
    last_heard: Instant,
    slot: ConnectionSlot,
) -> Result<(), (Box<Session>, io::Error)> {
    let broker = session.broker().clone();
    let Some(lot) = broker.lot() else {
        return Err((session, io::Error::other("no lot")));
    };
    let Io::Tcp(tcp) = io else {
        return Err((session, io::Error::other("only TCP connections sleep")));
    };
    let stream = match tcp.into_std() {
        Ok(s) => s,
        Err(e) => return Err((session, e)),
    };
    let last_heard = last_heard.into_std();
    let deadline = (session.keep_alive > 0)
        .then(|| last_heard + Duration::from_millis(u64::from(session.keep_alive) * 1500));
    broker.metrics.dormant.inc();
    let d = Dormant {
        stream,
        session,
        last_heard,
        tracked: broker.tracker().token(),
        slot,
    };
    lot.sleep(Box::new(d), deadline);
    Ok(())
}

/// Gives a woken dormant connection its task back (called by the [`Lot`](crate::dormant::Lot)
/// with the runtime entered).
pub fn resume(d: Dormant) {
    let Dormant {
        stream,
        session,
        last_heard,
        tracked,
        slot,
    } = d;
    let broker = session.broker().clone();
    broker.metrics.dormant.dec();
    let peer = stream
        .peer_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let span = tracing::debug_span!("mqtt_conn", %peer);
    let tracker = broker.tracker().clone();
    tracker.spawn(
        async move {
            match TcpStream::from_std(stream) {
                Ok(tcp) => {
                    let last_heard = Instant::from_std(last_heard);
                    let io = Io::Tcp(tcp);
                    connected(session, io, BytesMut::new(), last_heard, false, peer, slot).await;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "cannot wake a dormant connection");
                    broker.metrics.connections.dec();
                    Box::pin(session.finish(&Ending::Dropped)).await;
                }
            }
        }
        .instrument(span),
    );
    // The spawned task now keeps the tracker waiting.
    drop(tracked);
}

/// Reads CONNECT (the first packet, MQTT 5 §3.1) within the connect timeout and answers it.
/// `None` when the connection is refused or closed; the reason is logged here.
async fn handshake(
    broker: &Arc<Broker>,
    io: &mut Io,
    max: usize,
    peer: SocketAddr,
) -> Option<(Box<Session>, BytesMut)> {
    let mut buf = BytesMut::new();
    let deadline = Instant::now() + broker.settings.connect_timeout;
    let connect = loop {
        match wire::decode(&mut buf, ProtocolVersion::V311, max) {
            Ok(Some(Packet::Connect(c))) => break *c,
            Ok(Some(other)) => {
                tracing::info!(
                    %peer,
                    packet = other.name(),
                    "closing: first packet is not CONNECT"
                );
                return None;
            }
            Ok(None) => {}
            Err(DecodeError::UnsupportedProtocolVersion(level)) => {
                tracing::info!(%peer, level, "closing: unsupported protocol level");
                // 3.1.1 §3.1.2.2: answer 0x01 (unacceptable protocol level), in the 3.1.1
                // layout, which is all a client of an unknown level can be expected to read.
                let mut out = BytesMut::new();
                let refusal = ConnAck {
                    code: wire::reason::v3::UNACCEPTABLE_PROTOCOL_VERSION,
                    ..Default::default()
                };
                wire::encode(&Packet::ConnAck(refusal), ProtocolVersion::V311, &mut out);
                let _ = io.write_all(&out).await;
                return None;
            }
            Err(e) => {
                tracing::info!(%peer, error = %e, "closing: bad CONNECT");
                return None;
            }
        }
        match tokio::time::timeout_at(deadline, io.read_chunked(&mut buf, CONNECT_CHUNK)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return None,
            Ok(Ok(_)) => {}
            Err(_) => {
                tracing::info!(%peer, "closing: no CONNECT within the connect timeout");
                return None;
            }
        }
    };
    let client_id = connect.client_id.clone();
    match Session::connect(broker, connect).await {
        Ok(session) => {
            tracing::debug!(client_id = session.client_id(), version = ?session.version(), "connected");
            Some((Box::new(session), buf))
        }
        Err(refused) => {
            tracing::info!(%peer, client_id, why = refused.why, "connection refused");
            broker.metrics.connections_refused.inc();
            let mut out = BytesMut::new();
            wire::encode(&Packet::ConnAck(refused.connack), refused.version, &mut out);
            let _ = io.write_all(&out).await;
            io.shutdown().await;
            None
        }
    }
}

/// Ends a connection: MQTT 5 clients get the server's DISCONNECT when the server closes it,
/// then the session is parked or ended.
async fn close(
    broker: &Arc<Broker>,
    mut session: Session,
    mut io: Io,
    ending: Ending,
    peer: SocketAddr,
) {
    if let Ending::Server { reason, why } = &ending {
        broker.metrics.closed_by_server.inc();
        tracing::info!(
            %peer,
            client_id = session.client_id(),
            reason,
            why,
            "server closes the connection"
        );
        session.out.clear();
        session.send_disconnect(*reason, why);
        if !session.out.is_empty() {
            let _ = tokio::time::timeout(Duration::from_secs(1), io.write_all(&session.out)).await;
        }
    }
    io.shutdown().await;
    session.finish(&ending).await;
}

/// How a connected loop ends.
enum Outcome {
    End(Ending),
    /// Quiet long enough: the connection goes dormant.
    Sleep {
        last_heard: Instant,
    },
}

/// The connected phase: read, handle, deliver, write, until something ends the connection or it
/// has been quiet long enough to go dormant.
async fn run(
    session: &mut Session,
    io: &mut Io,
    mut buf: BytesMut,
    max: usize,
    mut last_heard: Instant,
    fresh: bool,
) -> Outcome {
    let version = session.version();
    // MQTT 5 §3.1.2.10: one and a half times the keep-alive without a packet closes it.
    let keep_alive = (session.keep_alive > 0)
        .then(|| Duration::from_millis(u64::from(session.keep_alive) * 1500));
    let far = Duration::from_secs(365 * 24 * 3600);
    let dormant_after = session.broker().settings.dormant_after;
    let can_sleep = matches!(io, Io::Tcp(_))
        && session.broker().lot().is_some()
        && !session.broker().cancel_token().is_cancelled();
    // A new connection sleeps as soon as it has nothing more to say after CONNACK: most
    // clients of a large deployment connect and wait, and its task is then reused by the next
    // one to connect instead of adding to the process's high-water mark. Those that go on to
    // talk pay one wake-up for it.
    let mut quiet_for = if fresh { Duration::ZERO } else { dormant_after };
    let mut last_active = Instant::now();
    // The fsync that QoS 1 and 2 acknowledgements wait for, run beside the reads.
    let mut sync: Option<SyncJob> = None;
    // Flow control (`broker::flow`): subscribers whose backlog stops this connection's reads,
    // until when at most.
    let mut held: Vec<Arc<SessionShared>> = Vec::new();
    let mut held_until = Instant::now();
    // One timer for all the deadlines below (a second one would grow every connection's
    // future). It is moved only when the nearest deadline comes closer than it, or after it
    // fired: every packet pushes the keep-alive back, and re-arming the timer for each one cost
    // a timer registration and removal per message. Firing early is harmless: each deadline is
    // checked again when it does.
    let timer = tokio::time::sleep_until(Instant::now() + far);
    tokio::pin!(timer);
    if buf.is_empty() {
        // The CONNECT has been read: an idle client holds no read buffer (see the module doc).
        buf = BytesMut::new();
    } else {
        // Packets that came in the same read as CONNECT.
        quiet_for = dormant_after;
        match Box::pin(handle_buffered(session, &mut buf, version, max)).await {
            Ok(backlog) => hold(session, &mut held, &mut held_until, backlog),
            Err(e) => return Outcome::End(e),
        }
    }
    loop {
        if session.is_kicked() {
            return Outcome::End(kicked(session, io, &mut buf, version, max).await);
        }
        if !held.is_empty()
            && (Instant::now() >= held_until
                || !session.broker().holds(session.shared(), &mut held))
        {
            held.clear();
        }
        let paused = !held.is_empty();
        if paused {
            // Not reading is not the client's silence.
            last_heard = Instant::now();
        }
        if sync.is_none() {
            sync = session.start_sync();
        }
        if !session.out.is_empty() {
            if let Err(e) = io.write_all(&session.out).await {
                tracing::debug!(error = %e, "write failed");
                return Outcome::End(Ending::Dropped);
            }
            session.out.clear();
        }
        if session.out.capacity() > KEEP_BUFFER || idle_after_write(session) {
            spare::give_back(&mut session.out);
        }
        let silent_until = last_heard + keep_alive.unwrap_or(far);
        let sleep_at = (can_sleep && !paused).then(|| last_active + quiet_for);
        let mut deadline = silent_until;
        let resume_at = paused.then_some(held_until);
        for due in [session.checkpoint_due(), sleep_at, resume_at]
            .into_iter()
            .flatten()
        {
            deadline = deadline.min(due);
        }
        if timer.is_elapsed() || deadline < timer.deadline() {
            timer.as_mut().reset(deadline);
        }
        tokio::select! {
            read = io.read(&mut buf), if !paused => {
                match read {
                    Ok(0) => return Outcome::End(Ending::Dropped),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(error = %e, "read failed");
                        return Outcome::End(Ending::Dropped);
                    }
                }
                last_heard = Instant::now();
                last_active = last_heard;
                quiet_for = dormant_after;
                take_out_buffer(session);
                match Box::pin(handle_buffered(session, &mut buf, version, max)).await {
                    Ok(backlog) => hold(session, &mut held, &mut held_until, backlog),
                    Err(e) => return Outcome::End(e),
                }
                // Idle connections hold no read buffer.
                spare::give_back(&mut buf);
            }
            synced = run_sync(&mut sync) => {
                sync = None;
                if let Err(e) = session.synced(synced) {
                    return Outcome::End(e);
                }
            }
            _ = session.notified() => {
                if !session.is_kicked() {
                    take_out_buffer(session);
                    session.pump();
                    last_active = Instant::now();
                }
            }
            () = &mut timer => {
                let now = Instant::now();
                if now >= silent_until {
                    return Outcome::End(Ending::server(
                        wire::reason::KEEP_ALIVE_TIMEOUT,
                        "keep-alive timeout",
                    ));
                }
                if session.checkpoint_due().is_some_and(|due| due <= now) {
                    Box::pin(session.checkpoint()).await;
                }
                if sleep_at.is_some_and(|at| at <= now) {
                    if buf.is_empty()
                        && session.out.is_empty()
                        && session.checkpoint_due().is_none()
                        && session.queued() == 0
                        && !session.acks_pending()
                    {
                        return Outcome::Sleep { last_heard };
                    }
                    // Half a packet read, or deliveries held back: stay awake a while more.
                    last_active = now;
                    quiet_for = dormant_after;
                }
            }
        }
    }
}

/// Runs the pending sync, if any; never finishes when there is none.
async fn run_sync(sync: &mut Option<SyncJob>) -> Result<(), RouterError> {
    match sync {
        Some(job) => job.await,
        None => std::future::pending().await,
    }
}

/// Starts a pause for the subscribers a read left backlogged, if any: it lasts at most
/// `flow.max_pause`. Reads happen only while no pause is on, so `held` is empty here.
fn hold(
    session: &Session,
    held: &mut Vec<Arc<SessionShared>>,
    held_until: &mut Instant,
    backlog: Vec<Arc<SessionShared>>,
) {
    if !backlog.is_empty() {
        *held = backlog;
        *held_until = Instant::now() + session.broker().settings.flow.max_pause;
    }
}

/// The connection was told to close (takeover, shutdown). Packets the client sent before that
/// (a PUBREC, say) are still in the socket: they are handled, so the session is handed over
/// with them.
async fn kicked(
    session: &mut Session,
    io: &mut Io,
    buf: &mut BytesMut,
    version: ProtocolVersion,
    max: usize,
) -> Ending {
    if io.drain_ready(buf)
        && let Err(e) = Box::pin(handle_buffered(session, buf, version, max)).await
    {
        tracing::debug!(ending = ?e, "while draining a connection taken over");
    }
    session.kick_reason()
}

/// Gives the session a spare buffer to write into, unless it holds one.
fn take_out_buffer(session: &mut Session) {
    if session.out.capacity() == 0 {
        session.out = spare::take();
    }
}

/// Whether the connection is likely to stay quiet after this write (nothing queued for it),
/// so the write buffer is better given back than kept.
fn idle_after_write(session: &Session) -> bool {
    session.out.capacity() > 0 && session.queued() == 0
}

/// Decodes and handles every complete packet in `buf`, in groups, so that a burst of
/// publishes is stored with one append.
async fn handle_buffered(
    session: &mut Session,
    buf: &mut BytesMut,
    version: ProtocolVersion,
    max: usize,
) -> Result<Vec<Arc<SessionShared>>, Ending> {
    let mut backlog = Vec::new();
    loop {
        let mut packets = Vec::new();
        let mut failed = None;
        while packets.len() < MAX_PACKETS_PER_ROUND {
            match wire::decode(buf, version, max) {
                Ok(Some(p)) => packets.push(p),
                Ok(None) => break,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        let full = packets.len() == MAX_PACKETS_PER_ROUND;
        // Packets before a bad one are still handled: they were valid and may be acknowledged.
        for s in session.handle(packets).await? {
            if !backlog.iter().any(|b| Arc::ptr_eq(b, &s)) {
                backlog.push(s);
            }
        }
        if let Some(e) = failed {
            return Err(Ending::server(e.reason_code(), e.to_string()));
        }
        if !full {
            return Ok(backlog);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    /// An idle client costs its boxed `Session` and the shared session handle, and until it is
    /// dormant its connection future. These bounds keep a change from quietly multiplying that
    /// (the future was 6.4 KB before the CONNECT exchange and the closing were boxed, the
    /// session 504 B before its aliases were boxed, its copies of the client id and state were
    /// dropped and a read's publishes moved to a local of `Session::handle`).
    #[tokio::test]
    async fn an_idle_connection_stays_small() {
        let dir = tempfile::tempdir().expect("temp dir");
        let meta = switchboard_router::MetaStore::open(dir.path())
            .await
            .expect("meta");
        let storage = Arc::new(switchboard_memory::MemoryStorage::new());
        let router = switchboard_router::Router::new(meta, storage);
        let metrics = crate::metrics::MqttMetrics::unregistered().expect("metrics");
        let broker = crate::broker::Broker::start(
            router,
            Default::default(),
            metrics,
            Default::default(),
            Default::default(),
        )
        .await
        .expect("broker");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let slot = std::sync::Arc::new(tokio::sync::Semaphore::new(1))
            .try_acquire_owned()
            .expect("a permit");
        let connection = super::serve_connection(&broker, super::Io::Tcp(stream), addr, slot);
        let future = std::mem::size_of_val(&connection);
        assert!(future <= 1408, "connection future is {future} bytes");
        let session = std::mem::size_of::<crate::session::Session>();
        assert!(session <= 200, "Session is {session} bytes");
        let shared = std::mem::size_of::<crate::broker::SessionShared>();
        assert!(shared <= 200, "SessionShared is {shared} bytes");
    }
}
