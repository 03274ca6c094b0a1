"""lapin (through the Rust adapter, compat-tests/rust) against the broker chosen with
--amqp-broker. Runs every case of cases_amqp.py."""
import pytest

from adapterkit import AmqpClient, needs_rust
from cases_amqp import *  # noqa: F403 (the cases, run here with lapin)

pytestmark = needs_rust()


@pytest.fixture
def amqp(amqp_broker, adapters):
    """amqp() -> a lapin connection in its own process. The broker comes first among the
    arguments, so it is torn down after the clients."""
    return lambda: AmqpClient(adapters.rust("lapin"), amqp_broker)
