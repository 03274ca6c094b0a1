"""rumqttc (through the Rust adapter, compat-tests/rust) at MQTT 3.1.1 (its top-level module)
and 5.0 (its v5 module) against the broker chosen with --mqtt-broker. Runs the cases of
cases_mqtt.py over TCP."""
import pytest

from adapterkit import MqttClient, needs_rust
from cases_mqtt import *  # noqa: F403 (the cases, run here with rumqttc)

pytestmark = needs_rust()

# What this rumqttc cannot do (matrix.py's NA gives the same reason).
CANNOT = {
    "transport=websockets": "the adapter is built without rumqttc's \"websocket\" feature (a "
                            "second WebSocket stack, async-tungstenite with rustls)",
}


@pytest.fixture
def mqtt(mqtt_broker, adapters):
    """mqtt(**MqttClient kwargs) -> a rumqttc client of its own process, connected unless
    connect=False. The broker comes first among the arguments, so it is torn down after the
    clients."""

    def make(connect=True, **kw):
        c = MqttClient(adapters.rust("rumqttc"), mqtt_broker, **kw)
        if connect:
            c.connect()
        return c

    return make
