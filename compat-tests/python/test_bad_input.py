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
