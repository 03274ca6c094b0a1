"""MQTT client behaviours, each written once and run through every MQTT client adapter by its
test file (test_mqtt_mqttjs.py, test_mqtt_rumqttc.py) against the broker chosen with
--mqtt-broker: connecting over TCP and WebSocket, publish/subscribe at every QoS, wildcards,
retained messages, wills, persistent sessions, and at MQTT 5 user properties, topic aliases and
shared subscriptions.

The `mqtt` fixture of the test file makes clients: mqtt(**adapterkit.MqttClient kwargs) -> a
client of its own process, connected unless connect=False. A client that cannot do a case lists
it in its file's CANNOT (and matrix.py's NA). Only the cases are exported: a test file takes
them with `from cases_mqtt import *`.

Nothing here sleeps to show that something did not happen: a test that must not receive a
message publishes a marker after it and checks what arrived before the marker."""
import pytest

from adapterkit import wait_until
from mqttkit import unique

# protocolVersion: 4 is MQTT 3.1.1, 5 is MQTT 5.0. The ids name the matrix column.
VERSIONS = [pytest.param(4, id="v311"), pytest.param(5, id="v5")]
TRANSPORTS = [pytest.param("tcp", id="tcp"), pytest.param("websockets", id="ws")]


def persistent(protocol):
    """MqttClient arguments for a session that outlives the connection."""
    return {"clean": False, "session_expiry": 300 if protocol == 5 else None}


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("protocol", VERSIONS)
def test_connect_is_acknowledged_without_a_session(mqtt, protocol, transport):
    c = mqtt(protocol=protocol, transport=transport, connect=False)
    connack = c.connect()
    assert connack["reasonCode"] == 0
    assert connack["sessionPresent"] is False, "a clean connection has no session to resume"
    c.end()


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("qos", [0, 1, 2])
@pytest.mark.parametrize("protocol", VERSIONS)
def test_publish_reaches_subscriber_at_same_qos(mqtt, protocol, qos, transport):
    topic = unique("mq") + "/q"
    sub = mqtt(protocol=protocol, transport=transport)
    assert sub.subscribe({topic: qos}) == [qos]
    pub = mqtt(protocol=protocol, transport=transport)
    sent = [f"m{i}" for i in range(20)]
    for payload in sent:
        pub.publish(topic, payload, qos=qos)
    got = sub.expect(len(sent))
    assert [m["payload"] for m in got] == sent, "one publisher, one topic: order is kept"
    assert {(m["topic"], m["qos"], m["retain"]) for m in got} == {(topic, qos, False)}


@pytest.mark.parametrize("protocol", VERSIONS)
def test_wildcards_match_the_right_levels(mqtt, protocol):
    root = unique("mq")
    sub = mqtt(protocol=protocol)
    sub.subscribe({f"{root}/+/temp": 1, f"{root}/house/#": 1})
    pub = mqtt(protocol=protocol)
    for topic in (f"{root}/kitchen/temp", f"{root}/kitchen/oven/temp", f"{root}/house",
                  f"{root}/house/attic/fan", f"{root}/garden"):
        pub.publish(topic, topic, qos=1)
    pub.publish(f"{root}/end/temp", "end", qos=1)
    got = [m["topic"] for m in sub.until("end")]
    # `+` matches exactly one level; `#` also matches its parent level.
    assert got == [f"{root}/kitchen/temp", f"{root}/house", f"{root}/house/attic/fan"]


@pytest.mark.parametrize("protocol", VERSIONS)
def test_retained_message_reaches_a_later_subscriber(mqtt, protocol):
    topic = unique("mq") + "/r"
    pub = mqtt(protocol=protocol)
    pub.publish(topic, "old state", qos=1, retain=True)
    pub.publish(topic, "kept state", qos=1, retain=True)
    sub = mqtt(protocol=protocol)
    sub.subscribe({topic: 1})
    [m] = sub.expect(1)
    assert (m["payload"], m["retain"]) == ("kept state", True), "only the newest is retained"
    pub.publish(topic, "live", qos=1)
    assert [(m["payload"], m["retain"]) for m in sub.expect(2)][1] == ("live", False)


@pytest.mark.parametrize("protocol", VERSIONS)
def test_empty_retained_payload_clears_the_retained_message(mqtt, protocol):
    topic = unique("mq") + "/r"
    pub = mqtt(protocol=protocol)
    pub.publish(topic, "kept", qos=1, retain=True)
    pub.publish(topic, "", qos=1, retain=True)
    sub = mqtt(protocol=protocol)
    sub.subscribe({topic: 1})
    pub.publish(topic, "end", qos=1)
    assert sub.until("end") == [], "nothing is retained after an empty retained publish"


@pytest.mark.parametrize("protocol", VERSIONS)
def test_will_is_published_when_the_client_dies(mqtt, protocol):
    topic = unique("mq") + "/will"
    watcher = mqtt(protocol=protocol)
    watcher.subscribe({topic: 1})
    doomed = mqtt(protocol=protocol, will={"topic": topic, "payload": "gone", "qos": 1})
    doomed.publish(topic, "alive", qos=1)
    doomed.adapter.kill()  # the connection drops without DISCONNECT
    got = watcher.expect(2)
    assert [m["payload"] for m in got] == ["alive", "gone"]


@pytest.mark.parametrize("protocol", VERSIONS)
def test_will_is_not_published_after_a_normal_disconnect(mqtt, protocol):
    topic = unique("mq") + "/will"
    watcher = mqtt(protocol=protocol)
    watcher.subscribe({topic: 1})
    polite = mqtt(protocol=protocol, will={"topic": topic, "payload": "gone", "qos": 1})
    polite.end()
    mqtt(protocol=protocol).publish(topic, "end", qos=1)
    assert watcher.until("end") == [], "a DISCONNECT discards the will"


@pytest.mark.parametrize("protocol", VERSIONS)
def test_persistent_session_receives_messages_published_while_away(mqtt, protocol):
    cid = unique("mqp")
    topic = unique("mq") + "/away"
    away = mqtt(protocol=protocol, client_id=cid, **persistent(protocol))
    away.subscribe({topic: 1})
    away.end()
    pub = mqtt(protocol=protocol)
    for payload in ("while", "you", "were", "out"):
        pub.publish(topic, payload, qos=1)
    back = mqtt(protocol=protocol, client_id=cid, connect=False, **persistent(protocol))
    assert back.connect()["sessionPresent"] is True
    got = back.expect(4)
    assert [m["payload"] for m in got] == ["while", "you", "were", "out"]
    assert {m["qos"] for m in got} == {1}


def test_v5_user_properties_and_content_type_arrive_intact(mqtt):
    topic = unique("mq") + "/props"
    sub = mqtt(protocol=5)
    sub.subscribe({topic: 1})
    props = {"userProperties": {"origin": "compat", "tag": ["a", "b"]},
             "contentType": "application/json", "responseTopic": topic + "/reply",
             "correlationData": "req-42"}
    mqtt(protocol=5).publish(topic, '{"n":1}', qos=1, properties=props)
    [m] = sub.expect(1)
    assert m["payload"] == '{"n":1}'
    got = m["properties"] or {}
    # A repeated user property keeps both values, in order (MQTT 5 3.3.2.3.7).
    assert got.get("userProperties") == {"origin": "compat", "tag": ["a", "b"]}
    assert got.get("contentType") == "application/json"
    assert got.get("responseTopic") == topic + "/reply"
    assert got.get("correlationData") == "req-42"


def test_v5_topic_aliases_stand_for_the_topic_both_ways(mqtt):
    topic = unique("mq") + "/a/rather/long/topic/name"
    # The subscriber lets the broker use aliases towards it; the publisher uses the aliases the
    # broker's CONNACK allows, in place of the topic from the second PUBLISH on (mqtt.js's
    # autoAssignTopicAlias; the rumqttc adapter assigns them the same way).
    sub = mqtt(protocol=5, topicAliasMaximum=10)
    sub.subscribe({topic: 1})
    pub = mqtt(protocol=5, connect=False, autoAssignTopicAlias=True)
    connack = pub.connect()
    if not (connack["properties"] or {}).get("topicAliasMaximum"):
        pytest.skip("the broker allows no topic aliases (Topic Alias Maximum 0)")
    for payload in ("one", "two", "three"):
        pub.publish(topic, payload, qos=1)
    assert [(p["topic"], p["topicAlias"]) for p in pub.sent()] == \
        [(topic, 1), ("", 1), ("", 1)], "the alias alone after the first publish"
    got = sub.expect(3)
    assert [(m["topic"], m["payload"]) for m in got] == \
        [(topic, "one"), (topic, "two"), (topic, "three")]


def test_v5_shared_subscription_spreads_messages_across_members(mqtt):
    topic = unique("mq") + "/shared"
    members = [mqtt(protocol=5) for _ in range(2)]
    for m in members:
        m.subscribe({f"$share/g/{topic}": 1})
    sent = [f"s-{i}" for i in range(20)]
    pub = mqtt(protocol=5)
    for payload in sent:
        pub.publish(topic, payload, qos=1)

    def all_arrived():
        got = [[m["payload"] for m in member.received()] for member in members]
        return sum(map(len, got)) >= len(sent) and got

    got = wait_until("every shared message", all_arrived)
    assert sorted(got[0] + got[1]) == sorted(sent), "every message reaches the group exactly once"
    assert got[0] and got[1], f"both members get some: {len(got[0])} / {len(got[1])}"


def test_v5_shared_and_plain_subscription_of_one_client_each_get_a_copy(mqtt, mqtt_broker):
    topic = unique("mq") + "/both"
    sub = mqtt(protocol=5)
    sub.subscribe({topic: 0})
    sub.subscribe({f"$share/g/{topic}": 1})
    pub = mqtt(protocol=5)
    pub.publish(topic, "work", qos=1)
    pub.publish(topic, "end", qos=1)
    # MQTT 5 4.8.2: the non-shared subscription gets its copy, and the shared subscription's
    # copy goes to one of its members, here the only one: the same client.
    got = sorted((m["payload"], m["qos"]) for m in sub.until("end"))
    assert got == [("work", 0), ("work", 1)]


__all__ = [name for name in dir() if name.startswith("test_")]
