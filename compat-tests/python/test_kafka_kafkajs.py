"""kafkajs (through compat-tests/node/kafkajs.js): a third independent implementation of the
Kafka protocol, pure JavaScript. Runs every case of cases_kafka.py."""
import pytest

from adapterkit import KafkaClient, needs_node
from cases_kafka import *  # noqa: F403 (the cases, run here with kafkajs)

pytestmark = needs_node("kafkajs")


@pytest.fixture
def kafka(server, adapters):
    """A kafkajs client (admin, producers, consumers) in its own process. `server` comes first
    so that it is torn down last: the client leaves its groups while the broker still runs."""
    return KafkaClient(adapters.node("kafkajs"), server.bootstrap)
