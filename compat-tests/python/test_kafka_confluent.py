"""confluent-kafka (librdkafka) against switchboard: idempotent producer, consumer groups,
committed offsets that survive kill -9, compression codecs passing through."""
import threading
import time

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

TOTAL = 100_000


def create_topic(bootstrap, name, partitions):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    futures[name].result(timeout=30)


def produce(bootstrap, topic, values, **conf):
    errors = []
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, **conf})
    for i, v in enumerate(values):
        for _ in range(1000):
            try:
                p.produce(topic, key=str(i).encode(), value=v,
                          on_delivery=lambda err, msg: err and errors.append(err))
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    assert p.flush(60) == 0, "messages still in flight after 60 s"
    assert errors == [], f"delivery failed: {errors[:5]}"


def consume_group(bootstrap, topic, group, expected, members=3, timeout=180):
    """Runs `members` consumers in one group until `expected` messages arrived in total;
    each commits synchronously after processing what it polled."""
    seen = []
    lock = threading.Lock()
    stop = threading.Event()
    failures = []

    def member(n):
        c = Consumer({
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "client.id": f"member-{n}",
        })
        try:
            c.subscribe([topic])
            while not stop.is_set():
                msgs = c.consume(num_messages=1000, timeout=0.5)
                good = [m for m in msgs if m.error() is None]
                bad = [m.error() for m in msgs if m.error() is not None
                       and m.error().code() != KafkaError._PARTITION_EOF]
                if bad:
                    failures.extend(bad)
                if good:
                    with lock:
                        seen.extend((m.partition(), m.offset(), m.value()) for m in good)
                        if len(seen) >= expected:
                            stop.set()
                    c.commit(asynchronous=False)
        except Exception as e:  # surfaced by the assertion below
            failures.append(e)
        finally:
            c.close()

    threads = [threading.Thread(target=member, args=(n,)) for n in range(members)]
    for t in threads:
        t.start()
    deadline = time.time() + timeout
    while time.time() < deadline and not stop.is_set():
        time.sleep(0.2)
    stop.set()
    for t in threads:
        t.join(60)
    assert failures == [], f"consumer errors: {failures[:5]}"
    return seen


@pytest.mark.broker_control
def test_idempotent_lz4_group_consumption_survives_kill9(server):
    topic = "orders"
    create_topic(server.bootstrap, topic, 3)
    values = [f"m-{i}".encode() for i in range(TOTAL)]
    produce(server.bootstrap, topic, values, **{
        "enable.idempotence": True, "acks": "all", "compression.type": "lz4"})

    seen = consume_group(server.bootstrap, topic, "g1", TOTAL)
    assert len(seen) == TOTAL, f"read {len(seen)} of {TOTAL}"
    assert len({v for _, _, v in seen}) == TOTAL, "a message was delivered twice"
    assert {v for _, _, v in seen} == set(values)
    assert {p for p, _, _ in seen} == {0, 1, 2}, "all partitions carry data"

    later = [f"after-{i}".encode() for i in range(1000)]
    produce(server.bootstrap, topic, later, **{"enable.idempotence": True, "acks": "all"})
    server.kill9()
    server.start()

    resumed = consume_group(server.bootstrap, topic, "g1", len(later), members=1, timeout=120)
    got = [v for _, _, v in resumed]
    assert sorted(got) == sorted(later), "a new member must resume at the committed offsets"


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_every_compression_codec_round_trips(server, codec):
    topic = f"codec-{codec}"
    create_topic(server.bootstrap, topic, 1)
    values = [(f"{codec}-{i}-" + "x" * 100).encode() for i in range(500)]
    produce(server.bootstrap, topic, values, **{"compression.type": codec, "acks": "all"})
    c = Consumer({"bootstrap.servers": server.bootstrap, "group.id": f"c-{codec}",
                  "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    got = []
    deadline = time.time() + 60
    while len(got) < len(values) and time.time() < deadline:
        for m in c.consume(500, timeout=0.5):
            if m.error() is None:
                got.append(m.value())
    c.close()
    assert got == values, "order and content must survive storage unchanged"


def test_offsets_for_times_and_watermarks(server):
    topic = "times"
    create_topic(server.bootstrap, topic, 1)
    p = Producer({"bootstrap.servers": server.bootstrap})
    for i in range(10):
        p.produce(topic, value=b"v", timestamp=1_000_000 + i * 1000)
    assert p.flush(30) == 0
    c = Consumer({"bootstrap.servers": server.bootstrap, "group.id": "t"})
    low, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    assert (low, high) == (0, 10)
    found = c.offsets_for_times([TopicPartition(topic, 0, 1_004_500)], timeout=10)
    assert found[0].offset == 5
    c.close()


def test_unknown_topic_is_auto_created_on_produce(server):
    produce(server.bootstrap, "auto-made", [b"a", b"b"], acks="all")
    c = Consumer({"bootstrap.servers": server.bootstrap, "group.id": "auto",
                  "auto.offset.reset": "earliest"})
    md = c.list_topics(timeout=10)
    assert "auto-made" in md.topics
    c.close()
