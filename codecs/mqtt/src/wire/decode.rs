//! Decoding: bytes off the connection into typed packets.
//!
//! Section numbers are those of MQTT 5.0 (OASIS, 2019) unless marked 3.1.1. MQTT 3.1 and 3.1.1
//! share every packet layout except the protocol name in CONNECT.

use bytes::{Buf, BytesMut};

use super::kind::*;
use super::read::{self, Reader};
use super::{
    Auth, ConnAck, Connect, DecodeError, Disconnect, Packet, ProtocolVersion, PubResp, Publish,
    QoS, SubAck, Subscribe, SubscriptionOptions, UnsubAck, Unsubscribe, Will, properties, reason,
};

/// Takes one packet off the front of `buf`.
///
/// `Ok(None)` means the packet is not complete yet; `buf` is then left as it was. `version` is
/// the connection's protocol level; a CONNECT ignores it and is parsed per the level it names.
/// A packet whose fixed header announces more than `max_packet_size` bytes in total is refused
/// as soon as that header is readable, before its body is buffered.
///
/// Payloads, passwords and other binary fields share `buf`'s memory rather than being copied.
pub fn decode(
    buf: &mut BytesMut,
    version: ProtocolVersion,
    max_packet_size: usize,
) -> Result<Option<Packet>, DecodeError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let (kind, flags) = (first >> 4, first & 0x0f);
    check_fixed_header_flags(kind, flags, version)?;
    let Some((remaining, len_bytes)) = read::variable_byte_integer(&buf[1..])? else {
        return Ok(None);
    };
    let header_len = 1 + len_bytes;
    let size = header_len + remaining as usize;
    if size > max_packet_size {
        return Err(DecodeError::PacketTooLarge {
            size,
            max: max_packet_size,
        });
    }
    if buf.len() < size {
        return Ok(None);
    }
    let mut body = buf.split_to(size).freeze();
    body.advance(header_len);
    decode_body(kind, flags, &mut Reader::new(body), version).map(Some)
}

/// The flag bits of the fixed header (§2.1.3): fixed per type except for PUBLISH, whose QoS and
/// DUP are checked here too, so that a bad first byte is refused before the body arrives.
fn check_fixed_header_flags(
    kind: u8,
    flags: u8,
    version: ProtocolVersion,
) -> Result<(), DecodeError> {
    match kind {
        0 => Err(DecodeError::Malformed("packet type 0 is reserved")),
        PUBLISH => {
            let qos = (flags >> 1) & 0b11;
            if qos == 3 {
                Err(DecodeError::Malformed("PUBLISH with QoS 3 (§3.3.1.2)"))
            } else if qos == 0 && flags & 0b1000 != 0 {
                Err(DecodeError::Malformed(
                    "PUBLISH with QoS 0 has the DUP flag set (§3.3.1.1)",
                ))
            } else {
                Ok(())
            }
        }
        // MQTT 3.1 allowed DUP on retransmitted PUBREL, SUBSCRIBE and UNSUBSCRIBE too.
        PUBREL | SUBSCRIBE | UNSUBSCRIBE
            if flags == 0b0010 || (flags == 0b1010 && version == ProtocolVersion::V31) =>
        {
            Ok(())
        }
        PUBREL | SUBSCRIBE | UNSUBSCRIBE => Err(DecodeError::Malformed(
            "PUBREL, SUBSCRIBE and UNSUBSCRIBE must have fixed header flags 0010 (§2.1.3)",
        )),
        AUTH if !version.is_v5() => Err(DecodeError::Malformed(
            "packet type 15 (AUTH) is reserved before MQTT 5",
        )),
        _ if flags != 0 => Err(DecodeError::Malformed(
            "fixed header flags must be 0 for this packet type (§2.1.3)",
        )),
        _ => Ok(()),
    }
}

fn decode_body(
    kind: u8,
    flags: u8,
    r: &mut Reader,
    version: ProtocolVersion,
) -> Result<Packet, DecodeError> {
    let v5 = version.is_v5();
    let packet = match kind {
        CONNECT => Packet::Connect(Box::new(connect(r)?)),
        CONNACK => Packet::ConnAck(connack(r, v5)?),
        PUBLISH => Packet::Publish(publish(flags, r, v5)?),
        PUBACK => Packet::PubAck(pub_resp(r, v5, &PUBACK_RULES)?),
        PUBREC => Packet::PubRec(pub_resp(r, v5, &PUBREC_RULES)?),
        PUBREL => Packet::PubRel(pub_resp(r, v5, &PUBREL_RULES)?),
        PUBCOMP => Packet::PubComp(pub_resp(r, v5, &PUBCOMP_RULES)?),
        SUBSCRIBE => Packet::Subscribe(subscribe(r, v5)?),
        SUBACK => Packet::SubAck(suback(r, v5)?),
        UNSUBSCRIBE => Packet::Unsubscribe(unsubscribe(r, v5)?),
        UNSUBACK => Packet::UnsubAck(unsuback(r, v5)?),
        PINGREQ => {
            r.finish("PINGREQ must have remaining length 0")?;
            Packet::PingReq
        }
        PINGRESP => {
            r.finish("PINGRESP must have remaining length 0")?;
            Packet::PingResp
        }
        DISCONNECT => Packet::Disconnect(disconnect(r, v5)?),
        AUTH => Packet::Auth(auth(r)?),
        _ => return Err(DecodeError::Malformed("packet type 0 is reserved")),
    };
    Ok(packet)
}

/// A non-zero Packet Identifier (§2.2.1).
fn packet_id(r: &mut Reader, error: &'static str) -> Result<u16, DecodeError> {
    match r.u16()? {
        0 => Err(DecodeError::Protocol(error)),
        id => Ok(id),
    }
}

fn check_reason(allowed: &[u8], code: u8, error: &'static str) -> Result<u8, DecodeError> {
    if allowed.contains(&code) {
        Ok(code)
    } else {
        Err(DecodeError::Protocol(error))
    }
}

fn connect(r: &mut Reader) -> Result<Connect, DecodeError> {
    let version = protocol_version(r)?;
    let flags = r.u8()?;
    let flags = ConnectFlags::parse(flags, version)?;
    let keep_alive = r.u16()?;
    let properties = if version.is_v5() {
        properties::connect(r)?
    } else {
        Default::default()
    };
    // The payload's order is fixed: client id, will, user name, password (§3.1.3).
    let client_id = r.string()?;
    let will = match flags.will {
        Some((qos, retain)) => Some(will(r, version, qos, retain)?),
        None => None,
    };
    let username = if flags.username {
        Some(r.string()?)
    } else {
        None
    };
    let password = if flags.password {
        Some(r.binary()?)
    } else {
        None
    };
    r.finish("CONNECT has bytes after the fields its flags declare")?;
    Ok(Connect {
        version,
        client_id,
        clean_start: flags.clean_start,
        keep_alive,
        username,
        password,
        will,
        properties,
    })
}

/// The protocol name and level (§3.1.2.1, §3.1.2.2; MQTT 3.1 used "MQIsdp" and level 3).
fn protocol_version(r: &mut Reader) -> Result<ProtocolVersion, DecodeError> {
    let name = r.binary()?;
    let level = r.u8()?;
    match (&name[..], level) {
        (b"MQIsdp", 3) => Ok(ProtocolVersion::V31),
        (b"MQTT", 4) => Ok(ProtocolVersion::V311),
        (b"MQTT", 5) => Ok(ProtocolVersion::V5),
        (b"MQTT" | b"MQIsdp", level) => Err(DecodeError::UnsupportedProtocolVersion(level)),
        _ => Err(DecodeError::Protocol(
            "CONNECT protocol name is neither \"MQTT\" nor \"MQIsdp\"; is this an MQTT client?",
        )),
    }
}

/// The CONNECT flags byte (§3.1.2.3 – §3.1.2.9).
struct ConnectFlags {
    clean_start: bool,
    /// The will's QoS and retain flag when the will flag is set.
    will: Option<(QoS, bool)>,
    username: bool,
    password: bool,
}

impl ConnectFlags {
    fn parse(flags: u8, version: ProtocolVersion) -> Result<Self, DecodeError> {
        if flags & 0x01 != 0 {
            return Err(DecodeError::Malformed(
                "CONNECT reserved flag (bit 0) must be 0 (§3.1.2.3)",
            ));
        }
        let will_flag = flags & 0x04 != 0;
        let will_qos = QoS::from_u8((flags >> 3) & 0b11)
            .ok_or(DecodeError::Malformed("CONNECT will QoS 3 (§3.1.2.6)"))?;
        let will_retain = flags & 0x20 != 0;
        let password = flags & 0x40 != 0;
        let username = flags & 0x80 != 0;
        if !will_flag && (will_qos != QoS::AtMostOnce || will_retain) {
            return Err(DecodeError::Malformed(
                "CONNECT sets will QoS or will retain without the will flag (§3.1.2.6, §3.1.2.7)",
            ));
        }
        if password && !username && !version.is_v5() {
            return Err(DecodeError::Malformed(
                "CONNECT has a password without a user name, which needs MQTT 5 (3.1.1 §3.1.2.9)",
            ));
        }
        Ok(Self {
            clean_start: flags & 0x02 != 0,
            will: will_flag.then_some((will_qos, will_retain)),
            username,
            password,
        })
    }
}

fn will(
    r: &mut Reader,
    version: ProtocolVersion,
    qos: QoS,
    retain: bool,
) -> Result<Will, DecodeError> {
    let (delay_interval, properties) = if version.is_v5() {
        properties::will(r)?
    } else {
        Default::default()
    };
    let topic = r.string()?;
    let payload = r.binary()?;
    Ok(Will {
        topic,
        payload,
        qos,
        retain,
        delay_interval,
        properties,
    })
}

fn connack(r: &mut Reader, v5: bool) -> Result<ConnAck, DecodeError> {
    let flags = r.u8()?;
    if flags & 0xfe != 0 {
        return Err(DecodeError::Malformed(
            "CONNACK acknowledge flags bits 7-1 are reserved and must be 0 (§3.2.2.1)",
        ));
    }
    let code = r.u8()?;
    let properties = if v5 {
        check_reason(
            CONNACK_REASONS,
            code,
            "CONNACK reason code not allowed by §3.2.2.2",
        )?;
        properties::connack(r)?
    } else {
        if code > 5 {
            return Err(DecodeError::Protocol(
                "CONNACK return code above 5 is reserved (3.1.1 §3.2.2.3)",
            ));
        }
        Default::default()
    };
    r.finish("CONNACK has bytes after its properties")?;
    Ok(ConnAck {
        session_present: flags & 0x01 != 0,
        code,
        properties,
    })
}

fn publish(flags: u8, r: &mut Reader, v5: bool) -> Result<Publish, DecodeError> {
    // QoS 3 was refused with the fixed header.
    let qos = QoS::from_u8((flags >> 1) & 0b11)
        .ok_or(DecodeError::Malformed("PUBLISH with QoS 3 (§3.3.1.2)"))?;
    let topic = r.string()?;
    let packet_id = if qos == QoS::AtMostOnce {
        0
    } else {
        packet_id(
            r,
            "PUBLISH with QoS 1 or 2 has packet identifier 0 (§2.2.1)",
        )?
    };
    let properties = if v5 {
        properties::publish(r)?
    } else {
        Default::default()
    };
    Ok(Publish {
        dup: flags & 0b1000 != 0,
        qos,
        retain: flags & 0b0001 != 0,
        topic,
        packet_id,
        payload: r.rest(),
        properties,
    })
}

/// What differs between PUBACK, PUBREC, PUBREL and PUBCOMP when decoding them.
struct AckRules {
    reasons: &'static [u8],
    bad_reason: &'static str,
    v3_length: &'static str,
    trailing: &'static str,
}

const PUB_RECEIVED_REASONS: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
const PUB_RELEASED_REASONS: &[u8] = &[0x00, 0x92];

const PUBACK_RULES: AckRules = AckRules {
    reasons: PUB_RECEIVED_REASONS,
    bad_reason: "PUBACK reason code not allowed by §3.4.2.1",
    v3_length: "PUBACK must have remaining length 2 before MQTT 5",
    trailing: "PUBACK has bytes after its properties",
};
const PUBREC_RULES: AckRules = AckRules {
    reasons: PUB_RECEIVED_REASONS,
    bad_reason: "PUBREC reason code not allowed by §3.5.2.1",
    v3_length: "PUBREC must have remaining length 2 before MQTT 5",
    trailing: "PUBREC has bytes after its properties",
};
const PUBREL_RULES: AckRules = AckRules {
    reasons: PUB_RELEASED_REASONS,
    bad_reason: "PUBREL reason code not allowed by §3.6.2.1",
    v3_length: "PUBREL must have remaining length 2 before MQTT 5",
    trailing: "PUBREL has bytes after its properties",
};
const PUBCOMP_RULES: AckRules = AckRules {
    reasons: PUB_RELEASED_REASONS,
    bad_reason: "PUBCOMP reason code not allowed by §3.7.2.1",
    v3_length: "PUBCOMP must have remaining length 2 before MQTT 5",
    trailing: "PUBCOMP has bytes after its properties",
};

/// PUBACK, PUBREC, PUBREL, PUBCOMP (§3.4 – §3.7). In MQTT 5 the reason code and the property
/// length may be left off: remaining length 2 means success without properties, 3 means a
/// reason code without properties.
fn pub_resp(r: &mut Reader, v5: bool, rules: &AckRules) -> Result<PubResp, DecodeError> {
    let packet_id = r.u16()?;
    if !v5 {
        r.finish(rules.v3_length)?;
        return Ok(PubResp {
            packet_id,
            ..Default::default()
        });
    }
    let reason = if r.is_empty() {
        reason::SUCCESS
    } else {
        check_reason(rules.reasons, r.u8()?, rules.bad_reason)?
    };
    let properties = if r.is_empty() {
        Default::default()
    } else {
        properties::ack(r)?
    };
    r.finish(rules.trailing)?;
    Ok(PubResp {
        packet_id,
        reason,
        properties,
    })
}

fn subscribe(r: &mut Reader, v5: bool) -> Result<Subscribe, DecodeError> {
    let packet_id = packet_id(r, "SUBSCRIBE has packet identifier 0 (§2.2.1)")?;
    let properties = if v5 {
        properties::subscribe(r)?
    } else {
        Default::default()
    };
    // Each entry takes at least three bytes, so the vector is bounded by the packet size.
    let mut filters = Vec::new();
    while !r.is_empty() {
        let filter = r.string()?;
        let options = subscription_options(r.u8()?, v5)?;
        filters.push((filter, options));
    }
    if filters.is_empty() {
        return Err(DecodeError::Protocol(
            "SUBSCRIBE carries no topic filter (§3.8.3)",
        ));
    }
    Ok(Subscribe {
        packet_id,
        filters,
        properties,
    })
}

/// The Subscription Options byte (§3.8.3.1), or the Requested QoS byte of 3.1.1 (§3.8.3),
/// whose upper six bits are reserved.
fn subscription_options(byte: u8, v5: bool) -> Result<SubscriptionOptions, DecodeError> {
    if !v5 && byte & 0b1111_1100 != 0 {
        return Err(DecodeError::Malformed(
            "SUBSCRIBE requested QoS byte has reserved bits 2-7 set (3.1.1 §3.8.3.1)",
        ));
    }
    if byte & 0b1100_0000 != 0 {
        return Err(DecodeError::Malformed(
            "subscription options reserved bits 6-7 must be 0 (§3.8.3.1)",
        ));
    }
    let qos = QoS::from_u8(byte & 0b11).ok_or(DecodeError::Malformed(
        "subscription requests QoS 3 (§3.8.3.1)",
    ))?;
    let retain_handling = (byte >> 4) & 0b11;
    if retain_handling == 3 {
        return Err(DecodeError::Protocol(
            "subscription Retain Handling 3 is not a valid value (§3.8.3.1)",
        ));
    }
    Ok(SubscriptionOptions {
        qos,
        no_local: byte & 0b0100 != 0,
        retain_as_published: byte & 0b1000 != 0,
        retain_handling,
    })
}

const SUBACK_REASONS: &[u8] = &[
    0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8f, 0x91, 0x97, 0x9e, 0xa1, 0xa2,
];
const SUBACK_V3_CODES: &[u8] = &[0x00, 0x01, 0x02, 0x80];

fn suback(r: &mut Reader, v5: bool) -> Result<SubAck, DecodeError> {
    let packet_id = r.u16()?;
    let (properties, allowed, error) = if v5 {
        let props = properties::ack(r)?;
        (
            props,
            SUBACK_REASONS,
            "SUBACK reason code not allowed by §3.9.3",
        )
    } else {
        let error = "SUBACK return code other than 0, 1, 2 or 0x80 (3.1.1 §3.9.3)";
        (Default::default(), SUBACK_V3_CODES, error)
    };
    let reasons = r.rest();
    if reasons.is_empty() {
        return Err(DecodeError::Protocol(
            "SUBACK carries no reason code (§3.9.3)",
        ));
    }
    for &code in reasons.iter() {
        check_reason(allowed, code, error)?;
    }
    Ok(SubAck {
        packet_id,
        reasons: reasons.to_vec(),
        properties,
    })
}

fn unsubscribe(r: &mut Reader, v5: bool) -> Result<Unsubscribe, DecodeError> {
    let packet_id = packet_id(r, "UNSUBSCRIBE has packet identifier 0 (§2.2.1)")?;
    let user_properties = if v5 {
        properties::unsubscribe(r)?
    } else {
        Vec::new()
    };
    let mut filters = Vec::new();
    while !r.is_empty() {
        filters.push(r.string()?);
    }
    if filters.is_empty() {
        return Err(DecodeError::Protocol(
            "UNSUBSCRIBE carries no topic filter (§3.10.3)",
        ));
    }
    Ok(Unsubscribe {
        packet_id,
        filters,
        user_properties,
    })
}

const UNSUBACK_REASONS: &[u8] = &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8f, 0x91];

fn unsuback(r: &mut Reader, v5: bool) -> Result<UnsubAck, DecodeError> {
    let packet_id = r.u16()?;
    if !v5 {
        r.finish("UNSUBACK must have remaining length 2 before MQTT 5")?;
        return Ok(UnsubAck {
            packet_id,
            ..Default::default()
        });
    }
    let properties = properties::ack(r)?;
    let reasons = r.rest();
    if reasons.is_empty() {
        return Err(DecodeError::Protocol(
            "UNSUBACK carries no reason code (§3.11.3)",
        ));
    }
    for &code in reasons.iter() {
        check_reason(
            UNSUBACK_REASONS,
            code,
            "UNSUBACK reason code not allowed by §3.11.3",
        )?;
    }
    Ok(UnsubAck {
        packet_id,
        reasons: reasons.to_vec(),
        properties,
    })
}

const CONNACK_REASONS: &[u8] = &[
    0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x8c, 0x90, 0x95, 0x97,
    0x99, 0x9a, 0x9b, 0x9c, 0x9d, 0x9f,
];
const DISCONNECT_REASONS: &[u8] = &[
    0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8b, 0x8d, 0x8e, 0x8f, 0x90, 0x93, 0x94, 0x95,
    0x96, 0x97, 0x98, 0x99, 0x9a, 0x9b, 0x9c, 0x9d, 0x9e, 0x9f, 0xa0, 0xa1, 0xa2,
];
const AUTH_REASONS: &[u8] = &[0x00, 0x18, 0x19];

/// DISCONNECT (§3.14): empty before MQTT 5; in 5 the reason code and property length may be
/// left off (remaining length 0 means normal disconnection).
fn disconnect(r: &mut Reader, v5: bool) -> Result<Disconnect, DecodeError> {
    if !v5 {
        r.finish("DISCONNECT must have remaining length 0 before MQTT 5")?;
        return Ok(Disconnect::default());
    }
    if r.is_empty() {
        return Ok(Disconnect::default());
    }
    let reason = check_reason(
        DISCONNECT_REASONS,
        r.u8()?,
        "DISCONNECT reason code not allowed by §3.14.2.1",
    )?;
    let properties = if r.is_empty() {
        Default::default()
    } else {
        properties::disconnect(r)?
    };
    r.finish("DISCONNECT has bytes after its properties")?;
    Ok(Disconnect { reason, properties })
}

/// AUTH (§3.15), laid out like an MQTT 5 DISCONNECT.
fn auth(r: &mut Reader) -> Result<Auth, DecodeError> {
    if r.is_empty() {
        return Ok(Auth::default());
    }
    let reason = check_reason(
        AUTH_REASONS,
        r.u8()?,
        "AUTH reason code not allowed by §3.15.2.1",
    )?;
    let properties = if r.is_empty() {
        Default::default()
    } else {
        properties::auth(r)?
    };
    r.finish("AUTH has bytes after its properties")?;
    Ok(Auth { reason, properties })
}
