"""Issue #17 finding 8 (decided, documented in the README): `Expect: 100-continue` is not answered with an interim
100; a client that sends its body at once, or after its own wait (curl waits 1 s), gets its answer. This pins the
part that must hold whatever the HTTP connection code becomes: the body is read and the request answered."""

from __future__ import annotations

import json
import socket

import pytest

from tests.support import make_repository

pytestmark = pytest.mark.e2e


def test_a_request_with_expect_100_continue_is_answered(tmp_path, server_factory):
    server = server_factory(make_repository(tmp_path / "repo"), "--insecure-dev")
    body = json.dumps({"inputs": [{"name": "INPUT0", "shape": [1, 16], "datatype": "FP32",
                                   "data": [1.0] * 16}]}).encode()
    head = (f"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", server.ports["http"]), timeout=10) as sock:
        sock.sendall(head + body)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    final = reply.split(b"HTTP/1.1 100 Continue\r\n\r\n", 1)[-1]  # an interim 100, should it ever be sent
    assert final.startswith(b"HTTP/1.1 200"), reply[:200]
    outputs = json.loads(final.split(b"\r\n\r\n", 1)[1])["outputs"]
    assert outputs[0]["name"] == "OUTPUT0" and len(outputs[0]["data"]) == 16
