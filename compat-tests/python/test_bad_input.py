"""Garbage on the Kafka port closes that connection; the server keeps serving everyone else."""
import os
import socket
import struct

import pytest
from confluent_kafka.admin import AdminClient

# The tests open raw sockets to 127.0.0.1.
pytestmark = pytest.mark.loopback_kafka


def still_serves(server):
    md = AdminClient({"bootstrap.servers": server.bootstrap}).list_topics(timeout=15)
    assert md.brokers, "server must still answer metadata"


def closed_by_server(sock, timeout=10):
    sock.settimeout(timeout)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except ConnectionResetError:
        return True


def test_random_bytes_close_the_connection(server):
    for seed in range(5):
        with socket.create_connection(("127.0.0.1", server.kafka_port)) as s:
            s.sendall(struct.pack(">i", 64) + os.urandom(64))
            assert closed_by_server(s)
    still_serves(server)


def test_oversized_frame_is_refused(server):
    with socket.create_connection(("127.0.0.1", server.kafka_port)) as s:
        s.sendall(struct.pack(">i", 2**31 - 1) + b"\x00" * 16)
        assert closed_by_server(s)
    still_serves(server)


def test_truncated_frame_then_hangup_leaves_server_up(server):
    with socket.create_connection(("127.0.0.1", server.kafka_port)) as s:
        s.sendall(struct.pack(">i", 100) + b"\x00\x12\x00\x03")
    with socket.create_connection(("127.0.0.1", server.kafka_port)) as s:
        s.sendall(struct.pack(">i", -5))
        assert closed_by_server(s)
    still_serves(server)


def test_negative_lengths_inside_a_valid_header_are_rejected(server):
    # Metadata v1 whose topic array claims 2^31-1 entries.
    body = struct.pack(">hhi", 3, 1, 7) + struct.pack(">h", 3) + b"cli" + struct.pack(">i", 2**31 - 1)
    with socket.create_connection(("127.0.0.1", server.kafka_port)) as s:
        s.sendall(struct.pack(">i", len(body)) + body)
        assert closed_by_server(s)
    still_serves(server)


def send_frame(sock, payload):
    sock.sendall(struct.pack(">i", len(payload)) + payload)


def read_frame(sock):
    def exactly(n):
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            assert chunk, "the server closed the connection instead of answering"
            data += chunk
        return data

    (size,) = struct.unpack(">i", exactly(4))
    return exactly(size)


def request_header(api_key, version, correlation_id):
    """Request header v1: key, version, correlation id, client id."""
    return struct.pack(">hhih", api_key, version, correlation_id, 6) + b"compat"


def test_unserved_api_is_answered_and_the_connection_stays_usable(server, request):
    """An API Switchboard does not serve gets UNSUPPORTED_VERSION (35) and the next request on
    the same socket is answered. Apache Kafka serves DescribeAcls, and closes the connection on
    a version it cannot parse: this is Switchboard's rule, not run against external endpoints."""
    if request.config.getoption("--kafka") is not None:
        pytest.skip("Switchboard's rule (answer an unserved API, keep the connection); "
                    "an external Kafka may serve the API or hang up")
    with socket.create_connection(("127.0.0.1", server.kafka_port)) as s:
        s.settimeout(10)
        # DescribeAcls v1 (key 29), correlation id 11: every ACL (resource type, pattern type,
        # operation and permission ANY; null name, principal and host filters).
        send_frame(s, request_header(29, 1, 11) + struct.pack(">bhbhhbb", 1, -1, 1, -1, -1, 1, 1))
        # Metadata v1 (key 3), correlation id 12, every topic (a null array); sent before
        # reading the first answer, as a pipelining client would.
        send_frame(s, request_header(3, 1, 12) + struct.pack(">i", -1))

        acls = read_frame(s)
        correlation_id, _throttle_ms, error_code = struct.unpack(">iih", acls[:10])
        assert (correlation_id, error_code) == (11, 35)
        metadata = read_frame(s)
        assert struct.unpack(">i", metadata[:4]) == (12,)
    still_serves(server)
