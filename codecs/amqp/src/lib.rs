//! AMQP 0-9-1 front end.
//!
//! Three tiers, as DESIGN.md asks:
//!
//! - [`wire`]: pure, sans-I/O framing on top of `amq-protocol`'s frame types, parser and
//!   generator: decode and encode frames, the protocol header, the frames the broker sends,
//!   content assembly and SASL responses.
//! - [`session`]: the per-connection state machine (handshake, channels, every class's
//!   methods), over the broker-wide state in [`broker`]: vhosts, exchanges and queues
//!   ([`model`], [`queue`]), the publish path, dispatch to consumers, durability.
//! - [`conn`]: the socket loop: buffers, frame size limits, heartbeats.
//!
//! Every error type maps to an AMQP reply code through [`ReplyCode`], and the session closes
//! channels and connections through one [`error::AmqpError`].

pub mod broker;
pub mod conn;
pub mod error;
pub mod mapping;
pub mod metrics;
pub mod model;
pub mod queue;
mod reply;
pub mod session;
pub mod settings;
pub mod wire;

/// The `amq-protocol` types this crate's API uses, for callers that build properties.
pub use amq_protocol::{protocol::BasicProperties, types as amqp_types};
pub use broker::{AmqpBroker, BRIDGED_EXCHANGE, BRIDGED_VHOST, Published, TopicBridge};
pub use metrics::AmqpMetrics;
pub use reply::{ErrorScope, ReplyCode};
pub use settings::{AmqpSettings, FlowSettings};
