"""Python clients of the game protocol: `Client` (blocking) and `twisted_client` (Deferreds)."""

from __future__ import annotations

from twinfer.client.blocking import Client
from twinfer.client.errors import ServerError, SessionClosed, error_from_wire

__all__ = ["Client", "ServerError", "SessionClosed", "error_from_wire"]
