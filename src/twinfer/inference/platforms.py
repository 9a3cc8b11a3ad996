"""The platform name a model reports, the same on every transport (game protocol, KServe HTTP and gRPC): Triton's
names for the formats Triton knows, so clients that switch on them (perf_analyzer, model analyzers) recognise the
format, and the backend's own name otherwise (python, tflite, face_tracker, ensemble)."""

from __future__ import annotations

from twinfer.backends.base import canonical_backend
from twinfer.inference.model_config import ModelConfig

PLATFORMS = {"onnxruntime": "onnxruntime_onnx", "pytorch": "pytorch_libtorch", "tensorflow": "tensorflow_savedmodel"}


def platform_of(config: ModelConfig) -> str:
    return PLATFORMS.get(canonical_backend(config.backend) or config.backend, config.backend)


def output_labels(config: ModelConfig) -> dict[str, list[str]]:
    """Names of the values along each output's last dimension, for the outputs that have them."""
    return {t.name: list(t.labels) for t in config.outputs if t.labels}
