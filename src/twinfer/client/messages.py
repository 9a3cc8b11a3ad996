"""Request building and reply decoding shared by the blocking and the Twisted clients."""

from __future__ import annotations

import time

import numpy as np

from twinfer.client.errors import SessionClosed, error_from_wire
from twinfer.protocol import game_pb2
from twinfer.protocol.framing import encode_frame
from twinfer.protocol.tensors import numpy_to_tensor, tensor_to_numpy


def frame(message: game_pb2.ClientMessage) -> bytes:
    return encode_frame(message.SerializeToString())


def build_login(request_id: int, token: str, client_name: str) -> bytes:
    msg = game_pb2.ClientMessage(request_id=request_id)
    msg.login.token = token
    msg.login.client_name = client_name
    return frame(msg)


def build_ping(request_id: int) -> bytes:
    msg = game_pb2.ClientMessage(request_id=request_id)
    msg.ping.client_time_ns = time.time_ns()
    return frame(msg)


def build_list_models(request_id: int) -> bytes:
    msg = game_pb2.ClientMessage(request_id=request_id)
    msg.list_models.SetInParent()
    return frame(msg)


def build_model_metadata(request_id: int, model: str, version: str | None) -> bytes:
    msg = game_pb2.ClientMessage(request_id=request_id)
    msg.model_metadata.model = model
    msg.model_metadata.version = version or ""
    return frame(msg)


def build_infer(
    request_id: int,
    model: str,
    inputs: dict[str, np.ndarray],
    version: str | None = None,
    outputs: list[str] | None = None,
    timeout_ms: int = 0,
) -> bytes:
    msg = game_pb2.ClientMessage(request_id=request_id)
    infer = msg.infer
    infer.model = model
    infer.version = version or ""
    for name, array in inputs.items():
        numpy_to_tensor(name, np.asarray(array), infer.inputs.add())
    infer.outputs.extend(outputs or ())
    infer.timeout_ms = timeout_ms
    return frame(msg)


def build_body(request_id: int, field: str, body) -> bytes:
    """Any request whose body is a ready-made message (stream control)."""
    msg = game_pb2.ClientMessage(request_id=request_id)
    getattr(msg, field).CopyFrom(body)
    return frame(msg)


def decode_reply(body: bytes) -> game_pb2.ServerMessage:
    msg = game_pb2.ServerMessage()
    msg.ParseFromString(body)
    return msg


def check(msg: game_pb2.ServerMessage) -> game_pb2.ServerMessage:
    """The reply itself, or its error raised as a typed exception."""
    if msg.HasField("error"):
        raise error_from_wire(msg.error.code, msg.error.message)
    if msg.HasField("kicked"):
        raise SessionClosed(msg.kicked.reason, msg.kicked.code)
    return msg


def infer_outputs(msg: game_pb2.ServerMessage) -> dict[str, np.ndarray]:
    """Output arrays of an infer reply (read-only views on the reply's bytes)."""
    return {t.name: tensor_to_numpy(t) for t in check(msg).infer.outputs}


def ping_seconds(msg: game_pb2.ServerMessage) -> float:
    return (time.time_ns() - check(msg).pong.client_time_ns) / 1e9
