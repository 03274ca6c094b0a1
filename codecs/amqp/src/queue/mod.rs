//! The pure state machine of one AMQP queue: messages by offset, each ready or delivered
//! (to a consumer or `basic.get`, under a delivery tag of a channel) until acknowledged;
//! consumers with prefetch served round-robin; nack/reject with requeue or dead-lettering;
//! TTL, length limits and overflow; purge. No I/O, no clock: `now` is a parameter.

mod args;
mod error;
mod message;
mod state;

pub use args::{Overflow, QueueArguments};
pub use error::QueueError;
pub use message::{ChannelKey, ConsumerId, DeadLetter, DeathReason, Delivery, Message, Offset};
pub use state::{Consumer, OnCancel, PublishOutcome, Queue, parse_expiration};
