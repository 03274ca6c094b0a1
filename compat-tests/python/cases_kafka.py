"""Kafka client behaviours, each written once and run through every Kafka client adapter by
its test file (test_kafka_kafkajs.py, test_kafka_rust.py): produce and consume, consumer groups
with committed offsets and rebalances, gzip, the idempotent producer, topic admin and offset
look-ups.

The `kafka` fixture of the test file is an adapterkit.KafkaClient; a client that cannot do a
case lists it in its file's CANNOT (and matrix.py's NA). Only the cases are exported: a test
file takes them with `from cases_kafka import *`."""
import time
import uuid


def unique(prefix) -> str:
    """A topic or group name no other test uses (an external broker is shared)."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def test_produce_and_consume_keep_order_keys_and_headers(kafka):
    topic = unique("k-pc")
    assert kafka.createTopics(topics=[{"topic": topic, "numPartitions": 1}])["created"]
    sent = [{"key": f"k{i % 7}", "value": f"value-{i}", "headers": {"n": str(i), "src": "compat"}}
            for i in range(150)]
    for chunk in range(0, len(sent), 50):  # three produce requests
        kafka.produce(topic=topic, messages=sent[chunk:chunk + 50])
    kafka.consume(consumer="c", groupId=unique("k-g"), topics=[topic])
    got = kafka.expect("c", len(sent))
    assert [m["offset"] for m in got] == list(range(len(sent)))
    assert [(m["key"], m["value"], m["headers"]) for m in got] == \
        [(s["key"], s["value"], s["headers"]) for s in sent]


def test_unknown_topic_is_auto_created_on_produce(kafka):
    topic = unique("k-auto")
    kafka.produce(topic=topic, messages=[{"value": "first"}])
    assert topic in kafka.listTopics()["topics"]
    kafka.consume(consumer="c", groupId=unique("k-g"), topics=[topic])
    assert [m["value"] for m in kafka.expect("c", 1)] == ["first"]


def test_committed_offsets_hold_for_the_next_group_member(kafka):
    topic, group = unique("k-commit"), unique("k-g")
    kafka.createTopics(topics=[{"topic": topic, "numPartitions": 2}])
    for p in (0, 1):
        kafka.produce(topic=topic, messages=[{"value": f"old-{p}-{i}", "partition": p}
                                               for i in range(10)])
    kafka.consume(consumer="first", groupId=group, topics=[topic])
    assert len(kafka.expect("first", 20)) == 20
    kafka.commit(consumer="first", offsets=[{"topic": topic, "partition": p, "offset": 10}
                                              for p in (0, 1)])
    committed = kafka.fetchOffsets(groupId=group, topics=[topic])["topics"][0]["partitions"]
    assert sorted((c["partition"], int(c["offset"])) for c in committed) == [(0, 10), (1, 10)]
    kafka.stop(consumer="first")

    for p in (0, 1):
        kafka.produce(topic=topic, messages=[{"value": f"new-{p}-{i}", "partition": p}
                                               for i in range(3)])
    kafka.consume(consumer="next", groupId=group, topics=[topic], fromBeginning=True)
    got = kafka.expect("next", 6)
    # fromBeginning only applies without a committed offset: the group's offsets win.
    assert sorted(m["value"] for m in got) == sorted(f"new-{p}-{i}" for p in (0, 1)
                                                      for i in range(3))


def test_second_member_joining_splits_the_partitions(kafka):
    topic, group = unique("k-rebal"), unique("k-g")
    kafka.createTopics(topics=[{"topic": topic, "numPartitions": 2}])
    kafka.consume(consumer="a", groupId=group, topics=[topic])
    [first] = kafka.assignment(consumer="a", joins=1, timeoutMs=10_000)["joins"]
    assert sorted(first["assignment"][topic]) == [0, 1], "a lone member gets every partition"

    kafka.consume(consumer="b", groupId=group, topics=[topic])
    b = kafka.assignment(consumer="b", joins=1, timeoutMs=15_000)
    a = kafka.assignment(consumer="a", joins=2, timeoutMs=15_000)
    assert b["complete"] and a["complete"], f"no rebalance: a={a['joins']} b={b['joins']}"
    mine = {"a": a["joins"][-1]["assignment"].get(topic, []),
            "b": b["joins"][-1]["assignment"].get(topic, [])}
    assert sorted(mine["a"] + mine["b"]) == [0, 1] and len(mine["a"]) == 1, mine

    for p in (0, 1):
        kafka.produce(topic=topic, messages=[{"value": f"to-{p}", "partition": p}])
    for name in ("a", "b"):
        [m] = kafka.expect(name, 1, timeout=10)
        assert m["partition"] == mine[name][0]
        assert m["value"] == f"to-{mine[name][0]}"


def test_gzip_batches_round_trip(kafka):
    topic = unique("k-gzip")
    kafka.createTopics(topics=[{"topic": topic, "numPartitions": 1}])
    sent = [{"key": str(i), "value": f"{i:05d} " + "compressible " * 40} for i in range(200)]
    for chunk in range(0, len(sent), 100):
        kafka.produce(topic=topic, messages=sent[chunk:chunk + 100], compression="gzip")
    kafka.consume(consumer="c", groupId=unique("k-g"), topics=[topic])
    got = kafka.expect("c", len(sent))
    assert [(m["key"], m["value"]) for m in got] == [(s["key"], s["value"]) for s in sent]
    assert [m["offset"] for m in got] == list(range(len(sent))), \
        "records of a compressed batch get consecutive offsets"


def test_idempotent_producer_batches_keep_their_producer_id_and_sequence(kafka):
    topic = unique("k-idem")
    kafka.createTopics(topics=[{"topic": topic, "numPartitions": 1}])
    for batch in range(3):
        kafka.produce(producer="idem", idempotent=True, topic=topic,
                        messages=[{"value": f"b{batch}-{i}"} for i in range(5)])
    kafka.consume(consumer="c", groupId=unique("k-g"), topics=[topic])
    got = kafka.expect("c", 15)
    assert [m["value"] for m in got] == [f"b{b}-{i}" for b in range(3) for i in range(5)]
    ids = {m["producerId"] for m in got}
    assert len(ids) == 1 and ids.pop() >= 0, "one producer id, assigned by InitProducerId"
    # Each batch is stored as sent: its first sequence numbers the records before it.
    assert [m["firstSequence"] for m in got[::5]] == [0, 5, 10]


def test_admin_creates_lists_describes_and_deletes_topics(kafka):
    topic = unique("k-admin")
    spec = [{"topic": topic, "numPartitions": 3}]
    assert kafka.createTopics(topics=spec)["created"] is True
    assert kafka.createTopics(topics=spec)["created"] is False, \
        "creating an existing topic reports that it existed"
    assert topic in kafka.listTopics()["topics"]

    [meta] = kafka.fetchTopicMetadata(topics=[topic])["topics"]
    assert meta["name"] == topic
    assert sorted(p["partitionId"] for p in meta["partitions"]) == [0, 1, 2]
    assert all(p["partitionErrorCode"] == 0 and p["leader"] >= 0 for p in meta["partitions"])

    kafka.deleteTopics(topics=[topic])
    assert topic not in kafka.listTopics()["topics"]


def test_admin_adds_partitions_to_a_topic(kafka):
    topic = unique("k-grow")
    kafka.createTopics(topics=[{"topic": topic, "numPartitions": 3}])
    kafka.createPartitions(topicPartitions=[{"topic": topic, "count": 5}])
    [meta] = kafka.fetchTopicMetadata(topics=[topic])["topics"]
    assert sorted(p["partitionId"] for p in meta["partitions"]) == [0, 1, 2, 3, 4]
    kafka.produce(topic=topic, messages=[{"value": "in a new partition", "partition": 4}])
    kafka.consume(consumer="c", groupId=unique("k-g"), topics=[topic])
    [m] = kafka.expect("c", 1)
    assert (m["partition"], m["value"]) == (4, "in a new partition")


def test_topic_offsets_and_offsets_for_a_timestamp(kafka):
    topic = unique("k-offsets")
    kafka.createTopics(topics=[{"topic": topic, "numPartitions": 2}])
    base = int(time.time() * 1000) - 60_000  # recent: no retention applies
    kafka.produce(topic=topic, messages=[{"value": f"p0-{i}", "partition": 0,
                                            "timestamp": str(base + i * 1000)} for i in range(4)])
    kafka.produce(topic=topic, messages=[{"value": f"p1-{i}", "partition": 1,
                                            "timestamp": str(base + i * 1000)} for i in range(7)])
    offsets = {p["partition"]: p for p in kafka.fetchTopicOffsets(topic=topic)["partitions"]}
    assert {p: (int(o["low"]), int(o["high"])) for p, o in offsets.items()} == \
        {0: (0, 4), 1: (0, 7)}

    # The first offset whose timestamp is at or after the one asked for.
    at = kafka.fetchTopicOffsetsByTimestamp(topic=topic, timestamp=base + 2500)["partitions"]
    assert {p["partition"]: int(p["offset"]) for p in at} == {0: 3, 1: 3}
    later = kafka.fetchTopicOffsetsByTimestamp(topic=topic, timestamp=base + 5000)["partitions"]
    # Past a partition's last record: its end offset.
    assert {p["partition"]: int(p["offset"]) for p in later} == {0: 4, 1: 5}


__all__ = [name for name in dir() if name.startswith("test_")]
