"""kafka-python: a second, independent implementation of the Kafka protocol."""
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic


def test_produce_and_group_consume_with_commit(server):
    admin = KafkaAdminClient(bootstrap_servers=server.bootstrap)
    admin.create_topics([NewTopic("kp", num_partitions=2, replication_factor=1)])
    assert "kp" in admin.list_topics()
    admin.close()

    producer = KafkaProducer(bootstrap_servers=server.bootstrap, acks="all")
    sent = [f"kp-{i}".encode() for i in range(300)]
    for v in sent:
        producer.send("kp", value=v)
    producer.flush(30)
    producer.close()

    consumer = KafkaConsumer("kp", bootstrap_servers=server.bootstrap, group_id="kpg",
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             consumer_timeout_ms=10_000)
    got = []
    deadline = time.time() + 60
    while len(got) < len(sent) and time.time() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            got.extend(r.value for r in records)
    consumer.commit()
    consumer.close()
    assert sorted(got) == sorted(sent)

    again = KafkaConsumer("kp", bootstrap_servers=server.bootstrap, group_id="kpg",
                          auto_offset_reset="earliest", consumer_timeout_ms=3000)
    leftover = [r.value for r in again]
    again.close()
    assert leftover == [], "committed offsets must hold for the next member"
