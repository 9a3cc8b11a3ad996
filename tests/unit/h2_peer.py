"""A test-side HTTP/2 client for the server connection: builds frames, reads back what the server wrote.

It shares nothing with the server's code but the frame-type numbers (RFC 9113 constants); header blocks are encoded
and decoded with `hpack` directly, the way a real client's library would.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import hpack
from twisted.internet.testing import MemoryReactorClock, StringTransport

from twinfer.http2 import frames as f

GRPC_HEADERS = [(":method", "POST"), (":scheme", "http"), (":authority", "127.0.0.1"), ("te", "trailers"),
                ("content-type", "application/grpc")]


@dataclass
class Frame:
    kind: int
    flags: int
    stream_id: int
    payload: bytes


@dataclass
class Response:
    headers: list[tuple[str, str]] = field(default_factory=list)
    data: bytes = b""
    trailers: list[tuple[str, str]] = field(default_factory=list)
    reset: int | None = None
    ended: bool = False

    def header(self, name: str) -> str | None:
        for key, value in self.headers + self.trailers:
            if key == name:
                return value
        return None

    @property
    def grpc_status(self) -> int | None:
        status = self.header("grpc-status")
        return int(status) if status is not None else None

    def messages(self) -> list[bytes]:
        out, data = [], self.data
        while data:
            _, size = struct.unpack(">BI", data[:5])
            out.append(data[5:5 + size])
            data = data[5 + size:]
        return out


class Peer:
    """Drives one server connection (a Protocol from the factory) over a StringTransport."""

    def __init__(self, factory, clock: MemoryReactorClock, handshake: bool = True) -> None:
        self.clock = clock
        self.protocol = factory.buildProtocol(None)
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.frames: list[Frame] = []
        self.responses: dict[int, Response] = {}
        self._unread = b""
        self.next_stream = 1
        if handshake:
            self.send(f.PREFACE + f.settings_frame({}))

    # --- sending ---

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def headers_frame(self, stream_id: int, headers: list[tuple[str, str]], end_stream: bool = False) -> bytes:
        flags = f.FLAG_END_HEADERS | (f.FLAG_END_STREAM if end_stream else 0)
        return f.frame(f.HEADERS, flags, stream_id, self.encoder.encode(headers))

    @staticmethod
    def grpc_message(body: bytes, compressed: bool = False) -> bytes:
        return struct.pack(">BI", 1 if compressed else 0, len(body)) + body

    def call(self, method: str, body: bytes | None, extra: list[tuple[str, str]] | None = None,
             end_stream: bool = True) -> int:
        """Open a stream for `method` ("/pkg.Service/Method") and send one message (None: none)."""
        stream_id = self.next_stream
        self.next_stream += 2
        headers = GRPC_HEADERS + [(":path", method)] + (extra or [])
        data = self.headers_frame(stream_id, headers, end_stream=body is None and end_stream)
        if body is not None:
            data += f.frame(f.DATA, f.FLAG_END_STREAM if end_stream else 0, stream_id, self.grpc_message(body))
        self.send(data)
        return stream_id

    # --- reading ---

    def read(self) -> list[Frame]:
        """Frames the server wrote since the last read (HEADERS/DATA also collected into `responses`)."""
        data = self._unread + self.transport.value()
        self.transport.clear()
        new = []
        while len(data) >= 9:
            high, low, kind, flags, stream_id = f.FRAME_HEADER.unpack_from(data)
            size = (high << 8) | low
            if len(data) < 9 + size:
                break
            frame = Frame(kind, flags, stream_id & 0x7FFFFFFF, data[9:9 + size])
            data = data[9 + size:]
            new.append(frame)
            self._collect(frame)
        self._unread = data
        self.frames += new
        return new

    def _collect(self, frame: Frame) -> None:
        if frame.stream_id == 0:
            return
        response = self.responses.setdefault(frame.stream_id, Response())
        if frame.kind == f.HEADERS:
            headers = [(k, v) for k, v in self.decoder.decode(frame.payload)]
            if response.headers:
                response.trailers = headers
            else:
                response.headers = headers
        elif frame.kind == f.DATA:
            response.data += frame.payload
        elif frame.kind == f.RST_STREAM:
            response.reset = struct.unpack(">I", frame.payload)[0]
        if frame.flags & f.FLAG_END_STREAM and frame.kind in (f.HEADERS, f.DATA):
            response.ended = True

    def response(self, stream_id: int) -> Response:
        self.read()
        return self.responses.get(stream_id, Response())

    def goaway(self) -> tuple[int, int] | None:
        """(last stream id, error code) of the server's GOAWAY, if it sent one."""
        self.read()
        for frame in self.frames:
            if frame.kind == f.GOAWAY:
                return struct.unpack(">II", frame.payload[:8])
        return None

    def of_kind(self, kind: int) -> list[Frame]:
        self.read()
        return [frame for frame in self.frames if frame.kind == kind]

    @property
    def closed(self) -> bool:
        return self.transport.disconnecting
