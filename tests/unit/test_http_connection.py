"""The httptools-based HTTP protocol on StringTransport: keep-alive, pipelining order, limits, bad input."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from twinfer.errors import ModelNotFound
from twinfer.http.connection import HttpFactory, HttpRequest, HttpResponse


class Handler:
    def __init__(self) -> None:
        self.pending: dict[str, Deferred] = {}
        self.seen: list[HttpRequest] = []

    def __call__(self, request: HttpRequest):
        self.seen.append(request)
        if request.path.startswith("/slow/"):
            d: Deferred = Deferred()
            self.pending[request.path] = d
            return d
        if request.path == "/missing":
            raise ModelNotFound("unknown model 'x'")
        return HttpResponse(200, request.path.encode() + b"|" + request.body)


def connect(max_body: int = 1000):
    clock = Clock()
    handler = Handler()
    factory = HttpFactory(handler, clock, max_body, idle_timeout_s=5)
    proto = factory.buildProtocol(None)
    transport = StringTransport()
    proto.makeConnection(transport)
    return proto, transport, handler, clock


def get(path: str, extra: bytes = b"") -> bytes:
    return b"GET " + path.encode() + b" HTTP/1.1\r\nHost: t\r\n" + extra + b"\r\n"


def test_keep_alive_and_body():
    proto, transport, handler, _ = connect()
    proto.dataReceived(b"POST /a?q=1 HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc")
    out = transport.value()
    assert out.startswith(b"HTTP/1.1 200 OK\r\n") and out.endswith(b"\r\n\r\n/a|abc")
    assert handler.seen[0].query == "q=1" and not transport.disconnecting


def test_pipelined_responses_leave_in_request_order():
    proto, transport, handler, _ = connect()
    proto.dataReceived(get("/slow/1") + get("/fast") + get("/slow/2"))
    assert transport.value() == b""
    handler.pending["/slow/2"].callback(HttpResponse(200, b"two"))
    assert transport.value() == b""
    handler.pending["/slow/1"].callback(HttpResponse(200, b"one"))
    out = transport.value()
    assert out.index(b"one") < out.index(b"/fast|") < out.index(b"two")


def test_typed_errors_become_json_with_their_status():
    proto, transport, _, _ = connect()
    proto.dataReceived(get("/missing"))
    out = transport.value()
    assert out.startswith(b"HTTP/1.1 404 Not Found") and out.endswith(b'{"error": "unknown model \'x\'"}')


def test_declared_oversized_body_is_refused_before_reading_it():
    proto, transport, handler, _ = connect(max_body=10)
    proto.dataReceived(b"POST /a HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\n")
    assert transport.value().startswith(b"HTTP/1.1 413") and transport.disconnecting and handler.seen == []


def test_chunked_body_over_the_limit_is_refused():
    proto, transport, handler, _ = connect(max_body=10)
    proto.dataReceived(b"POST /a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n" + b"x" * 16)
    assert transport.value().startswith(b"HTTP/1.1 413") and transport.disconnecting and handler.seen == []


def test_garbage_gets_400_and_close():
    proto, transport, _, _ = connect()
    proto.dataReceived(b"\x16\x03\x01 not http at all\r\n\r\n")
    assert transport.value().startswith(b"HTTP/1.1 400") and transport.disconnecting


def test_connection_close_is_honoured():
    proto, transport, _, _ = connect()
    proto.dataReceived(get("/a", b"Connection: close\r\n"))
    assert b"Connection: close" in transport.value() and transport.disconnecting


def test_idle_connection_is_closed_but_not_while_a_request_runs():
    proto, transport, handler, clock = connect()
    proto.dataReceived(get("/slow/1"))
    clock.advance(6)
    assert not transport.disconnecting
    handler.pending["/slow/1"].callback(HttpResponse(200, b"ok"))
    clock.advance(6)
    assert transport.disconnecting
