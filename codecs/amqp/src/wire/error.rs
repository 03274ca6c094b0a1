//! Errors of the wire tier, each mapped to the reply code and scope the spec gives it.

use thiserror::Error;

use crate::{ErrorScope, ReplyCode};

/// Everything that can go wrong turning bytes into frames, frames into commands, or commands
/// into bytes. None is retryable on the same connection: a hard error closes it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WireError {
    /// §4.2.3: the frame type octet is not METHOD, HEADER, BODY or HEARTBEAT.
    #[error("unknown frame type {frame_type}")]
    UnknownFrameType { frame_type: u8 },

    /// §4.2.3 / `connection.tune`: a peer must not send frames larger than the negotiated
    /// frame-max (which counts the 7-octet header and the frame-end octet).
    #[error("frame of {size} bytes is larger than frame_max {frame_max}")]
    FrameTooLarge { size: u64, frame_max: u32 },

    /// §4.2.3: "If the frame-end is not valid it MUST treat this as a fatal protocol error."
    #[error("frame end octet is {found:#04x}, expected 0xce")]
    BadFrameEnd { found: u8 },

    /// §4.2.7: heartbeat frames travel on channel 0 and carry no payload.
    #[error("heartbeat frame on channel {channel} with {size} payload bytes")]
    BadHeartbeat { channel: u16, size: u32 },

    /// A method frame whose payload cannot hold even the class and method ids.
    #[error("method frame payload of {size} bytes is too short")]
    MethodTooShort { size: usize },

    /// A class id that AMQP 0-9-1 does not define (e.g. 0-9's `file` or `stream`).
    #[error("unknown class {class_id}")]
    UnknownClass { class_id: u16 },

    /// A method id that the class does not define.
    #[error("unknown method {method_id} of class {class_id}")]
    UnknownMethod { class_id: u16, method_id: u16 },

    /// A method whose arguments are truncated, have trailing bytes or invalid values.
    #[error("cannot decode the arguments of method {class_id}.{method_id}")]
    MalformedMethod { class_id: u16, method_id: u16 },

    /// A content header frame that cannot be decoded.
    #[error("cannot decode the content header frame")]
    MalformedContentHeader,

    /// Field tables nest deeper than the limit. `amq-protocol` parses tables recursively, so an
    /// unbounded depth would let a few kilobytes overflow the stack.
    #[error("field tables nested deeper than {limit} levels")]
    NestingTooDeep { limit: usize },

    /// The client sent a method that only the server sends (e.g. `basic.deliver`).
    #[error("method {class_id}.{method_id} is not accepted from a client")]
    ServerOnlyMethod { class_id: u16, method_id: u16 },

    /// §4.2.6: content frames out of order: a header without a content method, a body
    /// without a header, or a method while content was still expected.
    #[error("unexpected {got} frame on channel {channel}, expected {expected}")]
    UnexpectedFrame {
        channel: u16,
        expected: &'static str,
        got: &'static str,
    },

    /// The content header's class does not match the method it follows.
    #[error("content header for class {class_id} after a basic method")]
    ContentClassMismatch { class_id: u16 },

    /// Body frames carried more bytes than the content header announced.
    #[error("content body has {received} bytes, the header announced {declared}")]
    BodySizeMismatch { declared: u64, received: u64 },

    /// A published message larger than the configured maximum (RabbitMQ's
    /// `max_message_size`, answered with a channel-level 406).
    #[error("message size {size} is larger than the configured max size {max}")]
    MessageTooLarge { size: u64, max: u64 },

    /// The peer asked for a SASL mechanism the server does not offer.
    #[error("unknown authentication mechanism '{mechanism}'")]
    UnknownMechanism { mechanism: String },

    /// The SASL response does not have the form the mechanism requires.
    #[error("malformed {mechanism} response: {reason}")]
    BadSaslResponse {
        mechanism: &'static str,
        reason: &'static str,
    },

    /// A short string field (≤ 255 bytes on the wire) given a longer value when encoding,
    /// e.g. an MQTT topic too long to be an AMQP routing key.
    #[error("{field} is {len} bytes, longer than the 255 a short string holds")]
    ShortStringTooLong { field: &'static str, len: usize },

    /// The content header frame alone does not fit in the peer's frame_max.
    #[error("content header of {size} bytes does not fit in frame_max {frame_max}")]
    HeaderTooLarge { size: usize, frame_max: u32 },

    /// `amq-protocol`'s generator failed (it does not with a growable buffer; kept total).
    #[error("cannot encode frame: {reason}")]
    Encode { reason: String },
}

impl WireError {
    /// The reply code to close with.
    pub fn reply_code(&self) -> ReplyCode {
        use WireError::*;
        match self {
            UnknownFrameType { .. }
            | FrameTooLarge { .. }
            | BadFrameEnd { .. }
            | BadHeartbeat { .. }
            | MethodTooShort { .. }
            | MalformedMethod { .. }
            | MalformedContentHeader
            | NestingTooDeep { .. } => ReplyCode::FrameError,
            // A whole class the server does not implement is "functionality not implemented";
            // a method id that does not exist in a known class, or one only the server may
            // send, is an invalid command (RabbitMQ answers both with COMMAND_INVALID).
            UnknownClass { .. } => ReplyCode::NotImplemented,
            UnknownMethod { .. } | ServerOnlyMethod { .. } | UnknownMechanism { .. } => {
                ReplyCode::CommandInvalid
            }
            UnexpectedFrame { .. } | ContentClassMismatch { .. } | BodySizeMismatch { .. } => {
                ReplyCode::UnexpectedFrame
            }
            MessageTooLarge { .. } => ReplyCode::PreconditionFailed,
            BadSaslResponse { .. } => ReplyCode::AccessRefused,
            ShortStringTooLong { .. } | HeaderTooLarge { .. } | Encode { .. } => {
                ReplyCode::InternalError
            }
        }
    }

    /// Whether the error closes the channel or the connection. SASL errors close the
    /// connection although 403 is a soft code: during the handshake there is no channel.
    pub fn scope(&self) -> ErrorScope {
        match self {
            WireError::BadSaslResponse { .. } => ErrorScope::Connection,
            other => other.reply_code().default_scope(),
        }
    }

    /// The class and method ids to report in `connection.close` / `channel.close`
    /// (0, 0 when no method is to blame, as for framing errors).
    pub fn class_method(&self) -> (u16, u16) {
        match self {
            WireError::UnknownClass { class_id } => (*class_id, 0),
            WireError::UnknownMethod {
                class_id,
                method_id,
            }
            | WireError::MalformedMethod {
                class_id,
                method_id,
            }
            | WireError::ServerOnlyMethod {
                class_id,
                method_id,
            } => (*class_id, *method_id),
            // basic.publish is the only method whose content is assembled.
            WireError::MessageTooLarge { .. } => (60, 40),
            // connection.start-ok carries the mechanism and the response.
            WireError::UnknownMechanism { .. } | WireError::BadSaslResponse { .. } => (10, 11),
            _ => (0, 0),
        }
    }

    /// `reply-text` as RabbitMQ formats it: `"FRAME_ERROR - frame end octet is …"`.
    pub fn reply_text(&self) -> String {
        self.reply_code().reply_text(&self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_errors_are_connection_level_frame_errors() {
        let err = WireError::BadFrameEnd { found: 0 };
        assert_eq!(err.reply_code().code(), 501);
        assert_eq!(err.scope(), ErrorScope::Connection);
        assert_eq!(err.class_method(), (0, 0));
    }

    #[test]
    fn sasl_errors_close_the_connection_with_access_refused() {
        let err = WireError::BadSaslResponse {
            mechanism: "PLAIN",
            reason: "no NUL separator",
        };
        assert_eq!(err.reply_code().code(), 403);
        assert_eq!(err.scope(), ErrorScope::Connection);
        assert_eq!(err.class_method(), (10, 11));
    }

    #[test]
    fn oversized_message_closes_only_the_channel() {
        let err = WireError::MessageTooLarge { size: 10, max: 5 };
        assert_eq!(err.reply_code().code(), 406);
        assert_eq!(err.scope(), ErrorScope::Channel);
        assert!(
            err.reply_text()
                .starts_with("PRECONDITION_FAILED - message size 10")
        );
    }
}
