//! Arguments of the MQTT commands, in mqtt.js's terms.

use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::error::{AdapterError, Result};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectArgs {
    pub url: String,
    pub protocol_version: Option<u8>,
    pub client_id: Option<String>,
    pub clean: Option<bool>,
    /// Seconds (MQTT 5).
    pub session_expiry: Option<u32>,
    /// Seconds; 30 when absent, as in the mqtt.js adapter.
    pub keepalive: Option<u64>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub will: Option<WillArgs>,
    pub timeout_ms: Option<u64>,
    /// Aliases the broker may use towards this client (MQTT 5).
    pub topic_alias_maximum: Option<u16>,
    /// Use topic aliases for this client's publishes, as mqtt.js's option of that name does.
    pub auto_assign_topic_alias: Option<bool>,
}

#[derive(Deserialize)]
pub struct WillArgs {
    pub topic: String,
    #[serde(default)]
    pub payload: String,
    #[serde(default)]
    pub qos: u8,
    #[serde(default)]
    pub retain: bool,
    pub properties: Option<Value>,
}

#[derive(Deserialize)]
pub struct SubscribeArgs {
    /// {"a/b": qos, ...}, in the order given.
    #[serde(deserialize_with = "ordered_topics")]
    pub topics: Vec<(String, u8)>,
    pub properties: Option<SubscribeProperties>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscribeProperties {
    pub subscription_identifier: Option<usize>,
    #[serde(default)]
    pub user_properties: super::props::UserProperties,
}

#[derive(Deserialize)]
pub struct UnsubscribeArgs {
    pub topics: Vec<String>,
}

#[derive(Deserialize)]
pub struct PublishArgs {
    pub topic: String,
    #[serde(default)]
    pub payload: String,
    #[serde(default)]
    pub qos: u8,
    #[serde(default)]
    pub retain: bool,
    pub properties: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExpectArgs {
    pub count: usize,
    pub timeout_ms: Option<u64>,
}

fn ordered_topics<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, u8)>, D::Error> {
    struct Topics;
    impl<'de> serde::de::Visitor<'de> for Topics {
        type Value = Vec<(String, u8)>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an object of topic filter -> QoS")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(entry) = map.next_entry::<String, u8>()? {
                out.push(entry);
            }
            Ok(out)
        }
    }
    d.deserialize_map(Topics)
}

/// 0, 1, 2 -> the library's QoS of either version (both are the same three values).
pub fn qos<Q>(n: u8, levels: [Q; 3]) -> Result<Q> {
    let [q0, q1, q2] = levels;
    match n {
        0 => Ok(q0),
        1 => Ok(q1),
        2 => Ok(q2),
        _ => Err(AdapterError::State(format!("QoS {n}: want 0, 1 or 2"))),
    }
}
