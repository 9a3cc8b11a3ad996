"""KServe v2 HTTP inference bodies: JSON tensors and Triton's binary tensor data extension.

With the extension, the body is a JSON header of `Inference-Header-Content-Length` bytes followed by the raw
tensors, in input order, of every input whose parameters carry `binary_data_size`. Outputs asked for with
`binary_data: true` (or all, with the request parameter `binary_data_output`) come back the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from twinfer.errors import InvalidInput
from twinfer.inference.datatypes import from_numpy_dtype
from twinfer.inference.limits import ElementBudget
from twinfer.inference.types import InferenceRequest, InferenceResult
from twinfer.kserve.parameters import from_json as model_parameters
from twinfer.kserve.tensor_codec import check_shape, from_json_data, from_raw, to_json_data, to_raw

# orjson writes these numpy dtypes itself (OPT_SERIALIZE_NUMPY), with no Python float objects in between.
_ORJSON_NATIVE = frozenset("fiub")

HEADER_LENGTH = b"inference-header-content-length"


@dataclass(slots=True)
class ParsedInfer:
    request: InferenceRequest
    request_id: str
    binary_outputs: set[str]
    binary_default: bool


def parse_infer(model: str, version: str | None, body: bytes, header_length: bytes | None,
                budget: ElementBudget | None = None) -> ParsedInfer:
    """`budget` caps the elements the request's shapes may declare (checked before any allocation)."""
    budget = budget or ElementBudget()
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise InvalidInput(f"Inference-Header-Content-Length {header_length.decode('latin-1')!r} "
                               f"does not fit a {len(body)}-byte body")
        split = int(header_length)
    else:
        split = len(body)
    try:
        header = orjson.loads(memoryview(body)[:split])
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"request body is not valid JSON: {exc}") from None
    if not isinstance(header, dict) or not isinstance(header.get("inputs"), list):
        raise InvalidInput("request JSON needs an `inputs` list")
    binary = memoryview(body)[split:]
    offset = 0
    inputs = {}
    for entry in header["inputs"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise InvalidInput("every input needs a `name`")
        name = entry["name"]
        datatype = entry.get("datatype")
        if not isinstance(datatype, str):
            raise InvalidInput(f"input {name!r}: missing `datatype`")
        shape = check_shape(name, entry.get("shape"))
        if name in inputs:
            raise InvalidInput(f"input {name!r} given twice")
        params = entry.get("parameters") or {}
        size = params.get("binary_data_size") if isinstance(params, dict) else None
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise InvalidInput(f"input {name!r}: binary_data_size {size!r} runs past the end of the body")
            inputs[name] = from_raw(name, datatype, shape, binary[offset : offset + size], budget)
            offset += size
        elif "data" in entry:
            inputs[name] = from_json_data(name, datatype, shape, entry["data"], budget)
        else:
            raise InvalidInput(f"input {name!r}: neither `data` nor binary_data_size")
    if offset != len(binary):
        raise InvalidInput(f"{len(binary) - offset} bytes of binary data belong to no input")
    params = header.get("parameters") or {}
    binary_default = bool(params.get("binary_data_output", False)) if isinstance(params, dict) else False
    outputs, binary_outputs = None, set()
    if isinstance(header.get("outputs"), list):
        outputs = []
        for entry in header["outputs"]:
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                raise InvalidInput("every requested output needs a `name`")
            outputs.append(entry["name"])
            oparams = entry.get("parameters") or {}
            if isinstance(oparams, dict) and oparams.get("binary_data", binary_default):
                binary_outputs.add(entry["name"])
    timeout_us = params.get("timeout") if isinstance(params, dict) else None
    request = InferenceRequest(
        model=model,
        inputs=inputs,
        version=version,
        outputs=outputs,
        timeout_ms=max(1, int(timeout_us) // 1000) if isinstance(timeout_us, int) and timeout_us > 0 else None,
        parameters=model_parameters(params),
    )
    request_id = header.get("id", "")
    return ParsedInfer(request, request_id if isinstance(request_id, str) else str(request_id), binary_outputs,
                       binary_default and outputs is None)


def json_data(array: np.ndarray) -> Any:
    """An output's `data` for orjson: the flat array itself where orjson can write it, else a list."""
    if array.dtype.kind in _ORJSON_NATIVE and array.dtype.isnative:
        return np.ascontiguousarray(array).ravel()
    return to_json_data(array)


def encode_infer(parsed: ParsedInfer, result: InferenceResult) -> tuple[bytes, int | None]:
    """(body, JSON header length or None when nothing is binary)."""
    outputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, array in result.outputs.items():
        entry: dict[str, Any] = {"name": name, "shape": list(array.shape)}
        if parsed.binary_default or name in parsed.binary_outputs:
            datatype, raw = to_raw(array)
            entry["datatype"] = datatype
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            entry["datatype"] = from_numpy_dtype(array.dtype)
            entry["data"] = json_data(array)
        outputs.append(entry)
    document: dict[str, Any] = {"model_name": result.model, "model_version": result.version, "outputs": outputs}
    if parsed.request_id:
        document["id"] = parsed.request_id
    if result.parameters:
        document["parameters"] = result.parameters
    header = orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return header, None
    return header + b"".join(blobs), len(header)
