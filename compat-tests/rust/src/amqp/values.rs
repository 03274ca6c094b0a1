//! AMQP field tables and message properties between JSON and lapin's types, in amqplib's
//! terms: numbers, text, booleans, arrays and objects one way; 64-bit integers as numbers and
//! byte strings as text the other.

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use serde::Deserialize;
use serde_json::{Map, Number, Value, json};

use crate::error::{AdapterError, Result};

/// A JSON value as a field-table value. Integers are signed 32-bit where they fit and 64-bit
/// otherwise (as pika and amqplib write them); text is a long string.
pub fn to_amqp(v: &Value) -> AMQPValue {
    match v {
        Value::Null => AMQPValue::Void,
        Value::Bool(b) => AMQPValue::Boolean(*b),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => match i32::try_from(i) {
                Ok(small) => AMQPValue::LongInt(small),
                Err(_) => AMQPValue::LongLongInt(i),
            },
            (None, Some(f)) => AMQPValue::Double(f),
            (None, None) => AMQPValue::Void,
        },
        Value::String(s) => AMQPValue::LongString(LongString::from(s.as_str())),
        Value::Array(items) => AMQPValue::FieldArray(FieldArray::from(
            items.iter().map(to_amqp).collect::<Vec<_>>(),
        )),
        Value::Object(map) => AMQPValue::FieldTable(to_table(map)),
    }
}

pub fn to_table(map: &Map<String, Value>) -> FieldTable {
    let mut table = FieldTable::default();
    for (k, v) in map {
        table.insert(ShortString::from(k.as_str()), to_amqp(v));
    }
    table
}

pub fn to_json(v: &AMQPValue) -> Value {
    match v {
        AMQPValue::Boolean(b) => json!(b),
        AMQPValue::ShortShortInt(i) => json!(i),
        AMQPValue::ShortShortUInt(i) => json!(i),
        AMQPValue::ShortInt(i) => json!(i),
        AMQPValue::ShortUInt(i) => json!(i),
        AMQPValue::LongInt(i) => json!(i),
        AMQPValue::LongUInt(i) => json!(i),
        AMQPValue::LongLongInt(i) => json!(i),
        AMQPValue::Float(f) => json!(f),
        AMQPValue::Double(f) => json!(f),
        AMQPValue::DecimalValue(d) => {
            let value = f64::from(d.value) / 10f64.powi(i32::from(d.scale));
            Number::from_f64(value).map_or(Value::Null, Value::Number)
        }
        AMQPValue::ShortString(s) => json!(s.as_str()),
        AMQPValue::LongString(s) => json!(String::from_utf8_lossy(s.as_bytes())),
        AMQPValue::FieldArray(items) => {
            Value::Array(items.as_slice().iter().map(to_json).collect())
        }
        AMQPValue::Timestamp(t) => json!(t),
        AMQPValue::FieldTable(t) => table_json(t),
        AMQPValue::ByteArray(b) => json!(String::from_utf8_lossy(b.as_slice())),
        AMQPValue::Void => Value::Null,
    }
}

pub fn table_json(t: &FieldTable) -> Value {
    Value::Object(
        t.inner()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), to_json(v)))
            .collect(),
    )
}

/// amqplib's publish options: the message properties, plus `mandatory`.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct PublishOptions {
    pub mandatory: Option<bool>,
    persistent: Option<bool>,
    delivery_mode: Option<Value>,
    content_type: Option<String>,
    content_encoding: Option<String>,
    headers: Option<Map<String, Value>>,
    priority: Option<u8>,
    correlation_id: Option<String>,
    reply_to: Option<String>,
    /// Milliseconds, as text or a number.
    expiration: Option<Value>,
    message_id: Option<String>,
    timestamp: Option<u64>,
    #[serde(rename = "type")]
    kind: Option<String>,
    user_id: Option<String>,
    app_id: Option<String>,
}

impl PublishOptions {
    pub fn properties(&self) -> Result<BasicProperties> {
        let short = |s: &String| ShortString::from(s.as_str());
        let mut p = BasicProperties::default();
        if let Some(mode) = self.delivery_mode()? {
            p = p.with_delivery_mode(mode);
        }
        if let Some(v) = &self.content_type {
            p = p.with_content_type(short(v));
        }
        if let Some(v) = &self.content_encoding {
            p = p.with_content_encoding(short(v));
        }
        if let Some(v) = &self.headers {
            p = p.with_headers(to_table(v));
        }
        if let Some(v) = self.priority {
            p = p.with_priority(v);
        }
        if let Some(v) = &self.correlation_id {
            p = p.with_correlation_id(short(v));
        }
        if let Some(v) = &self.reply_to {
            p = p.with_reply_to(short(v));
        }
        if let Some(v) = &self.expiration {
            let text = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            p = p.with_expiration(ShortString::from(text));
        }
        if let Some(v) = &self.message_id {
            p = p.with_message_id(short(v));
        }
        if let Some(v) = self.timestamp {
            p = p.with_timestamp(v);
        }
        if let Some(v) = &self.kind {
            p = p.with_type(short(v));
        }
        if let Some(v) = &self.user_id {
            p = p.with_user_id(short(v));
        }
        if let Some(v) = &self.app_id {
            p = p.with_app_id(short(v));
        }
        Ok(p)
    }

    /// `persistent: true` is delivery mode 2 and false 1; `deliveryMode` may also be given as
    /// a boolean (true: persistent) or the number itself.
    fn delivery_mode(&self) -> Result<Option<u8>> {
        let mode = match (&self.delivery_mode, self.persistent.as_ref()) {
            (Some(Value::Bool(b)), _) | (None, Some(b)) => Some(if *b { 2 } else { 1 }),
            (Some(Value::Number(n)), _) => n.as_u64().and_then(|n| u8::try_from(n).ok()),
            (None, None) => None,
            (Some(other), _) => {
                return Err(AdapterError::State(format!(
                    "deliveryMode {other}: want 1, 2 or a boolean"
                )));
            }
        };
        Ok(mode)
    }
}

/// Message properties as amqplib reports them (absent ones left out).
pub fn properties_json(p: &BasicProperties) -> Value {
    let mut out = Map::new();
    let mut text = |name: &str, v: &Option<ShortString>| {
        if let Some(v) = v {
            out.insert(name.into(), json!(v.as_str()));
        }
    };
    text("contentType", p.content_type());
    text("contentEncoding", p.content_encoding());
    text("correlationId", p.correlation_id());
    text("replyTo", p.reply_to());
    text("expiration", p.expiration());
    text("messageId", p.message_id());
    text("type", p.kind());
    text("userId", p.user_id());
    text("appId", p.app_id());
    text("clusterId", p.cluster_id());
    if let Some(h) = p.headers() {
        out.insert("headers".into(), table_json(h));
    }
    if let Some(m) = p.delivery_mode() {
        out.insert("deliveryMode".into(), json!(m));
    }
    if let Some(v) = p.priority() {
        out.insert("priority".into(), json!(v));
    }
    if let Some(v) = p.timestamp() {
        out.insert("timestamp".into(), json!(v));
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_values_round_trip_through_json() {
        let given = json!({"n": 1, "big": 1_i64 << 40, "f": 0.5, "s": "text", "b": true,
                           "list": [1, "two"], "table": {"x": null}});
        let Value::Object(map) = &given else {
            unreachable!("an object literal")
        };
        assert_eq!(table_json(&to_table(map)), given);
        assert!(matches!(to_amqp(&json!(7)), AMQPValue::LongInt(7)));
        assert!(matches!(
            to_amqp(&json!(1_i64 << 40)),
            AMQPValue::LongLongInt(_)
        ));
    }

    #[test]
    fn persistent_is_delivery_mode_two() {
        let options: PublishOptions =
            serde_json::from_value(json!({"persistent": true, "headers": {"a": 1}}))
                .expect("options");
        let p = options.properties().expect("properties");
        assert_eq!(*p.delivery_mode(), Some(2));
        assert_eq!(
            properties_json(&p),
            json!({"deliveryMode": 2, "headers": {"a": 1}})
        );
    }
}
