"""Helpers for the MQTT tests.

`Peer` wraps a paho-mqtt 2.x client and turns its callbacks into things a test can wait for
(CONNACK, SUBACK, acknowledged publishes, messages, disconnects), always with a deadline.
`Raw` is a hand-made MQTT client on a plain socket, for what paho will not do: leave without
DISCONNECT, stay silent past the keep-alive, send malformed packets, stop half-way through a
QoS 2 exchange.
"""
import itertools
import socket
import struct
import threading
import time
import uuid
from typing import NamedTuple

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

V31, V311, V5 = mqtt.MQTTv31, mqtt.MQTTv311, mqtt.MQTTv5
VERSION_NAMES = {V31: "v31", V311: "v311", V5: "v5"}

# Every wait in these tests is bounded by this many seconds unless it says otherwise.
WAIT = 5.0

_ids = itertools.count()


def unique(prefix="t") -> str:
    """A client id or topic segment no other test uses; short enough for MQTT 3.1 (23 chars)."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}-{next(_ids)}"[:23]


def publish_props(**kw) -> Properties:
    p = Properties(PacketTypes.PUBLISH)
    for k, v in kw.items():
        setattr(p, k, v)
    return p


def wait_until(what, predicate, timeout=WAIT, step=0.02):
    """Polls `predicate` until it holds; fails after `timeout` seconds. For conditions spread
    over several clients (one client's own waits use its condition variable)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"no {what} within {timeout} s")
        time.sleep(step)


class Received(NamedTuple):
    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: object  # paho Properties for v5, None otherwise

    def prop(self, name, default=None):
        return getattr(self.properties, name, default) if self.properties is not None else default


class Peer:
    """One paho client with its own network thread. Construct, then `connect()`."""

    def __init__(self, broker, client_id=None, protocol=V311, transport="tcp", clean=True,
                 session_expiry=None, keepalive=30, username=None, password=None, will=None):
        self.broker = broker
        self.protocol = protocol
        self.transport = transport
        self.clean = clean
        self.session_expiry = session_expiry
        self.keepalive = keepalive
        self.client_id = unique("c") if client_id is None else client_id
        kwargs = {}
        if protocol != V5:
            kwargs["clean_session"] = clean
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             protocol=protocol, transport=transport, reconnect_on_failure=False,
                             **kwargs)
        if transport == "websockets":
            self.c.ws_set_options(path="/mqtt")
        if username is not None:
            self.c.username_pw_set(username, password)
        if will is not None:
            self.c.will_set(**will)
        self.cond = threading.Condition()
        self.connacks = []      # (reason code int, session_present, properties)
        self.disconnects = []   # (reason code int, from_server, properties)
        self.messages = []      # Received
        self.subacks = {}       # mid -> [reason code ints]
        self.c.on_connect = self._on_connect
        self.c.on_disconnect = self._on_disconnect
        self.c.on_message = self._on_message
        self.c.on_subscribe = self._on_subscribe
        self.c.on_unsubscribe = self._on_unsubscribe
        self.started = False

    # -- callbacks (paho's network thread) --------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason, properties):
        with self.cond:
            self.connacks.append((reason.value, flags.session_present, properties))
            self.cond.notify_all()

    def _on_disconnect(self, client, userdata, flags, reason, properties):
        with self.cond:
            self.disconnects.append((reason.value, flags.is_disconnect_packet_from_server, properties))
            self.cond.notify_all()

    def _on_message(self, client, userdata, msg):
        props = msg.properties if self.protocol == V5 else None
        with self.cond:
            self.messages.append(Received(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain), props))
            self.cond.notify_all()

    def _on_subscribe(self, client, userdata, mid, reasons, properties):
        with self.cond:
            self.subacks[mid] = [r.value for r in reasons]
            self.cond.notify_all()

    def _on_unsubscribe(self, client, userdata, mid, reasons, properties):
        with self.cond:
            self.subacks[mid] = [r.value for r in reasons]
            self.cond.notify_all()

    # -- waiting ----------------------------------------------------------------------------
    def wait_for(self, what, predicate, timeout=WAIT):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                value = predicate()
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{self.client_id}: no {what} within {timeout} s")
                self.cond.wait(left)

    # -- actions ----------------------------------------------------------------------------
    def connect(self, timeout=WAIT, expect_success=True, properties=None):
        """Sends CONNECT and waits for the CONNACK; returns (reason code, session present,
        CONNACK properties)."""
        port = self.broker.ws_port if self.transport == "websockets" else self.broker.port
        before = len(self.connacks)
        if self.protocol == V5:
            props = properties or Properties(PacketTypes.CONNECT)
            if self.session_expiry is not None:
                props.SessionExpiryInterval = self.session_expiry
            self.c.connect(self.broker.host, port, self.keepalive, clean_start=self.clean,
                           properties=props)
        else:
            self.c.connect(self.broker.host, port, self.keepalive)
        if not self.started:
            self.c.loop_start()
            self.started = True
        ack = self.wait_for("CONNACK", lambda: len(self.connacks) > before and self.connacks[before],
                            timeout)
        if expect_success:
            assert ack[0] == 0, f"connection refused with reason {ack[0]:#x}"
        return ack

    def subscribe(self, topic, qos=0, options=None, properties=None, timeout=WAIT):
        """Subscribes and waits for the SUBACK; returns its reason codes (granted QoS)."""
        if options is not None:
            rc, mid = self.c.subscribe(topic, options=options, properties=properties)
        else:
            rc, mid = self.c.subscribe(topic, qos, properties=properties)
        assert rc == mqtt.MQTT_ERR_SUCCESS, f"subscribe not sent: {rc}"
        return self.wait_for("SUBACK", lambda: self.subacks.get(mid), timeout)

    def unsubscribe(self, topic, timeout=WAIT):
        rc, mid = self.c.unsubscribe(topic)
        assert rc == mqtt.MQTT_ERR_SUCCESS, f"unsubscribe not sent: {rc}"
        return self.wait_for("UNSUBACK", lambda: mid in self.subacks, timeout)

    def publish(self, topic, payload, qos=0, retain=False, properties=None, wait=True, timeout=WAIT):
        """Publishes; with `wait`, returns once the broker acknowledged it (PUBACK / PUBCOMP) or,
        at QoS 0, once it is written to the socket."""
        info = self.c.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS, f"publish not queued: {info.rc}"
        if wait:
            info.wait_for_publish(timeout)
            assert info.is_published(), f"publish to {topic!r} at QoS {qos} not acknowledged within {timeout} s"
        return info

    def expect(self, n, timeout=WAIT):
        """Waits until at least n messages arrived; returns all that arrived."""
        self.wait_for(f"{n} messages (have {len(self.messages)})", lambda: len(self.messages) >= n, timeout)
        with self.cond:
            return list(self.messages)

    def until(self, marker: bytes, timeout=WAIT):
        """Waits for a message whose payload is `marker`; returns the messages that came before
        it. Used to show that something did *not* arrive, without sleeping."""
        def seen():
            return any(m.payload == marker for m in self.messages)
        self.wait_for(f"marker {marker!r}", seen, timeout)
        with self.cond:
            out = []
            for m in self.messages:
                if m.payload == marker:
                    return out
                out.append(m)
        return out

    def wait_disconnected(self, timeout=WAIT, after=0):
        """Waits for the connection to end (the disconnect numbered `after`, counting from 0);
        returns (reason code, from server, properties)."""
        return self.wait_for("disconnect", lambda: len(self.disconnects) > after and self.disconnects[after],
                             timeout)

    def disconnect(self, timeout=WAIT, properties=None):
        """Sends DISCONNECT (normal disconnection) and stops the network thread."""
        if self.c.is_connected():
            before = len(self.disconnects)
            self.c.disconnect(properties=properties)
            self.wait_disconnected(timeout, after=before)
        self.close()

    def close(self):
        if self.started:
            self.c.loop_stop()
            self.started = False
        try:
            self.c.socket() and self.c.socket().close()
        except OSError:
            pass

    @property
    def connected(self):
        return self.c.is_connected()


class Peers:
    """Factory fixture: `peers(broker, **Peer kwargs)` gives a connected Peer; all are closed at
    the end of the test."""

    def __init__(self):
        self.made = []

    def __call__(self, broker, connect=True, **kw):
        p = Peer(broker, **kw)
        self.made.append(p)
        if connect:
            p.connect()
        return p

    def close_all(self):
        for p in self.made:
            try:
                if p.connected:
                    p.c.disconnect()
            except Exception:
                pass
            p.close()


def round_trip(peers, broker, protocol=V311):
    """The broker serves a fresh client: subscribe, publish at QoS 1, receive it."""
    topic = unique("alive")
    p = peers(broker, protocol=protocol)
    p.subscribe(topic, 1)
    p.publish(topic, b"still here", qos=1)
    got = p.expect(1)
    assert got[0].payload == b"still here"
    p.disconnect()


# ----------------------------------------------------------------------------------------------
# A minimal hand-made MQTT codec.

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT, AUTH = range(8, 16)

# v5 property identifiers and their wire types.
P_PAYLOAD_FORMAT, P_MESSAGE_EXPIRY, P_CONTENT_TYPE = 0x01, 0x02, 0x03
P_RESPONSE_TOPIC, P_CORRELATION, P_SUBSCRIPTION_ID = 0x08, 0x09, 0x0B
P_SESSION_EXPIRY, P_ASSIGNED_ID, P_SERVER_KEEPALIVE = 0x11, 0x12, 0x13
P_WILL_DELAY, P_REASON_STRING, P_TOPIC_ALIAS_MAX = 0x18, 0x1F, 0x22
P_USER_PROPERTY, P_MAX_PACKET_SIZE = 0x26, 0x27

_PROP_TYPES = {
    0x01: "byte", 0x02: "u32", 0x03: "str", 0x08: "str", 0x09: "bin", 0x0B: "varint",
    0x11: "u32", 0x12: "str", 0x13: "u16", 0x15: "str", 0x16: "bin", 0x17: "byte",
    0x18: "u32", 0x19: "byte", 0x1A: "str", 0x1C: "str", 0x1F: "str", 0x21: "u16",
    0x22: "u16", 0x23: "u16", 0x24: "byte", 0x25: "byte", 0x26: "pair", 0x27: "u32",
    0x28: "byte", 0x29: "byte", 0x2A: "byte",
}


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n % 128, n // 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def s(text) -> bytes:
    raw = text.encode() if isinstance(text, str) else bytes(text)
    return struct.pack(">H", len(raw)) + raw


def encode_props(props) -> bytes:
    """props: list of (identifier, value); a user property's value is a (name, value) pair."""
    out = bytearray()
    for pid, value in props or []:
        kind = _PROP_TYPES[pid]
        out += varint(pid)
        if kind == "byte":
            out += bytes([value])
        elif kind == "u16":
            out += struct.pack(">H", value)
        elif kind == "u32":
            out += struct.pack(">I", value)
        elif kind == "varint":
            out += varint(value)
        elif kind in ("str", "bin"):
            out += s(value)
        else:
            out += s(value[0]) + s(value[1])
    return varint(len(out)) + bytes(out)


def decode_varint(buf: bytes, pos: int):
    mult, value = 1, 0
    for i in range(4):
        b = buf[pos + i]
        value += (b & 0x7F) * mult
        mult *= 128
        if not b & 0x80:
            return value, pos + i + 1
    raise ValueError("malformed variable byte integer")


def decode_props(buf: bytes, pos: int):
    """Returns ({identifier: value or [values]}, position after the properties)."""
    length, pos = decode_varint(buf, pos)
    end = pos + length
    out = {}
    while pos < end:
        pid, pos = decode_varint(buf, pos)
        kind = _PROP_TYPES[pid]
        if kind == "byte":
            value, pos = buf[pos], pos + 1
        elif kind == "u16":
            value, pos = struct.unpack_from(">H", buf, pos)[0], pos + 2
        elif kind == "u32":
            value, pos = struct.unpack_from(">I", buf, pos)[0], pos + 4
        elif kind == "varint":
            value, pos = decode_varint(buf, pos)
        else:
            n = struct.unpack_from(">H", buf, pos)[0]
            value, pos = bytes(buf[pos + 2:pos + 2 + n]), pos + 2 + n
            if kind == "pair":
                m = struct.unpack_from(">H", buf, pos)[0]
                value, pos = (value, bytes(buf[pos + 2:pos + 2 + m])), pos + 2 + m
        if pid in (P_USER_PROPERTY, P_SUBSCRIPTION_ID):
            out.setdefault(pid, []).append(value)
        else:
            out[pid] = value
    return out, end


def frame(ptype: int, body: bytes, flags: int = 0) -> bytes:
    return bytes([(ptype << 4) | flags]) + varint(len(body)) + body


def connect_packet(client_id, version=4, clean=True, keepalive=60, username=None, password=None,
                   will=None, props=None) -> bytes:
    """version: 3 (MQTT 3.1), 4 (3.1.1) or 5. will: dict(topic, payload, qos, retain, props)."""
    name = b"MQIsdp" if version == 3 else b"MQTT"
    flags = 0x02 if clean else 0
    payload = s(client_id)
    if will:
        flags |= 0x04 | (will.get("qos", 0) << 3) | (0x20 if will.get("retain") else 0)
        if version == 5:
            payload += encode_props(will.get("props"))
        payload += s(will["topic"]) + s(will["payload"])
    if username is not None:
        flags |= 0x80
        payload += s(username)
    if password is not None:
        flags |= 0x40
        payload += s(password)
    body = s(name) + bytes([version, flags]) + struct.pack(">H", keepalive)
    if version == 5:
        body += encode_props(props)
    return frame(CONNECT, body + payload)


def publish_packet(topic, payload, qos=0, pid=None, retain=False, dup=False, version=4, props=None) -> bytes:
    flags = (0x08 if dup else 0) | (qos << 1) | (0x01 if retain else 0)
    body = s(topic)
    if qos:
        body += struct.pack(">H", pid)
    if version == 5:
        body += encode_props(props)
    return frame(PUBLISH, body + payload, flags)


def subscribe_packet(pid, filters, version=4) -> bytes:
    """filters: list of (topic filter, options byte: QoS in the low bits)."""
    body = struct.pack(">H", pid)
    if version == 5:
        body += encode_props(None)
    for f, opts in filters:
        body += s(f) + bytes([opts])
    return frame(SUBSCRIBE, body, 0x02)


def ack_packet(ptype, pid) -> bytes:
    """PUBACK, PUBREC, PUBREL (flags 0b0010) or PUBCOMP with success and no properties."""
    return frame(ptype, struct.pack(">H", pid), 0x02 if ptype == PUBREL else 0)


class Packet(NamedTuple):
    type: int
    flags: int
    body: bytes

    @property
    def pid(self):
        return struct.unpack_from(">H", self.body, 0)[0]

    def publish_fields(self, version=4):
        """For a PUBLISH: (topic, qos, packet id or None, dup, retain, payload)."""
        qos = (self.flags >> 1) & 3
        n = struct.unpack_from(">H", self.body, 0)[0]
        topic, pos = self.body[2:2 + n].decode(), 2 + n
        pid = None
        if qos:
            pid, pos = struct.unpack_from(">H", self.body, pos)[0], pos + 2
        if version == 5:
            _, pos = decode_props(self.body, pos)
        return topic, qos, pid, bool(self.flags & 8), bool(self.flags & 1), self.body[pos:]


class Closed(Exception):
    """The broker closed the connection."""


class Raw:
    """A plain TCP connection that speaks whatever bytes the test hands it."""

    def __init__(self, broker, timeout=WAIT):
        self.sock = socket.create_connection((broker.host, broker.port), timeout=timeout)
        self.buf = bytearray()

    def send(self, data: bytes):
        self.sock.sendall(data)

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no data from the broker in time")
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError("no data from the broker in time") from None
        except (ConnectionResetError, BrokenPipeError):
            raise Closed() from None
        if not chunk:
            raise Closed()
        self.buf += chunk

    def read(self, timeout=WAIT) -> Packet:
        """Next whole packet; raises Closed at end of stream, TimeoutError past the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buf) >= 2:
                try:
                    length, pos = decode_varint(self.buf, 1)
                except IndexError:
                    length = None
                if length is not None and len(self.buf) >= pos + length:
                    head = self.buf[0]
                    body = bytes(self.buf[pos:pos + length])
                    del self.buf[:pos + length]
                    return Packet(head >> 4, head & 0x0F, body)
            self._fill(deadline)

    def expect(self, ptype, timeout=WAIT) -> Packet:
        p = self.read(timeout)
        assert p.type == ptype, f"expected packet type {ptype}, got {p.type} ({p.body!r})"
        return p

    def connect(self, client_id, version=4, **kw):
        """CONNECT and the broker's CONNACK: returns (session present, return/reason code,
        properties dict for v5)."""
        self.send(connect_packet(client_id, version=version, **kw))
        ack = self.expect(CONNACK)
        props = decode_props(ack.body, 2)[0] if version == 5 else {}
        return bool(ack.body[0] & 1), ack.body[1], props

    def wait_closed(self, timeout=WAIT):
        """Waits until the broker closes the connection; returns the packets it sent first.
        Fails if the connection is still open at the deadline."""
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            try:
                seen.append(self.read(max(0.0, deadline - time.monotonic())))
            except Closed:
                return seen
            except TimeoutError:
                raise AssertionError(f"connection still open after {timeout} s; got {seen}") from None

    def drop(self):
        """Goes away without DISCONNECT: the broker sees the stream end."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

    def close(self):
        self.sock.close()
