//! MQTT 5 properties between mqtt.js's JSON names and rumqttc's types, and the topic aliases
//! this client assigns to its own publishes.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::{ConnAckProperties, LastWillProperties, PublishProperties};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value, json};

use crate::error::{AdapterError, Result};

/// User properties in the order given; mqtt.js writes a repeated name as an array of values.
#[derive(Default)]
pub struct UserProperties(pub Vec<(String, String)>);

impl<'de> Deserialize<'de> for UserProperties {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = UserProperties;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object of name -> value or [values]")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some((name, values)) = map.next_entry::<String, OneOrMany>()? {
                    match values {
                        OneOrMany::One(v) => out.push((name, v)),
                        OneOrMany::Many(vs) => {
                            out.extend(vs.into_iter().map(|v| (name.clone(), v)))
                        }
                    }
                }
                Ok(UserProperties(out))
            }
        }
        d.deserialize_map(Visitor)
    }
}

/// The properties of a PUBLISH (or a will) as mqtt.js names them.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct MessageProperties {
    payload_format_indicator: Option<Value>,
    message_expiry_interval: Option<u32>,
    topic_alias: Option<u16>,
    response_topic: Option<String>,
    correlation_data: Option<String>,
    #[serde(default)]
    user_properties: UserProperties,
    content_type: Option<String>,
    will_delay_interval: Option<u32>,
}

fn message_properties(given: Option<&Value>) -> Result<MessageProperties> {
    match given {
        None | Some(Value::Null) => Ok(MessageProperties::default()),
        Some(v) => MessageProperties::deserialize(v)
            .map_err(|e| AdapterError::State(format!("properties: {e}"))),
    }
}

/// mqtt.js's payloadFormatIndicator is a boolean; a number is taken as it is.
fn format_indicator(v: Option<Value>) -> Option<u8> {
    match v? {
        Value::Bool(b) => Some(u8::from(b)),
        Value::Number(n) => n.as_u64().and_then(|n| u8::try_from(n).ok()),
        _ => None,
    }
}

pub fn publish_properties(given: Option<&Value>) -> Result<PublishProperties> {
    let p = message_properties(given)?;
    Ok(PublishProperties {
        payload_format_indicator: format_indicator(p.payload_format_indicator),
        message_expiry_interval: p.message_expiry_interval,
        topic_alias: p.topic_alias,
        response_topic: p.response_topic,
        correlation_data: p.correlation_data.map(Bytes::from),
        user_properties: p.user_properties.0,
        subscription_identifiers: Vec::new(),
        content_type: p.content_type,
    })
}

pub fn will_properties(given: Option<&Value>) -> Result<Option<LastWillProperties>> {
    if given.is_none_or(Value::is_null) {
        return Ok(None);
    }
    let p = message_properties(given)?;
    Ok(Some(LastWillProperties {
        delay_interval: p.will_delay_interval,
        payload_format_indicator: format_indicator(p.payload_format_indicator),
        message_expiry_interval: p.message_expiry_interval,
        content_type: p.content_type,
        response_topic: p.response_topic,
        correlation_data: p.correlation_data.map(Bytes::from),
        user_properties: p.user_properties.0,
    }))
}

/// Received user properties as mqtt.js reports them: a repeated name keeps every value, in
/// order, as an array.
fn user_properties_json(props: &[(String, String)]) -> Value {
    let mut out = Map::new();
    for (name, value) in props {
        match out.get_mut(name) {
            None => {
                out.insert(name.clone(), json!(value));
            }
            Some(Value::Array(values)) => values.push(json!(value)),
            Some(first) => *first = json!([first.take(), value]),
        }
    }
    Value::Object(out)
}

/// Inserts `value` under `name` when there is one.
fn put<T: Into<Value>>(out: &mut Map<String, Value>, name: &str, value: Option<T>) {
    if let Some(v) = value {
        out.insert(name.into(), v.into());
    }
}

fn text(b: &Bytes) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub fn publish_properties_json(p: &PublishProperties) -> Value {
    let mut out = Map::new();
    put(
        &mut out,
        "payloadFormatIndicator",
        p.payload_format_indicator.map(|f| f == 1),
    );
    put(&mut out, "messageExpiryInterval", p.message_expiry_interval);
    put(&mut out, "topicAlias", p.topic_alias);
    put(&mut out, "responseTopic", p.response_topic.clone());
    put(
        &mut out,
        "correlationData",
        p.correlation_data.as_ref().map(text),
    );
    if !p.user_properties.is_empty() {
        out.insert(
            "userProperties".into(),
            user_properties_json(&p.user_properties),
        );
    }
    match p.subscription_identifiers.as_slice() {
        [] => {}
        [one] => put(&mut out, "subscriptionIdentifier", Some(*one as u64)),
        many => put(&mut out, "subscriptionIdentifier", Some(json!(many))),
    }
    put(&mut out, "contentType", p.content_type.clone());
    Value::Object(out)
}

pub fn connack_properties_json(p: &ConnAckProperties) -> Value {
    let flag = |f: Option<u8>| f.map(|f| f == 1);
    let mut out = Map::new();
    put(&mut out, "sessionExpiryInterval", p.session_expiry_interval);
    put(&mut out, "receiveMaximum", p.receive_max);
    put(&mut out, "maximumQoS", p.max_qos);
    put(&mut out, "retainAvailable", flag(p.retain_available));
    put(&mut out, "maximumPacketSize", p.max_packet_size);
    put(
        &mut out,
        "assignedClientIdentifier",
        p.assigned_client_identifier.clone(),
    );
    put(&mut out, "topicAliasMaximum", p.topic_alias_max);
    put(&mut out, "reasonString", p.reason_string.clone());
    if !p.user_properties.is_empty() {
        out.insert(
            "userProperties".into(),
            user_properties_json(&p.user_properties),
        );
    }
    put(
        &mut out,
        "wildcardSubscriptionAvailable",
        flag(p.wildcard_subscription_available),
    );
    put(
        &mut out,
        "subscriptionIdentifiersAvailable",
        flag(p.subscription_identifiers_available),
    );
    put(
        &mut out,
        "sharedSubscriptionAvailable",
        flag(p.shared_subscription_available),
    );
    put(&mut out, "serverKeepAlive", p.server_keep_alive);
    put(
        &mut out,
        "responseInformation",
        p.response_information.clone(),
    );
    put(&mut out, "serverReference", p.server_reference.clone());
    put(
        &mut out,
        "authenticationMethod",
        p.authentication_method.clone(),
    );
    Value::Object(out)
}

/// The broker's Topic Alias Maximum from a CONNACK reply (0: no aliases).
pub fn alias_maximum(connack: &Value) -> u16 {
    connack["properties"]["topicAliasMaximum"]
        .as_u64()
        .and_then(|n| u16::try_from(n).ok())
        .unwrap_or(0)
}

/// Topic aliases for this client's publishes, assigned as mqtt.js's autoAssignTopicAlias
/// does: a topic's first PUBLISH carries the topic and a new alias, later ones the alias alone
/// (an empty topic). rumqttc sends an alias it is handed; choosing one is the caller's part.
pub struct Aliases {
    enabled: bool,
    maximum: u16,
    assigned: HashMap<String, u16>,
}

impl Aliases {
    pub fn new(enabled: bool, maximum: u16) -> Self {
        Self {
            enabled,
            maximum,
            assigned: HashMap::new(),
        }
    }

    /// -> (topic to write, alias to write) for a publish to `topic`, if aliases are in use.
    pub fn assign(&mut self, topic: &str) -> Option<(String, u16)> {
        if !self.enabled {
            return None;
        }
        if let Some(alias) = self.assigned.get(topic) {
            return Some((String::new(), *alias));
        }
        let next = u16::try_from(self.assigned.len() + 1).ok()?;
        if next > self.maximum {
            return None; // out of aliases: the topic is written in full
        }
        self.assigned.insert(topic.to_string(), next);
        Some((topic.to_string(), next))
    }
}

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_topic_is_written_in_full_once_then_by_its_alias_alone() {
        let mut aliases = Aliases::new(true, 1);
        assert_eq!(aliases.assign("a/b"), Some(("a/b".into(), 1)));
        assert_eq!(aliases.assign("a/b"), Some((String::new(), 1)));
        assert_eq!(
            aliases.assign("c"),
            None,
            "past the broker's maximum: no alias"
        );
        assert_eq!(Aliases::new(false, 10).assign("a/b"), None);
    }

    #[test]
    fn repeated_user_properties_keep_every_value_in_order() {
        let given: UserProperties =
            serde_json::from_str(r#"{"origin": "x", "tag": ["a", "b"]}"#).expect("user properties");
        let pairs =
            [("origin", "x"), ("tag", "a"), ("tag", "b")].map(|(k, v)| (k.into(), v.into()));
        assert_eq!(given.0, pairs);
        assert_eq!(
            user_properties_json(&given.0),
            json!({"origin": "x", "tag": ["a", "b"]})
        );
    }

    #[test]
    fn publish_properties_round_trip_in_mqtt_js_names() {
        let given = json!({"contentType": "application/json", "correlationData": "req-42",
                           "responseTopic": "r", "payloadFormatIndicator": true,
                           "userProperties": {"k": "v"}});
        let props = publish_properties(Some(&given)).expect("properties");
        assert_eq!(publish_properties_json(&props), given);
    }
}
