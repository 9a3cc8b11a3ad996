"""HTTP/1.1 on a plain Twisted Protocol, parsed by httptools.

twisted.web serves a no-op KServe endpoint at about 6,200 req/s on the 2-core dev machine; this protocol serves the
same at about 42,000 (DESIGN §2), which leaves room for the model. It does only what an inference API needs:
keep-alive, pipelining (responses leave in request order even when inferences finish out of order), an idle
timeout, and limits a hostile client cannot talk its way past (issue #14): a body size limit enforced from
Content-Length before the body is read, caps on the request target (414) and the header block (431), deadlines for
the headers and the body of each request (408), a process-wide budget for buffered bodies (503), and the handler's
`check_head` (authentication, per-route size rules) before any body byte is buffered.
"""

from __future__ import annotations

import json
import mmap
from collections import deque
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from typing import Protocol as TypingProtocol

import httptools
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IHandshakeListener, IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from zope.interface import implementer
from twisted.python.failure import Failure

from twinfer.backpressure import ReadPauser, read_pauser_for
from twinfer.fastwrite import write_now
from twinfer.tcp_ack import ack_now
from twinfer.errors import TwinferError
from twinfer.http.body_budget import BodyBudget
from twinfer.http.errors import status_for

log = Logger()

# Every registered status with its phrase (the config server's 201, 304, 412 and 507 went out as "Unknown"), in
# RFC 9110's wording where Python's table still has RFC 2616's.
REASONS = {status.value: status.phrase.encode("ascii") for status in HTTPStatus} | {
    413: b"Content Too Large", 414: b"URI Too Long", 416: b"Range Not Satisfiable", 422: b"Unprocessable Content"}

_IDLE, _HEAD, _BODY = 0, 1, 2  # where the parser is in the current request
MAPPED_BODY_BYTES = 1024 * 1024  # declared bodies this large are received into an mmap (taken from the budget whole)


@dataclass(frozen=True, slots=True)
class RequestLimits:
    """Per-request limits besides the body size (defaults = the settings' defaults)."""

    max_header_bytes: int = 64 * 1024  # request target + header names and values
    max_url_bytes: int = 8 * 1024
    header_timeout_s: float = 10.0  # from the request's first byte to the end of its headers
    body_timeout_s: float = 60.0  # from the end of the headers to the end of the body


class HttpRequest:
    """One request. Its body is held as received: small ones as the chunks read (joined on first use of `body`),
    large ones in one anonymous mmap filled as they arrive. `body_chunks` hands them on without a copy (the join
    cost 9 ms per 7 MB here: fresh pages), and an mmap goes back to the system the moment it is freed, where 200 MB
    of 64 KB heap chunks stayed in the process after their requests (issue #14 finding 13)."""

    __slots__ = ("method", "path", "query", "headers", "_body", "_chunks", "body_size")

    def __init__(self, method: str, path: str, query: str, headers: dict[bytes, bytes], body: bytes = b"") -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body

    @property
    def body(self) -> bytes:
        if self._chunks is not None:
            chunks = self._chunks
            self._body = chunks[0] if len(chunks) == 1 and isinstance(chunks[0], bytes) else b"".join(chunks)
            self._chunks = None
        return self._body

    @body.setter
    def body(self, value: bytes) -> None:
        self._body, self._chunks, self.body_size = value, None, len(value)

    @property
    def body_chunks(self) -> list[bytes | memoryview]:
        """The body as bytes-like pieces, without a copy (for handlers that take memoryviews)."""
        return self._chunks if self._chunks is not None else [self._body]

    def set_chunks(self, chunks: list[bytes | memoryview], size: int) -> None:
        self._body, self._chunks, self.body_size = b"", chunks, size


@dataclass(slots=True)
class HttpResponse:
    status: int = 200
    body: bytes = b""
    content_type: bytes = b"application/json"
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


class Handler(TypingProtocol):
    def __call__(self, request: HttpRequest) -> HttpResponse | Deferred[HttpResponse]: ...


def error_response(error: BaseException) -> HttpResponse:
    message = error.message if isinstance(error, TwinferError) else "internal server error"
    return HttpResponse(status_for(error), json.dumps({"error": message}).encode())


class _Refused(Exception):
    """Raised inside an httptools callback to stop parsing; the connection answers `status` and closes."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _NoMoreRequests(Exception):
    """Raised from httptools' callback when a request follows one that closes the connection."""


class _Slot:
    __slots__ = ("response", "keep_alive")

    def __init__(self, keep_alive: bool) -> None:
        self.response: HttpResponse | None = None
        self.keep_alive = keep_alive


@implementer(IHandshakeListener)
class HttpConnection(Protocol):
    def __init__(self, factory: HttpFactory) -> None:
        self.factory = factory
        self._parser = httptools.HttpRequestParser(self)
        self._clock: IReactorTime = factory.clock
        self._limits = factory.limits
        self._budget = factory.budget
        self._check_head = getattr(factory.handler, "check_head", None)
        self._slots: deque[_Slot] = deque()
        self._closing = False
        self._last_request_in = False  # a request asked to close: nothing after it is read (RFC 9112 9.6)
        self._lost = False
        self._refusal: _Refused | None = None
        self._reset()
        self._last_seen = 0.0
        self._idle_call: IDelayedCall | None = None
        self._phase = _IDLE
        self._phase_deadline = 0.0
        self._deadline_call: IDelayedCall | None = None
        self._began_in_this_read = False

    def _reset(self) -> None:
        """Forget the last request: its URL, headers and body chunks must not stay alive with the connection."""
        self._url: list[bytes] = []
        self._url_size = 0
        self._head_size = 0
        self._head_reads = 0  # bytes of later reads that ended still inside the header block
        self._headers: dict[bytes, bytes] = {}
        self._request: HttpRequest | None = None
        self._body: list[bytes] = []
        self._body_size = 0
        self._held = 0  # bytes of this request's body taken from the budget
        self._mapped: mmap.mmap | None = None  # a large declared body, filled in place

    # --- lifecycle ----------------------------------------------------------------------------------------------

    def connectionMade(self) -> None:
        if hasattr(self.transport, "setTcpNoDelay"):
            self.transport.setTcpNoDelay(True)  # small RPC answers: never wait for Nagle
        self.factory.connections += 1
        self._pauser = read_pauser_for(self.transport)
        self._last_seen = self._clock.seconds()
        self._idle_call = self._clock.callLater(self.factory.idle_timeout_s, self._check_idle)

    def handshakeCompleted(self) -> None:
        """TLS only: now the read pauser can be registered (see backpressure.HandshakePending)."""
        if not self._lost and not self._pauser.registered:
            self._pauser = ReadPauser(self.transport)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self._closing = True
        self._lost = True
        self.factory.connections -= 1
        self._give_back_partial_body()
        for call in (self._idle_call, self._deadline_call):
            if call is not None and call.active():
                call.cancel()
        self._idle_call = self._deadline_call = None

    def _check_idle(self) -> None:
        self._idle_call = None
        silent = self._clock.seconds() - self._last_seen
        if silent >= self.factory.idle_timeout_s and not self._slots:
            self.transport.loseConnection()
        else:
            wait = max(self.factory.idle_timeout_s - silent, 0.1)
            self._idle_call = self._clock.callLater(wait, self._check_idle)

    def dataReceived(self, data: bytes) -> None:
        if self._closing or self._last_request_in:
            return
        self._now = now = self._clock.seconds()
        self._last_seen = now
        self._began_in_this_read = False
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail_connection(400, "protocol upgrades are not supported")
            return
        except httptools.HttpParserError as exc:
            if self._last_request_in:  # our _NoMoreRequests, or llhttp's own "data after Connection: close"
                return  # what followed the closing request is dropped unread; its answer closes the connection
            refusal, self._refusal = self._refusal, None
            if refusal is not None:
                self._fail_connection(refusal.status, refusal.message)
            else:
                self._fail_connection(400, f"malformed HTTP request: {exc}")
            return
        if self._phase == _HEAD and not self._began_in_this_read:
            # httptools shows a header only once it is complete (and joins its pieces itself), so a header still
            # arriving is counted by whole reads: a read that ends inside the header block is header bytes.
            self._head_reads += len(data)
            if self._head_reads > self._limits.max_header_bytes:
                self._fail_connection(431, f"request headers larger than {self._limits.max_header_bytes} bytes")
                return
        if self._phase != _IDLE:
            ack_now(self.transport)  # a request spans reads: let a Nagle client send the rest (tcp_ack)
            self._arm_deadline(now)

    # --- deadlines ----------------------------------------------------------------------------------------------

    def _arm_deadline(self, now: float) -> None:
        """One timer per connection, armed only when a request spans reads (a request in one read costs none)."""
        call = self._deadline_call
        if call is None:
            self._deadline_call = self._clock.callLater(max(self._phase_deadline - now, 0.0), self._deadline_passed)
        elif call.getTime() > self._phase_deadline:
            call.reset(max(self._phase_deadline - now, 0.0))

    def _deadline_passed(self) -> None:
        self._deadline_call = None
        if self._phase == _IDLE or self._closing:
            return
        now = self._clock.seconds()
        if now < self._phase_deadline:
            self._arm_deadline(now)
            return
        if self._phase == _HEAD:
            self._fail_connection(408, f"request headers not received within {self._limits.header_timeout_s} s")
        else:
            self._fail_connection(408, f"request body not received within {self._limits.body_timeout_s} s")

    def _fail_connection(self, status: int, message: str) -> None:
        """Answer once, then close: the byte stream can no longer be trusted to find the next request."""
        self._give_back_partial_body()
        self._reset()
        self._phase = _IDLE
        slot = _Slot(keep_alive=False)
        slot.response = HttpResponse(status, json.dumps({"error": message}).encode())
        self._slots.append(slot)
        self._flush()
        self._closing = True

    def _refuse(self, status: int, message: str) -> None:
        self._refusal = _Refused(status, message)
        raise self._refusal  # httptools stops parsing and raises HttpParserCallbackError

    # --- httptools callbacks ------------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._last_request_in:
            raise _NoMoreRequests  # stops httptools inside this read's bytes
        self._reset()
        self._phase = _HEAD
        self._phase_deadline = self._now + self._limits.header_timeout_s
        self._began_in_this_read = True

    def on_url(self, url: bytes) -> None:
        self._url.append(url)  # a list: a URL arriving in many reads is joined once, not copied per read
        self._url_size += len(url)
        if self._url_size > self._limits.max_url_bytes:
            self._refuse(414, f"request target longer than {self._limits.max_url_bytes} bytes")
        self._head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.lower()] = value
        self._head_size += len(name) + len(value) + 4
        if self._head_size > self._limits.max_header_bytes:
            self._refuse(431, f"request headers larger than {self._limits.max_header_bytes} bytes")

    def on_headers_complete(self) -> None:
        self._phase = _BODY
        self._phase_deadline = self._now + self._limits.body_timeout_s
        length = self._headers.get(b"content-length")
        declared = int(length) if length is not None and length.isdigit() else 0
        if declared > self.factory.max_body_bytes:
            self._refuse(413, f"body larger than {self.factory.max_body_bytes} bytes")
        try:
            parsed = httptools.parse_url(b"".join(self._url))
        except httptools.HttpParserInvalidURLError:
            self._refuse(400, "malformed request target")
        self._url = []
        request = HttpRequest(
            method=self._parser.get_method().decode("ascii"),
            path=parsed.path.decode("latin-1"),
            query=(parsed.query or b"").decode("latin-1"),
            headers=self._headers,
            body=b"",
        )
        if self._check_head is not None:
            try:
                self._check_head(request)
            except TwinferError as exc:
                self._refuse(status_for(exc), exc.message)
        if declared >= MAPPED_BODY_BYTES:
            if not self._budget.take(declared):
                self._refuse(503, "the server holds too many request bodies right now; retry later")
            self._held = declared
            self._mapped = mmap.mmap(-1, declared)
        self._request = request

    def on_body(self, body: bytes) -> None:
        size = len(body)
        mapped = self._mapped
        if mapped is not None:  # reserved in full from Content-Length, which httptools holds the body to
            mapped[self._body_size : self._body_size + size] = body
            self._body_size += size
            return
        self._body_size += size
        if self._body_size > self.factory.max_body_bytes:
            self._refuse(413, f"body larger than {self.factory.max_body_bytes} bytes")
        if not self._budget.take(size):
            self._refuse(503, "the server holds too many request bodies right now; retry later")
        self._held += size
        self._body.append(body)

    def on_message_complete(self) -> None:
        request, held = self._request, self._held
        assert request is not None
        heap = self._mapped is None
        if self._mapped is not None:
            request.set_chunks([memoryview(self._mapped)], self._body_size)
            self._mapped = None
        else:
            request.set_chunks(self._body, self._body_size)
        self._body, self._held, self._request = [], 0, None
        self._phase = _IDLE
        slot = _Slot(self._parser.should_keep_alive())
        self._slots.append(slot)
        if not slot.keep_alive:
            self._last_request_in = True
        try:
            answer = self.factory.handler(request)
        except Exception:  # noqa: BLE001 - the handler's error (typed or not) is this request's answer
            self._respond_failed(Failure(), slot, held, heap)
            return
        if isinstance(answer, Deferred):
            answer.addCallbacks(self._respond, self._respond_failed, callbackArgs=(slot, held, heap),
                                errbackArgs=(slot, held, heap))
        else:
            self._respond(answer, slot, held, heap)

    def _give_back_partial_body(self) -> None:
        if self._held:
            self._budget.give_back(self._held, heap=self._mapped is None)
            self._held = 0
        self._body = []
        if self._mapped is not None:
            self._mapped.close()  # nothing else refers to it yet: unmapped now
            self._mapped = None

    # --- responses in request order ----------------------------------------------------------------------------

    def _handler_failed(self, failure: Failure) -> HttpResponse:
        if not isinstance(failure.value, TwinferError):
            log.failure("HTTP handler failed", failure)
        return error_response(failure.value)

    def _respond_failed(self, failure: Failure, slot: _Slot, held: int, heap: bool) -> None:
        self._respond(self._handler_failed(failure), slot, held, heap)

    def _respond(self, response: HttpResponse, slot: _Slot, held: int, heap: bool) -> None:
        if held:
            self._budget.give_back(held, heap)  # the request is answered: its body is no longer ours to hold
        slot.response = response
        self._flush()

    def _flush(self) -> None:
        while self._slots and self._slots[0].response is not None:
            slot = self._slots.popleft()
            if self._lost:
                continue
            # sent at once when nothing is queued (twinfer.fastwrite): A/B, perf_analyzer HTTP c=8, interleaved
            # rounds: 151 vs 167 us of server CPU a request at the same rate (5,652 vs 5,614 infer/s)
            write_now(self.transport, _serialize(slot.response, slot.keep_alive))
            if not slot.keep_alive:
                self._closing = True
                self._slots.clear()
                self.transport.loseConnection()
                return


def _serialize(response: HttpResponse, keep_alive: bool) -> bytes:
    head = [
        b"HTTP/1.1 %d %s\r\n" % (response.status, REASONS.get(response.status, b"Unknown")),
        b"Content-Type: %s\r\n" % response.content_type,
        b"Content-Length: %d\r\n" % len(response.body),
    ]
    for name, value in response.headers:
        head.append(b"%s: %s\r\n" % (name, value))
    if not keep_alive:
        head.append(b"Connection: close\r\n")
    head.append(b"\r\n")
    return b"".join(head) + response.body


class HttpFactory(Factory):
    noisy = False  # no log line per connection

    def __init__(self, handler: Any, clock: IReactorTime, max_body_bytes: int, idle_timeout_s: float, *,
                 limits: RequestLimits | None = None, budget: BodyBudget | None = None) -> None:
        """`budget` is shared by every factory of the process that should count against one limit."""
        self.handler = handler
        self.clock = clock
        self.max_body_bytes = max_body_bytes
        self.idle_timeout_s = idle_timeout_s
        self.limits = limits or RequestLimits()
        self.budget = budget if budget is not None else BodyBudget(max_body_bytes * 64)
        self.connections = 0

    def buildProtocol(self, addr):  # type: ignore[override]
        return HttpConnection(self)
