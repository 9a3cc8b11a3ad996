"""The UDP port: every datagram goes to the StreamManager; results leave from the same socket."""

from __future__ import annotations

import socket

from twisted.internet.protocol import DatagramProtocol

from twinfer.streaming.manager import StreamManager

# Frames arrive in bursts of 64 KB datagrams; the kernel default (about 208 KB) drops a burst of four streams.
RECEIVE_BUFFER_BYTES = 8 * 1024 * 1024


def _grow_receive_buffer(sock: socket.socket, size: int) -> None:
    """Ask for a bigger buffer on this socket only (SO_RCVBUFFORCE passes the rmem_max cap when permitted)."""
    force = getattr(socket, "SO_RCVBUFFORCE", None)
    if force is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, size)
            return
        except OSError:
            pass
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


class StreamEndpoint(DatagramProtocol):
    def __init__(self, manager: StreamManager) -> None:
        self.manager = manager

    def startProtocol(self) -> None:
        sock = self.transport.socket
        # Broadcast only when the operator listed an address that may be one (see twinfer.security.receivers):
        # without SO_BROADCAST the kernel refuses any broadcast the receiver rule did not foresee.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, int(self.manager.receivers.broadcast_listed))
        _grow_receive_buffer(sock, RECEIVE_BUFFER_BYTES)
        self.manager.attach(self._send, self.transport.getHost().port)

    def _send(self, data: bytes, address: tuple[str, int]) -> None:
        try:
            self.transport.write(data, address)
        except OSError:
            self.manager.dropped["send_failed"] += 1

    def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:
        self.manager.datagram_received(data)
