"""Listening sockets shared by several worker processes with SO_REUSEPORT: the kernel spreads new connections
across the workers' accept queues, so no process hands connections to another."""

from __future__ import annotations

import socket
from typing import Any


def reuseport_socket(host: str, port: int, listen: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    if listen:
        sock.listen(1024)
    sock.setblocking(False)
    return sock


def listen_shared(reactor: Any, host: str, port: int, factory: Any) -> Any:
    """Listen on (host, port) alongside other processes doing the same; returns Twisted's port object."""
    sock = reuseport_socket(host, port, listen=True)
    try:
        return reactor.adoptStreamPort(sock.fileno(), sock.family, factory)
    finally:
        sock.close()  # Twisted adopted a duplicate of the descriptor


def reserve_port(host: str, port: int) -> tuple[socket.socket, int]:
    """Bind (not listen) with SO_REUSEPORT to fix a port number workers can share; keep the socket open to
    hold the number for the supervisor's lifetime."""
    sock = reuseport_socket(host, port, listen=False)
    return sock, sock.getsockname()[1]
