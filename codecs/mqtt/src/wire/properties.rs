//! MQTT 5 properties (§2.2.2): their identifiers, and decoding the property section of each
//! packet into its typed struct. Encoding lives in `encode`.
//!
//! Each packet allows its own set of properties (§2.2.2.2); an identifier that exists but is not
//! allowed in that packet is a Protocol Error, one that does not exist is a Malformed Packet.
//! Every property except User Property (and Subscription Identifier in PUBLISH) may appear at
//! most once: a repeat is a Protocol Error.

use super::read::Reader;
use super::{
    AckProperties, AuthProperties, ConnAckProperties, ConnectProperties, DecodeError,
    DisconnectProperties, PublishProperties, SubscribeProperties, UserProperty,
};

/// Declares the property identifiers with their names, and the two errors whose message names
/// the property: "not allowed in this packet" and "appears twice".
macro_rules! property_ids {
    ($($name:ident = $id:literal, $label:literal;)*) => {
        /// Property identifiers (§2.2.2.2).
        pub(super) mod id {
            $(pub(in crate::wire) const $name: u8 = $id;)*
        }
        use id::*;

        /// The error for property `id` found in a packet that does not allow it.
        fn not_allowed(id: u8) -> DecodeError {
            match id {
                $($id => DecodeError::Protocol(concat!(
                    "the ", $label, " property is not allowed in this packet"
                )),)*
                _ => DecodeError::Malformed("unknown property identifier"),
            }
        }

        /// The error for a second occurrence of single-valued property `id`.
        fn duplicate(id: u8) -> DecodeError {
            match id {
                $($id => DecodeError::Protocol(concat!(
                    "the ", $label, " property appears more than once"
                )),)*
                _ => DecodeError::Malformed("unknown property identifier"),
            }
        }
    };
}

property_ids! {
    PAYLOAD_FORMAT_INDICATOR = 0x01, "Payload Format Indicator";
    MESSAGE_EXPIRY_INTERVAL = 0x02, "Message Expiry Interval";
    CONTENT_TYPE = 0x03, "Content Type";
    RESPONSE_TOPIC = 0x08, "Response Topic";
    CORRELATION_DATA = 0x09, "Correlation Data";
    SUBSCRIPTION_IDENTIFIER = 0x0B, "Subscription Identifier";
    SESSION_EXPIRY_INTERVAL = 0x11, "Session Expiry Interval";
    ASSIGNED_CLIENT_IDENTIFIER = 0x12, "Assigned Client Identifier";
    SERVER_KEEP_ALIVE = 0x13, "Server Keep Alive";
    AUTHENTICATION_METHOD = 0x15, "Authentication Method";
    AUTHENTICATION_DATA = 0x16, "Authentication Data";
    REQUEST_PROBLEM_INFORMATION = 0x17, "Request Problem Information";
    WILL_DELAY_INTERVAL = 0x18, "Will Delay Interval";
    REQUEST_RESPONSE_INFORMATION = 0x19, "Request Response Information";
    RESPONSE_INFORMATION = 0x1A, "Response Information";
    SERVER_REFERENCE = 0x1C, "Server Reference";
    REASON_STRING = 0x1F, "Reason String";
    RECEIVE_MAXIMUM = 0x21, "Receive Maximum";
    TOPIC_ALIAS_MAXIMUM = 0x22, "Topic Alias Maximum";
    TOPIC_ALIAS = 0x23, "Topic Alias";
    MAXIMUM_QOS = 0x24, "Maximum QoS";
    RETAIN_AVAILABLE = 0x25, "Retain Available";
    USER_PROPERTY = 0x26, "User Property";
    MAXIMUM_PACKET_SIZE = 0x27, "Maximum Packet Size";
    WILDCARD_SUBSCRIPTION_AVAILABLE = 0x28, "Wildcard Subscription Available";
    SUBSCRIPTION_IDENTIFIER_AVAILABLE = 0x29, "Subscription Identifier Available";
    SHARED_SUBSCRIPTION_AVAILABLE = 0x2A, "Shared Subscription Available";
}

/// Iterates over a property section: each call gives the next identifier, after which the
/// caller reads the value whose type that identifier implies.
struct Properties(Reader);

impl Properties {
    fn of(packet: &mut Reader) -> Result<Self, DecodeError> {
        packet.properties().map(Self)
    }

    /// The next property identifier, or `None` at the end of the section. Identifiers are
    /// Variable Byte Integers, but every defined one fits in one byte (§2.2.2.1), so a byte with
    /// the continuation bit is an unknown identifier, which `not_allowed` reports as malformed.
    fn next_id(&mut self) -> Result<Option<u8>, DecodeError> {
        if self.0.is_empty() {
            Ok(None)
        } else {
            self.0.u8().map(Some)
        }
    }
}

fn set_once<T>(slot: &mut Option<T>, value: T, id: u8) -> Result<(), DecodeError> {
    if slot.is_some() {
        return Err(duplicate(id));
    }
    *slot = Some(value);
    Ok(())
}

/// Properties whose only values are 0 and 1 (e.g. §3.1.2.11.7, §3.2.2.3.4).
fn zero_or_one(value: u8, error: &'static str) -> Result<u8, DecodeError> {
    if value <= 1 {
        Ok(value)
    } else {
        Err(DecodeError::Protocol(error))
    }
}

fn flag(value: u8, error: &'static str) -> Result<bool, DecodeError> {
    zero_or_one(value, error).map(|v| v == 1)
}

fn non_zero_u16(value: u16, error: &'static str) -> Result<u16, DecodeError> {
    if value == 0 {
        Err(DecodeError::Protocol(error))
    } else {
        Ok(value)
    }
}

fn non_zero_u32(value: u32, error: &'static str) -> Result<u32, DecodeError> {
    if value == 0 {
        Err(DecodeError::Protocol(error))
    } else {
        Ok(value)
    }
}

/// A Subscription Identifier (§3.3.2.3.8, §3.8.2.1.2): a Variable Byte Integer from 1 up.
fn subscription_identifier(props: &mut Properties) -> Result<u32, DecodeError> {
    let value = props.0.variable_byte_integer()?;
    non_zero_u32(value, "a Subscription Identifier of 0 is not allowed")
}

pub(super) fn connect(packet: &mut Reader) -> Result<ConnectProperties, DecodeError> {
    let mut props = Properties::of(packet)?;
    let mut p = ConnectProperties::default();
    while let Some(id) = props.next_id()? {
        let r = &mut props.0;
        match id {
            SESSION_EXPIRY_INTERVAL => set_once(&mut p.session_expiry_interval, r.u32()?, id)?,
            RECEIVE_MAXIMUM => {
                let value = non_zero_u16(r.u16()?, "a Receive Maximum of 0 is not allowed")?;
                set_once(&mut p.receive_maximum, value, id)?;
            }
            MAXIMUM_PACKET_SIZE => {
                let value = non_zero_u32(r.u32()?, "a Maximum Packet Size of 0 is not allowed")?;
                set_once(&mut p.maximum_packet_size, value, id)?;
            }
            TOPIC_ALIAS_MAXIMUM => set_once(&mut p.topic_alias_maximum, r.u16()?, id)?,
            REQUEST_RESPONSE_INFORMATION => {
                let value = zero_or_one(r.u8()?, "Request Response Information must be 0 or 1")?;
                set_once(&mut p.request_response_information, value, id)?;
            }
            REQUEST_PROBLEM_INFORMATION => {
                let value = zero_or_one(r.u8()?, "Request Problem Information must be 0 or 1")?;
                set_once(&mut p.request_problem_information, value, id)?;
            }
            USER_PROPERTY => p.user_properties.push(r.string_pair()?),
            AUTHENTICATION_METHOD => set_once(&mut p.authentication_method, r.string()?, id)?,
            AUTHENTICATION_DATA => set_once(&mut p.authentication_data, r.binary()?, id)?,
            _ => return Err(not_allowed(id)),
        }
    }
    if p.authentication_data.is_some() && p.authentication_method.is_none() {
        return Err(DecodeError::Protocol(
            "CONNECT has Authentication Data without an Authentication Method (§3.1.2.11.10)",
        ));
    }
    Ok(p)
}

/// The will properties of a CONNECT (§3.1.3.2): the Will Delay Interval (0 when absent) and the
/// properties the will message will be published with.
pub(super) fn will(packet: &mut Reader) -> Result<(u32, PublishProperties), DecodeError> {
    let mut props = Properties::of(packet)?;
    let mut delay = None;
    let mut p = PublishProperties::default();
    while let Some(id) = props.next_id()? {
        let r = &mut props.0;
        match id {
            WILL_DELAY_INTERVAL => set_once(&mut delay, r.u32()?, id)?,
            TOPIC_ALIAS | SUBSCRIPTION_IDENTIFIER => return Err(not_allowed(id)),
            _ => message_property(&mut props, &mut p, id)?,
        }
    }
    Ok((delay.unwrap_or(0), p))
}

pub(super) fn publish(packet: &mut Reader) -> Result<PublishProperties, DecodeError> {
    let mut props = Properties::of(packet)?;
    let mut p = PublishProperties::default();
    while let Some(id) = props.next_id()? {
        match id {
            TOPIC_ALIAS => {
                let value = non_zero_u16(props.0.u16()?, "a Topic Alias of 0 is not allowed")?;
                set_once(&mut p.topic_alias, value, id)?;
            }
            // A message matching several subscriptions carries one per subscription (§3.3.4).
            SUBSCRIPTION_IDENTIFIER => {
                let value = subscription_identifier(&mut props)?;
                p.subscription_identifiers.push(value);
            }
            _ => message_property(&mut props, &mut p, id)?,
        }
    }
    Ok(p)
}

/// The properties that PUBLISH and the will share: they describe the application message.
fn message_property(
    props: &mut Properties,
    p: &mut PublishProperties,
    id: u8,
) -> Result<(), DecodeError> {
    let r = &mut props.0;
    match id {
        PAYLOAD_FORMAT_INDICATOR => {
            let value = zero_or_one(r.u8()?, "Payload Format Indicator must be 0 or 1")?;
            set_once(&mut p.payload_format_indicator, value, id)
        }
        MESSAGE_EXPIRY_INTERVAL => set_once(&mut p.message_expiry_interval, r.u32()?, id),
        CONTENT_TYPE => set_once(&mut p.content_type, r.string()?, id),
        RESPONSE_TOPIC => set_once(&mut p.response_topic, r.string()?, id),
        CORRELATION_DATA => set_once(&mut p.correlation_data, r.binary()?, id),
        USER_PROPERTY => {
            p.user_properties.push(r.string_pair()?);
            Ok(())
        }
        _ => Err(not_allowed(id)),
    }
}

pub(super) fn connack(packet: &mut Reader) -> Result<ConnAckProperties, DecodeError> {
    let mut props = Properties::of(packet)?;
    let mut p = ConnAckProperties::default();
    while let Some(id) = props.next_id()? {
        let r = &mut props.0;
        match id {
            SESSION_EXPIRY_INTERVAL => set_once(&mut p.session_expiry_interval, r.u32()?, id)?,
            RECEIVE_MAXIMUM => {
                let value = non_zero_u16(r.u16()?, "a Receive Maximum of 0 is not allowed")?;
                set_once(&mut p.receive_maximum, value, id)?;
            }
            MAXIMUM_QOS => {
                let value = zero_or_one(r.u8()?, "Maximum QoS must be 0 or 1")?;
                set_once(&mut p.maximum_qos, value, id)?;
            }
            RETAIN_AVAILABLE => {
                let value = flag(r.u8()?, "Retain Available must be 0 or 1")?;
                set_once(&mut p.retain_available, value, id)?;
            }
            MAXIMUM_PACKET_SIZE => {
                let value = non_zero_u32(r.u32()?, "a Maximum Packet Size of 0 is not allowed")?;
                set_once(&mut p.maximum_packet_size, value, id)?;
            }
            ASSIGNED_CLIENT_IDENTIFIER => {
                set_once(&mut p.assigned_client_identifier, r.string()?, id)?;
            }
            TOPIC_ALIAS_MAXIMUM => set_once(&mut p.topic_alias_maximum, r.u16()?, id)?,
            REASON_STRING => set_once(&mut p.reason_string, r.string()?, id)?,
            USER_PROPERTY => p.user_properties.push(r.string_pair()?),
            WILDCARD_SUBSCRIPTION_AVAILABLE => {
                let value = flag(r.u8()?, "Wildcard Subscription Available must be 0 or 1")?;
                set_once(&mut p.wildcard_subscription_available, value, id)?;
            }
            SUBSCRIPTION_IDENTIFIER_AVAILABLE => {
                let value = flag(r.u8()?, "Subscription Identifier Available must be 0 or 1")?;
                set_once(&mut p.subscription_identifiers_available, value, id)?;
            }
            SHARED_SUBSCRIPTION_AVAILABLE => {
                let value = flag(r.u8()?, "Shared Subscription Available must be 0 or 1")?;
                set_once(&mut p.shared_subscription_available, value, id)?;
            }
            SERVER_KEEP_ALIVE => set_once(&mut p.server_keep_alive, r.u16()?, id)?,
            RESPONSE_INFORMATION => set_once(&mut p.response_information, r.string()?, id)?,
            SERVER_REFERENCE => set_once(&mut p.server_reference, r.string()?, id)?,
            AUTHENTICATION_METHOD => set_once(&mut p.authentication_method, r.string()?, id)?,
            AUTHENTICATION_DATA => set_once(&mut p.authentication_data, r.binary()?, id)?,
            _ => return Err(not_allowed(id)),
        }
    }
    Ok(p)
}

/// PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK and UNSUBACK: a reason string and user properties.
pub(super) fn ack(packet: &mut Reader) -> Result<AckProperties, DecodeError> {
    let mut props = Properties::of(packet)?;
    let mut p = AckProperties::default();
    while let Some(id) = props.next_id()? {
        let r = &mut props.0;
        match id {
            REASON_STRING => set_once(&mut p.reason_string, r.string()?, id)?,
            USER_PROPERTY => p.user_properties.push(r.string_pair()?),
            _ => return Err(not_allowed(id)),
        }
    }
    Ok(p)
}

pub(super) fn subscribe(packet: &mut Reader) -> Result<SubscribeProperties, DecodeError> {
    let mut props = Properties::of(packet)?;
    let mut p = SubscribeProperties::default();
    while let Some(id) = props.next_id()? {
        match id {
            SUBSCRIPTION_IDENTIFIER => {
                let value = subscription_identifier(&mut props)?;
                set_once(&mut p.subscription_identifier, value, id)?;
            }
            USER_PROPERTY => p.user_properties.push(props.0.string_pair()?),
            _ => return Err(not_allowed(id)),
        }
    }
    Ok(p)
}

/// UNSUBSCRIBE allows user properties only (§3.10.2.1).
pub(super) fn unsubscribe(packet: &mut Reader) -> Result<Vec<UserProperty>, DecodeError> {
    let mut props = Properties::of(packet)?;
    let mut user_properties = Vec::new();
    while let Some(id) = props.next_id()? {
        match id {
            USER_PROPERTY => user_properties.push(props.0.string_pair()?),
            _ => return Err(not_allowed(id)),
        }
    }
    Ok(user_properties)
}

pub(super) fn disconnect(packet: &mut Reader) -> Result<DisconnectProperties, DecodeError> {
    let mut props = Properties::of(packet)?;
    let mut p = DisconnectProperties::default();
    while let Some(id) = props.next_id()? {
        let r = &mut props.0;
        match id {
            SESSION_EXPIRY_INTERVAL => set_once(&mut p.session_expiry_interval, r.u32()?, id)?,
            REASON_STRING => set_once(&mut p.reason_string, r.string()?, id)?,
            USER_PROPERTY => p.user_properties.push(r.string_pair()?),
            SERVER_REFERENCE => set_once(&mut p.server_reference, r.string()?, id)?,
            _ => return Err(not_allowed(id)),
        }
    }
    Ok(p)
}

pub(super) fn auth(packet: &mut Reader) -> Result<AuthProperties, DecodeError> {
    let mut props = Properties::of(packet)?;
    let mut p = AuthProperties::default();
    while let Some(id) = props.next_id()? {
        let r = &mut props.0;
        match id {
            AUTHENTICATION_METHOD => set_once(&mut p.authentication_method, r.string()?, id)?,
            AUTHENTICATION_DATA => set_once(&mut p.authentication_data, r.binary()?, id)?,
            REASON_STRING => set_once(&mut p.reason_string, r.string()?, id)?,
            USER_PROPERTY => p.user_properties.push(r.string_pair()?),
            _ => return Err(not_allowed(id)),
        }
    }
    Ok(p)
}
