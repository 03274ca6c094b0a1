//! How an MQTT message becomes a record in a stream and back (`docs/mapping.md`, MQTT rows).
//!
//! key = MQTT topic, value = payload, timestamp = time of receipt, and the message's
//! properties as headers:
//!
//! | header                 | value                                                     |
//! |------------------------|-----------------------------------------------------------|
//! | `mqtt.qos`             | `0`, `1` or `2`: the QoS the message was published with   |
//! | `mqtt.retain`          | `1` when published with the retain flag (absent otherwise) |
//! | `mqtt.publisher`       | client id of the publisher (for No Local)                 |
//! | `mqtt.expiry-at`       | absolute expiry, ms since the epoch (Message Expiry Interval) |
//! | `mqtt.payload-format`  | `0` or `1` (Payload Format Indicator)                     |
//! | `content-type`         | Content Type                                              |
//! | `mqtt.response-topic`  | Response Topic                                            |
//! | `mqtt.correlation-data`| Correlation Data, raw bytes                               |
//! | `mqtt.origin`          | the protocol a message was carried over from (`amqp`), so a link does not send it back |
//! | any other name         | a user property of that name (repeats allowed)            |
//!
//! A user property whose name is one of the reserved names above, or starts with `mqtt.`, is
//! written as `mqtt.user.<name>` so it cannot be mistaken for a property. A record from another
//! protocol (a Kafka producer) without `mqtt.qos` is delivered at QoS 1, since its producer had
//! it stored durably; its key is the MQTT topic, and a record without a valid topic key appears
//! under the stream's name.

use bytes::Bytes;
use switchboard_model::{BatchBuilder, Header, Record};

use crate::topic;
use crate::wire::{PublishProperties, QoS};

const QOS: &str = "mqtt.qos";
const RETAIN: &str = "mqtt.retain";
const PUBLISHER: &str = "mqtt.publisher";
const EXPIRY_AT: &str = "mqtt.expiry-at";
const PAYLOAD_FORMAT: &str = "mqtt.payload-format";
const CONTENT_TYPE: &str = "content-type";
const RESPONSE_TOPIC: &str = "mqtt.response-topic";
const CORRELATION_DATA: &str = "mqtt.correlation-data";
const ORIGIN: &str = "mqtt.origin";
const USER_ESCAPE: &str = "mqtt.user.";

/// A message inside the broker, whichever protocol produced it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// Payload format, content type, response topic, correlation data and user properties;
    /// never a topic alias, subscription identifiers or expiry interval (see `expiry_at_ms`).
    pub properties: PublishProperties,
    /// When the message expires, in ms since the epoch.
    pub expiry_at_ms: Option<i64>,
    /// Client id of the MQTT publisher, if it was one.
    pub publisher: Option<String>,
    /// The protocol this message was carried over from by a link (`amqp` for the `amq.topic`
    /// link); `None` for messages published here or written to the stream directly.
    pub origin: Option<String>,
    pub timestamp_ms: i64,
}

impl Message {
    /// Seconds left before expiry at `now_ms`, rounded up: `None` if the message never
    /// expires, `Some(0)` if it has expired.
    pub fn remaining_expiry(&self, now_ms: i64) -> Option<u32> {
        self.expiry_at_ms.map(|at| {
            let left = at.saturating_sub(now_ms);
            if left <= 0 {
                0
            } else {
                u32::try_from((left + 999) / 1000).unwrap_or(u32::MAX)
            }
        })
    }

    pub fn is_expired(&self, now_ms: i64) -> bool {
        self.remaining_expiry(now_ms) == Some(0)
    }

    /// Writes the message as the next record of `batch`, borrowing every field.
    pub fn write_to(&self, batch: &mut BatchBuilder) {
        let mut r = batch.record(
            self.timestamp_ms,
            Some(self.topic.as_bytes()),
            Some(&self.payload),
        );
        let qos: &[u8] = match self.qos {
            QoS::AtMostOnce => b"0",
            QoS::AtLeastOnce => b"1",
            QoS::ExactlyOnce => b"2",
        };
        r.header(QOS, Some(qos));
        if self.retain {
            r.header(RETAIN, Some(b"1"));
        }
        if let Some(p) = &self.publisher {
            r.header(PUBLISHER, Some(p.as_bytes()));
        }
        if let Some(at) = self.expiry_at_ms {
            r.header(EXPIRY_AT, Some(at.to_string().as_bytes()));
        }
        if let Some(o) = &self.origin {
            r.header(ORIGIN, Some(o.as_bytes()));
        }
        let props = &self.properties;
        if let Some(f) = props.payload_format_indicator {
            r.header(PAYLOAD_FORMAT, Some(f.to_string().as_bytes()));
        }
        if let Some(ct) = &props.content_type {
            r.header(CONTENT_TYPE, Some(ct.as_bytes()));
        }
        if let Some(rt) = &props.response_topic {
            r.header(RESPONSE_TOPIC, Some(rt.as_bytes()));
        }
        if let Some(cd) = &props.correlation_data {
            r.header(CORRELATION_DATA, Some(cd));
        }
        for (name, value) in &props.user_properties {
            if is_reserved(name) {
                r.header(&format!("{USER_ESCAPE}{name}"), Some(value.as_bytes()));
            } else {
                r.header(name, Some(value.as_bytes()));
            }
        }
        r.finish();
    }

    /// The message a record of `stream` stands for.
    pub fn from_record(stream: &str, record: &Record) -> Self {
        let topic = record
            .key
            .as_ref()
            .and_then(|k| std::str::from_utf8(k).ok())
            .filter(|t| topic::validate_name(t).is_ok())
            .unwrap_or(stream)
            .to_owned();
        let mut m = Message {
            topic,
            payload: record.value.clone().unwrap_or_default(),
            qos: QoS::AtLeastOnce,
            timestamp_ms: record.timestamp_ms,
            ..Default::default()
        };
        for Header { key, value } in &record.headers {
            let Some(value) = value else { continue };
            let text = std::str::from_utf8(value).ok();
            match key.as_str() {
                QOS => {
                    m.qos = text
                        .and_then(|t| t.parse().ok())
                        .and_then(QoS::from_u8)
                        .unwrap_or(QoS::AtLeastOnce)
                }
                RETAIN => m.retain = text == Some("1"),
                PUBLISHER => m.publisher = text.map(str::to_owned),
                ORIGIN => m.origin = text.map(str::to_owned),
                EXPIRY_AT => m.expiry_at_ms = text.and_then(|t| t.parse().ok()),
                PAYLOAD_FORMAT => {
                    m.properties.payload_format_indicator = text.and_then(|t| t.parse().ok())
                }
                CONTENT_TYPE => m.properties.content_type = text.map(str::to_owned),
                RESPONSE_TOPIC => m.properties.response_topic = text.map(str::to_owned),
                CORRELATION_DATA => m.properties.correlation_data = Some(value.clone()),
                other => {
                    let name = other.strip_prefix(USER_ESCAPE).unwrap_or(other);
                    if let Some(t) = text {
                        m.properties
                            .user_properties
                            .push((name.to_owned(), t.to_owned()));
                    }
                }
            }
        }
        m
    }
}

fn is_reserved(name: &str) -> bool {
    name == CONTENT_TYPE || name.starts_with("mqtt.")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full_message() -> Message {
        Message {
            topic: "a/b".into(),
            payload: Bytes::from_static(b"hello"),
            qos: QoS::ExactlyOnce,
            retain: true,
            properties: PublishProperties {
                payload_format_indicator: Some(1),
                content_type: Some("text/plain".into()),
                response_topic: Some("reply/here".into()),
                correlation_data: Some(Bytes::from_static(&[0, 1, 255])),
                user_properties: vec![
                    ("k".into(), "v1".into()),
                    ("k".into(), "v2".into()),
                    ("mqtt.qos".into(), "sneaky".into()),
                    ("content-type".into(), "x".into()),
                ],
                ..Default::default()
            },
            expiry_at_ms: Some(1_000_000),
            publisher: Some("client-1".into()),
            origin: Some("amqp".into()),
            timestamp_ms: 42,
        }
    }

    /// The record `m` is stored as, read back out of a batch.
    fn to_record(m: &Message) -> Record {
        let mut b = BatchBuilder::new();
        m.write_to(&mut b);
        let mut records = b.build().expect("a batch").records().expect("decodes");
        assert_eq!(records.len(), 1);
        records.remove(0)
    }

    #[test]
    fn a_message_survives_the_round_trip_through_a_record() {
        let m = full_message();
        let r = to_record(&m);
        assert_eq!(r.key.as_deref(), Some(&b"a/b"[..]));
        assert_eq!(r.value.as_deref(), Some(&b"hello"[..]));
        assert_eq!(Message::from_record("mqtt", &r), m);
    }

    #[test]
    fn reserved_user_property_names_are_escaped() {
        let r = to_record(&full_message());
        let qos: Vec<_> = r.headers.iter().filter(|h| h.key == "mqtt.qos").collect();
        assert_eq!(qos.len(), 1);
        assert_eq!(qos[0].value.as_deref(), Some(&b"2"[..]));
        assert!(r.header("mqtt.user.mqtt.qos").is_some());
    }

    #[test]
    fn a_foreign_record_is_qos1_under_its_key_or_the_stream_name() {
        let r = Record::new(
            Some(Bytes::from_static(b"x/y")),
            Some(Bytes::from_static(b"v")),
            5,
        )
        .with_header("trace", Some(Bytes::from_static(b"abc")));
        let m = Message::from_record("events", &r);
        assert_eq!(m.topic, "x/y");
        assert_eq!(m.qos, QoS::AtLeastOnce);
        assert_eq!(
            m.properties.user_properties,
            vec![("trace".into(), "abc".into())]
        );
        let keyless = Record::new(None, Some(Bytes::from_static(b"v")), 5);
        assert_eq!(Message::from_record("events", &keyless).topic, "events");
        let wildcard = Record::new(Some(Bytes::from_static(b"a/#")), None, 5);
        assert_eq!(Message::from_record("events", &wildcard).topic, "events");
    }

    #[test]
    fn expiry_rounds_up_and_reaches_zero() {
        let m = Message {
            expiry_at_ms: Some(10_000),
            ..Default::default()
        };
        assert_eq!(m.remaining_expiry(8_500), Some(2));
        assert_eq!(m.remaining_expiry(9_999), Some(1));
        assert!(m.is_expired(10_000));
        assert_eq!(Message::default().remaining_expiry(0), None);
    }
}
