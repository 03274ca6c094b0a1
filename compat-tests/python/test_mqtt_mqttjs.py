"""mqtt.js (npm `mqtt`, through compat-tests/node/mqttjs.js) at MQTT 3.1.1 and 5.0 against the
broker chosen with --mqtt-broker. Runs every case of cases_mqtt.py."""
import pytest

from adapterkit import MqttClient, needs_node
from cases_mqtt import *  # noqa: F403 (the cases, run here with mqtt.js)

pytestmark = needs_node("mqtt")


@pytest.fixture
def mqtt(mqtt_broker, adapters):
    """mqtt(**MqttClient kwargs) -> an mqtt.js client of its own process, connected unless
    connect=False. The broker comes first among the arguments, so it is torn down after the
    clients."""

    def make(connect=True, **kw):
        c = MqttClient(adapters.node("mqttjs"), mqtt_broker, **kw)
        if connect:
            c.connect()
        return c

    return make
