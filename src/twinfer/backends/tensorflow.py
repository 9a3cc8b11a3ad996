"""TensorFlow backend: a SavedModel directory (model.savedmodel/, its `serving_default` signature) or a Keras v3
file (model.keras, loaded with safe_mode so a Lambda layer's Python bytecode is refused, not run).

A SavedModel's signature names and types its tensors, so config loading derives a config from it as it does from
an ONNX graph (`saved_model_signature`); a .keras file needs its inputs/outputs in config.yaml. Both are called
through one traced function with a None batch dimension, so requests of any batch size do not retrace.

Threads: TensorFlow's intra/inter-op pools are process-wide and fixed once TensorFlow has run anything: the first
TensorFlow model loaded sets them from its options; later ones share them. A graph is a program: serve only
models you would run (TensorFlow's own security guidance); safe_mode covers the Keras-specific Python hook.

Devices: instance_group KIND_GPU / KIND_AUTO (twinfer.inference.placement) runs an instance thread's calls under
`tf.device("/GPU:N")`; outputs come back as numpy. KIND_GPU where TensorFlow sees no GPU (tensorflow-cpu, no
driver) is refused with one line.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from twisted.logger import Logger

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf

from twinfer.backends.base import BackendOptions
from twinfer.backends.instances import PerInstance
from twinfer.errors import ModelLoadError
from twinfer.inference.datatypes import from_numpy_dtype
from twinfer.inference.model_config import ModelConfig
from twinfer.inference.placement import GpuInventory, place_instances

_log = Logger()


def tensorflow_inventory() -> GpuInventory:
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return GpuInventory(True, len(gpus))
    return GpuInventory(False, 0, "a GPU visible to TensorFlow: tf.config.list_physical_devices('GPU') is empty "
                                  "(tensorflow-cpu, or no CUDA device or driver)")


def _configure_threads(intra: int, inter: int) -> None:
    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    except RuntimeError:
        pass  # TensorFlow already initialised: the first model's setting stays (see the module docstring)


def _datatype(dtype: tf.DType) -> str:
    return from_numpy_dtype(np.dtype(dtype.as_numpy_dtype))


def saved_model_signature(path: Path) -> dict[str, dict[str, tuple[str, tuple[int, ...] | None]]]:
    """{"inputs"|"outputs": name -> (datatype, full shape, -1 = dynamic)} of a SavedModel's serving signature."""
    function = _serving_function(path, "signature")
    _, kwargs = function.structured_input_signature

    def describe(spec: Any) -> tuple[str, tuple[int, ...] | None]:
        dims = spec.shape.as_list() if spec.shape.rank is not None else None
        return _datatype(spec.dtype), None if dims is None else tuple(-1 if d is None else d for d in dims)

    return {"inputs": {name: describe(spec) for name, spec in kwargs.items()},
            "outputs": {name: describe(spec) for name, spec in function.structured_outputs.items()}}


def _serving_function(path: Path, what: str) -> Any:
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as exc:  # TF raises many kinds; all mean "cannot load"
        raise ModelLoadError(f"{path}: not a loadable SavedModel ({' '.join(str(exc).split())[:300]})") from None
    function = loaded.signatures.get("serving_default")
    if function is None:
        raise ModelLoadError(f"{path}: the SavedModel has no serving_default {what}")
    function._twinfer_owner = loaded  # keep the trackable objects (variables) alive with the function
    return function


class TensorFlowBackend:
    def __init__(self, config: ModelConfig, model_file: Path, options: BackendOptions) -> None:
        _configure_threads(int(config.parameters.get("intra_op_threads", options.intra_op_threads)),
                           int(config.parameters.get("inter_op_threads", options.inter_op_threads)))
        self._config = config
        placement = place_instances(config, tensorflow_inventory)
        for note in placement.notes:
            _log.info("{note}", note=note)
        self.instance_count = len(placement.devices)
        self.devices = placement.devices
        self._per_instance = (PerInstance([f"/GPU:{d.index}" if d.is_gpu else "/CPU:0" for d in placement.devices])
                              if placement.uses_gpu else None)
        if model_file.suffix == ".savedmodel":
            self._function = _serving_function(model_file, "signature")
            self._keyword = True
        else:
            import keras

            try:
                model = keras.saving.load_model(str(model_file), compile=False, safe_mode=True)
            except Exception as exc:  # ValueError for unsafe Lambda layers, others for broken files
                raise ModelLoadError(f"model {config.name!r}: Keras cannot load {model_file} with safe_mode "
                                     f"({' '.join(str(exc).split())[:300]})") from None
            specs = [tf.TensorSpec([None, *t.dims], tf.as_dtype(_numpy(t.datatype))) for t in config.inputs]
            self._function = tf.function(lambda *xs: model(list(xs) if len(xs) > 1 else xs[0], training=False),
                                         input_signature=specs)
            self._model = model
            self._keyword = False
        self._outputs = [t.name for t in config.outputs]

    def run(self, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        if self._per_instance is not None:
            with tf.device(self._per_instance.current()):
                return self._run(inputs, outputs)
        return self._run(inputs, outputs)

    def _run(self, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        if self._keyword:
            result = self._function(**{name: tf.constant(value) for name, value in inputs.items()})
        else:
            result = self._function(*[tf.constant(inputs[t.name]) for t in self._config.inputs])
        if not isinstance(result, dict):
            result = dict(zip(self._outputs, result if isinstance(result, list | tuple) else [result]))
        missing = [name for name in outputs if name not in result]
        if missing:
            raise ModelLoadError(f"model {self._config.name!r}: outputs {missing} not produced (it gives "
                                 f"{sorted(result)})")
        return {name: result[name].numpy() for name in outputs}

    def close(self) -> None:
        self._function = None
        self._model = None


def _numpy(datatype: str) -> np.dtype:
    from twinfer.inference.datatypes import to_numpy_dtype

    return to_numpy_dtype(datatype)
