"""Python clients of the game protocol.

`Client` is the blocking client (a socket and a reader thread); the Twisted client lives in
`twinfer.client.twisted_client` and is not imported here, so blocking users don't pay for the reactor. Server
errors arrive as the classes of `twinfer.errors` with a `.code`; the two below are the client's own.
"""

from __future__ import annotations

from twinfer.client.blocking import Client
from twinfer.client.errors import ServerError, SessionClosed, error_from_wire

__all__ = ["Client", "ServerError", "SessionClosed", "error_from_wire"]
