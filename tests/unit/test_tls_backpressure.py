"""On a TLS connection the read pauser waits for the handshake (found in CI-like runs: TLS logins that never
arrived). Twisted's TLS layer pauses a registered producer whenever it buffers a write, before the handshake is done
for one; a ReadPauser then pauses the transport's reading, which the handshake needs, and the connection waits for
itself. So nothing is registered on a TLS transport until `handshakeCompleted`."""

from __future__ import annotations

from twisted.internet.interfaces import ISSLTransport
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from zope.interface import directlyProvides

from tests.unit.test_connection import Harness
from twinfer.backpressure import HandshakePending, ReadPauser
from twinfer.http.connection import HttpFactory


def tls_transport() -> StringTransport:
    transport = StringTransport()
    directlyProvides(transport, ISSLTransport)
    return transport


def test_a_game_connection_registers_its_pauser_only_once_the_tls_handshake_is_done(tmp_path):
    harness = Harness(tmp_path)
    proto = harness.factory.buildProtocol(None)
    transport = tls_transport()
    proto.makeConnection(transport)
    assert isinstance(proto._pauser, HandshakePending) and transport.producer is None
    proto.handshakeCompleted()
    assert isinstance(proto._pauser, ReadPauser) and transport.producer is proto._pauser
    assert proto._pauser.on_resume is not None  # frames read before a pause are still answered on resume


def test_an_http_connection_does_the_same_and_plain_tcp_registers_at_once():
    factory = HttpFactory(lambda request: None, Clock(), 1000, idle_timeout_s=5)
    proto = factory.buildProtocol(None)
    transport = tls_transport()
    proto.makeConnection(transport)
    assert transport.producer is None
    proto.handshakeCompleted()
    assert transport.producer is proto._pauser
    plain = StringTransport()
    factory.buildProtocol(None).makeConnection(plain)
    assert isinstance(plain.producer, ReadPauser)
