"""The blocking client's TlsSocket against a plain Python TLS server: a full-duplex echo of more than one write
chunk (the reader thread receives while the writer is still sending), EOF, and a refused certificate."""

from __future__ import annotations

import socket
import ssl
import threading

import pytest
import trustme

from twinfer.client.tls import WRITE_CHUNK, TlsSocket


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def echo_server(ca: trustme.CA) -> tuple[socket.socket, threading.Thread]:
    """Accepts one TLS connection and echoes everything until the client half-closes."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        raw, _ = listener.accept()
        try:
            with context.wrap_socket(raw, server_side=True) as conn:
                while data := conn.recv(65536):
                    conn.sendall(data)
        except (OSError, ssl.SSLError):
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener, thread


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(context)
    return context


def test_full_duplex_echo_of_several_chunks(ca):
    listener, thread = echo_server(ca)
    raw = socket.create_connection(listener.getsockname(), timeout=10)
    tls = TlsSocket(raw, client_context(ca), server_hostname="127.0.0.1")
    payload = bytes(range(256)) * (3 * WRITE_CHUNK // 256 + 17)  # > 3 chunks, not a multiple of one
    received = bytearray()

    def read() -> None:
        while len(received) < len(payload):
            data = tls.recv(65536)
            if not data:
                return
            received.extend(data)

    reader = threading.Thread(target=read)
    reader.start()
    tls.sendall(payload)  # the echo comes back while this is still writing: only a concurrent reader drains it
    reader.join(10)
    assert not reader.is_alive()
    assert bytes(received) == payload
    tls.close()
    listener.close()
    thread.join(5)


def test_recv_returns_empty_once_the_server_closes(ca):
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        raw, _ = listener.accept()
        with context.wrap_socket(raw, server_side=True) as conn:
            conn.sendall(b"bye")
            try:
                conn.unwrap()  # close_notify; the client may close its socket before answering with its own
            except (OSError, ssl.SSLError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    tls = TlsSocket(socket.create_connection(listener.getsockname(), timeout=10), client_context(ca),
                    server_hostname="127.0.0.1")
    assert tls.recv(100) == b"bye"
    assert tls.recv(100) == b""
    tls.close()
    listener.close()
    thread.join(5)


def test_a_certificate_for_another_host_is_refused(ca):
    listener, thread = echo_server(ca)
    raw = socket.create_connection(listener.getsockname(), timeout=10)
    with pytest.raises(ssl.SSLCertVerificationError):
        TlsSocket(raw, client_context(ca), server_hostname="game.example.com")
    raw.close()
    listener.close()
    thread.join(5)
