#!/usr/bin/env python3
"""Kafka produce throughput and end-to-end latency through confluent-kafka (librdkafka), against
Switchboard on each storage backend: the native log, and SeaweedFS (`weed mini`) in direct and
tiered mode. Starts every server itself on free loopback ports, one after the other, and prints
a Markdown table.

    .venv/bin/python bench/kafka_storage.py                      # all backends, default sizes
    .venv/bin/python bench/kafka_storage.py --backends log,direct --messages 200000
    .venv/bin/python bench/kafka_storage.py --bootstrap 127.0.0.1:9092   # any running broker

Throughput: one idempotent producer sends --messages values of each --sizes to a topic of
--partitions partitions, for acks=1 and acks=all, and the rate is counted from the first send to
the last delivery report. Latency: a producer sends --rate messages per second for --seconds,
each carrying its send time; a consumer in the same process records receive minus send time.
Consume throughput: a fresh consumer reads the throughput topic from the beginning.

Numbers from one run on a shared machine are noisy: compare columns of one run, not runs.
"""
import argparse
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "compat-tests" / "python"))
from prockit import free_port, terminate  # noqa: E402  (the suite's process helpers)
from weedkit import Weed  # noqa: E402  (the suite's SeaweedFS runner)


def wait_http(url, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer in {timeout} s")


class Switchboard:
    def __init__(self, binary, data_dir, sets):
        self.kafka, self.admin = free_port(), free_port()
        args = [binary, "serve", "--data-dir", str(data_dir),
                "--set", f"kafka.listen=127.0.0.1:{self.kafka}",
                "--set", f"admin.listen=127.0.0.1:{self.admin}",
                "--set", f"mqtt.listen=127.0.0.1:{free_port()}",
                "--set", f"mqtt.ws_listen=127.0.0.1:{free_port()}",
                "--set", f"amqp.listen=127.0.0.1:{free_port()}",
                "--set", "log.level=warn"]
        for s in sets:
            args += ["--set", s]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_http(f"http://127.0.0.1:{self.admin}/healthz")

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.kafka}"

    def stop(self):
        terminate(self.proc, 30)


def create_topic(bootstrap, topic, partitions):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        f.result(30)


def produce_throughput(bootstrap, topic, n, size, acks):
    p = Producer({"bootstrap.servers": bootstrap, "acks": acks, "enable.idempotence": acks == "all",
                  "linger.ms": 5, "batch.size": 1 << 20, "queue.buffering.max.messages": 500000,
                  "compression.type": "none"})
    value = os.urandom(size)
    done = [0]
    errors = []

    def report(err, _msg):
        if err:
            errors.append(err)
        done[0] += 1

    start = time.perf_counter()
    for _ in range(n):
        while True:
            try:
                p.produce(topic, value, on_delivery=report)
                break
            except BufferError:
                p.poll(0.01)
        p.poll(0)
    p.flush(300)
    elapsed = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"{len(errors)} deliveries failed, first: {errors[0]}")
    return n / elapsed, n * size / elapsed / 1e6


def consume_throughput(bootstrap, topic, n, partitions):
    """Reads the topic from the start with assigned partitions (no group join to wait for)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex,
                  "enable.auto.commit": False, "fetch.max.bytes": 64 << 20})
    start = time.perf_counter()
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    got = 0
    deadline = time.monotonic() + 300
    while got < n and time.monotonic() < deadline:
        got += sum(1 for m in c.consume(10000, timeout=0.05) if m.error() is None)
    elapsed = time.perf_counter() - start
    c.close()
    return got / elapsed


def latency(bootstrap, topic, rate, seconds, size):
    """Sends `rate` msg/s for `seconds` with acks=all; returns p50, p99, p99.9 in ms."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex,
                  "enable.auto.commit": False, "fetch.wait.max.ms": 100})
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                  "linger.ms": 0})
    # A warm-up message read back first: the consumer's position and both connections are
    # established before anything is measured.
    p.produce(topic, b"warm-up")
    p.flush(30)
    c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        m = c.poll(0.1)
        if m is not None and m.error() is None:
            break
    samples = []
    total = rate * seconds
    stop = threading.Event()

    def consume():
        # poll(), not consume(n): consume waits for n messages or its timeout, which would
        # be measured as latency.
        while not stop.is_set() and len(samples) < total:
            m = c.poll(0.1)
            if m is not None and m.error() is None:
                sent = struct.unpack(">d", m.value()[:8])[0]
                samples.append((time.time() - sent) * 1000)

    t = threading.Thread(target=consume)
    t.start()
    pad = b"x" * max(0, size - 8)
    start = time.perf_counter()
    for i in range(total):
        target = start + i / rate
        now = time.perf_counter()
        if target > now:
            time.sleep(target - now)
        p.produce(topic, struct.pack(">d", time.time()) + pad)
        p.poll(0)
    p.flush(60)
    deadline = time.monotonic() + 30
    while len(samples) < total and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    t.join()
    c.close()
    if not samples:
        return float("nan"), float("nan"), float("nan")
    q = statistics.quantiles(samples, n=1000)
    return q[499], q[989], q[998]


def run(bootstrap, args):
    rows = {}
    for size in args.sizes:
        for acks in ("1", "all"):
            topic = f"tp-{size}-{acks}-{uuid.uuid4().hex[:6]}"
            create_topic(bootstrap, topic, args.partitions)
            msgs, mb = produce_throughput(bootstrap, topic, args.messages, size, acks)
            rows[f"produce {size} B, acks={acks}"] = f"{msgs:,.0f} msg/s ({mb:,.1f} MB/s)"
            if acks == "all":
                rate = consume_throughput(bootstrap, topic, args.messages, args.partitions)
                rows[f"consume {size} B"] = f"{rate:,.0f} msg/s"
    topic = f"lat-{uuid.uuid4().hex[:6]}"
    create_topic(bootstrap, topic, 1)
    p50, p99, p999 = latency(bootstrap, topic, args.rate, args.seconds, 100)
    rows[f"end-to-end latency at {args.rate} msg/s, acks=all (p50 / p99 / p99.9)"] = \
        f"{p50:.1f} / {p99:.1f} / {p999:.1f} ms"
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--binary", default=str(ROOT / "target/release/switchboard"))
    ap.add_argument("--backends", default="log,direct,tiered")
    ap.add_argument("--bootstrap", help="measure this running broker instead")
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[100, 1024])
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--seconds", type=int, default=10)
    args = ap.parse_args()

    results = {}
    if args.bootstrap:
        results[args.bootstrap] = run(args.bootstrap, args)
    else:
        work = Path(tempfile.mkdtemp(prefix="sb-bench-"))
        weed = None
        try:
            for backend in args.backends.split(","):
                sets = []
                if backend in ("direct", "tiered"):
                    if weed is None:
                        weed = Weed(work / "weed", "bench").start()
                    sets = [f"storage.url=s3://bench/{uuid.uuid4().hex}",
                            f"storage.object.endpoint={weed.endpoint}",
                            "storage.object.allow_http=true",
                            f"storage.object.mode={backend}"]
                label = {"log": "native log", "direct": "S3 direct (SeaweedFS)",
                         "tiered": "S3 tiered (SeaweedFS)"}[backend]
                print(f"measuring {label} ...", file=sys.stderr)
                sb = Switchboard(args.binary, work / backend, sets)
                try:
                    results[label] = run(sb.bootstrap, args)
                finally:
                    sb.stop()
        finally:
            if weed:
                weed.stop()
            shutil.rmtree(work, ignore_errors=True)

    labels = list(results)
    print("| scenario | " + " | ".join(labels) + " |")
    print("|---|" + "---|" * len(labels))
    for row in next(iter(results.values())):
        print(f"| {row} | " + " | ".join(results[l].get(row, "") for l in labels) + " |")


if __name__ == "__main__":
    main()
