"""amqplib (through compat-tests/node/amqplib.js) against the broker chosen with --amqp-broker.
Runs every case of cases_amqp.py."""
import pytest

from adapterkit import AmqpClient, needs_node
from cases_amqp import *  # noqa: F403 (the cases, run here with amqplib)

pytestmark = needs_node("amqplib")


@pytest.fixture
def amqp(amqp_broker, adapters):
    """amqp() -> an amqplib connection in its own process. The broker comes first among the
    arguments, so it is torn down after the clients."""
    return lambda: AmqpClient(adapters.node("amqplib"), amqp_broker)
