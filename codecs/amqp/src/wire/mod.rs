//! The pure, sans-I/O wire tier: bytes in, typed frames out, and back.
//!
//! Frame and method types are `amq-protocol`'s ([`AMQPFrame`], [`AMQPClass`]); this module
//! adds what a broker needs around them: envelope checks with the right reply codes
//! ([`decode_frame`]), the protocol header ([`check_protocol_header`]), builders for what the
//! server sends ([`out`]), content assembly ([`ContentAssembler`]) and SASL ([`sasl`]).
//! Nothing here does I/O, and "need more bytes" is `Ok(None)`.

mod content;
mod deliver;
mod error;
mod fast;
mod frame;
mod nesting;
pub mod out;
pub mod sasl;

pub use amq_protocol::frame::{AMQPContentHeader, AMQPFrame};
pub use amq_protocol::protocol::{AMQPClass, BasicProperties};
pub use amq_protocol::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
pub use content::{Assembly, ContentAssembler, PublishedMessage};
pub use deliver::{Deliver, encode_delivery};
pub use error::WireError;
pub use frame::{
    FRAME_BODY, FRAME_END, FRAME_HEADER, FRAME_HEADER_SIZE, FRAME_HEARTBEAT, FRAME_METHOD,
    FRAME_MIN_SIZE, FRAME_OVERHEAD, HeaderCheck, PROTOCOL_HEADER, check_client_method,
    check_protocol_header, decode_frame, decode_method, encode_frame,
};
pub use nesting::MAX_TABLE_DEPTH;
pub use sasl::{SaslCredentials, parse_sasl_response};

#[cfg(test)]
mod tests;
