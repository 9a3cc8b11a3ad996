"""Write-through for small answers on Twisted TCP transports.

`transport.write` never sends at once: it buffers, registers the socket for writability (an epoll_ctl), sends on
the next loop turn and unregisters it (another epoll_ctl). For one small reply per request that bookkeeping cost
more than the send itself: profiling the bot's HTTP client at ~6,000 req/s, `doWrite` plus writer add/remove took
1.5 s of 4.1 s of busy time. When nothing is queued on the transport, send now; whatever the kernel does not take
goes through `transport.write` as usual, so ordering and backpressure are unchanged. Used by the bot's clients and
by the server's HTTP/1.1 and HTTP/2 connections (their numbers are where they call it). TLS transports always take
`transport.write`.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.tcp import Connection


def write_now(transport: Any, data: bytes) -> None:
    # Only a plain TCP connection: a TLS transport is a ProtocolWrapper that hands attribute lookups down to the
    # TCP transport under it, so `.socket` would be found there and the bytes would go out unencrypted.
    sock = transport.socket if isinstance(transport, Connection) else None
    if (
        sock is None
        or transport.dataBuffer
        or getattr(transport, "_tempDataBuffer", True)  # private to Twisted; absent means: don't risk it
        or transport.disconnecting
        or getattr(transport, "producerPaused", False)
    ):
        transport.write(data)
        return
    try:
        sent = sock.send(data)
    except BlockingIOError:
        sent = 0
    except OSError:
        transport.write(data)  # let Twisted see and report the error its own way
        return
    if sent < len(data):
        transport.write(data[sent:])
