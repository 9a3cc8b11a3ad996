"""NVIDIA's management library (`pynvml`, from the nvidia-ml-py package in the `gpu` extra), opened once when it
is importable and `nvmlInit` works (a driver is present), else None: GPU counts and metrics are then absent."""

from __future__ import annotations

import os
import threading
from types import ModuleType

_lock = threading.Lock()
_opened: list[ModuleType | None] = []  # one entry once tried


def open_nvml() -> ModuleType | None:
    """The initialised pynvml module, or None (not installed, or no NVIDIA driver). Tried once per process."""
    with _lock:
        if not _opened:
            _opened.append(_try_open())
        return _opened[0]


def _try_open() -> ModuleType | None:
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - NVMLError_LibraryNotFound, _DriverNotLoaded...: no usable GPU either way
        return None
    return pynvml


def reset() -> None:
    """Forget the attempt (tests inject a fake pynvml)."""
    with _lock:
        _opened.clear()


def cuda_device_count() -> int | None:
    """How many CUDA devices this process sees: CUDA_VISIBLE_DEVICES when set (CUDA renumbers them 0..n-1), else
    NVML's count; None when neither says (the backend then trusts the config's `gpus`)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and not d.strip().startswith("-")])
    nvml = open_nvml()
    if nvml is None:
        return None
    try:
        return int(nvml.nvmlDeviceGetCount())
    except Exception:  # noqa: BLE001
        return None
