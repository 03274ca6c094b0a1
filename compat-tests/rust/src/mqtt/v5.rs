//! MQTT 5 through rumqttc's `v5` module.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::Outgoing;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{
    ConnectReturnCode, Filter, LastWill, Packet, PubAckReason, PubRecReason, Publish,
    SubscribeProperties, SubscribeReasonCode,
};
use rumqttc::v5::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::args::{ConnectArgs, PublishArgs, SubscribeArgs, UnsubscribeArgs, qos};
use super::props::{
    connack_properties_json, publish_properties, publish_properties_json, will_properties,
};
use super::track::{Seen, Tracker};
use super::{Client, REQUEST_CAPACITY};
use crate::error::{AdapterError, Result};

fn levels() -> [QoS; 3] {
    [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
}

fn qos_number(q: QoS) -> u8 {
    match q {
        QoS::AtMostOnce => 0,
        QoS::AtLeastOnce => 1,
        QoS::ExactlyOnce => 2,
    }
}

fn options(a: &ConnectArgs, host: &str, port: u16) -> Result<MqttOptions> {
    let id = a.client_id.clone().unwrap_or_else(super::made_up_client_id);
    let mut o = MqttOptions::new(id, host, port);
    o.set_keep_alive(Duration::from_secs(a.keepalive.unwrap_or(30)))
        .set_clean_start(a.clean.unwrap_or(true))
        .set_session_expiry_interval(a.session_expiry)
        .set_topic_alias_max(a.topic_alias_maximum);
    if let Some(user) = &a.username {
        o.set_credentials(user, a.password.clone().unwrap_or_default());
    }
    if let Some(w) = &a.will {
        let props = will_properties(w.properties.as_ref())?;
        let will = LastWill::new(
            &w.topic,
            w.payload.clone(),
            qos(w.qos, levels())?,
            w.retain,
            props,
        );
        o.set_last_will(will);
    }
    Ok(o)
}

pub async fn connect(
    a: &ConnectArgs,
    host: &str,
    port: u16,
    tracker: Arc<Tracker>,
) -> Result<(Client, JoinHandle<()>, Value)> {
    let (client, events) = AsyncClient::new(options(a, host, port)?, REQUEST_CAPACITY);
    let (connack_tx, connack) = oneshot::channel();
    let driver = tokio::spawn(drive(events, tracker, connack_tx));
    let connack = connack
        .await
        .map_err(|_| AdapterError::State("the event loop ended before CONNACK".into()))??;
    Ok((Client::V5(client), driver, connack))
}

/// Polls the event loop until the connection ends; the first event answers `connect`.
async fn drive(
    mut events: EventLoop,
    tracker: Arc<Tracker>,
    connack: oneshot::Sender<Result<Value>>,
) {
    let mut connack = Some(connack);
    let mut aliases = IncomingAliases::default();
    loop {
        match events.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                let reply = json!({
                    "sessionPresent": ack.session_present,
                    "reasonCode": 0,
                    "properties": ack.properties.as_ref().map(connack_properties_json),
                });
                if let Some(tx) = connack.take() {
                    let _ = tx.send(Ok(reply));
                }
            }
            Ok(event) => {
                let seen = seen(event, &mut aliases);
                let disconnected = matches!(seen, Seen::DisconnectSent);
                tracker.on(seen);
                if disconnected {
                    tracker.lost("the client disconnected".into());
                    return;
                }
            }
            Err(e) => {
                match connack.take() {
                    Some(tx) => {
                        let _ = tx.send(Err(refused(e)));
                    }
                    None => {
                        eprintln!("mqtt connection ended: {e}");
                        tracker.lost(e.to_string());
                    }
                }
                return;
            }
        }
    }
}

fn refused(e: ConnectionError) -> AdapterError {
    match e {
        ConnectionError::ConnectionRefused(code) => refusal(code),
        other => AdapterError::library(other, Value::Null),
    }
}

fn refusal(code: ConnectReturnCode) -> AdapterError {
    AdapterError::library(format!("connection refused: {code:?}"), format!("{code:?}"))
}

/// Topic aliases the broker set towards this client. rumqttc 0.25 resolves them in its state
/// but hands the application the PUBLISH as received (v5/state.rs `handle_incoming_packet`
/// queues the event before `handle_incoming_publish` fills in the topic), so an aliased PUBLISH
/// arrives with an empty topic: like any application of it, the adapter maps the alias back.
#[derive(Default)]
struct IncomingAliases(HashMap<u16, String>);

impl IncomingAliases {
    fn topic(&mut self, p: &Publish) -> String {
        let topic = String::from_utf8_lossy(&p.topic).into_owned();
        let Some(alias) = p.properties.as_ref().and_then(|props| props.topic_alias) else {
            return topic;
        };
        if topic.is_empty() {
            return self.0.get(&alias).cloned().unwrap_or_default();
        }
        self.0.insert(alias, topic.clone());
        topic
    }
}

fn seen(event: Event, aliases: &mut IncomingAliases) -> Seen {
    match event {
        Event::Incoming(Packet::Publish(p)) => Seen::Message(json!({
            "topic": aliases.topic(&p),
            "payload": String::from_utf8_lossy(&p.payload),
            "qos": qos_number(p.qos),
            "retain": p.retain,
            "properties": p.properties.as_ref().map(publish_properties_json),
        })),
        Event::Incoming(Packet::PubAck(ack)) => {
            let ok = matches!(
                ack.reason,
                PubAckReason::Success | PubAckReason::NoMatchingSubscribers
            );
            Seen::PublishDone(
                ack.pkid,
                ok.then_some(()).ok_or(format!("PUBACK {:?}", ack.reason)),
            )
        }
        // A QoS 2 publish the broker refuses ends at PUBREC: rumqttc sends no PUBREL then.
        Event::Incoming(Packet::PubRec(rec))
            if !matches!(
                rec.reason,
                PubRecReason::Success | PubRecReason::NoMatchingSubscribers
            ) =>
        {
            Seen::PublishDone(rec.pkid, Err(format!("PUBREC {:?}", rec.reason)))
        }
        Event::Incoming(Packet::PubComp(comp)) => Seen::PublishDone(comp.pkid, Ok(())),
        Event::Incoming(Packet::SubAck(ack)) => Seen::SubAck(
            ack.pkid,
            ack.return_codes.iter().map(|c| suback_code(*c)).collect(),
        ),
        Event::Incoming(Packet::UnsubAck(ack)) => Seen::UnsubAck(ack.pkid),
        Event::Outgoing(Outgoing::Publish(pkid) | Outgoing::AwaitAck(pkid)) => {
            Seen::PublishSent(pkid)
        }
        Event::Outgoing(Outgoing::Subscribe(pkid)) => Seen::SubscribeSent(pkid),
        Event::Outgoing(Outgoing::Unsubscribe(pkid)) => Seen::UnsubscribeSent(pkid),
        Event::Outgoing(Outgoing::Disconnect) => Seen::DisconnectSent,
        _ => Seen::Other,
    }
}

/// A SUBACK reason as its MQTT 5 code (3.2.2.2 / 3.9.3).
fn suback_code(c: SubscribeReasonCode) -> u8 {
    match c {
        SubscribeReasonCode::Success(q) => qos_number(q),
        SubscribeReasonCode::Failure | SubscribeReasonCode::Unspecified => 0x80,
        SubscribeReasonCode::ImplementationSpecific => 0x83,
        SubscribeReasonCode::NotAuthorized => 0x87,
        SubscribeReasonCode::TopicFilterInvalid => 0x8F,
        SubscribeReasonCode::PkidInUse => 0x91,
        SubscribeReasonCode::QuotaExceeded => 0x97,
        SubscribeReasonCode::SharedSubscriptionsNotSupported => 0x9E,
        SubscribeReasonCode::SubscriptionIdNotSupported => 0xA1,
        SubscribeReasonCode::WildcardSubscriptionsNotSupported => 0xA2,
    }
}

fn queue_error(e: rumqttc::v5::ClientError) -> AdapterError {
    AdapterError::State(format!("rumqttc refused the request: {e}"))
}

pub async fn subscribe(c: &AsyncClient, a: &SubscribeArgs) -> Result<()> {
    let mut filters = Vec::new();
    for (topic, q) in &a.topics {
        filters.push(Filter::new(topic.clone(), qos(*q, levels())?));
    }
    let sent = match &a.properties {
        None => c.subscribe_many(filters).await,
        Some(p) => {
            let props = SubscribeProperties {
                id: p.subscription_identifier,
                user_properties: p.user_properties.0.clone(),
            };
            c.subscribe_many_with_properties(filters, props).await
        }
    };
    sent.map_err(queue_error)
}

pub async fn unsubscribe(c: &AsyncClient, a: &UnsubscribeArgs) -> Result<()> {
    // rumqttc's unsubscribe sends one filter per UNSUBSCRIBE, and a command waits for one
    // UNSUBACK: one topic per command.
    let [topic] = a.topics.as_slice() else {
        return Err(AdapterError::Unsupported(
            "rumqttc unsubscribes one filter at a time".into(),
        ));
    };
    c.unsubscribe(topic.clone()).await.map_err(queue_error)
}

/// Queues the PUBLISH, with the topic alias `alias` assigned (see props::Aliases); -> the
/// packet as written, for `sent`.
pub async fn publish(
    c: &AsyncClient,
    a: &PublishArgs,
    alias: Option<(String, u16)>,
) -> Result<Value> {
    let mut props = publish_properties(a.properties.as_ref())?;
    let topic = match alias {
        Some((topic, alias)) => {
            props.topic_alias = Some(alias);
            topic
        }
        None => a.topic.clone(),
    };
    let written = json!({"topic": topic, "topicAlias": props.topic_alias});
    c.publish_with_properties(
        topic,
        qos(a.qos, levels())?,
        a.retain,
        a.payload.clone(),
        props,
    )
    .await
    .map_err(queue_error)?;
    Ok(written)
}
