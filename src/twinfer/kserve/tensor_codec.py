"""KServe tensor payloads <-> numpy: JSON `data` lists, raw little-endian bytes, and the BYTES element framing
(each element a 4-byte little-endian length, then its bytes) used by both the HTTP binary extension and gRPC."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from twinfer.errors import InvalidInput
from twinfer.inference.datatypes import from_numpy_dtype, to_numpy_dtype
from twinfer.inference.limits import ElementBudget, short_shape

_LEN = struct.Struct("<I")
MAX_DIMS = 32  # numpy's own limit is 64; no model takes more than a handful


def check_shape(name: str, shape: Any) -> tuple[int, ...]:
    if not isinstance(shape, (list, tuple)) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise InvalidInput(f"input {name!r}: shape must be a list of non-negative integers, got {short_shape(shape)}")
    if len(shape) > MAX_DIMS:
        raise InvalidInput(f"input {name!r}: {len(shape)} dimensions; at most {MAX_DIMS}")
    return tuple(shape)


def serialize_bytes(array: np.ndarray) -> bytes:
    parts = []
    for item in array.ravel():
        data = item if isinstance(item, bytes) else str(item).encode("utf-8")
        parts.append(_LEN.pack(len(data)))
        parts.append(data)
    return b"".join(parts)


def deserialize_bytes(name: str, buffer: bytes | memoryview, count: int) -> np.ndarray:
    view, offset = memoryview(buffer), 0
    if count * _LEN.size > len(view):  # each element needs its 4-byte length: refuse before allocating `count`
        raise InvalidInput(f"input {name!r}: {len(view)} bytes cannot hold {count} BYTES elements "
                           f"(each needs at least {_LEN.size})")
    out = np.empty(count, dtype=object)
    for i in range(count):
        if offset + 4 > len(view):
            raise InvalidInput(f"input {name!r}: BYTES data ends inside element {i}")
        (length,) = _LEN.unpack_from(view, offset)
        offset += 4
        if offset + length > len(view):
            raise InvalidInput(f"input {name!r}: BYTES element {i} runs past the data")
        out[i] = bytes(view[offset : offset + length])
        offset += length
    if offset != len(view):
        raise InvalidInput(f"input {name!r}: {len(view) - offset} bytes left after {count} BYTES elements")
    return out


def from_raw(name: str, datatype: str, shape: tuple[int, ...], raw: bytes | memoryview,
             budget: ElementBudget | None = None) -> np.ndarray:
    """A tensor from raw bytes (HTTP binary extension, gRPC raw_input_contents)."""
    count = (budget or ElementBudget()).take(name, shape)
    if datatype == "BYTES":
        return deserialize_bytes(name, raw, count).reshape(shape)
    dtype = to_numpy_dtype(datatype)
    if len(raw) != count * dtype.itemsize:
        raise InvalidInput(
            f"input {name!r}: {len(raw)} bytes of data, but shape {list(shape)} of {datatype} needs "
            f"{count * dtype.itemsize}"
        )
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def to_raw(array: np.ndarray) -> tuple[str, bytes]:
    """(datatype, raw little-endian bytes) of an output."""
    datatype = from_numpy_dtype(array.dtype)
    if datatype == "BYTES":
        return datatype, serialize_bytes(array)
    return datatype, np.ascontiguousarray(array, dtype=to_numpy_dtype(datatype)).tobytes()


def from_json_data(name: str, datatype: str, shape: tuple[int, ...], data: Any,
                   budget: ElementBudget | None = None) -> np.ndarray:
    """A tensor from a JSON `data` list (flat row-major or nested)."""
    count = (budget or ElementBudget()).take(name, shape)
    if not isinstance(data, list):
        raise InvalidInput(f"input {name!r}: `data` must be a list")
    if datatype == "BYTES":
        flat = _flatten(data)
        if len(flat) != count:
            raise InvalidInput(f"input {name!r}: {len(flat)} values for shape {list(shape)}")
        out = np.empty(count, dtype=object)
        for i, item in enumerate(flat):
            if not isinstance(item, str):
                raise InvalidInput(f"input {name!r}: BYTES values must be strings in JSON")
            out[i] = item.encode("utf-8")
        return out.reshape(shape)
    dtype = to_numpy_dtype(datatype)
    try:
        array = np.asarray(data, dtype=dtype)
    except (ValueError, TypeError, OverflowError):
        raise InvalidInput(f"input {name!r}: `data` is not a list of {datatype} values") from None
    if array.size != count:
        raise InvalidInput(f"input {name!r}: {array.size} values for shape {list(shape)}")
    return array.reshape(shape)


def to_json_data(array: np.ndarray) -> list[Any]:
    if array.dtype == object:
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in array.ravel()]
    return array.ravel().tolist()


def _flatten(data: list[Any]) -> list[Any]:
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out
