//! MQTT scenarios, driven through rumqttc (MQTT 3.1.1).

pub mod publisher;
mod pubsub;
mod storm;
mod subscriber;

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use rumqttc::{
    AsyncClient, ConnectReturnCode, Event, EventLoop, MqttOptions, NetworkOptions, Packet, QoS,
    SubscribeReasonCode,
};

use crate::cli::{MqttScenario, Qos, Target};
use crate::report::Report;

pub async fn run(scenario: MqttScenario) -> Result<Report> {
    match scenario {
        MqttScenario::FanIn(a) => pubsub::run(pubsub::Shape::fan_in(a.publishers), a.load).await,
        MqttScenario::FanOut(a) => pubsub::run(pubsub::Shape::fan_out(a.subscribers), a.load).await,
        MqttScenario::ConnStorm(a) => storm::run(a).await,
    }
}

impl From<Qos> for QoS {
    fn from(q: Qos) -> QoS {
        match q {
            Qos::AtMostOnce => QoS::AtMostOnce,
            Qos::AtLeastOnce => QoS::AtLeastOnce,
        }
    }
}

/// Client options shared by every scenario: a clean session, and packets big enough for the
/// payload.
pub fn options(
    target: &Target,
    client_id: String,
    keep_alive: Duration,
    payload: usize,
) -> MqttOptions {
    let mut o = MqttOptions::new(client_id, target.host.clone(), target.port);
    o.set_keep_alive(keep_alive);
    o.set_clean_session(true);
    // rumqttc's default limit is 10 KiB; leave room for the topic and the fixed header.
    let max_packet = (payload + 1024).max(10 * 1024);
    o.set_max_packet_size(max_packet, max_packet);
    o
}

/// Creates a client and waits for its CONNACK.
pub async fn connect(
    options: MqttOptions,
    target: &Target,
    timeout: Duration,
) -> Result<(AsyncClient, EventLoop)> {
    let id = options.client_id();
    // A small request channel: messages wait in the broker or the socket, not in the client,
    // so the send timestamp is close to the moment the publish is written.
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    let mut network = NetworkOptions::new();
    // With Nagle on, a small publish can wait in our kernel for the ACK of the previous one
    // (up to the peer's delayed-ACK time), which would be counted as broker latency.
    network.set_tcp_nodelay(!target.nagle);
    network.set_connection_timeout(timeout.as_secs().max(1));
    eventloop.set_network_options(network);
    match tokio::time::timeout(timeout, eventloop.poll()).await {
        Err(_) => bail!("{id}: no CONNACK within {timeout:?}"),
        Ok(Err(e)) => Err(anyhow!(e)).with_context(|| format!("{id}: connecting")),
        Ok(Ok(Event::Incoming(Packet::ConnAck(ack)))) if ack.code == ConnectReturnCode::Success => {
            Ok((client, eventloop))
        }
        Ok(Ok(Event::Incoming(Packet::ConnAck(ack)))) => {
            bail!("{id}: broker refused the connection: {:?}", ack.code)
        }
        Ok(Ok(other)) => bail!("{id}: expected CONNACK, got {other:?}"),
    }
}

/// Subscribes to `filter` and waits for the SUBACK granting it.
async fn subscribe(
    client: &AsyncClient,
    eventloop: &mut EventLoop,
    filter: &str,
    qos: QoS,
    timeout: Duration,
) -> Result<()> {
    client
        .subscribe(filter, qos)
        .await
        .context("queueing SUBSCRIBE")?;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let event = tokio::time::timeout_at(deadline, eventloop.poll())
            .await
            .map_err(|_| anyhow!("no SUBACK for {filter:?} within {timeout:?}"))?
            .with_context(|| format!("subscribing to {filter:?}"))?;
        if let Event::Incoming(Packet::SubAck(ack)) = event {
            return match ack.return_codes.first() {
                Some(SubscribeReasonCode::Success(_)) => Ok(()),
                other => bail!("broker refused the subscription to {filter:?}: {other:?}"),
            };
        }
    }
}

/// Sends DISCONNECT and waits (briefly) until it is written; the broker closing first, or not
/// answering, is fine at this point.
pub async fn disconnect(client: &AsyncClient, eventloop: &mut EventLoop) {
    if client.try_disconnect().is_err() {
        return;
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
}
