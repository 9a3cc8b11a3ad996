"""TLS for the blocking client, safe for one reader thread and one writer at a time on the same connection.

The client reads replies on its own thread while callers send requests. An `ssl.SSLSocket` cannot be used that way:
OpenSSL forbids calling SSL_read and SSL_write on one SSL object from two threads at once (openssl/openssl#20446,
python/cpython#151508), and CPython releases the GIL around both. In practice a TLS 1.3 login sometimes never left
the client: the writer's SSL_write saw the reader's "want read" state, waited for the socket to become readable,
and the reader took the bytes it was waiting for (13 of 150 logins under CPU load).

So the TLS state lives in an `ssl.SSLObject` over memory BIOs, touched only under one lock and only for in-memory
work; the socket's blocking send and receive run outside it. Only writers take bytes out of the outgoing BIO, one
at a time and in order, so records reach the wire in the order OpenSSL made them. Anything the reader's SSL_read
queues there (a TLS 1.3 KeyUpdate answer) leaves with the next request, which is what RFC 8446 §4.6.3 asks.
"""

from __future__ import annotations

import socket
import ssl
import threading

WRITE_CHUNK = 256 * 1024  # plaintext encrypted per lock hold: bounds the encrypted copy held in memory


class TlsSocket:
    """The few socket methods the blocking client uses (`sendall`, `recv`, `shutdown`, `close`), over TLS."""

    def __init__(self, sock: socket.socket, context: ssl.SSLContext, server_hostname: str) -> None:
        self._sock = sock
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_hostname=server_hostname)
        self._tls_lock = threading.Lock()  # every SSLObject and BIO call; never held across socket I/O
        self._write_lock = threading.Lock()  # one writer drains and sends at a time, so records keep their order
        self._handshake()

    def _handshake(self) -> None:
        """Before any other thread sees this socket: no locking needed yet."""
        while True:
            try:
                self._tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                data = self._sock.recv(65536)
                if not data:
                    raise ConnectionError("the server closed the connection during the TLS handshake") from None
                self._incoming.write(data)
        self._flush()  # the client's Finished

    def _flush(self) -> None:
        with self._tls_lock:
            data = self._outgoing.read()
        if data:
            self._sock.sendall(data)

    def sendall(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        with self._write_lock:
            while view:
                with self._tls_lock:
                    written = self._tls.write(view[:WRITE_CHUNK])
                    encrypted = self._outgoing.read()
                view = view[written:]
                if encrypted:
                    self._sock.sendall(encrypted)  # may raise TimeoutError/OSError, as a plain socket's would

    def recv(self, size: int) -> bytes:
        """Up to `size` bytes of plaintext; b"" once the server closed; TimeoutError as the socket's timeout says."""
        while True:
            with self._tls_lock:
                try:
                    return self._tls.read(size)
                except ssl.SSLWantReadError:
                    if self._incoming.eof:
                        return b""
                except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                    return b""
            data = self._sock.recv(max(size, 16 * 1024 + 256))
            with self._tls_lock:
                if data:
                    self._incoming.write(data)
                else:
                    self._incoming.write_eof()

    def shutdown(self, how: int) -> None:
        self._sock.shutdown(how)

    def close(self) -> None:
        self._sock.close()
