"""Request and response `parameters` as KServe v2 carries them (HTTP JSON, gRPC InferParameter), and which of them
are the model's.

A client's request parameters reach a python model as `request.parameters()` (JSON), as in Triton: sampling
settings, a voice, a session key. The ones the protocol itself uses (binary outputs, timeout, sequence and
priority fields, the final-response flag) are the server's and are not passed on. A model's response parameters
(`InferenceResponse(parameters={...})`) go back to the client the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tritonclient.grpc import service_pb2 as pb

from twinfer.errors import InvalidInput

Parameters = dict[str, bool | int | float | str]

# The protocol's own parameters (KServe v2, Triton's extensions): read by the server, never handed to a model.
RESERVED = frozenset({
    "binary_data_output", "binary_data_size", "binary_data", "timeout", "priority", "sequence_id",
    "sequence_start", "sequence_end", "headers", "triton_enable_empty_final_response",
})
MAX_PARAMETERS = 1024  # per request (their sizes are bounded by the request's: max_request_bytes / max_message_bytes)


def _model_parameters(pairs: Any) -> Parameters | None:
    """(name, value) pairs -> the model's parameters (the protocol's own left out); None when none remain."""
    out: Parameters = {}
    for key, value in pairs:
        if not isinstance(key, str):
            raise InvalidInput("a parameter's name must be a string")
        if key in RESERVED:
            continue
        if not isinstance(value, (bool, int, float, str)):
            raise InvalidInput(f"parameter {key[:100]!r}: a value is a boolean, a number or a string")
        out[key] = value
    if len(out) > MAX_PARAMETERS:
        raise InvalidInput(f"{len(out)} parameters; at most {MAX_PARAMETERS} are accepted")
    return out or None


def from_json(params: Any) -> Parameters | None:
    """An HTTP request's `parameters` object -> the model's parameters (None when there are none)."""
    return _model_parameters(params.items()) if isinstance(params, dict) else None


def from_grpc(params: Mapping[str, pb.InferParameter]) -> Parameters | None:
    """A gRPC request's `parameters` map -> the model's parameters."""
    return _model_parameters((key, getattr(value, kind)) for key, value in params.items()
                             if (kind := value.WhichOneof("parameter_choice")) is not None)


def set_grpc(target: Any, params: Mapping[str, Any]) -> None:
    """Write parameters into a gRPC message's `parameters` map."""
    for key, value in params.items():
        slot = target[key]
        if isinstance(value, bool):
            slot.bool_param = value
        elif isinstance(value, int):
            slot.int64_param = value
        elif isinstance(value, float):
            slot.double_param = value
        else:
            slot.string_param = str(value)
