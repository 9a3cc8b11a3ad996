"""Game-protocol version negotiation: the client says which version it speaks at login, the server answers with its
own and its capabilities, and refuses (UNSUPPORTED_PROTOCOL) a version it cannot serve, so an old or new client
learns at once why, instead of meeting silent drops later.

Version 1 is the protocol before negotiation; 2 adds the server events (StreamClosed, FrameErrors), RGBA8/BGRA8,
bottom_up and the refusal of request_id 0. Everything 2 added is new fields and messages a version-1 client
ignores, so the server still serves 1 (and a login that names no version, 0, is taken as 1).
"""

from __future__ import annotations

from twinfer.errors import UnsupportedProtocol

PROTOCOL_VERSION = 2
MIN_PROTOCOL_VERSION = 1


def negotiate(client_version: int) -> int:
    """The version this session speaks; UnsupportedProtocol when the client's is outside what the server does.

    The server sends the same messages to every version it accepts: what 2 added, a version-1 client ignores."""
    version = client_version or 1
    if not MIN_PROTOCOL_VERSION <= version <= PROTOCOL_VERSION:
        raise UnsupportedProtocol(f"protocol version {version} is not supported: this server speaks "
                                  f"{MIN_PROTOCOL_VERSION}..{PROTOCOL_VERSION}")
    return version
