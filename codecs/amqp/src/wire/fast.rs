//! Hand-written parsers for the methods every message brings: `basic.publish` on the way in,
//! and `basic.ack`, `basic.nack` and `basic.reject` from consumers.
//!
//! `amq-protocol`'s generated parser is correct but slow on these: it decodes bit fields into a
//! vector of flags with an allocated string per flag name, then looks the names up. These take
//! the same bytes to the same values. They only accept a payload that is well-formed to the
//! last byte and otherwise return `None`, so the generic parser sees every malformed payload and
//! reports it as before; the tests compare both parsers on arbitrary bytes.

use amq_protocol::protocol::{AMQPClass, basic};
use amq_protocol::types::ShortString;

/// The method's arguments (the payload after the class and method ids) as `amq-protocol`
/// would parse them, for the methods handled here; `None` for any other method or any payload
/// that is not exactly one well-formed argument list.
pub(crate) fn decode(class_id: u16, method_id: u16, args: &[u8]) -> Option<AMQPClass> {
    if class_id != 60 {
        return None;
    }
    let method = match method_id {
        40 => basic::AMQPMethod::Publish(publish(args)?),
        80 => {
            let (delivery_tag, bits) = tag_and_bits(args)?;
            basic::AMQPMethod::Ack(basic::Ack {
                delivery_tag,
                multiple: bit(bits, 0),
            })
        }
        90 => {
            let (delivery_tag, bits) = tag_and_bits(args)?;
            basic::AMQPMethod::Reject(basic::Reject {
                delivery_tag,
                requeue: bit(bits, 0),
            })
        }
        120 => {
            let (delivery_tag, bits) = tag_and_bits(args)?;
            basic::AMQPMethod::Nack(basic::Nack {
                delivery_tag,
                multiple: bit(bits, 0),
                requeue: bit(bits, 1),
            })
        }
        _ => return None,
    };
    Some(AMQPClass::Basic(method))
}

/// delivery-tag (long long) and one octet of bits (§4.2.5.2: bits pack from the low bit).
fn tag_and_bits(args: &[u8]) -> Option<(u64, u8)> {
    let [t0, t1, t2, t3, t4, t5, t6, t7, bits] = *args else {
        return None;
    };
    Some((u64::from_be_bytes([t0, t1, t2, t3, t4, t5, t6, t7]), bits))
}

/// reserved-1 (short), exchange, routing-key, mandatory and immediate bits.
fn publish(args: &[u8]) -> Option<basic::Publish> {
    let rest = args.get(2..)?;
    let (exchange, rest) = short_string(rest)?;
    let (routing_key, rest) = short_string(rest)?;
    let [bits] = *rest else {
        return None;
    };
    Some(basic::Publish {
        exchange,
        routing_key,
        mandatory: bit(bits, 0),
        immediate: bit(bits, 1),
    })
}

fn short_string(input: &[u8]) -> Option<(ShortString, &[u8])> {
    let (&len, rest) = input.split_first()?;
    let bytes = rest.get(..usize::from(len))?;
    let s = std::str::from_utf8(bytes).ok()?;
    Some((ShortString::from(s), &rest[usize::from(len)..]))
}

fn bit(bits: u8, n: u8) -> bool {
    (bits >> n) & 1 == 1
}

#[cfg(test)]
mod tests {
    use amq_protocol::protocol::parse_class;
    use proptest::prelude::*;

    use super::*;

    /// What the generic parser makes of the same payload, when it takes all of it.
    fn generic(class_id: u16, method_id: u16, args: &[u8]) -> Option<AMQPClass> {
        let mut payload = Vec::new();
        payload.extend_from_slice(&class_id.to_be_bytes());
        payload.extend_from_slice(&method_id.to_be_bytes());
        payload.extend_from_slice(args);
        match parse_class(payload.as_slice()) {
            Ok(([], method)) => Some(method),
            _ => None,
        }
    }

    fn publish_args(exchange: &[u8], routing_key: &[u8], bits: u8) -> Vec<u8> {
        let mut args = vec![0, 0, exchange.len() as u8];
        args.extend_from_slice(exchange);
        args.push(routing_key.len() as u8);
        args.extend_from_slice(routing_key);
        args.push(bits);
        args
    }

    proptest! {
        #[test]
        fn agrees_with_the_generic_parser_on_arbitrary_bytes(
            method_id in prop_oneof![Just(40u16), Just(80), Just(90), Just(120)],
            args in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            let fast = decode(60, method_id, &args);
            // Where the fast path declines, the generic parser decides.
            if fast.is_some() {
                prop_assert_eq!(fast, generic(60, method_id, &args));
            }
        }

        #[test]
        fn parses_every_well_formed_payload_as_the_generic_parser_does(
            method_id in prop_oneof![Just(80u16), Just(90), Just(120)],
            tag in any::<u64>(),
            bits in any::<u8>(),
            exchange in "[a-z.]{0,20}",
            routing_key in "\\PC{0,60}",
        ) {
            let mut args = tag.to_be_bytes().to_vec();
            args.push(bits);
            let fast = decode(60, method_id, &args);
            prop_assert!(fast.is_some());
            prop_assert_eq!(fast, generic(60, method_id, &args));

            prop_assume!(routing_key.len() <= 255);
            let args = publish_args(exchange.as_bytes(), routing_key.as_bytes(), bits);
            let fast = decode(60, 40, &args);
            prop_assert!(fast.is_some());
            prop_assert_eq!(fast, generic(60, 40, &args));
        }
    }

    #[test]
    fn declines_what_it_does_not_parse() {
        // Other methods, a short or long payload, a string running past the end, bad UTF-8.
        assert_eq!(decode(60, 10, &[0; 7]), None);
        assert_eq!(decode(50, 80, &[0; 9]), None);
        assert_eq!(decode(60, 80, &[0; 8]), None);
        assert_eq!(decode(60, 80, &[0; 10]), None);
        assert_eq!(decode(60, 40, &[0, 0, 5, b'a', 0, 0]), None);
        assert_eq!(decode(60, 40, &publish_args(b"\xff", b"k", 0)), None);
        assert_eq!(generic(60, 40, &publish_args(b"\xff", b"k", 0)), None);
    }
}
