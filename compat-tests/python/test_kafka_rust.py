"""rskafka (through the Rust adapter, compat-tests/rust): a pure-Rust, partition-level Kafka
client (the one switchboard-bench uses). Runs the cases of cases_kafka.py that such a client
can: produce and consume by partition, auto-creation, gzip, topic admin and offset look-ups."""
import pytest

from adapterkit import KafkaClient, needs_rust
from cases_kafka import *  # noqa: F403 (the cases, run here with rskafka)

pytestmark = needs_rust()

_NO_GROUPS = ("rskafka has no consumer groups (no JoinGroup / SyncGroup / OffsetCommit / "
              "OffsetFetch): it reads partitions by offset")

# What rskafka cannot do (matrix.py's NA gives the same reasons).
CANNOT = {
    "test_committed_offsets_hold_for_the_next_group_member": _NO_GROUPS,
    "test_second_member_joining_splits_the_partitions": _NO_GROUPS,
    "test_idempotent_producer_batches_keep_their_producer_id_and_sequence":
        "rskafka has no idempotent producer (no InitProducerId)",
    "test_admin_adds_partitions_to_a_topic": "rskafka has no CreatePartitions request",
}


@pytest.fixture
def kafka(server, adapters):
    """An rskafka client in its own process. `consume` reads every partition of its topics from
    the start (rskafka joins no group: the groupId the cases pass is not used)."""
    return KafkaClient(adapters.rust("rskafka"), server.bootstrap)
