"""#21 GPU metrics: Triton's nv_gpu_* per GPU (label gpu_uuid) from NVML when pynvml imports and nvmlInit works,
absent otherwise. pynvml (nvidia-ml-py) is not installed on this machine and there is no driver, so a fake module
stands in for it in sys.modules: the one place a fake is right, the library itself being absent."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator

import pytest
from twisted.internet.task import Clock

from tests.support import SyncThreads
from twinfer.inference import nvml
from twinfer.inference.facade import InferenceFacade
from twinfer.inference.repository import ModelRepository
from twinfer.metrics import build_registry


class NVMLError(Exception):
    pass


def fake_pynvml(gpus: list[dict], init_fails: bool = False) -> types.ModuleType:
    """The calls twinfer makes, with nvidia-ml-py's signatures and units (percent, bytes, milliwatts)."""
    module = types.ModuleType("pynvml")
    module.NVMLError = NVMLError

    def init() -> None:
        if init_fails:
            raise NVMLError("NVML Shared Library Not Found")

    def device(i: int) -> dict:
        if gpus[i].get("lost"):
            raise NVMLError("GPU is lost")
        return gpus[i]

    module.nvmlInit = init
    module.nvmlDeviceGetCount = lambda: len(gpus)
    module.nvmlDeviceGetHandleByIndex = lambda i: i
    module.nvmlDeviceGetUUID = lambda h: device(h)["uuid"]
    module.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=device(h)["util"], memory=0)
    module.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(total=device(h)["total"], used=device(h)["used"],
                                                                     free=device(h)["total"] - device(h)["used"])
    module.nvmlDeviceGetPowerUsage = lambda h: device(h)["mw"]
    return module


@pytest.fixture
def facade(tmp_path) -> InferenceFacade:
    return InferenceFacade(ModelRepository(tmp_path, Clock(), SyncThreads()))


@pytest.fixture
def inject(monkeypatch) -> Iterator:
    def put(module: types.ModuleType | None) -> None:
        monkeypatch.setitem(sys.modules, "pynvml", module)  # None: `import pynvml` raises ImportError
        nvml.reset()

    yield put
    nvml.reset()


GPUS = [
    {"uuid": "GPU-aaaa", "util": 37, "total": 80 * 2**30, "used": 12 * 2**30, "mw": 215_500},
    {"uuid": b"GPU-bbbb", "util": 0, "total": 24 * 2**30, "used": 2**20, "mw": 31_000},  # older bindings: bytes
]


def test_every_gpu_reports_triton_s_metrics_by_uuid(facade, inject):
    inject(fake_pynvml(GPUS))
    registry = build_registry(facade, {})
    value = registry.get_sample_value
    assert value("nv_gpu_utilization", {"gpu_uuid": "GPU-aaaa"}) == pytest.approx(0.37)
    assert value("nv_gpu_memory_total_bytes", {"gpu_uuid": "GPU-aaaa"}) == 80 * 2**30
    assert value("nv_gpu_memory_used_bytes", {"gpu_uuid": "GPU-aaaa"}) == 12 * 2**30
    assert value("nv_gpu_power_usage", {"gpu_uuid": "GPU-aaaa"}) == pytest.approx(215.5)
    assert value("nv_gpu_utilization", {"gpu_uuid": "GPU-bbbb"}) == 0.0
    assert value("nv_gpu_memory_used_bytes", {"gpu_uuid": "GPU-bbbb"}) == 2**20
    GPUS[0]["used"] = 13 * 2**30  # read at scrape time
    try:
        assert value("nv_gpu_memory_used_bytes", {"gpu_uuid": "GPU-aaaa"}) == 13 * 2**30
    finally:
        GPUS[0]["used"] = 12 * 2**30


def test_an_unreadable_gpu_is_left_out_and_the_others_still_report(facade, inject):
    inject(fake_pynvml([{**GPUS[0], "lost": True}, GPUS[1]]))
    registry = build_registry(facade, {})
    assert registry.get_sample_value("nv_gpu_utilization", {"gpu_uuid": "GPU-aaaa"}) is None
    assert registry.get_sample_value("nv_gpu_power_usage", {"gpu_uuid": "GPU-bbbb"}) == pytest.approx(31.0)


@pytest.mark.parametrize("module", [None, fake_pynvml(GPUS, init_fails=True)], ids=["not-installed", "no-driver"])
def test_without_nvml_there_are_no_gpu_metrics(facade, inject, module, monkeypatch):
    inject(module)
    text = "\n".join(_exposition(build_registry(facade, {})))
    assert "nv_gpu" not in text and "twinfer_model_ready" in text
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert nvml.cuda_device_count() is None  # unknown: a KIND_GPU model then trusts its `gpus`


def test_nvml_counts_the_devices_cuda_visible_devices_wins(inject, monkeypatch):
    inject(fake_pynvml(GPUS))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert nvml.cuda_device_count() == 2
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert nvml.cuda_device_count() == 1
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert nvml.cuda_device_count() == 0


def _exposition(registry) -> list[str]:
    from prometheus_client import generate_latest

    return generate_latest(registry).decode().splitlines()
