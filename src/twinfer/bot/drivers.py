"""One driver per protocol: connect, then run requests as Deferreds. Drivers build a valid request for the model
from its metadata (random values of the right datatype and shape, batch 1)."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import time
from collections import deque
from typing import Any

import httptools
import numpy as np
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import DatagramProtocol, Protocol
from twisted.python.failure import Failure

from twinfer.fastwrite import write_now
from twinfer.inference.datatypes import to_numpy_dtype


class RequestError(Exception):
    """A failed request; `kind` is the error breakdown's key (OVERLOADED, HTTP 503, UNAVAILABLE, lost...)."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind


def random_input(datatype: str, shape: list[int], rng: np.random.Generator) -> np.ndarray:
    concrete = [1 if d < 0 else d for d in shape]
    dtype = to_numpy_dtype(datatype)
    if dtype.kind == "f":
        return rng.random(concrete).astype(dtype)
    if dtype.kind == "b":
        return rng.random(concrete) > 0.5
    return rng.integers(0, 100, concrete).astype(dtype)


# --- tcp: the game protocol --------------------------------------------------------------------------------------

class TcpConnection:
    def __init__(self, protocol: Any, model: str, inputs: dict[str, np.ndarray], token: str | None) -> None:
        self.protocol, self.model, self.inputs, self.token = protocol, model, inputs, token

    def infer(self) -> Deferred:
        return self.protocol.infer(self.model, self.inputs)

    def ping(self) -> Deferred:
        return self.protocol.ping()

    def login(self, user: str | None = None) -> Deferred:
        return self.protocol.login(user or self.token or "")

    def close(self) -> None:
        self.protocol.close()


async def connect_tcp(reactor: Any, host: str, port: int, model: str, token: str | None,
                      rng: np.random.Generator, **_: Any) -> TcpConnection:
    from twinfer.client.twisted_client import connect

    protocol = await connect(reactor, host, port, token)
    meta = await protocol.model_metadata(model)
    inputs = {t.name: random_input(t.datatype, list(t.shape), rng) for t in meta.inputs}
    return TcpConnection(protocol, model, inputs, token)


# --- http: KServe v2 JSON --------------------------------------------------------------------------------------

class _HttpClient(Protocol):
    """Keep-alive HTTP/1.1, one request at a time per connection, responses parsed with httptools."""

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._waiting: deque[Deferred] = deque()
        self._body: list[bytes] = []
        self.lost: Failure | None = None

    def request(self, head: bytes, body: bytes = b"") -> Deferred:
        if self.lost is not None:
            return _failed(self.lost)
        d: Deferred = Deferred()
        self._waiting.append(d)
        write_now(self.transport, head + body)
        return d

    def dataReceived(self, data: bytes) -> None:
        self._parser.feed_data(data)

    def on_message_begin(self) -> None:
        self._body = []

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._waiting:
            self._waiting.popleft().callback((self._parser.get_status_code(), b"".join(self._body)))

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.lost = Failure(RequestError("connection lost"))
        while self._waiting:
            self._waiting.popleft().errback(self.lost)


def _failed(failure: Failure) -> Deferred:
    d: Deferred = Deferred()
    d.errback(failure)
    return d


def _check_http(result: tuple[int, bytes]) -> bytes:
    status, body = result
    if status != 200:
        raise RequestError(f"HTTP {status}", body[:200].decode("utf-8", "replace"))
    return body


def _bearer(token: str | None) -> str:
    """The game protocol's token as KServe HTTP takes it (a server with a token secret answers 401 without)."""
    return f"Authorization: Bearer {token}\r\n" if token else ""


class HttpConnection:
    def __init__(self, client: _HttpClient, host: str, model: str, body: bytes, token: str | None = None) -> None:
        self.client = client
        self._infer_head = (f"POST /v2/models/{model}/infer HTTP/1.1\r\nHost: {host}\r\n{_bearer(token)}"
                            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
        self._body = body
        self._ready = f"GET /v2/health/ready HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()

    def infer(self) -> Deferred:
        return self.client.request(self._infer_head, self._body).addCallback(_check_http)

    def ping(self) -> Deferred:
        return self.client.request(self._ready).addCallback(_check_http)

    def login(self, user: str | None = None) -> Deferred:
        return succeed(None)

    def close(self) -> None:
        self.client.transport.loseConnection()


async def connect_http(reactor: Any, host: str, port: int, model: str, rng: np.random.Generator,
                       token: str | None = None, **_: Any) -> HttpConnection:
    client = await connectProtocol(TCP4ClientEndpoint(reactor, host, port, timeout=10), _HttpClient())
    client.transport.setTcpNoDelay(True)
    status, body = await client.request(
        f"GET /v2/models/{model} HTTP/1.1\r\nHost: {host}\r\n{_bearer(token)}\r\n".encode())
    meta = json.loads(_check_http((status, body)))
    inputs = []
    for t in meta["inputs"]:
        array = random_input(t["datatype"], t["shape"], rng)
        inputs.append({"name": t["name"], "shape": list(array.shape), "datatype": t["datatype"],
                       "data": array.ravel().tolist()})
    return HttpConnection(client, host, model, json.dumps({"inputs": inputs}, separators=(",", ":")).encode(), token)


# --- grpc: KServe v2 over grpc.aio on the asyncio reactor ------------------------------------------------------

class GrpcConnection:
    def __init__(self, stub: Any, request: Any, timeout: float, metadata: tuple = ()) -> None:
        self.stub, self.request, self.timeout, self.metadata = stub, request, timeout, metadata

    def _call(self, coro: Any) -> Deferred:
        async def run() -> Any:
            import grpc

            try:
                return await coro
            except grpc.aio.AioRpcError as exc:
                raise RequestError(exc.code().name, exc.details() or "") from None

        return Deferred.fromFuture(asyncio.ensure_future(run()))

    def infer(self) -> Deferred:
        return self._call(self.stub.ModelInfer(self.request, timeout=self.timeout, metadata=self.metadata))

    def ping(self) -> Deferred:
        from tritonclient.grpc import service_pb2 as pb

        return self._call(self.stub.ServerReady(pb.ServerReadyRequest(), timeout=self.timeout))

    def login(self, user: str | None = None) -> Deferred:
        return succeed(None)

    def close(self) -> None:
        pass


_channels: dict[str, Any] = {}


async def connect_grpc(reactor: Any, host: str, port: int, model: str, rng: np.random.Generator, timeout: float,
                       token: str | None = None, **_: Any) -> GrpcConnection:
    import grpc
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc import service_pb2_grpc

    address = f"{host}:{port}"
    if address not in _channels:  # one HTTP/2 channel per process, multiplexed by every virtual user
        _channels[address] = service_pb2_grpc.GRPCInferenceServiceStub(grpc.aio.insecure_channel(address))
    stub = _channels[address]
    metadata = (("authorization", f"Bearer {token}"),) if token else ()  # as HTTP: the game protocol's token
    # grpc.aio calls are asyncio awaitables; this coroutine runs under Twisted, so hand them to asyncio.
    meta = await Deferred.fromFuture(asyncio.ensure_future(
        stub.ModelMetadata(pb.ModelMetadataRequest(name=model), timeout=timeout, metadata=metadata)))
    request = pb.ModelInferRequest(model_name=model)
    for t in meta.inputs:
        array = random_input(t.datatype, list(t.shape), rng)
        request.inputs.add(name=t.name, datatype=t.datatype, shape=array.shape)
        request.raw_input_contents.append(np.ascontiguousarray(array).tobytes())
    return GrpcConnection(stub, request, timeout, metadata)


# --- udp: a stream; a request is one frame and its result ------------------------------------------------------

class _ResultPort(DatagramProtocol):
    def __init__(self) -> None:
        self.waiting: dict[int, Deferred] = {}

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        from twinfer.protocol import game_pb2

        try:
            result = game_pb2.StreamResult.FromString(data)
        except Exception:  # noqa: BLE001 - a stray datagram
            return
        d = self.waiting.pop(result.sequence, None)
        if d is not None:
            d.callback(result)


class UdpConnection:
    """One stream. Frames the server skips (latest frame wins) never get a result: they time out as `lost`."""

    def __init__(self, reactor: Any, protocol: Any, info: Any, port: Any, results: _ResultPort, frame: bytes,
                 timeout: float) -> None:
        from twinfer.streaming.datagram import Signer

        self.reactor, self.protocol, self.info = reactor, protocol, info
        self.port, self.results, self.frame, self.timeout = port, results, frame, timeout
        self.signer = Signer(bytes(info.key))
        self._sequence = itertools.count(1)

    def infer(self) -> Deferred:
        from twinfer.streaming.datagram import fragment_frame

        sequence = next(self._sequence)
        d: Deferred = Deferred()
        self.results.waiting[sequence] = d
        for datagram in fragment_frame(self.signer, self.info.stream_id, sequence, time.time_ns(), self.frame,
                                       self.info.max_datagram_bytes):
            self.port.write(datagram, (self.info.udp_host, self.info.udp_port))

        def lost(failure: Failure) -> Failure:
            self.results.waiting.pop(sequence, None)
            return failure

        return d.addErrback(lost)

    def ping(self) -> Deferred:
        return self.protocol.ping()

    def login(self, user: str | None = None) -> Deferred:
        return succeed(None)

    def close(self) -> None:
        self.port.stopListening()
        self.protocol.close()


async def connect_udp(reactor: Any, host: str, port: int, model: str, token: str | None, frame_size: int,
                      timeout: float, **_: Any) -> UdpConnection:
    from twinfer.client.twisted_client import connect
    from twinfer.protocol import game_pb2

    protocol = await connect(reactor, host, port, token)
    results = _ResultPort()
    udp = reactor.listenUDP(0, results, interface="127.0.0.1" if host in ("127.0.0.1", "localhost") else "")
    local = protocol.transport.getHost().host
    request = game_pb2.OpenStreamRequest(model=model, pixel_format="GRAY8", width=frame_size, height=frame_size,
                                         targets=[game_pb2.StreamTarget(kind="native", host=local,
                                                                        port=udp.getHost().port)])
    info = await protocol.open_stream(request)
    frame = os.urandom(frame_size * frame_size)
    return UdpConnection(reactor, protocol, info, udp, results, frame, timeout)


CONNECTORS = {"tcp": connect_tcp, "http": connect_http, "grpc": connect_grpc, "udp": connect_udp}
