//! The per-connection MQTT state machine: driven by decoded packets and by deliveries queued for
//! the session, it writes the packets to send into [`Session::out`]. No sockets here: the
//! connection loop (`conn`) reads, decodes, calls in, and writes out.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use switchboard_model::TopicPartition;
use switchboard_router::{RouterError, now_ms};

use crate::broker::{Broker, Delivery, Inflight, SessionShared, SessionState, Subscription};
use crate::mapping::Message;
use crate::topic::{self, FilterSpec};
use crate::wire::{
    self, AckProperties, ConnAck, ConnAckProperties, Connect, Disconnect, DisconnectProperties,
    Packet, ProtocolVersion, PubResp, Publish, QoS, SubAck, Subscribe, UnsubAck, Unsubscribe,
    reason,
};

/// Deliveries taken from the session's queue per round, so one busy session cannot hold the
/// queue lock for long.
const PUMP_CHUNK: usize = 256;

/// Why a connection ends, decided by the session or the connection loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The client sent DISCONNECT; `with_will` for MQTT 5 reason 0x04.
    ClientDisconnect { with_will: bool },
    /// The socket closed or failed without DISCONNECT.
    Dropped,
    /// The server closes the connection: a protocol error, keep-alive timeout, takeover or
    /// shutdown. MQTT 5 clients get a DISCONNECT with `reason` first.
    Server { reason: u8, why: String },
}

impl Ending {
    pub fn server(reason: u8, why: impl Into<String>) -> Self {
        Self::Server {
            reason,
            why: why.into(),
        }
    }

    fn publishes_will(&self) -> bool {
        match self {
            Self::ClientDisconnect { with_will } => *with_will,
            Self::Dropped => true,
            // A server shutting down leaves wills to the next start (MQTT 5 §3.1.2.5 lists
            // only client-side failures); every other server-side close publishes it.
            Self::Server { reason, .. } => *reason != reason::SERVER_SHUTTING_DOWN,
        }
    }
}

/// A refused CONNECT: the CONNACK to send before closing.
#[derive(Debug)]
pub struct Refused {
    pub connack: ConnAck,
    pub version: ProtocolVersion,
    pub why: String,
}

#[derive(Default)]
struct Aliases {
    incoming: HashMap<u16, String>,
    outgoing: HashMap<String, u16>,
}

/// The publishes of one read, checked and waiting to be stored together; local to
/// [`Session::handle`], so an idle session carries none of it.
#[derive(Default)]
struct Round {
    /// Acknowledgements owed, in the order the publishes came.
    acks: Vec<Staged>,
    /// How many of `acks` count against Receive Maximum (see [`Staged::owed`]).
    owed: usize,
    msgs: Vec<Message>,
    /// QoS 2 packet ids this read added to `incoming_qos2`: if the read fails before they are
    /// stored, they are taken out again, or a resend would be acknowledged as stored.
    fresh_qos2: Vec<u16>,
    /// Partitions to sync before acknowledging resends of QoS 2 publishes stored earlier: the
    /// first copy's own acknowledgement may have been waiting for its fsync when the previous
    /// connection ended.
    resync: Vec<TopicPartition>,
    /// Subscribers this read's publishes left with a backlog that holds this connection back
    /// (`broker::flow`).
    backlog: Vec<Arc<SessionShared>>,
}

impl Round {
    fn push(&mut self, s: Staged) {
        self.owed += usize::from(s.owed());
        self.acks.push(s);
    }
}

/// An MQTT publish received, waiting for its acknowledgement (with `code`) to be sent.
struct Staged {
    qos: QoS,
    packet_id: u16,
    code: u8,
}

impl Staged {
    /// Whether it counts against Receive Maximum on its own: QoS 1, and QoS 2 refused (an
    /// accepted QoS 2 publish is counted in `incoming_qos2` until PUBREL).
    fn owed(&self) -> bool {
        self.qos == QoS::AtLeastOnce
            || (self.qos == QoS::ExactlyOnce && self.code != reason::SUCCESS)
    }
}

/// Acknowledgements of stored QoS 1 and 2 publishes waiting for the fsync that makes them
/// durable. The connection keeps reading meanwhile: publishes that arrive during an fsync are
/// stored (and delivered) at once and share the next one. Acknowledgements leave in the order
/// the publishes came (MQTT 5 §4.6), so one sync runs at a time and later ones wait for it.
#[derive(Default)]
struct Pipeline {
    /// Covered by the sync in flight; empty when none is.
    syncing: Vec<Staged>,
    /// Received after it started.
    waiting: Vec<Staged>,
    /// Partitions written since the sync in flight started.
    dirty: Vec<TopicPartition>,
    /// How many of `syncing` and `waiting` count against Receive Maximum.
    owed: usize,
}

/// A sync of the partitions a session wrote, run by the connection loop beside its reads.
pub type SyncJob = Pin<Box<dyn Future<Output = Result<(), RouterError>> + Send>>;

pub struct Session {
    broker: Arc<Broker>,
    shared: Arc<SessionShared>,
    /// This connection's generation of the session (see [`SessionShared::is_kicked`]).
    generation: u64,
    state: SessionState,
    version: ProtocolVersion,
    /// Keep-alive the connection loop enforces (×1.5), in seconds; 0 = none.
    pub keep_alive: u16,
    client_receive_maximum: u16,
    client_max_packet_size: u32,
    client_alias_maximum: u16,
    /// Topic aliases in both directions (MQTT 5); boxed, as most clients use none.
    aliases: Option<Box<Aliases>>,
    /// The will message and its delay; boxed, as most clients have none and every idle
    /// connection's memory counts.
    will: Option<Box<(Message, u32)>>,
    /// Whether MQTT 5 reason strings may be sent (Request Problem Information).
    problem_info: bool,
    /// Acknowledgements waiting for an fsync; boxed, as idle and QoS 0 clients have none.
    pipeline: Option<Box<Pipeline>>,
    /// When the session's position is next stored: set when a persistent session finishes
    /// acknowledging a message, cleared by [`Session::checkpoint`].
    checkpoint_due: Option<tokio::time::Instant>,
    /// Encoded packets to write to the client.
    pub out: BytesMut,
}

impl Session {
    /// Handles CONNECT (MQTT 5 §3.1.4): checks it, opens or resumes the session, writes CONNACK
    /// and whatever the resumed session still owes the client.
    pub async fn connect(broker: &Arc<Broker>, c: Connect) -> Result<Self, Refused> {
        let v = c.version;
        let refuse = |code_v5: u8, code_v3: u8, why: &str| Refused {
            connack: ConnAck {
                session_present: false,
                code: if v.is_v5() { code_v5 } else { code_v3 },
                properties: ConnAckProperties::default(),
            },
            version: v,
            why: why.to_owned(),
        };
        let mut client_id = c.client_id.clone();
        let mut assigned = None;
        if client_id.is_empty() {
            // 3.1 requires an id; 3.1.1 allows an empty one only with a clean session.
            if v == ProtocolVersion::V31 || (v == ProtocolVersion::V311 && !c.clean_start) {
                return Err(refuse(
                    reason::CLIENT_IDENTIFIER_NOT_VALID,
                    reason::v3::IDENTIFIER_REJECTED,
                    "empty client id",
                ));
            }
            client_id = broker.assign_client_id();
            assigned = Some(client_id.clone());
        }
        if c.properties.authentication_method.is_some() {
            return Err(refuse(
                reason::BAD_AUTHENTICATION_METHOD,
                reason::v3::NOT_AUTHORIZED,
                "enhanced authentication is not supported",
            ));
        }
        if !broker.check_credentials(c.username.as_deref(), c.password.as_deref()) {
            return Err(if c.username.is_none() {
                refuse(
                    reason::NOT_AUTHORIZED,
                    reason::v3::NOT_AUTHORIZED,
                    "anonymous access is disabled",
                )
            } else {
                refuse(
                    reason::BAD_USER_NAME_OR_PASSWORD,
                    reason::v3::BAD_USER_NAME_OR_PASSWORD,
                    "bad user name or password",
                )
            });
        }
        let will = match &c.will {
            Some(w) => {
                if topic::validate_name(&w.topic).is_err() {
                    return Err(refuse(
                        reason::TOPIC_NAME_INVALID,
                        reason::v3::NOT_AUTHORIZED,
                        "invalid will topic",
                    ));
                }
                let now = now_ms();
                let mut properties = w.properties.clone();
                let expiry = properties.message_expiry_interval.take();
                let msg = Message {
                    topic: w.topic.clone(),
                    payload: w.payload.clone(),
                    qos: w.qos,
                    retain: w.retain,
                    properties,
                    expiry_at_ms: expiry.map(|s| now + i64::from(s) * 1000),
                    publisher: Some(client_id.clone()),
                    origin: None,
                    timestamp_ms: now,
                };
                Some(Box::new((
                    msg,
                    if v.is_v5() { w.delay_interval } else { 0 },
                )))
            }
            None => None,
        };
        let settings = &broker.settings;
        let requested_expiry = if v.is_v5() {
            c.properties.session_expiry_interval.unwrap_or(0)
        } else if c.clean_start {
            0
        } else {
            u32::MAX
        };
        let expiry = requested_expiry.min(settings.max_session_expiry);
        let mut keep_alive = c.keep_alive;
        let mut server_keep_alive = None;
        if settings.max_keep_alive > 0
            && (keep_alive == 0 || keep_alive > settings.max_keep_alive)
            && v.is_v5()
        {
            keep_alive = settings.max_keep_alive;
            server_keep_alive = Some(keep_alive);
        }
        let opened = broker.open_session(&client_id, c.clean_start, expiry).await;
        let session_present = opened.session_present;
        let mut s = Session {
            broker: broker.clone(),
            shared: opened.shared,
            generation: opened.generation,
            state: opened.state,
            version: v,
            keep_alive,
            client_receive_maximum: c.properties.receive_maximum.unwrap_or(u16::MAX),
            client_max_packet_size: c.properties.maximum_packet_size.unwrap_or(u32::MAX),
            client_alias_maximum: c.properties.topic_alias_maximum.unwrap_or(0),
            aliases: None,
            will,
            problem_info: c.properties.request_problem_information != Some(0),
            pipeline: None,
            checkpoint_due: None,
            out: BytesMut::new(),
        };
        let properties = if v.is_v5() {
            ConnAckProperties {
                session_expiry_interval: (expiry != requested_expiry).then_some(expiry),
                receive_maximum: Some(settings.receive_maximum),
                maximum_packet_size: Some(settings.max_packet_size),
                assigned_client_identifier: assigned,
                topic_alias_maximum: Some(settings.topic_alias_maximum),
                retain_available: Some(true),
                wildcard_subscription_available: Some(true),
                subscription_identifiers_available: Some(true),
                shared_subscription_available: Some(true),
                server_keep_alive,
                ..Default::default()
            }
        } else {
            ConnAckProperties::default()
        };
        s.send(&Packet::ConnAck(ConnAck {
            session_present,
            code: reason::SUCCESS,
            properties,
        }));
        s.resend_inflight();
        s.pump();
        Ok(s)
    }

    pub fn client_id(&self) -> &str {
        &self.shared.client_id
    }

    pub fn version(&self) -> ProtocolVersion {
        self.version
    }

    /// Whether the connection must close: taken over by a new connection, or shutdown.
    pub fn is_kicked(&self) -> bool {
        self.shared.is_kicked(self.generation)
    }

    /// The session's state shared with the broker: its delivery queue, its online flag.
    pub fn shared(&self) -> &Arc<SessionShared> {
        &self.shared
    }

    /// The broker this session belongs to.
    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// Arms the alarm of this session's dormant connection; true when something already waits
    /// for it (a delivery, a kick) and it must not sleep.
    pub fn set_alarm(&self, alarm: crate::dormant::Alarm) -> bool {
        self.shared.set_alarm(alarm, self.generation)
    }

    pub fn clear_alarm(&self) {
        self.shared.clear_alarm();
    }

    /// Why the connection was kicked: a takeover unless the broker is shutting down.
    pub fn kick_reason(&self) -> Ending {
        if self.broker.cancel_token().is_cancelled() {
            Ending::server(reason::SERVER_SHUTTING_DOWN, "server shutting down")
        } else {
            Ending::server(
                reason::SESSION_TAKEN_OVER,
                "session taken over by a new connection",
            )
        }
    }

    /// Deliveries queued for this session, not yet sent.
    pub fn queued(&self) -> usize {
        self.shared.queued()
    }

    /// Woken when deliveries are queued for this session.
    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.shared.notify.notified()
    }

    /// Handles the packets decoded from one read, in order. Consecutive PUBLISH packets are
    /// stored together — one append and, for QoS 1 and 2, one sync — and acknowledged after.
    /// Returns the subscribers whose backlog holds this connection back (flow control): the
    /// caller stops reading while [`Broker::holds`] says so.
    pub async fn handle(
        &mut self,
        packets: Vec<Packet>,
    ) -> Result<Vec<Arc<SessionShared>>, Ending> {
        let mut round = Round::default();
        let handled = self.handle_round(&mut round, packets).await;
        if handled.is_err() {
            // QoS 2 publishes of this read that were never stored must not look stored to the
            // client's resend.
            for id in &round.fresh_qos2 {
                self.state.incoming_qos2.remove(id);
            }
        }
        handled?;
        self.pump();
        Ok(round.backlog)
    }

    async fn handle_round(
        &mut self,
        round: &mut Round,
        packets: Vec<Packet>,
    ) -> Result<(), Ending> {
        for p in packets {
            match p {
                Packet::Publish(p) => self.stage_publish(round, p)?,
                other => {
                    self.flush_publishes(round).await?;
                    self.handle_other(other).await?;
                }
            }
        }
        self.flush_publishes(round).await
    }

    async fn handle_other(&mut self, p: Packet) -> Result<(), Ending> {
        match p {
            Packet::PubAck(a) => {
                if self
                    .state
                    .inflight
                    .get(&a.packet_id)
                    .is_some_and(|i| i.delivery.qos == QoS::AtLeastOnce)
                {
                    self.state.inflight.remove(&a.packet_id);
                    self.acknowledged();
                }
            }
            Packet::PubRec(a) => {
                let code = match self.state.inflight.get_mut(&a.packet_id) {
                    Some(i) if i.delivery.qos == QoS::ExactlyOnce => {
                        if a.reason >= 0x80 {
                            // The client refused the message: the flow ends here (§4.3.3).
                            self.state.inflight.remove(&a.packet_id);
                            return Ok(());
                        }
                        i.released = true;
                        reason::SUCCESS
                    }
                    _ => reason::PACKET_IDENTIFIER_NOT_FOUND,
                };
                self.send(&Packet::PubRel(ack(a.packet_id, code)));
            }
            Packet::PubComp(a) => {
                if self
                    .state
                    .inflight
                    .get(&a.packet_id)
                    .is_some_and(|i| i.released)
                {
                    self.state.inflight.remove(&a.packet_id);
                    self.acknowledged();
                }
            }
            Packet::PubRel(a) => {
                let code = if self.state.incoming_qos2.remove(&a.packet_id) {
                    reason::SUCCESS
                } else {
                    reason::PACKET_IDENTIFIER_NOT_FOUND
                };
                self.send(&Packet::PubComp(ack(a.packet_id, code)));
            }
            Packet::Subscribe(s) => self.subscribe(s).await?,
            Packet::Unsubscribe(u) => self.unsubscribe(u).await,
            Packet::PingReq => self.send(&Packet::PingResp),
            Packet::Disconnect(d) => return Err(self.disconnect(d)),
            Packet::Connect(_) => {
                return Err(Ending::server(reason::PROTOCOL_ERROR, "second CONNECT"));
            }
            Packet::Auth(_) => {
                return Err(Ending::server(
                    reason::PROTOCOL_ERROR,
                    "AUTH without an authentication method",
                ));
            }
            other => {
                return Err(Ending::server(
                    reason::PROTOCOL_ERROR,
                    format!("{} is not sent by clients", other.name()),
                ));
            }
        }
        Ok(())
    }

    /// A delivery finished: a persistent session's stored position is now behind.
    fn acknowledged(&mut self) {
        if self.state.expiry_interval > 0 && self.checkpoint_due.is_none() {
            let interval = self.broker.settings.checkpoint_interval;
            self.checkpoint_due = Some(tokio::time::Instant::now() + interval);
        }
    }

    /// When [`Session::checkpoint`] should run, if it should.
    pub fn checkpoint_due(&self) -> Option<tokio::time::Instant> {
        self.checkpoint_due
    }

    /// Stores the session's position while it is connected.
    pub async fn checkpoint(&mut self) {
        self.checkpoint_due = None;
        self.broker.store_session(&self.shared, &self.state).await;
    }

    fn disconnect(&mut self, d: Disconnect) -> Ending {
        if let Some(expiry) = d.properties.session_expiry_interval {
            // §3.14.2.2.2: a session that was to end with the connection cannot be extended.
            if self.state.expiry_interval == 0 && expiry != 0 {
                return Ending::server(
                    reason::PROTOCOL_ERROR,
                    "session expiry set on DISCONNECT after 0 on CONNECT",
                );
            }
            self.state.expiry_interval = expiry.min(self.broker.settings.max_session_expiry);
        }
        Ending::ClientDisconnect {
            with_will: d.reason == reason::DISCONNECT_WITH_WILL,
        }
    }

    /// Checks a PUBLISH and queues it for storing; §3.3.4 (receiving) and §3.3.2.3.4 (aliases).
    fn stage_publish(&mut self, round: &mut Round, mut p: Publish) -> Result<(), Ending> {
        if let Some(alias) = p.properties.topic_alias.take() {
            if alias == 0 || alias > self.broker.settings.topic_alias_maximum {
                return Err(Ending::server(
                    reason::TOPIC_ALIAS_INVALID,
                    format!("topic alias {alias} out of range"),
                ));
            }
            if p.topic.is_empty() {
                match self.aliases.as_ref().and_then(|a| a.incoming.get(&alias)) {
                    Some(t) => p.topic = t.clone(),
                    None => {
                        return Err(Ending::server(
                            reason::PROTOCOL_ERROR,
                            format!("unknown topic alias {alias}"),
                        ));
                    }
                }
            } else {
                self.aliases
                    .get_or_insert_default()
                    .incoming
                    .insert(alias, p.topic.clone());
            }
        }
        if let Err(e) = topic::validate_name(&p.topic) {
            return Err(Ending::server(
                reason::TOPIC_NAME_INVALID,
                format!("invalid topic name: {e}"),
            ));
        }
        if p.qos != QoS::AtMostOnce
            && self.unacknowledged(round) >= usize::from(self.broker.settings.receive_maximum)
        {
            return Err(Ending::server(
                reason::RECEIVE_MAXIMUM_EXCEEDED,
                "more unacknowledged publishes than Receive Maximum",
            ));
        }
        if p.qos == QoS::ExactlyOnce {
            if !self.state.incoming_qos2.insert(p.packet_id) {
                // A resend of a message already stored: store nothing, acknowledge it again
                // once what was stored is durable.
                if let Ok(tp) = self.broker.partition_for(&p.topic) {
                    round.resync.push(tp);
                }
                round.push(Staged {
                    qos: p.qos,
                    packet_id: p.packet_id,
                    code: reason::SUCCESS,
                });
                return Ok(());
            }
            round.fresh_qos2.push(p.packet_id);
        }
        if p.properties.payload_format_indicator == Some(1)
            && std::str::from_utf8(&p.payload).is_err()
        {
            if p.qos == QoS::ExactlyOnce {
                self.state.incoming_qos2.remove(&p.packet_id);
            }
            return self.refuse_publish(round, &p, reason::PAYLOAD_FORMAT_INVALID);
        }
        let now = now_ms();
        let mut properties = p.properties;
        let expiry = properties.message_expiry_interval.take();
        properties.subscription_identifiers.clear();
        round.msgs.push(Message {
            topic: p.topic,
            payload: p.payload,
            qos: p.qos,
            retain: p.retain,
            properties,
            expiry_at_ms: expiry.map(|s| now + i64::from(s) * 1000),
            publisher: Some(self.shared.client_id.clone()),
            origin: None,
            timestamp_ms: now,
        });
        if p.qos != QoS::AtMostOnce {
            round.push(Staged {
                qos: p.qos,
                packet_id: p.packet_id,
                code: reason::SUCCESS,
            });
        }
        Ok(())
    }

    /// QoS 1 and 2 publishes received and not yet acknowledged (QoS 2 until PUBREL), for
    /// Receive Maximum.
    fn unacknowledged(&self, round: &Round) -> usize {
        let piped = self.pipeline.as_ref().map_or(0, |p| p.owed);
        self.state.incoming_qos2.len() + round.owed + piped
    }

    /// Answers a publish we will not store: a reason code for MQTT 5, a closed connection
    /// for 3.1.1, whose acknowledgements cannot say no.
    fn refuse_publish(&mut self, round: &mut Round, p: &Publish, code: u8) -> Result<(), Ending> {
        if !self.version.is_v5() {
            return Err(Ending::server(code, "publish refused"));
        }
        if p.qos != QoS::AtMostOnce {
            // Acknowledged in turn with the publishes before it (§4.6).
            round.push(Staged {
                qos: p.qos,
                packet_id: p.packet_id,
                code,
            });
        }
        Ok(())
    }

    /// Stores the staged publishes, then acknowledges them in the order received (§4.6): at
    /// once when nothing needs an fsync, else once the sync covering them has run
    /// ([`Session::start_sync`]).
    async fn flush_publishes(&mut self, round: &mut Round) -> Result<(), Ending> {
        if round.msgs.is_empty() && round.acks.is_empty() {
            return Ok(());
        }
        let msgs = std::mem::take(&mut round.msgs);
        let mut staged = std::mem::take(&mut round.acks);
        round.owed = 0;
        let resync = std::mem::take(&mut round.resync);
        let durable = msgs.iter().any(|m| m.qos != QoS::AtMostOnce);
        let mut written = Vec::new();
        if !msgs.is_empty() {
            match self.broker.store(msgs, &mut round.backlog).await {
                Ok(w) => {
                    written = w;
                    round.fresh_qos2.clear();
                }
                Err(e) => {
                    tracing::warn!(client_id = %self.shared.client_id, error = %e, "publish not stored");
                    if !self.version.is_v5() || staged.is_empty() {
                        return Err(Ending::server(
                            reason::IMPLEMENTATION_SPECIFIC_ERROR,
                            format!("publish not stored: {e}"),
                        ));
                    }
                    for s in &mut staged {
                        // Resends of QoS 2 publishes stored before are not part of this failure.
                        let this_read =
                            s.qos != QoS::ExactlyOnce || round.fresh_qos2.contains(&s.packet_id);
                        if s.code == reason::SUCCESS && this_read {
                            s.code = reason::IMPLEMENTATION_SPECIFIC_ERROR;
                        }
                    }
                    // Not stored: a resend must be stored, not taken for a duplicate.
                    for id in round.fresh_qos2.drain(..) {
                        self.state.incoming_qos2.remove(&id);
                    }
                }
            }
        }
        if !durable {
            written.clear();
        }
        written.extend(resync);
        let must_sync = !written.is_empty();
        if self.pipeline.is_none() && !must_sync {
            self.acknowledge(staged);
            return Ok(());
        }
        let p = self.pipeline.get_or_insert_default();
        p.owed += staged.iter().filter(|s| s.owed()).count();
        p.waiting.extend(staged);
        for tp in written {
            if !p.dirty.contains(&tp) {
                p.dirty.push(tp);
            }
        }
        Ok(())
    }

    /// Sends the acknowledgements of `staged`, in order.
    fn acknowledge(&mut self, staged: Vec<Staged>) {
        for s in staged {
            match s.qos {
                QoS::AtMostOnce => {}
                QoS::AtLeastOnce => self.send(&Packet::PubAck(ack(s.packet_id, s.code))),
                QoS::ExactlyOnce => {
                    if s.code != reason::SUCCESS {
                        self.state.incoming_qos2.remove(&s.packet_id);
                    }
                    self.send(&Packet::PubRec(ack(s.packet_id, s.code)));
                }
            }
        }
    }

    /// The next sync to run, if acknowledgements wait for one and none is running: it makes
    /// durable every partition written since the last one started. The connection loop polls
    /// it beside its reads and hands the result to [`Session::synced`].
    pub fn start_sync(&mut self) -> Option<SyncJob> {
        let p = self.pipeline.as_mut()?;
        if !p.syncing.is_empty() || p.waiting.is_empty() {
            return None;
        }
        p.syncing = std::mem::take(&mut p.waiting);
        let partitions = std::mem::take(&mut p.dirty);
        let router = self.broker.router().clone();
        Some(Box::pin(async move {
            for tp in &partitions {
                router.sync(tp).await?;
            }
            Ok(())
        }))
    }

    /// A sync from [`Session::start_sync`] has finished: its publishes are acknowledged, or the
    /// connection closes unacknowledged (the client sends them again).
    pub fn synced(&mut self, result: Result<(), RouterError>) -> Result<(), Ending> {
        if let Err(e) = result {
            tracing::warn!(client_id = %self.shared.client_id, error = %e, "publish not made durable");
            return Err(Ending::server(
                reason::IMPLEMENTATION_SPECIFIC_ERROR,
                format!("publish not stored: {e}"),
            ));
        }
        let Some(p) = self.pipeline.as_mut() else {
            return Ok(());
        };
        let done = std::mem::take(&mut p.syncing);
        p.owed = p
            .owed
            .saturating_sub(done.iter().filter(|s| s.owed()).count());
        if p.waiting.is_empty() {
            self.pipeline = None;
        }
        self.acknowledge(done);
        Ok(())
    }

    /// Whether acknowledgements wait for an fsync.
    pub fn acks_pending(&self) -> bool {
        self.pipeline.is_some()
    }

    async fn subscribe(&mut self, s: Subscribe) -> Result<(), Ending> {
        let v5 = self.version.is_v5();
        let mut reasons = Vec::with_capacity(s.filters.len());
        let id = s.properties.subscription_identifier;
        for (raw, options) in s.filters {
            let spec = match FilterSpec::parse(&raw) {
                Ok(spec) => spec,
                Err(_) => {
                    reasons.push(if v5 {
                        reason::TOPIC_FILTER_INVALID
                    } else {
                        reason::v3::SUBSCRIBE_FAILURE
                    });
                    continue;
                }
            };
            if spec.group.is_some() && options.no_local {
                return Err(Ending::server(
                    reason::PROTOCOL_ERROR,
                    "No Local on a shared subscription",
                ));
            }
            let sub = Subscription { spec, options, id };
            let existed = self.broker.add_subscription(&self.shared, &sub);
            let send_retained = sub.spec.group.is_none()
                && match options.retain_handling {
                    0 => true,
                    1 => !existed,
                    _ => false,
                };
            if send_retained {
                for m in self.broker.retained_matching(&sub.spec.filter) {
                    let d = Delivery {
                        qos: m.qos.min(options.qos),
                        msg: m,
                        retain: true,
                        subscription_ids: id.into_iter().collect(),
                        origin: None,
                    };
                    self.shared
                        .push(d, self.broker.settings.max_queued_messages);
                }
            }
            self.state.subscriptions.insert(raw, sub);
            reasons.push(options.qos as u8);
        }
        self.send(&Packet::SubAck(SubAck {
            packet_id: s.packet_id,
            reasons,
            properties: AckProperties::default(),
        }));
        self.broker.store_session(&self.shared, &self.state).await;
        Ok(())
    }

    async fn unsubscribe(&mut self, u: Unsubscribe) {
        let mut reasons = Vec::with_capacity(u.filters.len());
        for raw in u.filters {
            let removed = self.state.subscriptions.remove(&raw);
            let found = removed.is_some_and(|sub| {
                self.broker
                    .remove_subscription(&self.shared.client_id, &sub.spec)
            });
            reasons.push(if found {
                reason::SUCCESS
            } else {
                reason::NO_SUBSCRIPTION_EXISTED
            });
        }
        if !self.version.is_v5() {
            reasons.clear();
        }
        self.send(&Packet::UnsubAck(UnsubAck {
            packet_id: u.packet_id,
            reasons,
            properties: AckProperties::default(),
        }));
        self.broker.store_session(&self.shared, &self.state).await;
    }

    /// After a reconnect: unacknowledged messages again, with DUP, and PUBREL for those the
    /// client already received (§4.4).
    fn resend_inflight(&mut self) {
        let pending: Vec<(u16, Inflight)> = self
            .state
            .inflight
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        for (pid, inflight) in pending {
            if inflight.released {
                self.send(&Packet::PubRel(ack(pid, reason::SUCCESS)));
            } else {
                self.send_publish(&inflight.delivery, pid, true);
            }
        }
    }

    /// Sends queued deliveries while the client's Receive Maximum allows.
    pub fn pump(&mut self) {
        self.pump_queued();
        self.broker.wake_publishers(&self.shared);
    }

    fn pump_queued(&mut self) {
        loop {
            let batch = self.shared.take(PUMP_CHUNK);
            if batch.is_empty() {
                return;
            }
            let mut rest = batch.into_iter();
            while let Some(d) = rest.next() {
                if d.qos != QoS::AtMostOnce
                    && self.state.inflight.len() >= usize::from(self.client_receive_maximum)
                {
                    let mut back = vec![d];
                    back.extend(rest);
                    self.shared.put_back(back);
                    return;
                }
                self.deliver(d);
            }
        }
    }

    fn deliver(&mut self, d: Delivery) {
        if d.msg.is_expired(now_ms()) {
            return;
        }
        let pid = if d.qos == QoS::AtMostOnce {
            0
        } else {
            match self.state.allocate_packet_id() {
                Some(pid) => pid,
                None => return,
            }
        };
        if !self.send_publish(&d, pid, false) {
            return;
        }
        self.broker.metrics.messages_delivered.inc();
        if d.qos != QoS::AtMostOnce {
            self.state.inflight.insert(
                pid,
                Inflight {
                    delivery: d,
                    released: false,
                },
            );
        }
    }

    /// Writes the PUBLISH for a delivery; false when it exceeds the client's Maximum Packet
    /// Size (then it is dropped, §3.1.2.11.4). Encoded from the shared message as it is: one
    /// message going to many subscribers is not copied for each.
    fn send_publish(&mut self, d: &Delivery, packet_id: u16, dup: bool) -> bool {
        let mut topic = d.msg.topic.as_str();
        let mut topic_alias = None;
        if self.version.is_v5() && self.client_alias_maximum > 0 {
            let aliases = &mut self.aliases.get_or_insert_default().outgoing;
            if let Some(alias) = aliases.get(topic) {
                topic_alias = Some(*alias);
                topic = "";
            } else if aliases.len() < usize::from(self.client_alias_maximum) {
                let alias = aliases.len() as u16 + 1;
                aliases.insert(topic.to_owned(), alias);
                topic_alias = Some(alias);
            }
        }
        let publish = wire::OutgoingPublish {
            dup,
            qos: d.qos,
            retain: d.retain,
            topic,
            packet_id,
            payload: &d.msg.payload,
            properties: &d.msg.properties,
            message_expiry_interval: d.msg.remaining_expiry(now_ms()),
            topic_alias,
            subscription_identifiers: &d.subscription_ids,
        };
        let max = self.client_max_packet_size as usize;
        let sent = wire::encode_publish(&publish, self.version, max, &mut self.out);
        if !sent {
            tracing::debug!(client_id = %self.shared.client_id, "message larger than the client's Maximum Packet Size dropped");
        }
        sent
    }

    /// Encodes a packet into the output buffer.
    pub fn send(&mut self, p: &Packet) {
        wire::encode(p, self.version, &mut self.out);
    }

    /// Writes the server's DISCONNECT for MQTT 5 clients (§3.14), with a reason string when
    /// the client did not turn problem information off.
    pub fn send_disconnect(&mut self, reason_code: u8, why: &str) {
        if !self.version.is_v5() {
            return;
        }
        let properties = DisconnectProperties {
            reason_string: self.problem_info.then(|| why.to_owned()),
            ..Default::default()
        };
        self.send(&Packet::Disconnect(Disconnect {
            reason: reason_code,
            properties,
        }));
    }

    /// Ends the connection's hold on the session: publishes or schedules the will as `ending`
    /// requires, then parks or ends the session.
    pub async fn finish(mut self, ending: &Ending) {
        if let Some(boxed) = self.will.take()
            && ending.publishes_will()
        {
            let (will, delay) = *boxed;
            // The will goes out when its delay passes or the session ends, whichever is first.
            let delay = delay.min(self.state.expiry_interval);
            let generation = self.generation;
            self.broker.schedule_will(
                self.shared.clone(),
                generation,
                will,
                Duration::from_secs(delay.into()),
            );
        }
        let state = std::mem::take(&mut self.state);
        self.broker.park(self.shared, self.generation, state).await;
    }
}

fn ack(packet_id: u16, code: u8) -> PubResp {
    PubResp {
        packet_id,
        reason: code,
        properties: AckProperties::default(),
    }
}
