"""Clients that leave Nagle on and write a request in two pieces (HTTP headers then body; a game frame's header
then its body) are answered at once, not after Linux's 40 ms delayed ACK (twinfer.tcp_ack): before, each such
request took ~44 ms on loopback instead of ~0.3 ms."""

from __future__ import annotations

import json
import socket
import statistics
import time

import pytest

from tests.support import make_repository
from twinfer.client import messages
from twinfer.protocol import game_pb2
from twinfer.protocol.framing import FrameDecoder

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not hasattr(socket, "TCP_QUICKACK"), reason="TCP_QUICKACK is Linux's")]


def nagle_socket(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)  # Nagle on, as many client libraries leave it
    return sock


def test_an_http_request_in_two_writes_is_answered_without_the_delayed_ack(tmp_path, server_factory):
    server = server_factory(make_repository(tmp_path / "repo"), "--insecure-dev")
    body = json.dumps({"inputs": [{"name": "INPUT0", "shape": [1, 16], "datatype": "FP32",
                                   "data": [0.5] * 16}]}).encode()
    head = (b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body))
    sock = nagle_socket(server.ports["http"])
    times = []
    for _ in range(12):
        started = time.perf_counter()
        sock.sendall(head)
        sock.sendall(body)  # held by Nagle until the headers are acknowledged
        reply = b""
        while b"\r\n\r\n" not in reply:
            reply += sock.recv(65536)
        headers, rest = reply.split(b"\r\n\r\n", 1)
        assert headers.startswith(b"HTTP/1.1 200"), headers
        length = int(next(line for line in headers.split(b"\r\n") if line.lower().startswith(b"content-length"))
                     .split(b":")[1])
        while len(rest) < length:
            rest += sock.recv(65536)
        times.append(time.perf_counter() - started)
    sock.close()
    assert statistics.median(times) < 0.02, [round(t * 1e3, 1) for t in times]


def test_a_game_frame_in_two_writes_is_answered_without_the_delayed_ack(tmp_path, server_factory):
    server = server_factory(make_repository(tmp_path / "repo"), "--insecure-dev")
    sock = nagle_socket(server.tcp)
    decoder = FrameDecoder(max_body=1 << 20)
    times = []
    for request_id in range(1, 13):
        frame = messages.ping().build(request_id)
        started = time.perf_counter()
        sock.sendall(frame[:4])
        sock.sendall(frame[4:])  # held by Nagle until the first piece is acknowledged
        replies: list[bytes] = []
        while not replies:
            replies = [body for _, body in decoder.feed(sock.recv(65536))]
        times.append(time.perf_counter() - started)
        assert game_pb2.ServerMessage.FromString(replies[0]).request_id == request_id
    sock.close()
    assert statistics.median(times) < 0.02, [round(t * 1e3, 1) for t in times]
