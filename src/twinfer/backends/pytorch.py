"""PyTorch backend: TorchScript (model.pt) and `torch.export` programs (model.pt2), loaded without unpickling
arbitrary Python objects.

Safety: a pickled nn.Module (`torch.save(model)`, .pth/.bin) can run any code when loaded, so it is never loaded:
only the two formats whose loaders do not execute Python are accepted. `torch.jit.load` rebuilds TorchScript
objects only. `torch.export.load` (PyTorch 2.13) falls back to `torch.load(weights_only=False)` / `pickle.loads`
for weights or constants an archive marks as pickled, so every .pt2 is checked first (its payload configs are
JSON) and refused if any payload is pickled or is a custom object.

Config: TorchScript carries no tensor names, so a PyTorch model's config.yaml (or config.pbtxt) lists its inputs
and outputs, as Triton's pytorch backend requires too; inputs are passed positionally in the config's order and
outputs are matched to the config's in order (or by key when forward returns a dict).

Threads: one module per version, shared by its instance threads (TorchScript and exported GraphModules are
re-entrant for inference and release the GIL inside ops). `torch.set_num_threads` is process-wide: the intra-op
thread count of the last PyTorch model loaded applies to all of them (documented in the README).

Devices: instance_group KIND_GPU / KIND_AUTO (twinfer.inference.placement) loads one copy of the module per CUDA
device (`cuda:N`); an instance thread moves its inputs there and its outputs back to numpy. KIND_GPU without a CUDA
device (a CPU build of torch, no driver) is refused with one line.
"""

from __future__ import annotations

import json
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from twisted.logger import Logger

from twinfer.backends.base import BackendOptions
from twinfer.backends.instances import PerInstance
from twinfer.errors import ModelLoadError
from twinfer.inference.datatypes import from_numpy_dtype
from twinfer.inference.model_config import ModelConfig
from twinfer.inference.placement import Device, GpuInventory, place_instances

_log = Logger()
# Tensors arriving from the wire are read-only views; the model never writes its inputs, so sharing is safe and
# the per-request copy torch would otherwise warn about is avoided.
warnings.filterwarnings("ignore", message="The given NumPy array is not writable")


def check_export_archive(path: Path) -> None:
    """Refuse a .pt2 archive whose loading would unpickle Python objects (see the module docstring)."""
    try:
        with zipfile.ZipFile(path) as archive:
            configs = [n for n in archive.namelist()
                       if n.endswith(("_weights_config.json", "_constants_config.json"))]
            if not configs:
                raise ModelLoadError(f"{path}: not a torch.export archive this server can check (no payload "
                                     "configs: a legacy or foreign format); re-save it with torch.export.save")
            for name in configs:
                for fqn, meta in json.loads(archive.read(name)).get("config", {}).items():
                    if meta.get("use_pickle") or not str(meta.get("path_name", "")).startswith(("weight_",
                                                                                                 "tensor_")):
                        raise ModelLoadError(f"{path}: {fqn!r} is stored as a pickled or custom object, which "
                                             "loading would unpickle; refused (export plain tensors only)")
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ModelLoadError(f"{path}: not a readable torch.export archive ({exc})") from exc


def torch_inventory() -> GpuInventory:
    if torch.cuda.is_available():
        return GpuInventory(True, torch.cuda.device_count())
    build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "a CPU-only build"
    return GpuInventory(False, 0, f"a CUDA device: torch.cuda.is_available() is False (torch {torch.__version__}, "
                                  f"{build}; no CUDA device or driver)")


def torch_device(device: Device) -> torch.device:
    return torch.device(f"cuda:{device.index}") if device.is_gpu else torch.device("cpu")


def _load_module(config: ModelConfig, model_file: Path, device: torch.device | None = None) -> Any:
    if device is not None and device.type != "cpu":
        if model_file.suffix == ".pt":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                return torch.jit.load(str(model_file), map_location=device).eval()
        return _load_module(config, model_file).to(device)
    if model_file.suffix == ".pt":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # 2.13 marks TorchScript deprecated
            try:
                return torch.jit.load(str(model_file), map_location="cpu").eval()
            except RuntimeError as exc:
                raise ModelLoadError(
                    f"model {config.name!r}: {model_file} is not a TorchScript archive ({exc}). Pickled modules "
                    "(torch.save(model)) are never loaded: export with torch.jit.script/trace or torch.export"
                ) from None
    check_export_archive(model_file)
    try:
        return torch.export.load(str(model_file)).module()
    except Exception as exc:  # torch raises many kinds; all mean "cannot load"
        raise ModelLoadError(f"model {config.name!r}: torch.export cannot load {model_file}: {exc}") from exc


class TorchBackend:
    def __init__(self, config: ModelConfig, model_file: Path, options: BackendOptions) -> None:
        torch.set_num_threads(int(config.parameters.get("intra_op_threads", options.intra_op_threads)))
        self._config = config
        self._inputs = [t.name for t in config.inputs]
        self._outputs = [t.name for t in config.outputs]
        placement = place_instances(config, torch_inventory)
        for note in placement.notes:
            _log.info("{note}", note=note)
        self.instance_count = len(placement.devices)
        self.devices = placement.devices
        self._module = _load_module(config, model_file)  # the first load checks the file (and gives CPU instances)
        if not placement.uses_gpu:
            self._per_instance: PerInstance[tuple[torch.device, Any]] | None = None
            return
        modules: dict[Device, tuple[torch.device, Any]] = {}
        for device in dict.fromkeys(placement.devices):
            target = torch_device(device)
            try:
                modules[device] = (target, self._module if not device.is_gpu else
                                   _load_module(config, model_file, target))
            except (RuntimeError, AssertionError) as exc:  # a bad device number, an out-of-memory GPU
                raise ModelLoadError(f"model {config.name!r}: cannot place it on {device}: "
                                     f"{' '.join(str(exc).split())[:300]}") from None
        self._per_instance = PerInstance([modules[d] for d in placement.devices])

    def run(self, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        if self._per_instance is None:
            args = [torch.from_numpy(inputs[name]) for name in self._inputs]
            with torch.inference_mode():
                result = self._module(*args)
        else:
            device, module = self._per_instance.current()
            args = [torch.from_numpy(inputs[name]).to(device) for name in self._inputs]
            with torch.inference_mode():
                result = module(*args)
        by_name = self._name_outputs(result)
        return {name: by_name[name] for name in outputs}

    def _name_outputs(self, result: Any) -> dict[str, np.ndarray]:
        """A tensor is the first output; a tuple/list maps to the config's outputs in order; a dict by name."""
        if isinstance(result, torch.Tensor):
            values = {self._outputs[0]: result}
        elif isinstance(result, dict):
            values = result
        elif isinstance(result, list | tuple) and len(result) == len(self._outputs):
            values = dict(zip(self._outputs, result))
        else:
            raise ModelLoadError(f"model {self._config.name!r}: forward returned {type(result).__name__} of "
                                 f"{len(result) if hasattr(result, '__len__') else '?'} items; the config has "
                                 f"outputs {self._outputs}")
        out = {}
        for spec in self._config.outputs:
            value = values.get(spec.name)
            if not isinstance(value, torch.Tensor):
                raise ModelLoadError(f"model {self._config.name!r}: output {spec.name!r} missing from forward's "
                                     "result")
            array = value.detach().cpu().numpy()  # .cpu() of a CPU tensor is the tensor itself
            datatype = from_numpy_dtype(array.dtype)
            if datatype != spec.datatype:
                raise ModelLoadError(f"model {self._config.name!r}: output {spec.name!r} is {datatype}, the config "
                                     f"says {spec.datatype}")
            out[spec.name] = array
        return out

    def close(self) -> None:
        self._module = None
        self._per_instance = None
