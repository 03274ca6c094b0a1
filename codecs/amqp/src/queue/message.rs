//! Messages as a queue holds them, deliveries out of it, and dead-lettering with RabbitMQ's
//! `x-death` header.

use std::sync::Arc;

use amq_protocol::protocol::BasicProperties;
use amq_protocol::types::{AMQPValue, FieldArray, FieldTable, LongString};
use bytes::Bytes;

/// Position of a message in its queue: dense and increasing, so that it can later be the
/// offset of the record in a storage stream.
pub type Offset = u64;

/// A channel, broker-wide: delivery tags are scoped to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelKey {
    pub connection: u64,
    pub channel: u16,
}

/// A consumer, as the session numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConsumerId(pub u64);

/// A message: what was published and how, enough to deliver and redeliver it.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub exchange: String,
    pub routing_key: String,
    pub properties: BasicProperties,
    pub body: Bytes,
}

impl Message {
    pub fn new(
        exchange: &str,
        routing_key: &str,
        properties: BasicProperties,
        body: Bytes,
    ) -> Self {
        Self {
            exchange: exchange.to_owned(),
            routing_key: routing_key.to_owned(),
            properties,
            body,
        }
    }
}

/// A message handed to a consumer (or to `basic.get`).
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub offset: Offset,
    /// `None` for `basic.get`.
    pub consumer: Option<ConsumerId>,
    pub channel: ChannelKey,
    pub delivery_tag: u64,
    pub redelivered: bool,
    /// How many times it has been delivered, this one included.
    pub delivery_count: u32,
    pub message: Arc<Message>,
    /// Ready messages left in the queue (`basic.get-ok`'s message-count).
    pub message_count: u32,
}

/// Why a message was dead-lettered, as written in `x-death`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeathReason {
    /// `basic.reject` / `basic.nack` with requeue = false.
    Rejected,
    /// Its TTL ran out.
    Expired,
    /// Dropped by `x-max-length` / `x-max-length-bytes`.
    MaxLen,
}

impl DeathReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rejected => "rejected",
            Self::Expired => "expired",
            Self::MaxLen => "maxlen",
        }
    }
}

/// A message to republish to a dead-letter exchange.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub reason: DeathReason,
    /// The dead-letter exchange to publish to.
    pub exchange: String,
    /// `x-dead-letter-routing-key`, or the message's own routing key.
    pub routing_key: String,
    /// The message with `x-death` updated and `expiration` removed (it moves into `x-death`
    /// as `original-expiration`, so the copy does not expire again in the next queue).
    pub message: Message,
}

/// Where a queue dead-letters to.
pub(crate) struct DeadLetterTarget<'a> {
    pub queue: &'a str,
    pub exchange: &'a str,
    pub routing_key: Option<&'a str>,
}

/// Builds the dead-lettered copy of `message`, following RabbitMQ (`rabbit_dead_letter`):
/// `x-death` is an array of tables, newest first, one per (queue, reason), each with `count`,
/// `reason`, `queue`, `time` (seconds), `exchange`, `routing-keys` and, when the message had
/// one, `original-expiration`. A repeated (queue, reason) increments its count and moves to the
/// front. `x-first-death-*` are set once; `x-last-death-*` every time.
pub(crate) fn dead_letter(
    message: &Message,
    target: &DeadLetterTarget<'_>,
    reason: DeathReason,
    now_ms: u64,
) -> DeadLetter {
    let mut properties = message.properties.clone();
    let original_expiration = properties.expiration().clone();
    let mut headers = properties.headers().clone().unwrap_or_default();

    let mut deaths: Vec<AMQPValue> = match headers.inner().get("x-death") {
        Some(AMQPValue::FieldArray(entries)) => entries.as_slice().to_vec(),
        _ => Vec::new(),
    };
    let same = |entry: &AMQPValue| match entry {
        AMQPValue::FieldTable(t) => {
            long_str(t, "queue") == Some(target.queue)
                && long_str(t, "reason") == Some(reason.as_str())
        }
        _ => false,
    };
    let existing = deaths
        .iter()
        .position(same)
        .and_then(|at| match deaths.remove(at) {
            AMQPValue::FieldTable(table) => Some(table),
            _ => None,
        });
    let entry = match existing {
        Some(mut existing) => {
            let count = match existing.inner().get("count") {
                Some(AMQPValue::LongLongInt(n)) => n.saturating_add(1),
                _ => 1,
            };
            existing.insert("count".into(), AMQPValue::LongLongInt(count));
            existing
        }
        None => {
            let mut entry = FieldTable::default();
            entry.insert("count".into(), AMQPValue::LongLongInt(1));
            entry.insert("reason".into(), text(reason.as_str()));
            entry.insert("queue".into(), text(target.queue));
            entry.insert("time".into(), AMQPValue::Timestamp(now_ms / 1000));
            entry.insert("exchange".into(), text(&message.exchange));
            entry.insert("routing-keys".into(), routing_keys(message, &headers));
            if let Some(expiration) = &original_expiration {
                entry.insert("original-expiration".into(), text(expiration.as_str()));
            }
            entry
        }
    };
    deaths.insert(0, AMQPValue::FieldTable(entry));
    headers.insert(
        "x-death".into(),
        AMQPValue::FieldArray(FieldArray::from(deaths)),
    );

    if !headers.contains_key("x-first-death-queue") {
        headers.insert("x-first-death-queue".into(), text(target.queue));
        headers.insert("x-first-death-reason".into(), text(reason.as_str()));
        headers.insert("x-first-death-exchange".into(), text(&message.exchange));
    }
    headers.insert("x-last-death-queue".into(), text(target.queue));
    headers.insert("x-last-death-reason".into(), text(reason.as_str()));
    headers.insert("x-last-death-exchange".into(), text(&message.exchange));

    properties = without_expiration(properties).with_headers(headers);
    DeadLetter {
        reason,
        exchange: target.exchange.to_owned(),
        routing_key: target
            .routing_key
            .unwrap_or(&message.routing_key)
            .to_owned(),
        message: Message {
            exchange: message.exchange.clone(),
            routing_key: message.routing_key.clone(),
            properties,
            body: message.body.clone(),
        },
    }
}

/// The routing key and the `CC` header's keys (RabbitMQ's sender-selected distribution).
fn routing_keys(message: &Message, headers: &FieldTable) -> AMQPValue {
    let mut keys = vec![text(&message.routing_key)];
    if let Some(AMQPValue::FieldArray(cc)) = headers.inner().get("CC") {
        keys.extend(cc.as_slice().iter().cloned());
    }
    AMQPValue::FieldArray(FieldArray::from(keys))
}

/// `BasicProperties` has no setter that clears a field, so rebuild it without `expiration`.
fn without_expiration(p: BasicProperties) -> BasicProperties {
    let mut out = BasicProperties::default();
    if let Some(v) = p.content_type() {
        out = out.with_content_type(v.clone());
    }
    if let Some(v) = p.content_encoding() {
        out = out.with_content_encoding(v.clone());
    }
    if let Some(v) = p.headers() {
        out = out.with_headers(v.clone());
    }
    if let Some(v) = p.delivery_mode() {
        out = out.with_delivery_mode(*v);
    }
    if let Some(v) = p.priority() {
        out = out.with_priority(*v);
    }
    if let Some(v) = p.correlation_id() {
        out = out.with_correlation_id(v.clone());
    }
    if let Some(v) = p.reply_to() {
        out = out.with_reply_to(v.clone());
    }
    if let Some(v) = p.message_id() {
        out = out.with_message_id(v.clone());
    }
    if let Some(v) = p.timestamp() {
        out = out.with_timestamp(*v);
    }
    if let Some(v) = p.kind() {
        out = out.with_type(v.clone());
    }
    if let Some(v) = p.user_id() {
        out = out.with_user_id(v.clone());
    }
    if let Some(v) = p.app_id() {
        out = out.with_app_id(v.clone());
    }
    if let Some(v) = p.cluster_id() {
        out = out.with_cluster_id(v.clone());
    }
    out
}

fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

fn long_str<'a>(table: &'a FieldTable, key: &str) -> Option<&'a str> {
    match table.inner().get(key)? {
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
        AMQPValue::ShortString(s) => Some(s.as_str()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TARGET: DeadLetterTarget<'static> = DeadLetterTarget {
        queue: "work",
        exchange: "dlx",
        routing_key: None,
    };

    fn message() -> Message {
        Message::new(
            "amq.direct",
            "jobs",
            BasicProperties::default()
                .with_expiration("5000".into())
                .with_message_id("m1".into()),
            Bytes::from_static(b"payload"),
        )
    }

    fn deaths(dl: &DeadLetter) -> Vec<FieldTable> {
        let headers = dl.message.properties.headers().clone().unwrap();
        let Some(AMQPValue::FieldArray(arr)) = headers.inner().get("x-death") else {
            panic!("no x-death");
        };
        arr.as_slice()
            .iter()
            .map(|v| match v {
                AMQPValue::FieldTable(t) => t.clone(),
                other => panic!("not a table: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn first_death_records_queue_reason_exchange_keys_and_time() {
        let dl = dead_letter(
            &message(),
            &TARGET,
            DeathReason::Rejected,
            1_700_000_123_456,
        );
        assert_eq!(
            (dl.exchange.as_str(), dl.routing_key.as_str()),
            ("dlx", "jobs")
        );
        let d = deaths(&dl);
        assert_eq!(d.len(), 1);
        let e = d[0].inner();
        assert_eq!(e.get("count"), Some(&AMQPValue::LongLongInt(1)));
        assert_eq!(e.get("reason"), Some(&text("rejected")));
        assert_eq!(e.get("queue"), Some(&text("work")));
        assert_eq!(e.get("exchange"), Some(&text("amq.direct")));
        assert_eq!(e.get("time"), Some(&AMQPValue::Timestamp(1_700_000_123)));
        assert_eq!(
            e.get("routing-keys"),
            Some(&AMQPValue::FieldArray(FieldArray::from(vec![text("jobs")])))
        );
        assert_eq!(e.get("original-expiration"), Some(&text("5000")));
        let headers = dl.message.properties.headers().clone().unwrap();
        assert_eq!(
            headers.inner().get("x-first-death-reason"),
            Some(&text("rejected"))
        );
        assert_eq!(
            headers.inner().get("x-first-death-queue"),
            Some(&text("work"))
        );
    }

    #[test]
    fn dead_lettered_copy_loses_its_expiration_but_keeps_other_properties() {
        let dl = dead_letter(&message(), &TARGET, DeathReason::Expired, 0);
        assert_eq!(dl.message.properties.expiration(), &None);
        assert_eq!(
            dl.message
                .properties
                .message_id()
                .as_ref()
                .map(|s| s.as_str()),
            Some("m1")
        );
        assert_eq!(dl.message.body, Bytes::from_static(b"payload"));
    }

    #[test]
    fn dead_letter_routing_key_overrides_the_original() {
        let target = DeadLetterTarget {
            routing_key: Some("dead"),
            ..TARGET
        };
        assert_eq!(
            dead_letter(&message(), &target, DeathReason::MaxLen, 0).routing_key,
            "dead"
        );
    }

    #[test]
    fn repeated_death_in_the_same_queue_for_the_same_reason_increments_count() {
        let first = dead_letter(&message(), &TARGET, DeathReason::Rejected, 1_000);
        let second = dead_letter(&first.message, &TARGET, DeathReason::Rejected, 9_000);
        let d = deaths(&second);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].inner().get("count"), Some(&AMQPValue::LongLongInt(2)));
    }

    #[test]
    fn death_for_another_reason_is_a_new_entry_at_the_front() {
        let first = dead_letter(&message(), &TARGET, DeathReason::Rejected, 0);
        let other = DeadLetterTarget {
            queue: "retry",
            ..TARGET
        };
        let second = dead_letter(&first.message, &other, DeathReason::Expired, 0);
        let d = deaths(&second);
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].inner().get("queue"), Some(&text("retry")));
        assert_eq!(d[1].inner().get("queue"), Some(&text("work")));
        let headers = second.message.properties.headers().clone().unwrap();
        assert_eq!(
            headers.inner().get("x-first-death-queue"),
            Some(&text("work"))
        );
        assert_eq!(
            headers.inner().get("x-last-death-queue"),
            Some(&text("retry"))
        );
    }

    #[test]
    fn cc_header_keys_are_listed_in_routing_keys() {
        let mut headers = FieldTable::default();
        headers.insert(
            "CC".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![text("audit")])),
        );
        let mut m = message();
        m.properties = m.properties.with_headers(headers);
        let d = deaths(&dead_letter(&m, &TARGET, DeathReason::Rejected, 0));
        assert_eq!(
            d[0].inner().get("routing-keys"),
            Some(&AMQPValue::FieldArray(FieldArray::from(vec![
                text("jobs"),
                text("audit")
            ])))
        );
    }
}
