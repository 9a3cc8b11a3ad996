"""Game-protocol tensors (`twinfer.v1.Tensor`: raw little-endian bytes + datatype + shape) <-> numpy arrays."""

from __future__ import annotations

import numpy as np

from twinfer.errors import InvalidInput
from twinfer.inference.datatypes import from_numpy_dtype, to_numpy_dtype
from twinfer.inference.limits import ElementBudget
from twinfer.kserve.tensor_codec import MAX_DIMS, check_shape
from twinfer.protocol import game_pb2


def tensor_to_numpy(tensor: game_pb2.Tensor, budget: ElementBudget | None = None) -> np.ndarray:
    """Decode one wire tensor without copying its bytes; InvalidInput when size, shape and datatype disagree or
    the shape declares more elements than the request's budget (checked before anything is allocated)."""
    if tensor.datatype == "BYTES":
        raise InvalidInput(f"input {tensor.name!r}: BYTES tensors are not supported on the game protocol")
    dtype = to_numpy_dtype(tensor.datatype)
    shape = tuple(tensor.shape)  # int64s from the wire: only their sign and count need checking
    if len(shape) > MAX_DIMS or (shape and min(shape) < 0):
        check_shape(tensor.name, shape)  # raises the transports' common message
    expected = (budget or ElementBudget()).take(tensor.name, shape) * dtype.itemsize
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
