"""Helpers for the AMQP 0-9-1 tests (pika 1.x BlockingConnection).

Every wait is bounded: connections get short socket and stack timeouts, and anything that waits
for the broker loops over `connection.process_data_events(time_limit=...)` until a deadline.
Nothing sleeps to show that something did not happen: a test that must not receive a message
publishes a marker after it and checks what arrived before the marker.
"""
import itertools
import time
import uuid

import pika
import pika.exceptions

# Every wait in these tests is bounded by this many seconds unless it says otherwise.
WAIT = 5.0

_ids = itertools.count()


def unique(prefix="t") -> str:
    """A queue or exchange name no other test uses (the RabbitMQ node is shared by the session)."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}-{next(_ids)}"


def params(broker, username="guest", password="guest", vhost="/", **kw):
    return pika.ConnectionParameters(
        host=broker.host, port=broker.port, virtual_host=vhost,
        credentials=pika.PlainCredentials(username, password),
        connection_attempts=1, socket_timeout=WAIT, stack_timeout=WAIT,
        blocked_connection_timeout=WAIT, **kw)


def connect(broker, **kw) -> pika.BlockingConnection:
    return pika.BlockingConnection(params(broker, **kw))


class Connections:
    """Factory fixture: `conns(broker, **params)` gives an open BlockingConnection; all are closed
    at the end of the test (quietly: the broker may have closed them, or restarted)."""

    def __init__(self):
        self.made = []

    def __call__(self, broker, **kw):
        c = connect(broker, **kw)
        self.made.append(c)
        return c

    def close_all(self):
        for c in self.made:
            try:
                if c.is_open:
                    c.close()
            except Exception:
                pass


def wait_until(conn, what, predicate, timeout=WAIT):
    """Services `conn` (deliveries, returns, cancels) until `predicate()` holds; fails after
    `timeout` seconds. Returns the predicate's value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {what} within {timeout} s")
        conn.process_data_events(time_limit=min(left, 0.05))


def service(conn, seconds):
    """Services `conn` for `seconds` (for the few checks that something stays as it is)."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        conn.process_data_events(time_limit=min(left, 0.05))


class Message:
    """One delivery as a test sees it."""

    def __init__(self, method, properties, body):
        self.method = method
        self.properties = properties
        self.body = body

    @property
    def delivery_tag(self):
        return self.method.delivery_tag

    @property
    def redelivered(self):
        return self.method.redelivered

    @property
    def headers(self):
        return self.properties.headers or {}

    def __repr__(self):
        return f"Message({self.body!r}, redelivered={self.redelivered})"


class Consumer:
    """basic.consume on `channel`, collecting deliveries in `messages`."""

    def __init__(self, channel, queue, auto_ack=False, consumer_tag=None, arguments=None,
                 exclusive=False):
        self.channel = channel
        self.messages = []
        self.tag = channel.basic_consume(queue, self._on_message, auto_ack=auto_ack,
                                         exclusive=exclusive, consumer_tag=consumer_tag,
                                         arguments=arguments)

    def _on_message(self, ch, method, properties, body):
        self.messages.append(Message(method, properties, body))

    def expect(self, n, timeout=WAIT):
        """Waits until at least n messages arrived; returns all that arrived."""
        conn = self.channel.connection
        wait_until(conn, f"{n} deliveries (have {len(self.messages)})",
                   lambda: len(self.messages) >= n, timeout)
        return list(self.messages)

    def until(self, marker: bytes, timeout=WAIT):
        """Waits for the message whose body is `marker`; returns the messages before it."""
        conn = self.channel.connection
        wait_until(conn, f"marker {marker!r}",
                   lambda: any(m.body == marker for m in self.messages), timeout)
        out = []
        for m in self.messages:
            if m.body == marker:
                return out
            out.append(m)
        return out

    def bodies(self):
        return [m.body for m in self.messages]


def get(channel, queue, auto_ack=False, timeout=WAIT) -> Message:
    """basic.get until a message comes (a publish on another channel or connection may still be
    on its way); fails after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        method, properties, body = channel.basic_get(queue, auto_ack=auto_ack)
        if method is not None:
            return Message(method, properties, body)
        if time.monotonic() >= deadline:
            raise AssertionError(f"queue {queue!r} still empty after {timeout} s")
        channel.connection.process_data_events(time_limit=0.02)


def get_all_until(channel, queue, marker: bytes, timeout=WAIT):
    """basic.get (auto-ack) until the marker; returns the bodies before it."""
    out = []
    deadline = time.monotonic() + timeout
    while True:
        m = get(channel, queue, auto_ack=True, timeout=max(0.0, deadline - time.monotonic()))
        if m.body == marker:
            return out
        out.append(m.body)


def ready_count(conn, queue) -> int:
    """Messages ready in `queue` (passive queue.declare on a channel of its own)."""
    ch = conn.channel()
    try:
        return ch.queue_declare(queue, passive=True).method.message_count
    finally:
        if ch.is_open:
            ch.close()


def wait_ready(conn, queue, n, timeout=WAIT):
    """Waits until `queue` holds n ready messages."""
    counts = []

    def reached():
        counts.append(ready_count(conn, queue))
        return counts[-1] == n

    try:
        wait_until(conn, f"{n} ready messages in {queue!r}", reached, timeout)
    except AssertionError:
        raise AssertionError(f"{queue!r} holds {counts[-1]} ready messages, want {n}") from None


def exists(conn, queue) -> bool:
    """Whether `queue` exists: a passive declare, on a throw-away channel (a 404 closes it)."""
    ch = conn.channel()
    try:
        ch.queue_declare(queue, passive=True)
    except pika.exceptions.ChannelClosedByBroker as e:
        assert e.reply_code == 404, f"passive declare: {e.reply_code} {e.reply_text}"
        return False
    ch.close()
    return True


def exchange_exists(conn, exchange) -> bool:
    ch = conn.channel()
    try:
        ch.exchange_declare(exchange, passive=True)
    except pika.exceptions.ChannelClosedByBroker as e:
        assert e.reply_code == 404, f"passive declare: {e.reply_code} {e.reply_text}"
        return False
    ch.close()
    return True


def closed_with(code, action):
    """Runs `action()`, which must make the broker close the channel with `code`; returns the
    ChannelClosedByBroker."""
    try:
        action()
    except pika.exceptions.ChannelClosedByBroker as e:
        assert e.reply_code == code, \
            f"channel closed with {e.reply_code} {e.reply_text}, want {code}"
        return e
    raise AssertionError(f"the broker did not close the channel (want {code})")
