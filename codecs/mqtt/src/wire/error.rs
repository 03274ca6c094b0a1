//! Why bytes could not be decoded into a packet.

use super::reason;

/// A packet that cannot be accepted. None of these is retryable on the same connection: MQTT
/// requires the receiver to close it (MQTT 5 §4.13), after a CONNACK or DISCONNECT carrying
/// [`DecodeError::reason_code`] when the protocol level allows one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes do not follow the packet grammar (MQTT 5 §1.2 "Malformed Packet").
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    /// The packet parsed but carries something the protocol forbids (MQTT 5 §1.2 "Protocol
    /// Error").
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// Refused from its fixed header alone, before the body was buffered.
    #[error(
        "packet of {size} bytes exceeds the maximum packet size of {max} bytes; raise the \
         listener's maximum packet size or send smaller messages"
    )]
    PacketTooLarge { size: usize, max: usize },
    /// A CONNECT asked for a protocol level other than 3 (MQTT 3.1), 4 (3.1.1) or 5.
    #[error(
        "unsupported MQTT protocol level {0}; this broker speaks levels 3 (MQTT 3.1), \
         4 (3.1.1) and 5 (5.0)"
    )]
    UnsupportedProtocolVersion(u8),
}

impl DecodeError {
    /// The MQTT 5 reason code to put in the CONNACK or DISCONNECT that reports this error.
    pub fn reason_code(&self) -> u8 {
        match self {
            Self::Malformed(_) => reason::MALFORMED_PACKET,
            Self::Protocol(_) => reason::PROTOCOL_ERROR,
            Self::PacketTooLarge { .. } => reason::PACKET_TOO_LARGE,
            Self::UnsupportedProtocolVersion(_) => reason::UNSUPPORTED_PROTOCOL_VERSION,
        }
    }
}
