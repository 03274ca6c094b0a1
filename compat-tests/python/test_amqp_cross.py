"""AMQP, MQTT and Kafka on one switchboard: `amq.topic` and MQTT topics are one namespace
(AMQP routing key `a.b` is MQTT topic `a/b`), and a stream queue (`x-queue-type: stream`) is the
Kafka topic of the same name, readable and writable from both sides. Switchboard only: skipped
under --amqp-broker=rabbitmq (the reference broker has no Kafka, and no MQTT here)."""
import time

import pika
import pytest
from confluent_kafka import Consumer as KafkaConsumer
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from amqpkit import WAIT, Consumer, unique
from mqttkit import V311

pytestmark = pytest.mark.amqp_switchboard_only


@pytest.fixture
def mqtt_side(amqp_broker):
    """The same switchboard, seen as an MQTT broker (for mqttkit peers)."""
    from conftest import SwitchboardMqtt

    return SwitchboardMqtt(amqp_broker.server)


def create_topic(bootstrap, name, partitions=1):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    futures[name].result(timeout=30)


def kafka_read(bootstrap, topic, n, timeout=15):
    """Reads n records of `topic` from the beginning with a fresh consumer group."""
    c = KafkaConsumer({"bootstrap.servers": bootstrap, "group.id": unique("g"),
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


def test_amqp_publish_to_amq_topic_reaches_the_mqtt_subscriber_of_the_slash_topic(
        amqp_broker, mqtt_side, peers, conns):
    sub = peers(mqtt_side, protocol=V311)
    sub.subscribe("a/b", 1)
    ch = conns(amqp_broker).channel()
    ch.confirm_delivery()
    ch.basic_publish("amq.topic", "a.b", b"from amqp")
    got = sub.expect(1, timeout=WAIT)
    assert (got[0].topic, got[0].payload) == ("a/b", b"from amqp")


def test_mqtt_publish_reaches_an_amqp_queue_bound_to_amq_topic(amqp_broker, mqtt_side, peers,
                                                               conns):
    c = conns(amqp_broker)
    ch = c.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, "amq.topic", "a.*")
    cons = Consumer(ch, q, auto_ack=True)
    peers(mqtt_side, protocol=V311).publish("a/b", b"from mqtt", qos=1)
    m = cons.expect(1)[0]
    assert m.body == b"from mqtt"
    assert (m.method.exchange, m.method.routing_key) == ("amq.topic", "a.b")


def test_stream_queue_named_after_a_kafka_topic_delivers_its_records(amqp_broker, conns):
    topic = unique("orders")
    create_topic(amqp_broker.bootstrap, topic)
    p = Producer({"bootstrap.servers": amqp_broker.bootstrap})
    values = [f"record-{i}".encode() for i in range(10)]
    for i, v in enumerate(values):
        p.produce(topic, key=f"k{i}".encode(), value=v)
    assert p.flush(30) == 0

    c = conns(amqp_broker)
    ch = c.channel()
    ch.queue_declare(topic, durable=True, arguments={"x-queue-type": "stream"})
    ch.basic_qos(prefetch_count=50)
    cons = Consumer(ch, topic, arguments={"x-stream-offset": "first"})
    assert [m.body for m in cons.expect(10, timeout=15)] == values
    ch.basic_ack(cons.messages[-1].delivery_tag, multiple=True)


def test_amqp_publish_into_a_stream_queue_is_a_kafka_record(amqp_broker, conns):
    stream = unique("events")
    ch = conns(amqp_broker).channel()
    ch.confirm_delivery()
    ch.queue_declare(stream, durable=True, arguments={"x-queue-type": "stream"})
    ch.queue_bind(stream, "amq.direct", "order.created")
    ch.basic_publish("amq.direct", "order.created", b'{"id": 7}',
                     pika.BasicProperties(content_type="application/json", delivery_mode=2))
    r = kafka_read(amqp_broker.bootstrap, stream, 1)[0]
    assert r.value() == b'{"id": 7}'
    assert r.key() == b"order.created"
