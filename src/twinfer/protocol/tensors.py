"""Game-protocol tensors (`twinfer.v1.Tensor`: raw little-endian bytes + datatype + shape) <-> numpy arrays."""

from __future__ import annotations

import math

import numpy as np

from twinfer.errors import InvalidInput
from twinfer.inference.datatypes import from_numpy_dtype, to_numpy_dtype
from twinfer.protocol import game_pb2


def tensor_to_numpy(tensor: game_pb2.Tensor) -> np.ndarray:
    """Decode one wire tensor without copying its bytes; InvalidInput when size, shape and datatype disagree."""
    if tensor.datatype == "BYTES":
        raise InvalidInput(f"input {tensor.name!r}: BYTES tensors are not supported on the game protocol")
    dtype = to_numpy_dtype(tensor.datatype)
    shape = tuple(tensor.shape)
    if any(d < 0 for d in shape):
        raise InvalidInput(f"input {tensor.name!r}: negative dimension in shape {list(shape)}")
    expected = math.prod(shape) * dtype.itemsize
    if len(tensor.data) != expected:
        raise InvalidInput(
            f"input {tensor.name!r}: {len(tensor.data)} bytes of data, but shape {list(shape)} of "
            f"{tensor.datatype} needs {expected}"
        )
    return np.frombuffer(tensor.data, dtype=dtype).reshape(shape)


def numpy_to_tensor(name: str, array: np.ndarray, out: game_pb2.Tensor | None = None) -> game_pb2.Tensor:
    """Encode one array as a wire tensor (little-endian, C order)."""
    tensor = out if out is not None else game_pb2.Tensor()
    datatype = from_numpy_dtype(array.dtype)
    if datatype == "BYTES":
        raise InvalidInput(f"tensor {name!r}: BYTES tensors are not supported on the game protocol")
    array = np.ascontiguousarray(array, dtype=to_numpy_dtype(datatype))
    tensor.name = name
    tensor.datatype = datatype
    tensor.shape[:] = array.shape
    tensor.data = array.tobytes()
    return tensor
