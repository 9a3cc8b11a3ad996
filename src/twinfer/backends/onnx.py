"""ONNX Runtime backend: one InferenceSession per model version, shared by its instance threads.

`InferenceSession.run` is thread-safe and releases the GIL, so `instance_count` threads calling it on one session
run in parallel without duplicating the weights in memory. On GPUs (instance_group KIND_GPU / KIND_AUTO,
twinfer.inference.placement) there is one session per device, each with its CUDA (and TensorRT) provider and device
id; an instance thread runs the session of its device. Inputs and outputs stay numpy: ONNX Runtime copies them to
and from the device inside `run`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from twisted.logger import Logger

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
import onnxruntime as ort  # noqa: E402

from twinfer.backends.base import BackendOptions  # noqa: E402
from twinfer.backends.instances import PerInstance  # noqa: E402
from twinfer.errors import ModelLoadError  # noqa: E402
from twinfer.inference.datatypes import ORT_TYPE_TO_DATATYPE  # noqa: E402
from twinfer.inference.model_config import ModelConfig  # noqa: E402
from twinfer.inference.placement import (  # noqa: E402
    CUDA_PROVIDER, TENSORRT_PROVIDER, Device, GpuInventory, onnx_inventory, onnx_providers, place_instances)

_log = Logger()


def _inventory() -> GpuInventory:
    from twinfer.inference.nvml import cuda_device_count

    available = ort.get_available_providers()
    return onnx_inventory(available, cuda_device_count() if CUDA_PROVIDER in available else 0)


_preloaded: list[bool] = []


def _preload_cuda_libraries() -> None:
    """onnxruntime-gpu (1.21+) can load the CUDA/cuDNN libraries of pip's nvidia-* wheels (torch's CUDA build
    brings them) before a CUDA session opens; without them the CUDA provider cannot start. Best effort, once."""
    if _preloaded:
        return
    _preloaded.append(True)
    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:
        try:
            preload()
        except Exception as exc:  # noqa: BLE001 - the session's own check below names what is missing
            _log.warn("onnxruntime.preload_dlls failed: {exc}", exc=exc)


class OnnxBackend:
    # InferenceSession.run may be called from several threads at once (ONNX Runtime's documented guarantee), so a
    # caller may run it on its own worker thread (ModelVersion.run_inline).
    thread_safe = True

    def __init__(self, config: ModelConfig, model_file: Path, options: BackendOptions) -> None:
        so = ort.SessionOptions()
        so.intra_op_num_threads = int(config.parameters.get("intra_op_threads", options.intra_op_threads))
        so.inter_op_num_threads = int(config.parameters.get("inter_op_threads", options.inter_op_threads))
        so.log_severity_level = 3
        placement = place_instances(config, _inventory)
        for note in placement.notes:
            _log.info("{note}", note=note)
        if placement.uses_gpu:
            _preload_cuda_libraries()
        available = ort.get_available_providers() if placement.uses_gpu else ["CPUExecutionProvider"]
        sessions = {device: self._open(config, model_file, so, device, available)
                    for device in dict.fromkeys(placement.devices)}
        self.instance_count = len(placement.devices)
        self.devices = placement.devices
        self._session = sessions[placement.devices[0]]
        # One session (every CPU config): run it directly, as before; several devices: the calling thread's.
        self._per_instance = PerInstance([sessions[d] for d in placement.devices]) if len(sessions) > 1 else None
        self._check_signature(config)

    @staticmethod
    def _open(config: ModelConfig, model_file: Path, so: ort.SessionOptions, device: Device,
              available: list[str]) -> ort.InferenceSession:
        providers = onnx_providers(config, device, available)
        try:
            session = ort.InferenceSession(str(model_file), so, providers=providers)
        except Exception as exc:  # ORT raises its own untyped errors
            where = f"{model_file} on {device}" if device.is_gpu else str(model_file)
            raise ModelLoadError(f"model {config.name!r}: onnxruntime cannot load {where}: {exc}") from exc
        if device.is_gpu and CUDA_PROVIDER not in session.get_providers():
            # ORT falls back to the CPU when the CUDA provider cannot start (no driver, no cuDNN): refuse instead
            # of serving a KIND_GPU model on the CPU unannounced.
            raise ModelLoadError(f"model {config.name!r}: onnxruntime could not start {CUDA_PROVIDER} on {device} "
                                 f"(CUDA/cuDNN libraries or driver missing?); session providers: "
                                 f"{session.get_providers()}")
        wanted = [p if isinstance(p, str) else p[0] for p in providers]
        if TENSORRT_PROVIDER in wanted and TENSORRT_PROVIDER not in session.get_providers():
            raise ModelLoadError(f"model {config.name!r}: onnxruntime could not start {TENSORRT_PROVIDER} on {device} "
                                 f"(TensorRT libraries missing?); session providers: {session.get_providers()}")
        return session

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
        session = self._session if self._per_instance is None else self._per_instance.current()
        results = session.run(outputs, inputs)
        return dict(zip(outputs, results))

    def close(self) -> None:
        # Dropping the last reference frees the session; there is no explicit close in ORT's API.
        self._session = None  # type: ignore[assignment]
        self._per_instance = None
