//! Arguments of the AMQP commands, in amqplib's terms.

use lapin::types::{AMQPValue, FieldTable, ShortString};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::values::{PublishOptions, to_amqp, to_table};

/// The channel a command runs on: {channel, confirm}, beside any command's own arguments.
#[derive(Deserialize)]
pub struct OnChannel {
    pub channel: Option<u16>,
    pub confirm: Option<bool>,
}

#[derive(Deserialize)]
pub struct ConnectArgs {
    pub url: String,
}

#[derive(Deserialize)]
pub struct ExchangeArgs {
    pub exchange: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub options: DeclareOptions,
}

#[derive(Deserialize)]
pub struct QueueArgs {
    #[serde(default)]
    pub queue: String,
    #[serde(default)]
    pub options: DeclareOptions,
}

/// assertExchange / assertQueue options; the x- arguments amqplib has names for are added to
/// `arguments`.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct DeclareOptions {
    pub durable: Option<bool>,
    pub exclusive: Option<bool>,
    pub auto_delete: Option<bool>,
    pub internal: Option<bool>,
    arguments: Option<Map<String, Value>>,
    alternate_exchange: Option<String>,
    message_ttl: Option<Value>,
    expires: Option<Value>,
    dead_letter_exchange: Option<String>,
    dead_letter_routing_key: Option<String>,
    max_length: Option<Value>,
    max_priority: Option<Value>,
    overflow: Option<String>,
    queue_mode: Option<String>,
}

impl DeclareOptions {
    pub fn arguments(&self) -> FieldTable {
        let mut table = self.arguments.as_ref().map(to_table).unwrap_or_default();
        let mut put = |name: &str, v: Option<AMQPValue>| {
            if let Some(v) = v {
                table.insert(ShortString::from(name), v);
            }
        };
        let text = |s: &Option<String>| s.as_ref().map(|s| to_amqp(&Value::String(s.clone())));
        let number = |v: &Option<Value>| v.as_ref().map(to_amqp);
        put("alternate-exchange", text(&self.alternate_exchange));
        put("x-message-ttl", number(&self.message_ttl));
        put("x-expires", number(&self.expires));
        put("x-dead-letter-exchange", text(&self.dead_letter_exchange));
        put(
            "x-dead-letter-routing-key",
            text(&self.dead_letter_routing_key),
        );
        put("x-max-length", number(&self.max_length));
        put("x-max-priority", number(&self.max_priority));
        put("x-overflow", text(&self.overflow));
        put("x-queue-mode", text(&self.queue_mode));
        table
    }
}

#[derive(Deserialize)]
pub struct BindArgs {
    pub queue: String,
    pub exchange: String,
    #[serde(default)]
    pub pattern: String,
    pub args: Option<Map<String, Value>>,
}

#[derive(Deserialize)]
pub struct DeleteQueueArgs {
    pub queue: String,
    #[serde(default)]
    pub options: DeleteOptions,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct DeleteOptions {
    pub if_unused: Option<bool>,
    pub if_empty: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublishArgs {
    #[serde(default)]
    pub exchange: String,
    #[serde(default)]
    pub routing_key: String,
    #[serde(default)]
    pub body: String,
    /// publishAllConfirmed's bodies.
    #[serde(default)]
    pub bodies: Vec<String>,
    #[serde(default)]
    pub options: PublishOptions,
}

#[derive(Deserialize)]
pub struct PrefetchArgs {
    pub count: u16,
    pub global: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumeArgs {
    pub queue: String,
    pub no_ack: Option<bool>,
    pub exclusive: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExpectArgs {
    pub consumer: String,
    pub count: usize,
    pub timeout_ms: Option<u64>,
}

#[derive(Deserialize)]
pub struct CancelArgs {
    pub consumer: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetArgs {
    pub queue: String,
    pub no_ack: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SettleArgs {
    pub delivery_tag: u64,
    pub multiple: Option<bool>,
    pub requeue: Option<bool>,
}
