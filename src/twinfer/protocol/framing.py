"""Frames of the game protocol: a 6-byte big-endian header (uint32 body length, uint16 flags), then the body."""

from __future__ import annotations

import struct
from collections.abc import Iterator

from twinfer.errors import FrameTooLarge

HEADER = struct.Struct(">IH")
HEADER_SIZE = HEADER.size  # 6
KNOWN_FLAGS = 0x0000  # no flag bits are defined in version 1
DEFAULT_MAX_BODY = 16 * 1024 * 1024


def encode_frame(body: bytes, flags: int = 0) -> bytes:
    """One frame ready for the wire."""
    return HEADER.pack(len(body), flags) + body


class FrameDecoder:
    """Splits a byte stream into (flags, body) frames.

    The declared length is checked against `max_body` as soon as the 6 header bytes are in, before any body is
    buffered, so a peer declaring 2 GiB costs 6 bytes of memory: `feed` raises FrameTooLarge and the caller closes
    the connection. Buffered bytes never exceed one header plus `max_body`.
    """

    def __init__(self, max_body: int = DEFAULT_MAX_BODY) -> None:
        self.max_body = max_body
        self._buffer = bytearray()
        self._expected: int | None = None
        self._flags = 0
        self._headers = 0

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    @property
    def receiving_body(self) -> bool:
        """A frame's header has arrived and its body has not (yet) all arrived: the connection uses it to hold
        a body to a deadline, so a peer trickling one byte a second cannot keep a buffer alive forever."""
        return self._expected is not None

    @property
    def headers_seen(self) -> int:
        """Headers decoded so far; tells "still the same partial frame" from "a new one"."""
        return self._headers

    def feed(self, data: bytes) -> Iterator[tuple[int, bytes]]:
        """Add bytes; yield every complete frame they finish, in order."""
        self._buffer += data
        while True:
            if self._expected is None:
                if len(self._buffer) < HEADER_SIZE:
                    return
                length, flags = HEADER.unpack_from(self._buffer)
                if length > self.max_body:
                    self._buffer.clear()
                    raise FrameTooLarge(f"declared body of {length} bytes exceeds the limit of {self.max_body}")
                del self._buffer[:HEADER_SIZE]
                self._expected, self._flags = length, flags
                self._headers += 1
            if len(self._buffer) < self._expected:
                return
            body = bytes(self._buffer[: self._expected])
            del self._buffer[: self._expected]
            self._expected = None
            yield self._flags, body
