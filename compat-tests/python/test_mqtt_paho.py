"""paho-mqtt 2.x (and, where paho cannot go, hand-made packets on a raw socket) against the
broker chosen with --mqtt-broker: connecting, publish/subscribe at every QoS over TCP and
WebSocket, wildcards, retained messages, wills, persistent sessions, MQTT 5 features,
keep-alive and bad input.

Nothing here sleeps to show that something did not happen: a test that must not receive a
message publishes a marker after it and checks what arrived before the marker."""
import struct
import time

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from mqttkit import (CONNACK, DISCONNECT, P_MAX_PACKET_SIZE, P_SESSION_EXPIRY,
                     P_WILL_DELAY, PINGREQ, PINGRESP, PUBACK, PUBCOMP, PUBLISH, PUBREC, PUBREL,
                     SUBACK, SUBSCRIBE, V31, V311, V5, VERSION_NAMES, WAIT, Raw, ack_packet,
                     connect_packet, frame, publish_packet, publish_props, round_trip, s,
                     subscribe_packet, unique, varint, wait_until)

ALL_VERSIONS = [pytest.param(v, id=VERSION_NAMES[v]) for v in (V31, V311, V5)]
TRANSPORTS = [pytest.param("tcp", id="tcp"), pytest.param("websockets", id="ws")]
# Protocol level byte of CONNECT for each paho protocol constant.
LEVEL = {V31: 3, V311: 4, V5: 5}


def persistent(protocol):
    """Peer arguments for a session that outlives the connection."""
    return {"clean": False, "session_expiry": 300 if protocol == V5 else None}


# ----------------------------------------------------------------------------------------------
# Connecting


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("protocol", ALL_VERSIONS)
def test_connect_is_acknowledged_without_a_session(mqtt_broker, peers, protocol, transport):
    p = peers(mqtt_broker, protocol=protocol, transport=transport, connect=False)
    reason, session_present, _ = p.connect()
    assert reason == 0
    assert session_present is False, "a clean connection has no session to resume"
    p.disconnect()


def test_v5_empty_client_id_gets_an_assigned_client_identifier(mqtt_broker, peers):
    p = peers(mqtt_broker, protocol=V5, client_id="", connect=False)
    _, _, props = p.connect()
    assigned = getattr(props, "AssignedClientIdentifier", "")
    assert assigned, "CONNACK must carry an Assigned Client Identifier"


def test_v311_empty_client_id_is_accepted_with_clean_session(mqtt_broker):
    raw = Raw(mqtt_broker)
    _, code, _ = raw.connect("", version=4, clean=True)
    assert code == 0


def test_v311_empty_client_id_without_clean_session_is_rejected(mqtt_broker):
    raw = Raw(mqtt_broker)
    _, code, _ = raw.connect("", version=4, clean=False)
    assert code == 2, "return code 2: identifier rejected"
    raw.wait_closed()


@pytest.mark.parametrize("protocol", ALL_VERSIONS)
def test_second_connection_with_same_client_id_takes_over(mqtt_broker, peers, protocol):
    cid = unique("dup")
    first = peers(mqtt_broker, client_id=cid, protocol=protocol)
    second = peers(mqtt_broker, client_id=cid, protocol=protocol)
    reason, from_server, _ = first.wait_disconnected()
    if protocol == V5:
        # MQTT 5 3.1.4: the server "sends a DISCONNECT ... 0x8E (Session taken over)" and MUST
        # close the old connection. mosquitto 2.0.11 only closes it; Switchboard must send it.
        if mqtt_broker.kind == "switchboard":
            assert from_server, "the broker tells the old connection why it goes"
        if from_server:
            assert reason == 0x8E, f"reason {reason:#x}, want 0x8E Session taken over"
    topic = unique("after")
    second.subscribe(topic, 1)
    second.publish(topic, b"mine now", qos=1)
    assert second.expect(1)[0].payload == b"mine now"


@pytest.mark.parametrize("protocol", ALL_VERSIONS)
def test_right_password_is_accepted(mqtt_auth_broker, peers, protocol):
    p = peers(mqtt_auth_broker, protocol=protocol, username="alice", password="secret",
              connect=False)
    assert p.connect()[0] == 0


@pytest.mark.parametrize("protocol", ALL_VERSIONS)
@pytest.mark.parametrize("username,password", [("alice", "wrong"), ("mallory", "secret"), (None, None)],
                         ids=["bad-password", "unknown-user", "anonymous"])
def test_bad_credentials_are_refused(mqtt_auth_broker, protocol, username, password):
    raw = Raw(mqtt_auth_broker)
    _, code, _ = raw.connect(unique("auth"), version=LEVEL[protocol], username=username,
                             password=password)
    if protocol == V5:
        assert code in (0x86, 0x87), f"reason {code:#x}: want 0x86 bad user name or password / 0x87 not authorized"
    else:
        assert code in (4, 5), f"return code {code}: want 4 bad user name or password / 5 not authorized"
    raw.wait_closed()


# ----------------------------------------------------------------------------------------------
# Publish / subscribe


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("qos", [0, 1, 2])
@pytest.mark.parametrize("protocol", ALL_VERSIONS)
def test_publish_reaches_subscriber_at_same_qos(mqtt_broker, peers, protocol, qos, transport):
    topic = unique("ps") + "/t"
    sub = peers(mqtt_broker, protocol=protocol, transport=transport)
    pub = peers(mqtt_broker, protocol=protocol, transport=transport)
    assert sub.subscribe(topic, qos) == [qos], "granted QoS is the one asked for"
    payloads = [b"first", bytes(range(256)), b""]
    for body in payloads:
        pub.publish(topic, body, qos=qos)
    got = sub.expect(len(payloads))
    assert [m.payload for m in got] == payloads, "payloads arrive intact and in order"
    assert {m.topic for m in got} == {topic}
    assert {m.qos for m in got} == {qos}, "delivered at the QoS of publish and subscription"
    assert not any(m.retain for m in got)


@pytest.mark.parametrize("pub_qos,sub_qos", [(2, 1), (2, 0), (1, 0), (0, 2), (1, 2)])
def test_delivered_qos_is_the_lower_of_publish_and_subscription(mqtt_broker, peers, pub_qos, sub_qos):
    topic = unique("minq")
    sub = peers(mqtt_broker)
    sub.subscribe(topic, sub_qos)
    peers(mqtt_broker).publish(topic, b"x", qos=pub_qos)
    assert sub.expect(1)[0].qos == min(pub_qos, sub_qos)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("protocol", [pytest.param(V311, id="v311"), pytest.param(V5, id="v5")])
def test_thousand_qos1_messages_on_one_topic_arrive_in_order(mqtt_broker, peers, protocol, transport):
    topic = unique("order")
    sub = peers(mqtt_broker, protocol=protocol, transport=transport)
    pub = peers(mqtt_broker, protocol=protocol, transport=transport)
    sub.subscribe(topic, 1)
    sent = [f"m-{i}".encode() for i in range(1000)]
    infos = [pub.publish(topic, body, qos=1, wait=False) for body in sent]
    deadline = time.monotonic() + 20
    for info in infos:
        info.wait_for_publish(max(0.1, deadline - time.monotonic()))
    assert all(i.is_published() for i in infos), "every QoS 1 publish is acknowledged"
    got = sub.expect(len(sent), timeout=20)
    assert [m.payload for m in got] == sent


def test_unsubscribed_topic_is_no_longer_delivered(mqtt_broker, peers):
    topic = unique("unsub")
    sub = peers(mqtt_broker)
    sub.subscribe(topic, 1)
    sub.unsubscribe(topic)
    sub.subscribe(topic + "/marker", 1)
    pub = peers(mqtt_broker)
    pub.publish(topic, b"gone", qos=1)
    pub.publish(topic + "/marker", b"marker", qos=1)
    assert sub.until(b"marker") == []


# ----------------------------------------------------------------------------------------------
# Wildcards


def test_single_level_wildcard_matches_exactly_one_level(mqtt_broker, peers):
    base = unique("plus")
    sub = peers(mqtt_broker)
    sub.subscribe(f"{base}/+/x", 1)
    sub.subscribe(f"{base}/marker", 1)
    pub = peers(mqtt_broker)
    for t in (f"{base}/a/x", f"{base}/a/b/x", f"{base}/x", f"{base}//x", f"{base}/b/x/y"):
        pub.publish(t, t.encode(), qos=1)
    pub.publish(f"{base}/marker", b"marker", qos=1)
    assert sorted(m.topic for m in sub.until(b"marker")) == [f"{base}//x", f"{base}/a/x"]


def test_multi_level_wildcard_matches_parent_and_all_descendants(mqtt_broker, peers):
    base = unique("hash")
    sub = peers(mqtt_broker)
    sub.subscribe(f"{base}/#", 1)
    pub = peers(mqtt_broker)
    for t in (base, f"{base}/a", f"{base}/a/b/c", f"{base}x/a"):
        pub.publish(t, t.encode(), qos=1)
    pub.publish(f"{base}/marker", b"marker", qos=1)
    assert sorted(m.topic for m in sub.until(b"marker")) == [base, f"{base}/a", f"{base}/a/b/c"]


def test_leading_wildcards_do_not_match_dollar_topics(mqtt_broker, peers):
    dollar = "$test"
    wide = peers(mqtt_broker)
    wide.subscribe("#", 1)
    wide.subscribe("+/x", 1)
    exact = peers(mqtt_broker)
    exact.subscribe(f"{dollar}/#", 1)
    pub = peers(mqtt_broker)
    pub.publish(f"{dollar}/x", b"dollar", qos=1)
    pub.publish(unique("plain") + "/x", b"marker", qos=1)
    assert [m.payload for m in wide.until(b"marker")] == [], "'#' and '+/x' must not match $-topics"
    got = exact.expect(1)
    assert (got[0].topic, got[0].payload) == (f"{dollar}/x", b"dollar"), "'$test/#' matches it"


# ----------------------------------------------------------------------------------------------
# Retained messages


@pytest.mark.parametrize("protocol", ALL_VERSIONS)
def test_retained_message_is_delivered_to_a_new_subscriber(mqtt_broker, peers, protocol):
    topic = unique("ret")
    peers(mqtt_broker, protocol=protocol).publish(topic, b"last known", qos=1, retain=True)
    sub = peers(mqtt_broker, protocol=protocol)
    sub.subscribe(topic, 1)
    got = sub.expect(1)
    assert (got[0].payload, got[0].retain) == (b"last known", True)


def test_newer_retained_message_replaces_the_older(mqtt_broker, peers):
    topic = unique("ret")
    pub = peers(mqtt_broker)
    pub.publish(topic, b"old", qos=1, retain=True)
    pub.publish(topic, b"new", qos=1, retain=True)
    sub = peers(mqtt_broker)
    sub.subscribe(topic, 1)
    pub.publish(topic, b"marker", qos=1)
    assert [m.payload for m in sub.until(b"marker")] == [b"new"]


def test_empty_retained_payload_clears_the_retained_message(mqtt_broker, peers):
    topic = unique("ret")
    pub = peers(mqtt_broker)
    pub.publish(topic, b"soon gone", qos=1, retain=True)
    pub.publish(topic, b"", qos=1, retain=True)
    sub = peers(mqtt_broker)
    sub.subscribe(topic, 1)
    pub.publish(topic, b"marker", qos=1)
    assert sub.until(b"marker") == []


def test_wildcard_subscription_receives_every_matching_retained_message(mqtt_broker, peers):
    base = unique("retw")
    pub = peers(mqtt_broker)
    for t in (f"{base}/a", f"{base}/b/c", f"{base}x/other"):
        pub.publish(t, t.encode(), qos=1, retain=True)
    sub = peers(mqtt_broker)
    sub.subscribe(f"{base}/#", 1)
    pub.publish(f"{base}/marker", b"marker", qos=1)
    got = sub.until(b"marker")
    assert sorted(m.topic for m in got) == [f"{base}/a", f"{base}/b/c"]
    assert all(m.retain for m in got)


@pytest.mark.parametrize("protocol", ALL_VERSIONS)
def test_retained_publish_to_an_existing_subscriber_has_retain_clear(mqtt_broker, peers, protocol):
    topic = unique("retlive")
    sub = peers(mqtt_broker, protocol=protocol)
    sub.subscribe(topic, 1)
    peers(mqtt_broker, protocol=protocol).publish(topic, b"live", qos=1, retain=True)
    got = sub.expect(1)
    assert (got[0].payload, got[0].retain) == (b"live", False)


def retained_now(broker, peers, topic, protocol=V311):
    """What a new subscriber of `topic` is sent as retained: it subscribes, a non-retained
    marker follows, and whatever came before the marker is returned."""
    sub = peers(broker, protocol=protocol)
    sub.subscribe(topic, 1)
    marker = unique("mk").encode()
    peers(broker, protocol=protocol).publish(topic, marker, qos=1)
    before = sub.until(marker)
    sub.disconnect()
    return before


def test_v5_retained_message_expires(mqtt_broker, peers):
    topic = unique("retexp")
    pub = peers(mqtt_broker, protocol=V5)
    pub.publish(topic, b"short-lived", qos=1, retain=True, properties=publish_props(MessageExpiryInterval=2))
    published = time.monotonic()
    got = retained_now(mqtt_broker, peers, topic, V5)
    assert [m.payload for m in got] == [b"short-lived"]
    assert got[0].prop("MessageExpiryInterval") in (0, 1, 2), "the remaining lifetime is passed on"

    wait_until("expiry of the retained message",
               lambda: retained_now(mqtt_broker, peers, topic, V5) == [], timeout=2 + WAIT, step=0.25)
    # mosquitto counts whole seconds, so a 2 s expiry may end after 1 s.
    assert time.monotonic() - published >= 1.0, "expired well before its expiry interval"


# ----------------------------------------------------------------------------------------------
# Wills


def will_watcher(broker, peers, topic, protocol=V311):
    w = peers(broker, protocol=protocol)
    w.subscribe(topic, 1)
    return w


@pytest.mark.parametrize("protocol", ALL_VERSIONS)
def test_will_is_published_when_connection_drops_without_disconnect(mqtt_broker, peers, protocol):
    topic = unique("will")
    watcher = will_watcher(mqtt_broker, peers, topic)
    raw = Raw(mqtt_broker)
    raw.connect(unique("w"), version=LEVEL[protocol], will={"topic": topic, "payload": b"gone", "qos": 1})
    raw.drop()
    got = watcher.expect(1)
    assert (got[0].topic, got[0].payload) == (topic, b"gone")


@pytest.mark.parametrize("protocol", ALL_VERSIONS)
def test_will_is_not_published_after_normal_disconnect(mqtt_broker, peers, protocol):
    topic = unique("will")
    cid = unique("w")
    watcher = will_watcher(mqtt_broker, peers, topic)
    raw = Raw(mqtt_broker)
    raw.connect(cid, version=LEVEL[protocol], will={"topic": topic, "payload": b"gone", "qos": 1})
    raw.send(frame(DISCONNECT, b"\x00" if protocol == V5 else b""))
    raw.wait_closed()
    # The same client id comes back and publishes a marker: any will would have come first.
    again = Raw(mqtt_broker)
    again.connect(cid, version=LEVEL[protocol])
    again.send(publish_packet(topic, b"marker", qos=1, pid=1, version=LEVEL[protocol]))
    again.expect(PUBACK)
    assert watcher.until(b"marker") == []


def test_v5_will_delay_interval_postpones_the_will(mqtt_broker, peers):
    topic = unique("willd")
    watcher = will_watcher(mqtt_broker, peers, topic, protocol=V5)
    raw = Raw(mqtt_broker)
    raw.connect(unique("w"), version=5, props=[(P_SESSION_EXPIRY, 60)],
                will={"topic": topic, "payload": b"late", "qos": 1, "props": [(P_WILL_DELAY, 2)]})
    raw.drop()
    dropped = time.monotonic()
    got = watcher.expect(1, timeout=2 + WAIT)
    waited = time.monotonic() - dropped
    assert got[0].payload == b"late"
    assert waited >= 1.5, f"will published {waited:.2f} s after the drop; its delay is 2 s"


def test_will_with_retain_is_kept_for_later_subscribers(mqtt_broker, peers):
    topic = unique("willr")
    watcher = will_watcher(mqtt_broker, peers, topic)
    raw = Raw(mqtt_broker)
    raw.connect(unique("w"), will={"topic": topic, "payload": b"offline", "qos": 1, "retain": True})
    raw.drop()
    assert watcher.expect(1)[0].payload == b"offline"
    # Seeing the will live does not promise it is already stored as retained (Switchboard may
    # store it a moment later), so new subscribers are tried until one gets it.
    got = wait_until("the will as a retained message", lambda: retained_now(mqtt_broker, peers, topic))
    assert [(m.payload, m.retain) for m in got] == [(b"offline", True)]


# ----------------------------------------------------------------------------------------------
# Sessions


def away_and_back(broker, peers, protocol, topic, n, back_kw):
    """A persistent subscriber at QoS 1 leaves; n QoS 1 messages are published (all
    acknowledged); it comes back with `back_kw`. Returns the returning Peer and its CONNACK."""
    cid = unique("sess")
    sub = peers(broker, client_id=cid, protocol=protocol, **persistent(protocol))
    sub.subscribe(topic, 1)
    sub.disconnect()
    pub = peers(broker, protocol=protocol)
    for i in range(n):
        pub.publish(topic, f"while-away-{i}".encode(), qos=1)
    back = peers(broker, client_id=cid, protocol=protocol, connect=False, **back_kw)
    return back, back.connect(), pub


@pytest.mark.parametrize("protocol", ALL_VERSIONS)
def test_persistent_session_receives_messages_published_while_away(mqtt_broker, peers, protocol):
    topic = unique("away")
    back, (_, present, _), _ = away_and_back(mqtt_broker, peers, protocol, topic, 10, persistent(protocol))
    if protocol != V31:  # MQTT 3.1's CONNACK has no session-present flag
        assert present is True, "CONNACK says the session was resumed"
    got = back.expect(10)
    assert [m.payload for m in got] == [f"while-away-{i}".encode() for i in range(10)]


@pytest.mark.parametrize("protocol", ALL_VERSIONS)
def test_clean_session_discards_subscriptions_and_queued_messages(mqtt_broker, peers, protocol):
    topic = unique("away")
    back, (_, present, _), pub = away_and_back(mqtt_broker, peers, protocol, topic, 5, {"clean": True})
    assert present is False
    back.subscribe(topic, 1)
    pub.publish(topic, b"marker", qos=1)
    assert back.until(b"marker") == []


def test_v5_session_with_zero_expiry_ends_at_disconnect(mqtt_broker, peers):
    topic = unique("away")
    back, (_, present, _), pub = away_and_back(mqtt_broker, peers, V5, topic, 5,
                                               {"clean": False, "session_expiry": 0})
    assert present is True, "the session of the previous connection was resumed"
    # Now leave with expiry 0 (the default): nothing is kept.
    back.disconnect()
    pub.publish(topic, b"lost", qos=1)
    again = peers(mqtt_broker, client_id=back.client_id, protocol=V5, connect=False, clean=False)
    assert again.connect()[1] is False, "a session with expiry 0 ends with its connection"
    again.subscribe(topic, 1)
    pub.publish(topic, b"marker", qos=1)
    assert again.until(b"marker") == []


@pytest.mark.broker_control
def test_persistent_session_survives_a_broker_restart(mqtt_broker, peers):
    topic = unique("restart")
    cid = unique("sess")
    sub = peers(mqtt_broker, client_id=cid, protocol=V5, **persistent(V5))
    sub.subscribe(topic, 1)
    sub.disconnect()
    pub = peers(mqtt_broker, protocol=V5)
    for i in range(10):
        pub.publish(topic, f"r-{i}".encode(), qos=1)
    pub.disconnect()
    mqtt_broker.restart()
    back = peers(mqtt_broker, client_id=cid, protocol=V5, connect=False, **persistent(V5))
    assert back.connect()[1] is True
    assert [m.payload for m in back.expect(10)] == [f"r-{i}".encode() for i in range(10)]


# ----------------------------------------------------------------------------------------------
# QoS 2 exactly once across a reconnect (raw: paho cannot stop half-way through the exchange)

RAW_VERSIONS = [pytest.param(4, id="v311"), pytest.param(5, id="v5")]


def raw_persistent(broker, cid, version):
    raw = Raw(broker)
    props = [(P_SESSION_EXPIRY, 300)] if version == 5 else None
    present, code, _ = raw.connect(cid, version=version, clean=False, props=props)
    assert code == 0
    return raw, present


@pytest.mark.parametrize("version", RAW_VERSIONS)
def test_qos2_publish_resent_after_reconnect_is_delivered_once(mqtt_broker, peers, version):
    topic = unique("eo")
    sub = peers(mqtt_broker)
    sub.subscribe(topic, 2)
    cid = unique("eo")
    raw, _ = raw_persistent(mqtt_broker, cid, version)
    raw.send(publish_packet(topic, b"once", qos=2, pid=7, version=version))
    assert raw.expect(PUBREC).pid == 7
    raw.drop()  # the PUBREC is "lost": the client will send the PUBLISH again, as a duplicate

    raw, present = raw_persistent(mqtt_broker, cid, version)
    assert present
    raw.send(publish_packet(topic, b"once", qos=2, pid=7, dup=True, version=version))
    assert raw.expect(PUBREC).pid == 7
    raw.send(ack_packet(PUBREL, 7))
    assert raw.expect(PUBCOMP).pid == 7
    # The marker goes the same way (QoS 2), so that it is delivered after anything before it.
    raw.send(publish_packet(topic, b"marker", qos=2, pid=8, version=version))
    raw.expect(PUBREC)
    raw.send(ack_packet(PUBREL, 8))
    raw.expect(PUBCOMP)
    assert [m.payload for m in sub.until(b"marker")] == [b"once"]


@pytest.mark.parametrize("version", RAW_VERSIONS)
def test_qos2_subscriber_reconnecting_after_pubrec_gets_pubrel_not_the_message(mqtt_broker, peers, version):
    topic = unique("eo")
    cid = unique("eo")
    raw, _ = raw_persistent(mqtt_broker, cid, version)
    raw.send(subscribe_packet(1, [(topic, 2)], version=version))
    raw.expect(SUBACK)
    peers(mqtt_broker).publish(topic, b"once", qos=2)
    msg = raw.expect(PUBLISH)
    t, qos, pid, _, _, payload = msg.publish_fields(version)
    assert (t, qos, payload) == (topic, 2, b"once")
    raw.send(ack_packet(PUBREC, pid))
    raw.drop()  # before the broker's PUBREL arrives (or is answered)

    raw, present = raw_persistent(mqtt_broker, cid, version)
    assert present
    again = raw.read()
    assert again.type == PUBREL and again.pid == pid, \
        f"the broker resumes with PUBREL {pid}, not a second copy: got type {again.type}"
    raw.send(ack_packet(PUBCOMP, pid))
    peers(mqtt_broker).publish(topic, b"marker", qos=1)
    nxt = raw.expect(PUBLISH)
    assert nxt.publish_fields(version)[5] == b"marker", "no duplicate of the QoS 2 message"


# ----------------------------------------------------------------------------------------------
# MQTT 5 features


def test_v5_publish_properties_arrive_intact(mqtt_broker, peers):
    topic = unique("props")
    sub = peers(mqtt_broker, protocol=V5)
    sub.subscribe(topic, 1)
    props = publish_props(
        UserProperty=[("k", "1"), ("k", "2"), ("other", "x y")],
        ContentType="application/json",
        ResponseTopic="reply/here",
        CorrelationData=b"\x00\x01corr",
        PayloadFormatIndicator=1,
        MessageExpiryInterval=600,
    )
    peers(mqtt_broker, protocol=V5).publish(topic, b'{"a": 1}', qos=1, properties=props)
    m = sub.expect(1)[0]
    assert m.payload == b'{"a": 1}'
    assert m.prop("UserProperty") == [("k", "1"), ("k", "2"), ("other", "x y")], \
        "user properties keep their order and repeated names"
    assert m.prop("ContentType") == "application/json"
    assert m.prop("ResponseTopic") == "reply/here"
    assert m.prop("CorrelationData") == b"\x00\x01corr"
    assert m.prop("PayloadFormatIndicator") == 1
    assert 0 < m.prop("MessageExpiryInterval", 0) <= 600


def test_v5_subscription_identifiers_come_back_with_matching_messages(mqtt_broker, peers):
    base = unique("sid")
    sub = peers(mqtt_broker, protocol=V5)
    for filt, sid in ((f"{base}/a/+", 7), (f"{base}/#", 9), (f"{base}/b", 11)):
        props = Properties(PacketTypes.SUBSCRIBE)
        props.SubscriptionIdentifier = sid
        sub.subscribe(filt, 1, properties=props)
    pub = peers(mqtt_broker, protocol=V5)
    pub.publish(f"{base}/b", b"b", qos=1)
    pub.publish(f"{base}/a/x", b"ax", qos=1)
    pub.publish(f"{base}/marker", b"marker", qos=1)
    ids = {}
    for m in sub.until(b"marker"):
        ids.setdefault(m.payload, set()).update(m.prop("SubscriptionIdentifier", []))
    # Overlapping subscriptions may give one copy with all identifiers or one copy each.
    assert ids == {b"b": {9, 11}, b"ax": {7, 9}}


def test_v5_no_local_suppresses_own_messages(mqtt_broker, peers):
    topic = unique("nolocal")
    me = peers(mqtt_broker, protocol=V5)
    me.subscribe(topic, options=SubscribeOptions(qos=1, noLocal=True))
    me.publish(topic, b"mine", qos=1)
    peers(mqtt_broker, protocol=V5).publish(topic, b"theirs", qos=1)
    assert [m.payload for m in me.expect(1)] == [b"theirs"]


def test_v5_retain_as_published_keeps_the_retain_flag(mqtt_broker, peers):
    topic = unique("rap")
    keep = peers(mqtt_broker, protocol=V5)
    keep.subscribe(topic, options=SubscribeOptions(qos=1, retainAsPublished=True))
    plain = peers(mqtt_broker, protocol=V5)
    plain.subscribe(topic, options=SubscribeOptions(qos=1))
    peers(mqtt_broker, protocol=V5).publish(topic, b"r", qos=1, retain=True)
    assert keep.expect(1)[0].retain is True
    assert plain.expect(1)[0].retain is False


def test_v5_retain_handling_2_sends_no_retained_messages_on_subscribe(mqtt_broker, peers):
    topic = unique("rh")
    pub = peers(mqtt_broker, protocol=V5)
    pub.publish(topic, b"retained", qos=1, retain=True)
    sub = peers(mqtt_broker, protocol=V5)
    sub.subscribe(topic, options=SubscribeOptions(qos=1, retainHandling=2))
    pub.publish(topic, b"marker", qos=1)
    assert sub.until(b"marker") == []


def test_v5_retain_handling_1_sends_retained_only_for_a_new_subscription(mqtt_broker, peers):
    topic = unique("rh")
    pub = peers(mqtt_broker, protocol=V5)
    pub.publish(topic, b"retained", qos=1, retain=True)
    sub = peers(mqtt_broker, protocol=V5)
    sub.subscribe(topic, options=SubscribeOptions(qos=1, retainHandling=1))
    sub.subscribe(topic, options=SubscribeOptions(qos=1, retainHandling=1))
    pub.publish(topic, b"marker", qos=1)
    assert [m.payload for m in sub.until(b"marker")] == [b"retained"]


def test_v5_shared_subscription_spreads_messages_across_members(mqtt_broker, peers):
    topic = unique("shared")
    members = [peers(mqtt_broker, protocol=V5) for _ in range(2)]
    for m in members:
        m.subscribe(f"$share/g/{topic}", 1)
    sent = [f"s-{i}".encode() for i in range(100)]
    pub = peers(mqtt_broker, protocol=V5)
    for body in sent:
        pub.publish(topic, body, qos=1)

    wait_until("all shared messages", lambda: sum(len(m.messages) for m in members) >= len(sent))
    got = [[x.payload for x in m.messages] for m in members]
    everything = got[0] + got[1]
    assert sorted(everything) == sorted(sent), "every message reaches the group exactly once"
    assert got[0] and got[1], f"both members get some: {len(got[0])} / {len(got[1])}"


def test_v5_topic_alias_from_the_client_stands_for_the_topic(mqtt_broker, peers):
    topic = unique("alias") + "/long/topic/name"
    sub = peers(mqtt_broker, protocol=V5)
    sub.subscribe(topic, 1)
    pub = peers(mqtt_broker, protocol=V5, connect=False)
    _, _, connack = pub.connect()
    assert getattr(connack, "TopicAliasMaximum", 0) >= 1, "broker accepts topic aliases"
    pub.publish(topic, b"with name", qos=1, properties=publish_props(TopicAlias=1))
    pub.publish("", b"alias only", qos=1, properties=publish_props(TopicAlias=1))
    got = sub.expect(2)
    assert [(m.topic, m.payload) for m in got] == [(topic, b"with name"), (topic, b"alias only")]


# ----------------------------------------------------------------------------------------------
# Keep-alive


def test_silent_client_is_disconnected_after_one_and_a_half_keep_alives(mqtt_broker):
    keepalive = 2
    allowed = 1.5 * keepalive + mqtt_broker.keepalive_slack
    raw = Raw(mqtt_broker)
    raw.connect(unique("ka"), version=5, keepalive=keepalive)
    start = time.monotonic()
    seen = raw.wait_closed(timeout=allowed + 1)
    waited = time.monotonic() - start
    assert 1.5 * keepalive - 0.25 <= waited <= allowed, \
        f"closed after {waited:.2f} s; keep-alive {keepalive} s: 1.5 x = {1.5 * keepalive} s"
    assert [(p.type, p.body[:1]) for p in seen] in ([], [(DISCONNECT, b"\x8d")]), \
        f"only a DISCONNECT 0x8D (keep alive timeout) may come first: {seen}"


def test_client_that_pings_outlives_its_keep_alive(mqtt_broker):
    raw = Raw(mqtt_broker)
    raw.connect(unique("ka"), keepalive=1)
    for _ in range(4):  # a ping every 0.7 s for 2.8 s: well past 1.5 x keep-alive
        time.sleep(0.7)
        raw.send(frame(PINGREQ, b""))
        raw.expect(PINGRESP, timeout=1)


# ----------------------------------------------------------------------------------------------
# Bad input on raw sockets: the connection closes, the broker keeps serving


@pytest.mark.parametrize("packet", [
    frame(PINGREQ, b""),
    publish_packet("t", b"x"),
    subscribe_packet(1, [("t", 0)]),
], ids=["pingreq", "publish", "subscribe"])
def test_first_packet_other_than_connect_closes_the_connection(mqtt_broker, peers, packet):
    raw = Raw(mqtt_broker)
    raw.send(packet)
    assert [p.type for p in raw.wait_closed()] in ([], [DISCONNECT])
    round_trip(peers, mqtt_broker)


def test_second_connect_closes_the_connection(mqtt_broker, peers):
    raw = Raw(mqtt_broker)
    raw.connect(unique("twice"))
    raw.send(connect_packet(unique("twice")))
    raw.wait_closed()
    round_trip(peers, mqtt_broker)


def test_unknown_protocol_level_is_refused(mqtt_broker, peers):
    raw = Raw(mqtt_broker)
    body = s("MQTT") + bytes([9, 0x02]) + struct.pack(">H", 60) + s(unique("lvl"))
    raw.send(frame(1, body))
    seen = raw.wait_closed()
    if seen:  # a CONNACK refusing the version is optional; if sent, it must refuse
        assert seen[0].type == CONNACK and seen[0].body[1] in (1, 0x84), seen
    round_trip(peers, mqtt_broker)


def malformed(case, version):
    props = b"\x00" if version == 5 else b""  # an empty v5 property block
    return {
        # PUBLISH with QoS 3.
        "qos3": frame(PUBLISH, s("t") + b"\x00\x01" + props + b"x", 0x06),
        # SUBSCRIBE whose reserved flags are 0000 instead of 0010.
        "subscribe-flags": frame(SUBSCRIBE, b"\x00\x01" + props + s("t") + b"\x00"),
        # PUBLISH whose topic length runs past the end of the packet.
        "topic-overrun": frame(PUBLISH, struct.pack(">H", 200) + b"abc"),
        # A remaining length that does not end after four bytes.
        "remaining-length": bytes([0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]),
        # PUBLISH to a topic name containing a wildcard.
        "wildcard-topic": frame(PUBLISH, s("a/+/b") + props + b"x"),
        # A topic name that is not UTF-8.
        "bad-utf8": frame(PUBLISH, struct.pack(">H", 2) + b"\xff\xfe" + props + b"x"),
    }[case]


MALFORMED = ["qos3", "subscribe-flags", "topic-overrun", "remaining-length", "wildcard-topic", "bad-utf8"]


@pytest.mark.parametrize("case", MALFORMED)
@pytest.mark.parametrize("version", RAW_VERSIONS)
def test_malformed_packet_closes_the_connection(mqtt_broker, peers, version, case):
    packet = malformed(case, version)
    raw = Raw(mqtt_broker)
    raw.connect(unique("bad"), version=version)
    raw.send(packet)
    seen = raw.wait_closed()
    assert [p.type for p in seen] in ([], [DISCONNECT]), f"only a DISCONNECT may come first: {seen}"
    if seen and version == 5:
        allowed = {0x81, 0x82} | ({0x90} if case in ("wildcard-topic", "bad-utf8") else set())
        assert seen[0].body[0] in allowed, \
            f"DISCONNECT reason {seen[0].body[0]:#x}: want 0x81 malformed / 0x82 protocol error" \
            + (" / 0x90 topic name invalid" if 0x90 in allowed else "")
    round_trip(peers, mqtt_broker)


@pytest.mark.parametrize("version", RAW_VERSIONS)
def test_packet_larger_than_the_broker_maximum_closes_the_connection(mqtt_broker, peers, version):
    probe = Raw(mqtt_broker)
    _, _, props = probe.connect(unique("max"), version=5)
    probe.close()
    limit = props.get(P_MAX_PACKET_SIZE)
    assert limit, "the MQTT 5 CONNACK advertises a Maximum Packet Size"

    raw = Raw(mqtt_broker)
    raw.connect(unique("big"), version=version)
    head = s("big") + (b"\x00" if version == 5 else b"")
    remaining = limit  # with the fixed header, the packet is larger than the limit
    try:
        raw.send(bytes([0x30]) + varint(remaining) + head)
        raw.send(b"x" * min(remaining - len(head), 1 << 20))
    except (BrokenPipeError, ConnectionResetError):
        pass  # closed while we were still sending: that is the point
    seen = raw.wait_closed()
    assert [p.type for p in seen] in ([], [DISCONNECT]), seen
    if seen and version == 5:
        assert seen[0].body[0] == 0x95, f"DISCONNECT reason {seen[0].body[0]:#x}: want 0x95 packet too large"
    round_trip(peers, mqtt_broker)
