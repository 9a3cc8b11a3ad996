"""The blocking Python client of the game protocol.

One socket, one reader thread: requests are written under a lock and answered through futures keyed by request
id, so `infer_async` can keep many requests in flight on one connection (pipelining) and replies may come back in
any order. `infer` is `infer_async(...).result(timeout)`.
"""

from __future__ import annotations

import itertools
import socket
import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

import numpy as np

from twinfer.client import messages
from twinfer.client.errors import SessionClosed
from twinfer.protocol import game_pb2
from twinfer.protocol.framing import FrameDecoder

T = TypeVar("T")


class Client:
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 9000,
        token: str | None = None,
        timeout: float = 30.0,
        client_name: str = "twinfer-python",
    ) -> None:
        self.timeout = timeout
        self.client_name = client_name
        self._sock = socket.create_connection((host, port), timeout=timeout)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock.settimeout(None)
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[Future[Any], Callable[[game_pb2.ServerMessage], Any]]] = {}
        self._lock = threading.Lock()
        self._closed: SessionClosed | None = None
        self._reader = threading.Thread(target=self._read_loop, name=f"twinfer-client-{host}:{port}", daemon=True)
        self._reader.start()
        if token is not None:
            try:
                self.login(token)
            except BaseException:
                self.close()
                raise

    # --- public API ---------------------------------------------------------------------------------------------

    def login(self, token: str) -> game_pb2.LoginResponse:
        return self._call(lambda rid: messages.build_login(rid, token, self.client_name),
                          lambda m: messages.check(m).login)

    def infer(
        self,
        model: str,
        inputs: dict[str, np.ndarray],
        version: str | None = None,
        outputs: list[str] | None = None,
        timeout_ms: int = 0,
    ) -> dict[str, np.ndarray]:
        """Run one inference; outputs are read-only arrays (copy them to modify)."""
        return self._wait(self.infer_async(model, inputs, version, outputs, timeout_ms))

    def infer_async(
        self,
        model: str,
        inputs: dict[str, np.ndarray],
        version: str | None = None,
        outputs: list[str] | None = None,
        timeout_ms: int = 0,
    ) -> Future[dict[str, np.ndarray]]:
        return self._submit(lambda rid: messages.build_infer(rid, model, inputs, version, outputs, timeout_ms),
                            messages.infer_outputs)

    def models(self) -> list[game_pb2.ModelStatus]:
        return self._call(messages.build_list_models, lambda m: list(messages.check(m).list_models.models))

    def model_metadata(self, model: str, version: str | None = None) -> game_pb2.ModelMetadataResponse:
        return self._call(lambda rid: messages.build_model_metadata(rid, model, version),
                          lambda m: messages.check(m).model_metadata)

    def open_stream(self, request: game_pb2.OpenStreamRequest) -> game_pb2.OpenStreamResponse:
        return self._call(lambda rid: messages.build_body(rid, "open_stream", request),
                          lambda m: messages.check(m).open_stream)

    def close_stream(self, stream_id: int) -> game_pb2.StreamAck:
        request = game_pb2.CloseStreamRequest(stream_id=stream_id)
        return self._call(lambda rid: messages.build_body(rid, "close_stream", request),
                          lambda m: messages.check(m).stream_ack)

    def subscribe(self, stream_id: int, target: game_pb2.StreamTarget) -> game_pb2.StreamAck:
        request = game_pb2.SubscribeRequest(stream_id=stream_id, target=target)
        return self._call(lambda rid: messages.build_body(rid, "subscribe", request),
                          lambda m: messages.check(m).stream_ack)

    def unsubscribe(self, stream_id: int, target: game_pb2.StreamTarget) -> game_pb2.StreamAck:
        request = game_pb2.UnsubscribeRequest(stream_id=stream_id, target=target)
        return self._call(lambda rid: messages.build_body(rid, "unsubscribe", request),
                          lambda m: messages.check(m).stream_ack)

    def ping(self) -> float:
        """Round-trip time in seconds."""
        return self._call(messages.build_ping, messages.ping_seconds)

    def close(self) -> None:
        if self._closed is None:
            self._fail_all(SessionClosed("client closed"))
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        if threading.current_thread() is not self._reader:
            self._reader.join(self.timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- plumbing -----------------------------------------------------------------------------------------------

    def _call(self, build: Callable[[int], bytes], decode: Callable[[game_pb2.ServerMessage], T]) -> T:
        return self._wait(self._submit(build, decode))

    def _wait(self, future: Future[T]) -> T:
        try:
            return future.result(self.timeout)
        except FutureTimeout:
            raise TimeoutError(f"no reply within {self.timeout} s") from None

    def _submit(self, build: Callable[[int], bytes], decode: Callable[[game_pb2.ServerMessage], T]) -> Future[T]:
        future: Future[T] = Future()
        with self._lock:
            if self._closed is not None:
                raise self._closed
            request_id = next(self._ids)
            self._pending[request_id] = (future, decode)
            try:
                self._sock.sendall(build(request_id))
            except OSError as exc:
                self._pending.pop(request_id, None)
                raise SessionClosed(f"connection lost: {exc}") from exc
        return future

    def _read_loop(self) -> None:
        decoder = FrameDecoder(max_body=1024**3)
        reason = SessionClosed("connection closed by the server")
        try:
            while True:
                data = self._sock.recv(1 << 20)
                if not data:
                    break
                for _, body in decoder.feed(data):
                    message = messages.decode_reply(body)
                    if message.HasField("kicked"):
                        reason = SessionClosed(message.kicked.reason, message.kicked.code)
                        continue
                    self._resolve(message)
        except OSError:
            pass
        self._fail_all(reason)

    def _resolve(self, message: game_pb2.ServerMessage) -> None:
        with self._lock:
            entry = self._pending.pop(message.request_id, None)
        if entry is None:
            return
        future, decode = entry
        try:
            future.set_result(decode(message))
        except BaseException as exc:  # noqa: BLE001 - typed errors travel through the future
            future.set_exception(exc)

    def _fail_all(self, error: SessionClosed) -> None:
        with self._lock:
            if self._closed is None:
                self._closed = error
            pending, self._pending = self._pending, {}
        for future, _ in pending.values():
            if not future.done():
                future.set_exception(error)
