"""pika 1.x (BlockingConnection) against the broker chosen with --amqp-broker: connecting,
routing through every exchange type, queue declaration semantics, publishing and consuming with
acknowledgements, dead-lettering, TTLs and length limits, publisher confirms, transactions,
streams, and durability across restarts.

The RabbitMQ reference node is shared by the whole session, so every test names its own
queues and exchanges with `unique()`. Nothing here sleeps to show that something did not
happen: a test that must not receive a message publishes a marker after it and checks what
arrived before the marker."""
import pika
import pika.exceptions
import pytest

from amqpkit import (WAIT, Consumer, closed_with, exchange_exists, exists, get, get_all_until,
                     ready_count, service, unique, wait_ready, wait_until)

PERSISTENT = pika.BasicProperties(delivery_mode=2)


def declare_bound_queue(ch, exchange, routing_key="", arguments=None):
    """A fresh exclusive queue bound to `exchange`; returns its name."""
    q = ch.queue_declare(unique("q"), exclusive=True).method.queue
    ch.queue_bind(q, exchange, routing_key=routing_key, arguments=arguments)
    return q


def x_death(message):
    """The first (most recent) entry of the x-death header, checked for shape."""
    deaths = message.headers.get("x-death")
    assert isinstance(deaths, list) and deaths, f"no x-death header: {message.headers}"
    return deaths[0]


# ----------------------------------------------------------------------------------------------
# Connecting


def test_guest_connects_and_opens_a_channel(amqp_broker, conns):
    c = conns(amqp_broker)
    ch = c.channel()
    assert c.is_open and ch.is_open


def test_server_announces_the_capabilities_clients_rely_on(amqp_broker, conns):
    c = conns(amqp_broker)
    caps = c._impl.server_capabilities  # connection.start server-properties "capabilities"
    for cap in ("publisher_confirms", "basic.nack", "consumer_cancel_notify",
                "exchange_exchange_bindings", "authentication_failure_close"):
        assert caps.get(cap) is True, f"capability {cap!r} not announced: {caps}"


@pytest.mark.parametrize("username,password", [("guest", "wrong"), ("nobody", "guest")],
                         ids=["wrong-password", "unknown-user"])
def test_bad_credentials_are_refused_with_access_refused(amqp_broker, username, password):
    from amqpkit import connect

    with pytest.raises((pika.exceptions.ProbableAuthenticationError,
                        pika.exceptions.AuthenticationError)) as info:
        connect(amqp_broker, username=username, password=password)
    # authentication_failure_close: the broker says why (connection.close 403) before closing.
    assert "403" in str(info.value), f"want connection.close 403 ACCESS_REFUSED: {info.value!r}"


def test_unknown_vhost_is_refused(amqp_broker):
    from amqpkit import connect

    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as info:
        connect(amqp_broker, vhost=unique("no-such-vhost"))
    assert "530" in str(info.value), f"want connection.close 530 NOT_ALLOWED: {info.value!r}"


# ----------------------------------------------------------------------------------------------
# Routing


def test_default_exchange_routes_to_the_queue_named_by_the_routing_key(amqp_broker, conns):
    ch = conns(amqp_broker).channel()
    q = ch.queue_declare(unique("q"), exclusive=True).method.queue
    ch.basic_publish("", q, b"hello")
    assert get(ch, q).body == b"hello"


def test_direct_exchange_routes_by_exact_binding_key(amqp_broker, conns):
    ch = conns(amqp_broker).channel()
    ex = unique("direct")
    ch.exchange_declare(ex, "direct", auto_delete=True)
    q = declare_bound_queue(ch, ex, "orders")
    ch.basic_publish(ex, "orders.eu", b"other key")
    ch.basic_publish(ex, "Orders", b"other case")
    ch.basic_publish(ex, "orders", b"match")
    ch.basic_publish("", q, b"end")
    assert get_all_until(ch, q, b"end") == [b"match"]


def test_fanout_exchange_copies_to_every_bound_queue_ignoring_the_key(amqp_broker, conns):
    ch = conns(amqp_broker).channel()
    ex = unique("fanout")
    ch.exchange_declare(ex, "fanout", auto_delete=True)
    queues = [declare_bound_queue(ch, ex, "ignored") for _ in range(3)]
    ch.basic_publish(ex, "any.key", b"to all")
    for q in queues:
        assert get(ch, q).body == b"to all"


def test_topic_star_matches_exactly_one_word(amqp_broker, conns):
    ch = conns(amqp_broker).channel()
    ex = unique("topic")
    ch.exchange_declare(ex, "topic", auto_delete=True)
    q = declare_bound_queue(ch, ex, "sensors.*.temp")
    for key in ("sensors.kitchen.temp", "sensors.temp", "sensors.a.b.temp", "sensors.hall.hum",
                "sensors..temp"):
        ch.basic_publish(ex, key, key.encode())
    ch.basic_publish("", q, b"end")
    # An empty word is still a word: `*` matches it.
    assert get_all_until(ch, q, b"end") == [b"sensors.kitchen.temp", b"sensors..temp"]


def test_topic_hash_matches_zero_or_more_words(amqp_broker, conns):
    ch = conns(amqp_broker).channel()
    ex = unique("topic")
    ch.exchange_declare(ex, "topic", auto_delete=True)
    q = declare_bound_queue(ch, ex, "logs.#")
    everything = declare_bound_queue(ch, ex, "#")
    for key in ("logs", "logs.error", "logs.error.disk", "audit.logs"):
        ch.basic_publish(ex, key, key.encode())
    ch.basic_publish("", q, b"end")
    ch.basic_publish("", everything, b"end")
    assert get_all_until(ch, q, b"end") == [b"logs", b"logs.error", b"logs.error.disk"]
    assert get_all_until(ch, everything, b"end") == [b"logs", b"logs.error", b"logs.error.disk",
                                                     b"audit.logs"]


def test_headers_exchange_x_match_all_needs_every_header(amqp_broker, conns):
    ch = conns(amqp_broker).channel()
    ex = unique("headers")
    ch.exchange_declare(ex, "headers", auto_delete=True)
    q = declare_bound_queue(ch, ex, arguments={"x-match": "all", "format": "pdf", "type": "report"})
    for name, headers in [("both", {"format": "pdf", "type": "report"}),
                          ("both-and-more", {"format": "pdf", "type": "report", "lang": "en"}),
                          ("one", {"format": "pdf"}),
                          ("wrong-value", {"format": "zip", "type": "report"}),
                          ("none", None)]:
        ch.basic_publish(ex, "", name.encode(), pika.BasicProperties(headers=headers))
    ch.basic_publish("", q, b"end")
    assert get_all_until(ch, q, b"end") == [b"both", b"both-and-more"]


def test_headers_exchange_x_match_any_needs_one_header(amqp_broker, conns):
    ch = conns(amqp_broker).channel()
    ex = unique("headers")
    ch.exchange_declare(ex, "headers", auto_delete=True)
    q = declare_bound_queue(ch, ex, arguments={"x-match": "any", "format": "pdf", "type": "report"})
    for name, headers in [("both", {"format": "pdf", "type": "report"}),
                          ("format", {"format": "pdf"}),
                          ("type", {"type": "report", "lang": "en"}),
                          ("wrong-values", {"format": "zip", "type": "log"}),
                          ("none", None)]:
        ch.basic_publish(ex, "", name.encode(), pika.BasicProperties(headers=headers))
    ch.basic_publish("", q, b"end")
    assert get_all_until(ch, q, b"end") == [b"both", b"format", b"type"]


def test_exchange_to_exchange_binding_forwards_matching_messages(amqp_broker, conns):
    ch = conns(amqp_broker).channel()
    upstream, downstream = unique("up"), unique("down")
    ch.exchange_declare(upstream, "topic", auto_delete=True)
    ch.exchange_declare(downstream, "fanout", auto_delete=True)
    ch.exchange_bind(downstream, upstream, routing_key="eu.#")
    q = declare_bound_queue(ch, downstream)
    ch.basic_publish(upstream, "us.orders", b"not forwarded")
    ch.basic_publish(upstream, "eu.orders", b"forwarded")
    ch.basic_publish("", q, b"end")
    assert get_all_until(ch, q, b"end") == [b"forwarded"]


@pytest.mark.parametrize("exchange,kind", [("amq.direct", "direct"), ("amq.fanout", "fanout"),
                                           ("amq.topic", "topic"), ("amq.headers", "headers"),
                                           ("amq.match", "headers")])
def test_predeclared_amq_exchanges_exist(amqp_broker, conns, exchange, kind):
    c = conns(amqp_broker)
    assert exchange_exists(c, exchange)
    ch = c.channel()
    q = declare_bound_queue(ch, exchange, "k", arguments={"x-match": "any", "h": "v"})
    ch.basic_publish(exchange, "k", b"through " + exchange.encode(),
                     pika.BasicProperties(headers={"h": "v"}))
    assert get(ch, q).body == b"through " + exchange.encode()


def test_declaring_a_new_amq_prefixed_exchange_is_refused_with_403(amqp_broker, conns):
    ch = conns(amqp_broker).channel()
    closed_with(403, lambda: ch.exchange_declare("amq." + unique("mine"), "direct"))


def test_passive_declare_of_a_missing_exchange_is_404(amqp_broker, conns):
    assert not exchange_exists(conns(amqp_broker), unique("no-such-exchange"))


def test_publish_to_a_missing_exchange_closes_the_channel_with_404(amqp_broker, conns):
    ch = conns(amqp_broker).channel()
    # The publish has no reply; the next synchronous method on the channel meets the close.
    closed_with(404, lambda: (ch.basic_publish(unique("no-such-exchange"), "k", b"lost"),
                              ch.queue_declare("", exclusive=True)))


# ----------------------------------------------------------------------------------------------
# Declaring queues


def test_server_named_queue_gets_an_amq_gen_name(amqp_broker, conns):
    ch = conns(amqp_broker).channel()
    name = ch.queue_declare("", exclusive=True).method.queue
    assert name.startswith("amq.gen-"), name
    other = ch.queue_declare("", exclusive=True).method.queue
    assert other != name


def test_declare_ok_reports_ready_messages_and_consumers(amqp_broker, conns):
    c = conns(amqp_broker)
    ch = c.channel()
    q = unique("counts")
    ch.queue_declare(q, auto_delete=True)
    for i in range(3):
        ch.basic_publish("", q, b"m")
    wait_ready(c, q, 3)
    cons = Consumer(c.channel(), q)
    cons.expect(3)  # unacknowledged now: no longer ready
    ok = ch.queue_declare(q, passive=True).method
    assert (ok.message_count, ok.consumer_count) == (0, 1)


def test_passive_declare_of_a_missing_queue_is_404_and_the_connection_lives_on(amqp_broker, conns):
    c = conns(amqp_broker)
    ch = c.channel()
    closed_with(404, lambda: ch.queue_declare(unique("missing"), passive=True))
    assert not ch.is_open
    assert c.is_open, "a channel error must not close the connection"
    again = c.channel()
    q = again.queue_declare("", exclusive=True).method.queue
    again.basic_publish("", q, b"still works")
    assert get(again, q).body == b"still works"


def test_redeclare_with_different_arguments_is_406(amqp_broker, conns):
    c = conns(amqp_broker)
    q = unique("ttl")
    c.channel().queue_declare(q, auto_delete=True, arguments={"x-message-ttl": 60000})
    ch = c.channel()
    ch.queue_declare(q, auto_delete=True, arguments={"x-message-ttl": 60000})  # equivalent: fine
    closed_with(406, lambda: ch.queue_declare(q, auto_delete=True,
                                              arguments={"x-message-ttl": 30000}))


def test_redeclare_with_different_durability_is_406(amqp_broker, conns):
    c = conns(amqp_broker)
    q = unique("durability")
    c.channel().queue_declare(q, durable=False, auto_delete=True)
    ch = c.channel()
    closed_with(406, lambda: ch.queue_declare(q, durable=True, auto_delete=True))


def test_exclusive_queue_is_locked_to_its_connection(amqp_broker, conns):
    owner = conns(amqp_broker).channel()
    q = owner.queue_declare(unique("excl"), exclusive=True).method.queue
    other = conns(amqp_broker).channel()
    closed_with(405, lambda: other.basic_consume(q, lambda *a: None))
    # The owner is not disturbed.
    owner.basic_publish("", q, b"mine")
    assert get(owner, q).body == b"mine"


def test_exclusive_queue_is_deleted_when_its_connection_closes(amqp_broker, conns):
    owner = conns(amqp_broker)
    q = owner.channel().queue_declare(unique("excl"), exclusive=True).method.queue
    watcher = conns(amqp_broker)
    owner.close()
    wait_until(watcher, f"deletion of {q}", lambda: not exists(watcher, q))


def test_auto_delete_queue_is_deleted_when_its_last_consumer_cancels(amqp_broker, conns):
    c = conns(amqp_broker)
    ch = c.channel()
    q = unique("auto")
    ch.queue_declare(q, auto_delete=True)
    first, second = Consumer(ch, q), Consumer(ch, q)
    ch.basic_cancel(first.tag)
    assert exists(c, q), "one consumer is left: the queue stays"
    ch.basic_cancel(second.tag)
    wait_until(c, f"deletion of {q}", lambda: not exists(c, q))


def test_delete_if_empty_refuses_a_queue_with_messages(amqp_broker, conns):
    c = conns(amqp_broker)
    ch = c.channel()
    q = ch.queue_declare(unique("full"), exclusive=True).method.queue
    ch.basic_publish("", q, b"keep me")
    wait_ready(c, q, 1)
    closed_with(406, lambda: ch.queue_delete(q, if_empty=True))
    assert exists(c, q)
    ch2 = c.channel()
    assert ch2.queue_delete(q).method.message_count == 1


def test_delete_if_unused_refuses_a_queue_with_consumers(amqp_broker, conns):
    c = conns(amqp_broker)
    ch = c.channel()
    q = ch.queue_declare(unique("used"), exclusive=True).method.queue
    Consumer(ch, q)
    other = c.channel()
    closed_with(406, lambda: other.queue_delete(q, if_unused=True))
    assert exists(c, q)


def test_purge_removes_ready_messages_and_returns_their_count(amqp_broker, conns):
    c = conns(amqp_broker)
    ch = c.channel()
    q = ch.queue_declare(unique("purge"), exclusive=True).method.queue
    for i in range(4):
        ch.basic_publish("", q, f"m{i}".encode())
    wait_ready(c, q, 4)
    assert ch.queue_purge(q).method.message_count == 4
    assert ready_count(c, q) == 0
    assert ch.basic_get(q) == (None, None, None)


def test_unbind_stops_routing(amqp_broker, conns):
    ch = conns(amqp_broker).channel()
    key = unique("rk")
    q = declare_bound_queue(ch, "amq.direct", key)
    ch.basic_publish("amq.direct", key, b"bound")
    ch.queue_unbind(q, "amq.direct", key)
    ch.basic_publish("amq.direct", key, b"unbound")
    ch.basic_publish("", q, b"end")
    assert get_all_until(ch, q, b"end") == [b"bound"]


# ----------------------------------------------------------------------------------------------
# Publishing and consuming


def test_every_basic_property_arrives_intact(amqp_broker, conns):
    ch = conns(amqp_broker).channel()
    q = ch.queue_declare(unique("props"), exclusive=True).method.queue
    headers = {
        "text": "héllo",
        "int": 42,
        "negative": -7,
        "big": 2 ** 40,
        "yes": True,
        "no": False,
        "bytes": b"\x00\x01\xfe",
        "nested": {"inner": "value", "n": 1, "deeper": {"flag": True}},
        "list": ["a", 1, False, {"k": "v"}],
        "void": None,
    }
    sent = pika.BasicProperties(
        content_type="application/json", content_encoding="gzip", headers=headers,
        delivery_mode=2, priority=7, correlation_id="corr-123", reply_to="replies",
        expiration="600000", message_id="msg-456", timestamp=1_700_000_000, type="order.created",
        user_id="guest", app_id="compat-tests")
    body = bytes(range(256)) * 4
    ch.basic_publish("", q, body, sent)
    m = get(ch, q)
    p = m.properties
    assert m.body == body
    assert (p.content_type, p.content_encoding) == ("application/json", "gzip")
    assert p.headers == headers
    assert (p.delivery_mode, p.priority) == (2, 7)
    assert (p.correlation_id, p.reply_to, p.message_id) == ("corr-123", "replies", "msg-456")
    assert p.expiration == "600000"
    assert p.timestamp == 1_700_000_000
    assert (p.type, p.user_id, p.app_id) == ("order.created", "guest", "compat-tests")


def test_user_id_other_than_the_login_user_is_refused(amqp_broker, conns):
    c = conns(amqp_broker)
    ch = c.channel()
    q = ch.queue_declare(unique("uid"), exclusive=True).method.queue
    closed_with(406, lambda: (ch.basic_publish("", q, b"forged",
                                               pika.BasicProperties(user_id="admin")),
                              ch.queue_declare("", exclusive=True)))


def test_empty_body_is_delivered(amqp_broker, conns):
    ch = conns(amqp_broker).channel()
    q = ch.queue_declare(unique("empty"), exclusive=True).method.queue
    ch.basic_publish("", q, b"")
    m = get(ch, q)
    assert m.body == b""


def test_body_larger_than_a_frame_is_reassembled(amqp_broker, conns):
    ch = conns(amqp_broker).channel()
    q = ch.queue_declare(unique("big"), exclusive=True).method.queue
    body = bytes(i % 251 for i in range(1_000_000))  # many body frames at frame_max 128 KiB
    ch.basic_publish("", q, body)
    assert get(ch, q).body == body


def test_consumer_receives_in_publish_order(amqp_broker, conns):
    c = conns(amqp_broker)
    ch = c.channel()
    q = ch.queue_declare(unique("order"), exclusive=True).method.queue
    cons = Consumer(ch, q, auto_ack=True)
    sent = [f"m{i}".encode() for i in range(100)]
    for body in sent:
        ch.basic_publish("", q, body)
    assert [m.body for m in cons.expect(100)] == sent


def test_no_ack_deliveries_are_not_redelivered_after_channel_close(amqp_broker, conns):
    c = conns(amqp_broker)
    q = c.channel().queue_declare(unique("noack"), exclusive=True).method.queue
    ch = c.channel()
    cons = Consumer(ch, q, auto_ack=True)
    pub = c.channel()
    for body in (b"a", b"b"):
        pub.basic_publish("", q, body)
    assert cons.expect(2)[0].body == b"a"
    ch.close()
    assert ready_count(c, q) == 0
    assert pub.basic_get(q) == (None, None, None)


def test_deliveries_carry_the_consumer_tag_they_were_made_for(amqp_broker, conns):
    c = conns(amqp_broker)
    ch = c.channel()
    q1 = ch.queue_declare(unique("tag"), exclusive=True).method.queue
    q2 = ch.queue_declare(unique("tag"), exclusive=True).method.queue
    a = Consumer(ch, q1, auto_ack=True, consumer_tag="consumer-a")
    b = Consumer(ch, q2, auto_ack=True, consumer_tag="consumer-b")
    assert (a.tag, b.tag) == ("consumer-a", "consumer-b"), "consume-ok echoes the tag"
    ch.basic_publish("", q1, b"for a")
    ch.basic_publish("", q2, b"for b")
    got_a, got_b = a.expect(1)[0], b.expect(1)[0]
    assert (got_a.body, got_a.method.consumer_tag) == (b"for a", "consumer-a")
    assert (got_b.body, got_b.method.consumer_tag) == (b"for b", "consumer-b")


def test_cancelled_consumer_gets_no_more_deliveries(amqp_broker, conns):
    c = conns(amqp_broker)
    ch = c.channel()
    q = ch.queue_declare(unique("cancel"), exclusive=True).method.queue
    cons = Consumer(ch, q, auto_ack=True)
    ch.basic_publish("", q, b"before")
    cons.expect(1)
    ch.basic_cancel(cons.tag)
    ch.basic_publish("", q, b"after")
    assert get(ch, q).body == b"after", "the message stays in the queue"
    assert cons.bodies() == [b"before"]


def test_basic_get_returns_a_message_and_the_count_left(amqp_broker, conns):
    c = conns(amqp_broker)
    ch = c.channel()
    q = ch.queue_declare(unique("get"), exclusive=True).method.queue
    for body in (b"one", b"two", b"three"):
        ch.basic_publish("", q, body)
    wait_ready(c, q, 3)
    method, props, body = ch.basic_get(q, auto_ack=False)
    assert body == b"one"
    assert method.message_count == 2, "get-ok counts the messages left"
    assert method.redelivered is False
    ch.basic_ack(method.delivery_tag)


def test_basic_get_on_an_empty_queue_is_get_empty(amqp_broker, conns):
    ch = conns(amqp_broker).channel()
    q = ch.queue_declare(unique("empty"), exclusive=True).method.queue
    assert ch.basic_get(q) == (None, None, None)
    assert ch.is_open


def test_ack_multiple_acknowledges_everything_up_to_the_tag(amqp_broker, conns):
    c = conns(amqp_broker)
    ch = c.channel()
    q = c.channel().queue_declare(unique("multi"), exclusive=True).method.queue
    cons = Consumer(ch, q)
    for i in range(5):
        ch.basic_publish("", q, f"m{i}".encode())
    got = cons.expect(5)
    ch.basic_ack(got[2].delivery_tag, multiple=True)
    ch.close()  # m3 and m4 were not acknowledged: back in the queue
    again = c.channel()
    first, second = get(again, q, auto_ack=True), get(again, q, auto_ack=True)
    assert [first.body, second.body] == [b"m3", b"m4"]
    assert first.redelivered and second.redelivered
    assert again.basic_get(q) == (None, None, None)


def test_nack_with_requeue_redelivers_flagged_redelivered(amqp_broker, conns):
    c = conns(amqp_broker)
    ch = c.channel()
    q = ch.queue_declare(unique("nack"), exclusive=True).method.queue
    cons = Consumer(ch, q)
    ch.basic_publish("", q, b"try again")
    first = cons.expect(1)[0]
    assert first.redelivered is False
    ch.basic_nack(first.delivery_tag, requeue=True)
    second = cons.expect(2)[1]
    assert second.body == b"try again"
    assert second.redelivered is True
    ch.basic_ack(second.delivery_tag)


def test_nack_multiple_without_requeue_drops_the_messages(amqp_broker, conns):
    c = conns(amqp_broker)
    ch = c.channel()
    q = ch.queue_declare(unique("nackm"), exclusive=True).method.queue
    cons = Consumer(ch, q)
    for body in (b"a", b"b", b"c"):
        ch.basic_publish("", q, body)
    got = cons.expect(3)
    ch.basic_nack(got[1].delivery_tag, multiple=True, requeue=False)
    ch.basic_ack(got[2].delivery_tag)
    ch.basic_publish("", q, b"end")
    assert [m.body for m in cons.until(b"end")] == [b"a", b"b", b"c"], "nothing came back"


def test_reject_without_requeue_dead_letters_with_x_death(amqp_broker, conns):
    c = conns(amqp_broker)
    ch = c.channel()
    dlx = unique("dlx")
    ch.exchange_declare(dlx, "fanout", auto_delete=True)
    dead = declare_bound_queue(ch, dlx)
    q = ch.queue_declare(unique("work"), exclusive=True,
                         arguments={"x-dead-letter-exchange": dlx}).method.queue
    ch.basic_publish("", q, b"poison", pika.BasicProperties(headers={"attempt": 1}))
    m = get(ch, q)
    ch.basic_reject(m.delivery_tag, requeue=False)
    d = get(ch, dead)
    assert d.body == b"poison"
    assert d.headers.get("attempt") == 1, "the original headers are kept"
    death = x_death(d)
    assert death.get("queue") == q
    assert death.get("reason") == "rejected"
    assert death.get("count") == 1
    assert death.get("exchange") == ""
    assert death.get("routing-keys") == [q]


def test_dead_letter_routing_key_replaces_the_original(amqp_broker, conns):
    c = conns(amqp_broker)
    ch = c.channel()
    parked = ch.queue_declare(unique("parked"), exclusive=True).method.queue
    q = ch.queue_declare(unique("work"), exclusive=True,
                         arguments={"x-dead-letter-exchange": "",
                                    "x-dead-letter-routing-key": parked}).method.queue
    ch.basic_publish("", q, b"to park")
    ch.basic_reject(get(ch, q).delivery_tag, requeue=False)
    d = get(ch, parked)
    assert d.body == b"to park"
    assert x_death(d).get("reason") == "rejected"


def test_queue_ttl_expires_messages_to_the_dead_letter_exchange(amqp_broker, conns):
    c = conns(amqp_broker)
    ch = c.channel()
    dlx = unique("dlx")
    ch.exchange_declare(dlx, "fanout", auto_delete=True)
    dead = declare_bound_queue(ch, dlx)
    q = ch.queue_declare(unique("ttl"), exclusive=True,
                         arguments={"x-message-ttl": 200, "x-dead-letter-exchange": dlx}
                         ).method.queue
    ch.basic_publish("", q, b"short-lived")
    d = get(ch, dead, timeout=WAIT)
    assert d.body == b"short-lived"
    death = x_death(d)
    assert (death.get("reason"), death.get("queue"), death.get("count")) == ("expired", q, 1)
    assert ready_count(c, q) == 0


def test_per_message_expiration_expires_only_that_message(amqp_broker, conns):
    c = conns(amqp_broker)
    ch = c.channel()
    dlx = unique("dlx")
    ch.exchange_declare(dlx, "fanout", auto_delete=True)
    dead = declare_bound_queue(ch, dlx)
    q = ch.queue_declare(unique("exp"), exclusive=True,
                         arguments={"x-dead-letter-exchange": dlx}).method.queue
    ch.basic_publish("", q, b"expires", pika.BasicProperties(expiration="100"))
    d = get(ch, dead)
    assert d.body == b"expires"
    death = x_death(d)
    assert death.get("reason") == "expired"
    # Dead-lettering removes the expiration (it would expire again in the dead-letter queue)
    # and keeps it in x-death.
    assert d.properties.expiration is None
    assert death.get("original-expiration") == "100"
    ch.basic_publish("", q, b"stays")
    ch.basic_publish("", q, b"end", pika.BasicProperties(expiration="600000"))
    assert get_all_until(ch, q, b"end") == [b"stays"]


def test_expired_message_is_not_delivered(amqp_broker, conns):
    c = conns(amqp_broker)
    ch = c.channel()
    q = ch.queue_declare(unique("exp"), exclusive=True).method.queue
    ch.basic_publish("", q, b"expired", pika.BasicProperties(expiration="0"))
    ch.basic_publish("", q, b"end")
    assert get_all_until(ch, q, b"end") == []


def test_max_length_drop_head_discards_the_oldest(amqp_broker, conns):
    c = conns(amqp_broker)
    ch = c.channel()
    ch.confirm_delivery()
    q = ch.queue_declare(unique("maxlen"), exclusive=True,
                         arguments={"x-max-length": 2, "x-overflow": "drop-head"}).method.queue
    for body in (b"1", b"2", b"3"):
        ch.basic_publish("", q, body)  # each confirmed: all three were accepted
    assert ready_count(c, q) == 2
    assert [get(ch, q, auto_ack=True).body for _ in range(2)] == [b"2", b"3"]
    assert ch.basic_get(q) == (None, None, None)


def test_max_length_reject_publish_nacks_the_overflowing_publish(amqp_broker, conns):
    c = conns(amqp_broker)
    ch = c.channel()
    ch.confirm_delivery()
    q = ch.queue_declare(unique("maxlen"), exclusive=True,
                         arguments={"x-max-length": 2, "x-overflow": "reject-publish"}
                         ).method.queue
    ch.basic_publish("", q, b"1")
    ch.basic_publish("", q, b"2")
    with pytest.raises(pika.exceptions.NackError):
        ch.basic_publish("", q, b"3")
    assert ch.is_open, "a nack is not a channel error"
    assert [get(ch, q, auto_ack=True).body for _ in range(2)] == [b"1", b"2"]
    ch.basic_publish("", q, b"4")  # room again
    assert get(ch, q, auto_ack=True).body == b"4"


def test_prefetch_count_limits_unacked_deliveries(amqp_broker, conns):
    c = conns(amqp_broker)
    ch = c.channel()
    q = c.channel().queue_declare(unique("qos"), exclusive=True).method.queue
    ch.basic_qos(prefetch_count=2)
    cons = Consumer(ch, q)
    for i in range(5):
        ch.basic_publish("", q, f"m{i}".encode())
    cons.expect(2)
    wait_ready(c, q, 3)  # the other three wait in the queue
    service(c, 0.3)
    assert cons.bodies() == [b"m0", b"m1"], "no more than prefetch_count unacked deliveries"
    ch.basic_ack(cons.messages[0].delivery_tag)
    assert cons.expect(3)[2].body == b"m2"
    service(c, 0.2)
    assert len(cons.messages) == 3
    ch.basic_ack(cons.messages[2].delivery_tag, multiple=True)
    assert [m.body for m in cons.expect(5)] == [f"m{i}".encode() for i in range(5)]


def test_mandatory_unroutable_publish_is_returned(amqp_broker, conns):
    c = conns(amqp_broker)
    ch = c.channel()
    returned = []
    ch.add_on_return_callback(lambda _ch, method, props, body: returned.append((method, body)))
    key = unique("nowhere")
    ch.basic_publish("amq.direct", key, b"bounce", mandatory=True)
    method, body = wait_until(c, "basic.return", lambda: returned and returned[0])
    assert body == b"bounce"
    assert (method.reply_code, method.exchange, method.routing_key) == (312, "amq.direct", key)


def test_non_mandatory_unroutable_publish_is_dropped_silently(amqp_broker, conns):
    c = conns(amqp_broker)
    ch = c.channel()
    ch.confirm_delivery()
    returned = []
    ch.add_on_return_callback(lambda *a: returned.append(a))
    ch.basic_publish("amq.direct", unique("nowhere"), b"dropped")  # confirmed, no exception
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.basic_publish("", q, b"end", mandatory=True)
    assert get(ch, q).body == b"end"
    assert returned == []


def test_mandatory_unroutable_publish_with_confirms_raises_unroutable(amqp_broker, conns):
    ch = conns(amqp_broker).channel()
    ch.confirm_delivery()
    with pytest.raises(pika.exceptions.UnroutableError) as info:
        ch.basic_publish("amq.direct", unique("nowhere"), b"bounce", mandatory=True)
    assert [m.body for m in info.value.messages] == [b"bounce"]
    assert info.value.messages[0].method.reply_code == 312
    assert ch.is_open


def test_publisher_confirms_acknowledge_every_publish(amqp_broker, conns):
    c = conns(amqp_broker)
    ch = c.channel()
    ch.confirm_delivery()
    q = ch.queue_declare(unique("confirm"), exclusive=True).method.queue
    for i in range(50):
        ch.basic_publish("", q, f"m{i}".encode())  # returns once acked; raises on nack
    assert ready_count(c, q) == 50, "a confirmed message is in the queue"


def test_transaction_rollback_discards_publishes_and_commit_delivers(amqp_broker, conns):
    c = conns(amqp_broker)
    ch = c.channel()
    q = c.channel().queue_declare(unique("tx"), exclusive=True).method.queue
    ch.tx_select()
    ch.basic_publish("", q, b"rolled back 1")
    ch.basic_publish("", q, b"rolled back 2")
    ch.tx_rollback()
    ch.basic_publish("", q, b"committed")
    assert ready_count(c, q) == 0, "nothing is visible before the commit"
    ch.tx_commit()
    other = c.channel()
    assert get(other, q, auto_ack=True).body == b"committed"
    assert other.basic_get(q) == (None, None, None)


def test_transaction_rollback_of_an_ack_leaves_the_message_unacked(amqp_broker, conns):
    c = conns(amqp_broker)
    q = c.channel().queue_declare(unique("txack"), exclusive=True).method.queue
    pub = c.channel()
    pub.basic_publish("", q, b"work")
    ch = c.channel()
    ch.tx_select()
    m = get(ch, q)
    ch.basic_ack(m.delivery_tag)
    ch.tx_rollback()
    ch.close()  # still unacknowledged: requeued
    again = get(pub, q, auto_ack=True)
    assert again.body == b"work" and again.redelivered


def test_transaction_commit_of_an_ack_removes_the_message(amqp_broker, conns):
    c = conns(amqp_broker)
    q = c.channel().queue_declare(unique("txack"), exclusive=True).method.queue
    pub = c.channel()
    pub.basic_publish("", q, b"work")
    ch = c.channel()
    ch.tx_select()
    ch.basic_ack(get(ch, q).delivery_tag)
    ch.tx_commit()
    ch.close()
    pub.basic_publish("", q, b"end")
    assert get_all_until(pub, q, b"end") == []


def test_basic_recover_requeue_redelivers_unacked_messages(amqp_broker, conns):
    c = conns(amqp_broker)
    ch = c.channel()
    q = ch.queue_declare(unique("recover"), exclusive=True).method.queue
    ch.basic_publish("", q, b"again")
    first = get(ch, q)
    assert first.redelivered is False
    ch.basic_recover(requeue=True)
    second = get(ch, q)
    assert (second.body, second.redelivered) == (b"again", True)
    ch.basic_ack(second.delivery_tag)


def test_closing_a_channel_requeues_its_unacked_messages_as_redelivered(amqp_broker, conns):
    c = conns(amqp_broker)
    q = c.channel().queue_declare(unique("requeue"), exclusive=True).method.queue
    ch = c.channel()
    cons = Consumer(ch, q)
    for body in (b"a", b"b"):
        ch.basic_publish("", q, body)
    cons.expect(2)
    ch.close()
    other = c.channel()
    got = [get(other, q, auto_ack=True) for _ in range(2)]
    assert [m.body for m in got] == [b"a", b"b"], "requeued in their original order"
    assert all(m.redelivered for m in got)


def test_closing_the_connection_requeues_unacked_messages(amqp_broker, conns):
    owner = conns(amqp_broker)
    q = unique("requeue")
    owner.channel().queue_declare(q, auto_delete=False)
    ch = owner.channel()
    cons = Consumer(ch, q)
    ch.basic_publish("", q, b"unfinished")
    cons.expect(1)
    owner.close()
    other = conns(amqp_broker).channel()
    m = get(other, q, auto_ack=True)
    assert (m.body, m.redelivered) == (b"unfinished", True)
    other.queue_delete(q)


def test_deleting_a_queue_cancels_its_consumers(amqp_broker, conns):
    c = conns(amqp_broker)
    ch = c.channel()
    q = c.channel().queue_declare(unique("doomed"), exclusive=True).method.queue
    cancelled = []
    ch.add_on_cancel_callback(lambda frame: cancelled.append(frame.method.consumer_tag))
    cons = Consumer(ch, q, consumer_tag="doomed-consumer")
    c.channel().queue_delete(q)
    assert wait_until(c, "basic.cancel from the broker", lambda: cancelled) == ["doomed-consumer"]
    assert ch.is_open, "the channel survives its consumer"
    assert cons.tag not in ch.consumer_tags


def test_stream_queue_delivers_from_the_first_offset(amqp_broker, conns):
    c = conns(amqp_broker)
    ch = c.channel()
    ch.confirm_delivery()
    q = unique("stream")
    ch.queue_declare(q, durable=True, arguments={"x-queue-type": "stream"})
    try:
        sent = [f"s{i}".encode() for i in range(10)]
        for body in sent:
            ch.basic_publish("", q, body)
        reader = c.channel()
        reader.basic_qos(prefetch_count=100)  # stream consumers need a prefetch
        cons = Consumer(reader, q, arguments={"x-stream-offset": "first"})
        assert [m.body for m in cons.expect(10)] == sent
        reader.basic_ack(cons.messages[-1].delivery_tag, multiple=True)
    finally:
        c.channel().queue_delete(q)


# ----------------------------------------------------------------------------------------------
# Durability (restart the broker: at the end of the module, the shared node is restarted)


@pytest.mark.broker_control
def test_durable_queue_keeps_persistent_messages_across_a_restart(amqp_broker, conns):
    c = conns(amqp_broker)
    ch = c.channel()
    ch.confirm_delivery()
    q = unique("durable")
    ch.queue_declare(q, durable=True)
    sent = [f"p{i}".encode() for i in range(10)]
    for body in sent:
        ch.basic_publish("", q, body, PERSISTENT)
    c.close()

    amqp_broker.restart()

    ch = conns(amqp_broker).channel()
    assert [get(ch, q, auto_ack=True).body for _ in sent] == sent
    ch.queue_delete(q)


@pytest.mark.broker_control
def test_durable_exchange_and_binding_survive_a_restart(amqp_broker, conns):
    ch = conns(amqp_broker).channel()
    ex, q = unique("dx"), unique("dq")
    ch.exchange_declare(ex, "topic", durable=True)
    ch.queue_declare(q, durable=True)
    ch.queue_bind(q, ex, "events.#")

    amqp_broker.restart()

    c = conns(amqp_broker)
    ch = c.channel()
    assert exchange_exists(c, ex)
    ch.basic_publish(ex, "events.created", b"after restart")
    assert get(ch, q, auto_ack=True).body == b"after restart"
    ch.queue_delete(q)
    ch.exchange_delete(ex)


@pytest.mark.broker_control
def test_confirmed_persistent_messages_survive_kill9(amqp_broker, conns):
    c = conns(amqp_broker)
    ch = c.channel()
    ch.confirm_delivery()
    q = unique("crash")
    ch.queue_declare(q, durable=True)
    sent = [f"c{i}".encode() for i in range(20)]
    for body in sent:
        ch.basic_publish("", q, body, PERSISTENT)  # each confirmed before the next

    amqp_broker.kill9()
    amqp_broker.restart()

    ch = conns(amqp_broker).channel()
    assert [get(ch, q, auto_ack=True).body for _ in sent] == sent
    ch.queue_delete(q)
