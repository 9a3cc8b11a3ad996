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


class HandshakePending:
    """Stands in for a ReadPauser on a TLS connection until its handshake completes. Twisted's TLS layer pauses a
    registered producer whenever it has to buffer a write (before the handshake is done, for one), and a ReadPauser
    answers by pausing the transport's reading, which the handshake itself needs: the connection then waits for
    itself (seen as logins that never arrived under load). Register the real pauser in `handshakeCompleted`."""

    paused = False
    registered = False
    on_resume: Callable[[], None] | None = None

    def unregister(self) -> None:
        pass


def read_pauser_for(transport: Any) -> ReadPauser | HandshakePending:
    """A ReadPauser now, or, on a TLS transport, a stand-in until `handshakeCompleted` makes the real one."""
    from twisted.internet.interfaces import ISSLTransport

    if ISSLTransport.providedBy(transport):
        return HandshakePending()
    return ReadPauser(transport)
