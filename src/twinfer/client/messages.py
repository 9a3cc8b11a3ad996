"""Request building and reply decoding, shared by the blocking and the Twisted clients.

Both clients only differ in how they wait (a thread and futures, or the reactor and Deferreds); everything about
the wire lives here, so a protocol change is made once. A `Call` pairs the frame of one request (built for the
request id the client picks) with the function that turns its reply into a result or a typed exception; the
clients' methods are one line each.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np
from google.protobuf.message import Message

from twinfer.client.errors import ServerError, SessionClosed, error_from_wire
from twinfer.protocol import game_pb2
from twinfer.protocol.framing import encode_frame
from twinfer.protocol.tensors import numpy_to_tensor, tensor_to_numpy
from twinfer.protocol.version import PROTOCOL_VERSION

T = TypeVar("T")
Decode = Callable[[game_pb2.ServerMessage], Any]

# A client accepts far larger replies than the server accepts requests: outputs (images, embeddings) can be big,
# and the server is trusted. The limit only stops a corrupt stream from allocating without bound.
MAX_REPLY_BYTES = 1024**3


# --- requests -------------------------------------------------------------------------------------------------

def frame(message: game_pb2.ClientMessage) -> bytes:
    """A ClientMessage ready for the wire."""
    return encode_frame(message.SerializeToString())


def build_login(request_id: int, token: str, client_name: str) -> bytes:
    msg = game_pb2.ClientMessage(request_id=request_id)
    msg.login.token = token
    msg.login.client_name = client_name
    msg.login.protocol_version = PROTOCOL_VERSION
    return frame(msg)


def build_ping(request_id: int) -> bytes:
    """A ping stamped with the monotonic clock: the server only echoes the stamp, so wall-clock jumps can't skew
    the round trip."""
    msg = game_pb2.ClientMessage(request_id=request_id)
    msg.ping.client_time_ns = time.perf_counter_ns()
    return frame(msg)


def build_list_models(request_id: int) -> bytes:
    msg = game_pb2.ClientMessage(request_id=request_id)
    msg.list_models.SetInParent()  # an empty message must still select the oneof
    return frame(msg)


def build_model_metadata(request_id: int, model: str, version: str | None = None) -> bytes:
    msg = game_pb2.ClientMessage(request_id=request_id)
    msg.model_metadata.model = model
    msg.model_metadata.version = version or ""
    return frame(msg)


def build_infer(
    request_id: int,
    model: str,
    inputs: Mapping[str, np.ndarray],
    version: str | None = None,
    outputs: Iterable[str] | None = None,
    timeout_ms: int = 0,
) -> bytes:
    """One InferRequest frame; raises InvalidInput for arrays the wire can't carry (object/str dtypes)."""
    msg = game_pb2.ClientMessage(request_id=request_id)
    infer = msg.infer
    infer.model = model
    infer.version = version or ""
    for name, array in inputs.items():
        numpy_to_tensor(name, np.asarray(array), infer.inputs.add())
    infer.outputs.extend(outputs or ())
    infer.timeout_ms = timeout_ms
    return frame(msg)


def build_body(request_id: int, field: str, body: Message) -> bytes:
    """Any request whose body is a ready-made message (the stream commands)."""
    msg = game_pb2.ClientMessage(request_id=request_id)
    getattr(msg, field).CopyFrom(body)
    return frame(msg)


# --- replies --------------------------------------------------------------------------------------------------

def decode_reply(body: bytes) -> game_pb2.ServerMessage:
    """Parse one frame body; a DecodeError means the stream is corrupt and the connection must go."""
    return game_pb2.ServerMessage.FromString(body)


EVENTS = ("stream_closed", "frame_errors")
MAX_EVENTS = 1000  # events a client keeps for `events` (the oldest go first)


def is_event(msg: game_pb2.ServerMessage) -> bool:
    """A server event (request_id 0): a stream closed by the server, or frames it could not use."""
    return msg.request_id == 0 and msg.WhichOneof("body") in EVENTS


def kicked_error(msg: game_pb2.ServerMessage) -> SessionClosed | None:
    """The SessionClosed a Kicked message announces, or None for any other message."""
    if msg.HasField("kicked"):
        return SessionClosed(msg.kicked.reason or "kicked by the server", msg.kicked.code)
    return None


def raise_if_error(msg: game_pb2.ServerMessage) -> game_pb2.ServerMessage:
    """The reply itself, or its Error (or Kicked) raised as the typed exception."""
    if msg.HasField("error"):
        raise error_from_wire(msg.error.code, msg.error.message)
    kicked = kicked_error(msg)
    if kicked is not None:
        raise kicked
    return msg


def expect(msg: game_pb2.ServerMessage, field: str) -> game_pb2.ServerMessage:
    """The reply after `raise_if_error`, checked not to carry another body than `field`: a reply of the wrong kind
    would otherwise read as empty defaults (an infer with no outputs) instead of failing. A reply with no body at
    all is accepted as `field`'s defaults, since a server that fills in nothing (an empty model list) sends one."""
    raise_if_error(msg)
    kind = msg.WhichOneof("body")
    if kind is not None and kind != field:
        error = ServerError(f"expected a {field!r} reply to request {msg.request_id}, got {kind!r}")
        error.code = game_pb2.ERROR_CODE_INTERNAL
        raise error
    return msg


def infer_outputs(msg: game_pb2.ServerMessage) -> dict[str, np.ndarray]:
    """Output arrays of an infer reply, by name.

    They are read-only views on the reply's bytes (no copy, whatever their size); `.copy()` one to modify it.
    """
    return {t.name: tensor_to_numpy(t) for t in expect(msg, "infer").infer.outputs}


def ping_seconds(msg: game_pb2.ServerMessage) -> float:
    """Round trip of a ping built by `build_ping`, in seconds."""
    return (time.perf_counter_ns() - expect(msg, "pong").pong.client_time_ns) / 1e9


# --- calls: a request and how to read its reply ---------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One request of either client: `build(request_id)` is its frame, `decode(reply)` its result (or raises)."""

    build: Callable[[int], bytes]
    decode: Callable[[game_pb2.ServerMessage], T]


def login(token: str, client_name: str) -> Call[game_pb2.LoginResponse]:
    return Call(lambda rid: build_login(rid, token, client_name), lambda m: expect(m, "login").login)


def ping() -> Call[float]:
    return Call(build_ping, ping_seconds)


def list_models() -> Call[list[game_pb2.ModelStatus]]:
    return Call(build_list_models, lambda m: list(expect(m, "list_models").list_models.models))


def model_metadata(model: str, version: str | None = None) -> Call[game_pb2.ModelMetadataResponse]:
    return Call(lambda rid: build_model_metadata(rid, model, version),
                lambda m: expect(m, "model_metadata").model_metadata)


def infer(
    model: str,
    inputs: Mapping[str, np.ndarray],
    version: str | None = None,
    outputs: Iterable[str] | None = None,
    timeout_ms: int = 0,
) -> Call[dict[str, np.ndarray]]:
    return Call(lambda rid: build_infer(rid, model, inputs, version, outputs, timeout_ms), infer_outputs)


def open_stream(request: game_pb2.OpenStreamRequest) -> Call[game_pb2.OpenStreamResponse]:
    return Call(lambda rid: build_body(rid, "open_stream", request), lambda m: expect(m, "open_stream").open_stream)


def close_stream(stream_id: int) -> Call[game_pb2.StreamAck]:
    request = game_pb2.CloseStreamRequest(stream_id=stream_id)
    return Call(lambda rid: build_body(rid, "close_stream", request), lambda m: expect(m, "stream_ack").stream_ack)


def subscribe(stream_id: int, target: game_pb2.StreamTarget) -> Call[game_pb2.StreamAck]:
    request = game_pb2.SubscribeRequest(stream_id=stream_id, target=target)
    return Call(lambda rid: build_body(rid, "subscribe", request), lambda m: expect(m, "stream_ack").stream_ack)


def unsubscribe(stream_id: int, target: game_pb2.StreamTarget) -> Call[game_pb2.StreamAck]:
    request = game_pb2.UnsubscribeRequest(stream_id=stream_id, target=target)
    return Call(lambda rid: build_body(rid, "unsubscribe", request), lambda m: expect(m, "stream_ack").stream_ack)


def calibrate(stream_id: int, seconds: float) -> Call[game_pb2.CalibrationStatus]:
    request = game_pb2.CalibrateRequest(stream_id=stream_id, seconds=seconds)
    return Call(lambda rid: build_body(rid, "calibrate", request),
                lambda m: expect(m, "calibration_status").calibration_status)
