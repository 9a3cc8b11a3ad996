"""The blocking Python client of the game protocol.

One socket and one reader thread. Requests are written under a send lock and answered through futures kept in a
dict keyed by request id, so `infer_async` keeps many requests in flight on one connection (pipelining) and the
server may answer them in any order. The dict has its own lock, separate from the send lock: the reader must be
able to resolve replies while a large request is still being written, or a server that stops reading until its
replies drain would deadlock with us.

Every blocking wait (a reply, the send lock, the socket write) is bounded by the client's `timeout` and raises
TimeoutError. When the connection ends (EOF, a network error, a `kicked` message, `close()`), every request in
flight fails with SessionClosed carrying the reason, and every later call raises it at once.
"""

from __future__ import annotations

import itertools
import socket
import ssl
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, InvalidStateError
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Self, TypeVar

import numpy as np

from twinfer.client import messages
from twinfer.client.errors import SessionClosed
from twinfer.client.tls import TlsSocket
from twinfer.protocol import game_pb2
from twinfer.protocol.framing import FrameDecoder

T = TypeVar("T")

RECV_BYTES = 1 << 20


class Client:
    """A connection to a twinfer game port.

    Output arrays are read-only numpy views on the reply's bytes (no copy); `.copy()` one to modify it. Futures
    from `infer_async` are resolved on the reader thread, so their done-callbacks must not block.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 9000,
        token: str | None = None,
        timeout: float | None = 30.0,
        client_name: str = "twinfer-python",
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """`ssl_context` (e.g. `ssl.create_default_context(cafile=...)`) connects with TLS to a server started
        with `tls.cert_file`; the host name is checked against the certificate unless the context says not to."""
        self.host = host
        self.port = port
        self.timeout = timeout
        self.client_name = client_name
        self._sock = socket.create_connection((host, port), timeout=timeout)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if ssl_context is not None:
            try:
                self._sock = TlsSocket(self._sock, ssl_context, server_hostname=host)  # handshakes here
            except BaseException:
                self._sock.close()
                raise
        # The socket keeps the timeout so a write to a stalled server can't block forever; the reader treats an
        # idle receive timeout as nothing happening.
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[Future[Any], messages.Decode]] = {}
        self._pending_lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._closed: SessionClosed | None = None
        # Server events (StreamClosed, FrameErrors), newest last; `on_event` (called on the reader thread, must
        # not block) sees each as it arrives.
        self.events: deque[game_pb2.ServerMessage] = deque(maxlen=messages.MAX_EVENTS)
        self.on_event: Callable[[game_pb2.ServerMessage], None] | None = None
        self._reader = threading.Thread(target=self._read_loop, name=f"twinfer-client {host}:{port}", daemon=True)
        self._reader.start()
        if token is not None:
            try:
                self.login(token)
            except BaseException:
                self.close()
                raise

    # --- public API ---------------------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed is not None

    def login(self, token: str) -> game_pb2.LoginResponse:
        """Authenticate this connection; raises Unauthenticated for a bad or expired token."""
        return self._call(messages.login(token, self.client_name))

    def infer(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray],
        version: str | None = None,
        outputs: Iterable[str] | None = None,
        timeout_ms: int = 0,
    ) -> dict[str, np.ndarray]:
        """Run one inference and wait for its outputs (read-only arrays)."""
        return self._call(messages.infer(model, inputs, version, outputs, timeout_ms))

    def infer_async(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray],
        version: str | None = None,
        outputs: Iterable[str] | None = None,
        timeout_ms: int = 0,
    ) -> Future[dict[str, np.ndarray]]:
        """Send one inference without waiting: the future resolves when its reply arrives, in whatever order.

        Waiting on the future is up to the caller (`future.result(timeout)`); only the send is bounded here.
        """
        return self._submit(messages.infer(model, inputs, version, outputs, timeout_ms))[1]

    def models(self) -> list[game_pb2.ModelStatus]:
        return self._call(messages.list_models())

    def model_metadata(self, model: str, version: str | None = None) -> game_pb2.ModelMetadataResponse:
        return self._call(messages.model_metadata(model, version))

    def ping(self) -> float:
        """Round-trip time in seconds (the server echoes our monotonic clock stamp)."""
        return self._call(messages.ping())

    def open_stream(self, request: game_pb2.OpenStreamRequest) -> game_pb2.OpenStreamResponse:
        return self._call(messages.open_stream(request))

    def close_stream(self, stream_id: int) -> game_pb2.StreamAck:
        return self._call(messages.close_stream(stream_id))

    def subscribe(self, stream_id: int, target: game_pb2.StreamTarget) -> game_pb2.StreamAck:
        return self._call(messages.subscribe(stream_id, target))

    def unsubscribe(self, stream_id: int, target: game_pb2.StreamTarget) -> game_pb2.StreamAck:
        return self._call(messages.unsubscribe(stream_id, target))

    def calibrate(self, stream_id: int, seconds: float) -> game_pb2.CalibrationStatus:
        return self._call(messages.calibrate(stream_id, seconds))

    def close(self) -> None:
        """Close the connection (idempotent); requests still in flight fail with SessionClosed."""
        self._fail_all(SessionClosed("client closed"))
        self._shutdown()
        if threading.current_thread() is not self._reader:
            self._reader.join(self.timeout)
        self._sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- sending ------------------------------------------------------------------------------------------------

    def _call(self, call: messages.Call[T]) -> T:
        request_id, future = self._submit(call)
        try:
            return future.result(self.timeout)
        except FutureTimeout:
            # Forget it: a late reply is dropped instead of kept for a future nobody waits on.
            with self._pending_lock:
                self._pending.pop(request_id, None)
            future.cancel()
            raise TimeoutError(f"no reply to request {request_id} within {self.timeout} s") from None

    def _submit(self, call: messages.Call[T]) -> tuple[int, Future[T]]:
        self._raise_if_closed()
        request_id = next(self._ids)
        data = call.build(request_id)  # outside the locks: encoding big tensors must not hold up other threads
        future: Future[T] = Future()
        with self._pending_lock:
            self._raise_if_closed()
            self._pending[request_id] = (future, call.decode)  # before sending: the reply may beat sendall back
        try:
            self._send(data)
        except BaseException:
            with self._pending_lock:
                self._pending.pop(request_id, None)
            raise
        return request_id, future

    def _send(self, data: bytes) -> None:
        if not self._send_lock.acquire(timeout=-1 if self.timeout is None else self.timeout):
            raise TimeoutError(f"could not send within {self.timeout} s: another request is stuck writing")
        try:
            self._sock.sendall(data)
        except TimeoutError:
            # Part of the frame may be on the wire: the stream is out of step, so the connection is lost.
            self._abort(SessionClosed(f"send timed out after {self.timeout} s"))
            raise TimeoutError(f"could not send within {self.timeout} s") from None
        except OSError as exc:
            self._abort(SessionClosed(f"connection lost: {exc}"))
            raise self._closed_error() from exc
        finally:
            self._send_lock.release()

    def _raise_if_closed(self) -> None:
        if self._closed is not None:
            raise self._closed_error()

    def _closed_error(self) -> SessionClosed:
        """A fresh copy of why the session ended: one shared instance would pile up every raiser's traceback."""
        closed = self._closed if self._closed is not None else SessionClosed("connection closed")
        return SessionClosed(closed.reason, closed.code)

    # --- receiving ----------------------------------------------------------------------------------------------

    def _read_loop(self) -> None:
        decoder = FrameDecoder(max_body=messages.MAX_REPLY_BYTES)
        reason = SessionClosed("connection closed by the server")
        first = True
        try:
            while True:
                try:
                    data = self._sock.recv(RECV_BYTES)
                except TimeoutError:
                    continue
                if not data:
                    break
                if first and data.startswith(b"HTTP/"):
                    reason = SessionClosed(not_the_game_port(self.host, self.port, "HTTP"))
                    break
                if first and len(data) >= 9 and data[3] == 4 and data[5:9] == bytes(4):
                    # an HTTP/2 SETTINGS frame on stream 0, a gRPC server's first words; a game frame never starts
                    # so (its body would begin with three zero bytes, which no protobuf message does)
                    reason = SessionClosed(not_the_game_port(self.host, self.port, "HTTP/2 (gRPC)"))
                    break
                first = False
                for _, body in decoder.feed(data):
                    self._dispatch(messages.decode_reply(body))
        except OSError as exc:
            reason = SessionClosed(f"connection lost: {exc}")
        except Exception as exc:  # noqa: BLE001 - a corrupt stream (frame too large, bad protobuf) ends the session
            reason = SessionClosed(f"unreadable reply stream: {exc}")
        self._abort(reason)

    def _dispatch(self, message: game_pb2.ServerMessage) -> None:
        if messages.is_event(message):
            self.events.append(message)
            if self.on_event is not None:
                self.on_event(message)
            return
        kicked = messages.kicked_error(message)
        if kicked is not None:
            # The server closes right after a kick: nothing in flight will be answered, so fail it now.
            self._fail_all(kicked)
            return
        with self._pending_lock:
            entry = self._pending.pop(message.request_id, None)
        if entry is None:
            return  # a reply to a request given up on (timed out or failed to send)
        future, decode = entry
        try:
            result = decode(message)
        except Exception as exc:  # noqa: BLE001 - typed errors travel through the future
            _settle(future.set_exception, exc)
        else:
            _settle(future.set_result, result)

    # --- ending -------------------------------------------------------------------------------------------------

    def _abort(self, error: SessionClosed) -> None:
        self._fail_all(error)
        self._shutdown()

    def _shutdown(self) -> None:
        """Wake the reader (recv returns EOF) and stop writers; closing the fd is left to close()."""
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _fail_all(self, error: SessionClosed) -> None:
        """Record the first reason the session ended and fail everything in flight with it."""
        with self._pending_lock:
            if self._closed is None:
                self._closed = error
            pending, self._pending = self._pending, {}
        for future, _ in pending.values():
            _settle(future.set_exception, self._closed_error())


def not_the_game_port(host: str, port: int, spoken: str) -> str:
    """Said when the peer answers in another protocol: the usual slip is KServe's port (8000) for the game port."""
    return (f"{host}:{port} answered in {spoken}: it is not the game protocol port (twinfer's game protocol listens "
            "on 9000 by default; 8000 and 8001 are KServe HTTP and gRPC, for tritonclient or curl)")


def _settle(setter: Callable[[Any], None], value: Any) -> None:
    """Resolve a future unless its caller cancelled it already (a cancelled request's reply is just dropped)."""
    try:
        setter(value)
    except InvalidStateError:
        pass
