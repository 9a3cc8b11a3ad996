"""GPU metrics with Triton's names (`nv_gpu_*`, label `gpu_uuid`), read from NVIDIA's management library at scrape
time. Present only where `pynvml` (nvidia-ml-py, the `gpu` extra) imports and `nvmlInit` works: a CPU machine's
/metrics has none of them, rather than zeros that would read as idle GPUs."""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType

from prometheus_client.core import GaugeMetricFamily, Metric

from twinfer.inference.nvml import open_nvml

# name, help: the README's metrics table is checked against these (with twinfer.metrics.METRICS).
GPU_METRICS: tuple[tuple[str, str], ...] = (
    ("nv_gpu_utilization", "GPU utilization rate, 0.0 - 1.0, per GPU (label gpu_uuid; only with NVML)"),
    ("nv_gpu_memory_total_bytes", "GPU total memory, bytes, per GPU"),
    ("nv_gpu_memory_used_bytes", "GPU used memory, bytes, per GPU"),
    ("nv_gpu_power_usage", "GPU power usage, watts, per GPU"),
)
_HELP = dict(GPU_METRICS)


class GpuCollector:
    """Walks every GPU NVML sees on each scrape; a GPU whose reading fails is left out of that scrape only."""

    def __init__(self, nvml: ModuleType) -> None:
        self._nvml = nvml

    def collect(self) -> Iterator[Metric]:
        nvml = self._nvml
        families = {name: GaugeMetricFamily(name, _HELP[name], labels=["gpu_uuid"]) for name, _ in GPU_METRICS}
        try:
            count = nvml.nvmlDeviceGetCount()
        except Exception:  # noqa: BLE001 - NVMLError: the driver went away; report no GPUs this scrape
            count = 0
        for i in range(count):
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(i)
                uuid = _text(nvml.nvmlDeviceGetUUID(handle))
                utilization = nvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                power_w = nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0  # NVML gives milliwatts
            except Exception:  # noqa: BLE001 - one GPU unreadable (lost, or no power sensor): skip it
                continue
            families["nv_gpu_utilization"].add_metric([uuid], utilization)
            families["nv_gpu_memory_total_bytes"].add_metric([uuid], float(memory.total))
            families["nv_gpu_memory_used_bytes"].add_metric([uuid], float(memory.used))
            families["nv_gpu_power_usage"].add_metric([uuid], power_w)
        yield from families.values()


def gpu_collector() -> GpuCollector | None:
    """A collector when NVML is usable here, else None (no GPU metrics at all)."""
    nvml = open_nvml()
    return GpuCollector(nvml) if nvml is not None else None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value  # older bindings return bytes
