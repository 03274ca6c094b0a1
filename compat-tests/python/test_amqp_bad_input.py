"""Malformed AMQP 0-9-1 input on a raw socket: a wrong protocol header or garbage instead of one,
an oversized frame, a frame without its frame-end octet (garbage after a valid frame) and a
truncated frame. Each gets the protocol's answer — the supported protocol header (spec 4.2.2),
or connection.close with 501 FRAME_ERROR — and the broker keeps serving: a fresh pika
connection works afterwards. Frames are built and read with pika's own codec."""
import socket
import struct
import time

import pika
import pytest
from pika import frame as pframe
from pika import spec

from amqpkit import WAIT, connect

HEADER = b"AMQP\x00\x00\x09\x01"
FRAME_ERROR = 501


class Raw:
    """One socket speaking AMQP by hand."""

    def __init__(self, broker):
        self.sock = socket.create_connection((broker.host, broker.port), timeout=WAIT)
        self.buf = b""

    def send(self, data: bytes, peer_may_close=False):
        """Sends `data`; with `peer_may_close`, the broker hanging up mid-way (it may act on a
        frame header before the rest arrives) is not an error."""
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            if not peer_may_close:
                raise

    def read_bytes(self, timeout=WAIT) -> bytes:
        """Whatever arrives until the peer closes or `timeout` passes."""
        deadline = time.monotonic() + timeout
        out = self.buf
        self.buf = b""
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                break
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        return out

    def frame(self, timeout=WAIT):
        """The next frame, or None if the connection closed first."""
        deadline = time.monotonic() + timeout
        while True:
            if self.buf:
                consumed, f = pframe.decode_frame(self.buf)
                if f is not None:
                    self.buf = self.buf[consumed:]
                    return f
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no frame within {timeout} s")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except OSError:
                return None
            if not chunk:
                return None
            self.buf += chunk

    def method(self, channel, m):
        self.send(pframe.Method(channel, m).marshal())

    def open(self):
        """Handshake to an open connection (guest/guest, vhost /); returns the frame_max."""
        self.send(HEADER)
        start = self.frame()
        assert isinstance(start.method, spec.Connection.Start), start
        self.method(0, spec.Connection.StartOk(
            client_properties={"product": "raw"}, mechanism="PLAIN",
            response="\0guest\0guest", locale="en_US"))
        tune = self.frame()
        assert isinstance(tune.method, spec.Connection.Tune), tune
        frame_max = tune.method.frame_max
        self.method(0, spec.Connection.TuneOk(channel_max=tune.method.channel_max,
                                              frame_max=frame_max, heartbeat=0))
        self.method(0, spec.Connection.Open(virtual_host="/"))
        ok = self.frame()
        assert isinstance(ok.method, spec.Connection.OpenOk), ok
        return frame_max

    def close(self):
        self.sock.close()


def expect_frame_error(raw):
    """connection.close 501, or (allowed by the spec for a frame the peer cannot parse) the
    socket closed without one; either way nothing else."""
    f = raw.frame()
    if f is not None:
        assert isinstance(f.method, spec.Connection.Close), f
        assert f.method.reply_code == FRAME_ERROR, f.method
        raw.send(pframe.Method(0, spec.Connection.CloseOk()).marshal(), peer_may_close=True)


def still_serving(broker):
    conn = connect(broker)
    ch = conn.channel()
    ch.queue_declare("", exclusive=True)
    conn.close()


@pytest.mark.parametrize("header", [b"AMQP\x00\x00\x08\x00", b"AMQP\x01\x01\x00\x0a",
                                    b"HELLO, WORLD"])
def test_wrong_protocol_header_gets_the_supported_one(amqp_broker, header):
    raw = Raw(amqp_broker)
    raw.send(header)
    got = raw.read_bytes()
    raw.close()
    assert got == HEADER, f"spec 4.2.2: answer with the supported header and close, got {got!r}"
    still_serving(amqp_broker)


def test_oversized_frame_is_a_frame_error(amqp_broker):
    raw = Raw(amqp_broker)
    frame_max = raw.open()
    size = frame_max + 1000
    raw.send(struct.pack(">BHI", 1, 0, size) + b"\0" * size + b"\xce", peer_may_close=True)
    expect_frame_error(raw)
    raw.close()
    still_serving(amqp_broker)


def test_frame_without_its_end_octet_is_a_frame_error(amqp_broker):
    raw = Raw(amqp_broker)
    raw.open()
    good = pframe.Method(1, spec.Channel.Open()).marshal()
    raw.send(good[:-1] + b"\x00" + b"garbage after the frame", peer_may_close=True)
    expect_frame_error(raw)
    raw.close()
    still_serving(amqp_broker)


def test_truncated_frame_then_hang_up_leaves_the_broker_serving(amqp_broker):
    raw = Raw(amqp_broker)
    raw.open()
    good = pframe.Method(1, spec.Channel.Open()).marshal()
    raw.send(good[: len(good) // 2])
    raw.close()
    still_serving(amqp_broker)


def test_garbage_after_the_header_closes_only_that_connection(amqp_broker):
    other = connect(amqp_broker)
    raw = Raw(amqp_broker)
    raw.send(HEADER + b"\x01\x00")  # a frame header cut short, then nonsense
    raw.send(bytes(range(256)) * 4, peer_may_close=True)
    raw.read_bytes(timeout=2)
    raw.close()
    ch = other.channel()  # the other connection is untouched
    ch.queue_declare("", exclusive=True)
    other.close()
    still_serving(amqp_broker)
