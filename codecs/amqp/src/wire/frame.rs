//! Frames in and out (spec §4.2.3 "General Frame Format"):
//!
//! ```text
//! type:u8 | channel:u16 | size:u32 | payload:size bytes | frame-end:0xCE
//! ```
//!
//! The envelope is checked here, before `amq-protocol` sees a byte, so that every failure gets
//! its own reply code (frame too large, bad frame end, unknown class…) and "need more bytes"
//! stays a value, never an error.

use amq_protocol::frame::parsing::parse_content_header;
use amq_protocol::frame::{AMQPFrame, WriteContext, gen_frame};
use amq_protocol::protocol::{AMQPClass, parse_class};
use bytes::{BufMut, BytesMut};

use super::error::WireError;
use super::{fast, nesting};

/// Frame type octets (§4.2.3).
pub const FRAME_METHOD: u8 = 1;
pub const FRAME_HEADER: u8 = 2;
pub const FRAME_BODY: u8 = 3;
pub const FRAME_HEARTBEAT: u8 = 8;
/// The octet that ends every frame.
pub const FRAME_END: u8 = 0xCE;
/// Type, channel and size.
pub const FRAME_HEADER_SIZE: usize = 7;
/// Header plus the frame-end octet: what a frame costs beyond its payload.
pub const FRAME_OVERHEAD: usize = FRAME_HEADER_SIZE + 1;
/// §4.2.3: the frame size every peer must accept, and the limit before `connection.tune`.
pub const FRAME_MIN_SIZE: u32 = 4096;

/// The protocol header a 0-9-1 client opens with (§4.2.2), and that the server writes back
/// before closing when the client asked for something else.
pub const PROTOCOL_HEADER: [u8; 8] = *b"AMQP\x00\x00\x09\x01";

/// Outcome of looking at the first bytes a client sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderCheck {
    /// Fewer than 8 bytes so far, all consistent with the header: read more.
    NeedMore,
    /// `AMQP 0-9-1`: consume [`PROTOCOL_HEADER`]`.len()` bytes and send `connection.start`.
    Ok,
    /// Anything else, including other AMQP versions: §4.2.2 says the server "MUST write a
    /// valid protocol header to the open socket, followed by closing the socket", so write
    /// [`PROTOCOL_HEADER`] and close.
    Wrong,
}

/// Checks the protocol header. Mismatches are reported as soon as the first differing byte
/// arrives, so a client speaking HTTP is turned away without waiting for 8 bytes.
pub fn check_protocol_header(buf: &[u8]) -> HeaderCheck {
    let n = buf.len().min(PROTOCOL_HEADER.len());
    if buf[..n] != PROTOCOL_HEADER[..n] {
        HeaderCheck::Wrong
    } else if n < PROTOCOL_HEADER.len() {
        HeaderCheck::NeedMore
    } else {
        HeaderCheck::Ok
    }
}

/// Decodes one frame from the front of `buf`.
///
/// - `Ok(None)`: the frame is not complete yet; `buf` is left untouched.
/// - `Ok(Some(frame))`: the frame's bytes were consumed.
/// - `Err(_)`: a protocol error to close the connection with (all decode errors are hard
///   errors). A complete frame's bytes are consumed even when it is refused; an unknown type
///   or an oversized frame leaves the buffer as it is, since its extent cannot be trusted.
///
/// `frame_max` is the negotiated maximum frame size including header and frame-end
/// ([`FRAME_MIN_SIZE`] before tuning); 0 means no limit, as in `connection.tune`.
pub fn decode_frame(buf: &mut BytesMut, frame_max: u32) -> Result<Option<AMQPFrame>, WireError> {
    let Some(&frame_type) = buf.first() else {
        return Ok(None);
    };
    if !matches!(
        frame_type,
        FRAME_METHOD | FRAME_HEADER | FRAME_BODY | FRAME_HEARTBEAT
    ) {
        return Err(WireError::UnknownFrameType { frame_type });
    }
    if buf.len() < FRAME_HEADER_SIZE {
        return Ok(None);
    }
    let channel = u16::from_be_bytes([buf[1], buf[2]]);
    let size = u32::from_be_bytes([buf[3], buf[4], buf[5], buf[6]]);
    let total = u64::from(size) + FRAME_OVERHEAD as u64;
    if frame_max != 0 && total > u64::from(frame_max) {
        return Err(WireError::FrameTooLarge {
            size: total,
            frame_max,
        });
    }
    // `total` fits in usize on every platform we build for (u32 + 8 ≤ u64).
    let total = usize::try_from(total).map_err(|_| WireError::FrameTooLarge {
        size: total,
        frame_max,
    })?;
    if buf.len() < total {
        return Ok(None);
    }
    let frame = buf.split_to(total);
    let end = frame[total - 1];
    if end != FRAME_END {
        return Err(WireError::BadFrameEnd { found: end });
    }
    let payload = &frame[FRAME_HEADER_SIZE..total - 1];
    decode_payload(frame_type, channel, payload).map(Some)
}

fn decode_payload(frame_type: u8, channel: u16, payload: &[u8]) -> Result<AMQPFrame, WireError> {
    match frame_type {
        FRAME_METHOD => decode_method(payload).map(|method| AMQPFrame::Method(channel, method)),
        FRAME_HEADER => decode_content_header(channel, payload),
        FRAME_BODY => Ok(AMQPFrame::Body(channel, payload.to_vec())),
        _ => {
            // FRAME_HEARTBEAT: the only type left after the check in `decode_frame`.
            if channel != 0 || !payload.is_empty() {
                return Err(WireError::BadHeartbeat {
                    channel,
                    size: payload.len() as u32,
                });
            }
            Ok(AMQPFrame::Heartbeat)
        }
    }
}

/// Decodes a method payload: class id, method id, arguments (§4.2.4).
pub fn decode_method(payload: &[u8]) -> Result<AMQPClass, WireError> {
    if payload.len() < 4 {
        return Err(WireError::MethodTooShort {
            size: payload.len(),
        });
    }
    let class_id = u16::from_be_bytes([payload[0], payload[1]]);
    let method_id = u16::from_be_bytes([payload[2], payload[3]]);
    if !is_known_method(class_id, method_id) {
        return Err(if is_known_class(class_id) {
            WireError::UnknownMethod {
                class_id,
                method_id,
            }
        } else {
            WireError::UnknownClass { class_id }
        });
    }
    nesting::check_method(class_id, method_id, &payload[4..])
        .map_err(|limit| WireError::NestingTooDeep { limit })?;
    if let Some(method) = fast::decode(class_id, method_id, &payload[4..]) {
        return Ok(method);
    }
    // Trailing bytes after the last argument are as malformed as missing ones.
    match parse_class(payload) {
        Ok(([], method)) => Ok(method),
        _ => Err(WireError::MalformedMethod {
            class_id,
            method_id,
        }),
    }
}

fn decode_content_header(channel: u16, payload: &[u8]) -> Result<AMQPFrame, WireError> {
    nesting::check_content_header(payload).map_err(|limit| WireError::NestingTooDeep { limit })?;
    // The parser ignores the weight field, which is unused and must be zero (§4.2.6.1),
    // as RabbitMQ does.
    match parse_content_header(payload) {
        Ok(([], header)) => Ok(AMQPFrame::Header(channel, header)),
        _ => Err(WireError::MalformedContentHeader),
    }
}

/// The classes of AMQP 0-9-1 (RabbitMQ's edition, with `confirm` and the legacy `access`).
fn is_known_class(class_id: u16) -> bool {
    matches!(class_id, 10 | 20 | 30 | 40 | 50 | 60 | 85 | 90)
}

/// The (class, method) pairs of AMQP 0-9-1 with RabbitMQ's extensions, as `amq-protocol`
/// generates them. Checked before parsing so that an unknown id gets 540/503, not 501.
fn is_known_method(class_id: u16, method_id: u16) -> bool {
    match class_id {
        // connection: start … close-ok, blocked/unblocked, update-secret(-ok)
        10 => matches!(
            method_id,
            10 | 11 | 20 | 21 | 30 | 31 | 40 | 41 | 50 | 51 | 60 | 61 | 70 | 71
        ),
        // channel: open(-ok), flow(-ok), close(-ok)
        20 => matches!(method_id, 10 | 11 | 20 | 21 | 40 | 41),
        // access: request(-ok)
        30 => matches!(method_id, 10 | 11),
        // exchange: declare, delete, bind, unbind (unbind-ok is 51 in RabbitMQ's spec)
        40 => matches!(method_id, 10 | 11 | 20 | 21 | 30 | 31 | 40 | 51),
        // queue: declare, bind, purge, delete, unbind
        50 => matches!(method_id, 10 | 11 | 20 | 21 | 30 | 31 | 40 | 41 | 50 | 51),
        // basic: qos … nack
        60 => matches!(
            method_id,
            10 | 11
                | 20
                | 21
                | 30
                | 31
                | 40
                | 50
                | 60
                | 70
                | 71
                | 72
                | 80
                | 90
                | 100
                | 110
                | 111
                | 120
        ),
        // confirm: select(-ok)
        85 => matches!(method_id, 10 | 11),
        // tx: select, commit, rollback
        90 => matches!(method_id, 10 | 11 | 20 | 21 | 30 | 31),
        _ => false,
    }
}

/// Rejects methods that only the server sends (those with only `<chassis name="client">` in
/// the XML): RabbitMQ answers them with COMMAND_INVALID. For the session to call on every
/// method a client sends; `decode_frame` itself stays symmetric so tests can decode what the
/// server writes.
pub fn check_client_method(method: &AMQPClass) -> Result<(), WireError> {
    let class_id = method.get_amqp_class_id();
    let method_id = method.get_amqp_method_id();
    let server_only = match class_id {
        // start, secure, tune, open-ok, blocked, unblocked, update-secret-ok
        10 => matches!(method_id, 10 | 20 | 30 | 41 | 60 | 61 | 71),
        20 => method_id == 11,
        30 => method_id == 11,
        40 | 50 | 85 | 90 => method_id % 10 == 1,
        // qos-ok, consume-ok, cancel-ok, return, deliver, get-ok, get-empty, recover-ok.
        // cancel (30), ack (80) and nack (120) go both ways.
        60 => matches!(method_id, 11 | 21 | 31 | 50 | 60 | 71 | 72 | 111),
        _ => false,
    };
    if server_only {
        Err(WireError::ServerOnlyMethod {
            class_id,
            method_id,
        })
    } else {
        Ok(())
    }
}

/// Appends the encoding of `frame` to `out`.
///
/// Every short string in a frame is at most 255 bytes by construction (`ShortString` refuses
/// longer ones), so encoding cannot corrupt the stream; the `Result` covers the generator's own
/// error type, which a growable buffer never triggers.
pub fn encode_frame(frame: &AMQPFrame, out: &mut BytesMut) -> Result<(), WireError> {
    match frame {
        AMQPFrame::Body(channel, body) => {
            encode_body(*channel, body, out);
            Ok(())
        }
        AMQPFrame::Heartbeat => {
            out.put_slice(&[FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0, FRAME_END]);
            Ok(())
        }
        _ => generate(frame, out),
    }
}

/// Body frames are written directly, without `amq-protocol`'s intermediate buffer, since they
/// carry the bulk of the bytes.
pub(crate) fn encode_body(channel: u16, body: &[u8], out: &mut BytesMut) {
    out.reserve(body.len() + FRAME_OVERHEAD);
    out.put_u8(FRAME_BODY);
    out.put_u16(channel);
    out.put_u32(body.len() as u32);
    out.put_slice(body);
    out.put_u8(FRAME_END);
}

fn generate(frame: &AMQPFrame, out: &mut BytesMut) -> Result<(), WireError> {
    let ctx = WriteContext::from(Vec::with_capacity(64));
    match gen_frame(frame)(ctx) {
        Ok(ctx) => {
            let (bytes, _) = ctx.into_inner();
            out.put_slice(&bytes);
            Ok(())
        }
        Err(err) => Err(WireError::Encode {
            reason: err.to_string(),
        }),
    }
}
