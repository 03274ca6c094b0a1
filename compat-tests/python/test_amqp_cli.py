"""Debian's amqp-tools (amqp-publish, amqp-consume, amqp-get, amqp-declare-queue,
amqp-delete-queue; librabbitmq 0.11) against the broker chosen with --amqp-broker, checked with
pika on the other side. Every tool runs with a timeout."""
import shutil
import subprocess

import pika
import pytest

from amqpkit import (WAIT, Consumer, closed_with, exists, get, get_all_until, unique, wait_ready,
                     wait_until)

TOOLS = ["amqp-publish", "amqp-consume", "amqp-get", "amqp-declare-queue", "amqp-delete-queue"]

pytestmark = pytest.mark.skipif(
    any(shutil.which(t) is None for t in TOOLS),
    reason="amqp-tools not installed (scripts/setup installs it)")


def url(broker, password="guest"):
    return f"amqp://guest:{password}@{broker.host}:{broker.port}"


def tool(broker, name, *args, input=None, check=True, password="guest", timeout=WAIT * 2):
    """Runs an amqp-tools command to completion (bounded) and returns the CompletedProcess."""
    out = subprocess.run([name, "--url", url(broker, password), *args], input=input,
                         capture_output=True, timeout=timeout)
    if check:
        assert out.returncode == 0, f"{name} exited {out.returncode}: {out.stderr.decode()}"
    return out


@pytest.fixture
def cli_queue(amqp_broker, conns):
    """(pika connection, name of a fresh queue). Not exclusive, since the tools use connections
    of their own; deleted after the test."""
    c = conns(amqp_broker)
    q = unique("cli")
    c.channel().queue_declare(q)
    yield c, q
    try:
        conns(amqp_broker).channel().queue_delete(q)
    except Exception:
        pass


# ----------------------------------------------------------------------------------------------
# amqp-declare-queue / amqp-delete-queue


def test_declare_queue_with_an_empty_name_prints_a_server_generated_name(amqp_broker, conns):
    out = tool(amqp_broker, "amqp-declare-queue", "-q", "")
    name = out.stdout.decode().strip()
    assert name.startswith("amq.gen-"), out.stdout
    c = conns(amqp_broker)
    assert exists(c, name)
    c.channel().queue_delete(name)


def test_declare_queue_durable_creates_a_durable_queue(amqp_broker, conns):
    q = unique("cli-durable")
    out = tool(amqp_broker, "amqp-declare-queue", "-q", q, "-d")
    assert out.stdout.decode().strip() == q
    c = conns(amqp_broker)
    c.channel().queue_declare(q, durable=True)  # equivalent: accepted
    ch = c.channel()
    closed_with(406, lambda: ch.queue_declare(q, durable=False))
    c.channel().queue_delete(q)


def test_delete_queue_deletes_it_and_prints_the_messages_it_held(amqp_broker, cli_queue):
    c, q = cli_queue
    ch = c.channel()
    ch.basic_publish("", q, b"1")
    ch.basic_publish("", q, b"2")
    wait_ready(c, q, 2)
    out = tool(amqp_broker, "amqp-delete-queue", "-q", q)
    assert out.stdout.decode().strip() == "2"
    assert not exists(c, q)


def test_delete_queue_if_empty_refuses_a_queue_with_messages(amqp_broker, cli_queue):
    c, q = cli_queue
    c.channel().basic_publish("", q, b"still here")
    wait_ready(c, q, 1)
    out = tool(amqp_broker, "amqp-delete-queue", "-q", q, "--if-empty", check=False)
    assert out.returncode != 0
    assert b"406" in out.stderr, out.stderr
    assert exists(c, q)


def test_delete_queue_if_unused_refuses_a_queue_with_a_consumer(amqp_broker, cli_queue):
    c, q = cli_queue
    Consumer(c.channel(), q)
    out = tool(amqp_broker, "amqp-delete-queue", "-q", q, "--if-unused", check=False)
    assert out.returncode != 0
    assert b"406" in out.stderr, out.stderr
    assert exists(c, q)


# ----------------------------------------------------------------------------------------------
# amqp-publish / amqp-get


def test_publish_then_get_round_trips_the_body(amqp_broker, cli_queue):
    _, q = cli_queue
    tool(amqp_broker, "amqp-publish", "-r", q, "-b", "hello from amqp-tools")
    out = tool(amqp_broker, "amqp-get", "-q", q)
    assert out.stdout == b"hello from amqp-tools"


def test_get_on_an_empty_queue_exits_2(amqp_broker, cli_queue):
    _, q = cli_queue
    out = tool(amqp_broker, "amqp-get", "-q", q, check=False)
    assert (out.returncode, out.stdout) == (2, b""), out.stderr
    # ...and took nothing: a message published afterwards is still there for the next get.
    tool(amqp_broker, "amqp-publish", "-r", q, "-b", "later")
    assert tool(amqp_broker, "amqp-get", "-q", q).stdout == b"later"


def test_get_on_a_missing_queue_fails_with_404(amqp_broker):
    out = tool(amqp_broker, "amqp-get", "-q", unique("missing"), check=False)
    assert out.returncode == 1
    assert b"404" in out.stderr, out.stderr


def test_publish_sets_the_properties_it_is_given(amqp_broker, cli_queue):
    c, q = cli_queue
    tool(amqp_broker, "amqp-publish", "-r", q, "-b", '{"n": 1}', "-C", "application/json",
         "-E", "utf-8", "-t", "reply-here", "-p", "-H", "tenant: blue", "-H", "trace: abc")
    m = get(c.channel(), q, auto_ack=True)
    p = m.properties
    assert m.body == b'{"n": 1}'
    assert (p.content_type, p.content_encoding, p.reply_to) == ("application/json", "utf-8",
                                                               "reply-here")
    assert p.delivery_mode == 2
    assert p.headers == {"tenant": "blue", "trace": "abc"}


def test_publish_line_buffered_sends_one_message_per_line(amqp_broker, cli_queue):
    c, q = cli_queue
    tool(amqp_broker, "amqp-publish", "-r", q, "-l", input=b"first\nsecond\nthird\n")
    ch = c.channel()
    ch.basic_publish("", q, b"end")
    # librabbitmq 0.11 keeps each line's newline in the body.
    assert get_all_until(ch, q, b"end") == [b"first\n", b"second\n", b"third\n"]


def test_publish_to_an_exchange_routes_by_the_routing_key(amqp_broker, conns):
    ch = conns(amqp_broker).channel()
    q = ch.queue_declare(unique("q"), exclusive=True).method.queue
    prefix = unique("cli")
    ch.queue_bind(q, "amq.topic", f"{prefix}.*")
    tool(amqp_broker, "amqp-publish", "-e", "amq.topic", "-r", f"{prefix}.other.word", "-b", "no")
    tool(amqp_broker, "amqp-publish", "-e", "amq.topic", "-r", f"{prefix}.yes", "-b", "yes")
    ch.basic_publish("", q, b"end")
    assert get_all_until(ch, q, b"end") == [b"yes"]


def test_publish_to_a_missing_exchange_fails_with_404(amqp_broker):
    out = tool(amqp_broker, "amqp-publish", "-e", unique("no-such-exchange"), "-r", "k",
               "-b", "lost", check=False)
    assert out.returncode != 0
    assert b"404" in out.stderr, out.stderr


def test_wrong_password_is_refused(amqp_broker):
    out = tool(amqp_broker, "amqp-publish", "-r", "anything", "-b", "x", password="wrong",
               check=False)
    assert out.returncode != 0
    assert b"403" in out.stderr, out.stderr


# ----------------------------------------------------------------------------------------------
# amqp-consume


def test_consume_count_reads_n_messages_and_exits(amqp_broker, cli_queue):
    c, q = cli_queue
    ch = c.channel()
    for i in range(5):
        ch.basic_publish("", q, f"m{i}\n".encode())
    wait_ready(c, q, 5)
    out = tool(amqp_broker, "amqp-consume", "-q", q, "-c", "3", "cat")
    assert out.stdout == b"m0\nm1\nm2\n"


def test_consume_acknowledges_what_it_consumed(amqp_broker, cli_queue):
    c, q = cli_queue
    ch = c.channel()
    for body in (b"a", b"b", b"c"):
        ch.basic_publish("", q, body)
    wait_ready(c, q, 3)
    tool(amqp_broker, "amqp-consume", "-q", q, "-c", "2", "cat")
    # a and b were acknowledged (not requeued when amqp-consume left); c is still there.
    ch.basic_publish("", q, b"end")
    assert get_all_until(ch, q, b"end") == [b"c"]


def test_consume_waits_for_messages_published_after_it_started(amqp_broker, cli_queue):
    c, q = cli_queue
    proc = subprocess.Popen(["amqp-consume", "--url", url(amqp_broker), "-q", q, "-c", "2",
                             "-p", "1", "cat"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        ch = c.channel()
        # Wait until amqp-consume is attached (consumer count 1), then publish.
        wait_until(c, "amqp-consume's consumer",
                   lambda: ch.queue_declare(q, passive=True).method.consumer_count == 1)
        ch.basic_publish("", q, b"x\n")
        ch.basic_publish("", q, b"y\n")
        out, err = proc.communicate(timeout=WAIT * 2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err.decode()
    assert out == b"x\ny\n"


def test_consume_no_ack_with_a_pika_publisher_of_many_messages(amqp_broker, cli_queue):
    c, q = cli_queue
    ch = c.channel()
    ch.confirm_delivery()
    sent = [f"n{i}".encode() for i in range(50)]
    for body in sent:
        ch.basic_publish("", q, body + b"\n", pika.BasicProperties(delivery_mode=1))
    out = tool(amqp_broker, "amqp-consume", "-q", q, "-A", "-c", "50", "cat")
    assert out.stdout.split(b"\n")[:-1] == sent
    assert ch.basic_get(q) == (None, None, None)


def test_consume_from_an_exchange_binds_a_private_queue(amqp_broker, conns):
    """amqp-consume -e EX -r KEY declares its own (server-named, exclusive) queue and binds it
    with KEY. (amqp-tools 0.11 binds nothing with an empty key, and crashes without -r.)"""
    c = conns(amqp_broker)
    ex = unique("cli-direct")
    c.channel().exchange_declare(ex, "direct")
    proc = subprocess.Popen(["amqp-consume", "--url", url(amqp_broker), "-e", ex, "-r", "jobs",
                             "-c", "1", "cat"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        ch = c.channel()
        ch.confirm_delivery()

        def routed():
            # Unroutable (mandatory) until the tool's queue is bound: then it comes back.
            try:
                ch.basic_publish(ex, "jobs", b"to the tool\n", mandatory=True)
                return True
            except pika.exceptions.UnroutableError:
                return False

        wait_until(c, "amqp-consume's binding", routed)
        out, err = proc.communicate(timeout=WAIT * 2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err.decode()
    assert out == b"to the tool\n"
    c.channel().exchange_delete(ex)
