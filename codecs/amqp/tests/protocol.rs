//! Raw AMQP against the front end, for what client libraries cannot be made to do: bad
//! headers, garbage frames, refused logins, heartbeats and the exact ids in exceptions.

mod common;

use std::time::Duration;

use amq_protocol::protocol::{AMQPClass, basic, channel, connection, queue};
use bytes::BytesMut;
use common::{TestServer, WAIT};
use switchboard_amqp::wire::{AMQPFrame, PROTOCOL_HEADER, decode_frame, encode_frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Raw {
    stream: TcpStream,
    buf: BytesMut,
}

impl Raw {
    async fn open(server: &TestServer) -> Self {
        Self {
            stream: TcpStream::connect(server.addr).await.expect("connect"),
            buf: BytesMut::new(),
        }
    }

    async fn send(&mut self, frame: AMQPFrame) {
        let mut out = BytesMut::new();
        encode_frame(&frame, &mut out).expect("encode");
        self.stream.write_all(&out).await.expect("write");
    }

    async fn method(&mut self, channel: u16, method: AMQPClass) {
        self.send(AMQPFrame::Method(channel, method)).await;
    }

    /// The next frame, or `None` once the server closed the socket.
    async fn recv(&mut self) -> Option<AMQPFrame> {
        tokio::time::timeout(WAIT, async {
            loop {
                if let Some(f) = decode_frame(&mut self.buf, 0).expect("valid frame") {
                    return Some(f);
                }
                self.buf.reserve(4096);
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
        .expect("a frame or close in time")
    }

    /// The next frame that is not a heartbeat.
    async fn recv_method(&mut self) -> Option<AMQPClass> {
        loop {
            match self.recv().await? {
                AMQPFrame::Method(_, m) => return Some(m),
                AMQPFrame::Heartbeat => continue,
                other => panic!("expected a method, got {other:?}"),
            }
        }
    }

    /// Runs the handshake up to `connection.open` with these credentials and vhost, and
    /// returns the server's answer to the open (or to the start-ok).
    async fn handshake(
        server: &TestServer,
        user: &str,
        pass: &str,
        vhost: &str,
        heartbeat: u16,
    ) -> (Self, AMQPClass) {
        let mut c = Self::open(server).await;
        c.stream.write_all(&PROTOCOL_HEADER).await.expect("header");
        let Some(AMQPClass::Connection(connection::AMQPMethod::Start(_))) = c.recv_method().await
        else {
            panic!("expected connection.start");
        };
        let response = format!("\0{user}\0{pass}");
        c.method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
                client_properties: Default::default(),
                mechanism: "PLAIN".into(),
                response: response.as_str().into(),
                locale: "en_US".into(),
            })),
        )
        .await;
        let reply = c.recv_method().await.expect("tune or close");
        let AMQPClass::Connection(connection::AMQPMethod::Tune(tune)) = reply else {
            return (c, reply);
        };
        c.method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
                channel_max: tune.channel_max,
                frame_max: tune.frame_max,
                heartbeat,
            })),
        )
        .await;
        c.method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open {
                virtual_host: vhost.into(),
            })),
        )
        .await;
        let reply = c.recv_method().await.expect("open-ok or close");
        (c, reply)
    }

    async fn connected(server: &TestServer) -> Self {
        let (c, reply) = Self::handshake(server, "guest", "guest", "/", 0).await;
        assert!(
            matches!(
                reply,
                AMQPClass::Connection(connection::AMQPMethod::OpenOk(_))
            ),
            "{reply:?}"
        );
        c
    }

    async fn open_channel(&mut self, ch: u16) {
        self.method(
            ch,
            AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
        )
        .await;
        assert!(matches!(
            self.recv_method().await,
            Some(AMQPClass::Channel(channel::AMQPMethod::OpenOk(_)))
        ));
    }
}

fn connection_close(m: Option<AMQPClass>) -> connection::Close {
    match m {
        Some(AMQPClass::Connection(connection::AMQPMethod::Close(c))) => c,
        other => panic!("expected connection.close, got {other:?}"),
    }
}

#[tokio::test]
async fn wrong_protocol_header_gets_the_0_9_1_header_back() {
    let server = TestServer::start().await;
    let mut c = Raw::open(&server).await;
    c.stream
        .write_all(b"AMQP\x01\x01\x00\x0a")
        .await
        .expect("write");
    let mut got = Vec::new();
    tokio::time::timeout(WAIT, c.stream.read_to_end(&mut got))
        .await
        .expect("closed in time")
        .expect("read");
    assert_eq!(got, PROTOCOL_HEADER);
}

#[tokio::test]
async fn http_request_gets_the_header_back_at_once() {
    let server = TestServer::start().await;
    let mut c = Raw::open(&server).await;
    c.stream
        .write_all(b"GET / HTTP/1.1\r\n\r\n")
        .await
        .expect("write");
    let mut got = Vec::new();
    tokio::time::timeout(WAIT, c.stream.read_to_end(&mut got))
        .await
        .expect("closed in time")
        .expect("read");
    assert_eq!(got, PROTOCOL_HEADER);
}

#[tokio::test]
async fn garbage_frame_closes_the_connection_with_frame_error() {
    let server = TestServer::start().await;
    let mut c = Raw::connected(&server).await;
    // A method frame whose frame-end octet is wrong.
    c.stream
        .write_all(&[1, 0, 1, 0, 0, 0, 4, 0, 20, 0, 10, 0x00])
        .await
        .expect("write");
    let close = connection_close(c.recv_method().await);
    assert_eq!(close.reply_code, 501);
    assert!(c.recv().await.is_none(), "socket closed after close");
}

#[tokio::test]
async fn unknown_frame_type_closes_with_frame_error() {
    let server = TestServer::start().await;
    let mut c = Raw::connected(&server).await;
    c.stream.write_all(&[9; 16]).await.expect("write");
    assert_eq!(connection_close(c.recv_method().await).reply_code, 501);
}

#[tokio::test]
async fn wrong_password_is_refused_with_access_refused() {
    let server = TestServer::start().await;
    let (mut c, reply) = Raw::handshake(&server, "guest", "wrong", "/", 0).await;
    let close = connection_close(Some(reply));
    assert_eq!(close.reply_code, 403);
    assert!(close.reply_text.as_str().starts_with("ACCESS_REFUSED"));
    c.method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {})),
    )
    .await;
    assert!(c.recv().await.is_none());
}

#[tokio::test]
async fn guest_may_not_connect_from_a_remote_address() {
    let server = TestServer::start().await;
    assert!(server.broker.check_credentials("guest", "guest", true));
    assert!(!server.broker.check_credentials("guest", "guest", false));
}

#[tokio::test]
async fn unknown_vhost_is_not_allowed() {
    let server = TestServer::start().await;
    let (_c, reply) = Raw::handshake(&server, "guest", "guest", "/nope", 0).await;
    let close = connection_close(Some(reply));
    assert_eq!(close.reply_code, 530);
    assert_eq!((close.class_id, close.method_id), (10, 40));
}

#[tokio::test]
async fn frame_on_an_unopened_channel_is_a_channel_error() {
    let server = TestServer::start().await;
    let mut c = Raw::connected(&server).await;
    c.method(
        7,
        AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos {
            prefetch_count: 1,
            global: false,
        })),
    )
    .await;
    assert_eq!(connection_close(c.recv_method().await).reply_code, 504);
}

#[tokio::test]
async fn channel_exception_names_the_failing_method() {
    let server = TestServer::start().await;
    let mut c = Raw::connected(&server).await;
    c.open_channel(1).await;
    c.method(
        1,
        AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
            queue: "missing".into(),
            consumer_tag: "".into(),
            no_local: false,
            no_ack: false,
            exclusive: false,
            nowait: false,
            arguments: Default::default(),
        })),
    )
    .await;
    let Some(AMQPClass::Channel(channel::AMQPMethod::Close(close))) = c.recv_method().await else {
        panic!("expected channel.close");
    };
    assert_eq!(close.reply_code, 404);
    assert_eq!((close.class_id, close.method_id), (60, 20));
    c.method(
        1,
        AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
    )
    .await;
    // The connection is still usable, on the same channel number too.
    c.open_channel(1).await;
    c.method(
        1,
        AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: "ok".into(),
            passive: false,
            durable: false,
            exclusive: false,
            auto_delete: false,
            nowait: false,
            arguments: Default::default(),
        })),
    )
    .await;
    assert!(matches!(
        c.recv_method().await,
        Some(AMQPClass::Queue(queue::AMQPMethod::DeclareOk(_)))
    ));
}

#[tokio::test]
async fn immediate_publish_is_not_implemented() {
    let server = TestServer::start().await;
    let mut c = Raw::connected(&server).await;
    c.open_channel(1).await;
    c.method(
        1,
        AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
            exchange: "".into(),
            routing_key: "q".into(),
            mandatory: false,
            immediate: true,
        })),
    )
    .await;
    c.send(AMQPFrame::Header(
        1,
        amq_protocol::frame::AMQPContentHeader {
            class_id: 60,
            body_size: 0,
            properties: Default::default(),
        },
    ))
    .await;
    let close = connection_close(c.recv_method().await);
    assert_eq!(close.reply_code, 540);
    assert_eq!((close.class_id, close.method_id), (60, 40));
}

#[tokio::test]
async fn server_sends_heartbeats_and_drops_a_silent_client() {
    let server = TestServer::start().await;
    let (mut c, reply) = Raw::handshake(&server, "guest", "guest", "/", 1).await;
    assert!(matches!(
        reply,
        AMQPClass::Connection(connection::AMQPMethod::OpenOk(_))
    ));
    let started = tokio::time::Instant::now();
    assert!(matches!(c.recv().await, Some(AMQPFrame::Heartbeat)));
    // Silent for two intervals: the server hangs up.
    loop {
        match c.recv().await {
            Some(AMQPFrame::Heartbeat) => continue,
            None => break,
            Some(other) => panic!("unexpected {other:?}"),
        }
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1500) && elapsed < Duration::from_secs(5),
        "{elapsed:?}"
    );
}
