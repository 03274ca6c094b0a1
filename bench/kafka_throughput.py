"""Produce and consume throughput with confluent-kafka against any Kafka endpoint.

    .venv/bin/python bench/kafka_throughput.py --bootstrap 127.0.0.1:9092 --size 100 --acks all

Prints one line per phase: messages/s and MB/s. A stopgap until `switchboard-bench` (issue 7).
"""
import argparse
import time
import uuid

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", default="127.0.0.1:9092")
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--acks", default="1")
    ap.add_argument("--partitions", type=int, default=1)
    a = ap.parse_args()
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": a.bootstrap})  # must outlive the future
    admin.create_topics([NewTopic(topic, num_partitions=a.partitions, replication_factor=1)])[topic].result(30)
    payload = b"x" * a.size
    p = Producer({"bootstrap.servers": a.bootstrap, "acks": a.acks, "linger.ms": 5,
                  "batch.size": 1_000_000, "queue.buffering.max.messages": 1_000_000})
    start = time.perf_counter()
    for _ in range(a.messages):
        while True:
            try:
                p.produce(topic, payload)
                break
            except BufferError:
                p.poll(0.01)
    assert p.flush(120) == 0
    took = time.perf_counter() - start
    mb = a.messages * a.size / 1e6
    print(f"produce size={a.size} acks={a.acks}: {a.messages / took:,.0f} msg/s  {mb / took:,.1f} MB/s")

    c = Consumer({"bootstrap.servers": a.bootstrap, "group.id": topic, "auto.offset.reset": "earliest",
                  "fetch.max.bytes": 52_428_800})
    c.subscribe([topic])
    got = 0
    start = None
    deadline = time.time() + 300
    while got < a.messages and time.time() < deadline:
        for m in c.consume(10_000, timeout=1):
            if m.error() is None:
                if start is None:
                    start = time.perf_counter()
                got += 1
    took = time.perf_counter() - (start or time.perf_counter())
    c.close()
    print(f"consume size={a.size}: {got / took:,.0f} msg/s  {got * a.size / 1e6 / took:,.1f} MB/s ({got} msgs)")


if __name__ == "__main__":
    main()
