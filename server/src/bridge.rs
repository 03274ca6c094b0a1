//! The link between MQTT topics and AMQP's `amq.topic` exchange in the default vhost: one topic
//! space, as RabbitMQ's MQTT plugin has it. Topic `a/b` is routing key `a.b`; `+` is `*`
//! (the escaping of dots inside MQTT levels is in `switchboard_amqp::model::mqtt`).
//!
//! - AMQP → MQTT: a publish to `amq.topic` is also stored under its MQTT topic, through the
//!   MQTT front end's publish path, marked with its origin.
//! - MQTT → AMQP: one follower per partition of the MQTT streams routes each record that did
//!   not come from AMQP through `amq.topic`, so AMQP queues bound there receive it. When nothing
//!   is bound to `amq.topic` the records are skipped without being decoded.
//!
//! Properties cross as they would between RabbitMQ's MQTT plugin and an AMQP client: QoS 1 or
//! 2 ↔ delivery mode 2 (and the `x-mqtt-publish-qos` header), content type, correlation data ↔
//! correlation id, response topic ↔ reply-to, expiry ↔ expiration, user properties ↔ string
//! headers.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use switchboard_amqp::amqp_types::{AMQPValue, FieldTable, LongString, ShortString};
use switchboard_amqp::model::{amqp_to_mqtt_topic, mqtt_to_amqp};
use switchboard_amqp::{AmqpBroker, BRIDGED_EXCHANGE, BRIDGED_VHOST, BasicProperties, TopicBridge};
use switchboard_model::{Offset, TopicPartition, next_offset, records_from};
use switchboard_mqtt::broker::Broker;
use switchboard_mqtt::mapping::Message;
use switchboard_mqtt::wire::QoS;
use switchboard_router::{Router, now_ms};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The header RabbitMQ's MQTT plugin uses for the QoS of an MQTT publish.
const QOS_HEADER: &str = "x-mqtt-publish-qos";
/// Origin recorded on messages this link carried from AMQP into MQTT.
const FROM_AMQP: &str = "amqp";

/// Connects both front ends; call once both have started.
pub fn link(
    router: Arc<Router>,
    mqtt: Arc<Broker>,
    amqp: Arc<AmqpBroker>,
    cancel: CancellationToken,
    tracker: &TaskTracker,
) {
    amqp.set_topic_bridge(Arc::new(ToMqtt { mqtt: mqtt.clone() }));
    for (stream, partitions) in mqtt.streams() {
        for p in 0..partitions {
            let tp = TopicPartition::new(stream.clone(), p);
            let (router, amqp, cancel) = (router.clone(), amqp.clone(), cancel.clone());
            tracker.spawn(async move { follow(router, amqp, tp, cancel).await });
        }
    }
}

struct ToMqtt {
    mqtt: Arc<Broker>,
}

impl TopicBridge for ToMqtt {
    fn forward<'a>(
        &'a self,
        routing_key: &'a str,
        properties: &'a BasicProperties,
        body: &'a Bytes,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>> {
        Box::pin(async move {
            let Ok(topic) = amqp_to_mqtt_topic(routing_key) else {
                return false;
            };
            let msg = message_from_amqp(topic, properties, body.clone());
            let durable = msg.qos != QoS::AtMostOnce;
            match self.mqtt.publish(vec![msg], durable).await {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(routing_key, error = %e, "amq.topic message not stored for MQTT");
                    false
                }
            }
        })
    }
}

/// Routes the records of one MQTT partition through `amq.topic`, from the end of the log on.
async fn follow(
    router: Arc<Router>,
    amqp: Arc<AmqpBroker>,
    tp: TopicPartition,
    cancel: CancellationToken,
) {
    let from = match router.bounds(&tp).await {
        Ok(b) => b.high_watermark,
        Err(e) => {
            tracing::warn!(%tp, error = %e, "MQTT to AMQP link not started for this partition");
            return;
        }
    };
    let position = Arc::new(AtomicU64::new(from));
    // With nothing bound to `amq.topic` the records would go nowhere: step over them without
    // waking up (an MQTT publish would otherwise wake this task on another thread).
    let wake = {
        let (amqp, position) = (amqp.clone(), position.clone());
        move |high_watermark: Offset| {
            let bound = amqp.has_bindings(BRIDGED_VHOST, BRIDGED_EXCHANGE);
            if !bound {
                position.fetch_max(high_watermark, Ordering::AcqRel);
            }
            bound
        }
    };
    let handle = |from: Offset, batches: Vec<Bytes>| {
        let (amqp, tp) = (amqp.clone(), tp.clone());
        async move { forward_batches(&amqp, &tp, from, batches).await }
    };
    router.tail(&tp, position, wake, &cancel, handle).await;
}

async fn forward_batches(
    amqp: &Arc<AmqpBroker>,
    tp: &TopicPartition,
    from: Offset,
    batches: Vec<Bytes>,
) -> Offset {
    if !amqp.has_bindings(BRIDGED_VHOST, BRIDGED_EXCHANGE) {
        // Nobody would receive them: skip the chunk on its headers alone.
        return next_offset(&batches, from);
    }
    let followed = records_from(batches, from);
    for r in &followed.records {
        let msg = Message::from_record(tp.stream.as_str(), r);
        if msg.origin.is_some() || msg.is_expired(now_ms()) {
            continue;
        }
        let key = mqtt_to_amqp(&msg.topic);
        let properties = properties_from_mqtt(&msg);
        if let Err(e) = amqp
            .publish(
                BRIDGED_VHOST,
                BRIDGED_EXCHANGE,
                &key,
                properties,
                msg.payload.clone(),
            )
            .await
        {
            tracing::warn!(topic = %msg.topic, error = %e, "MQTT message not routed through amq.topic");
        }
    }
    followed.next
}

fn short(s: &str) -> Option<ShortString> {
    ShortString::try_new(s).ok()
}

fn properties_from_mqtt(m: &Message) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(QOS_HEADER.into(), AMQPValue::ShortShortInt(m.qos as i8));
    for (name, value) in &m.properties.user_properties {
        if let Some(name) = short(name) {
            headers.insert(
                name,
                AMQPValue::LongString(LongString::from(value.as_bytes())),
            );
        }
    }
    let mut p = BasicProperties::default()
        .with_delivery_mode(if m.qos == QoS::AtMostOnce { 1 } else { 2 })
        .with_timestamp((m.timestamp_ms.max(0) / 1000) as u64)
        .with_headers(headers);
    if let Some(ct) = m.properties.content_type.as_deref().and_then(short) {
        p = p.with_content_type(ct);
    }
    if let Some(cd) = m
        .properties
        .correlation_data
        .as_ref()
        .and_then(|c| std::str::from_utf8(c).ok())
        .and_then(short)
    {
        p = p.with_correlation_id(cd);
    }
    if let Some(rt) = m
        .properties
        .response_topic
        .as_deref()
        .and_then(|t| short(&mqtt_to_amqp(t)))
    {
        p = p.with_reply_to(rt);
    }
    if let Some(left) = m.expiry_at_ms.map(|at| (at - now_ms()).max(0)) {
        p = p.with_expiration(ShortString::from(left.to_string()));
    }
    p
}

fn message_from_amqp(topic: String, p: &BasicProperties, body: Bytes) -> Message {
    let now = now_ms();
    let mut m = Message {
        topic,
        payload: body,
        timestamp_ms: now,
        origin: Some(FROM_AMQP.to_owned()),
        ..Default::default()
    };
    let header_qos = p
        .headers()
        .as_ref()
        .and_then(|h| match h.inner().get(QOS_HEADER) {
            Some(AMQPValue::ShortShortInt(q)) => QoS::from_u8(*q as u8),
            Some(AMQPValue::ShortShortUInt(q)) => QoS::from_u8(*q),
            Some(AMQPValue::LongInt(q)) => QoS::from_u8(*q as u8),
            _ => None,
        });
    m.qos = header_qos.unwrap_or(if p.delivery_mode() == &Some(2) {
        QoS::AtLeastOnce
    } else {
        QoS::AtMostOnce
    });
    m.properties.content_type = p.content_type().as_ref().map(|c| c.to_string());
    m.properties.correlation_data = p
        .correlation_id()
        .as_ref()
        .map(|c| Bytes::copy_from_slice(c.as_str().as_bytes()));
    m.properties.response_topic = p
        .reply_to()
        .as_ref()
        .and_then(|r| amqp_to_mqtt_topic(r.as_str()).ok());
    m.expiry_at_ms = p
        .expiration()
        .as_ref()
        .and_then(|e| e.as_str().parse::<i64>().ok())
        .map(|ms| now + ms);
    if let Some(headers) = p.headers() {
        for (name, value) in headers.inner() {
            if name.as_str() == QOS_HEADER {
                continue;
            }
            let text = match value {
                AMQPValue::LongString(s) => {
                    std::str::from_utf8(s.as_bytes()).ok().map(str::to_owned)
                }
                AMQPValue::ShortString(s) => Some(s.to_string()),
                _ => None,
            };
            if let Some(text) = text {
                m.properties.user_properties.push((name.to_string(), text));
            }
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_cross_both_ways() {
        let mut m = Message {
            topic: "a/b".into(),
            payload: Bytes::from_static(b"x"),
            qos: QoS::AtLeastOnce,
            timestamp_ms: now_ms(),
            expiry_at_ms: Some(now_ms() + 60_000),
            ..Default::default()
        };
        m.properties.content_type = Some("text/plain".into());
        m.properties.correlation_data = Some(Bytes::from_static(b"corr-1"));
        m.properties.response_topic = Some("reply/to".into());
        m.properties.user_properties = vec![("k".into(), "v".into())];
        let p = properties_from_mqtt(&m);
        assert_eq!(p.delivery_mode(), &Some(2));
        assert_eq!(p.reply_to().as_ref().map(|r| r.as_str()), Some("reply.to"));
        let back = message_from_amqp("a/b".into(), &p, m.payload.clone());
        assert_eq!(back.qos, QoS::AtLeastOnce);
        assert_eq!(back.properties.content_type, m.properties.content_type);
        assert_eq!(
            back.properties.correlation_data,
            m.properties.correlation_data
        );
        assert_eq!(back.properties.response_topic, m.properties.response_topic);
        assert_eq!(
            back.properties.user_properties,
            m.properties.user_properties
        );
        assert_eq!(back.origin.as_deref(), Some(FROM_AMQP));
        let left = back.expiry_at_ms.expect("expiry") - now_ms();
        assert!((58_000..=60_000).contains(&left), "{left}");
    }

    #[test]
    fn transient_amqp_messages_are_qos0_unless_the_header_says() {
        let transient = BasicProperties::default().with_delivery_mode(1);
        assert_eq!(
            message_from_amqp("t".into(), &transient, Bytes::new()).qos,
            QoS::AtMostOnce
        );
        let mut headers = FieldTable::default();
        headers.insert(QOS_HEADER.into(), AMQPValue::ShortShortInt(2));
        let told = transient.with_headers(headers);
        assert_eq!(
            message_from_amqp("t".into(), &told, Bytes::new()).qos,
            QoS::ExactlyOnce
        );
    }
}
