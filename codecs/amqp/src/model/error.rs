//! Errors of the routing model, with the reply codes RabbitMQ uses for them.

use thiserror::Error;

use crate::{ErrorScope, ReplyCode};

/// Why a declare, bind, delete or route was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ModelError {
    /// 404: `exchange.declare passive`, a bind, a publish naming a missing exchange.
    #[error("no exchange '{name}'")]
    ExchangeNotFound { name: String },

    /// 404: a bind naming a missing queue.
    #[error("no queue '{name}'")]
    QueueNotFound { name: String },

    /// 403: names starting with `amq.` are reserved for the broker's own exchanges.
    #[error("exchange name '{name}' contains reserved prefix 'amq.*'")]
    ReservedName { name: String },

    /// 403: the default exchange cannot be declared, deleted or bound (§3.1.3.1).
    #[error("operation not permitted on the default exchange")]
    DefaultExchange,

    /// 403: publishing directly to an internal exchange.
    #[error("cannot publish to internal exchange '{name}'")]
    InternalExchange { name: String },

    /// 406: redeclaring an exchange with different properties.
    #[error(
        "inequivalent arg '{arg}' for exchange '{name}': received '{received}' but current is '{current}'"
    )]
    Inequivalent {
        name: String,
        arg: &'static str,
        received: String,
        current: String,
    },

    /// 406: `exchange.delete if-unused` on an exchange that still has bindings.
    #[error("exchange '{name}' in use")]
    InUse { name: String },

    /// 406: a binding argument with an invalid value (e.g. `x-match`).
    #[error("invalid binding argument '{arg}': {reason}")]
    InvalidBindingArgument { arg: &'static str, reason: String },

    /// 503: `exchange.declare` with a type the broker does not know (RabbitMQ closes the
    /// connection with COMMAND_INVALID).
    #[error("unknown exchange type '{kind}'")]
    UnknownExchangeType { kind: String },

    /// An AMQP routing key that has no faithful MQTT topic (see [`super::mqtt`]); messages
    /// with it are not delivered to MQTT subscribers.
    #[error("routing key '{key}' has no MQTT topic: {reason}")]
    UnmappableTopic { key: String, reason: &'static str },
}

impl ModelError {
    /// The reply code to close with.
    pub fn reply_code(&self) -> ReplyCode {
        use ModelError::*;
        match self {
            ExchangeNotFound { .. } | QueueNotFound { .. } => ReplyCode::NotFound,
            ReservedName { .. } | DefaultExchange | InternalExchange { .. } => {
                ReplyCode::AccessRefused
            }
            Inequivalent { .. } | InUse { .. } | InvalidBindingArgument { .. } => {
                ReplyCode::PreconditionFailed
            }
            UnknownExchangeType { .. } => ReplyCode::CommandInvalid,
            UnmappableTopic { .. } => ReplyCode::NoRoute,
        }
    }

    /// Channel for the soft codes, connection for COMMAND_INVALID.
    pub fn scope(&self) -> ErrorScope {
        self.reply_code().default_scope()
    }

    /// `reply-text` as RabbitMQ formats it.
    pub fn reply_text(&self) -> String {
        self.reply_code().reply_text(&self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_exchange_is_a_channel_level_not_found() {
        let err = ModelError::ExchangeNotFound { name: "x".into() };
        assert_eq!(err.reply_code().code(), 404);
        assert_eq!(err.scope(), ErrorScope::Channel);
        assert_eq!(err.reply_text(), "NOT_FOUND - no exchange 'x'");
    }

    #[test]
    fn unknown_exchange_type_closes_the_connection() {
        let err = ModelError::UnknownExchangeType {
            kind: "x-foo".into(),
        };
        assert_eq!(err.reply_code().code(), 503);
        assert_eq!(err.scope(), ErrorScope::Connection);
    }
}
