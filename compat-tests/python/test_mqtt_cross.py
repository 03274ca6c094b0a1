"""MQTT and Kafka on one switchboard: MQTT publishes land in the stream `mqtt` (key = MQTT topic),
Kafka records in that stream reach MQTT subscribers of the topic named by their key, and a
persistent MQTT session survives kill -9. Switchboard only: skipped under
--mqtt-broker=mosquitto."""
import time

import pytest
from confluent_kafka import Consumer, Producer

from mqttkit import V5, V311, publish_props, unique

pytestmark = pytest.mark.switchboard_only

STREAM = "mqtt"


def consume(bootstrap, topic, n, timeout=30):
    """Reads n records of `topic` from the beginning with a fresh consumer group."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("g"),
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    got = []
    try:
        c.subscribe([topic])
        deadline = time.monotonic() + timeout
        while len(got) < n and time.monotonic() < deadline:
            got += [m for m in c.consume(n - len(got), timeout=0.5) if m.error() is None]
    finally:
        c.close()
    assert len(got) >= n, f"read {len(got)} of {n} records from {topic!r} in {timeout} s"
    return got


def headers_of(record):
    return record.headers() or []


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_mqtt_publish_is_a_record_of_stream_mqtt_keyed_by_topic(mqtt_broker, peers, qos):
    topic = unique("sensors") + "/temp"
    peers(mqtt_broker, protocol=V311).publish(topic, b"21.5", qos=qos)
    r = consume(mqtt_broker.bootstrap, STREAM, 1)[0]
    assert r.key() == topic.encode()
    assert r.value() == b"21.5"
    qos_headers = [v for k, v in headers_of(r) if k == "mqtt.qos"]
    assert qos_headers in ([str(qos).encode()], [bytes([qos])]), f"mqtt.qos header: {headers_of(r)}"


def test_v5_user_properties_and_content_type_become_record_headers(mqtt_broker, peers):
    topic = unique("props") + "/x"
    props = publish_props(UserProperty=[("trace-id", "abc123"), ("tenant", "blue")],
                          ContentType="application/json")
    peers(mqtt_broker, protocol=V5).publish(topic, b'{"ok": true}', qos=1, properties=props)
    r = consume(mqtt_broker.bootstrap, STREAM, 1)[0]
    assert (r.key(), r.value()) == (topic.encode(), b'{"ok": true}')
    headers = headers_of(r)
    assert ("trace-id", b"abc123") in headers
    assert ("tenant", b"blue") in headers
    assert ("content-type", b"application/json") in headers
    assert any(k == "mqtt.qos" for k, _ in headers)


@pytest.mark.parametrize("sub_qos", [0, 1, 2])
def test_kafka_record_keyed_by_topic_reaches_mqtt_subscriber(mqtt_broker, peers, sub_qos):
    sub = peers(mqtt_broker, protocol=V311)
    sub.subscribe("a/b", sub_qos)
    p = Producer({"bootstrap.servers": mqtt_broker.bootstrap})
    p.produce(STREAM, key=b"a/b", value=b"from kafka")
    assert p.flush(30) == 0
    got = sub.expect(1, timeout=15)
    assert (got[0].topic, got[0].payload) == ("a/b", b"from kafka")
    assert got[0].qos == min(sub_qos, 1), "Kafka records are delivered at most at QoS 1"


@pytest.mark.broker_control
def test_persistent_mqtt_session_survives_kill9(mqtt_broker, peers):
    topic = unique("durable")
    cid = unique("durable")
    session = {"client_id": cid, "protocol": V5, "clean": False, "session_expiry": 3600}
    sub = peers(mqtt_broker, **session)
    sub.subscribe(topic, 1)
    sub.disconnect()
    pub = peers(mqtt_broker, protocol=V5)
    sent = [f"d-{i}".encode() for i in range(20)]
    for body in sent:
        pub.publish(topic, body, qos=1)  # each waits for its PUBACK
    pub.disconnect()

    mqtt_broker.kill9()
    mqtt_broker.restart()

    back = peers(mqtt_broker, connect=False, **session)
    assert back.connect()[1] is True, "the session is still there after kill -9"
    assert [m.payload for m in back.expect(len(sent), timeout=15)] == sent
