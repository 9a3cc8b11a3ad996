"""The interface every backend implements, and the one place that picks a backend for a model.

Backends by name (Triton's names accepted too, so a Triton config.pbtxt works unchanged):
- `onnxruntime` (`onnxruntime_onnx`, `onnx`): model.onnx. Always installed.
- `pytorch` (`pytorch_libtorch`, `torch`, `libtorch`): model.pt (TorchScript) or model.pt2 (`torch.export`).
  The `torch` extra.
- `face_tracker`: tracker.yaml. Not a graph: the entry that makes a stream track faces with the models it names
  (twinfer.streaming.face_processor); plain infer requests are refused with a message.
- `tensorflow` (`tensorflow_savedmodel`, `tensorflow_keras`, `tf`): model.savedmodel/ (a SavedModel directory) or
  model.keras (Keras v3). The `tensorflow` extra.
- `tflite` (`litert`, `tensorflowlite`): model.tflite through LiteRT (`ai-edge-litert`, no TensorFlow). The
  `tflite` extra.
- `python`: model.py defining Triton's `TritonPythonModel`, run in this process on the version's instance threads,
  given lists of requests (twinfer.backends.python).
- `ensemble` (Triton's `platform: "ensemble"`): no file; the steps of its `ensemble_scheduling` run through the
  facade (twinfer.inference.ensemble).
The heavy libraries are imported only when such a model loads, so the server starts fast without them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from twinfer.errors import ModelLoadError
from twinfer.inference.caller import ModelCaller
from twinfer.inference.model_config import ModelConfig


@dataclass(frozen=True, slots=True)
class BackendOptions:
    """Server-wide knobs a backend may honour (a model's `parameters` can override some)."""

    intra_op_threads: int = 1
    inter_op_threads: int = 1
    caller: ModelCaller | None = None  # how python models (BLS) and ensembles reach other models of the repository


class Backend(Protocol):
    """A loaded model version. `run` is called from instance threads, possibly several at once."""

    def run(self, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...


class RequestListBackend(Protocol):
    """A backend that takes the batcher's requests as a list instead of one concatenated batch (python models:
    Triton calls `execute(requests)`). One result per request: its outputs, or the error that fails it alone."""

    def run_requests(
        self, requests: list[tuple[dict[str, np.ndarray], list[str]]]
    ) -> list[dict[str, np.ndarray] | Exception]: ...


ALIASES = {
    "onnxruntime": "onnxruntime", "onnxruntime_onnx": "onnxruntime", "onnx": "onnxruntime",
    "pytorch": "pytorch", "pytorch_libtorch": "pytorch", "torch": "pytorch", "libtorch": "pytorch",
    "tensorflow": "tensorflow", "tensorflow_savedmodel": "tensorflow", "tensorflow_keras": "tensorflow",
    "tf": "tensorflow",
    "tflite": "tflite", "litert": "tflite", "tensorflowlite": "tflite",
    "face_tracker": "face_tracker",
    "python": "python",
    "ensemble": "ensemble",
}
# The files each backend loads, in the order they are looked for in a version directory.
MODEL_FILES = {
    "onnxruntime": ("model.onnx",),
    "pytorch": ("model.pt2", "model.pt"),
    "tensorflow": ("model.savedmodel", "model.keras"),
    "tflite": ("model.tflite",),
    "face_tracker": ("tracker.yaml",),  # a stream's face tracker: its settings, the models it calls
    "python": ("model.py",),  # Triton's python backend API, run in process (twinfer.backends.python)
    "ensemble": (),  # a graph of other models; its version directories are empty, as in Triton
}
EXTRAS = {"pytorch": "torch", "tensorflow": "tensorflow", "tflite": "tflite"}


def canonical_backend(name: str) -> str | None:
    return ALIASES.get(name.lower())


def backend_of_file(path: Path) -> str | None:
    return next((backend for backend, names in MODEL_FILES.items() if path.name in names), None)


def load_backend(config: ModelConfig, model_file: Path, options: BackendOptions) -> Backend:
    """Load `model_file` with the backend the config names. Blocking: call from a thread."""
    backend = canonical_backend(config.backend)
    if backend is None:
        raise ModelLoadError(f"model {config.name!r}: unknown backend {config.backend!r} "
                             f"(available: {', '.join(MODEL_FILES)})")
    if backend == "ensemble":
        from twinfer.inference.ensemble import EnsembleBackend

        return EnsembleBackend(config, options)
    if model_file.name not in MODEL_FILES[backend]:
        raise ModelLoadError(f"model {config.name!r}: backend {backend} loads {' or '.join(MODEL_FILES[backend])}, "
                             f"not {model_file.name}")
    try:
        if backend == "onnxruntime":
            from twinfer.backends.onnx import OnnxBackend as cls
        elif backend == "pytorch":
            from twinfer.backends.pytorch import TorchBackend as cls
        elif backend == "tflite":
            from twinfer.backends.tflite import TFLiteBackend as cls
        elif backend == "face_tracker":
            from twinfer.backends.face_tracker import FaceTrackerBackend

            return FaceTrackerBackend(config, model_file)
        elif backend == "python":
            from twinfer.backends.python import PythonBackend as cls
        else:
            from twinfer.backends.tensorflow import TensorFlowBackend as cls
    except ImportError as exc:
        raise ModelLoadError(f"model {config.name!r} needs the `{EXTRAS[backend]}` extra: pip install "
                             f"'twinfer[{EXTRAS[backend]}]' ({exc})") from None
    return cls(config, model_file, options)
