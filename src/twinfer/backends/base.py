"""The interface every backend implements, and the one place that picks a backend for a model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from twinfer.errors import ModelLoadError
from twinfer.inference.model_config import ModelConfig


@dataclass(frozen=True, slots=True)
class BackendOptions:
    """Server-wide knobs a backend may honour (a model's `parameters` can override some)."""

    intra_op_threads: int = 1
    inter_op_threads: int = 1


class Backend(Protocol):
    """A loaded model version. `run` is called from instance threads, possibly several at once."""

    def run(self, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...


def load_backend(config: ModelConfig, model_file: Path, options: BackendOptions) -> Backend:
    """Load `model_file` with the backend the config names. Blocking: call from a thread."""
    if config.backend in ("onnxruntime", "onnx"):
        from twinfer.backends.onnx import OnnxBackend

        return OnnxBackend(config, model_file, options)
    raise ModelLoadError(f"model {config.name!r}: unknown backend {config.backend!r} (available: onnxruntime)")
