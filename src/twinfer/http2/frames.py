"""HTTP/2 wire constants, frame serialisation, and the header-block codec (RFC 9113, RFC 7541).

Header blocks are decoded by the `hpack` library (python-hyper's, the one `h2` uses). Decoding costs ~20 us a
block here, a tenth of a whole gRPC call, and gRPC clients send the same bytes for every call on a connection (all
indexed references once the first call has filled the dynamic table), so `HeaderBlockDecoder` remembers a block's
result while the dynamic table is unchanged: ~0.5 us. Our own header blocks use only literals without indexing
(RFC 7541 6.2.2), so the encoder keeps no state and the peer's table size settings cannot matter.
"""

from __future__ import annotations

import struct

import hpack

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
FRAME_HEADER = struct.Struct(">HBBBI")  # length as 16 + 8 bits, type, flags, stream id (R bit masked by the reader)

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)

FLAG_END_STREAM = 0x1
FLAG_ACK = 0x1
FLAG_END_HEADERS = 0x4
FLAG_PADDED = 0x8
FLAG_PRIORITY = 0x20

SETTINGS_HEADER_TABLE_SIZE = 0x1
SETTINGS_ENABLE_PUSH = 0x2
SETTINGS_MAX_CONCURRENT_STREAMS = 0x3
SETTINGS_INITIAL_WINDOW_SIZE = 0x4
SETTINGS_MAX_FRAME_SIZE = 0x5
SETTINGS_MAX_HEADER_LIST_SIZE = 0x6

# Error codes (RFC 9113 7).
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0x0, 0x1, 0x2, 0x3
STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL = 0x5, 0x6, 0x7, 0x8
COMPRESSION_ERROR, ENHANCE_YOUR_CALM = 0x9, 0xB

DEFAULT_WINDOW = 65535
DEFAULT_MAX_FRAME = 16384
MAX_WINDOW = 2**31 - 1


def frame(kind: int, flags: int, stream_id: int, payload: bytes | bytearray | memoryview = b"") -> bytes:
    size = len(payload)
    return FRAME_HEADER.pack(size >> 8, size & 0xFF, kind, flags, stream_id) + bytes(payload)


def frame_header(kind: int, flags: int, stream_id: int, size: int) -> bytes:
    return FRAME_HEADER.pack(size >> 8, size & 0xFF, kind, flags, stream_id)


def settings_frame(values: dict[int, int]) -> bytes:
    return frame(SETTINGS, 0, 0, b"".join(struct.pack(">HI", key, value) for key, value in values.items()))


def window_update(stream_id: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, stream_id, struct.pack(">I", increment))


def rst_stream(stream_id: int, code: int) -> bytes:
    return frame(RST_STREAM, 0, stream_id, struct.pack(">I", code))


def goaway(last_stream_id: int, code: int, debug: bytes = b"") -> bytes:
    return frame(GOAWAY, 0, 0, struct.pack(">II", last_stream_id, code) + debug[:256])


# --- header blocks ------------------------------------------------------------------------------------------------

def _integer(value: int, prefix_bits: int, first_byte: int) -> bytes:
    """RFC 7541 5.1: an integer with an N-bit prefix, OR-ed into `first_byte`'s high bits."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first_byte | value])
    out = bytearray([first_byte | limit])
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def literal(name: bytes, value: bytes) -> bytes:
    """One header as "literal without indexing, new name", no Huffman coding (RFC 7541 6.2.2)."""
    return b"\x00" + _integer(len(name), 7, 0) + name + _integer(len(value), 7, 0) + value


STATUS_200 = b"\x88"  # static table entry 8, ":status: 200" (RFC 7541 appendix A)


def encode_headers(headers: list[tuple[bytes, bytes]]) -> bytes:
    return b"".join(STATUS_200 if pair == (b":status", b"200") else literal(*pair) for pair in headers)


class HeaderBlockError(Exception):
    """A header block the decoder refused (COMPRESSION_ERROR: the connection's HPACK state is lost)."""


class HeaderBlockDecoder:
    """One connection's HPACK decoder, with a cache of blocks that left the dynamic table unchanged."""

    MAX_CACHED = 64

    def __init__(self, max_header_list_size: int) -> None:
        self._decoder = hpack.Decoder(max_header_list_size=max_header_list_size)
        self._table = self._decoder.header_table
        self._cache: dict[bytes, list[tuple[bytes, bytes]]] = {}
        self._state = self._table_state()

    def _table_state(self) -> tuple[int, int, int]:
        entries = self._table.dynamic_entries
        return len(entries), id(entries[0]) if entries else 0, self._table.maxsize

    def decode(self, block: bytes) -> list[tuple[bytes, bytes]]:
        cached = self._cache.get(block)
        if cached is not None:
            return cached
        try:
            headers = self._decoder.decode(block, raw=True)
        except (hpack.HPACKError, IndexError, ValueError) as exc:
            raise HeaderBlockError(str(exc) or type(exc).__name__) from None
        state = self._table_state()
        if state != self._state:  # the table changed: remembered blocks may mean something else now
            self._cache.clear()
            self._state = state
        elif len(self._cache) < self.MAX_CACHED:
            self._cache[bytes(block)] = headers
        return headers
