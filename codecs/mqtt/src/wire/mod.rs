//! The MQTT packet codec: pure, sans-I/O. [`decode`] takes bytes and gives a typed [`Packet`]
//! or `Ok(None)` when more bytes are needed; [`encode`] writes a packet for a protocol level.

mod decode;
mod encode;
mod error;
mod packet;
mod properties;
mod read;
pub mod reason;
#[cfg(test)]
mod tests;

pub use decode::decode;
pub use encode::{OutgoingPublish, encode, encode_publish, encoded_len};
pub use error::DecodeError;
pub use packet::*;
pub use read::MAX_VARIABLE_BYTE_INTEGER;

/// Control packet types (§2.1.2): the high nibble of a packet's first byte.
mod kind {
    pub(super) const CONNECT: u8 = 1;
    pub(super) const CONNACK: u8 = 2;
    pub(super) const PUBLISH: u8 = 3;
    pub(super) const PUBACK: u8 = 4;
    pub(super) const PUBREC: u8 = 5;
    pub(super) const PUBREL: u8 = 6;
    pub(super) const PUBCOMP: u8 = 7;
    pub(super) const SUBSCRIBE: u8 = 8;
    pub(super) const SUBACK: u8 = 9;
    pub(super) const UNSUBSCRIBE: u8 = 10;
    pub(super) const UNSUBACK: u8 = 11;
    pub(super) const PINGREQ: u8 = 12;
    pub(super) const PINGRESP: u8 = 13;
    pub(super) const DISCONNECT: u8 = 14;
    pub(super) const AUTH: u8 = 15;
}
