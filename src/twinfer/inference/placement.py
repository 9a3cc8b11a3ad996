"""Where each instance of a model runs, decided from its `instance_group` the way Triton does, before any backend
loads anything: a pure function of the config and of what this process can see, so every combination is testable
on a machine without a GPU.

- No `instance_group`: `instance_count` CPU instances (what twinfer always did).
- KIND_CPU: `count` CPU instances.
- KIND_GPU: `count` instances on each GPU of `gpus` (every visible GPU when empty); no GPU = the model is refused
  with one line naming what is missing (the backend says what: onnxruntime-gpu's CUDA provider, a CUDA build of
  torch...).
- KIND_AUTO (Triton's default kind): as KIND_GPU when a GPU is usable, else CPU instances, with one note to log.

For ONNX Runtime, `onnx_providers` turns a GPU instance into its execution-provider list: TensorRT first when
asked (Triton's `optimization.execution_accelerators.gpu_execution_accelerator`, or the twinfer parameter
`gpu_execution_accelerator: tensorrt`), then CUDA, both with the device id, and the CPU provider last (ONNX
Runtime runs there what the GPU providers cannot).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from twinfer.errors import ModelLoadError
from twinfer.inference.model_config import Accelerator, ModelConfig

CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"
TENSORRT_PROVIDER = "TensorrtExecutionProvider"
ACCELERATOR_PARAMETER = "gpu_execution_accelerator"  # twinfer shorthand: {gpu_execution_accelerator: tensorrt}
# Triton's TensorRT accelerator parameters -> ONNX Runtime's TensorRT provider options.
_TENSORRT_OPTIONS: dict[str, Callable[[str], dict[str, Any]]] = {
    "precision_mode": lambda v: _precision(v),
    "max_workspace_size_bytes": lambda v: {"trt_max_workspace_size": int(v)},
    "trt_engine_cache_enable": lambda v: {"trt_engine_cache_enable": v.lower() in ("1", "true")},
    "trt_engine_cache_path": lambda v: {"trt_engine_cache_path": v},
}


@dataclass(frozen=True, slots=True)
class Device:
    """One instance's device: the CPU, or GPU `index` (a CUDA device number as the process sees it)."""

    kind: Literal["cpu", "gpu"]
    index: int = 0

    @property
    def is_gpu(self) -> bool:
        return self.kind == "gpu"

    def __str__(self) -> str:
        return f"gpu:{self.index}" if self.is_gpu else "cpu"


CPU = Device("cpu")


@dataclass(frozen=True, slots=True)
class GpuInventory:
    """What a backend can use: whether it can run on a GPU at all, how many it sees (None: present, number
    unknown, e.g. ONNX Runtime without NVML), and when it cannot, what is missing (one phrase for the error)."""

    usable: bool
    count: int | None = None
    missing: str = ""


@dataclass(frozen=True, slots=True)
class Placement:
    """Every instance's device, in instance order, and the lines worth logging (a KIND_AUTO fallback)."""

    devices: tuple[Device, ...]
    notes: tuple[str, ...] = ()

    @property
    def uses_gpu(self) -> bool:
        return any(d.is_gpu for d in self.devices)


def wants_gpu(config: ModelConfig) -> bool:
    """Could this config place anything on a GPU? (If not, no GPU library is asked anything.)"""
    return any(g.kind != "KIND_CPU" for g in config.instance_group)


def place_instances(config: ModelConfig, inventory: Callable[[], GpuInventory]) -> Placement:
    """The device of every instance of `config`; ModelLoadError (one line) when a KIND_GPU group cannot be placed.
    `inventory` is called only when a group may go to a GPU."""
    if not config.instance_group:
        return Placement((CPU,) * config.instance_count)
    gpus = inventory() if wants_gpu(config) else GpuInventory(False)
    devices: list[Device] = []
    notes: list[str] = []
    for i, group in enumerate(config.instance_group):
        if group.kind == "KIND_CPU":
            devices += [CPU] * group.count
            continue
        if not gpus.usable:
            if group.kind == "KIND_GPU":
                raise ModelLoadError(f"model {config.name!r}: instance_group KIND_GPU needs {gpus.missing}")
            devices += [CPU] * (group.count * max(1, len(group.gpus)))
            notes.append(f"model {config.name!r}: instance_group {i} is KIND_AUTO and no GPU is usable "
                         f"({gpus.missing}): {group.count * max(1, len(group.gpus))} CPU instance(s)")
            continue
        ids = group.gpus or tuple(range(gpus.count if gpus.count else 1))
        unseen = [g for g in ids if gpus.count is not None and g >= gpus.count]
        if unseen:
            raise ModelLoadError(f"model {config.name!r}: instance_group {i} names GPU(s) {unseen}, this process "
                                 f"sees {gpus.count} (0..{gpus.count - 1})")
        for gpu in ids:
            devices += [Device("gpu", gpu)] * group.count
    return Placement(tuple(devices), tuple(notes))


def gpu_accelerators(config: ModelConfig) -> tuple[Accelerator, ...]:
    """The GPU accelerators asked for: Triton's optimization block, else the twinfer parameter."""
    configured = config.optimization.execution_accelerators.gpu_execution_accelerator
    if configured:
        return configured
    shorthand = config.parameters.get(ACCELERATOR_PARAMETER, "").strip().lower()
    if not shorthand:
        return ()
    if shorthand != "tensorrt":
        raise ModelLoadError(f"model {config.name!r}: parameter {ACCELERATOR_PARAMETER}: {shorthand!r} is not a "
                             "known accelerator (tensorrt)")
    return (Accelerator(name="tensorrt"),)


def onnx_providers(config: ModelConfig, device: Device, available: Sequence[str]) -> list[str | tuple[str, dict]]:
    """ONNX Runtime's provider list for one instance's device (CPU: exactly what twinfer always passed)."""
    if not device.is_gpu:
        return [CPU_PROVIDER]
    providers: list[str | tuple[str, dict]] = []
    for accelerator in gpu_accelerators(config):
        if TENSORRT_PROVIDER not in available:
            raise ModelLoadError(f"model {config.name!r}: the tensorrt accelerator needs ONNX Runtime's "
                                 f"{TENSORRT_PROVIDER} (TensorRT libraries); available: {list(available)}")
        providers.append((TENSORRT_PROVIDER, {"device_id": device.index,
                                              **_tensorrt_options(config, accelerator)}))
    providers.append((CUDA_PROVIDER, {"device_id": device.index}))
    providers.append(CPU_PROVIDER)
    return providers


def onnx_inventory(available: Sequence[str], device_count: int | None) -> GpuInventory:
    """ONNX Runtime can use a GPU when its CUDA provider is built in (the onnxruntime-gpu wheel)."""
    if CUDA_PROVIDER in available and device_count != 0:
        return GpuInventory(True, device_count)
    if CUDA_PROVIDER in available:
        return GpuInventory(False, 0, "a CUDA device; onnxruntime-gpu is installed but no device is visible "
                                      "(CUDA_VISIBLE_DEVICES, NVIDIA driver)")
    return GpuInventory(False, 0, f"onnxruntime-gpu's {CUDA_PROVIDER}; available: {list(available)} (install the "
                                  "`gpu` extra: README, Serving on a GPU)")


def _tensorrt_options(config: ModelConfig, accelerator: Accelerator) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for key, value in accelerator.parameters.items():
        convert = _TENSORRT_OPTIONS.get(key)
        if convert is None:
            raise ModelLoadError(f"model {config.name!r}: tensorrt accelerator parameter {key!r} is not supported "
                                 f"(known: {', '.join(_TENSORRT_OPTIONS)})")
        try:
            options.update(convert(value))
        except ValueError as exc:
            raise ModelLoadError(f"model {config.name!r}: tensorrt accelerator parameter {key}: {exc}") from None
    return options


def _precision(mode: str) -> dict[str, Any]:
    mode = mode.upper()
    if mode not in ("FP32", "FP16", "INT8"):
        raise ValueError(f"{mode!r} is not FP32, FP16 or INT8")
    return {} if mode == "FP32" else {f"trt_{mode.lower()}_enable": True}
