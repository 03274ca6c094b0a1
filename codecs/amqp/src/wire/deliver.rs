//! `basic.deliver` with its content, written straight into the output buffer.
//!
//! Every consumed message goes through here, so it skips what [`super::out::encode_message`]
//! costs for the rarer content-bearing methods: building an `AMQPClass` (three short strings
//! allocated, then cloned again to make the frame), `amq-protocol`'s generator writing each
//! frame into a fresh vector (it allocates even to encode the `redelivered` bit), and a copy of
//! the properties. The bytes are the same; `wire::tests` compares them with the generator's.

use amq_protocol::frame::WriteContext;
use amq_protocol::protocol::BasicProperties;
use amq_protocol::protocol::basic::gen_properties;
use bytes::{BufMut, BytesMut};

use super::error::WireError;
use super::frame::{FRAME_END, FRAME_HEADER, FRAME_METHOD, FRAME_OVERHEAD, encode_body};
use super::out::{BASIC_CLASS_ID, body_chunk};

/// `basic.deliver`'s method id.
const DELIVER_METHOD_ID: u16 = 60;
/// Class id, weight and body size: what a content header holds before the properties.
const HEADER_FIXED: usize = 2 + 2 + 8;

/// The routing of one delivery: `basic.deliver`'s arguments.
#[derive(Debug, Clone, Copy)]
pub struct Deliver<'a> {
    pub consumer_tag: &'a str,
    pub delivery_tag: u64,
    pub redelivered: bool,
    pub exchange: &'a str,
    pub routing_key: &'a str,
}

/// Writes `basic.deliver`, the content header and the body frames (split at `frame_max`, 0 =
/// no limit) to `out`. `scratch` is where the properties are encoded; pass the same one every
/// time so it keeps its allocation. Nothing is written when an error is returned.
pub fn encode_delivery(
    channel: u16,
    deliver: &Deliver<'_>,
    properties: &BasicProperties,
    body: &[u8],
    frame_max: u32,
    scratch: &mut Vec<u8>,
    out: &mut BytesMut,
) -> Result<(), WireError> {
    let strings = [
        ("consumer-tag", deliver.consumer_tag),
        ("exchange", deliver.exchange),
        ("routing-key", deliver.routing_key),
    ];
    if let Some((field, value)) = strings.iter().find(|(_, v)| v.len() > 255) {
        return Err(WireError::ShortStringTooLong {
            field,
            len: value.len(),
        });
    }
    encode_properties(properties, scratch)?;
    let header_size = FRAME_OVERHEAD + HEADER_FIXED + scratch.len();
    if frame_max != 0 && header_size > frame_max as usize {
        return Err(WireError::HeaderTooLarge {
            size: header_size,
            frame_max,
        });
    }
    let method_size = 4 + 8 + 1 + strings.iter().map(|(_, v)| 1 + v.len()).sum::<usize>();
    out.reserve(FRAME_OVERHEAD + method_size + header_size + body.len() + FRAME_OVERHEAD);
    out.put_u8(FRAME_METHOD);
    out.put_u16(channel);
    out.put_u32(method_size as u32);
    out.put_u16(BASIC_CLASS_ID);
    out.put_u16(DELIVER_METHOD_ID);
    put_short(out, deliver.consumer_tag);
    out.put_u64(deliver.delivery_tag);
    out.put_u8(u8::from(deliver.redelivered));
    put_short(out, deliver.exchange);
    put_short(out, deliver.routing_key);
    out.put_u8(FRAME_END);

    out.put_u8(FRAME_HEADER);
    out.put_u16(channel);
    out.put_u32((HEADER_FIXED + scratch.len()) as u32);
    out.put_u16(BASIC_CLASS_ID);
    out.put_u16(0); // weight, unused (§4.2.6.1)
    out.put_u64(body.len() as u64);
    out.put_slice(scratch);
    out.put_u8(FRAME_END);

    for chunk in body.chunks(body_chunk(frame_max)) {
        encode_body(channel, chunk, out);
    }
    Ok(())
}

/// Property flags and values (§4.2.6.1), through `amq-protocol`'s generator: field tables
/// need a buffer it can write lengths back into.
fn encode_properties(properties: &BasicProperties, scratch: &mut Vec<u8>) -> Result<(), WireError> {
    scratch.clear();
    let buf = std::mem::take(scratch);
    match gen_properties(properties)(WriteContext::from(buf)) {
        Ok(ctx) => {
            *scratch = ctx.into_inner().0;
            Ok(())
        }
        Err(err) => Err(WireError::Encode {
            reason: err.to_string(),
        }),
    }
}

/// A short string whose length was checked.
fn put_short(out: &mut BytesMut, s: &str) {
    out.put_u8(s.len() as u8);
    out.put_slice(s.as_bytes());
}

#[cfg(test)]
mod tests {
    use amq_protocol::protocol::AMQPClass;
    use amq_protocol::types::{AMQPValue, FieldTable};
    use proptest::prelude::*;

    use super::*;
    use crate::wire::out;

    /// What the generic path writes: the method built with `amq-protocol`, then its content.
    fn generic(
        d: &Deliver<'_>,
        props: &BasicProperties,
        body: &[u8],
        frame_max: u32,
    ) -> Result<BytesMut, WireError> {
        let method: AMQPClass = out::basic_deliver(
            d.consumer_tag,
            d.delivery_tag,
            d.redelivered,
            d.exchange,
            d.routing_key,
        )?;
        let mut buf = BytesMut::new();
        out::encode_message(7, &method, props, body, frame_max, &mut buf)?;
        Ok(buf)
    }

    fn direct(
        d: &Deliver<'_>,
        props: &BasicProperties,
        body: &[u8],
        frame_max: u32,
    ) -> Result<BytesMut, WireError> {
        let mut buf = BytesMut::from(&b"before"[..]);
        let mut scratch = b"left over".to_vec();
        let result = encode_delivery(7, d, props, body, frame_max, &mut scratch, &mut buf);
        let written = buf.split_off(6);
        assert_eq!(&buf[..], b"before", "what was in the buffer stays");
        result.map(|()| written)
    }

    fn properties(headers: bool) -> BasicProperties {
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("text/plain".into())
            .with_expiration("60000".into());
        if !headers {
            return props;
        }
        let mut table = FieldTable::default();
        table.insert("n".into(), AMQPValue::LongLongInt(-3));
        table.insert("s".into(), AMQPValue::LongString("x".repeat(300).into()));
        props.with_headers(table)
    }

    proptest! {
        #[test]
        fn writes_the_bytes_the_generator_writes(
            tag in any::<u64>(),
            redelivered in any::<bool>(),
            consumer_tag in "[a-z.-]{0,40}",
            routing_key in "[a-z./]{0,255}",
            body in proptest::collection::vec(any::<u8>(), 0..10_000),
            frame_max in prop_oneof![Just(0u32), Just(4096u32), Just(131_072u32)],
            headers in any::<bool>(),
        ) {
            let d = Deliver {
                consumer_tag: &consumer_tag,
                delivery_tag: tag,
                redelivered,
                exchange: "amq.topic",
                routing_key: &routing_key,
            };
            let props = properties(headers);
            prop_assert_eq!(
                direct(&d, &props, &body, frame_max).unwrap(),
                generic(&d, &props, &body, frame_max).unwrap()
            );
        }
    }

    #[test]
    fn refuses_what_the_generic_path_refuses_and_writes_nothing() {
        let long = "k".repeat(256);
        let d = Deliver {
            consumer_tag: "c",
            delivery_tag: 1,
            redelivered: false,
            exchange: "",
            routing_key: &long,
        };
        let props = BasicProperties::default();
        assert_eq!(
            direct(&d, &props, b"x", 4096).unwrap_err(),
            WireError::ShortStringTooLong {
                field: "routing-key",
                len: 256
            }
        );

        let mut headers = FieldTable::default();
        headers.insert("big".into(), AMQPValue::LongString("x".repeat(5000).into()));
        let props = BasicProperties::default().with_headers(headers);
        let d = Deliver {
            routing_key: "q",
            ..d
        };
        let err = direct(&d, &props, b"x", 4096).unwrap_err();
        assert_eq!(err, generic(&d, &props, b"x", 4096).unwrap_err());
    }
}
