"""TFLite backend (LiteRT, the `ai-edge-litert` package): model.tflite, no TensorFlow needed.

Why it exists: the MediaPipe face models are TFLite files, and LiteRT's XNNPACK kernels run the landmark and iris
models about twice as fast per core as ONNX Runtime runs their tf2onnx conversions (docs/face_models.md).

Threads: a LiteRT Interpreter is not thread-safe, so each instance thread gets its own (created on first use from
the same model bytes); `invoke` releases the GIL, so instances run in parallel.

Batching: a .tflite file fixes its batch at 1 in the graph. `resize_tensor_input` + `allocate_tensors` (tens of
microseconds) lets most graphs run a batch of N, but a graph may fold the batch into a hard-coded Reshape and mix
items (BlazeFace concatenates its two anchor heads after flattening them: a batch of 8 comes out as 1 x 7168 rows
in head-major order). So at load the backend runs a batch of two different inputs and compares it, item by item,
with two batch-1 runs: if they agree (after reshaping each output to [batch, *dims]) batches run in one invoke,
otherwise item by item through the batch-1 graph. Always correct; fast where the graph allows. The config's
`parameters.batching` (`auto`, `resize`, `loop`) overrides the probe.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from twinfer.backends.base import BackendOptions
from twinfer.errors import ModelLoadError
from twinfer.inference.datatypes import from_numpy_dtype, to_numpy_dtype
from twinfer.inference.model_config import ModelConfig

BATCHING_MODES = ("auto", "resize", "loop")


class _Runner:
    """One interpreter and the batch size its tensors are allocated for (one per instance thread)."""

    def __init__(self, model: bytes, threads: int, config: ModelConfig) -> None:
        self.interpreter = Interpreter(model_content=model, num_threads=threads)
        self.interpreter.allocate_tensors()
        self.inputs = {d["name"]: d for d in self.interpreter.get_input_details()}
        self.outputs = {d["name"]: d for d in self.interpreter.get_output_details()}
        self.batch = 1
        self._config = config

    def resize(self, batch: int) -> None:
        if batch == self.batch:
            return
        for tensor in self._config.inputs:
            detail = self.inputs[tensor.name]
            self.interpreter.resize_tensor_input(detail["index"], [batch, *detail["shape"][1:]])
        self.interpreter.allocate_tensors()
        self.batch = batch

    def invoke(self, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        for name, value in inputs.items():
            self.interpreter.set_tensor(self.inputs[name]["index"], value)
        self.interpreter.invoke()
        return {name: self.interpreter.get_tensor(self.outputs[name]["index"]).copy() for name in outputs}


def tflite_signature(path: Path) -> dict[str, dict[str, tuple[str, tuple[int, ...] | None]]]:
    """{"inputs"|"outputs": name -> (datatype, full shape)} as the .tflite declares them (-1 where its shape
    signature is dynamic). A file that fixes batch 1 derives a config without batching: resizing is only safe
    where the load-time probe says so, which needs a config that asks for batching (max_batch_size > 0)."""
    try:
        interpreter = Interpreter(model_path=str(path), num_threads=1)
    except (ValueError, RuntimeError) as exc:
        raise ModelLoadError(f"{path}: not a loadable .tflite ({' '.join(str(exc).split())[:300]})") from None

    def describe(detail: dict[str, Any]) -> tuple[str, tuple[int, ...] | None]:
        shape = detail.get("shape_signature", detail["shape"])
        return from_numpy_dtype(np.dtype(detail["dtype"])), tuple(int(d) for d in shape)

    return {"inputs": {d["name"]: describe(d) for d in interpreter.get_input_details()},
            "outputs": {d["name"]: describe(d) for d in interpreter.get_output_details()}}


class TFLiteBackend:
    # Each calling thread gets its own interpreter (`_runner`), so any thread may call `run` (ModelVersion.run_inline).
    thread_safe = True

    def __init__(self, config: ModelConfig, model_file: Path, options: BackendOptions) -> None:
        self._config = config
        self._threads = int(config.parameters.get("intra_op_threads", options.intra_op_threads))
        self._model = model_file.read_bytes()
        self._local = threading.local()
        try:
            first = self._runner()
        except (ValueError, RuntimeError) as exc:  # LiteRT's errors for a file it cannot parse or allocate
            raise ModelLoadError(f"model {config.name!r}: LiteRT cannot load {model_file}: {exc}") from exc
        self._check_signature(first)
        mode = config.parameters.get("batching", "auto")
        if mode not in BATCHING_MODES:
            raise ModelLoadError(f"model {config.name!r}: parameters.batching {mode!r} is not one of "
                                 f"{', '.join(BATCHING_MODES)}")
        if not config.batching:
            mode = "none"
        elif mode == "auto":
            mode = "resize" if self._batches_exactly(first) else "loop"
        self.batching_mode = mode

    def _runner(self) -> _Runner:
        runner = getattr(self._local, "runner", None)
        if runner is None:
            runner = self._local.runner = _Runner(self._model, self._threads, self._config)
        return runner

    def _check_signature(self, runner: _Runner) -> None:
        """Refuse a config naming tensors the .tflite does not have, with other datatypes or per-item sizes."""
        for kind, details in (("inputs", runner.inputs), ("outputs", runner.outputs)):
            for tensor in getattr(self._config, kind):
                found = details.get(tensor.name)
                if found is None:
                    raise ModelLoadError(f"model {self._config.name!r}: config names tensor {tensor.name!r}, "
                                         f"the .tflite {kind} are {sorted(details)}")
                datatype = from_numpy_dtype(np.dtype(found["dtype"]))
                if datatype != tensor.datatype:
                    raise ModelLoadError(f"model {self._config.name!r}: tensor {tensor.name!r} is {datatype} in "
                                         f"the .tflite, {tensor.datatype} in the config")
                shape = [int(d) for d in found["shape"]]
                item = shape[1:] if self._config.batching else shape
                if self._config.batching and shape[0] != 1 or not _fits(tensor.dims, item):
                    raise ModelLoadError(f"model {self._config.name!r}: tensor {tensor.name!r} has shape {shape} "
                                         f"in the .tflite, config dims {list(tensor.dims)}"
                                         + (" after a batch of 1" if self._config.batching else ""))

    def _batches_exactly(self, runner: _Runner) -> bool:
        """Does one resized invoke of two different items equal two batch-1 invokes, output for output?"""
        rng = np.random.default_rng(0)
        sample = {t.name: rng.uniform(0, 1, (2, *runner.inputs[t.name]["shape"][1:]))
                  .astype(to_numpy_dtype(t.datatype)) for t in self._config.inputs}
        names = [t.name for t in self._config.outputs]
        singles = [runner.invoke({k: v[i:i + 1] for k, v in sample.items()}, names) for i in range(2)]
        try:
            runner.resize(2)
            batched = self._shaped(runner.invoke(sample, names), 2)
        except (ValueError, RuntimeError):
            return False
        finally:
            runner.resize(1)
        return all(np.allclose(batched[n][i:i + 1], singles[i][n].reshape(batched[n][i:i + 1].shape),
                               rtol=1e-4, atol=1e-5) for n in names for i in range(2))

    def _shaped(self, results: dict[str, np.ndarray], batch: int) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for name, value in results.items():
            item = list(self._runner().outputs[name]["shape"][1:])
            if value.size != batch * int(np.prod(item)):
                raise ValueError(f"{name}: {value.shape} does not hold {batch} items of {item}")
            out[name] = value.reshape(batch, *item)
        return out

    def run(self, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        runner = self._runner()
        if self.batching_mode == "none":
            return runner.invoke(inputs, outputs)
        batch = next(iter(inputs.values())).shape[0]
        if self.batching_mode == "resize" or batch == 1:
            runner.resize(batch)
            return self._shaped(runner.invoke(inputs, outputs), batch)
        runner.resize(1)
        items = [self._shaped(runner.invoke({k: v[i:i + 1] for k, v in inputs.items()}, outputs), 1)
                 for i in range(batch)]
        return {name: np.concatenate([item[name] for item in items]) for name in outputs}

    def close(self) -> None:
        self._local = threading.local()
        self._model = b""


def _fits(dims: tuple[int, ...], shape: list[Any]) -> bool:
    return len(dims) == len(shape) and all(d in (-1, s) for d, s in zip(dims, shape))
