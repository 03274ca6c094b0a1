//! How an AMQP message becomes a record in a stream and back (`docs/mapping.md`, AMQP rows).
//!
//! Durable queues and stream queues store every message routed to them as a record:
//! key = routing key, value = body, timestamp = time of receipt (ms), and the properties as
//! headers:
//!
//! | header                  | value                                                       |
//! |-------------------------|-------------------------------------------------------------|
//! | `amqp.exchange`         | exchange the message was published to (`""`: default)      |
//! | `amqp.routing-key`      | routing key it was published with                           |
//! | `content-type`          | `content-type` (the header MQTT 5 and Kafka apps also use)  |
//! | `amqp.content-encoding` | `content-encoding`                                          |
//! | `amqp.delivery-mode`    | `1` (transient) or `2` (persistent)                         |
//! | `amqp.priority`         | `priority`, decimal                                         |
//! | `amqp.correlation-id`   | `correlation-id`                                            |
//! | `amqp.reply-to`         | `reply-to`                                                  |
//! | `amqp.expiration`       | `expiration` (ms, as the client wrote it)                   |
//! | `amqp.message-id`       | `message-id`                                                |
//! | `amqp.timestamp`        | `timestamp`, seconds since the epoch, decimal               |
//! | `amqp.type`             | `type`                                                      |
//! | `amqp.user-id`          | `user-id`                                                   |
//! | `amqp.app-id`           | `app-id`                                                    |
//! | `amqp.cluster-id`       | `cluster-id` (deprecated in 0-9-1, kept for the round trip) |
//! | `<name>`                | an entry of the `headers` table whose value is a UTF-8 string |
//! | `amqp.h.<name>`         | any other `headers` entry, as typed JSON (below)            |
//!
//! A `headers` entry goes under its own name only when its value is a UTF-8 string (long or
//! short) and the name is not reserved (`content-type` or anything starting with `amqp.`); so
//! Kafka consumers see `x-user: alice` as a plain header. Every other entry — numbers, booleans,
//! timestamps, byte arrays, nested tables and arrays such as RabbitMQ's `x-death`, and strings
//! with a reserved name — is written as `amqp.h.<name>` whose value is the JSON form of the
//! typed AMQP value, e.g. `{"LongLongInt":3}` or `{"FieldArray":[{"FieldTable":{…}}]}`. That
//! form keeps the exact AMQP type, so an AMQP consumer gets back the table that was published.
//! (A short-string value comes back as a long string: RabbitMQ's clients never send short
//! strings in tables, and both read as strings.)
//!
//! A record written by another protocol (a Kafka or MQTT producer) read by an AMQP consumer:
//! body = value, routing key = key (cut to the 255 bytes a routing key holds), exchange `""`,
//! delivery mode 2 (the record is stored), `content-type` → `content-type`, and every other
//! header → an entry of the `headers` table (long string of its bytes; void for a null value).

use amq_protocol::protocol::BasicProperties;
use amq_protocol::types::{AMQPValue, FieldTable, LongString, ShortString};
use switchboard_model::{BatchBuilder, Record};

use crate::queue::Message;

const EXCHANGE: &str = "amqp.exchange";
const ROUTING_KEY: &str = "amqp.routing-key";
const CONTENT_TYPE: &str = "content-type";
const CONTENT_ENCODING: &str = "amqp.content-encoding";
const DELIVERY_MODE: &str = "amqp.delivery-mode";
const PRIORITY: &str = "amqp.priority";
const CORRELATION_ID: &str = "amqp.correlation-id";
const REPLY_TO: &str = "amqp.reply-to";
const EXPIRATION: &str = "amqp.expiration";
const MESSAGE_ID: &str = "amqp.message-id";
const TIMESTAMP: &str = "amqp.timestamp";
const TYPE: &str = "amqp.type";
const USER_ID: &str = "amqp.user-id";
const APP_ID: &str = "amqp.app-id";
const CLUSTER_ID: &str = "amqp.cluster-id";
/// Prefix of typed `headers` entries.
const TYPED: &str = "amqp.h.";

/// Whether a `headers` entry of this name must take the typed form to avoid being read back
/// as a property.
fn is_reserved(name: &str) -> bool {
    name == CONTENT_TYPE || name.starts_with("amqp.")
}

/// Appends the record a message is stored as to `batch`, encoding it straight from the
/// message (no owned header names or values per record).
pub fn write_record(message: &Message, timestamp_ms: i64, batch: &mut BatchBuilder) {
    let mut r = batch.record(
        timestamp_ms,
        Some(message.routing_key.as_bytes()),
        Some(&message.body),
    );
    r.header(EXCHANGE, Some(message.exchange.as_bytes()));
    r.header(ROUTING_KEY, Some(message.routing_key.as_bytes()));
    let p = &message.properties;
    let short_props: [(&str, &Option<ShortString>); 10] = [
        (CONTENT_TYPE, p.content_type()),
        (CONTENT_ENCODING, p.content_encoding()),
        (CORRELATION_ID, p.correlation_id()),
        (REPLY_TO, p.reply_to()),
        (EXPIRATION, p.expiration()),
        (MESSAGE_ID, p.message_id()),
        (TYPE, p.kind()),
        (USER_ID, p.user_id()),
        (APP_ID, p.app_id()),
        (CLUSTER_ID, p.cluster_id()),
    ];
    for (name, value) in short_props {
        if let Some(v) = value {
            r.header(name, Some(v.as_str().as_bytes()));
        }
    }
    let mut number = itoa::Buffer::new();
    if let Some(mode) = p.delivery_mode() {
        r.header(DELIVERY_MODE, Some(number.format(*mode).as_bytes()));
    }
    if let Some(priority) = p.priority() {
        r.header(PRIORITY, Some(number.format(*priority).as_bytes()));
    }
    if let Some(ts) = p.timestamp() {
        r.header(TIMESTAMP, Some(number.format(*ts).as_bytes()));
    }
    if let Some(headers) = p.headers() {
        for (name, value) in headers.inner() {
            let name = name.as_str();
            match plain_string(value) {
                Some(s) if !is_reserved(name) => {
                    r.header(name, Some(s.as_bytes()));
                }
                _ => {
                    // Serializing an AMQPValue to JSON cannot fail except on non-finite
                    // floats; those entries are dropped rather than stored wrong.
                    if let Ok(json) = serde_json::to_string(value) {
                        r.header(&format!("{TYPED}{name}"), Some(json.as_bytes()));
                    }
                }
            }
        }
    }
    r.finish();
}

/// A string value that can travel as a plain UTF-8 header.
fn plain_string(value: &AMQPValue) -> Option<&str> {
    match value {
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
        AMQPValue::ShortString(s) => Some(s.as_str()),
        _ => None,
    }
}

/// Whether a record was written by the AMQP front end (it always writes `amqp.exchange`).
pub fn is_amqp_record(record: &Record) -> bool {
    record.header(EXCHANGE).is_some()
}

/// The message a record stands for, whichever protocol wrote it.
pub fn from_record(record: &Record) -> Message {
    if is_amqp_record(record) {
        from_amqp_record(record)
    } else {
        from_foreign_record(record)
    }
}

fn from_amqp_record(record: &Record) -> Message {
    let mut m = Message {
        exchange: String::new(),
        routing_key: key_of(record),
        properties: BasicProperties::default(),
        body: record.value.clone().unwrap_or_default(),
    };
    let mut headers = FieldTable::default();
    let mut has_headers = false;
    let mut p = BasicProperties::default();
    for h in &record.headers {
        let Some(value) = &h.value else { continue };
        let Ok(text) = std::str::from_utf8(value) else {
            continue;
        };
        let short = || ShortString::try_new(text).ok();
        match h.key.as_str() {
            EXCHANGE => m.exchange = text.to_owned(),
            ROUTING_KEY => m.routing_key = text.to_owned(),
            CONTENT_TYPE => p = with(p, short(), BasicProperties::with_content_type),
            CONTENT_ENCODING => p = with(p, short(), BasicProperties::with_content_encoding),
            CORRELATION_ID => p = with(p, short(), BasicProperties::with_correlation_id),
            REPLY_TO => p = with(p, short(), BasicProperties::with_reply_to),
            EXPIRATION => p = with(p, short(), BasicProperties::with_expiration),
            MESSAGE_ID => p = with(p, short(), BasicProperties::with_message_id),
            TYPE => p = with(p, short(), BasicProperties::with_type),
            USER_ID => p = with(p, short(), BasicProperties::with_user_id),
            APP_ID => p = with(p, short(), BasicProperties::with_app_id),
            CLUSTER_ID => p = with(p, short(), BasicProperties::with_cluster_id),
            DELIVERY_MODE => p = with(p, text.parse().ok(), BasicProperties::with_delivery_mode),
            PRIORITY => p = with(p, text.parse().ok(), BasicProperties::with_priority),
            TIMESTAMP => p = with(p, text.parse().ok(), BasicProperties::with_timestamp),
            name => {
                let (name, value) = match name.strip_prefix(TYPED) {
                    Some(inner) => (
                        inner,
                        serde_json::from_str(text)
                            .unwrap_or_else(|_| AMQPValue::LongString(text.into())),
                    ),
                    None => (name, AMQPValue::LongString(text.into())),
                };
                if let Ok(name) = ShortString::try_new(name) {
                    headers.insert(name, value);
                    has_headers = true;
                }
            }
        }
    }
    if has_headers {
        p = p.with_headers(headers);
    }
    m.properties = p;
    m
}

fn from_foreign_record(record: &Record) -> Message {
    let mut p = BasicProperties::default().with_delivery_mode(2);
    let mut headers = FieldTable::default();
    for h in &record.headers {
        if h.key == CONTENT_TYPE
            && let Some(v) = &h.value
            && let Some(ct) = std::str::from_utf8(v)
                .ok()
                .and_then(|t| ShortString::try_new(t).ok())
        {
            p = p.with_content_type(ct);
            continue;
        }
        let Ok(name) = ShortString::try_new(h.key.as_str()) else {
            continue;
        };
        let value = match &h.value {
            Some(v) => AMQPValue::LongString(LongString::from(v.to_vec())),
            None => AMQPValue::Void,
        };
        headers.insert(name, value);
    }
    if !headers.inner().is_empty() {
        p = p.with_headers(headers);
    }
    Message {
        exchange: String::new(),
        routing_key: key_of(record),
        properties: p,
        body: record.value.clone().unwrap_or_default(),
    }
}

/// The record key as a routing key: UTF-8 (lossy) cut to 255 bytes on a char boundary.
fn key_of(record: &Record) -> String {
    let key = record
        .key
        .as_ref()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .unwrap_or_default();
    crate::reply::truncate_utf8(key, 255)
}

fn with<T>(
    p: BasicProperties,
    value: Option<T>,
    set: fn(BasicProperties, T) -> BasicProperties,
) -> BasicProperties {
    match value {
        Some(v) => set(p, v),
        None => p,
    }
}

/// Whether the message asked to be persistent (`delivery-mode` 2).
pub fn is_persistent(properties: &BasicProperties) -> bool {
    *properties.delivery_mode() == Some(2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::types::FieldArray;
    use bytes::Bytes;

    /// The record a message is stored as: what [`write_record`] appends, read back.
    fn to_record(message: &Message, timestamp_ms: i64) -> Record {
        let mut batch = BatchBuilder::new();
        write_record(message, timestamp_ms, &mut batch);
        let mut records = batch.build().expect("a batch").records().expect("decodes");
        assert_eq!(records.len(), 1);
        records.remove(0)
    }

    fn full_message() -> Message {
        let mut inner = FieldTable::default();
        inner.insert("count".into(), AMQPValue::LongLongInt(2));
        inner.insert("reason".into(), AMQPValue::LongString("rejected".into()));
        let mut headers = FieldTable::default();
        headers.insert("x-user".into(), AMQPValue::LongString("alice".into()));
        headers.insert("attempt".into(), AMQPValue::LongInt(3));
        headers.insert("flag".into(), AMQPValue::Boolean(true));
        headers.insert(
            "content-type".into(),
            AMQPValue::LongString("shadow".into()),
        );
        headers.insert(
            "x-death".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(inner)])),
        );
        headers.insert("at".into(), AMQPValue::Timestamp(1_700_000_000));
        let properties = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_content_encoding("gzip".into())
            .with_headers(headers)
            .with_delivery_mode(2)
            .with_priority(7)
            .with_correlation_id("c-1".into())
            .with_reply_to("replies".into())
            .with_expiration("60000".into())
            .with_message_id("m-1".into())
            .with_timestamp(1_700_000_001)
            .with_type("order.created".into())
            .with_user_id("guest".into())
            .with_app_id("shop".into());
        Message::new(
            "orders",
            "eu.paris",
            properties,
            Bytes::from_static(b"{\"id\":1}"),
        )
    }

    #[test]
    fn every_property_and_typed_header_survives_the_round_trip() {
        let m = full_message();
        let back = from_record(&to_record(&m, 42));
        assert_eq!(back, m);
    }

    #[test]
    fn string_headers_are_plain_record_headers_and_others_are_typed() {
        let r = to_record(&full_message(), 42);
        let get = |k: &str| {
            r.header(k)
                .and_then(|h| h.value.clone())
                .map(|v| String::from_utf8(v.to_vec()).unwrap())
        };
        assert_eq!(r.key.as_deref(), Some(&b"eu.paris"[..]));
        assert_eq!(get("x-user").as_deref(), Some("alice"));
        assert_eq!(get("content-type").as_deref(), Some("application/json"));
        assert_eq!(get("amqp.h.attempt").as_deref(), Some("{\"LongInt\":3}"));
        assert_eq!(
            get("amqp.h.content-type").as_deref(),
            Some("{\"LongString\":[115,104,97,100,111,119]}")
        );
        assert_eq!(get("amqp.delivery-mode").as_deref(), Some("2"));
        assert_eq!(get("amqp.exchange").as_deref(), Some("orders"));
    }

    #[test]
    fn a_kafka_record_becomes_a_persistent_message_on_the_default_exchange() {
        let r = Record::new(
            Some(Bytes::from_static(b"k1")),
            Some(Bytes::from_static(b"v1")),
            5,
        )
        .with_header("content-type", Some(Bytes::from_static(b"text/plain")))
        .with_header("trace", Some(Bytes::from_static(b"abc")))
        .with_header("nothing", None);
        let m = from_record(&r);
        assert_eq!(m.exchange, "");
        assert_eq!(m.routing_key, "k1");
        assert_eq!(m.body, Bytes::from_static(b"v1"));
        assert!(is_persistent(&m.properties));
        assert_eq!(
            m.properties.content_type().as_ref().map(|s| s.as_str()),
            Some("text/plain")
        );
        let headers = m.properties.headers().clone().unwrap();
        assert_eq!(
            headers.inner().get("trace"),
            Some(&AMQPValue::LongString("abc".into()))
        );
        assert_eq!(headers.inner().get("nothing"), Some(&AMQPValue::Void));
    }

    #[test]
    fn an_overlong_foreign_key_is_cut_to_a_routing_key() {
        let key = "é".repeat(200);
        let r = Record::new(Some(Bytes::from(key)), None, 0);
        let m = from_record(&r);
        assert!(m.routing_key.len() <= 255);
        assert!(m.body.is_empty());
    }
}
