"""The httptools-based HTTP protocol on StringTransport: keep-alive, pipelining order, limits, bad input, deadlines
(on a Clock), the process-wide body budget and the handler's head check."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from twinfer.errors import ModelNotFound, Unauthenticated
from twinfer.http.body_budget import BodyBudget
from twinfer.http.connection import HttpFactory, HttpRequest, HttpResponse, RequestLimits


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
        if request.path == "/bug":
            raise ZeroDivisionError("a handler bug")
        if request.path == "/late-missing":
            d = Deferred()
            self.pending[request.path] = d
            return d
        return HttpResponse(200, request.path.encode() + b"|" + request.body)


def connect(max_body: int = 1000, limits: RequestLimits | None = None, budget: BodyBudget | None = None,
            handler: Handler | None = None, clock: Clock | None = None):
    clock = clock or Clock()
    handler = handler or Handler()
    factory = HttpFactory(handler, clock, max_body, idle_timeout_s=100, limits=limits, budget=budget)
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


def test_handler_errors_raised_or_failed_are_answered_in_order_and_the_connection_goes_on():
    """The handler is called directly (no maybeDeferred): a synchronous raise, an untyped one and a failed Deferred
    each become their answer in the pipeline's order, and the next request on the connection is served."""
    proto, transport, handler, _ = connect()
    proto.dataReceived(get("/late-missing") + get("/bug") + get("/missing") + get("/after"))
    assert transport.value() == b""  # the first answer is not in yet: the later ones wait behind it
    handler.pending["/late-missing"].errback(ModelNotFound("gone later"))
    out = transport.value()
    answers = out.split(b"HTTP/1.1 ")[1:]
    assert [a.split(b"\r\n", 1)[0] for a in answers] == [b"404 Not Found", b"500 Internal Server Error",
                                                          b"404 Not Found", b"200 OK"]
    assert b'{"error": "gone later"}' in answers[0] and b'{"error": "internal server error"}' in answers[1]
    assert answers[3].endswith(b"/after|") and not transport.disconnecting


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
    clock.advance(101)
    assert not transport.disconnecting
    handler.pending["/slow/1"].callback(HttpResponse(200, b"ok"))
    clock.advance(101)
    assert transport.disconnecting


# --- deadlines (issue #14, finding 10) -----------------------------------------------------------------------------

LIMITS = RequestLimits(max_header_bytes=2048, max_url_bytes=512, header_timeout_s=10, body_timeout_s=30)


def test_headers_must_complete_within_the_header_timeout_of_the_first_byte():
    proto, transport, handler, clock = connect(limits=LIMITS)
    proto.dataReceived(b"GET /a HTTP/1.1\r\nX-Slow: ")
    for _ in range(9):  # one byte a second does not buy more time
        clock.advance(1)
        proto.dataReceived(b"v")
    assert transport.value() == b""
    clock.advance(1)
    out = transport.value()
    assert out.startswith(b"HTTP/1.1 408 Request Timeout") and b"headers" in out and transport.disconnecting
    assert handler.seen == []


def test_body_must_complete_within_the_body_timeout():
    proto, transport, handler, clock = connect(limits=LIMITS)
    proto.dataReceived(b"POST /a HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
    clock.advance(29)
    proto.dataReceived(b"de")
    assert transport.value() == b""
    clock.advance(1)
    assert transport.value().startswith(b"HTTP/1.1 408") and b"body" in transport.value() and transport.disconnecting
    assert handler.seen == []


def test_a_request_in_time_is_served_and_its_deadline_forgotten():
    proto, transport, handler, clock = connect(limits=LIMITS)
    proto.dataReceived(b"POST /a HTTP/1.1\r\nHost: t\r\n")
    clock.advance(9)
    proto.dataReceived(b"Content-Length: 2\r\n\r\n")
    clock.advance(29)
    proto.dataReceived(b"ok")
    clock.advance(60)
    assert transport.value().startswith(b"HTTP/1.1 200") and transport.value().endswith(b"/a|ok")
    assert not transport.disconnecting


def test_a_request_in_one_read_arms_no_timer():
    proto, transport, _, clock = connect(limits=LIMITS)
    before = len(clock.getDelayedCalls())  # the idle check
    proto.dataReceived(get("/a") * 3)
    assert len(clock.getDelayedCalls()) == before and transport.value().count(b"200 OK") == 3


# --- sizes of the request target and headers (finding 12) ----------------------------------------------------------

def test_long_url_arriving_in_pieces_gets_414():
    proto, transport, handler, _ = connect(limits=LIMITS)
    proto.dataReceived(b"GET /")
    for _ in range(8):
        proto.dataReceived(b"a" * 60)
    assert transport.value() == b""
    proto.dataReceived(b"a" * 60)
    assert transport.value().startswith(b"HTTP/1.1 414 URI Too Long") and transport.disconnecting
    assert handler.seen == []


def test_many_headers_get_431():
    proto, transport, handler, _ = connect(limits=LIMITS)
    proto.dataReceived(get("/a", b"".join(b"X-%d: %s\r\n" % (i, b"v" * 90) for i in range(30))))
    assert transport.value().startswith(b"HTTP/1.1 431 Request Header Fields Too Large") and transport.disconnecting
    assert handler.seen == []


def test_one_huge_header_streamed_in_small_reads_gets_431_within_one_read_of_the_cap():
    """httptools shows a header only once complete, so a never-ending value must be stopped by counting reads."""
    proto, transport, handler, _ = connect(limits=LIMITS)
    proto.dataReceived(b"GET /a HTTP/1.1\r\nX-Big: ")
    sent = 0
    while not transport.value():
        proto.dataReceived(b"v" * 100)
        sent += 100
        assert sent <= LIMITS.max_header_bytes + 100
    assert transport.value().startswith(b"HTTP/1.1 431") and transport.disconnecting and handler.seen == []


def test_headers_just_under_the_cap_pass():
    proto, transport, handler, _ = connect(limits=LIMITS)
    proto.dataReceived(b"GET /a HTTP/1.1\r\nHost: t\r\nX-Big: ")
    for _ in range(19):
        proto.dataReceived(b"v" * 100)
    proto.dataReceived(b"\r\n\r\n")
    assert transport.value().startswith(b"HTTP/1.1 200") and len(handler.seen[0].headers[b"x-big"]) == 1900


# --- the process-wide body budget (finding 13) ---------------------------------------------------------------------

def test_bodies_share_one_budget_and_give_it_back():
    budget = BodyBudget(100)
    clock = Clock()
    handler = Handler()
    a, ta, _, _ = connect(budget=budget, handler=handler, clock=clock)
    b, tb, _, _ = connect(budget=budget, handler=handler, clock=clock)
    a.dataReceived(b"POST /slow/a HTTP/1.1\r\nHost: t\r\nContent-Length: 90\r\n\r\n" + b"x" * 80)
    assert budget.held == 80
    b.dataReceived(b"POST /b HTTP/1.1\r\nHost: t\r\nContent-Length: 30\r\n\r\n" + b"y" * 30)
    assert tb.value().startswith(b"HTTP/1.1 503") and tb.disconnecting and budget.held == 80
    a.dataReceived(b"x" * 10)
    assert budget.held == 90  # the request is being served: its body is still held
    assert a._body == [] and a._request is None  # but the connection keeps no reference to it
    handler.pending["/slow/a"].callback(HttpResponse(200, b"done"))
    assert budget.held == 0 and ta.value().endswith(b"done")


def test_a_dropped_connection_gives_its_partial_body_back():
    budget = BodyBudget(1000)
    proto, _, _, _ = connect(budget=budget)
    proto.dataReceived(b"POST /a HTTP/1.1\r\nHost: t\r\nContent-Length: 500\r\n\r\n" + b"x" * 300)
    assert budget.held == 300
    proto.connectionLost(None)
    assert budget.held == 0


def test_a_refused_request_gives_its_partial_body_back():
    budget = BodyBudget(1000)
    proto, transport, _, clock = connect(budget=budget, limits=LIMITS)
    proto.dataReceived(b"POST /a HTTP/1.1\r\nHost: t\r\nContent-Length: 500\r\n\r\n" + b"x" * 300)
    clock.advance(31)
    assert transport.value().startswith(b"HTTP/1.1 408") and budget.held == 0


# --- the handler's head check runs before any body byte is buffered ------------------------------------------------

class CheckingHandler(Handler):
    def check_head(self, request: HttpRequest) -> None:
        if request.headers.get(b"authorization") != b"Bearer ok":
            raise Unauthenticated("a token is required")


def test_head_check_refuses_before_the_body_is_read():
    budget = BodyBudget(10_000)
    handler = CheckingHandler()
    proto, transport, _, _ = connect(budget=budget, handler=handler)
    proto.dataReceived(b"POST /a HTTP/1.1\r\nHost: t\r\nContent-Length: 900\r\n\r\n" + b"x" * 500)
    assert transport.value().startswith(b"HTTP/1.1 401") and transport.disconnecting
    assert handler.seen == [] and budget.held == 0
    proto, transport, _, _ = connect(handler=handler)
    proto.dataReceived(b"POST /a HTTP/1.1\r\nAuthorization: Bearer ok\r\nContent-Length: 2\r\n\r\nhi")
    assert transport.value().endswith(b"/a|hi")


def test_a_large_declared_body_is_reserved_whole_and_received_in_place():
    from twinfer.http.connection import MAPPED_BODY_BYTES

    size = MAPPED_BODY_BYTES + 10
    budget = BodyBudget(size * 2 - 1)
    clock = Clock()
    handler = Handler()
    a, ta, _, _ = connect(max_body=size * 4, budget=budget, handler=handler, clock=clock)
    head = b"POST /slow/big HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % size
    a.dataReceived(head + b"a" * 1000)
    assert budget.held == size  # the whole declared body, at once
    b, tb, _, _ = connect(max_body=size * 4, budget=budget, handler=handler, clock=clock)
    b.dataReceived(head)
    assert tb.value().startswith(b"HTTP/1.1 503") and budget.held == size  # refused before any body byte
    data = bytes(range(256)) * ((size - 1000) // 256) + b"z" * ((size - 1000) % 256)
    for i in range(0, len(data), 65536):
        a.dataReceived(data[i:i + 65536])
    request = handler.seen[0]
    assert request.body_size == size and request.body == b"a" * 1000 + data
    assert len(request.body_chunks) == 1 and isinstance(request.body_chunks[0], (bytes, memoryview))
    handler.pending["/slow/big"].callback(HttpResponse(200, b"ok"))
    assert budget.held == 0
    c, _, _, _ = connect(max_body=size * 4, budget=budget, handler=handler, clock=clock)
    c.dataReceived(head + b"x" * 5000)
    assert budget.held == size
    c.connectionLost(None)
    assert budget.held == 0 and c._mapped is None


def test_every_status_goes_out_with_its_reason_phrase():
    """The config server's 201, 304, 412 and 507 went out as `507 Unknown` (issue #17's leftover)."""
    class Statuses:
        def __call__(self, request: HttpRequest) -> HttpResponse:
            return HttpResponse(int(request.path.strip("/")), b"")

    proto, transport, _, _ = connect(handler=Statuses())
    phrases = {201: b"Created", 304: b"Not Modified", 412: b"Precondition Failed", 507: b"Insufficient Storage",
               200: b"OK", 503: b"Service Unavailable"}
    for status in phrases:
        proto.dataReceived(get(f"/{status}"))
    lines = [line for line in transport.value().split(b"\r\n") if line.startswith(b"HTTP/1.1 ")]
    assert lines == [b"HTTP/1.1 %d %s" % (status, phrase) for status, phrase in phrases.items()]


def test_nothing_after_a_closing_request_is_processed():
    """RFC 9112 9.6: after a request with `Connection: close` the server must not process further requests. Before,
    a request pipelined behind it ran (an inference, its answer thrown away) or got a 400 before the close."""
    for split in (False, True):
        proto, transport, handler, _ = connect()
        first, second = get("/slow/1", b"Connection: close\r\n"), get("/a")
        if split:
            proto.dataReceived(first)
            proto.dataReceived(second)
        else:
            proto.dataReceived(first + second)
        assert [r.path for r in handler.seen] == ["/slow/1"]
        handler.pending["/slow/1"].callback(HttpResponse(200, b"done"))
        answer = transport.value()
        assert answer.count(b"HTTP/1.1 ") == 1 and answer.endswith(b"done")
        assert b"Connection: close" in answer and transport.disconnecting
    proto, transport, handler, _ = connect()  # HTTP/1.0 without keep-alive closes the same way
    proto.dataReceived(b"GET /x HTTP/1.0\r\n\r\n" + get("/b"))
    assert [r.path for r in handler.seen] == ["/x"] and transport.value().count(b"HTTP/1.1 ") == 1
