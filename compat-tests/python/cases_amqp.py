"""AMQP 0-9-1 client behaviours, each written once and run through every AMQP client adapter by
its test file (test_amqp_amqplib.py, test_amqp_lapin.py) against the broker chosen with
--amqp-broker: declare, bind, publish and consume, publisher confirms, nack and requeue,
dead-lettering on reject and on per-queue TTL, and prefetch.

The `amqp` fixture of the test file makes connections: amqp() -> an adapterkit.AmqpClient of its
own process. A client that cannot do a case lists it in its file's CANNOT (and matrix.py's NA).
Only the cases are exported: a test file takes them with `from cases_amqp import *`.

Nothing here sleeps to show that something did not happen: a test that must not receive a
message publishes a marker after it and checks what arrived before the marker."""
from adapterkit import wait_until
from amqpkit import unique


def work_queue(c, prefix, **options):
    """A fresh exclusive queue; returns its name."""
    return c.assertQueue(queue=unique(prefix), options={"exclusive": True, **options})["queue"]


def dead_letter_pair(c):
    """(fanout dead-letter exchange, the queue bound to it)."""
    dlx = unique("q-dlx")
    c.assertExchange(exchange=dlx, type="fanout", options={"autoDelete": True})
    dead = work_queue(c, "q-dead")
    c.bindQueue(queue=dead, exchange=dlx)
    return dlx, dead


def test_topic_exchange_delivers_matching_messages_in_order_with_properties(amqp):
    c = amqp()
    exchange = unique("q-orders")
    c.assertExchange(exchange=exchange, type="topic", options={"autoDelete": True})
    q = work_queue(c, "q-eu")
    c.bindQueue(queue=q, exchange=exchange, pattern="orders.*.eu")
    tag = c.consume(queue=q, noAck=True)["consumerTag"]
    props = {"contentType": "application/json", "correlationId": "corr-1", "messageId": "m-1",
             "headers": {"region": "eu", "attempt": 1}, "persistent": True}
    for key in ("orders.new.eu", "orders.new.us", "orders.paid.eu", "orders.eu", "audit.new.eu"):
        c.publish(exchange=exchange, routingKey=key, body=key, options=props)
    c.publish(exchange=exchange, routingKey="orders.end.eu", body="end")
    got = c.until(tag, "end")
    assert [m["body"] for m in got] == ["orders.new.eu", "orders.paid.eu"], \
        "`*` matches exactly one word"
    first = got[0]
    assert (first["exchange"], first["routingKey"], first["redelivered"]) == \
        (exchange, "orders.new.eu", False)
    p = first["properties"]
    assert (p.get("contentType"), p.get("correlationId"), p.get("messageId"),
            p.get("deliveryMode")) == ("application/json", "corr-1", "m-1", 2)
    assert p.get("headers") == {"region": "eu", "attempt": 1}


def test_publisher_confirms_ack_every_publish(amqp):
    c = amqp()
    q = work_queue(c, "q-confirm")
    bodies = [f"c{i}" for i in range(200)]
    assert c.publishAllConfirmed(channel=2, routingKey=q, bodies=bodies) == \
        {"acked": 200, "nacked": 0}
    assert c.checkQueue(queue=q)["messageCount"] == 200, "a confirmed message is in its queue"
    tag = c.consume(queue=q, noAck=True)["consumerTag"]
    assert [m["body"] for m in c.expect(tag, 200)] == bodies


def test_nack_with_requeue_redelivers_flagged_redelivered(amqp):
    c = amqp()
    q = work_queue(c, "q-nack")
    tag = c.consume(queue=q)["consumerTag"]
    c.publish(routingKey=q, body="try again")
    [first] = c.expect(tag, 1)
    assert first["redelivered"] is False
    c.nack(deliveryTag=first["deliveryTag"], requeue=True)
    second = c.expect(tag, 2)[1]
    assert (second["body"], second["redelivered"]) == ("try again", True)
    c.ack(deliveryTag=second["deliveryTag"])
    c.publish(routingKey=q, body="end")
    assert [m["body"] for m in c.until(tag, "end")] == ["try again", "try again"], \
        "an acknowledged message does not come back"


def test_nack_without_requeue_drops_the_message(amqp):
    c = amqp()
    q = work_queue(c, "q-drop")
    tag = c.consume(queue=q)["consumerTag"]
    c.publish(routingKey=q, body="unwanted")
    [m] = c.expect(tag, 1)
    c.nack(deliveryTag=m["deliveryTag"], requeue=False)
    c.publish(routingKey=q, body="end")
    assert [m["body"] for m in c.until(tag, "end")] == ["unwanted"], "nothing came back"


def test_reject_without_requeue_dead_letters_with_x_death(amqp):
    c = amqp()
    dlx, dead = dead_letter_pair(c)
    q = work_queue(c, "q-work", deadLetterExchange=dlx)
    c.publish(routingKey=q, body="poison", options={"headers": {"attempt": 1}})
    m = wait_until("a message to get", lambda: c.get(queue=q)["message"])
    c.reject(deliveryTag=m["deliveryTag"], requeue=False)
    tag = c.consume(queue=dead, noAck=True)["consumerTag"]
    [d] = c.expect(tag, 1)
    assert d["body"] == "poison"
    headers = d["properties"].get("headers") or {}
    assert headers.get("attempt") == 1, "the original headers are kept"
    [death] = headers.get("x-death") or [None]
    assert death is not None, f"no x-death header: {headers}"
    assert (death.get("queue"), death.get("reason"), death.get("count"), death.get("exchange"),
            death.get("routing-keys")) == (q, "rejected", 1, "", [q])
    assert c.checkQueue(queue=q)["messageCount"] == 0


def test_queue_ttl_dead_letters_expired_messages(amqp):
    c = amqp()
    dlx, dead = dead_letter_pair(c)
    q = work_queue(c, "q-ttl", messageTtl=200, deadLetterExchange=dlx)
    tag = c.consume(queue=dead, noAck=True)["consumerTag"]
    c.publish(routingKey=q, body="short-lived")
    [d] = c.expect(tag, 1)
    assert d["body"] == "short-lived"
    [death] = (d["properties"].get("headers") or {}).get("x-death") or [{}]
    assert (death.get("reason"), death.get("queue"), death.get("count")) == ("expired", q, 1)
    assert c.checkQueue(queue=q)["messageCount"] == 0


def test_prefetch_limits_unacked_deliveries(amqp):
    c = amqp()
    q = work_queue(c, "q-qos")
    c.prefetch(count=2)
    tag = c.consume(queue=q)["consumerTag"]
    for i in range(5):
        c.publish(routingKey=q, body=f"m{i}")
    got = c.expect(tag, 2)
    # Three wait in the queue: the broker holds them back, so no third delivery is on its way.
    wait_until("3 ready messages", lambda: c.checkQueue(queue=q)["messageCount"] == 3)
    assert [m["body"] for m in c.expect(tag, 2)] == ["m0", "m1"], \
        "no more than prefetch-count unacknowledged deliveries"
    c.ack(deliveryTag=got[0]["deliveryTag"])
    third = c.expect(tag, 3)
    assert third[2]["body"] == "m2"
    wait_until("2 ready messages", lambda: c.checkQueue(queue=q)["messageCount"] == 2)
    assert len(c.expect(tag, 3)) == 3, "one ack frees one slot"
    c.ack(deliveryTag=third[2]["deliveryTag"], multiple=True)
    assert [m["body"] for m in c.expect(tag, 5)] == [f"m{i}" for i in range(5)]


__all__ = [name for name in dir() if name.startswith("test_")]
