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
"""

from __future__ import annotations

import json
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from twinfer.backends.base import BackendOptions
from twinfer.errors import ModelLoadError
from twinfer.inference.datatypes import from_numpy_dtype
from twinfer.inference.model_config import ModelConfig

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


def _load_module(config: ModelConfig, model_file: Path) -> Any:
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
        self._module = _load_module(config, model_file)

    def run(self, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        args = [torch.from_numpy(inputs[name]) for name in self._inputs]
        with torch.inference_mode():
            result = self._module(*args)
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
            array = value.detach().numpy()
            datatype = from_numpy_dtype(array.dtype)
            if datatype != spec.datatype:
                raise ModelLoadError(f"model {self._config.name!r}: output {spec.name!r} is {datatype}, the config "
                                     f"says {spec.datatype}")
            out[spec.name] = array
        return out

    def close(self) -> None:
        self._module = None
