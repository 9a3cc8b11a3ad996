"""ModelInferRequest / ModelInferResponse <-> the facade's InferenceRequest / InferenceResult."""

from __future__ import annotations

import numpy as np
from tritonclient.grpc import service_pb2 as pb

from twinfer.errors import InvalidInput
from twinfer.inference.types import InferenceRequest, InferenceResult
from twinfer.inference.limits import ElementBudget
from twinfer.kserve.parameters import from_grpc, set_grpc
from twinfer.kserve.tensor_codec import check_shape, from_json_data, from_raw, to_raw

# Which typed `contents` field carries each datatype (KServe v2 gRPC).
CONTENTS_FIELD = {
    "BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
    "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents",
    "UINT64": "uint64_contents", "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents",
}


def _typed(tensor: pb.ModelInferRequest.InferInputTensor, shape: tuple[int, ...], budget: ElementBudget) -> np.ndarray:
    field = CONTENTS_FIELD.get(tensor.datatype)
    if field is None:
        raise InvalidInput(f"input {tensor.name!r}: {tensor.datatype} needs raw_input_contents")
    contents = getattr(tensor.contents, field)
    if tensor.datatype == "BYTES":
        count = budget.take(tensor.name, shape)
        if len(contents) != count:
            raise InvalidInput(f"input {tensor.name!r}: {len(contents)} values for shape {list(shape)}")
        array = np.empty(count, dtype=object)
        array[:] = list(contents)
        return array.reshape(shape)
    return from_json_data(tensor.name, tensor.datatype, shape, list(contents), budget)


def decode_request(request: pb.ModelInferRequest, budget: ElementBudget | None = None) -> InferenceRequest:
    """`budget` caps the elements the request's shapes may declare (checked before any allocation)."""
    budget = budget or ElementBudget()
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidInput(f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs")
    inputs: dict[str, np.ndarray] = {}
    for i, tensor in enumerate(request.inputs):
        if tensor.name in inputs:
            raise InvalidInput(f"input {tensor.name!r} given twice")
        shape = check_shape(tensor.name, list(tensor.shape))
        inputs[tensor.name] = (from_raw(tensor.name, tensor.datatype, shape, raw[i], budget) if raw
                               else _typed(tensor, shape, budget))
    return InferenceRequest(
        model=request.model_name,
        inputs=inputs,
        version=request.model_version or None,
        outputs=[o.name for o in request.outputs] or None,
        timeout_ms=_timeout_ms(request),
        parameters=from_grpc(request.parameters) if request.parameters else None,
    )


def _timeout_ms(request: pb.ModelInferRequest) -> int | None:
    """Triton's `timeout` parameter: microseconds as an integer; 0 or absent = the model's default."""
    if "timeout" not in request.parameters:
        return None
    timeout = request.parameters["timeout"]
    kind = timeout.WhichOneof("parameter_choice")
    if kind not in ("int64_param", "uint64_param"):
        raise InvalidInput(f"parameter 'timeout' must be an integer number of microseconds, got {kind or 'nothing'}")
    micros = timeout.int64_param if kind == "int64_param" else timeout.uint64_param
    if micros < 0:
        raise InvalidInput(f"parameter 'timeout' must not be negative, got {micros}")
    return max(1, micros // 1000) if micros else None


def encode_response(request_id: str, result: InferenceResult) -> pb.ModelInferResponse:
    response = pb.ModelInferResponse(model_name=result.model, model_version=result.version, id=request_id)
    for name, array in result.outputs.items():
        datatype, raw = to_raw(array)
        response.outputs.add(name=name, datatype=datatype, shape=array.shape)
        response.raw_output_contents.append(raw)
    if result.parameters:
        set_grpc(response.parameters, result.parameters)
    return response
