//! The client library this process drives: one per process, chosen by the first argument.

use serde_json::Value;

use crate::error::Result;
use crate::{amqp, kafka, mqtt};

pub enum Library {
    Kafka(kafka::Kafka),
    Mqtt(mqtt::Mqtt),
    Amqp(amqp::Amqp),
}

impl Library {
    pub fn named(name: &str) -> Option<Self> {
        match name {
            "rskafka" => Some(Self::Kafka(kafka::Kafka::default())),
            "rumqttc" => Some(Self::Mqtt(mqtt::Mqtt::default())),
            "lapin" => Some(Self::Amqp(amqp::Amqp::default())),
            _ => None,
        }
    }

    /// Runs one command (`line`: the whole command, arguments included); `op` is never
    /// "close" (the protocol keeps that for the end of input).
    pub async fn call(&self, op: &str, line: &str) -> Result<Value> {
        match self {
            Self::Kafka(k) => k.call(op, line).await,
            Self::Mqtt(m) => m.call(op, line).await,
            Self::Amqp(a) => a.call(op, line).await,
        }
    }

    /// Closes the library's connections at the end of input.
    pub async fn close(&self) {
        match self {
            Self::Kafka(k) => k.close().await,
            Self::Mqtt(m) => m.close().await,
            Self::Amqp(a) => a.close().await,
        }
    }
}
