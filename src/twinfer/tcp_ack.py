"""Acknowledge at once when a read leaves a request incomplete (TCP_QUICKACK).

A client that writes a request in two pieces (HTTP headers, then the body; a game frame's length prefix, then its
bytes) without TCP_NODELAY holds the second piece back until the first is acknowledged (Nagle), and Linux delays
that acknowledgement up to 40 ms because the server has nothing to send yet. Every such request then takes ~44 ms
instead of 0.3 (measured on loopback: raw HTTP client, headers and body in two `sendall`s). Unity's TcpClient and
many HTTP libraries leave Nagle on. So when a read ends inside a request, the server asks the kernel to
acknowledge now. A request that arrives in one read costs nothing; TLS transports are left alone (their records
arrive whole).
"""

from __future__ import annotations

import socket
from typing import Any

_QUICKACK = getattr(socket, "TCP_QUICKACK", None)  # Linux only; elsewhere this does nothing


def ack_now(transport: Any) -> None:
    if _QUICKACK is None:
        return
    get_handle = getattr(transport, "getHandle", None)
    sock = get_handle() if get_handle is not None else None
    if not isinstance(sock, socket.socket):
        return  # TLS (an OpenSSL connection), or a test transport
    try:
        sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)  # Linux clears it again by itself: set per read
    except OSError:
        pass  # the socket is closing
