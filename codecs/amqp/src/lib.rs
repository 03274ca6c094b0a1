//! AMQP 0-9-1 front end.
//!
//! Three tiers, as DESIGN.md asks, of which this crate holds the first two so far:
//!
//! - [`wire`]: pure, sans-I/O framing on top of `amq-protocol`'s frame types, parser and
//!   generator: decode and encode frames, the protocol header, the frames the broker sends,
//!   content assembly and SASL responses.
//! - [`model`]: exchanges, bindings and routing (direct, fanout, topic, headers, exchange to
//!   exchange), and the MQTT ↔ AMQP topic translation used by `amq.topic`.
//! - [`queue`]: the state machine of one queue: ready and unacknowledged messages, consumers with
//!   prefetch, acks, requeue, TTL, length limits and dead-lettering.
//!
//! The `session` (connection and channel state machines) and `conn` (the socket loop) tiers come
//! next and build on these. Every error type maps to an AMQP reply code through [`ReplyCode`].

pub mod model;
pub mod queue;
mod reply;
pub mod wire;

pub use reply::{ErrorScope, ReplyCode};
