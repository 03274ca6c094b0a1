//! The routing model of AMQP 0-9-1: exchanges, bindings, and where a published message goes.
//! Pure: no I/O, no clock, no knowledge of queue contents.
//!
//! - [`Topology`]: the exchanges (with the predeclared ones), queue names and bindings of a
//!   virtual host; declare, delete, bind, unbind, and [`Topology::route`], which follows
//!   exchange-to-exchange bindings and alternate exchanges, with cycle protection and each
//!   queue once.
//! - [`topic`]: the topic-exchange trie; [`headers`]: `x-match` semantics.
//! - [`mqtt`]: MQTT topics ↔ AMQP routing keys for `amq.topic`, with an escaping rule.

mod error;
mod exchange;
pub mod headers;
pub mod mqtt;
pub mod topic;
mod topology;

pub use error::ModelError;
pub use exchange::{Binding, Destination, Exchange, ExchangeKind};
pub use headers::{HeadersMatch, XMatch};
pub use mqtt::{amqp_to_mqtt_filter, amqp_to_mqtt_topic, mqtt_to_amqp};
pub use topic::{TopicTrie, split_words};
pub use topology::{Declared, Topology};
