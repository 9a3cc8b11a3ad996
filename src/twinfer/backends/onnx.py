"""ONNX Runtime backend: one InferenceSession per model version, shared by its instance threads.

`InferenceSession.run` is thread-safe and releases the GIL, so `instance_count` threads calling it on one session
run in parallel without duplicating the weights in memory.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
import onnxruntime as ort  # noqa: E402

from twinfer.backends.base import BackendOptions  # noqa: E402
from twinfer.errors import ModelLoadError  # noqa: E402
from twinfer.inference.datatypes import ORT_TYPE_TO_DATATYPE  # noqa: E402
from twinfer.inference.model_config import ModelConfig  # noqa: E402


class OnnxBackend:
    # InferenceSession.run may be called from several threads at once (ONNX Runtime's documented guarantee), so a
    # caller may run it on its own worker thread (ModelVersion.run_inline).
    thread_safe = True

    def __init__(self, config: ModelConfig, model_file: Path, options: BackendOptions) -> None:
        so = ort.SessionOptions()
        so.intra_op_num_threads = int(config.parameters.get("intra_op_threads", options.intra_op_threads))
        so.inter_op_num_threads = int(config.parameters.get("inter_op_threads", options.inter_op_threads))
        so.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(str(model_file), so, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own untyped errors
            raise ModelLoadError(f"model {config.name!r}: onnxruntime cannot load {model_file}: {exc}") from exc
        self._check_signature(config)

    def _check_signature(self, config: ModelConfig) -> None:
        """Refuse a config that names tensors the graph does not have, or with other datatypes."""
        actual = {t.name: t for t in (*self._session.get_inputs(), *self._session.get_outputs())}
        for tensor in (*config.inputs, *config.outputs):
            found = actual.get(tensor.name)
            if found is None:
                raise ModelLoadError(
                    f"model {config.name!r}: config names tensor {tensor.name!r}, the ONNX graph has "
                    f"{sorted(actual)}"
                )
            datatype = ORT_TYPE_TO_DATATYPE.get(found.type)
            if datatype != tensor.datatype:
                raise ModelLoadError(
                    f"model {config.name!r}: tensor {tensor.name!r} is {datatype} in the graph, "
                    f"{tensor.datatype} in the config"
                )

    def run(self, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        results = self._session.run(outputs, inputs)
        return dict(zip(outputs, results))

    def close(self) -> None:
        # Dropping the last reference frees the session; there is no explicit close in ORT's API.
        self._session = None  # type: ignore[assignment]
