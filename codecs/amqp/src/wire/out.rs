//! Builders for the frames the broker sends, and the checks that keep them encodable.
//!
//! Methods are `amq-protocol`'s generated structs; these helpers fill in what the spec and
//! RabbitMQ-compatible clients expect (server properties and capabilities, reply texts cut to a
//! short string, content split at frame_max), and refuse short strings longer than 255 bytes
//! with an error where `amq-protocol`'s `ShortString::from` would panic.

use amq_protocol::frame::{AMQPContentHeader, AMQPFrame};
use amq_protocol::protocol::{AMQPClass, BasicProperties, basic, channel, connection, queue};
use amq_protocol::types::{AMQPValue, FieldTable, LongString, ShortString};
use bytes::BytesMut;

use super::error::WireError;
use super::frame::{FRAME_OVERHEAD, encode_body, encode_frame};
use crate::ReplyCode;
use crate::reply::truncate_utf8;

/// SASL mechanisms offered in `connection.start`, space-separated (§ connection.start).
pub const MECHANISMS: &str = "PLAIN AMQPLAIN";
/// Message locales offered in `connection.start`.
pub const LOCALES: &str = "en_US";
/// The class id of `basic`, the only content class of 0-9-1.
pub const BASIC_CLASS_ID: u16 = 60;

/// What the broker says about itself in `connection.start`'s server-properties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerProperties {
    pub product: String,
    pub version: String,
    pub platform: String,
    /// RabbitMQ sends `cluster_name`; management tools and some clients display it.
    pub cluster_name: String,
    pub copyright: String,
    pub information: String,
}

impl Default for ServerProperties {
    fn default() -> Self {
        Self {
            product: "Switchboard".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            platform: "Rust".into(),
            cluster_name: "switchboard".into(),
            copyright: "Licensed under the Apache License 2.0".into(),
            information: "Multi-protocol broker: Kafka, MQTT and AMQP 0-9-1 over one log".into(),
        }
    }
}

/// The capabilities table RabbitMQ advertises (its "protocol extensions"); clients such as
/// pika, amqplib and the Java client switch features on by it: confirms, nacks, consumer
/// cancel notifications, blocked notifications.
pub fn capabilities() -> FieldTable {
    let mut table = FieldTable::default();
    for name in [
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "connection.blocked",
        "authentication_failure_close",
        "per_consumer_qos",
    ] {
        table.insert(name.into(), AMQPValue::Boolean(true));
    }
    table
}

/// `connection.start` (§ connection.start): version 0-9, server properties with capabilities,
/// [`MECHANISMS`] and [`LOCALES`].
pub fn connection_start(props: &ServerProperties) -> AMQPClass {
    let mut server_properties = FieldTable::default();
    for (key, value) in [
        ("product", &props.product),
        ("version", &props.version),
        ("platform", &props.platform),
        ("cluster_name", &props.cluster_name),
        ("copyright", &props.copyright),
        ("information", &props.information),
    ] {
        server_properties.insert(
            key.into(),
            AMQPValue::LongString(LongString::from(value.as_str())),
        );
    }
    server_properties.insert("capabilities".into(), AMQPValue::FieldTable(capabilities()));
    AMQPClass::Connection(connection::AMQPMethod::Start(connection::Start {
        version_major: 0,
        version_minor: 9,
        server_properties,
        mechanisms: MECHANISMS.into(),
        locales: LOCALES.into(),
    }))
}

/// `connection.tune`: the server's limits; the client answers with values no larger.
pub fn connection_tune(channel_max: u16, frame_max: u32, heartbeat: u16) -> AMQPClass {
    AMQPClass::Connection(connection::AMQPMethod::Tune(connection::Tune {
        channel_max,
        frame_max,
        heartbeat,
    }))
}

/// `connection.open-ok`.
pub fn connection_open_ok() -> AMQPClass {
    AMQPClass::Connection(connection::AMQPMethod::OpenOk(connection::OpenOk {}))
}

/// `connection.close` with a RabbitMQ-style reply text (`"NOT_ALLOWED - …"`) and the class and
/// method that caused it (0, 0 when none did).
pub fn connection_close(code: ReplyCode, detail: &str, class_method: (u16, u16)) -> AMQPClass {
    AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
        reply_code: code.code(),
        reply_text: code.reply_text(detail).into(),
        class_id: class_method.0,
        method_id: class_method.1,
    }))
}

/// `connection.close-ok`.
pub fn connection_close_ok() -> AMQPClass {
    AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {}))
}

/// `connection.blocked` (RabbitMQ extension): the broker stops reading publishes.
pub fn connection_blocked(reason: &str) -> AMQPClass {
    AMQPClass::Connection(connection::AMQPMethod::Blocked(connection::Blocked {
        reason: truncate_utf8(reason.to_owned(), 255).into(),
    }))
}

/// `connection.unblocked`.
pub fn connection_unblocked() -> AMQPClass {
    AMQPClass::Connection(connection::AMQPMethod::Unblocked(connection::Unblocked {}))
}

/// `channel.open-ok`.
pub fn channel_open_ok() -> AMQPClass {
    AMQPClass::Channel(channel::AMQPMethod::OpenOk(channel::OpenOk {}))
}

/// `channel.close` with a reply text and the offending class and method.
pub fn channel_close(code: ReplyCode, detail: &str, class_method: (u16, u16)) -> AMQPClass {
    AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close {
        reply_code: code.code(),
        reply_text: code.reply_text(detail).into(),
        class_id: class_method.0,
        method_id: class_method.1,
    }))
}

/// `channel.close-ok`.
pub fn channel_close_ok() -> AMQPClass {
    AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {}))
}

/// `queue.declare-ok`.
pub fn queue_declare_ok(
    queue_name: &str,
    message_count: u32,
    consumer_count: u32,
) -> Result<AMQPClass, WireError> {
    Ok(AMQPClass::Queue(queue::AMQPMethod::DeclareOk(
        queue::DeclareOk {
            queue: short("queue", queue_name)?,
            message_count,
            consumer_count,
        },
    )))
}

/// `basic.consume-ok`.
pub fn basic_consume_ok(consumer_tag: &str) -> Result<AMQPClass, WireError> {
    Ok(AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(
        basic::ConsumeOk {
            consumer_tag: short("consumer-tag", consumer_tag)?,
        },
    )))
}

/// `basic.cancel` sent by the server (RabbitMQ's consumer cancel notification, e.g. when the
/// queue is deleted).
pub fn basic_cancel(consumer_tag: &str) -> Result<AMQPClass, WireError> {
    Ok(AMQPClass::Basic(basic::AMQPMethod::Cancel(basic::Cancel {
        consumer_tag: short("consumer-tag", consumer_tag)?,
        nowait: false,
    })))
}

/// `basic.deliver`, to be followed by the content.
pub fn basic_deliver(
    consumer_tag: &str,
    delivery_tag: u64,
    redelivered: bool,
    exchange: &str,
    routing_key: &str,
) -> Result<AMQPClass, WireError> {
    Ok(AMQPClass::Basic(basic::AMQPMethod::Deliver(
        basic::Deliver {
            consumer_tag: short("consumer-tag", consumer_tag)?,
            delivery_tag,
            redelivered,
            exchange: short("exchange", exchange)?,
            routing_key: short("routing-key", routing_key)?,
        },
    )))
}

/// `basic.get-ok`, to be followed by the content; `message_count` is what remains ready.
pub fn basic_get_ok(
    delivery_tag: u64,
    redelivered: bool,
    exchange: &str,
    routing_key: &str,
    message_count: u32,
) -> Result<AMQPClass, WireError> {
    Ok(AMQPClass::Basic(basic::AMQPMethod::GetOk(basic::GetOk {
        delivery_tag,
        redelivered,
        exchange: short("exchange", exchange)?,
        routing_key: short("routing-key", routing_key)?,
        message_count,
    })))
}

/// `basic.get-empty`.
pub fn basic_get_empty() -> AMQPClass {
    AMQPClass::Basic(basic::AMQPMethod::GetEmpty(basic::GetEmpty {}))
}

/// `basic.return` of an unroutable mandatory message, to be followed by the content.
pub fn basic_return(
    code: ReplyCode,
    exchange: &str,
    routing_key: &str,
) -> Result<AMQPClass, WireError> {
    Ok(AMQPClass::Basic(basic::AMQPMethod::Return(basic::Return {
        reply_code: code.code(),
        // RabbitMQ sends the bare name here ("NO_ROUTE"), without a detail.
        reply_text: code.name().into(),
        exchange: short("exchange", exchange)?,
        routing_key: short("routing-key", routing_key)?,
    })))
}

/// `basic.ack` from the server: a publisher confirm.
pub fn basic_ack(delivery_tag: u64, multiple: bool) -> AMQPClass {
    AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
        delivery_tag,
        multiple,
    }))
}

/// `basic.nack` from the server: a negative publisher confirm.
pub fn basic_nack(delivery_tag: u64, multiple: bool) -> AMQPClass {
    AMQPClass::Basic(basic::AMQPMethod::Nack(basic::Nack {
        delivery_tag,
        multiple,
        requeue: false,
    }))
}

/// The content frames of a message: one header, then the body cut into frames of at most
/// `frame_max` bytes (§4.2.6.2). An empty body has no body frame, as RabbitMQ sends it.
pub fn content_frames(
    channel: u16,
    properties: &BasicProperties,
    body: &[u8],
    frame_max: u32,
) -> Vec<AMQPFrame> {
    let mut frames = Vec::with_capacity(1 + body.len() / body_chunk(frame_max) + 1);
    frames.push(AMQPFrame::Header(
        channel,
        AMQPContentHeader {
            class_id: BASIC_CLASS_ID,
            body_size: body.len() as u64,
            properties: properties.clone(),
        },
    ));
    frames.extend(
        body.chunks(body_chunk(frame_max))
            .map(|chunk| AMQPFrame::Body(channel, chunk.to_vec())),
    );
    frames
}

/// Writes a content-bearing method (`basic.deliver`, `basic.get-ok`, `basic.return`) and its
/// content to `out`, body split at `frame_max`. Nothing is written when an error is returned.
pub fn encode_message(
    channel: u16,
    method: &AMQPClass,
    properties: &BasicProperties,
    body: &[u8],
    frame_max: u32,
    out: &mut BytesMut,
) -> Result<(), WireError> {
    let start = out.len();
    let result = encode_message_inner(channel, method, properties, body, frame_max, out);
    if result.is_err() {
        out.truncate(start);
    }
    result
}

fn encode_message_inner(
    channel: u16,
    method: &AMQPClass,
    properties: &BasicProperties,
    body: &[u8],
    frame_max: u32,
    out: &mut BytesMut,
) -> Result<(), WireError> {
    encode_frame(&AMQPFrame::Method(channel, method.clone()), out)?;
    let header_start = out.len();
    let header = AMQPFrame::Header(
        channel,
        AMQPContentHeader {
            class_id: BASIC_CLASS_ID,
            body_size: body.len() as u64,
            properties: properties.clone(),
        },
    );
    encode_frame(&header, out)?;
    let header_size = out.len() - header_start;
    if frame_max != 0 && header_size > frame_max as usize {
        return Err(WireError::HeaderTooLarge {
            size: header_size,
            frame_max,
        });
    }
    for chunk in body.chunks(body_chunk(frame_max)) {
        encode_body(channel, chunk, out);
    }
    Ok(())
}

/// The largest body payload a frame can carry under `frame_max` (0 = no limit, bounded by the
/// u32 size field).
pub(crate) fn body_chunk(frame_max: u32) -> usize {
    let limit = if frame_max == 0 { u32::MAX } else { frame_max };
    (limit as usize).saturating_sub(FRAME_OVERHEAD).max(1)
}

/// A short string from user data. `ShortString::from` panics past 255 bytes, so every value
/// that did not come off the wire goes through here (e.g. an MQTT topic, which may be 64 KiB,
/// used as a routing key).
pub fn short(field: &'static str, value: &str) -> Result<ShortString, WireError> {
    ShortString::try_new(value).map_err(|_| WireError::ShortStringTooLong {
        field,
        len: value.len(),
    })
}
