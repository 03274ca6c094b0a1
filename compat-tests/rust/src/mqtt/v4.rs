//! MQTT 3.1.1 through rumqttc's top-level (v4) module.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS,
    SubscribeFilter, SubscribeReasonCode,
};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::args::{ConnectArgs, PublishArgs, SubscribeArgs, UnsubscribeArgs, qos};
use super::track::{Seen, Tracker};
use super::{Client, REQUEST_CAPACITY};
use crate::error::{AdapterError, Result};

/// Largest packet either way. rumqttc's default is 10 KiB; MQTT's limit is the broker's.
const MAX_PACKET: usize = 1024 * 1024;

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
    if a.session_expiry.is_some() || a.topic_alias_maximum.is_some() {
        return Err(AdapterError::Unsupported(
            "sessionExpiry and topicAliasMaximum are MQTT 5 properties".into(),
        ));
    }
    let id = a.client_id.clone().unwrap_or_else(super::made_up_client_id);
    let mut o = MqttOptions::new(id, host, port);
    o.set_keep_alive(Duration::from_secs(a.keepalive.unwrap_or(30)))
        .set_clean_session(a.clean.unwrap_or(true))
        .set_max_packet_size(MAX_PACKET, MAX_PACKET);
    if let Some(user) = &a.username {
        o.set_credentials(user, a.password.clone().unwrap_or_default());
    }
    if let Some(w) = &a.will {
        if w.properties.is_some() {
            return Err(AdapterError::Unsupported(
                "will properties are MQTT 5".into(),
            ));
        }
        let will = LastWill::new(&w.topic, w.payload.clone(), qos(w.qos, levels())?, w.retain);
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
    Ok((Client::V4(client), driver, connack))
}

/// Polls the event loop until the connection ends; the first event answers `connect`.
async fn drive(
    mut events: EventLoop,
    tracker: Arc<Tracker>,
    connack: oneshot::Sender<Result<Value>>,
) {
    let mut connack = Some(connack);
    loop {
        match events.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                let reply = json!({"sessionPresent": ack.session_present,
                                   "reasonCode": ack.code as u8, "properties": null});
                if let Some(tx) = connack.take() {
                    let _ = tx.send(Ok(reply));
                }
            }
            Ok(event) => {
                let seen = seen(event);
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
        ConnectionError::ConnectionRefused(code) => {
            AdapterError::library(format!("connection refused: {code:?}"), code as u8)
        }
        other => AdapterError::library(other, Value::Null),
    }
}

fn seen(event: Event) -> Seen {
    match event {
        Event::Incoming(Packet::Publish(p)) => Seen::Message(json!({
            "topic": p.topic,
            "payload": String::from_utf8_lossy(&p.payload),
            "qos": qos_number(p.qos),
            "retain": p.retain,
            "properties": null,
        })),
        Event::Incoming(Packet::PubAck(ack)) => Seen::PublishDone(ack.pkid, Ok(())),
        Event::Incoming(Packet::PubComp(comp)) => Seen::PublishDone(comp.pkid, Ok(())),
        Event::Incoming(Packet::SubAck(ack)) => Seen::SubAck(
            ack.pkid,
            ack.return_codes
                .iter()
                .map(|c| match c {
                    SubscribeReasonCode::Success(q) => qos_number(*q),
                    SubscribeReasonCode::Failure => 0x80,
                })
                .collect(),
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

fn queue_error(e: rumqttc::ClientError) -> AdapterError {
    AdapterError::State(format!("rumqttc refused the request: {e}"))
}

pub async fn subscribe(c: &AsyncClient, a: &SubscribeArgs) -> Result<()> {
    if a.properties.is_some() {
        return Err(AdapterError::Unsupported(
            "subscribe properties are MQTT 5".into(),
        ));
    }
    let mut filters = Vec::new();
    for (topic, q) in &a.topics {
        filters.push(SubscribeFilter::new(topic.clone(), qos(*q, levels())?));
    }
    c.subscribe_many(filters).await.map_err(queue_error)
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

/// Queues the PUBLISH; -> the packet as written, for `sent`.
pub async fn publish(c: &AsyncClient, a: &PublishArgs) -> Result<Value> {
    if a.properties.is_some() {
        return Err(AdapterError::Unsupported(
            "publish properties are MQTT 5".into(),
        ));
    }
    c.publish(
        a.topic.clone(),
        qos(a.qos, levels())?,
        a.retain,
        a.payload.clone(),
    )
    .await
    .map_err(queue_error)?;
    Ok(json!({"topic": a.topic, "topicAlias": null}))
}
