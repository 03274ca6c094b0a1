//! The per-connection AMQP state machine: the handshake (start, tune, open), channels, and
//! every class's methods, driven by decoded frames and by deliveries queues push into the
//! connection's outbox. It writes the frames to send into [`Session::out`]; no sockets here:
//! the connection loop (`conn`) reads, decodes, calls in and writes out.

mod basic;
mod channel;
mod declare;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use amq_protocol::protocol::{AMQPClass, access, channel as chan, connection};
use amq_protocol::types::AMQPValue;
use bytes::BytesMut;
use switchboard_router::now_ms;

use crate::broker::append::PendingAppends;
use crate::broker::outbox::{AckTarget, ChannelShared, ConnShared, Outgoing, OutgoingKind};
use crate::broker::{AmqpBroker, Backlogged, QueueHandle, VHost};
use crate::error::AmqpError;
use crate::queue::{ChannelKey, OnCancel};
use crate::wire::{
    self, AMQPFrame, Assembly, FRAME_MIN_SIZE, WireError, encode_frame, out, parse_sasl_response,
};
use crate::{ErrorScope, ReplyCode};
use channel::{Channel, add_unique};

/// Outbox items written per pump round before the connection loop gets to read again.
const PUMP_CHUNK: usize = 256;
/// Bytes of pending output after which a pump round stops, so a slow client applies
/// back-pressure instead of growing the buffer.
const PUMP_BYTES: usize = 1 << 20;

/// Where the connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// `connection.start` sent.
    AwaitStartOk,
    /// `connection.tune` sent.
    AwaitTuneOk,
    /// Tuned; waiting for `connection.open`.
    AwaitOpen,
    Open,
    /// The server sent `connection.close` and waits for `close-ok`.
    Closing,
    /// Done: the socket is to be closed once `out` is written.
    Closed,
}

pub struct Session {
    broker: Arc<AmqpBroker>,
    conn: Arc<ConnShared>,
    peer: SocketAddr,
    phase: Phase,
    user: String,
    frame_max: u32,
    channel_max: u16,
    heartbeat: u16,
    vhost: Option<Arc<VHost>>,
    /// The client announced `consumer_cancel_notify`: it understands a server `basic.cancel`.
    cancel_notify: bool,
    /// Looked up for every frame, so hashed with foldhash (seeded) rather than SipHash: the
    /// keys are the client's channel numbers, at most `channel_max` of them.
    channels: HashMap<u16, Channel, foldhash::fast::RandomState>,
    /// Partitions that persistent messages of the current read were appended to, unsynced.
    unsynced: Vec<switchboard_model::TopicPartition>,
    /// Queues that publishes of the current read left above their high-water mark.
    backlogged: Backlogged,
    /// Copies of this round's publishes for durable queues, appended together
    /// ([`Session::append_pending`]).
    pending: PendingAppends,
    /// Queues that acks and rejects of this round settled, to dispatch at its end.
    settled: Vec<Arc<QueueHandle>>,
    /// Deliveries an ack takes from its channel (kept to reuse the allocation).
    taken: Vec<(u64, channel::Unacked)>,
    /// Where deliveries' properties are encoded (kept to reuse the allocation).
    scratch: Vec<u8>,
    opened: bool,
    /// Encoded frames to write to the client.
    pub out: BytesMut,
}

impl Session {
    /// A session for a client that sent a valid protocol header: `connection.start` is
    /// queued in `out`.
    pub fn new(broker: Arc<AmqpBroker>, peer: SocketAddr) -> Self {
        let conn = ConnShared::new(broker.next_id());
        let mut s = Self {
            broker,
            conn,
            peer,
            phase: Phase::AwaitStartOk,
            user: String::new(),
            frame_max: FRAME_MIN_SIZE,
            channel_max: 0,
            heartbeat: 0,
            vhost: None,
            cancel_notify: false,
            channels: HashMap::default(),
            unsynced: Vec::new(),
            backlogged: Backlogged::default(),
            pending: PendingAppends::default(),
            settled: Vec::new(),
            taken: Vec::new(),
            scratch: Vec::new(),
            opened: false,
            out: BytesMut::new(),
        };
        s.send(0, out::connection_start(&out::ServerProperties::default()));
        s
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The frame size limit for decoding what the client sends: 4096 until tuned (§4.2.3).
    pub fn frame_max(&self) -> u32 {
        self.frame_max
    }

    /// The negotiated heartbeat interval, once tuned; `None` when disabled.
    pub fn heartbeat(&self) -> Option<Duration> {
        (self.heartbeat > 0).then(|| Duration::from_secs(u64::from(self.heartbeat)))
    }

    /// Woken when queues push deliveries for this connection, and (`flow`) when queues that
    /// paused it drained.
    pub fn conn(&self) -> &Arc<ConnShared> {
        &self.conn
    }

    /// Flow control (`broker::flow`): whether the connection should stop reading because
    /// queues it published into hold too large a backlog. Asked after each read, and again
    /// when `conn().flow` wakes the paused connection; each queue that holds it back wakes it.
    pub fn held_back(&mut self) -> bool {
        if self.phase != Phase::Open {
            self.backlogged.clear();
            return false;
        }
        let flow = self.broker.settings.flow;
        self.backlogged.holds(&self.conn, &flow)
    }

    pub fn metrics(&self) -> &crate::AmqpMetrics {
        &self.broker.metrics
    }

    /// The longest a flow-control pause lasts.
    pub fn max_pause(&self) -> Duration {
        self.broker.settings.flow.max_pause
    }

    /// A pause reached [`Session::max_pause`]: reading resumes whatever the queues hold.
    pub fn pause_over(&mut self) {
        self.backlogged.clear();
    }

    fn send(&mut self, channel: u16, method: AMQPClass) {
        if let Err(e) = encode_frame(&AMQPFrame::Method(channel, method), &mut self.out) {
            tracing::warn!(error = %e, "cannot encode a frame");
        }
    }

    /// Handles the frames of one read, then ends the round ([`Session::end_round`]).
    pub async fn handle(&mut self, frames: Vec<AMQPFrame>) {
        for frame in frames {
            if matches!(self.phase, Phase::Closed) {
                break;
            }
            self.handle_frame(frame).await;
        }
        self.end_round().await;
    }

    /// After a group of frames: the queues that acks and rejects of the group settled deliver
    /// into the credit that freed up, once for the group rather than once per ack, and the
    /// publishes of the group are confirmed.
    pub async fn end_round(&mut self) {
        self.append_pending().await;
        self.dispatch_settled().await;
        self.flush_confirms().await;
    }

    /// Handles one frame. Call [`Session::end_round`] after a group of them.
    pub async fn handle_frame(&mut self, frame: AMQPFrame) {
        if self.phase == Phase::Closed {
            return;
        }
        if self.phase == Phase::Closing {
            // §2.2.4: after sending close, only close and close-ok matter.
            if let AMQPFrame::Method(0, AMQPClass::Connection(m)) = frame {
                match m {
                    connection::AMQPMethod::CloseOk(_) => self.phase = Phase::Closed,
                    connection::AMQPMethod::Close(_) => {
                        self.send(0, out::connection_close_ok());
                        self.phase = Phase::Closed;
                    }
                    _ => {}
                }
            }
            return;
        }
        if !self.pending.is_empty() && !keeps_appends_held(&frame) {
            // What this frame does may look at a queue: its held copies go in first.
            self.append_pending().await;
        }
        let result = match frame {
            AMQPFrame::Heartbeat => Ok(()),
            AMQPFrame::Method(0, method) => self.on_connection_method(method).await,
            AMQPFrame::Method(_, _) | AMQPFrame::Header(..) | AMQPFrame::Body(..)
                if self.phase != Phase::Open =>
            {
                Err(AmqpError::connection(
                    ReplyCode::CommandInvalid,
                    "channel frame before the connection is open",
                ))
            }
            AMQPFrame::Method(ch, method) => self.on_channel_method(ch, method).await,
            AMQPFrame::Header(ch, header) => self.on_content(ch, |a| a.on_header(header)).await,
            AMQPFrame::Body(ch, body) => self.on_content(ch, |a| a.on_body(&body)).await,
            AMQPFrame::ProtocolHeader(_) | AMQPFrame::InvalidHeartbeat(_) => Err(
                AmqpError::connection(ReplyCode::FrameError, "unexpected frame"),
            ),
        };
        if let Err(e) = result {
            self.fail(e).await;
        }
    }

    /// Turns an error into `channel.close` or `connection.close`.
    async fn fail(&mut self, e: AmqpError) {
        let channel = e.channel_hint;
        match (e.scope, channel) {
            (ErrorScope::Channel, Some(ch)) if self.channels.contains_key(&ch) => {
                tracing::debug!(channel = ch, error = %e, "channel exception");
                self.broker.metrics.channel_errors.inc();
                self.send(ch, out::channel_close(e.code, &e.detail, e.class_method));
                if let Some(mut c) = self.channels.remove(&ch) {
                    self.release_channel(&mut c).await;
                    c.closing = true;
                    self.channels.insert(ch, c);
                }
            }
            _ => self.connection_error(e),
        }
    }

    /// Sends `connection.close` for a connection exception; the loop waits for `close-ok`.
    pub fn connection_error(&mut self, e: AmqpError) {
        tracing::info!(peer = %self.peer, error = %e, "closing connection");
        self.broker.metrics.closed_by_server.inc();
        self.send(0, out::connection_close(e.code, &e.detail, e.class_method));
        self.phase = Phase::Closing;
    }

    /// A frame that could not be decoded: connection exception with the wire error's code.
    pub fn decode_error(&mut self, e: WireError) {
        if self.phase == Phase::Closing || self.phase == Phase::Closed {
            self.phase = Phase::Closed;
            return;
        }
        self.connection_error(e.into());
    }

    /// The server closes the connection (shutdown: 320 CONNECTION_FORCED; missed heartbeats).
    pub fn server_close(&mut self, code: ReplyCode, detail: &str) {
        if matches!(self.phase, Phase::Closing | Phase::Closed) {
            return;
        }
        self.connection_error(AmqpError::connection(code, detail));
    }

    async fn on_connection_method(&mut self, method: AMQPClass) -> Result<(), AmqpError> {
        let class_method = (method.get_amqp_class_id(), method.get_amqp_method_id());
        let AMQPClass::Connection(m) = method else {
            return Err(AmqpError::connection(
                ReplyCode::CommandInvalid,
                "only connection methods are allowed on channel 0",
            ));
        };
        use connection::AMQPMethod as M;
        match (self.phase, m) {
            (Phase::AwaitStartOk, M::StartOk(s)) => self.on_start_ok(s),
            (Phase::AwaitTuneOk, M::TuneOk(t)) => self.on_tune_ok(t),
            (Phase::AwaitOpen, M::Open(o)) => self.on_open(&o),
            (_, M::Close(_)) => {
                self.close_all_channels().await;
                self.send(0, out::connection_close_ok());
                self.phase = Phase::Closed;
                Ok(())
            }
            (_, M::CloseOk(_)) => {
                self.phase = Phase::Closed;
                Ok(())
            }
            (Phase::Open, M::UpdateSecret(_)) => {
                self.send(
                    0,
                    AMQPClass::Connection(M::UpdateSecretOk(connection::UpdateSecretOk {})),
                );
                Ok(())
            }
            // connection.blocked / unblocked from a client carry no meaning for the server.
            (Phase::Open, M::Blocked(_) | M::Unblocked(_)) => Ok(()),
            (_, _) => Err(AmqpError::connection(
                ReplyCode::CommandInvalid,
                "connection method not expected now",
            )
            .at(class_method)),
        }
    }

    fn on_start_ok(&mut self, s: connection::StartOk) -> Result<(), AmqpError> {
        let at = (10, 11);
        let creds = parse_sasl_response(s.mechanism.as_str(), s.response.as_bytes())
            .map_err(|e| AmqpError::from(e).at(at))?;
        let loopback = self.peer.ip().is_loopback();
        if !self
            .broker
            .check_credentials(&creds.username, &creds.password, loopback)
        {
            self.broker.metrics.connections_refused.inc();
            // RabbitMQ's authentication_failure_close: a 403 close rather than a silent drop.
            return Err(AmqpError::connection(
                ReplyCode::AccessRefused,
                format!(
                    "Login was refused using authentication mechanism {}. For details see the \
                     broker logfile.",
                    s.mechanism.as_str()
                ),
            )
            .at(at));
        }
        self.user = creds.username;
        if let Some(AMQPValue::FieldTable(caps)) = s.client_properties.inner().get("capabilities") {
            self.cancel_notify = matches!(
                caps.inner().get("consumer_cancel_notify"),
                Some(AMQPValue::Boolean(true))
            );
        }
        let heartbeat = u16::try_from(self.broker.settings.heartbeat.as_secs()).unwrap_or(u16::MAX);
        self.send(
            0,
            out::connection_tune(
                self.broker.settings.channel_max,
                self.broker.settings.frame_max,
                heartbeat,
            ),
        );
        self.phase = Phase::AwaitTuneOk;
        Ok(())
    }

    /// The client's `tune-ok` holds the values it settled on (each the lower non-zero of
    /// ours and its own); values above ours are refused as RabbitMQ refuses them.
    fn on_tune_ok(&mut self, t: connection::TuneOk) -> Result<(), AmqpError> {
        let settings = &self.broker.settings;
        let not_allowed =
            |what: String| Err(AmqpError::connection(ReplyCode::NotAllowed, what).at((10, 31)));
        let frame_max = if t.frame_max == 0 {
            settings.frame_max
        } else {
            t.frame_max
        };
        if frame_max < FRAME_MIN_SIZE {
            return not_allowed(format!("frame_max={frame_max} < {FRAME_MIN_SIZE} min size"));
        }
        if settings.frame_max != 0 && frame_max > settings.frame_max {
            return not_allowed(format!(
                "frame_max={frame_max} > {} max size",
                settings.frame_max
            ));
        }
        let channel_max = if t.channel_max == 0 {
            settings.channel_max
        } else {
            t.channel_max
        };
        if settings.channel_max != 0 && channel_max > settings.channel_max {
            return not_allowed(format!(
                "channel_max={channel_max} > {} max",
                settings.channel_max
            ));
        }
        self.frame_max = frame_max;
        self.channel_max = if channel_max == 0 {
            u16::MAX
        } else {
            channel_max
        };
        self.heartbeat = t.heartbeat;
        self.phase = Phase::AwaitOpen;
        Ok(())
    }

    fn on_open(&mut self, o: &connection::Open) -> Result<(), AmqpError> {
        let name = o.virtual_host.as_str();
        let Some(vhost) = self.broker.vhost(name) else {
            self.broker.metrics.connections_refused.inc();
            return Err(AmqpError::connection(
                ReplyCode::NotAllowed,
                format!("vhost '{name}' not found"),
            )
            .at((10, 40)));
        };
        self.vhost = Some(vhost.clone());
        self.send(0, out::connection_open_ok());
        self.phase = Phase::Open;
        self.opened = true;
        self.broker.connection_opened();
        self.broker.metrics.connections.inc();
        Ok(())
    }

    fn vhost(&self) -> Result<Arc<VHost>, AmqpError> {
        self.vhost
            .clone()
            .ok_or_else(|| AmqpError::connection(ReplyCode::CommandInvalid, "no vhost open"))
    }

    fn key(&self, channel: u16) -> ChannelKey {
        ChannelKey {
            connection: self.conn.id,
            channel,
        }
    }

    async fn on_channel_method(&mut self, ch: u16, method: AMQPClass) -> Result<(), AmqpError> {
        let class_method = (method.get_amqp_class_id(), method.get_amqp_method_id());
        wire::check_client_method(&method)?;
        if let AMQPClass::Channel(chan::AMQPMethod::Open(_)) = method {
            return self.open_channel(ch);
        }
        let Some(channel) = self.channels.get_mut(&ch) else {
            return Err(AmqpError::connection(
                ReplyCode::ChannelError,
                format!("expected 'channel.open' on channel {ch}"),
            )
            .at(class_method));
        };
        if channel.closing {
            match method {
                AMQPClass::Channel(chan::AMQPMethod::CloseOk(_)) => {
                    self.channels.remove(&ch);
                }
                AMQPClass::Channel(chan::AMQPMethod::Close(_)) => {
                    self.send(ch, out::channel_close_ok());
                    self.channels.remove(&ch);
                }
                _ => {}
            }
            return Ok(());
        }
        let method = match channel.assembler.on_method(method)? {
            Assembly::Method(m) => m,
            Assembly::Pending => return Ok(()),
            Assembly::Complete(msg) => return self.on_publish(ch, *msg).await,
        };
        self.dispatch(ch, method)
            .await
            .map_err(|e| e.at(class_method).on_channel(ch))
    }

    async fn on_content(
        &mut self,
        ch: u16,
        step: impl FnOnce(&mut wire::ContentAssembler) -> Result<Assembly, WireError>,
    ) -> Result<(), AmqpError> {
        let Some(channel) = self.channels.get_mut(&ch) else {
            return Err(AmqpError::connection(
                ReplyCode::ChannelError,
                format!("content frame on channel {ch}, which is not open"),
            ));
        };
        if channel.closing {
            return Ok(());
        }
        match step(&mut channel.assembler).map_err(|e| AmqpError::from(e).on_channel(ch))? {
            Assembly::Complete(msg) => self.on_publish(ch, *msg).await,
            _ => Ok(()),
        }
    }

    fn open_channel(&mut self, ch: u16) -> Result<(), AmqpError> {
        if ch == 0 || ch > self.channel_max {
            return Err(AmqpError::connection(
                ReplyCode::ChannelError,
                format!("channel {ch} is out of range 1..{}", self.channel_max),
            )
            .at((20, 10)));
        }
        if self.channels.contains_key(&ch) {
            return Err(AmqpError::connection(
                ReplyCode::ChannelError,
                format!("second 'channel.open' seen on channel {ch}"),
            )
            .at((20, 10)));
        }
        let shared = ChannelShared::new(self.key(ch), self.conn.clone());
        self.channels.insert(
            ch,
            Channel::new(shared, self.broker.settings.max_message_size),
        );
        self.broker.metrics.channels.inc();
        self.send(ch, out::channel_open_ok());
        Ok(())
    }

    async fn dispatch(&mut self, ch: u16, method: AMQPClass) -> Result<(), AmqpError> {
        match method {
            AMQPClass::Channel(m) => self.on_channel_class(ch, m).await,
            AMQPClass::Access(access::AMQPMethod::Request(_)) => {
                self.send(
                    ch,
                    AMQPClass::Access(access::AMQPMethod::RequestOk(access::RequestOk {})),
                );
                Ok(())
            }
            AMQPClass::Exchange(m) => self.on_exchange(ch, m).await,
            AMQPClass::Queue(m) => self.on_queue(ch, m).await,
            AMQPClass::Basic(m) => self.on_basic(ch, m).await,
            AMQPClass::Confirm(m) => self.on_confirm(ch, m),
            AMQPClass::Tx(m) => self.on_tx(ch, m).await,
            other => Err(AmqpError::connection(
                ReplyCode::CommandInvalid,
                format!(
                    "method {}.{} is not accepted here",
                    other.get_amqp_class_id(),
                    other.get_amqp_method_id()
                ),
            )),
        }
    }

    async fn on_channel_class(&mut self, ch: u16, m: chan::AMQPMethod) -> Result<(), AmqpError> {
        match m {
            chan::AMQPMethod::Close(_) => {
                if let Some(mut c) = self.channels.remove(&ch) {
                    self.release_channel(&mut c).await;
                }
                self.send(ch, out::channel_close_ok());
                Ok(())
            }
            // A close-ok we did not ask for: nothing to do.
            chan::AMQPMethod::CloseOk(_) => Ok(()),
            chan::AMQPMethod::Flow(f) => {
                let queues = {
                    let c = self.channel(ch)?;
                    c.shared.set_flow(f.active);
                    c.consumed_queues()
                };
                self.send(
                    ch,
                    AMQPClass::Channel(chan::AMQPMethod::FlowOk(chan::FlowOk { active: f.active })),
                );
                if f.active {
                    let vhost = self.vhost()?;
                    self.broker.settle(&vhost, queues).await;
                }
                Ok(())
            }
            _ => Err(declare::unexpected()),
        }
    }

    fn channel(&mut self, ch: u16) -> Result<&mut Channel, AmqpError> {
        self.channels.get_mut(&ch).ok_or_else(|| {
            AmqpError::connection(ReplyCode::ChannelError, format!("channel {ch} is not open"))
        })
    }

    /// Releases what a closing channel holds: its consumers go (auto-delete queues with
    /// them), and every delivery it held returns to its queue, redelivered.
    async fn release_channel(&mut self, c: &mut Channel) {
        c.shared.close();
        c.assembler.reset();
        self.broker.metrics.channels.dec();
        let now = now_ms().max(0) as u64;
        let Ok(vhost) = self.vhost() else { return };
        let mut queues: Vec<Arc<QueueHandle>> = Vec::new();
        for (_, consumer) in c.consumers.drain() {
            if let Some(stream) = &consumer.stream {
                stream.stop();
            }
            if consumer
                .queue
                .remove_consumer(consumer.id, OnCancel::KeepUnacked, now)
                && let Err(e) = self.broker.remove_queue(&vhost, &consumer.queue).await
            {
                tracing::warn!(queue = consumer.queue.name(), error = %e, "auto-delete failed");
            }
            add_unique(&mut queues, &consumer.queue);
        }
        for (_, u) in std::mem::take(&mut c.unacked) {
            if let AckTarget::Queue(q) = u.target {
                add_unique(&mut queues, &q);
            }
        }
        for q in &queues {
            let mut inner = q.lock();
            if inner.queue.close_channel(c.shared.key, now) > 0 {
                inner.dirty = true;
            }
        }
        self.broker.settle(&vhost, queues).await;
    }

    async fn close_all_channels(&mut self) {
        let channels: Vec<u16> = self.channels.keys().copied().collect();
        for ch in channels {
            if let Some(mut c) = self.channels.remove(&ch)
                && !c.closing
            {
                self.release_channel(&mut c).await;
            }
        }
    }

    /// The connection is gone: channels release what they held and exclusive queues go.
    pub async fn finish(&mut self) {
        // Publishes the client sent before it went are stored, confirmed or not.
        self.append_pending().await;
        self.close_all_channels().await;
        // Undelivered items hold their channel, which holds this outbox: drop them to break
        // the cycle (their queues requeued the messages when the channels closed).
        drop(self.conn.take(usize::MAX));
        if self.opened {
            self.broker.drop_exclusive_queues(self.conn.id).await;
            self.broker.metrics.connections.dec();
            self.broker.connection_closed();
            self.opened = false;
        }
    }

    /// Writes what queues pushed for this connection.
    pub fn pump(&mut self) {
        loop {
            let items = self.conn.take(PUMP_CHUNK);
            if items.is_empty() {
                return;
            }
            for item in items {
                self.write_outgoing(item);
            }
            if self.out.len() > PUMP_BYTES {
                if !self.conn.is_empty() {
                    // Come back after the loop has written and read.
                    self.conn.notify.notify_one();
                }
                return;
            }
        }
    }

    fn write_outgoing(&mut self, item: Outgoing) {
        let ch = item.channel.key.channel;
        let frame_max = self.frame_max;
        let cancel_notify = self.cancel_notify;
        let Some(c) = self.channels.get_mut(&ch) else {
            return;
        };
        // A delivery for a closed (maybe reopened) channel was requeued when it closed.
        if c.closing || !Arc::ptr_eq(&c.shared, &item.channel) {
            return;
        }
        match item.kind {
            OutgoingKind::Deliver {
                consumer_tag,
                delivery_tag,
                redelivered,
                message,
                ack,
                counted,
                stream_offset: _,
            } => {
                let deliver = wire::Deliver {
                    consumer_tag: &consumer_tag,
                    delivery_tag,
                    redelivered,
                    exchange: &message.exchange,
                    routing_key: &message.routing_key,
                };
                if let Err(e) = wire::encode_delivery(
                    ch,
                    &deliver,
                    &message.properties,
                    &message.body,
                    frame_max,
                    &mut self.scratch,
                    &mut self.out,
                ) {
                    tracing::warn!(error = %e, "cannot encode a delivery");
                    return;
                }
                if let Some(target) = ack {
                    c.unacked
                        .insert(delivery_tag, channel::Unacked { target, counted });
                }
                self.broker.metrics.messages_delivered.inc();
            }
            OutgoingKind::Cancel { consumer_tag } => {
                if let Some(consumer) = c.consumers.remove(&*consumer_tag) {
                    if let Some(stream) = &consumer.stream {
                        stream.stop();
                    }
                    if cancel_notify && let Ok(m) = out::basic_cancel(&consumer_tag) {
                        self.send(ch, m);
                    }
                }
            }
        }
    }
}

/// Frames that leave the round's held appends held: the parts of a publish, acknowledgements
/// (they settle messages already delivered, never a held one) and heartbeats.
fn keeps_appends_held(frame: &AMQPFrame) -> bool {
    match frame {
        AMQPFrame::Heartbeat | AMQPFrame::Header(..) | AMQPFrame::Body(..) => true,
        AMQPFrame::Method(_, AMQPClass::Basic(m)) => {
            use amq_protocol::protocol::basic::AMQPMethod;
            matches!(
                m,
                AMQPMethod::Publish(_)
                    | AMQPMethod::Ack(_)
                    | AMQPMethod::Nack(_)
                    | AMQPMethod::Reject(_)
            )
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests;
