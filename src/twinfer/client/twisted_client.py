"""The Twisted client of the game protocol: the blocking client's requests, answered with Deferreds.

For code already on a reactor (the load bot, a game-server bridge): no threads, many requests in flight on one
connection, replies matched to their Deferreds by request id in whatever order they come. Request frames and
reply decoding come from `twinfer.client.messages`, shared with the blocking client.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import numpy as np
from twisted.internet.abstract import isIPv6Address
from twisted.internet.defer import Deferred, fail
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

from twinfer.client import messages
from twinfer.client.errors import SessionClosed
from twinfer.protocol import game_pb2
from twinfer.protocol.framing import FrameDecoder

T = TypeVar("T")


class GameClientProtocol(Protocol):
    """One game-protocol connection. Every method returns a Deferred firing with the reply's result or failing
    with the typed error (`twinfer.errors`, `.code` = wire code); once the connection ends, with SessionClosed.

    Cancelling a Deferred (e.g. `addTimeout`) forgets the request: its late reply is dropped. Output arrays are
    read-only views on the reply's bytes.
    """

    def __init__(self, client_name: str = "twinfer-twisted") -> None:
        self.client_name = client_name
        self._decoder = FrameDecoder(max_body=messages.MAX_REPLY_BYTES)
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[Deferred[Any], messages.Decode]] = {}
        self._closed: SessionClosed | None = None
        # Server events (StreamClosed, FrameErrors), newest last; `on_event` sees each as it arrives.
        self.events: deque[game_pb2.ServerMessage] = deque(maxlen=messages.MAX_EVENTS)
        self.on_event: Callable[[game_pb2.ServerMessage], None] | None = None

    # --- public API ---------------------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed is not None

    def login(self, token: str) -> Deferred[game_pb2.LoginResponse]:
        return self._request(messages.login(token, self.client_name))

    def infer(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray],
        version: str | None = None,
        outputs: Iterable[str] | None = None,
        timeout_ms: int = 0,
    ) -> Deferred[dict[str, np.ndarray]]:
        return self._request(messages.infer(model, inputs, version, outputs, timeout_ms))

    def models(self) -> Deferred[list[game_pb2.ModelStatus]]:
        return self._request(messages.list_models())

    def model_metadata(self, model: str, version: str | None = None) -> Deferred[game_pb2.ModelMetadataResponse]:
        return self._request(messages.model_metadata(model, version))

    def ping(self) -> Deferred[float]:
        """Round-trip time in seconds."""
        return self._request(messages.ping())

    def open_stream(self, request: game_pb2.OpenStreamRequest) -> Deferred[game_pb2.OpenStreamResponse]:
        return self._request(messages.open_stream(request))

    def close_stream(self, stream_id: int) -> Deferred[game_pb2.StreamAck]:
        return self._request(messages.close_stream(stream_id))

    def subscribe(self, stream_id: int, target: game_pb2.StreamTarget) -> Deferred[game_pb2.StreamAck]:
        return self._request(messages.subscribe(stream_id, target))

    def unsubscribe(self, stream_id: int, target: game_pb2.StreamTarget) -> Deferred[game_pb2.StreamAck]:
        return self._request(messages.unsubscribe(stream_id, target))

    def calibrate(self, stream_id: int, seconds: float) -> Deferred[game_pb2.CalibrationStatus]:
        return self._request(messages.calibrate(stream_id, seconds))

    def close(self) -> None:
        """Close the connection; requests in flight fail now with SessionClosed (a closing transport stops
        reading, so their replies could never arrive)."""
        self._fail_all(SessionClosed("client closed"))
        if self.transport is not None:
            self.transport.loseConnection()

    # --- Protocol -----------------------------------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        try:
            for _, body in self._decoder.feed(data):
                self._dispatch(messages.decode_reply(body))
        except Exception as exc:  # noqa: BLE001 - a corrupt stream (frame too large, bad protobuf) ends the session
            self._fail_all(SessionClosed(f"unreadable reply stream: {exc}"))
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure | None = None) -> None:  # type: ignore[override]
        if reason is None or reason.check(ConnectionDone):
            self._fail_all(SessionClosed("connection closed"))
        else:
            self._fail_all(SessionClosed(f"connection lost: {reason.getErrorMessage()}"))

    # --- plumbing -----------------------------------------------------------------------------------------------

    def _request(self, call: messages.Call[T]) -> Deferred[T]:
        if self._closed is not None:
            return fail(self._closed_error())
        if self.transport is None:
            return fail(SessionClosed("not connected"))
        request_id = next(self._ids)
        try:
            data = call.build(request_id)
        except Exception:  # noqa: BLE001 - e.g. InvalidInput for an array the wire can't carry
            return fail()
        d: Deferred[T] = Deferred(lambda _: self._pending.pop(request_id, None))
        self._pending[request_id] = (d, call.decode)
        self.transport.write(data)
        return d

    def _dispatch(self, message: game_pb2.ServerMessage) -> None:
        if messages.is_event(message):
            self.events.append(message)
            if self.on_event is not None:
                self.on_event(message)
            return
        kicked = messages.kicked_error(message)
        if kicked is not None:
            self._fail_all(kicked)  # the server closes right after: nothing in flight will be answered
            return
        entry = self._pending.pop(message.request_id, None)
        if entry is None:
            return  # a reply to a cancelled request
        d, decode = entry
        try:
            result = decode(message)
        except Exception:  # noqa: BLE001 - typed errors go to the errback
            d.errback(Failure())
        else:
            d.callback(result)

    def _fail_all(self, error: SessionClosed) -> None:
        """Record the first reason the session ended and fail everything in flight with it."""
        if self._closed is None:
            self._closed = error
        pending, self._pending = self._pending, {}
        for d, _ in pending.values():
            d.errback(Failure(self._closed_error()))

    def _closed_error(self) -> SessionClosed:
        closed = self._closed if self._closed is not None else SessionClosed("connection closed")
        return SessionClosed(closed.reason, closed.code)


async def _connect(reactor: Any, host: str, port: int, token: str | None, client_name: str,
                   timeout: float) -> GameClientProtocol:
    endpoint_type = TCP6ClientEndpoint if isIPv6Address(host) else TCP4ClientEndpoint
    protocol = await connectProtocol(endpoint_type(reactor, host, port, timeout=timeout),
                                     GameClientProtocol(client_name))
    if token is not None:
        try:
            await protocol.login(token)
        except BaseException:
            protocol.close()
            raise
    return protocol


def connect(reactor: Any, host: str, port: int, token: str | None = None, client_name: str = "twinfer-twisted",
            timeout: float = 30.0) -> Deferred[GameClientProtocol]:
    """Connect (and log in when a token is given); fires with the protocol, ready for requests.

    A failed login (Unauthenticated) closes the connection and fails the Deferred; `timeout` bounds the TCP
    connect only.
    """
    return Deferred.fromCoroutine(_connect(reactor, host, port, token, client_name, timeout))
