//! AMQP 0-9-1 reply codes (the `<constant>` elements of `amqp0-9-1.xml`), shared by the error enums of every layer, so that the session can turn any error into the
//! right `channel.close` or `connection.close`.

use std::fmt;

/// A reply code of AMQP 0-9-1, with the name RabbitMQ prints in its `reply-text`
/// (`"NOT_FOUND - no queue 'q'"`), which client libraries and operators recognise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplyCode {
    /// 200: the method completed successfully.
    ReplySuccess,
    /// 311: content too large for the server at present (RabbitMQ does not use it).
    ContentTooLarge,
    /// 312: a mandatory message could not be routed (basic.return).
    NoRoute,
    /// 313: an immediate message had no consumer (basic.return).
    NoConsumers,
    /// 320: an operator closed the connection.
    ConnectionForced,
    /// 402: unknown virtual host path.
    InvalidPath,
    /// 403: access refused (credentials, reserved names, the default exchange).
    AccessRefused,
    /// 404: no such exchange or queue.
    NotFound,
    /// 405: the resource is locked (exclusive queue of another connection).
    ResourceLocked,
    /// 406: precondition failed (inequivalent declare, unknown delivery tag, bad argument).
    PreconditionFailed,
    /// 501: a malformed frame.
    FrameError,
    /// 502: a frame with illegal field values.
    SyntaxError,
    /// 503: an invalid sequence of frames or a method the server does not accept.
    CommandInvalid,
    /// 504: a channel that is not open, or opened twice.
    ChannelError,
    /// 505: a frame that was not expected here (content frames out of order).
    UnexpectedFrame,
    /// 506: the server lacks resources to complete the method.
    ResourceError,
    /// 530: the operation is not allowed (e.g. a reused consumer tag).
    NotAllowed,
    /// 540: functionality the server does not implement.
    NotImplemented,
    /// 541: a server-side fault.
    InternalError,
}

/// Whether an error closes its channel or the whole connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorScope {
    /// `channel.close`: the connection and its other channels go on.
    Channel,
    /// `connection.close`: the whole connection is closed.
    Connection,
}

impl ReplyCode {
    /// The numeric code sent in `channel.close` / `connection.close` / `basic.return`.
    pub fn code(self) -> u16 {
        match self {
            Self::ReplySuccess => 200,
            Self::ContentTooLarge => 311,
            Self::NoRoute => 312,
            Self::NoConsumers => 313,
            Self::ConnectionForced => 320,
            Self::InvalidPath => 402,
            Self::AccessRefused => 403,
            Self::NotFound => 404,
            Self::ResourceLocked => 405,
            Self::PreconditionFailed => 406,
            Self::FrameError => 501,
            Self::SyntaxError => 502,
            Self::CommandInvalid => 503,
            Self::ChannelError => 504,
            Self::UnexpectedFrame => 505,
            Self::ResourceError => 506,
            Self::NotAllowed => 530,
            Self::NotImplemented => 540,
            Self::InternalError => 541,
        }
    }

    /// The constant's name as RabbitMQ spells it at the start of `reply-text`.
    pub fn name(self) -> &'static str {
        match self {
            Self::ReplySuccess => "REPLY_SUCCESS",
            Self::ContentTooLarge => "CONTENT_TOO_LARGE",
            Self::NoRoute => "NO_ROUTE",
            Self::NoConsumers => "NO_CONSUMERS",
            Self::ConnectionForced => "CONNECTION_FORCED",
            Self::InvalidPath => "INVALID_PATH",
            Self::AccessRefused => "ACCESS_REFUSED",
            Self::NotFound => "NOT_FOUND",
            Self::ResourceLocked => "RESOURCE_LOCKED",
            Self::PreconditionFailed => "PRECONDITION_FAILED",
            Self::FrameError => "FRAME_ERROR",
            Self::SyntaxError => "SYNTAX_ERROR",
            Self::CommandInvalid => "COMMAND_INVALID",
            Self::ChannelError => "CHANNEL_ERROR",
            Self::UnexpectedFrame => "UNEXPECTED_FRAME",
            Self::ResourceError => "RESOURCE_ERROR",
            Self::NotAllowed => "NOT_ALLOWED",
            Self::NotImplemented => "NOT_IMPLEMENTED",
            Self::InternalError => "INTERNAL_ERROR",
        }
    }

    /// The scope the spec gives the code: the XML marks 320, 402 and 501–541 as
    /// `class="hard-error"` (connection) and 311–313, 403–406 as `soft-error` (channel).
    /// A layer may still raise a soft code on the connection, e.g. 403 during the handshake,
    /// when no channel exists.
    pub fn default_scope(self) -> ErrorScope {
        match self.code() {
            320 | 402 | 500..=599 => ErrorScope::Connection,
            _ => ErrorScope::Channel,
        }
    }

    /// The `reply-text` for this code: `"NAME - detail"`, cut to the 255 bytes a short string
    /// can hold (on a character boundary, so it stays valid UTF-8).
    pub fn reply_text(self, detail: &str) -> String {
        let text = format!("{} - {}", self.name(), detail);
        truncate_utf8(text, 255)
    }
}

impl fmt::Display for ReplyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code(), self.name())
    }
}

/// Cuts `s` to at most `max` bytes without splitting a character.
pub(crate) fn truncate_utf8(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hard_errors_close_the_connection_and_soft_errors_the_channel() {
        assert_eq!(
            ReplyCode::FrameError.default_scope(),
            ErrorScope::Connection
        );
        assert_eq!(
            ReplyCode::ConnectionForced.default_scope(),
            ErrorScope::Connection
        );
        assert_eq!(ReplyCode::NotFound.default_scope(), ErrorScope::Channel);
        assert_eq!(
            ReplyCode::PreconditionFailed.default_scope(),
            ErrorScope::Channel
        );
    }

    #[test]
    fn codes_match_the_numbers_amq_protocol_generated_from_the_spec() {
        use amq_protocol::protocol::{AMQPHardError, AMQPSoftError};
        assert_eq!(
            ReplyCode::FrameError.code(),
            AMQPHardError::FRAMEERROR.get_id()
        );
        assert_eq!(
            ReplyCode::NotImplemented.code(),
            AMQPHardError::NOTIMPLEMENTED.get_id()
        );
        assert_eq!(
            ReplyCode::UnexpectedFrame.code(),
            AMQPHardError::UNEXPECTEDFRAME.get_id()
        );
        assert_eq!(ReplyCode::NotFound.code(), AMQPSoftError::NOTFOUND.get_id());
        assert_eq!(
            ReplyCode::PreconditionFailed.code(),
            AMQPSoftError::PRECONDITIONFAILED.get_id()
        );
    }

    #[test]
    fn reply_text_is_cut_to_a_short_string_on_a_char_boundary() {
        let detail = "é".repeat(200);
        let text = ReplyCode::NotFound.reply_text(&detail);
        assert!(text.len() <= 255);
        assert!(text.starts_with("NOT_FOUND - é"));
    }
}
