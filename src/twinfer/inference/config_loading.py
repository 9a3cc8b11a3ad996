"""Reads a model's configuration from what its directory holds, in layers, so a bare `model.onnx` is servable
and a config file only needs to say what differs.

1. The model file's own signature (ONNX graph inputs/outputs) gives a complete config when nothing else exists:
   a dynamic first dimension on every tensor means batching is allowed.
2. Triton's `config.pbtxt`, where present, overrides it (parsed with Triton's own protobuf schema), so a Triton
   model repository works unchanged.
3. twinfer's `config.yaml`, where present, wins. Its keys are ModelConfig's fields:

       name: face_blendshapes            # optional; must equal the directory name
       backend: onnxruntime
       max_batch_size: 64                # 0 = no batch dimension
       inputs:  [{name: image, datatype: FP32, dims: [1, 256, 256]}]
       outputs: [{name: blendshapes, labels: [eyeBlinkLeft, ...]}]   # merged by name with the layers below
       dynamic_batching: {max_queue_delay_us: 500, preferred_batch_sizes: [8, 16], max_queue_size: 1024,
                          default_timeout_ms: 0}                      # or `false` to run requests one by one
       instance_count: 1                 # CPU instances; or Triton's groups (they win):
       instance_group: [{kind: KIND_GPU, gpus: [0], count: 2}]         # KIND_CPU | KIND_GPU | KIND_AUTO
       optimization: {execution_accelerators: {gpu_execution_accelerator: [{name: tensorrt}]}}  # ONNX on a GPU
       version_policy: {policy: latest, latest_n: 1}                   # or all, or specific + versions: [1, 3]
       warmup: true
       validation: {dataset: gate.npz, max_mae: 0.01}                  # see ModelConfig.ValidationConfig
       parameters: {intra_op_threads: "2"}
       ensemble_scheduling: {step: [{model_name: pre, model_version: -1,   # with `platform: ensemble` (or
                                     input_map: {x: RAW}, output_map: {y: MID}}]}  # backend); Triton's keys

Tensor lists merge by name, so a config that only adds labels to an output keeps the derived datatype and dims;
a tensor's dims left to the model file are cut to fit the final max_batch_size. Every failure is a ConfigError
with one line naming the file that set the bad value and its dotted key. Blocking file I/O: call from a thread.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from twinfer.backends.base import MODEL_FILES, backend_of_file, canonical_backend
from twinfer.errors import ConfigError, ModelLoadError
from twinfer.inference.datatypes import ONNX_TO_DATATYPE
from twinfer.inference.model_config import ModelConfig
from twinfer.inference.paths import inside_model_dir

MODEL_FILENAMES = tuple(name for names in MODEL_FILES.values() for name in names)  # search order without a backend
DERIVED_MAX_BATCH_SIZE = 64
# config.pbtxt / config.yaml / a label file: real ones are kilobytes. A 73 MB config.pbtxt took 30 s and 376 MB
# to parse (holding the GIL, so every other model and request waited); past this a file is refused unread.
MAX_CONFIG_FILE_BYTES = 1024 * 1024
_TENSOR_KINDS = ("inputs", "outputs")
Shape = tuple[int, ...] | None  # None: the model does not say (unknown rank)


def find_model_file(version_dir: Path, backend: str | None = None) -> Path | None:
    """The model file of one version directory for `backend` (any backend: ONNX first, then PyTorch, then
    TensorFlow); None when it holds none. A SavedModel is a directory; the rest are files."""
    canonical = canonical_backend(backend) if backend else None
    names = MODEL_FILES[canonical] if canonical else MODEL_FILENAMES
    return next((version_dir / n for n in names
                 if (version_dir / n).is_file() or (n.endswith(".savedmodel") and (version_dir / n).is_dir())), None)


def read_config_text(path: Path, what: str = "config file") -> str:
    """The file's text, refused (ConfigError) past MAX_CONFIG_FILE_BYTES without reading more than that."""
    with open(path, "rb") as f:
        raw = f.read(MAX_CONFIG_FILE_BYTES + 1)
    if len(raw) > MAX_CONFIG_FILE_BYTES:
        raise ConfigError(f"{path}: {what} larger than {MAX_CONFIG_FILE_BYTES // 1024} KiB; refused unread")
    return raw.decode()


# --- layer 1: the model file ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Signature:
    """Names, datatypes and FULL shapes (batch dimension included, -1 = dynamic) as the model file declares them."""

    path: Path
    tensors: dict[str, dict[str, tuple[str, Shape]]]  # "inputs"/"outputs" -> name -> (datatype, shape)

    @property
    def batching(self) -> bool:
        """Every tensor whose rank is known starts with a dynamic dimension (unknown-rank tensors don't vote)."""
        shapes = [s for kind in _TENSOR_KINDS for _, s in self.tensors[kind].values() if s is not None]
        return bool(shapes) and all(s and s[0] == -1 for s in shapes)


def _read_onnx(path: Path) -> _Signature:
    import onnx  # heavy; only needed when a model file is read

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # DecodeError, OSError, ... all mean the same to an operator
        raise ConfigError(f"{path}: not a readable ONNX model ({' '.join(str(exc).split())})") from exc
    initializers = {i.name for i in model.graph.initializer}  # old exporters list weights as graph inputs

    def describe(value_info: Any) -> tuple[str, Shape]:
        tensor_type = value_info.type.tensor_type
        datatype = ONNX_TO_DATATYPE.get(tensor_type.elem_type)
        if datatype is None:
            raise ConfigError(f"{path}: tensor {value_info.name!r} has unsupported element type "
                              f"{tensor_type.elem_type} (only plain tensors are served)")
        if not tensor_type.HasField("shape"):
            return datatype, None
        return datatype, tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1
                               for d in tensor_type.shape.dim)

    return _Signature(path, {
        "inputs": {v.name: describe(v) for v in model.graph.input if v.name not in initializers},
        "outputs": {v.name: describe(v) for v in model.graph.output},
    })


def _read_saved_model(path: Path) -> _Signature:
    try:
        from twinfer.backends.tensorflow import saved_model_signature
    except ImportError as exc:
        raise ConfigError(f"{path}: a SavedModel needs the `tensorflow` extra: pip install 'twinfer[tensorflow]' "
                          f"({exc})") from None
    try:
        return _Signature(path, saved_model_signature(path))
    except ModelLoadError as exc:
        raise ConfigError(str(exc)) from None


def _read_tflite(path: Path) -> _Signature:
    try:
        from twinfer.backends.tflite import tflite_signature
    except ImportError as exc:
        raise ConfigError(f"{path}: a .tflite needs the `tflite` extra: pip install 'twinfer[tflite]' "
                          f"({exc})") from None
    try:
        return _Signature(path, tflite_signature(path))
    except ModelLoadError as exc:
        raise ConfigError(str(exc)) from None


def _read_signature(path: Path) -> _Signature | None:
    """The signature of a model file that declares one (ONNX, SavedModel, TFLite); None for TorchScript, .pt2 and
    .keras, whose configs list their tensors."""
    if path.suffix == ".onnx":
        return _read_onnx(path)
    if path.suffix == ".savedmodel":
        return _read_saved_model(path)
    if path.suffix == ".tflite":
        return _read_tflite(path)
    return None


def _signature_layer(name: str, sig: _Signature) -> dict[str, Any]:
    """The config the signature implies; tensor dims are filled in last, once max_batch_size is final."""
    batching = sig.batching
    layer: dict[str, Any] = {
        "name": name, "backend": backend_of_file(sig.path) or "onnxruntime",
        "max_batch_size": DERIVED_MAX_BATCH_SIZE if batching else 0,
        "dynamic_batching": {} if batching else None,
    }
    for kind in _TENSOR_KINDS:
        layer[kind] = [{"name": n, "datatype": dt} for n, (dt, _) in sig.tensors[kind].items()]
    return layer


def derive_from_onnx(name: str, onnx_path: Path) -> ModelConfig:
    """A complete config from the ONNX graph's signature alone, without creating an inference session."""
    sig = _read_onnx(onnx_path)
    layers = _Layers(name, sig)
    layers.apply(_signature_layer(name, sig), str(onnx_path))
    return layers.finish()


# --- layer 2: Triton's config.pbtxt -----------------------------------------------------------------------------

def read_pbtxt(path: Path) -> dict[str, Any]:
    """The parts of a Triton ModelConfig twinfer understands, as a partial config dict (Triton's semantics)."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    try:
        config = text_format.Parse(read_config_text(path), mc.ModelConfig())
    except (text_format.ParseError, OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not a valid Triton model config ({' '.join(str(exc).split())})") from exc
    out: dict[str, Any] = {"max_batch_size": config.max_batch_size}  # absent means 0 to Triton as well
    if config.model_transaction_policy.decoupled:
        out["model_transaction_policy"] = {"decoupled": True}
    if config.name:
        out["name"] = config.name
    if config.backend or config.platform:
        out["backend"] = canonical_backend(config.backend or config.platform) or config.backend or config.platform

    def tensor(t: Any, is_output: bool) -> dict[str, Any]:
        entry: dict[str, Any] = {"name": t.name}
        if t.data_type != mc.TYPE_INVALID:  # unset: keep what the model file says
            datatype = mc.DataType.Name(t.data_type).removeprefix("TYPE_")
            entry["datatype"] = "BYTES" if datatype == "STRING" else datatype
        if t.dims:  # `reshape` is ignored: the backend feeds the model the shape the client sent
            entry["dims"] = list(t.dims)
        if not is_output and t.optional:
            entry["optional"] = True
        labels = (inside_model_dir(path.parent, t.label_filename, f"output {t.name!r} label_filename", path)
                  if is_output and t.label_filename else None)
        if labels is not None and labels.is_file():
            try:
                lines = [line.strip() for line in read_config_text(labels, "label file").splitlines()]
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"{path}: label_filename {t.label_filename!r}: {exc}") from None
            while lines and not lines[-1]:
                lines.pop()
            entry["labels"] = lines
        return entry

    if config.input:
        out["inputs"] = [tensor(t, False) for t in config.input]
    if config.output:
        out["outputs"] = [tensor(t, True) for t in config.output]
    out["dynamic_batching"] = None  # Triton's default scheduler never merges requests
    if config.HasField("dynamic_batching"):
        db = config.dynamic_batching
        policy: dict[str, Any] = {"max_queue_delay_us": db.max_queue_delay_microseconds,
                                  "preferred_batch_sizes": list(db.preferred_batch_size)}
        queue = db.default_queue_policy
        if queue.max_queue_size > 0:  # 0 is Triton's "unbounded": keep our bounded default
            policy["max_queue_size"] = queue.max_queue_size
        # Round up: 500 us must stay a timeout, not become 0 = "never time out".
        policy["default_timeout_ms"] = math.ceil(queue.default_timeout_microseconds / 1000)
        out["dynamic_batching"] = policy
    if config.instance_group:  # Triton's count defaults to 1; ModelConfig derives instance_count from the groups
        out["instance_group"] = [{"kind": mc.ModelInstanceGroup.Kind.Name(g.kind), "count": g.count or 1,
                                  "gpus": list(g.gpus)} for g in config.instance_group]
    accelerators = config.optimization.execution_accelerators.gpu_execution_accelerator
    if accelerators:
        out["optimization"] = {"execution_accelerators": {"gpu_execution_accelerator": [
            {"name": a.name, "parameters": dict(a.parameters)} for a in accelerators]}}
    if config.HasField("version_policy"):
        vp = config.version_policy
        kind = vp.WhichOneof("policy_choice")
        if kind == "latest":
            out["version_policy"] = {"policy": "latest", "latest_n": vp.latest.num_versions or 1}
        elif kind == "all":
            out["version_policy"] = {"policy": "all"}
        elif kind == "specific":
            out["version_policy"] = {"policy": "specific", "versions": list(vp.specific.versions)}
    if config.parameters:
        out["parameters"] = {k: v.string_value for k, v in config.parameters.items()}
    if config.HasField("ensemble_scheduling"):
        out["ensemble_scheduling"] = {"step": [
            {"model_name": s.model_name, "model_version": s.model_version, "input_map": dict(s.input_map),
             "output_map": dict(s.output_map)} for s in config.ensemble_scheduling.step]}
    return out


# --- layer 3: twinfer's config.yaml -----------------------------------------------------------------------------

def read_yaml(path: Path) -> dict[str, Any]:
    """The file as a partial config dict; `dynamic_batching: false/true` means off / on with defaults."""
    try:
        data = yaml.safe_load(read_config_text(path))
    except (yaml.YAMLError, OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from exc
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    if isinstance(data.get("dynamic_batching"), bool):
        data["dynamic_batching"] = {} if data["dynamic_batching"] else None
    if "platform" in data:  # Triton's key for ensembles (`platform: ensemble`); twinfer calls it the backend
        if "backend" in data:
            raise ConfigError(f"{path}: give either backend or platform, not both")
        data["backend"] = data.pop("platform")
    return data


# --- merging ----------------------------------------------------------------------------------------------------

class _Layers:
    """The config being merged, plus which file last set each key, so an error names the file to fix."""

    def __init__(self, name: str, sig: _Signature | None) -> None:
        self.name = name
        self.sig = sig
        self.config: dict[str, Any] = {"name": name}
        self.origin: dict[str, str] = {}  # "max_batch_size" or "outputs.OUTPUT0" -> file
        self.last = ""

    def apply(self, layer: dict[str, Any], where: str) -> None:
        if layer.get("name", self.name) != self.name:
            raise ConfigError(f"{where}: name: {layer['name']!r} differs from the directory name {self.name!r}")
        self.last = where
        if "instance_count" in layer and "instance_group" not in layer:
            self.config.pop("instance_group", None)  # a later file's plain count replaces the groups below it
        for key, value in layer.items():
            self.origin[key] = where
            if key == "instance_group":
                self.origin["instance_count"] = where  # derived from the groups (their total)
            if key in _TENSOR_KINDS:
                self.config[key] = self._merge_tensors(key, self.config.get(key, []), value, where)
            elif key == "dynamic_batching" and isinstance(value, dict) and isinstance(self.config.get(key), dict):
                self.config[key] = {**self.config[key], **value}
            else:
                self.config[key] = value

    def _merge_tensors(self, kind: str, base: list[dict[str, Any]], overlay: Any, where: str) -> list[dict[str, Any]]:
        if not isinstance(overlay, list):
            raise ConfigError(f"{where}: {kind}: expected a list of tensors")
        merged = {t["name"]: dict(t) for t in base}
        for i, entry in enumerate(overlay):
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                raise ConfigError(f"{where}: {kind}.{i}: every tensor needs a name")
            name = entry["name"]
            if self.sig is not None and name not in self.sig.tensors[kind]:
                known = ", ".join(self.sig.tensors[kind]) or "none"
                raise ConfigError(f"{where}: {kind}.{name}: no such {kind[:-1]} in {self.sig.path.name} "
                                  f"(it has {known})")
            merged.setdefault(name, {}).update(entry)
            self.origin[f"{kind}.{name}"] = where
        return list(merged.values())

    def finish(self) -> ModelConfig:
        """Fill in the dims left to the model file, then validate the whole."""
        if "outputs" in self.config and "inputs" not in self.config and self.config.get("backend") == "python":
            self.config["inputs"] = []  # a python model whose config lists no input takes none, as in Triton
        if not all(kind in self.config for kind in _TENSOR_KINDS):
            if self.sig is None and self.last and not self.last.endswith((".yaml", ".pbtxt")):
                raise ConfigError(f"{self.last}: this model file does not declare its tensors (TorchScript, "
                                  "torch.export and Keras files do not, unlike ONNX and SavedModel): list the inputs "
                                  "and outputs in config.yaml")
            raise ConfigError(f"{self.last or self.name}: no model file and no config giving inputs and outputs")
        batch = self.config.get("max_batch_size")
        batching = isinstance(batch, int) and batch > 0
        for kind in _TENSOR_KINDS:
            for t in self.config[kind]:
                if "dims" in t or self.sig is None:
                    continue
                shape = self.sig.tensors[kind][t["name"]][1]
                if shape is None:
                    raise ConfigError(f"{self.sig.path}: {kind}.{t['name']}: the model does not declare its "
                                      f"shape; give its dims in config.yaml")
                if batching and (not shape or shape[0] != -1):
                    raise ConfigError(f"{self.origin['max_batch_size']}: max_batch_size: {batch} needs a dynamic "
                                      f"first dimension, but {kind}.{t['name']} has shape {list(shape)} in "
                                      f"{self.sig.path.name}")
                t["dims"] = list(shape[1:] if batching else shape)
        try:
            return ModelConfig.model_validate(self.config)
        except ValidationError as exc:
            raise ConfigError(self._describe(exc)) from None

    def _describe(self, error: ValidationError) -> str:
        """'file: dotted.key: message' per error, joined on one line; tensor indices become tensor names."""
        parts = []
        for e in error.errors():
            loc = [str(p) for p in e["loc"]]
            where = self.last
            if loc and loc[0] in _TENSOR_KINDS and len(loc) > 1 and isinstance(e["loc"][1], int):
                name = self.config[loc[0]][e["loc"][1]].get("name")
                loc[1] = str(name)
                where = self.origin.get(f"{loc[0]}.{name}", self.origin.get(loc[0], where))
            elif loc:
                where = self.origin.get(loc[0], where)
            message = "unknown key" if e["type"] == "extra_forbidden" else e["msg"].removeprefix("Value error, ")
            parts.append(f"{where}: {'.'.join(loc) or '(top level)'}: {' '.join(message.split())}")
        return "; ".join(parts)


def load_model_config(model_dir: Path, sample_model_file: Path | None) -> ModelConfig:
    """The merged configuration of the model in `model_dir`; a one-line ConfigError naming file and key otherwise.

    `sample_model_file` (normally the newest version's file) supplies the signature every version is assumed to share.
    """
    name = model_dir.name
    overlays = [(str(model_dir / f), reader(model_dir / f)) for f, reader in (("config.pbtxt", read_pbtxt),
                                                                             ("config.yaml", read_yaml))
                if (model_dir / f).is_file()]
    backend = next((layer["backend"] for _, layer in reversed(overlays) if isinstance(layer.get("backend"), str)),
                   None)
    if sample_model_file is not None and backend and canonical_backend(backend):
        # A version may hold several formats (twinfer train publishes ONNX and TorchScript side by side): the
        # signature comes from the file the configured backend will load.
        sample_model_file = find_model_file(sample_model_file.parent, backend) or sample_model_file
    sig = _read_signature(sample_model_file) if sample_model_file is not None else None
    layers = _Layers(name, sig)
    if sig is not None:
        layers.apply(_signature_layer(name, sig), str(sample_model_file))
    elif sample_model_file is not None and backend is None:
        layers.apply({"backend": backend_of_file(sample_model_file)}, str(sample_model_file))
    for where, layer in overlays:
        layers.apply(layer, where)
    if sample_model_file is not None and sample_model_file.name == "model.py" and canonical_backend(
            layers.config.get("backend") or "") == "python":
        _auto_complete_python(layers, sample_model_file)
    return layers.finish()


def _auto_complete_python(layers: _Layers, model_file: Path) -> None:
    """A python model's `auto_complete_config` (Triton's hook) fills in what the config files leave out."""
    from twinfer.backends.python import auto_complete
    from twinfer.backends.python_import import MODEL_CODE_ERRORS

    partial = dict(layers.config)
    try:
        completed = auto_complete(partial, model_file)
    except ModelLoadError as exc:
        raise ConfigError(str(exc)) from None
    except MODEL_CODE_ERRORS as exc:  # noqa: BLE001 - the model's own code (sys.exit() included)
        raise ConfigError(f"{model_file}: auto_complete_config: {type(exc).__name__}: {exc}") from None
    if completed is not partial:
        layers.config = completed
        layers.last = str(model_file)
