"""Write-side backpressure for our TCP protocols: a peer that sends requests but never reads the answers must not
grow the server's memory. The protocol registers itself as a streaming producer on its own transport; when the
transport's outgoing buffer fills, Twisted asks the protocol to pause and it stops reading requests from that peer
until the buffer drains. Other connections are not affected."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer


@implementer(IPushProducer)
class ReadPauser:
    """Pauses and resumes reading on one transport as its write buffer fills and drains."""

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self.paused = False
        self.registered = True
        self.on_resume: Callable[[], None] | None = None  # e.g. handle requests read before the pause
        transport.registerProducer(self, True)

    def unregister(self) -> None:
        """Let the transport close: with a producer registered, `loseConnection` waits for it forever (a kicked
        peer that never reads would keep its socket, its session and its buffers)."""
        if self.registered:
            self.registered = False
            self._transport.unregisterProducer()

    def pauseProducing(self) -> None:
        if not self.paused:
            self.paused = True
            self._transport.pauseProducing()  # stop reading this peer's requests

    def resumeProducing(self) -> None:
        if self.paused:
            self.paused = False
            self._transport.resumeProducing()
            if self.on_resume is not None:
                self.on_resume()

    def stopProducing(self) -> None:
        self.paused = True
