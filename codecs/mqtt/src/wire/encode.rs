//! Encoding: typed packets onto the connection's write buffer.
//!
//! The remaining length comes before the body, so it has to be known first. Rather than write
//! the body to a scratch buffer and copy it, every packet is written through a [`Sink`] twice:
//! once into a [`Counter`] that only adds up lengths, then into the output. The one function
//! per packet that serves both passes keeps the declared length and the bytes in agreement.

use bytes::{BufMut, BytesMut};

use super::kind::*;
use super::properties::id::*;
use super::read::MAX_VARIABLE_BYTE_INTEGER;
use super::{
    AckProperties, AuthProperties, ConnAck, ConnAckProperties, Connect, ConnectProperties,
    DisconnectProperties, Packet, ProtocolVersion, PubResp, Publish, PublishProperties, QoS,
    SubAck, Subscribe, SubscribeProperties, SubscriptionOptions, UnsubAck, Unsubscribe,
    UserProperty, Will, reason,
};

/// Appends `packet` to `out` as `version` lays it out.
///
/// What a level cannot carry is left out: 3.1 / 3.1.1 get no properties and no reason codes on
/// acknowledgements or DISCONNECT, SUBACK failure codes become 0x80, and 3.1 gets no CONNACK
/// Session Present flag (that byte is reserved in 3.1). DUP is never set on QoS 0. A CONNECT
/// is written for its own `version` field, whatever `version` says.
///
/// The caller keeps packets within what the wire can express, as decoded packets always are:
/// strings and binary fields of at most 65,535 bytes and a remaining length of at most
/// [`MAX_VARIABLE_BYTE_INTEGER`]; check [`encoded_len`] against the peer's Maximum Packet Size.
/// Debug builds assert this; release builds cut over-long strings short rather than corrupt the
/// framing of the stream.
pub fn encode(packet: &Packet, version: ProtocolVersion, out: &mut BytesMut) {
    let body_len = body_len(packet, version);
    out.reserve(1 + variable_byte_integer_len(body_len) + body_len);
    let start = out.len();
    out.put_u8(first_byte(packet));
    out.variable_byte_integer(body_len);
    write_body(packet, version, out);
    debug_assert_eq!(out.len() - start, encoded_len(packet, version));
}

/// A PUBLISH from borrowed parts, as a delivery sends it: the stored message's topic, payload
/// and properties, with the fields that differ per subscriber beside them. Encoding one builds
/// no [`Publish`], so a message going to many subscribers is not cloned for each.
pub struct OutgoingPublish<'a> {
    pub dup: bool,
    pub qos: QoS,
    pub retain: bool,
    /// Empty when `topic_alias` stands for it.
    pub topic: &'a str,
    /// Ignored for QoS 0.
    pub packet_id: u16,
    pub payload: &'a [u8],
    /// The message's own properties; the three fields below take the place of theirs.
    pub properties: &'a PublishProperties,
    pub message_expiry_interval: Option<u32>,
    pub topic_alias: Option<u16>,
    pub subscription_identifiers: &'a [u32],
}

impl<'a> OutgoingPublish<'a> {
    fn of(p: &'a Publish) -> Self {
        Self {
            dup: p.dup,
            qos: p.qos,
            retain: p.retain,
            topic: &p.topic,
            packet_id: p.packet_id,
            payload: &p.payload,
            properties: &p.properties,
            message_expiry_interval: p.properties.message_expiry_interval,
            topic_alias: p.properties.topic_alias,
            subscription_identifiers: &p.properties.subscription_identifiers,
        }
    }
}

/// Appends `publish` to `out` as [`encode`] would the same [`Publish`], unless the packet would
/// be longer than `max_len` (the client's Maximum Packet Size, §3.1.2.11.4): then nothing is
/// written and the result is false.
pub fn encode_publish(
    publish: &OutgoingPublish<'_>,
    version: ProtocolVersion,
    max_len: usize,
    out: &mut BytesMut,
) -> bool {
    let v5 = version.is_v5();
    let mut counter = Counter(0);
    publish_body(publish, v5, &mut counter);
    let body_len = counter.0;
    let len = 1 + variable_byte_integer_len(body_len) + body_len;
    if len > max_len {
        return false;
    }
    out.reserve(len);
    out.put_u8(PUBLISH << 4 | publish_flags(publish));
    out.variable_byte_integer(body_len);
    publish_body(publish, v5, out);
    true
}

/// The number of bytes [`encode`] appends for `packet`, fixed header included: compare it with
/// the Maximum Packet Size the peer announced (§3.1.2.11.4) before sending.
pub fn encoded_len(packet: &Packet, version: ProtocolVersion) -> usize {
    let body_len = body_len(packet, version);
    1 + variable_byte_integer_len(body_len) + body_len
}

fn body_len(packet: &Packet, version: ProtocolVersion) -> usize {
    let mut counter = Counter(0);
    write_body(packet, version, &mut counter);
    counter.0
}

/// Where encoded bytes go: the output buffer, or a [`Counter`] that measures them.
trait Sink {
    fn put(&mut self, bytes: &[u8]);

    fn u8(&mut self, value: u8) {
        self.put(&[value]);
    }

    fn u16(&mut self, value: u16) {
        self.put(&value.to_be_bytes());
    }

    fn u32(&mut self, value: u32) {
        self.put(&value.to_be_bytes());
    }

    /// Variable Byte Integer (§1.5.5).
    fn variable_byte_integer(&mut self, value: usize) {
        debug_assert!(
            value <= MAX_VARIABLE_BYTE_INTEGER as usize,
            "{value} too large"
        );
        let mut value = value.min(MAX_VARIABLE_BYTE_INTEGER as usize);
        let mut bytes = [0u8; 4];
        let mut len = 0;
        loop {
            // Masked to seven bits, so the cast cannot truncate.
            let mut byte = (value & 0x7f) as u8;
            value >>= 7;
            if value > 0 {
                byte |= 0x80;
            }
            bytes[len] = byte;
            len += 1;
            if value == 0 || len == bytes.len() {
                break;
            }
        }
        self.put(&bytes[..len]);
    }

    /// UTF-8 Encoded String (§1.5.4), cut at a character boundary if it cannot be expressed.
    fn string(&mut self, text: &str) {
        debug_assert!(text.len() <= MAX_FIELD, "string of {} bytes", text.len());
        let text = &text[..text.floor_char_boundary(MAX_FIELD)];
        self.binary(text.as_bytes());
    }

    /// Binary Data (§1.5.6).
    fn binary(&mut self, bytes: &[u8]) {
        debug_assert!(bytes.len() <= MAX_FIELD, "binary of {} bytes", bytes.len());
        let bytes = &bytes[..bytes.len().min(MAX_FIELD)];
        self.u16(bytes.len() as u16);
        self.put(bytes);
    }
}

/// The longest string or binary field: its length is a two-byte integer.
const MAX_FIELD: usize = u16::MAX as usize;

impl Sink for BytesMut {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// A sink that only counts.
struct Counter(usize);

impl Sink for Counter {
    fn put(&mut self, bytes: &[u8]) {
        self.0 += bytes.len();
    }
}

fn variable_byte_integer_len(value: usize) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

fn first_byte(packet: &Packet) -> u8 {
    let (kind, flags) = match packet {
        Packet::Connect(_) => (CONNECT, 0),
        Packet::ConnAck(_) => (CONNACK, 0),
        Packet::Publish(p) => (PUBLISH, publish_flags(&OutgoingPublish::of(p))),
        Packet::PubAck(_) => (PUBACK, 0),
        Packet::PubRec(_) => (PUBREC, 0),
        // §2.1.3: these three carry the fixed flags 0010.
        Packet::PubRel(_) => (PUBREL, 0b0010),
        Packet::PubComp(_) => (PUBCOMP, 0),
        Packet::Subscribe(_) => (SUBSCRIBE, 0b0010),
        Packet::SubAck(_) => (SUBACK, 0),
        Packet::Unsubscribe(_) => (UNSUBSCRIBE, 0b0010),
        Packet::UnsubAck(_) => (UNSUBACK, 0),
        Packet::PingReq => (PINGREQ, 0),
        Packet::PingResp => (PINGRESP, 0),
        Packet::Disconnect(_) => (DISCONNECT, 0),
        Packet::Auth(_) => (AUTH, 0),
    };
    kind << 4 | flags
}

/// DUP, QoS and RETAIN (§3.3.1). DUP is never written for QoS 0, where it must be 0.
fn publish_flags(p: &OutgoingPublish<'_>) -> u8 {
    let qos = p.qos as u8;
    let dup = p.dup && qos > 0;
    u8::from(dup) << 3 | qos << 1 | u8::from(p.retain)
}

fn write_body<S: Sink>(packet: &Packet, version: ProtocolVersion, s: &mut S) {
    let v5 = version.is_v5();
    match packet {
        Packet::Connect(c) => connect(c, s),
        Packet::ConnAck(c) => connack(c, version, s),
        Packet::Publish(p) => publish(p, v5, s),
        Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
            pub_resp(a, v5, s);
        }
        Packet::Subscribe(sub) => subscribe(sub, v5, s),
        Packet::SubAck(ack) => suback(ack, v5, s),
        Packet::Unsubscribe(unsub) => unsubscribe(unsub, v5, s),
        Packet::UnsubAck(ack) => unsuback(ack, v5, s),
        Packet::PingReq | Packet::PingResp => {}
        Packet::Disconnect(d) => {
            if v5 {
                reason_and_properties(d.reason, &d.properties, s);
            }
        }
        Packet::Auth(a) => {
            debug_assert!(v5, "AUTH exists only in MQTT 5");
            reason_and_properties(a.reason, &a.properties, s);
        }
    }
}

fn connect<S: Sink>(c: &Connect, s: &mut S) {
    let (name, level) = match c.version {
        ProtocolVersion::V31 => ("MQIsdp", 3),
        ProtocolVersion::V311 => ("MQTT", 4),
        ProtocolVersion::V5 => ("MQTT", 5),
    };
    let v5 = c.version.is_v5();
    s.string(name);
    s.u8(level);
    s.u8(connect_flags(c));
    s.u16(c.keep_alive);
    if v5 {
        properties(&c.properties, s);
    }
    s.string(&c.client_id);
    if let Some(will) = &c.will {
        if v5 {
            properties(&WillProperties(will), s);
        }
        s.string(&will.topic);
        s.binary(&will.payload);
    }
    if let Some(username) = &c.username {
        s.string(username);
    }
    if let Some(password) = &c.password {
        s.binary(password);
    }
}

/// §3.1.2.3: user name, password, will retain, will QoS (2 bits), will, clean start, reserved.
fn connect_flags(c: &Connect) -> u8 {
    let mut flags = u8::from(c.clean_start) << 1;
    if let Some(will) = &c.will {
        flags |= 0b100 | (will.qos as u8) << 3 | u8::from(will.retain) << 5;
    }
    flags |= u8::from(c.password.is_some()) << 6;
    flags | u8::from(c.username.is_some()) << 7
}

fn connack<S: Sink>(c: &ConnAck, version: ProtocolVersion, s: &mut S) {
    // MQTT 3.1 has no Session Present flag: the byte is reserved there.
    let session_present = c.session_present && version != ProtocolVersion::V31;
    s.u8(u8::from(session_present));
    s.u8(c.code);
    if version.is_v5() {
        properties(&c.properties, s);
    }
}

fn publish<S: Sink>(p: &Publish, v5: bool, s: &mut S) {
    publish_body(&OutgoingPublish::of(p), v5, s);
}

fn publish_body<S: Sink>(p: &OutgoingPublish<'_>, v5: bool, s: &mut S) {
    s.string(p.topic);
    if p.qos as u8 > 0 {
        s.u16(p.packet_id);
    }
    if v5 {
        properties(&PublishPropertySet(p), s);
    }
    s.put(p.payload);
}

/// PUBACK, PUBREC, PUBREL, PUBCOMP: MQTT 5 leaves off what it can (§3.4.2.1), as brokers do:
/// success without properties is just the packet identifier.
fn pub_resp<S: Sink>(a: &PubResp, v5: bool, s: &mut S) {
    s.u16(a.packet_id);
    if !v5 {
        return;
    }
    if a.properties.is_empty() {
        if a.reason != reason::SUCCESS {
            s.u8(a.reason);
        }
    } else {
        s.u8(a.reason);
        properties(&a.properties, s);
    }
}

/// DISCONNECT and AUTH in MQTT 5 (§3.14.2.1, §3.15.2.1): nothing at all for success without
/// properties, the reason code alone when there are no properties.
fn reason_and_properties<S: Sink, P: PropertySet>(reason: u8, props: &P, s: &mut S) {
    if props.is_empty() {
        if reason != reason::SUCCESS {
            s.u8(reason);
        }
    } else {
        s.u8(reason);
        properties(props, s);
    }
}

fn subscribe<S: Sink>(sub: &Subscribe, v5: bool, s: &mut S) {
    s.u16(sub.packet_id);
    if v5 {
        properties(&sub.properties, s);
    }
    for (filter, options) in &sub.filters {
        s.string(filter);
        s.u8(subscription_options(options, v5));
    }
}

/// §3.8.3.1: retain handling (2 bits), retain as published, no local, QoS (2 bits).
fn subscription_options(o: &SubscriptionOptions, v5: bool) -> u8 {
    let qos = o.qos as u8;
    if !v5 {
        return qos;
    }
    let flags = u8::from(o.no_local) << 2 | u8::from(o.retain_as_published) << 3;
    qos | flags | (o.retain_handling & 0b11) << 4
}

fn suback<S: Sink>(ack: &SubAck, v5: bool, s: &mut S) {
    s.u16(ack.packet_id);
    if v5 {
        properties(&ack.properties, s);
        s.put(&ack.reasons);
    } else {
        // 3.1.1 §3.9.3 knows a single failure code, 0x80.
        for &code in &ack.reasons {
            s.u8(code.min(0x80));
        }
    }
}

fn unsubscribe<S: Sink>(unsub: &Unsubscribe, v5: bool, s: &mut S) {
    s.u16(unsub.packet_id);
    if v5 {
        properties(&UserProperties(&unsub.user_properties), s);
    }
    for filter in &unsub.filters {
        s.string(filter);
    }
}

fn unsuback<S: Sink>(ack: &UnsubAck, v5: bool, s: &mut S) {
    s.u16(ack.packet_id);
    if v5 {
        properties(&ack.properties, s);
        s.put(&ack.reasons);
    }
}

/// A property section (§2.2.2): its length, then its properties.
fn properties<S: Sink, P: PropertySet>(props: &P, s: &mut S) {
    let mut len = Counter(0);
    props.write(&mut len);
    s.variable_byte_integer(len.0);
    props.write(s);
}

/// A packet's properties, each written only when it is set.
trait PropertySet {
    fn write<S: Sink>(&self, s: &mut S);

    fn is_empty(&self) -> bool {
        let mut len = Counter(0);
        self.write(&mut len);
        len.0 == 0
    }
}

fn byte<S: Sink>(s: &mut S, id: u8, value: Option<u8>) {
    if let Some(value) = value {
        s.u8(id);
        s.u8(value);
    }
}

fn flag<S: Sink>(s: &mut S, id: u8, value: Option<bool>) {
    byte(s, id, value.map(u8::from));
}

fn two<S: Sink>(s: &mut S, id: u8, value: Option<u16>) {
    if let Some(value) = value {
        s.u8(id);
        s.u16(value);
    }
}

fn four<S: Sink>(s: &mut S, id: u8, value: Option<u32>) {
    if let Some(value) = value {
        s.u8(id);
        s.u32(value);
    }
}

fn string<S: Sink>(s: &mut S, id: u8, value: Option<&String>) {
    if let Some(value) = value {
        s.u8(id);
        s.string(value);
    }
}

fn binary<S: Sink>(s: &mut S, id: u8, value: Option<&[u8]>) {
    if let Some(value) = value {
        s.u8(id);
        s.binary(value);
    }
}

fn user_properties<S: Sink>(s: &mut S, pairs: &[UserProperty]) {
    for (name, value) in pairs {
        s.u8(USER_PROPERTY);
        s.string(name);
        s.string(value);
    }
}

impl PropertySet for ConnectProperties {
    fn write<S: Sink>(&self, s: &mut S) {
        four(s, SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        two(s, RECEIVE_MAXIMUM, self.receive_maximum);
        four(s, MAXIMUM_PACKET_SIZE, self.maximum_packet_size);
        two(s, TOPIC_ALIAS_MAXIMUM, self.topic_alias_maximum);
        byte(
            s,
            REQUEST_RESPONSE_INFORMATION,
            self.request_response_information,
        );
        byte(
            s,
            REQUEST_PROBLEM_INFORMATION,
            self.request_problem_information,
        );
        user_properties(s, &self.user_properties);
        string(
            s,
            AUTHENTICATION_METHOD,
            self.authentication_method.as_ref(),
        );
        binary(s, AUTHENTICATION_DATA, self.authentication_data.as_deref());
    }
}

/// The will properties (§3.1.3.2): the Will Delay Interval, then the message's properties.
struct WillProperties<'a>(&'a Will);

impl PropertySet for WillProperties<'_> {
    fn write<S: Sink>(&self, s: &mut S) {
        let delay = Some(self.0.delay_interval).filter(|&d| d > 0);
        four(s, WILL_DELAY_INTERVAL, delay);
        message_properties(s, &self.0.properties);
    }
}

/// The properties of an application message, shared by PUBLISH and the will.
fn message_properties<S: Sink>(s: &mut S, p: &PublishProperties) {
    message_properties_expiring(s, p, p.message_expiry_interval);
}

/// [`message_properties`] with `expiry` in place of the message's own expiry interval.
fn message_properties_expiring<S: Sink>(s: &mut S, p: &PublishProperties, expiry: Option<u32>) {
    byte(s, PAYLOAD_FORMAT_INDICATOR, p.payload_format_indicator);
    four(s, MESSAGE_EXPIRY_INTERVAL, expiry);
    string(s, CONTENT_TYPE, p.content_type.as_ref());
    string(s, RESPONSE_TOPIC, p.response_topic.as_ref());
    binary(s, CORRELATION_DATA, p.correlation_data.as_deref());
    user_properties(s, &p.user_properties);
}

/// A PUBLISH's properties: the message's, then the topic alias and subscription identifiers.
struct PublishPropertySet<'p, 'a>(&'p OutgoingPublish<'a>);

impl PropertySet for PublishPropertySet<'_, '_> {
    fn write<S: Sink>(&self, s: &mut S) {
        let p = self.0;
        message_properties_expiring(s, p.properties, p.message_expiry_interval);
        two(s, TOPIC_ALIAS, p.topic_alias);
        for &id in p.subscription_identifiers {
            s.u8(SUBSCRIPTION_IDENTIFIER);
            s.variable_byte_integer(id as usize);
        }
    }
}

impl PropertySet for ConnAckProperties {
    fn write<S: Sink>(&self, s: &mut S) {
        four(s, SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        two(s, RECEIVE_MAXIMUM, self.receive_maximum);
        byte(s, MAXIMUM_QOS, self.maximum_qos);
        flag(s, RETAIN_AVAILABLE, self.retain_available);
        four(s, MAXIMUM_PACKET_SIZE, self.maximum_packet_size);
        let assigned = self.assigned_client_identifier.as_ref();
        string(s, ASSIGNED_CLIENT_IDENTIFIER, assigned);
        two(s, TOPIC_ALIAS_MAXIMUM, self.topic_alias_maximum);
        string(s, REASON_STRING, self.reason_string.as_ref());
        user_properties(s, &self.user_properties);
        let wildcard = self.wildcard_subscription_available;
        flag(s, WILDCARD_SUBSCRIPTION_AVAILABLE, wildcard);
        let identifiers = self.subscription_identifiers_available;
        flag(s, SUBSCRIPTION_IDENTIFIER_AVAILABLE, identifiers);
        let shared = self.shared_subscription_available;
        flag(s, SHARED_SUBSCRIPTION_AVAILABLE, shared);
        two(s, SERVER_KEEP_ALIVE, self.server_keep_alive);
        string(s, RESPONSE_INFORMATION, self.response_information.as_ref());
        string(s, SERVER_REFERENCE, self.server_reference.as_ref());
        string(
            s,
            AUTHENTICATION_METHOD,
            self.authentication_method.as_ref(),
        );
        binary(s, AUTHENTICATION_DATA, self.authentication_data.as_deref());
    }
}

impl PropertySet for AckProperties {
    fn write<S: Sink>(&self, s: &mut S) {
        string(s, REASON_STRING, self.reason_string.as_ref());
        user_properties(s, &self.user_properties);
    }

    fn is_empty(&self) -> bool {
        self.reason_string.is_none() && self.user_properties.is_empty()
    }
}

impl PropertySet for SubscribeProperties {
    fn write<S: Sink>(&self, s: &mut S) {
        if let Some(id) = self.subscription_identifier {
            s.u8(SUBSCRIPTION_IDENTIFIER);
            s.variable_byte_integer(id as usize);
        }
        user_properties(s, &self.user_properties);
    }
}

/// UNSUBSCRIBE's properties: user properties only.
struct UserProperties<'a>(&'a [UserProperty]);

impl PropertySet for UserProperties<'_> {
    fn write<S: Sink>(&self, s: &mut S) {
        user_properties(s, self.0);
    }
}

impl PropertySet for DisconnectProperties {
    fn write<S: Sink>(&self, s: &mut S) {
        four(s, SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        string(s, REASON_STRING, self.reason_string.as_ref());
        user_properties(s, &self.user_properties);
        string(s, SERVER_REFERENCE, self.server_reference.as_ref());
    }
}

impl PropertySet for AuthProperties {
    fn write<S: Sink>(&self, s: &mut S) {
        string(
            s,
            AUTHENTICATION_METHOD,
            self.authentication_method.as_ref(),
        );
        binary(s, AUTHENTICATION_DATA, self.authentication_data.as_deref());
        string(s, REASON_STRING, self.reason_string.as_ref());
        user_properties(s, &self.user_properties);
    }
}
