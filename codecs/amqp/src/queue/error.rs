//! Errors of the queue tier.

use thiserror::Error;

use crate::{ErrorScope, ReplyCode};

/// Why a queue operation was refused. All are channel-level 406 PRECONDITION_FAILED, as in
/// RabbitMQ; none is retryable as sent.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum QueueError {
    /// `queue.declare` with an argument of the wrong type or range.
    #[error("invalid arg '{arg}': {reason}")]
    InvalidArgument { arg: &'static str, reason: String },

    /// `basic.publish` with an `expiration` property that is not a non-negative integer of
    /// milliseconds.
    #[error("invalid expiration '{value}'")]
    InvalidExpiration { value: String },

    /// `basic.ack` / `nack` / `reject` with a delivery tag this channel does not hold.
    #[error("unknown delivery tag {tag}")]
    UnknownDeliveryTag { tag: u64 },
}

impl QueueError {
    pub fn reply_code(&self) -> ReplyCode {
        ReplyCode::PreconditionFailed
    }

    pub fn scope(&self) -> ErrorScope {
        ErrorScope::Channel
    }

    /// The method to blame: `queue.declare`, `basic.publish`, or `basic.ack` (the session
    /// substitutes `basic.nack` / `basic.reject` when those carried the tag).
    pub fn class_method(&self) -> (u16, u16) {
        match self {
            QueueError::InvalidArgument { .. } => (50, 10),
            QueueError::InvalidExpiration { .. } => (60, 40),
            QueueError::UnknownDeliveryTag { .. } => (60, 80),
        }
    }

    /// `reply-text` as RabbitMQ formats it.
    pub fn reply_text(&self) -> String {
        self.reply_code().reply_text(&self.to_string())
    }
}
