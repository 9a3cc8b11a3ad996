"""The Twisted client of the game protocol: the same requests as the blocking client, answered with Deferreds."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import numpy as np
from twisted.internet.defer import Deferred, fail
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

from twinfer.client import messages
from twinfer.client.errors import SessionClosed
from twinfer.protocol import game_pb2
from twinfer.protocol.framing import FrameDecoder


class GameClientProtocol(Protocol):
    def __init__(self, client_name: str = "twinfer-twisted") -> None:
        self.client_name = client_name
        self._decoder = FrameDecoder(max_body=1024**3)
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[Deferred[Any], Callable[[game_pb2.ServerMessage], Any]]] = {}
        self._closed: SessionClosed | None = None
        self._kick_reason: SessionClosed | None = None

    def login(self, token: str) -> Deferred[game_pb2.LoginResponse]:
        return self._request(lambda rid: messages.build_login(rid, token, self.client_name),
                             lambda m: messages.check(m).login)

    def infer(
        self,
        model: str,
        inputs: dict[str, np.ndarray],
        version: str | None = None,
        outputs: list[str] | None = None,
        timeout_ms: int = 0,
    ) -> Deferred[dict[str, np.ndarray]]:
        return self._request(lambda rid: messages.build_infer(rid, model, inputs, version, outputs, timeout_ms),
                             messages.infer_outputs)

    def models(self) -> Deferred[list[game_pb2.ModelStatus]]:
        return self._request(messages.build_list_models, lambda m: list(messages.check(m).list_models.models))

    def model_metadata(self, model: str, version: str | None = None) -> Deferred[game_pb2.ModelMetadataResponse]:
        return self._request(lambda rid: messages.build_model_metadata(rid, model, version),
                             lambda m: messages.check(m).model_metadata)

    def open_stream(self, request: game_pb2.OpenStreamRequest) -> Deferred[game_pb2.OpenStreamResponse]:
        return self._request(lambda rid: messages.build_body(rid, "open_stream", request),
                             lambda m: messages.check(m).open_stream)

    def close_stream(self, stream_id: int) -> Deferred[game_pb2.StreamAck]:
        request = game_pb2.CloseStreamRequest(stream_id=stream_id)
        return self._request(lambda rid: messages.build_body(rid, "close_stream", request),
                             lambda m: messages.check(m).stream_ack)

    def ping(self) -> Deferred[float]:
        return self._request(messages.build_ping, messages.ping_seconds)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.loseConnection()

    def _request(self, build: Callable[[int], bytes], decode: Callable[[game_pb2.ServerMessage], Any]) -> Deferred:
        if self._closed is not None:
            return fail(self._closed)
        request_id = next(self._ids)
        d: Deferred[Any] = Deferred()
        self._pending[request_id] = (d, decode)
        self.transport.write(build(request_id))
        return d

    def dataReceived(self, data: bytes) -> None:
        for _, body in self._decoder.feed(data):
            message = messages.decode_reply(body)
            if message.HasField("kicked"):
                self._kick_reason = SessionClosed(message.kicked.reason, message.kicked.code)
                continue
            entry = self._pending.pop(message.request_id, None)
            if entry is None:
                continue
            d, decode = entry
            try:
                result = decode(message)
            except Exception as exc:  # typed errors go to the errback
                d.errback(Failure(exc))
            else:
                d.callback(result)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self._closed = self._kick_reason or SessionClosed("connection closed")
        pending, self._pending = self._pending, {}
        for d, _ in pending.values():
            d.errback(Failure(self._closed))


async def _connect(reactor: Any, host: str, port: int, token: str | None) -> GameClientProtocol:
    protocol = await connectProtocol(TCP4ClientEndpoint(reactor, host, port), GameClientProtocol())
    if token is not None:
        await protocol.login(token)
    return protocol


def connect(reactor: Any, host: str, port: int, token: str | None = None) -> Deferred[GameClientProtocol]:
    """Connect (and log in when a token is given); fires with the protocol, ready for requests."""
    return Deferred.fromCoroutine(_connect(reactor, host, port, token))
