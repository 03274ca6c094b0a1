//! The error the session closes a channel or the connection with: every layer's error
//! (wire, model, queue, storage) becomes one of these, carrying the reply code, the scope and
//! the method to blame, so there is exactly one place that writes `channel.close` /
//! `connection.close`.

use crate::model::ModelError;
use crate::queue::QueueError;
use crate::wire::WireError;
use crate::{ErrorScope, ReplyCode};

/// An AMQP exception: a soft one closes its channel, a hard one the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {detail}")]
pub struct AmqpError {
    pub code: ReplyCode,
    pub scope: ErrorScope,
    /// What a human reads after `"NAME - "` in the reply text.
    pub detail: String,
    /// Class and method that caused it; (0, 0) until the session fills in the method it was
    /// handling.
    pub class_method: (u16, u16),
    /// The channel a soft error closes, filled in by the session.
    pub channel_hint: Option<u16>,
}

impl AmqpError {
    /// An exception that closes the channel.
    pub fn channel(code: ReplyCode, detail: impl Into<String>) -> Self {
        Self {
            code,
            scope: ErrorScope::Channel,
            detail: detail.into(),
            class_method: (0, 0),
            channel_hint: None,
        }
    }

    /// An exception that closes the connection.
    pub fn connection(code: ReplyCode, detail: impl Into<String>) -> Self {
        Self {
            code,
            scope: ErrorScope::Connection,
            detail: detail.into(),
            class_method: (0, 0),
            channel_hint: None,
        }
    }

    /// A storage or metadata failure: 541 INTERNAL_ERROR on the connection, as RabbitMQ does
    /// when a queue process crashes under a client.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        Self::connection(ReplyCode::InternalError, detail.to_string())
    }

    /// Blames `class_method` unless a more precise method was already set.
    pub fn at(mut self, class_method: (u16, u16)) -> Self {
        if self.class_method == (0, 0) {
            self.class_method = class_method;
        }
        self
    }

    /// Names the channel a soft error closes, unless one was named already.
    pub fn on_channel(mut self, channel: u16) -> Self {
        self.channel_hint.get_or_insert(channel);
        self
    }

    /// `reply-text` as RabbitMQ formats it: `"NOT_FOUND - no queue 'q'"`.
    pub fn reply_text(&self) -> String {
        self.code.reply_text(&self.detail)
    }
}

impl From<WireError> for AmqpError {
    fn from(e: WireError) -> Self {
        Self {
            code: e.reply_code(),
            scope: e.scope(),
            detail: e.to_string(),
            class_method: e.class_method(),
            channel_hint: None,
        }
    }
}

impl From<ModelError> for AmqpError {
    fn from(e: ModelError) -> Self {
        Self {
            code: e.reply_code(),
            scope: e.scope(),
            detail: e.to_string(),
            class_method: (0, 0),
            channel_hint: None,
        }
    }
}

impl From<QueueError> for AmqpError {
    fn from(e: QueueError) -> Self {
        Self {
            code: e.reply_code(),
            scope: e.scope(),
            detail: e.to_string(),
            class_method: e.class_method(),
            channel_hint: None,
        }
    }
}

impl From<switchboard_router::RouterError> for AmqpError {
    fn from(e: switchboard_router::RouterError) -> Self {
        Self::internal(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_errors_keep_their_method_and_session_does_not_override_it() {
        let e: AmqpError = QueueError::UnknownDeliveryTag { tag: 7 }.into();
        let e = e.at((60, 90));
        assert_eq!(e.class_method, (60, 80));
        assert_eq!(e.scope, ErrorScope::Channel);
        assert_eq!(
            e.reply_text(),
            "PRECONDITION_FAILED - unknown delivery tag 7"
        );
    }

    #[test]
    fn model_errors_get_the_method_being_handled() {
        let e: AmqpError = ModelError::ExchangeNotFound { name: "x".into() }.into();
        assert_eq!(e.at((40, 10)).class_method, (40, 10));
    }
}
