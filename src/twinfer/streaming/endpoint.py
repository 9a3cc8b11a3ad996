"""The UDP port: every datagram goes to the StreamManager; results leave from the same socket."""

from __future__ import annotations

import socket

from twisted.internet.protocol import DatagramProtocol

from twinfer.streaming.manager import StreamManager


class StreamEndpoint(DatagramProtocol):
    def __init__(self, manager: StreamManager) -> None:
        self.manager = manager

    def startProtocol(self) -> None:
        sock = self.transport.socket
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)  # receivers may be a broadcast address
        self.manager.attach(self._send, self.transport.getHost().port)

    def _send(self, data: bytes, address: tuple[str, int]) -> None:
        try:
            self.transport.write(data, address)
        except OSError:
            self.manager.dropped["send_failed"] += 1

    def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:
        self.manager.datagram_received(data)
