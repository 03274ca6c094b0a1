//! Assembly of content-bearing commands (§4.2.6 "Content Framing"): a `basic.publish` method
//! frame, one content header frame, then body frames until the header's body size is reached.
//!
//! §4.2.6: "Content frames on a specific channel are strictly sequential": no other frame may
//! come between them on that channel. One assembler lives in each channel; the session routes
//! the channel's method, header and body frames to it.

use amq_protocol::frame::AMQPContentHeader;
use amq_protocol::protocol::{AMQPClass, BasicProperties, basic};
use bytes::{Bytes, BytesMut};

use super::error::WireError;
use super::out::BASIC_CLASS_ID;

/// A published message, complete.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishedMessage {
    pub publish: basic::Publish,
    pub properties: BasicProperties,
    pub body: Bytes,
}

/// What one frame did to the assembly.
#[derive(Debug, Clone, PartialEq)]
pub enum Assembly {
    /// A method without content: the channel handles it now.
    Method(AMQPClass),
    /// Part of a message whose content is not complete yet.
    Pending,
    /// The last frame of a message.
    Complete(Box<PublishedMessage>),
}

#[derive(Debug, Default)]
enum State {
    #[default]
    Idle,
    AwaitingHeader(basic::Publish),
    /// Boxed: the properties make this state much larger than the others.
    AwaitingBody(Box<Partial>),
}

#[derive(Debug)]
struct Partial {
    publish: basic::Publish,
    properties: BasicProperties,
    declared: u64,
    body: BytesMut,
}

/// Builds messages out of the frames of one channel.
#[derive(Debug)]
pub struct ContentAssembler {
    channel: u16,
    state: State,
    max_body_size: u64,
}

/// Bytes reserved up front for a body: the declared size, but no more than this, so a header
/// announcing 2^63 bytes costs nothing until the bytes actually arrive.
const MAX_INITIAL_RESERVE: u64 = 1 << 20;

impl ContentAssembler {
    /// An assembler for `channel`. `max_body_size`: the largest message accepted (RabbitMQ's
    /// `max_message_size`, 128 MiB by default); larger ones are refused at the header.
    pub fn new(channel: u16, max_body_size: u64) -> Self {
        Self {
            channel,
            state: State::Idle,
            max_body_size,
        }
    }

    /// Whether a message is in progress (a channel must not be closed in the middle silently).
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Idle)
    }

    /// Drops a message in progress, e.g. when its channel closes.
    pub fn reset(&mut self) {
        self.state = State::Idle;
    }

    /// A method frame on this channel.
    pub fn on_method(&mut self, method: AMQPClass) -> Result<Assembly, WireError> {
        if !self.is_idle() {
            return Err(self.unexpected("method"));
        }
        match method {
            AMQPClass::Basic(basic::AMQPMethod::Publish(publish)) => {
                self.state = State::AwaitingHeader(publish);
                Ok(Assembly::Pending)
            }
            other => Ok(Assembly::Method(other)),
        }
    }

    /// A content header frame on this channel.
    pub fn on_header(&mut self, header: AMQPContentHeader) -> Result<Assembly, WireError> {
        let State::AwaitingHeader(_) = self.state else {
            return Err(self.unexpected("content header"));
        };
        if header.class_id != BASIC_CLASS_ID {
            self.state = State::Idle;
            return Err(WireError::ContentClassMismatch {
                class_id: header.class_id,
            });
        }
        if header.body_size > self.max_body_size {
            self.state = State::Idle;
            return Err(WireError::MessageTooLarge {
                size: header.body_size,
                max: self.max_body_size,
            });
        }
        let State::AwaitingHeader(publish) = std::mem::take(&mut self.state) else {
            return Err(self.unexpected("content header"));
        };
        if header.body_size == 0 {
            return Ok(Assembly::Complete(Box::new(PublishedMessage {
                publish,
                properties: header.properties,
                body: Bytes::new(),
            })));
        }
        let reserve = header.body_size.min(MAX_INITIAL_RESERVE) as usize;
        self.state = State::AwaitingBody(Box::new(Partial {
            publish,
            properties: header.properties,
            declared: header.body_size,
            body: BytesMut::with_capacity(reserve),
        }));
        Ok(Assembly::Pending)
    }

    /// A content body frame on this channel.
    pub fn on_body(&mut self, chunk: &[u8]) -> Result<Assembly, WireError> {
        let State::AwaitingBody(partial) = &mut self.state else {
            return Err(self.unexpected("content body"));
        };
        let declared = partial.declared;
        let received = partial.body.len() as u64 + chunk.len() as u64;
        if received > declared {
            self.state = State::Idle;
            return Err(WireError::BodySizeMismatch { declared, received });
        }
        partial.body.extend_from_slice(chunk);
        if received < declared {
            return Ok(Assembly::Pending);
        }
        match std::mem::take(&mut self.state) {
            State::AwaitingBody(partial) => {
                let Partial {
                    publish,
                    properties,
                    body,
                    ..
                } = *partial;
                Ok(Assembly::Complete(Box::new(PublishedMessage {
                    publish,
                    properties,
                    body: body.freeze(),
                })))
            }
            _ => Err(self.unexpected("content body")),
        }
    }

    /// The error for a frame that does not fit the current state (505 UNEXPECTED_FRAME, as
    /// RabbitMQ answers "expected content header for class 60, got non content header frame").
    fn unexpected(&self, got: &'static str) -> WireError {
        let expected = match self.state {
            State::Idle => "a method",
            State::AwaitingHeader(_) => "a content header",
            State::AwaitingBody(_) => "a content body",
        };
        WireError::UnexpectedFrame {
            channel: self.channel,
            expected,
            got,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(routing_key: &str) -> AMQPClass {
        AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
            exchange: "amq.direct".into(),
            routing_key: routing_key.into(),
            mandatory: false,
            immediate: false,
        }))
    }

    fn header(body_size: u64) -> AMQPContentHeader {
        AMQPContentHeader {
            class_id: 60,
            body_size,
            properties: BasicProperties::default().with_content_type("text/plain".into()),
        }
    }

    fn complete(step: Assembly) -> PublishedMessage {
        match step {
            Assembly::Complete(message) => *message,
            other => panic!("expected a complete message, got {other:?}"),
        }
    }

    #[test]
    fn publish_header_and_bodies_make_one_message() {
        let mut asm = ContentAssembler::new(1, 1 << 20);
        assert_eq!(asm.on_method(publish("k")).unwrap(), Assembly::Pending);
        assert_eq!(asm.on_header(header(11)).unwrap(), Assembly::Pending);
        assert_eq!(asm.on_body(b"hello ").unwrap(), Assembly::Pending);
        let message = complete(asm.on_body(b"world").unwrap());
        assert_eq!(message.body, Bytes::from_static(b"hello world"));
        assert_eq!(message.publish.routing_key.as_str(), "k");
        assert_eq!(
            message
                .properties
                .content_type()
                .as_ref()
                .map(|s| s.as_str()),
            Some("text/plain")
        );
        assert!(asm.is_idle());
    }

    #[test]
    fn empty_body_completes_at_the_header() {
        let mut asm = ContentAssembler::new(1, 1 << 20);
        asm.on_method(publish("k")).unwrap();
        let message = complete(asm.on_header(header(0)).unwrap());
        assert!(message.body.is_empty());
        assert!(asm.is_idle());
    }

    #[test]
    fn methods_without_content_pass_straight_through() {
        let mut asm = ContentAssembler::new(1, 1 << 20);
        let qos = AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos {
            prefetch_count: 10,
            global: false,
        }));
        assert_eq!(asm.on_method(qos.clone()).unwrap(), Assembly::Method(qos));
    }

    #[test]
    fn header_without_publish_is_an_unexpected_frame() {
        let mut asm = ContentAssembler::new(1, 1 << 20);
        let err = asm.on_header(header(3)).unwrap_err();
        assert_eq!(err.reply_code().code(), 505);
    }

    #[test]
    fn body_before_header_is_an_unexpected_frame() {
        let mut asm = ContentAssembler::new(1, 1 << 20);
        asm.on_method(publish("k")).unwrap();
        let err = asm.on_body(b"x").unwrap_err();
        assert_eq!(err.reply_code().code(), 505);
        assert!(matches!(
            err,
            WireError::UnexpectedFrame {
                expected: "a content header",
                ..
            }
        ));
    }

    #[test]
    fn method_while_body_is_pending_is_an_unexpected_frame() {
        let mut asm = ContentAssembler::new(1, 1 << 20);
        asm.on_method(publish("k")).unwrap();
        asm.on_header(header(5)).unwrap();
        let err = asm.on_method(publish("again")).unwrap_err();
        assert_eq!(err.reply_code().code(), 505);
    }

    #[test]
    fn body_longer_than_declared_is_refused() {
        let mut asm = ContentAssembler::new(1, 1 << 20);
        asm.on_method(publish("k")).unwrap();
        asm.on_header(header(3)).unwrap();
        let err = asm.on_body(b"four").unwrap_err();
        assert_eq!(
            err,
            WireError::BodySizeMismatch {
                declared: 3,
                received: 4
            }
        );
        assert!(asm.is_idle(), "the broken message is dropped");
    }

    #[test]
    fn header_of_another_class_is_refused() {
        let mut asm = ContentAssembler::new(1, 1 << 20);
        asm.on_method(publish("k")).unwrap();
        let mut h = header(1);
        h.class_id = 70;
        let err = asm.on_header(h).unwrap_err();
        assert_eq!(err, WireError::ContentClassMismatch { class_id: 70 });
    }

    #[test]
    fn message_larger_than_the_limit_is_refused_at_the_header() {
        let mut asm = ContentAssembler::new(1, 10);
        asm.on_method(publish("k")).unwrap();
        let err = asm.on_header(header(u64::MAX)).unwrap_err();
        assert_eq!(err.reply_code().code(), 406);
        assert_eq!(err.class_method(), (60, 40));
    }

    #[test]
    fn empty_body_frames_are_accepted_mid_message() {
        let mut asm = ContentAssembler::new(1, 1 << 20);
        asm.on_method(publish("k")).unwrap();
        asm.on_header(header(2)).unwrap();
        assert_eq!(asm.on_body(b"").unwrap(), Assembly::Pending);
        assert_eq!(asm.on_body(b"a").unwrap(), Assembly::Pending);
        assert_eq!(
            complete(asm.on_body(b"b").unwrap()).body,
            Bytes::from_static(b"ab")
        );
    }
}
