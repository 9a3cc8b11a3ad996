"""The KServe v2 gRPC service on twinfer's own HTTP/2 connection (twinfer.http2), on the reactor thread.

Why not grpcio's server: measured with perf_analyzer (gRPC, tiny model, c=8, 2 cores shared with the load tool),
grpcio's aio server on this reactor spent 343 us of the reactor thread per request, 80 % of it inside grpcio's
call machinery (a task per call, completion-queue events handed from grpcio's poller thread), against 165 us for
the same request over HTTP/1.1: gRPC served half of HTTP's rate and half of Triton's. Here a call costs what the
HTTP path costs. grpcio's server stays available (`grpc_server: grpcio`).

What a call does, as grpcio's server did (tests/e2e run tritonclient's gRPC clients against both):
- credentials and the admin check: `CallGuard.check`, the one policy of every transport;
- a message that is not the method's protobuf: INVALID_ARGUMENT; a TwinferError: its status (twinfer.grpc.errors);
  anything else: INTERNAL with a fixed message, logged once with its traceback;
- messages up to `max_message_bytes` (RESOURCE_EXHAUSTED past it, before it is buffered), and every buffered
  message taken from the process-wide body budget shared with HTTP (RESOURCE_EXHAUSTED when it is spent);
- `grpc-timeout` (the client's deadline): DEADLINE_EXCEEDED when it passes; a unary request whose message is not
  complete within `body_timeout_s` is ended the same way (a slow client cannot hold its budget);
- compressed requests (`grpc-encoding` gzip or deflate, as tritonclient's `compression_algorithm` sends) are
  inflated up to `max_message_bytes` (a zip bomb stops there), large ones off the reactor thread; answers are sent
  uncompressed, which every client accepts;
- `ModelStreamInfer`: up to `stream_max_inflight` requests run at once; past that, and while answers wait for the
  client to read them, the stream's flow-control window is not given back, so the client waits, and memory is
  bounded; errors travel in the stream; the open-stream cap holds process-wide (OpenStreamLimit).
"""

from __future__ import annotations

import struct
import zlib
from collections import deque
from collections.abc import Callable
from typing import Any

from google.protobuf.message import DecodeError, Message
from tritonclient.grpc import service_pb2 as pb
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from twinfer.errors import InvalidInput, Overloaded, TwinferError
from twinfer.grpc.errors import status_for
from twinfer.grpc.guard import MAX_MESSAGE_CHARS, CallGuard
from twinfer.grpc.infer_codec import decode_request, encode_response
from twinfer.grpc.service import UNARY_METHODS, KServeGrpcService, _check_name
from twinfer.grpc.streams import (
    OpenStreamLimit,
    error_answer,
    stream_item_answer,
    stream_response,
    wants_final_flag,
)
from twinfer.http.body_budget import BodyBudget
from twinfer.inference.response_stream import StreamItem
from twinfer.inference.types import InferenceResult
from twinfer.http2.connection import Http2Stream
from twinfer.http2.frames import encode_headers

log = Logger()

SERVICE = "/inference.GRPCInferenceService/"
PREFIX = struct.Struct(">BI")
OK, CANCELLED, UNKNOWN, INVALID_ARGUMENT, DEADLINE_EXCEEDED = 0, 1, 2, 3, 4
RESOURCE_EXHAUSTED, UNIMPLEMENTED, INTERNAL = 8, 12, 13
RESPONSE_HEADERS = [(b":status", b"200"), (b"content-type", b"application/grpc"),
                    (b"grpc-accept-encoding", b"identity, deflate, gzip")]
# Compressed requests (tritonclient's compression_algorithm): zlib's window bits for each grpc-encoding
ENCODINGS = {b"gzip": 16 + zlib.MAX_WBITS, b"deflate": zlib.MAX_WBITS}
INLINE_INFLATE_BYTES = 256 * 1024  # compressed messages larger than this are inflated off the reactor thread
OK_TRAILERS = [(b"grpc-status", b"0")]
RESPONSE_HEADER_BLOCK = encode_headers(RESPONSE_HEADERS)
OK_TRAILER_BLOCK = encode_headers(OK_TRAILERS)
BODY_DEADLINE_SWEEP_S = 1.0  # how often unary calls whose request has not fully arrived are checked
STREAM_PENDING_LIMIT = 4 * 1024 * 1024  # answers of one stream waiting for the client to read them

# method -> (request message class, streaming); the handlers are KServeGrpcService's methods of the same name
METHODS: dict[str, tuple[type[Message], bool]] = {
    SERVICE + "ModelInfer": (pb.ModelInferRequest, False),
    SERVICE + "ModelStreamInfer": (pb.ModelInferRequest, True),
    SERVICE + "ServerLive": (pb.ServerLiveRequest, False),
    SERVICE + "ServerReady": (pb.ServerReadyRequest, False),
    SERVICE + "ModelReady": (pb.ModelReadyRequest, False),
    SERVICE + "ServerMetadata": (pb.ServerMetadataRequest, False),
    SERVICE + "ModelMetadata": (pb.ModelMetadataRequest, False),
    SERVICE + "ModelConfig": (pb.ModelConfigRequest, False),
    SERVICE + "ModelStatistics": (pb.ModelStatisticsRequest, False),
    SERVICE + "RepositoryIndex": (pb.RepositoryIndexRequest, False),
    SERVICE + "RepositoryModelLoad": (pb.RepositoryModelLoadRequest, False),
    SERVICE + "RepositoryModelUnload": (pb.RepositoryModelUnloadRequest, False),
}
PLAIN_NAMES = {SERVICE + rpc: plain for rpc, plain in UNARY_METHODS.items()}
TIMEOUT_UNITS = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}


def grpc_timeout(value: bytes) -> float | None:
    """`grpc-timeout` (up to 8 digits and a unit) in seconds; None when malformed (then it is ignored)."""
    digits, unit = value[:-1], value[-1:]
    if not digits.isdigit() or len(digits) > 8 or unit not in TIMEOUT_UNITS:
        return None
    return int(digits) * TIMEOUT_UNITS[unit]


class _StreamRelay:
    """Relays one decoupled request's responses into its call, one at a time, and pauses while the client has
    STREAM_PENDING_LIMIT bytes of answers unread (the model's sends then wait in its ResponseStream)."""

    __slots__ = ("call", "result", "request_id", "flag_final")

    def __init__(self, call: GrpcCall, result: InferenceResult, request_id: str, flag_final: bool) -> None:
        self.call = call
        self.result = result  # its `stream` is where the responses come from
        self.request_id = request_id
        self.flag_final = flag_final

    def pull(self) -> None:
        call = self.call
        if call.done:
            return
        if call.stream.pending_bytes >= STREAM_PENDING_LIMIT:
            call._paused.append(self)
            return
        self.result.stream.next().addCallback(self._got)

    def _got(self, item: StreamItem) -> None:
        call = self.call
        if call.done:
            return
        try:
            answer = stream_item_answer(self.request_id, self.result, item, self.flag_final)
        except BaseException as exc:  # noqa: BLE001 - an output that cannot be encoded fails that response
            answer = error_answer(self.request_id, exc)
        if answer is not None:
            call._send_answer(answer)
        if item.final:
            call._relays.discard(self)
            call._request_done()
            return
        self.pull()


def percent_encode(message: str) -> bytes:
    """`grpc-message` is percent-encoded UTF-8 (gRPC over HTTP/2: bytes outside 0x20-0x7E, and '%')."""
    out = bytearray()
    for byte in message.encode("utf-8", "replace"):
        if 0x20 <= byte <= 0x7E and byte != 0x25:
            out.append(byte)
        else:
            out += b"%%%02X" % byte
    return bytes(out)


def _fits(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE_CHARS else message[:MAX_MESSAGE_CHARS] + "..."


def _run_in_place(fn: Callable[..., Any], *args: Any) -> Deferred:
    try:
        return succeed(fn(*args))
    except BaseException:  # noqa: BLE001 - as a thread's failure would arrive
        return fail()


class NativeGrpcServer:
    """Opens a `GrpcCall` for each HTTP/2 stream; holds what every call shares."""

    def __init__(self, service: KServeGrpcService, guard: CallGuard, clock: IReactorTime, budget: BodyBudget, *,
                 max_message_bytes: int, body_timeout_s: float = 60.0,
                 run_io: Callable[..., Deferred] | None = None) -> None:
        """`run_io(fn, *args)` runs blocking work (inflating a large compressed message) off the reactor thread;
        None runs it in place (tests)."""
        self.service = service
        self.facade = service.facade
        self.guard = guard
        self.clock = clock
        self.budget = budget
        self.max_message_bytes = max_message_bytes
        self.body_timeout_s = body_timeout_s
        self.run_io = run_io or _run_in_place
        self.calls = 0
        # Unary calls still reading their request, with the time they started: one sweep a second ends those
        # past body_timeout_s (a timer per call cost ~10 us of every call's ~150)
        self.reading: dict[GrpcCall, float] = {}
        self._sweep = LoopingCall(self._sweep_slow_bodies)
        self._sweep.clock = clock

    def _sweep_slow_bodies(self) -> None:
        cutoff = self.clock.seconds() - self.body_timeout_s
        for call, started in list(self.reading.items()):
            if started <= cutoff:
                call.body_deadline_passed()
        if not self.reading:
            self._sweep.stop()

    def reading_started(self, call: GrpcCall) -> None:
        self.reading[call] = self.clock.seconds()
        if not self._sweep.running:
            self._sweep.start(BODY_DEADLINE_SWEEP_S, now=False)

    def stop(self) -> None:
        if self._sweep.running:
            self._sweep.stop()

    def open_stream(self, stream: Http2Stream) -> GrpcCall | None:
        headers = dict(stream.headers)
        path = headers.get(b":path", b"").decode("latin-1")
        if headers.get(b":method") != b"POST" or not headers.get(b"content-type", b"").startswith(
                b"application/grpc"):
            stream.send_headers([(b":status", b"415"), (b"content-type", b"text/plain")], end_stream=True)
            return None
        call = GrpcCall(self, stream, path, headers)
        self.calls += 1
        call.start()
        return call


class GrpcCall:
    """One gRPC call on one HTTP/2 stream (the stream's handler)."""

    __slots__ = ("server", "stream", "method", "headers", "done", "_buffer", "_expected", "_held", "_messages",
                 "_request_ended", "_timer", "_streaming", "_inflight", "_unconsumed", "_open_stream_counted",
                 "_request_class", "_request_id", "_pumping", "_pump_again", "_compressed", "_inflate_later",
                 "_relays", "_paused")

    def __init__(self, server: NativeGrpcServer, stream: Http2Stream, method: str,
                 headers: dict[bytes, bytes]) -> None:
        self.server = server
        self.stream = stream
        self.method = method
        self.headers = headers
        self.done = False
        self._buffer = bytearray()
        self._expected = -1            # the body size of the message being read, once its prefix is in
        self._held = 0                 # bytes taken from the body budget for this call
        self._messages: deque[bytes] = deque()
        self._request_ended = False
        self._timer: IDelayedCall | None = None
        self._streaming = False
        self._inflight = 0
        self._unconsumed = 0           # streaming: bytes read but not yet given back to the client's window
        self._open_stream_counted = False
        self._request_class: type[Message] = pb.ModelInferRequest
        self._request_id = ""
        self._pumping = self._pump_again = False
        self._compressed = self._inflate_later = False
        self._relays: set[_StreamRelay] = set()   # decoupled requests whose responses are still coming
        self._paused: list[_StreamRelay] = []     # ... waiting for the client to read what was sent

    # --- start: method, credentials, deadline ---------------------------------------------------------------------

    def start(self) -> None:
        spec = METHODS.get(self.method)
        if spec is None:
            self.finish(UNIMPLEMENTED, f"unknown method {self.method[:200]}")
            return
        self._request_class, self._streaming = spec
        authorization = self.headers.get(b"authorization")
        try:
            self.server.guard.check(self.method, [("authorization", authorization.decode("latin-1"))]
                                    if authorization is not None else [])
            if self._streaming:
                self.server.service.open_streams.enter()
                self._open_stream_counted = True
        except TwinferError as exc:
            self.finish(status_for(exc).value[0], exc.message)
            return
        timeout = self.headers.get(b"grpc-timeout")
        seconds = grpc_timeout(timeout) if timeout is not None else None
        if seconds is not None:
            self._timer = self.server.clock.callLater(seconds, self._deadline_passed)
        if self._streaming:
            self.stream.send_headers(RESPONSE_HEADERS)
        else:
            self.server.reading_started(self)

    def _deadline_passed(self) -> None:
        self._timer = None
        if not self.done:
            self.finish(DEADLINE_EXCEEDED, "deadline exceeded")

    def body_deadline_passed(self) -> None:
        """The request's message did not arrive within body_timeout_s."""
        self.server.reading.pop(self, None)
        if not self.done:
            self.finish(DEADLINE_EXCEEDED, f"the request did not arrive within {self.server.body_timeout_s:g} s "
                        "(body_timeout_s)")

    # --- reading (StreamHandler) -------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.done:
            return
        buffer = self._buffer
        buffer += data
        if not self._streaming:
            self.stream.consumed(len(data))
        else:
            self._unconsumed += len(data)
        while not self.done:
            if self._expected < 0:
                if len(buffer) < 5:
                    break
                compressed, size = PREFIX.unpack_from(buffer)
                if compressed and self.headers.get(b"grpc-encoding") not in ENCODINGS:
                    self.finish(UNIMPLEMENTED, "a compressed message needs grpc-encoding gzip or deflate "
                                f"(got {self.headers.get(b'grpc-encoding', b'none').decode('latin-1')[:40]})")
                    return
                if compressed and self._streaming and size > INLINE_INFLATE_BYTES:
                    self.finish(RESOURCE_EXHAUSTED, f"compressed ModelStreamInfer messages are limited to "
                                f"{INLINE_INFLATE_BYTES} bytes; send larger ones uncompressed")
                    return
                self._compressed = bool(compressed)
                if size > self.server.max_message_bytes:
                    self.finish(RESOURCE_EXHAUSTED, f"received message larger than max ({size} vs. "
                                f"{self.server.max_message_bytes})")
                    return
                if not self._streaming and (self._messages or self._request_ended):
                    self.finish(UNIMPLEMENTED, f"{self.method} takes one request message")
                    return
                if not self.server.budget.take(size):
                    self.finish(RESOURCE_EXHAUSTED, "the server is holding too many request bodies; retry later")
                    return
                self._held += size
                self._expected = size
                del buffer[:5]
            if len(buffer) < self._expected:
                break
            message = bytes(buffer[:self._expected])
            del buffer[:self._expected]
            self._expected = -1
            if self._compressed and (self._streaming or len(message) <= INLINE_INFLATE_BYTES):
                message = self._inflate_or_finish(message)
                if message is None:
                    return
            elif self._compressed:  # a large unary message: inflated on a thread when the request ends
                self._inflate_later = True
            self._messages.append(message)
        if self._streaming:
            self._pump()

    def end_of_stream(self) -> None:
        self._request_ended = True
        if self.done:
            return
        if self._expected >= 0 or self._buffer:
            self.finish(INTERNAL, "the request ended inside a message")
            return
        if self._streaming:
            self._pump()
            return
        if len(self._messages) != 1:
            self.finish(UNIMPLEMENTED, f"{self.method} takes one request message, got {len(self._messages)}")
            return
        self.server.reading.pop(self, None)
        message = self._messages.popleft()
        if self._inflate_later:
            d = self.server.run_io(self._inflate, message)
            d.addCallbacks(self._inflated_later, self._failed, callbackArgs=(len(message),))
            return
        self._unary(message)

    def reset(self) -> None:
        """The client cancelled (RST_STREAM) or the connection is gone."""
        self._end()

    # --- compressed messages ---------------------------------------------------------------------------------

    def _inflate(self, data: bytes) -> bytes:
        """Inflate a gzip/deflate message to at most max_message_bytes (a zip bomb stops there)."""
        limit = self.server.max_message_bytes
        inflater = zlib.decompressobj(ENCODINGS[self.headers[b"grpc-encoding"]])
        try:
            out = inflater.decompress(data, limit + 1)
        except zlib.error as exc:
            raise InvalidInput(f"compressed message does not inflate: {exc}") from None
        if len(out) > limit or inflater.unconsumed_tail:
            raise Overloaded(f"received message larger than max (over {limit} bytes once inflated)")
        if not inflater.eof:
            raise InvalidInput("compressed message is truncated")
        return out

    def _take_inflated(self, compressed: int, inflated: bytes) -> bool:
        """The inflated bytes count against the body budget too."""
        extra = max(len(inflated) - compressed, 0)
        if not self.server.budget.take(extra):
            self.finish(RESOURCE_EXHAUSTED, "the server is holding too many request bodies; retry later")
            return False
        self._held += extra
        return True

    def _inflate_or_finish(self, data: bytes) -> bytes | None:
        try:
            out = self._inflate(data)
        except TwinferError as exc:
            self.finish(status_for(exc).value[0], exc.message)
            return None
        return out if self._take_inflated(len(data), out) else None

    def _inflated_later(self, out: bytes, size: int) -> None:
        if not self.done and self._take_inflated(size, out):
            self._unary(out)

    # --- unary calls ---------------------------------------------------------------------------------------------

    def _decode(self, message: bytes) -> Message:
        try:
            return self._request_class.FromString(message)
        except (DecodeError, ValueError, TypeError) as exc:
            raise InvalidInput(f"request is not a valid protobuf message ({type(exc).__name__})") from None

    def _unary(self, message: bytes) -> None:
        try:
            request = self._decode(message)
            self._give_back()
            if self.method == SERVICE + "ModelInfer":
                # the hot path: one Deferred (the facade's) and no asyncio task or coroutine
                self._request_id = request.id
                self._infer(request).addCallbacks(self._inferred, self._failed)
                return
            answer = getattr(self.server.service, PLAIN_NAMES[self.method])(request)
        except BaseException as exc:  # noqa: BLE001 - every error becomes a status
            self._failed(Failure(exc))
            return
        if isinstance(answer, Deferred):
            answer.addCallbacks(self._answered, self._failed)
        else:
            self._answered(answer)

    def _infer(self, request: pb.ModelInferRequest, streaming: bool = False) -> Deferred[InferenceResult]:
        facade = self.server.facade
        inference = decode_request(request, facade.element_budget())
        _check_name(inference.model)
        return facade.infer(inference, streaming)

    def _inferred(self, result: InferenceResult) -> None:
        try:
            response = encode_response(self._request_id, result)
        except BaseException as exc:  # noqa: BLE001
            self._failed(Failure(exc))
            return
        self._answered(response)

    def _answered(self, response: Message) -> None:
        if self.done:
            return
        body = response.SerializeToString()
        self._end()
        self.stream.send_response(RESPONSE_HEADER_BLOCK, PREFIX.pack(0, len(body)) + body, OK_TRAILER_BLOCK)

    def _failed(self, failure: Failure) -> None:
        if self.done:
            return
        error = failure.value
        if isinstance(error, TwinferError):
            self.finish(status_for(error).value[0], error.message)
            return
        log.failure("gRPC {method} failed", failure=failure, method=self.method)
        self.finish(INTERNAL, "internal server error")

    # --- ModelStreamInfer ----------------------------------------------------------------------------------------

    def _pump(self) -> None:
        """Start what the stream's slots allow; give the client window back for what was started; end the call
        when the client has half-closed and every answer is out. Answers that come at once (errors found before
        any work) re-enter here: they only mark the loop to go round again, so thousands of them queued in one
        window cannot recurse."""
        if self._pumping:
            self._pump_again = True
            return
        self._pumping = True
        try:
            self._pump_again = True
            while self._pump_again:
                self._pump_again = False
                self._pump_once()
        finally:
            self._pumping = False

    def _pump_once(self) -> None:
        limit = self.server.service.stream_max_inflight
        while self._messages and self._inflight < limit and not self.done:
            message = self._messages.popleft()
            self._give_back(len(message))
            self._inflight += 1
            self._stream_one(message)
        if (self._unconsumed and self._inflight < limit and not self.done
                and self.stream.pending_bytes < STREAM_PENDING_LIMIT):
            self.stream.consumed(self._unconsumed)
            self._unconsumed = 0
        if self._request_ended and not self._messages and not self._inflight and not self.done:
            self._end()
            self.stream.send_trailers(OK_TRAILERS)

    def _stream_one(self, message: bytes) -> None:
        request_id, flag_final = "", False
        try:
            request = self._decode(message)
            request_id, flag_final = request.id, wants_final_flag(request)
            d = self._infer(request, streaming=True)
        except BaseException as exc:  # noqa: BLE001 - errors travel in the stream
            d = fail(Failure(exc))
        d.addCallbacks(self._streamed, lambda failure: self._stream_answer(error_answer(request_id, failure.value)),
                       callbackArgs=(request_id, flag_final))

    def _streamed(self, result: InferenceResult, request_id: str, flag_final: bool) -> None:
        if result.stream is None:
            try:
                answer = stream_response(request_id, result, True if flag_final else None)
            except BaseException as exc:  # noqa: BLE001 - an output that cannot be encoded fails this request
                answer = error_answer(request_id, exc)
            self._stream_answer(answer)
            return
        relay = _StreamRelay(self, result, request_id, flag_final)
        if self.done:
            relay.result.stream.cancel()
            return
        self._relays.add(relay)
        relay.pull()

    def _stream_answer(self, answer: pb.ModelStreamInferResponse) -> None:
        """A request's one (or last) answer: it gives its slot back."""
        self._send_answer(answer)
        self._request_done()

    def _send_answer(self, answer: pb.ModelStreamInferResponse) -> None:
        if self.done:
            return
        body = answer.SerializeToString()
        self.stream.send_data(PREFIX.pack(0, len(body)) + body)

    def _request_done(self) -> None:
        self._inflight -= 1
        if not self.done:
            self._pump()

    def drained(self) -> None:
        """The stream's queued answers have left (flow control): read on, relay on."""
        if self._streaming and not self.done:
            paused, self._paused = self._paused, []
            for relay in paused:
                relay.pull()
            self._pump()

    # --- ending ----------------------------------------------------------------------------------------------------

    def finish(self, code: int, message: str = "") -> None:
        """End the call with a status; before any answer this is a trailers-only response."""
        if self.done:
            return
        self._end()
        trailers = [(b"grpc-status", str(code).encode())]
        if message:
            trailers.append((b"grpc-message", percent_encode(_fits(message))))
        if self.stream.headers_sent:
            self.stream.send_trailers(trailers)
        else:
            self.stream.send_headers([*RESPONSE_HEADERS[:2], *trailers], end_stream=True)

    def _end(self) -> None:
        if self.done:
            return
        self.done = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self.server.reading.pop(self, None)
        self._give_back()
        self._messages.clear()
        self._buffer = bytearray()
        if self._open_stream_counted:
            self._open_stream_counted = False
            self.server.service.open_streams.leave()
        relays, self._relays, self._paused = self._relays, set(), []
        for relay in relays:  # the client went away: the models' next sends fail (Triton's is_cancelled)
            relay.result.stream.cancel()

    def _give_back(self, size: int | None = None) -> None:
        size = self._held if size is None else min(size, self._held)
        if size:
            self._held -= size
            self.server.budget.give_back(size)
