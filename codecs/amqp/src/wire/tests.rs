//! Byte-level tests of the wire tier with real frames: bytes derived from the spec by hand,
//! and frames built with `amq-protocol`'s generator as a client would send them.

use amq_protocol::protocol::{basic, connection, exchange, queue};
use bytes::{BufMut, Bytes, BytesMut};
use proptest::prelude::*;

use super::out::{self, ServerProperties};
use super::*;

/// Encodes a frame with `amq-protocol`'s generator, the way lapin would send it.
fn client_bytes(frame: &AMQPFrame) -> BytesMut {
    let mut buf = BytesMut::new();
    encode_frame(frame, &mut buf).unwrap();
    buf
}

fn decode_all(mut buf: BytesMut, frame_max: u32) -> Vec<AMQPFrame> {
    let mut frames = Vec::new();
    while let Some(frame) = decode_frame(&mut buf, frame_max).unwrap() {
        frames.push(frame);
    }
    assert!(buf.is_empty(), "{} bytes left over", buf.len());
    frames
}

/// `connection.start-ok` with client properties {product: "pika"}, PLAIN guest/guest, en_US,
/// written out octet by octet from §4.2.3 (frame), §4.2.5 (tables, strings) and the XML.
fn start_ok_bytes() -> Vec<u8> {
    let mut payload = vec![0x00, 0x0A, 0x00, 0x0B]; // class 10 connection, method 11 start-ok
    payload.extend_from_slice(&[0, 0, 0, 17]); // client-properties: 17 bytes
    payload.push(7);
    payload.extend_from_slice(b"product");
    payload.push(b'S');
    payload.extend_from_slice(&[0, 0, 0, 4]);
    payload.extend_from_slice(b"pika");
    payload.push(5); // mechanism
    payload.extend_from_slice(b"PLAIN");
    payload.extend_from_slice(&[0, 0, 0, 12]); // response
    payload.extend_from_slice(b"\0guest\0guest");
    payload.push(5); // locale
    payload.extend_from_slice(b"en_US");
    let mut frame = vec![1, 0, 0]; // method frame, channel 0
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(&payload);
    frame.push(0xCE);
    frame
}

#[test]
fn start_ok_bytes_from_the_spec_decode_to_the_method() {
    let mut buf = BytesMut::from(&start_ok_bytes()[..]);
    let frame = decode_frame(&mut buf, FRAME_MIN_SIZE).unwrap().unwrap();
    let AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::StartOk(m))) = frame
    else {
        panic!("not a start-ok: {frame:?}");
    };
    assert_eq!(m.mechanism.as_str(), "PLAIN");
    assert_eq!(m.locale.as_str(), "en_US");
    let creds = parse_sasl_response(m.mechanism.as_str(), m.response.as_bytes()).unwrap();
    assert_eq!(creds.username, "guest");
    assert_eq!(
        m.client_properties.inner().get("product"),
        Some(&AMQPValue::LongString("pika".into()))
    );
    assert!(buf.is_empty());
}

#[test]
fn start_ok_encodes_to_the_same_bytes_the_spec_gives() {
    let mut client_properties = FieldTable::default();
    client_properties.insert("product".into(), AMQPValue::LongString("pika".into()));
    let frame = AMQPFrame::Method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
            client_properties,
            mechanism: "PLAIN".into(),
            response: "\0guest\0guest".into(),
            locale: "en_US".into(),
        })),
    );
    assert_eq!(&client_bytes(&frame)[..], &start_ok_bytes()[..]);
}

#[test]
fn pika_like_start_ok_with_capabilities_decodes() {
    let mut caps = FieldTable::default();
    for cap in [
        "authentication_failure_close",
        "basic.nack",
        "connection.blocked",
        "consumer_cancel_notify",
        "publisher_confirms",
    ] {
        caps.insert(cap.into(), AMQPValue::Boolean(true));
    }
    let mut props = FieldTable::default();
    props.insert(
        "product".into(),
        AMQPValue::LongString("Pika Python Client Library".into()),
    );
    props.insert(
        "platform".into(),
        AMQPValue::LongString("Python 3.11.2".into()),
    );
    props.insert("version".into(), AMQPValue::LongString("1.3.2".into()));
    props.insert("capabilities".into(), AMQPValue::FieldTable(caps));
    let method = AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
        client_properties: props,
        mechanism: "PLAIN".into(),
        response: "\0guest\0guest".into(),
        locale: "en_US".into(),
    }));
    let frames = decode_all(
        client_bytes(&AMQPFrame::Method(0, method.clone())),
        FRAME_MIN_SIZE,
    );
    assert_eq!(frames, vec![AMQPFrame::Method(0, method)]);
}

#[test]
fn partial_frames_need_more_bytes_and_leave_the_buffer_untouched() {
    let full = start_ok_bytes();
    for cut in 0..full.len() {
        let mut buf = BytesMut::from(&full[..cut]);
        assert_eq!(
            decode_frame(&mut buf, FRAME_MIN_SIZE),
            Ok(None),
            "cut at {cut}"
        );
        assert_eq!(&buf[..], &full[..cut]);
    }
}

#[test]
fn two_frames_in_one_buffer_decode_one_at_a_time() {
    let mut buf = BytesMut::from(&start_ok_bytes()[..]);
    buf.put_slice(&[8, 0, 0, 0, 0, 0, 0, 0xCE]);
    let frames = decode_all(buf, FRAME_MIN_SIZE);
    assert_eq!(frames.len(), 2);
    assert_eq!(frames[1], AMQPFrame::Heartbeat);
}

#[test]
fn frame_larger_than_frame_max_is_a_frame_error_before_its_payload_arrives() {
    // Header only: a body frame announcing 5000 payload bytes under frame_max 4096.
    let mut buf = BytesMut::from(&[3, 0, 1, 0, 0, 0x13, 0x88][..]);
    let err = decode_frame(&mut buf, 4096).unwrap_err();
    assert_eq!(
        err,
        WireError::FrameTooLarge {
            size: 5008,
            frame_max: 4096
        }
    );
    assert_eq!(err.reply_code().code(), 501);
}

#[test]
fn frame_exactly_frame_max_is_accepted() {
    let mut buf = BytesMut::new();
    frame::encode_body(1, &[7u8; 4096 - FRAME_OVERHEAD], &mut buf);
    assert_eq!(buf.len(), 4096);
    assert!(matches!(
        decode_frame(&mut buf, 4096),
        Ok(Some(AMQPFrame::Body(1, _)))
    ));
}

#[test]
fn frame_max_zero_means_no_limit() {
    let mut buf = BytesMut::new();
    frame::encode_body(1, &[7u8; 10_000], &mut buf);
    assert!(matches!(
        decode_frame(&mut buf, 0),
        Ok(Some(AMQPFrame::Body(1, _)))
    ));
}

#[test]
fn bad_frame_end_is_a_frame_error() {
    let mut bytes = start_ok_bytes();
    let last = bytes.len() - 1;
    bytes[last] = 0x00;
    let err = decode_frame(&mut BytesMut::from(&bytes[..]), FRAME_MIN_SIZE).unwrap_err();
    assert_eq!(err, WireError::BadFrameEnd { found: 0 });
    assert_eq!(err.reply_code().code(), 501);
}

#[test]
fn unknown_frame_type_is_a_frame_error_from_the_first_byte() {
    let err = decode_frame(&mut BytesMut::from(&b"G"[..]), FRAME_MIN_SIZE).unwrap_err();
    assert_eq!(err, WireError::UnknownFrameType { frame_type: b'G' });
    assert_eq!(err.reply_code().code(), 501);
}

fn method_frame(payload: &[u8]) -> BytesMut {
    let mut buf = BytesMut::new();
    buf.put_u8(FRAME_METHOD);
    buf.put_u16(1);
    buf.put_u32(payload.len() as u32);
    buf.put_slice(payload);
    buf.put_u8(FRAME_END);
    buf
}

#[test]
fn unknown_class_is_not_implemented() {
    // Class 70 was `file` in AMQP 0-9; 0-9-1 dropped it.
    let err = decode_frame(&mut method_frame(&[0, 70, 0, 10]), FRAME_MIN_SIZE).unwrap_err();
    assert_eq!(err, WireError::UnknownClass { class_id: 70 });
    assert_eq!(err.reply_code().code(), 540);
    assert_eq!(err.class_method(), (70, 0));
}

#[test]
fn unknown_method_of_a_known_class_is_command_invalid() {
    let err = decode_frame(&mut method_frame(&[0, 60, 0, 99]), FRAME_MIN_SIZE).unwrap_err();
    assert_eq!(
        err,
        WireError::UnknownMethod {
            class_id: 60,
            method_id: 99
        }
    );
    assert_eq!(err.reply_code().code(), 503);
}

#[test]
fn truncated_method_arguments_are_a_frame_error() {
    // basic.qos needs 7 argument bytes; give 2.
    let err = decode_frame(&mut method_frame(&[0, 60, 0, 10, 0, 0]), FRAME_MIN_SIZE).unwrap_err();
    assert_eq!(
        err,
        WireError::MalformedMethod {
            class_id: 60,
            method_id: 10
        }
    );
    assert_eq!(err.reply_code().code(), 501);
}

#[test]
fn trailing_bytes_after_method_arguments_are_a_frame_error() {
    // channel.open has one short string (reserved); add a stray byte.
    let err = decode_frame(&mut method_frame(&[0, 20, 0, 10, 0, 0xFF]), FRAME_MIN_SIZE);
    assert!(matches!(
        err,
        Err(WireError::MalformedMethod {
            class_id: 20,
            method_id: 10
        })
    ));
}

#[test]
fn method_payload_shorter_than_its_ids_is_a_frame_error() {
    let err = decode_frame(&mut method_frame(&[0, 60]), FRAME_MIN_SIZE).unwrap_err();
    assert_eq!(err, WireError::MethodTooShort { size: 2 });
}

#[test]
fn heartbeat_on_a_channel_other_than_zero_is_a_frame_error() {
    let err = decode_frame(&mut BytesMut::from(&[8, 0, 3, 0, 0, 0, 0, 0xCE][..]), 4096);
    assert_eq!(
        err,
        Err(WireError::BadHeartbeat {
            channel: 3,
            size: 0
        })
    );
}

#[test]
fn deeply_nested_arguments_are_refused_instead_of_overflowing_the_stack() {
    let mut args = vec![0, 50, 0, 10, 0, 0, 1, b'q', 0];
    args.extend(nesting::tests::nested_table(5000));
    let err = decode_frame(&mut method_frame(&args), 0).unwrap_err();
    assert_eq!(
        err,
        WireError::NestingTooDeep {
            limit: MAX_TABLE_DEPTH
        }
    );
}

#[test]
fn arguments_nested_to_the_limit_still_decode() {
    let mut args = vec![0, 50, 0, 10, 0, 0, 1, b'q', 0];
    args.extend(nesting::tests::nested_table(MAX_TABLE_DEPTH));
    let frame = decode_frame(&mut method_frame(&args), 0).unwrap().unwrap();
    assert!(matches!(
        frame,
        AMQPFrame::Method(1, AMQPClass::Queue(queue::AMQPMethod::Declare(_)))
    ));
}

#[test]
fn deeply_nested_message_headers_are_refused() {
    let mut payload = vec![0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    payload.extend_from_slice(&(1u16 << 13).to_be_bytes()); // headers flag only
    payload.extend(nesting::tests::nested_table(1000));
    let mut buf = BytesMut::new();
    buf.put_u8(FRAME_HEADER);
    buf.put_u16(1);
    buf.put_u32(payload.len() as u32);
    buf.put_slice(&payload);
    buf.put_u8(FRAME_END);
    assert_eq!(
        decode_frame(&mut buf, 0),
        Err(WireError::NestingTooDeep {
            limit: MAX_TABLE_DEPTH
        })
    );
}

#[test]
fn content_header_round_trips_with_properties() {
    let mut headers = FieldTable::default();
    headers.insert("x-trace".into(), AMQPValue::LongString("abc".into()));
    let props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_headers(headers)
        .with_expiration("60000".into());
    let frames = out::content_frames(5, &props, b"{}", 4096);
    let mut buf = BytesMut::new();
    for f in &frames {
        encode_frame(f, &mut buf).unwrap();
    }
    assert_eq!(decode_all(buf, 4096), frames);
}

#[test]
fn protocol_header_0_9_1_is_accepted() {
    assert_eq!(
        check_protocol_header(b"AMQP\x00\x00\x09\x01"),
        HeaderCheck::Ok
    );
}

#[test]
fn protocol_header_prefix_needs_more_bytes() {
    assert_eq!(check_protocol_header(b""), HeaderCheck::NeedMore);
    assert_eq!(check_protocol_header(b"AMQ"), HeaderCheck::NeedMore);
    assert_eq!(
        check_protocol_header(b"AMQP\x00\x00\x09"),
        HeaderCheck::NeedMore
    );
}

#[test]
fn other_protocols_and_versions_get_the_wrong_header_answer() {
    assert_eq!(check_protocol_header(b"GET / HT"), HeaderCheck::Wrong);
    assert_eq!(check_protocol_header(b"G"), HeaderCheck::Wrong);
    // AMQP 1.0 and 0-8 clients.
    assert_eq!(
        check_protocol_header(b"AMQP\x00\x01\x00\x00"),
        HeaderCheck::Wrong
    );
    assert_eq!(
        check_protocol_header(b"AMQP\x01\x01\x08\x00"),
        HeaderCheck::Wrong
    );
    assert_eq!(&PROTOCOL_HEADER, b"AMQP\x00\x00\x09\x01");
}

#[test]
fn connection_start_advertises_rabbitmq_capabilities_and_mechanisms() {
    let mut buf = BytesMut::new();
    let start = out::connection_start(&ServerProperties::default());
    encode_frame(&AMQPFrame::Method(0, start), &mut buf).unwrap();
    // method frame on channel 0; class 10 method 10; version 0-9.
    assert_eq!(&buf[..3], &[1, 0, 0]);
    assert_eq!(&buf[7..13], &[0, 10, 0, 10, 0, 9]);
    let frames = decode_all(buf, FRAME_MIN_SIZE);
    let AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Start(m))) = &frames[0]
    else {
        panic!("not a start: {frames:?}");
    };
    assert_eq!(m.mechanisms.as_bytes(), b"PLAIN AMQPLAIN");
    assert_eq!(m.locales.as_bytes(), b"en_US");
    let Some(AMQPValue::FieldTable(caps)) = m.server_properties.inner().get("capabilities") else {
        panic!("no capabilities table");
    };
    for cap in [
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "connection.blocked",
        "authentication_failure_close",
        "per_consumer_qos",
    ] {
        assert_eq!(
            caps.inner().get(cap),
            Some(&AMQPValue::Boolean(true)),
            "{cap}"
        );
    }
}

#[test]
fn content_is_split_into_body_frames_at_frame_max() {
    let body: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
    let deliver = out::basic_deliver("ctag", 1, false, "amq.direct", "k").unwrap();
    let mut buf = BytesMut::new();
    out::encode_message(
        1,
        &deliver,
        &BasicProperties::default(),
        &body,
        4096,
        &mut buf,
    )
    .unwrap();
    let frames = decode_all(buf, 4096);
    let sizes: Vec<usize> = frames
        .iter()
        .filter_map(|f| match f {
            AMQPFrame::Body(_, b) => Some(b.len()),
            _ => None,
        })
        .collect();
    assert_eq!(sizes, vec![4088, 4088, 1824]);
    let joined: Vec<u8> = frames
        .iter()
        .filter_map(|f| match f {
            AMQPFrame::Body(_, b) => Some(b.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(joined, body);
    assert!(matches!(&frames[1], AMQPFrame::Header(1, h) if h.body_size == 10_000));
}

#[test]
fn empty_content_has_a_header_and_no_body_frame() {
    let frames = out::content_frames(1, &BasicProperties::default(), b"", 4096);
    assert_eq!(frames.len(), 1);
    assert!(frames[0].is_header());
}

#[test]
fn routing_key_longer_than_a_short_string_is_refused_when_building_deliver() {
    let long = "a".repeat(256);
    let err = out::basic_deliver("ctag", 1, false, "amq.topic", &long).unwrap_err();
    assert_eq!(
        err,
        WireError::ShortStringTooLong {
            field: "routing-key",
            len: 256
        }
    );
}

#[test]
fn overlong_short_strings_are_refused_by_the_builders_not_truncated() {
    // The encoder relies on this: amq-protocol's ShortString cannot hold more than 255 bytes.
    assert!(ShortString::try_new("x".repeat(256)).is_err());
    assert_eq!(
        out::short("queue", &"q".repeat(300)),
        Err(WireError::ShortStringTooLong {
            field: "queue",
            len: 300
        })
    );
    assert!(out::queue_declare_ok(&"q".repeat(256), 0, 0).is_err());
    assert!(out::basic_consume_ok(&"c".repeat(256)).is_err());
}

#[test]
fn content_header_larger_than_frame_max_is_refused() {
    let mut headers = FieldTable::default();
    headers.insert("big".into(), AMQPValue::LongString("x".repeat(5000).into()));
    let props = BasicProperties::default().with_headers(headers);
    let mut buf = BytesMut::new();
    let deliver = out::basic_deliver("c", 1, false, "", "q").unwrap();
    let err = out::encode_message(1, &deliver, &props, b"x", 4096, &mut buf).unwrap_err();
    assert!(matches!(
        err,
        WireError::HeaderTooLarge {
            frame_max: 4096,
            ..
        }
    ));
    assert!(buf.is_empty(), "nothing half-written");
}

#[test]
fn close_reply_text_follows_rabbitmq_format_and_fits_a_short_string() {
    let close = out::channel_close(crate::ReplyCode::NotFound, &"q".repeat(400), (50, 10));
    let AMQPClass::Channel(amq_protocol::protocol::channel::AMQPMethod::Close(c)) = &close else {
        panic!("not a close");
    };
    assert_eq!(c.reply_code, 404);
    assert!(c.reply_text.as_str().starts_with("NOT_FOUND - qqq"));
    assert!(c.reply_text.as_str().len() <= 255);
    let mut buf = BytesMut::new();
    encode_frame(&AMQPFrame::Method(1, close.clone()), &mut buf).unwrap();
    assert_eq!(decode_all(buf, 4096), vec![AMQPFrame::Method(1, close)]);
}

#[test]
fn client_sending_a_server_only_method_is_command_invalid() {
    let deliver = out::basic_deliver("c", 1, false, "", "q").unwrap();
    let err = check_client_method(&deliver).unwrap_err();
    assert_eq!(err.reply_code().code(), 503);
    assert_eq!(err.class_method(), (60, 60));
    assert!(check_client_method(&out::connection_tune(0, 0, 0)).is_err());
    assert!(
        check_client_method(&out::basic_ack(1, false)).is_ok(),
        "ack goes both ways"
    );
    let declare = AMQPClass::Exchange(exchange::AMQPMethod::Declare(exchange::Declare {
        exchange: "x".into(),
        kind: "direct".into(),
        passive: false,
        durable: false,
        auto_delete: false,
        internal: false,
        nowait: false,
        arguments: FieldTable::default(),
    }));
    assert!(check_client_method(&declare).is_ok());
}

#[test]
fn publish_frames_from_a_client_assemble_into_a_message() {
    let publish = AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
        exchange: "".into(),
        routing_key: "jobs".into(),
        mandatory: true,
        immediate: false,
    }));
    let mut buf = client_bytes(&AMQPFrame::Method(7, publish));
    for f in out::content_frames(7, &BasicProperties::default(), &[1u8; 300], 128) {
        encode_frame(&f, &mut buf).unwrap();
    }
    let mut asm = ContentAssembler::new(7, 1 << 20);
    let mut done = None;
    for frame in decode_all(buf, 128) {
        let step = match frame {
            AMQPFrame::Method(7, m) => asm.on_method(m).unwrap(),
            AMQPFrame::Header(7, h) => asm.on_header(h).unwrap(),
            AMQPFrame::Body(7, b) => asm.on_body(&b).unwrap(),
            other => panic!("unexpected {other:?}"),
        };
        if let Assembly::Complete(m) = step {
            done = Some(m);
        }
    }
    let message = done.expect("message completed");
    assert_eq!(message.body, Bytes::from(vec![1u8; 300]));
    assert!(message.publish.mandatory);
}

proptest! {
    /// Arbitrary bytes never panic the decoder, under any frame_max, and every outcome is a
    /// frame, an error or a clean "need more".
    #[test]
    fn decoding_random_bytes_never_panics(
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
        frame_max in prop_oneof![Just(0u32), Just(4096u32), 8u32..1024],
    ) {
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(_)) = decode_frame(&mut buf, frame_max) {}
    }

    /// Random payloads behind a valid envelope reach the method and header parsers.
    #[test]
    fn random_payloads_in_valid_envelopes_never_panic(
        frame_type in prop_oneof![Just(FRAME_METHOD), Just(FRAME_HEADER)],
        class_method in prop_oneof![
            Just([0u8, 10, 0, 11]), Just([0, 50, 0, 10]), Just([0, 60, 0, 20]),
            Just([0, 60, 0, 40]), Just([0, 40, 0, 10]), any::<[u8; 4]>(),
        ],
        rest in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let mut payload = class_method.to_vec();
        payload.extend(rest);
        let mut buf = BytesMut::new();
        buf.put_u8(frame_type);
        buf.put_u16(1);
        buf.put_u32(payload.len() as u32);
        buf.put_slice(&payload);
        buf.put_u8(FRAME_END);
        let _ = decode_frame(&mut buf, 0);
    }

    /// Whatever the client splits its bytes into, the same frames come out.
    #[test]
    fn frames_decode_the_same_whatever_the_read_boundaries(cuts in proptest::collection::vec(1usize..40, 1..20)) {
        let mut wire = BytesMut::from(&start_ok_bytes()[..]);
        for f in out::content_frames(1, &BasicProperties::default(), &[9u8; 100], 64) {
            encode_frame(&f, &mut wire).unwrap();
        }
        let expected = decode_all(wire.clone(), 0);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        let mut rest = &wire[..];
        let mut i = 0;
        while !rest.is_empty() {
            let n = cuts[i % cuts.len()].min(rest.len());
            buf.put_slice(&rest[..n]);
            rest = &rest[n..];
            i += 1;
            while let Some(f) = decode_frame(&mut buf, 0).unwrap() {
                got.push(f);
            }
        }
        prop_assert_eq!(got, expected);
    }
}
