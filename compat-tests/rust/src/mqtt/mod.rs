//! rumqttc as one MQTT client, with the commands of compat-tests/node/mqttjs.js: connect,
//! subscribe, publish, collect what arrives. One process is one client, at MQTT 3.1.1
//! (`protocolVersion: 4`, rumqttc's top-level module) or 5 (its `v5` module). Payloads cross
//! the JSON boundary as text; MQTT 5 properties use mqtt.js's names.
//!
//! Nothing reconnects behind a test: the event loop is polled until the connection ends, and
//! every request still waiting then fails. Over WebSocket it cannot connect: this build leaves
//! out rumqttc's "websocket" feature (see `endpoint`).

mod args;
mod props;
mod track;
mod v4;
mod v5;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::error::{AdapterError, Result, parse};
use args::{ConnectArgs, ExpectArgs, PublishArgs, SubscribeArgs, UnsubscribeArgs};
use track::{Answer, Tracker};

/// Longest a request waits for the broker's acknowledgement before its command fails (the
/// suite gives a command 15 s to answer).
const ACK_TIMEOUT: Duration = Duration::from_secs(10);
/// Request queue between the client handle and the event loop.
const REQUEST_CAPACITY: usize = 64;

/// The client handle of either protocol version.
enum Client {
    V4(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

/// One connection: its client handle and the task polling its event loop.
struct Link {
    client: Client,
    driver: JoinHandle<()>,
    /// Held from queuing a waiter until its request is in rumqttc's queue, so that requests
    /// and waiters are in the same order (see track.rs).
    order: tokio::sync::Mutex<()>,
    aliases: Mutex<props::Aliases>,
}

#[derive(Default)]
pub struct Mqtt {
    link: Mutex<Option<Arc<Link>>>,
    tracker: Arc<Tracker>,
}

impl Mqtt {
    pub async fn call(&self, op: &str, line: &str) -> Result<Value> {
        match op {
            "connect" => self.connect(parse(op, line)?).await,
            "subscribe" => self.subscribe(parse(op, line)?).await,
            "unsubscribe" => self.unsubscribe(parse(op, line)?).await,
            "publish" => self.publish(parse(op, line)?).await,
            "expect" => self.expect(parse(op, line)?).await,
            "sent" => Ok(json!({"packets": self.tracker.sent()})),
            "end" => self.end(ACK_TIMEOUT).await,
            _ => Err(AdapterError::UnknownOp(op.into())),
        }
    }

    pub async fn close(&self) {
        let _ = self.end(Duration::from_secs(1)).await;
    }

    /// -> the CONNACK: {sessionPresent, reasonCode, properties}.
    async fn connect(&self, a: ConnectArgs) -> Result<Value> {
        let (host, port) = endpoint(&a.url)?;
        let timeout = crate::waiters::millis(a.timeout_ms);
        let tracker = Arc::clone(&self.tracker);
        let connecting = async {
            match a.protocol_version.unwrap_or(4) {
                4 => v4::connect(&a, host, port, tracker).await,
                5 => v5::connect(&a, host, port, tracker).await,
                v => Err(AdapterError::Unsupported(format!(
                    "protocolVersion {v}: rumqttc speaks 4 (3.1.1) and 5"
                ))),
            }
        };
        let (client, driver, connack) = tokio::time::timeout(timeout, connecting)
            .await
            .map_err(|_| AdapterError::Timeout("connect".into(), timeout.as_millis() as u64))??;
        self.tracker.connected();
        let link = Link {
            client,
            driver,
            order: tokio::sync::Mutex::new(()),
            aliases: Mutex::new(props::Aliases::new(
                a.auto_assign_topic_alias.unwrap_or(false),
                props::alias_maximum(&connack),
            )),
        };
        if let Some(old) = self.set_link(Some(Arc::new(link))) {
            old.driver.abort();
        }
        Ok(connack)
    }

    /// -> {granted: [{topic, qos}]}, in the order given; qos is the failure code (0x80 and
    /// up) for a refused filter.
    async fn subscribe(&self, a: SubscribeArgs) -> Result<Value> {
        let link = self.link()?;
        let answer = {
            let _order = link.order.lock().await;
            let answer = self.tracker.expect_suback();
            match &link.client {
                Client::V4(c) => v4::subscribe(c, &a).await?,
                Client::V5(c) => v5::subscribe(c, &a).await?,
            }
            answer
        };
        let codes = self.wait("subscribe", answer).await?;
        let granted: Vec<Value> = a
            .topics
            .iter()
            .zip(codes)
            .map(|((topic, _), qos)| json!({"topic": topic, "qos": qos}))
            .collect();
        Ok(json!({"granted": granted}))
    }

    async fn unsubscribe(&self, a: UnsubscribeArgs) -> Result<Value> {
        let link = self.link()?;
        let answer = {
            let _order = link.order.lock().await;
            let answer = self.tracker.expect_unsuback();
            match &link.client {
                Client::V4(c) => v4::unsubscribe(c, &a).await?,
                Client::V5(c) => v5::unsubscribe(c, &a).await?,
            }
            answer
        };
        self.wait("unsubscribe", answer).await?;
        Ok(json!({}))
    }

    /// Answers once the broker acknowledged the message (PUBACK at QoS 1, PUBCOMP at QoS 2),
    /// or once it is written at QoS 0.
    async fn publish(&self, a: PublishArgs) -> Result<Value> {
        let link = self.link()?;
        let answer = {
            let _order = link.order.lock().await;
            let answer = self.tracker.expect_publish();
            let written = match &link.client {
                Client::V4(c) => v4::publish(c, &a).await?,
                Client::V5(c) => {
                    let alias = props::lock(&link.aliases).assign(&a.topic);
                    v5::publish(c, &a, alias).await?
                }
            };
            self.tracker.record_sent(written);
            answer
        };
        self.wait("publish", answer).await?;
        Ok(json!({}))
    }

    async fn expect(&self, a: ExpectArgs) -> Result<Value> {
        let timeout = crate::waiters::millis(a.timeout_ms);
        let tracker = &self.tracker;
        let complete = tracker
            .arrived
            .until(|| tracker.count() >= a.count, timeout)
            .await;
        Ok(json!({"complete": complete, "messages": tracker.messages()}))
    }

    /// A normal DISCONNECT (the will is discarded), then the connection closes.
    async fn end(&self, timeout: Duration) -> Result<Value> {
        let Some(link) = self.set_link(None) else {
            return Ok(json!({}));
        };
        let ended = async {
            let _order = link.order.lock().await;
            let written = self.tracker.expect_disconnect();
            let queued = match &link.client {
                Client::V4(c) => c.disconnect().await.is_ok(),
                Client::V5(c) => c.disconnect().await.is_ok(),
            };
            // Not queued: the event loop is gone, and so is the connection.
            if queued {
                let _ = written.await;
            }
        };
        let done = tokio::time::timeout(timeout, ended).await;
        link.driver.abort();
        done.map_err(|_| AdapterError::Timeout("end".into(), timeout.as_millis() as u64))?;
        Ok(json!({}))
    }

    async fn wait<T>(&self, what: &str, answer: Answer<T>) -> Result<T> {
        match tokio::time::timeout(ACK_TIMEOUT, answer).await {
            Err(_) => Err(AdapterError::Timeout(
                format!("{what}: no acknowledgement"),
                ACK_TIMEOUT.as_millis() as u64,
            )),
            Ok(Err(_)) => Err(AdapterError::State(format!("{what}: the connection ended"))),
            Ok(Ok(result)) => {
                result.map_err(|e| AdapterError::library(format!("{what}: {e}"), Value::Null))
            }
        }
    }

    fn link(&self) -> Result<Arc<Link>> {
        let link = self
            .link
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(|| {
                AdapterError::State(r#"not connected: send {"op":"connect"} first"#.into())
            })?;
        match self.tracker.lost_reason() {
            Some(why) => Err(AdapterError::State(format!("connection lost: {why}"))),
            None => Ok(link),
        }
    }

    fn set_link(&self, link: Option<Arc<Link>>) -> Option<Arc<Link>> {
        std::mem::replace(
            &mut *self.link.lock().unwrap_or_else(PoisonError::into_inner),
            link,
        )
    }
}

/// "mqtt://host:port" (or tcp://) -> (host, port).
fn endpoint(url: &str) -> Result<(&str, u16)> {
    let (scheme, rest) = url.split_once("://").unwrap_or(("mqtt", url));
    match scheme {
        "mqtt" | "tcp" => {}
        "ws" | "wss" => {
            return Err(AdapterError::Unsupported(
                "MQTT over WebSocket: this build leaves out rumqttc's \"websocket\" feature (a \
                 second WebSocket stack, async-tungstenite with rustls)"
                    .into(),
            ));
        }
        other => return Err(AdapterError::Unsupported(format!("{other}:// URLs"))),
    }
    let authority = rest.split('/').next().unwrap_or(rest);
    let (host, port) = authority.rsplit_once(':').unwrap_or((authority, "1883"));
    let port = port
        .parse()
        .map_err(|_| AdapterError::State(format!("bad port in {url:?}")))?;
    Ok((host.trim_start_matches('[').trim_end_matches(']'), port))
}

/// A client id when the test gives none (mqtt.js makes up "mqttjs_" and 8 hex digits).
fn made_up_client_id() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!(
        "rumqttc_{:08x}",
        nanos ^ std::process::id().rotate_left(16) ^ n
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_host_and_port_of_an_mqtt_url() {
        assert_eq!(
            endpoint("mqtt://127.0.0.1:1884").ok(),
            Some(("127.0.0.1", 1884))
        );
        assert_eq!(endpoint("tcp://[::1]:1883/").ok(), Some(("::1", 1883)));
        assert_eq!(endpoint("mqtt://broker").ok(), Some(("broker", 1883)));
        assert!(matches!(
            endpoint("ws://h:1/mqtt"),
            Err(AdapterError::Unsupported(_))
        ));
    }
}
