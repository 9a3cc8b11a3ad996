"""Checks a request against its model's signature, so a bad request fails with a precise InvalidInput and never
reaches a backend (where it would cost an instance, or fail a whole batch)."""

from __future__ import annotations

import numpy as np

from twinfer.errors import InvalidInput
from twinfer.inference.datatypes import from_numpy_dtype
from twinfer.inference.model_config import ModelConfig


def validate_inputs(config: ModelConfig, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The inputs in the config's order, each checked for name, datatype, rank, dims and batch size."""
    for name in inputs:
        if config.input(name) is None:
            expected = ", ".join(t.name for t in config.inputs)
            raise InvalidInput(f"model {config.name!r} has no input {name!r} (inputs: {expected})")
    ordered: dict[str, np.ndarray] = {}
    batch: int | None = None
    batching = config.batching
    for spec in config.inputs:
        array = inputs.get(spec.name)
        if array is None:
            if spec.optional:
                continue
            raise InvalidInput(f"model {config.name!r}: missing input {spec.name!r}")
        datatype = from_numpy_dtype(array.dtype)
        if datatype != spec.datatype:
            raise InvalidInput(f"input {spec.name!r}: datatype {datatype}, model expects {spec.datatype}")
        shape = array.shape
        dims = spec.dims
        if len(shape) != len(dims) + batching or not _dims_match(dims, shape[1:] if batching else shape):
            raise InvalidInput(f"input {spec.name!r}: shape {list(shape)}, model expects {config.full_shape(spec)} "
                               "(-1 = any)")
        if batching:
            rows = shape[0]
            if not 1 <= rows <= config.max_batch_size:
                raise InvalidInput(f"input {spec.name!r}: batch size {rows} outside 1..{config.max_batch_size}")
            if batch is not None and rows != batch:
                raise InvalidInput(f"inputs disagree on batch size: {batch} and {rows} ({spec.name!r})")
            batch = rows
        ordered[spec.name] = array
    if not ordered and config.inputs:  # every input optional and none sent
        raise InvalidInput(f"model {config.name!r}: a request needs at least one input")
    return ordered


def _dims_match(dims: tuple[int, ...], shape: tuple[int, ...]) -> bool:
    for want, got in zip(dims, shape):
        if want != -1 and want != got:
            return False
    return True


def validate_outputs(config: ModelConfig, requested: list[str] | None) -> list[str]:
    """The output names to compute: every output when none were asked for."""
    if not requested:
        return [t.name for t in config.outputs]
    for name in requested:
        if config.output(name) is None:
            expected = ", ".join(t.name for t in config.outputs)
            raise InvalidInput(f"model {config.name!r} has no output {name!r} (outputs: {expected})")
    return list(dict.fromkeys(requested))
