"""An HTTP/2 server connection on a plain Twisted Protocol: frames, streams, flow control and the limits a hostile
client cannot talk its way past. What a stream carries is the handler's business (twinfer.grpc.native_server).

Why not the `h2` library: it is correct and well kept, but its state machines cost ~170 us of CPU per unary
request on this machine (a no-op gRPC call, measured in process), more than grpcio's whole aio server costs, so
a front-end on it could not beat grpcio. This connection does what a gRPC server needs and nothing else: no
server push, no priorities, no HTTP/1 upgrade (gRPC clients speak HTTP/2 from the first byte, or negotiate it by
ALPN under TLS), and costs ~15 us per unary call.

Limits (each a test in tests/unit/test_http2_connection.py):
- frames up to MAX_FRAME_SIZE (advertised); header blocks (with CONTINUATION) up to `max_header_bytes`, decoded
  with the same cap on the header list; a larger one is a connection error, before anything is allocated for it;
- `max_concurrent_streams` open streams per connection (advertised); past it a stream is refused (REFUSED_STREAM),
  its headers still decoded so the HPACK state stays in step;
- flow control both ways: a client cannot send more than the windows we granted (FLOW_CONTROL_ERROR), and what
  we send waits for the client's window instead of piling up past it;
- floods of control frames (PING, SETTINGS, RST_STREAM: CVE-2023-44487 "rapid reset", empty frames) are counted
  per second and answered with GOAWAY(ENHANCE_YOUR_CALM);
- a client that stops reading: the transport's write buffer pauses our reading (backpressure.ReadPauser);
- an idle connection (no open stream for `idle_timeout_s`) gets GOAWAY and is closed.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol as TypingProtocol

from twisted.internet.interfaces import IDelayedCall, IHandshakeListener, IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from twinfer.backpressure import ReadPauser, read_pauser_for
from twinfer.http2 import frames as f
from twinfer.fastwrite import write_now

log = Logger()

MAX_FRAME_SIZE = 256 * 1024         # what we accept (advertised); clients split larger DATA
STREAM_WINDOW = 4 * 1024 * 1024     # what each stream may send before we acknowledge (advertised)
CONNECTION_WINDOW = 16 * 1024 * 1024
CONTROL_FRAMES_PER_SECOND = 500     # PING, SETTINGS, RST_STREAM, PRIORITY, empty DATA/CONTINUATION, unknown types


class ConnectionError_(Exception):  # noqa: N801 - not the builtin ConnectionError
    """A connection error (RFC 9113 5.4.1): GOAWAY with `code`, then close."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class StreamHandler(TypingProtocol):
    """What the application attaches to each stream (twinfer.grpc.native_server.GrpcCall)."""

    def data_received(self, data: bytes) -> None: ...

    def end_of_stream(self) -> None: ...

    def reset(self) -> None: ...


class Http2Stream:
    """One request stream. The handler reads with `data_received`/`end_of_stream`, gives flow-control credit back
    with `consumed`, and answers with `send_headers`, `send_data` and `send_trailers` (in that order)."""

    __slots__ = ("connection", "stream_id", "headers", "handler", "send_window", "recv_window", "_pending",
                 "_unacked", "remote_closed", "local_closed", "headers_sent", "pending_bytes")

    def __init__(self, connection: Http2Connection, stream_id: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.connection = connection
        self.stream_id = stream_id
        self.headers = headers
        self.handler: StreamHandler | None = None
        self.send_window = connection.peer_initial_window
        self.recv_window = STREAM_WINDOW  # what the client may still send before our next WINDOW_UPDATE
        self._pending: deque[tuple[bytes | memoryview, bool, bytes | None]] = deque()  # (data, end, trailers)
        self.pending_bytes = 0
        self._unacked = 0
        self.remote_closed = False
        self.local_closed = False
        self.headers_sent = False

    # --- reading -------------------------------------------------------------------------------------------------

    def consumed(self, size: int) -> None:
        """The handler has taken `size` bytes: the client may send that much more on this stream."""
        if self.remote_closed or self.local_closed:
            return
        self._unacked += size
        if self._unacked >= STREAM_WINDOW // 2:
            self.connection.write(f.window_update(self.stream_id, self._unacked))
            self.recv_window += self._unacked
            self._unacked = 0

    # --- writing -------------------------------------------------------------------------------------------------

    def send_headers(self, headers: list[tuple[bytes, bytes]], end_stream: bool = False) -> None:
        if self.local_closed:
            return
        self.headers_sent = True
        if end_stream:
            self.local_closed = True
        self.connection.send_header_block(self.stream_id, f.encode_headers(headers), end_stream)
        if end_stream:
            self.connection.stream_done(self)

    def send_data(self, data: bytes | memoryview, trailers: list[tuple[bytes, bytes]] | None = None) -> None:
        """`data`, then (if given) the trailers that end the stream, each as flow control allows."""
        if self.local_closed:
            return
        block = f.encode_headers(trailers) if trailers is not None else None
        if trailers is not None:
            self.local_closed = True
        self._pending.append((data, False, block))
        self.pending_bytes += len(data)
        self.flush()

    def send_trailers(self, trailers: list[tuple[bytes, bytes]]) -> None:
        self.send_data(b"", trailers)

    def send_response(self, header_block: bytes, data: bytes, trailer_block: bytes) -> None:
        """A whole response (headers, one DATA frame, trailers) in one write when the windows allow it, the
        common case of a unary call; otherwise the general path. The blocks are already HPACK-encoded."""
        connection = self.connection
        size = len(data)
        if (self.local_closed or self._pending or size > self.send_window or size > connection.send_window
                or size > connection.peer_max_frame or len(header_block) > connection.peer_max_frame
                or len(trailer_block) > connection.peer_max_frame):
            if not self.local_closed:
                self.headers_sent = True
                connection.send_header_block(self.stream_id, header_block, False)
                self.local_closed = True
                self._pending.append((data, False, trailer_block))
                self.pending_bytes += size
                self.flush()
            return
        self.headers_sent = self.local_closed = True
        self.send_window -= size
        connection.send_window -= size
        sid = self.stream_id
        connection.write_sequence([
            f.frame_header(f.HEADERS, f.FLAG_END_HEADERS, sid, len(header_block)), header_block,
            f.frame_header(f.DATA, 0, sid, size), data,
            f.frame_header(f.HEADERS, f.FLAG_END_HEADERS | f.FLAG_END_STREAM, sid, len(trailer_block)), trailer_block,
        ])
        connection.stream_done(self)

    def flush(self) -> None:
        """Send what the windows allow; the rest waits for WINDOW_UPDATE."""
        connection = self.connection
        while self._pending:
            data, _, block = self._pending[0]
            while data:
                room = min(self.send_window, connection.send_window, connection.peer_max_frame)
                if room <= 0:
                    self._pending[0] = (data, False, block)
                    connection.blocked[self.stream_id] = self
                    return
                chunk, data = data[:room], data[room:]
                self.send_window -= len(chunk)
                connection.send_window -= len(chunk)
                self.pending_bytes -= len(chunk)
                connection.write_sequence([f.frame_header(f.DATA, 0, self.stream_id, len(chunk)), chunk])
            self._pending.popleft()
            if block is not None:
                connection.send_header_block(self.stream_id, block, True)
                connection.stream_done(self)
                return
        drained = getattr(self.handler, "drained", None)
        if drained is not None:
            drained()

    def reset_stream(self, code: int) -> None:
        """Abandon the stream (RST_STREAM `code`): nothing more is read or sent."""
        if self.remote_closed and self.local_closed and not self._pending:
            return
        self.remote_closed = self.local_closed = True
        self._pending.clear()
        self.pending_bytes = 0
        self.connection.write(f.rst_stream(self.stream_id, code))
        self.connection.stream_done(self)

    @property
    def has_pending(self) -> bool:
        return bool(self._pending)


class Http2Factory(Factory):
    """Shared by a listener's connections: the handler that opens streams, limits, and the open connections."""

    noisy = False  # no log line per connection

    def __init__(self, open_stream: Callable[[Http2Stream], StreamHandler | None], clock: IReactorTime, *,
                 max_concurrent_streams: int = 1024, max_header_bytes: int = 16 * 1024,
                 idle_timeout_s: float = 60.0) -> None:
        self.open_stream = open_stream
        self.clock = clock
        self.max_concurrent_streams = max_concurrent_streams
        self.max_header_bytes = max_header_bytes
        self.idle_timeout_s = idle_timeout_s
        self.connections: set[Http2Connection] = set()

    def buildProtocol(self, addr: Any) -> Http2Connection:  # type: ignore[override]
        protocol = Http2Connection(self)
        protocol.factory = self
        return protocol

    def go_away_all(self) -> None:
        """Shutdown: every connection is told to open no new stream; each closes once its streams are done."""
        for connection in list(self.connections):
            connection.go_away(f.NO_ERROR)


@implementer(IHandshakeListener)
class Http2Connection(Protocol):
    def __init__(self, factory: Http2Factory) -> None:
        self.factory = factory
        self._clock = factory.clock
        self._buffer = bytearray()
        self._preface_seen = False
        self._settings_seen = False
        self._decoder = f.HeaderBlockDecoder(factory.max_header_bytes)
        self.streams: dict[int, Http2Stream] = {}
        self.blocked: dict[int, Http2Stream] = {}  # streams with data waiting for flow-control window
        self._last_stream_id = 0
        self._continuation: tuple[int, int, bytearray] | None = None  # (stream id, HEADERS flags, block so far)
        self.send_window = f.DEFAULT_WINDOW
        self.peer_initial_window = f.DEFAULT_WINDOW
        self.peer_max_frame = f.DEFAULT_MAX_FRAME
        self._recv_unacked = 0
        self._control_frames = 0
        self._control_window_start = 0.0
        self._going_away = False              # no new streams: we or the client sent GOAWAY
        self._goaway_sent: int | None = None  # the code of the GOAWAY we sent
        self._closed = False
        self._closing = False
        self._idle_call: IDelayedCall | None = None
        self._last_active = 0.0
        self._pauser: Any = None

    # --- lifecycle -----------------------------------------------------------------------------------------------

    def connectionMade(self) -> None:
        if hasattr(self.transport, "setTcpNoDelay"):
            self.transport.setTcpNoDelay(True)
        self.factory.connections.add(self)
        self._pauser = read_pauser_for(self.transport)
        self._last_active = self._clock.seconds()
        self._idle_call = self._clock.callLater(self.factory.idle_timeout_s, self._check_idle)
        self.write(f.settings_frame({
            f.SETTINGS_MAX_CONCURRENT_STREAMS: self.factory.max_concurrent_streams,
            f.SETTINGS_INITIAL_WINDOW_SIZE: STREAM_WINDOW,
            f.SETTINGS_MAX_FRAME_SIZE: MAX_FRAME_SIZE,
            f.SETTINGS_MAX_HEADER_LIST_SIZE: self.factory.max_header_bytes,
            f.SETTINGS_ENABLE_PUSH: 0,
        }) + f.window_update(0, CONNECTION_WINDOW - f.DEFAULT_WINDOW))

    def handshakeCompleted(self) -> None:
        if not self._closed and not self._pauser.registered:
            self._pauser = ReadPauser(self.transport)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self._closed = True
        self.factory.connections.discard(self)
        if self._idle_call is not None and self._idle_call.active():
            self._idle_call.cancel()
        self._idle_call = None
        streams, self.streams = list(self.streams.values()), {}
        for stream in streams:
            stream.local_closed = True
            if stream.handler is not None:
                stream.handler.reset()

    def _check_idle(self) -> None:
        self._idle_call = None
        if self._closed:
            return
        quiet = self._clock.seconds() - self._last_active
        if not self.streams and quiet >= self.factory.idle_timeout_s:
            self.go_away(f.NO_ERROR)
            return
        self._idle_call = self._clock.callLater(max(self.factory.idle_timeout_s - quiet, 0.1), self._check_idle)

    def go_away(self, code: int, debug: str = "") -> None:
        if self._closed:
            return
        self._going_away = True
        # ours is sent once, and again if an error follows a graceful one (RFC 9113 6.8); a GOAWAY from the
        # client does not count as ours
        if self._goaway_sent is None or (self._goaway_sent == f.NO_ERROR and code != f.NO_ERROR):
            self._goaway_sent = code
            self.write(f.goaway(self._last_stream_id, code, debug.encode()[:256]))
        if code != f.NO_ERROR or not self.streams:
            self._close()

    def _close(self) -> None:
        self._closing = True  # frames still in the buffer are not looked at
        if self._pauser is not None:
            self._pauser.unregister()
        self.transport.loseConnection()

    # --- writing -------------------------------------------------------------------------------------------------

    # Frames go out at once when nothing is queued on the transport (twinfer.fastwrite) instead of waiting for the
    # next loop turn: several calls share one connection, so each turn an answer waits holds up the client's next
    # request. A/B, perf_analyzer gRPC c=8, 3 interleaved rounds: 7,168-8,099 vs 5,332-5,521 infer/s, 134 vs 176 us
    # of server CPU a request (no epoll_ctl pair and doWrite per answer); c=32 equal (9,942 vs 9,746).
    def write(self, data: bytes) -> None:
        if not self._closed:
            write_now(self.transport, data)

    def write_sequence(self, data: list[bytes | memoryview]) -> None:
        if not self._closed:
            write_now(self.transport, b"".join(data))

    def send_header_block(self, stream_id: int, block: bytes, end_stream: bool) -> None:
        flags = f.FLAG_END_STREAM if end_stream else 0
        limit = self.peer_max_frame
        if len(block) <= limit:
            self.write(f.frame(f.HEADERS, flags | f.FLAG_END_HEADERS, stream_id, block))
            return
        parts = [block[i:i + limit] for i in range(0, len(block), limit)]
        out = [f.frame(f.HEADERS, flags, stream_id, parts[0])]
        for i, part in enumerate(parts[1:], 1):
            out.append(f.frame(f.CONTINUATION, f.FLAG_END_HEADERS if i == len(parts) - 1 else 0, stream_id, part))
        self.write(b"".join(out))

    def stream_done(self, stream: Http2Stream) -> None:
        """Forget a stream once our side has finished it and everything queued has left. A client still sending
        is told to stop without an error (RST_STREAM NO_ERROR after a complete response, RFC 9113 8.1)."""
        if not stream.local_closed or stream.has_pending:
            return
        if self.streams.pop(stream.stream_id, None) is None:
            return
        if not stream.remote_closed:
            stream.remote_closed = True
            self.write(f.rst_stream(stream.stream_id, f.NO_ERROR))
        self._last_active = self._clock.seconds()
        if self._going_away and not self.streams:
            self.go_away(f.NO_ERROR)  # ours too (once), then close

    # --- reading -------------------------------------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._closed or self._closing:
            return
        buffer = self._buffer
        buffer += data
        try:
            if not self._preface_seen:
                if len(buffer) < len(f.PREFACE):
                    if not f.PREFACE.startswith(bytes(buffer)):
                        raise ConnectionError_(f.PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                    return
                if not buffer.startswith(f.PREFACE):
                    raise ConnectionError_(f.PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                del buffer[:len(f.PREFACE)]
                self._preface_seen = True
            offset, end = 0, len(buffer)
            header = f.FRAME_HEADER
            while end - offset >= 9 and not self._closing:
                high, low, kind, flags, stream_id = header.unpack_from(buffer, offset)
                size = (high << 8) | low
                if size > MAX_FRAME_SIZE:
                    raise ConnectionError_(f.FRAME_SIZE_ERROR, f"frame of {size} bytes (the limit is {MAX_FRAME_SIZE})")
                if end - offset < 9 + size:
                    break
                payload = bytes(buffer[offset + 9:offset + 9 + size])
                offset += 9 + size
                self._frame(kind, flags, stream_id & 0x7FFFFFFF, payload)
            del buffer[:offset]
        except ConnectionError_ as exc:
            self._buffer = bytearray()
            self.go_away(exc.code, str(exc))
        except f.HeaderBlockError as exc:
            self._buffer = bytearray()
            self.go_away(f.COMPRESSION_ERROR, f"header block: {exc}")

    def _control(self) -> None:
        now = self._clock.seconds()
        if now - self._control_window_start >= 1.0:
            self._control_window_start, self._control_frames = now, 0
        self._control_frames += 1
        if self._control_frames > CONTROL_FRAMES_PER_SECOND:
            raise ConnectionError_(f.ENHANCE_YOUR_CALM, "too many control frames")

    def _frame(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if self._continuation is not None and kind != f.CONTINUATION:
            raise ConnectionError_(f.PROTOCOL_ERROR, "header block interrupted before END_HEADERS")
        if not self._settings_seen:
            if kind != f.SETTINGS or flags & f.FLAG_ACK:
                raise ConnectionError_(f.PROTOCOL_ERROR, "the first frame must be SETTINGS")
            self._settings_seen = True
        if kind == f.DATA:
            self._data(flags, stream_id, payload)
        elif kind == f.HEADERS:
            self._headers(flags, stream_id, payload)
        elif kind == f.CONTINUATION:
            self._continue(flags, stream_id, payload)
        elif kind == f.WINDOW_UPDATE:
            self._window_update(stream_id, payload)
        elif kind == f.SETTINGS:
            self._settings(flags, stream_id, payload)
        elif kind == f.PING:
            self._control()
            if stream_id != 0 or len(payload) != 8:
                raise ConnectionError_(f.PROTOCOL_ERROR if stream_id else f.FRAME_SIZE_ERROR, "malformed PING")
            if not flags & f.FLAG_ACK:
                self.write(f.frame(f.PING, f.FLAG_ACK, 0, payload))
        elif kind == f.RST_STREAM:
            self._control()
            self._rst_stream(stream_id, payload)
        elif kind == f.GOAWAY:
            self._going_away = True
            if not self.streams:
                self.go_away(f.NO_ERROR)
        elif kind == f.PUSH_PROMISE:
            raise ConnectionError_(f.PROTOCOL_ERROR, "clients may not push")
        else:  # PRIORITY and frame types this server does not know: ignored (RFC 9113 4.1, 5.3.2)
            self._control()

    # --- frame types ---------------------------------------------------------------------------------------------

    @staticmethod
    def _strip_padding(flags: int, payload: bytes) -> bytes:
        if not flags & f.FLAG_PADDED:
            return payload
        if not payload or payload[0] >= len(payload):
            raise ConnectionError_(f.PROTOCOL_ERROR, "padding longer than the frame")
        return payload[1:len(payload) - payload[0]]

    def _data(self, flags: int, stream_id: int, payload: bytes) -> None:
        size = len(payload)
        if stream_id == 0:
            raise ConnectionError_(f.PROTOCOL_ERROR, "DATA on stream 0")
        if stream_id > self._last_stream_id:
            raise ConnectionError_(f.PROTOCOL_ERROR, "DATA on a stream never opened")
        self._recv_unacked += size
        if self._recv_unacked > CONNECTION_WINDOW:
            raise ConnectionError_(f.FLOW_CONTROL_ERROR, "the client sent past the connection window")
        if self._recv_unacked >= CONNECTION_WINDOW // 2:  # the connection window is for the streams to share
            self.write(f.window_update(0, self._recv_unacked))
            self._recv_unacked = 0
        if size == 0 and not flags & f.FLAG_END_STREAM:
            self._control()
        stream = self.streams.get(stream_id)
        if stream is None or stream.remote_closed:
            return  # a stream we reset or finished: its data is dropped (flow control was counted above)
        stream.recv_window -= size
        if stream.recv_window < 0:  # a stream error: this stream ends, the connection and its others go on
            stream.reset_stream(f.FLOW_CONTROL_ERROR)
            if stream.handler is not None:
                stream.handler.reset()
            return
        data = self._strip_padding(flags, payload)
        if data and stream.handler is not None:
            stream.handler.data_received(data)
        if size - len(data):  # padding counts against the window but reaches no handler: give it back now
            stream.consumed(size - len(data))
        if flags & f.FLAG_END_STREAM:
            self._remote_end(stream)

    def _remote_end(self, stream: Http2Stream) -> None:
        stream.remote_closed = True
        if stream.handler is not None and not stream.local_closed:
            stream.handler.end_of_stream()
        self.stream_done(stream)

    def _headers(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id == 0:
            raise ConnectionError_(f.PROTOCOL_ERROR, "HEADERS on stream 0")
        block = self._strip_padding(flags, payload)
        if flags & f.FLAG_PRIORITY:
            block = block[5:]
        if len(block) > self.factory.max_header_bytes:
            raise ConnectionError_(f.PROTOCOL_ERROR, f"header block over {self.factory.max_header_bytes} bytes")
        if flags & f.FLAG_END_HEADERS:
            self._header_block(stream_id, flags, block)
        else:
            self._continuation = (stream_id, flags, bytearray(block))

    def _continue(self, flags: int, stream_id: int, payload: bytes) -> None:
        if self._continuation is None or self._continuation[0] != stream_id:
            raise ConnectionError_(f.PROTOCOL_ERROR, "CONTINUATION without its HEADERS")
        if not payload and not flags & f.FLAG_END_HEADERS:
            self._control()
        _, first_flags, block = self._continuation
        block += payload
        if len(block) > self.factory.max_header_bytes:
            raise ConnectionError_(f.PROTOCOL_ERROR, f"header block over {self.factory.max_header_bytes} bytes")
        if flags & f.FLAG_END_HEADERS:
            self._continuation = None
            self._header_block(stream_id, first_flags, bytes(block))

    def _header_block(self, stream_id: int, flags: int, block: bytes) -> None:
        headers = self._decoder.decode(block)  # always: the HPACK state must follow every block
        self._last_active = self._clock.seconds()
        stream = self.streams.get(stream_id)
        if stream is not None:  # trailers from the client: they must end the stream
            if not flags & f.FLAG_END_STREAM:
                raise ConnectionError_(f.PROTOCOL_ERROR, "a second header block that does not end the stream")
            if not stream.remote_closed:
                self._remote_end(stream)
            return
        if stream_id % 2 == 0 or stream_id <= self._last_stream_id:
            raise ConnectionError_(f.PROTOCOL_ERROR, f"stream id {stream_id} is not a new client stream")
        self._last_stream_id = stream_id
        if self._going_away:
            self.write(f.rst_stream(stream_id, f.REFUSED_STREAM))
            return
        if len(self.streams) >= self.factory.max_concurrent_streams:
            self.write(f.rst_stream(stream_id, f.REFUSED_STREAM))
            return
        stream = Http2Stream(self, stream_id, headers)
        self.streams[stream_id] = stream
        stream.handler = self.factory.open_stream(stream)
        if flags & f.FLAG_END_STREAM and stream_id in self.streams:
            self._remote_end(stream)

    def _window_update(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise ConnectionError_(f.FRAME_SIZE_ERROR, "WINDOW_UPDATE of the wrong size")
        increment = struct.unpack(">I", payload)[0] & 0x7FFFFFFF
        if stream_id == 0:
            if increment == 0:
                raise ConnectionError_(f.PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            self.send_window += increment
            if self.send_window > f.MAX_WINDOW:
                raise ConnectionError_(f.FLOW_CONTROL_ERROR, "connection window over 2^31-1")
            blocked, self.blocked = self.blocked, {}
            for stream in blocked.values():  # only streams that wait for window (a dict keeps them in order)
                if stream.stream_id in self.streams:
                    stream.flush()
            return
        stream = self.streams.get(stream_id)
        if stream is None:
            return
        if increment == 0:
            stream.reset_stream(f.PROTOCOL_ERROR)
            return
        stream.send_window += increment
        if stream.send_window > f.MAX_WINDOW:
            stream.reset_stream(f.FLOW_CONTROL_ERROR)
            return
        stream.flush()

    def _settings(self, flags: int, stream_id: int, payload: bytes) -> None:
        self._control()
        if stream_id != 0:
            raise ConnectionError_(f.PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & f.FLAG_ACK:
            if payload:
                raise ConnectionError_(f.FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            return
        if len(payload) % 6:
            raise ConnectionError_(f.FRAME_SIZE_ERROR, "SETTINGS of the wrong size")
        for i in range(0, len(payload), 6):
            key, value = struct.unpack_from(">HI", payload, i)
            if key == f.SETTINGS_INITIAL_WINDOW_SIZE:
                if value > f.MAX_WINDOW:
                    raise ConnectionError_(f.FLOW_CONTROL_ERROR, "initial window over 2^31-1")
                delta, self.peer_initial_window = value - self.peer_initial_window, value
                for stream in self.streams.values():
                    stream.send_window += delta
            elif key == f.SETTINGS_MAX_FRAME_SIZE:
                if not f.DEFAULT_MAX_FRAME <= value <= 2**24 - 1:
                    raise ConnectionError_(f.PROTOCOL_ERROR, "MAX_FRAME_SIZE out of range")
                self.peer_max_frame = value
            elif key == f.SETTINGS_ENABLE_PUSH and value > 1:
                raise ConnectionError_(f.PROTOCOL_ERROR, "ENABLE_PUSH must be 0 or 1")
        self.write(f.frame(f.SETTINGS, f.FLAG_ACK, 0))
        blocked, self.blocked = self.blocked, {}
        for stream in blocked.values():
            if stream.stream_id in self.streams:
                stream.flush()

    def _rst_stream(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise ConnectionError_(f.FRAME_SIZE_ERROR, "RST_STREAM of the wrong size")
        if stream_id == 0 or stream_id > self._last_stream_id:
            raise ConnectionError_(f.PROTOCOL_ERROR, "RST_STREAM on a stream never opened")
        stream = self.streams.pop(stream_id, None)
        if stream is None:
            return
        stream.remote_closed = stream.local_closed = True
        stream._pending.clear()
        if stream.handler is not None:
            stream.handler.reset()
        if self._going_away and not self.streams:
            self.go_away(f.NO_ERROR)  # ours too (once), then close
