"""KServe v2 datatype names and their numpy equivalents: one vocabulary for every transport."""

from __future__ import annotations

import numpy as np

from twinfer.errors import InvalidInput

# Little-endian on the wire everywhere; numpy dtypes here are explicit about it.
_NUMPY_BY_NAME: dict[str, np.dtype] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}
_NAME_BY_KIND: dict[tuple[str, int], str] = {
    (dt.kind, dt.itemsize): name for name, dt in _NUMPY_BY_NAME.items() if name != "BYTES"
}

_NAME_BY_DTYPE: dict[np.dtype, str] = {dt: name for name, dt in _NUMPY_BY_NAME.items() if name != "BYTES"}

DATATYPES: tuple[str, ...] = tuple(_NUMPY_BY_NAME)

# ONNX TensorProto element types -> KServe names.
ONNX_TO_DATATYPE: dict[int, str] = {
    1: "FP32", 2: "UINT8", 3: "INT8", 4: "UINT16", 5: "INT16", 6: "INT32", 7: "INT64", 8: "BYTES",
    9: "BOOL", 10: "FP16", 11: "FP64", 12: "UINT32", 13: "UINT64",
}
# onnxruntime's type strings ("tensor(float)") -> KServe names.
ORT_TYPE_TO_DATATYPE: dict[str, str] = {
    "tensor(float)": "FP32", "tensor(uint8)": "UINT8", "tensor(int8)": "INT8", "tensor(uint16)": "UINT16",
    "tensor(int16)": "INT16", "tensor(int32)": "INT32", "tensor(int64)": "INT64", "tensor(string)": "BYTES",
    "tensor(bool)": "BOOL", "tensor(float16)": "FP16", "tensor(double)": "FP64", "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
}


def to_numpy_dtype(datatype: str) -> np.dtype:
    """The numpy dtype of a KServe datatype name; InvalidInput for a name nobody defined."""
    try:
        return _NUMPY_BY_NAME[datatype]
    except KeyError:
        raise InvalidInput(f"unknown datatype {datatype!r}; expected one of {', '.join(DATATYPES)}") from None


def from_numpy_dtype(dtype: np.dtype) -> str:
    """The KServe datatype name of a numpy dtype (object and str/bytes arrays are BYTES)."""
    name = _NAME_BY_DTYPE.get(dtype)  # the usual case, once per tensor on every request: one dict lookup
    if name is not None:
        return name
    dtype = np.dtype(dtype)
    if dtype.kind in ("O", "S", "U"):
        return "BYTES"
    try:
        return _NAME_BY_KIND[(dtype.kind, dtype.itemsize)]
    except KeyError:
        raise InvalidInput(f"numpy dtype {dtype} has no KServe datatype") from None


def element_size(datatype: str) -> int:
    """Bytes per element of a fixed-size datatype (BYTES has none)."""
    if datatype == "BYTES":
        raise InvalidInput("BYTES tensors have no fixed element size")
    return to_numpy_dtype(datatype).itemsize
