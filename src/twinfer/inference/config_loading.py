"""Reads a model's configuration from what its directory holds, in layers.

1. The model file's own signature (ONNX graph inputs/outputs) gives a complete config when nothing else exists:
   a dynamic first dimension on every tensor means batching is allowed.
2. Triton's `config.pbtxt`, where present, overrides it (parsed with Triton's own protobuf schema).
3. twinfer's `config.yaml`, where present, wins. Its keys are ModelConfig's fields:

       name: face_blendshapes            # optional; must equal the directory name
       backend: onnxruntime
       max_batch_size: 64                # 0 = no batch dimension
       inputs:  [{name: image, datatype: FP32, dims: [1, 256, 256]}]
       outputs: [{name: blendshapes, labels: [eyeBlinkLeft, ...]}]   # merged by name with the signature
       dynamic_batching: {max_queue_delay_us: 500, preferred_batch_sizes: [8, 16], max_queue_size: 1024,
                          default_timeout_ms: 0}                      # or `false` to run requests one by one
       instance_count: 1
       version_policy: {policy: latest, latest_n: 1}                   # or all, or specific + versions: [1, 3]
       warmup: true
       parameters: {intra_op_threads: "2"}

Tensor lists merge by name, so a config.yaml that only adds labels to an output keeps the derived datatype and
dims. Every failure is a ConfigError with one line naming the file and the key. Blocking file I/O: call from a
thread.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from twinfer.errors import ConfigError
from twinfer.inference.datatypes import ONNX_TO_DATATYPE
from twinfer.inference.model_config import ModelConfig

MODEL_FILENAMES = ("model.onnx",)
DERIVED_MAX_BATCH_SIZE = 64

_TRITON_PLATFORMS = {"onnxruntime_onnx": "onnxruntime"}
_TRITON_BACKENDS = {"onnxruntime": "onnxruntime"}


def find_model_file(version_dir: Path) -> Path | None:
    for name in MODEL_FILENAMES:
        candidate = version_dir / name
        if candidate.is_file():
            return candidate
    return None


# --- layer 1: the model file ------------------------------------------------------------------------------------

def _onnx_dims(value_info: Any) -> list[int]:
    dims = []
    for d in value_info.type.tensor_type.shape.dim:
        dims.append(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1)
    return dims


def derive_from_onnx(name: str, onnx_path: Path) -> dict[str, Any]:
    """A complete config (as a dict) from the ONNX graph's signature, without creating a session."""
    import onnx

    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as exc:
        raise ConfigError(f"{onnx_path}: not a readable ONNX model ({exc})") from exc
    initializers = {i.name for i in model.graph.initializer}
    graph_inputs = [i for i in model.graph.input if i.name not in initializers]

    def describe(value_info: Any) -> tuple[str, str, list[int]]:
        elem = value_info.type.tensor_type.elem_type
        datatype = ONNX_TO_DATATYPE.get(elem)
        if datatype is None:
            raise ConfigError(f"{onnx_path}: tensor {value_info.name!r} has unsupported element type {elem}")
        return value_info.name, datatype, _onnx_dims(value_info)

    inputs = [describe(v) for v in graph_inputs]
    outputs = [describe(v) for v in model.graph.output]
    batching = all(dims and dims[0] == -1 for _, _, dims in inputs + outputs)

    def tensor(entry: tuple[str, str, list[int]]) -> dict[str, Any]:
        tname, datatype, dims = entry
        return {"name": tname, "datatype": datatype, "dims": dims[1:] if batching else dims}

    return {
        "name": name,
        "backend": "onnxruntime",
        "max_batch_size": DERIVED_MAX_BATCH_SIZE if batching else 0,
        "inputs": [tensor(t) for t in inputs],
        "outputs": [tensor(t) for t in outputs],
        "dynamic_batching": {} if batching else None,
    }


# --- layer 2: Triton's config.pbtxt -----------------------------------------------------------------------------

def read_pbtxt(path: Path) -> dict[str, Any]:
    """The parts of a Triton ModelConfig twinfer understands, as a partial config dict."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    try:
        config = text_format.Parse(path.read_text(), mc.ModelConfig())
    except (text_format.ParseError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    out: dict[str, Any] = {}
    if config.name:
        out["name"] = config.name
    if config.backend or config.platform:
        out["backend"] = _TRITON_BACKENDS.get(config.backend) or _TRITON_PLATFORMS.get(config.platform) or (
            config.backend or config.platform
        )
    out["max_batch_size"] = config.max_batch_size

    def tensor(t: Any, labels_dir: Path | None = None) -> dict[str, Any]:
        datatype = mc.DataType.Name(t.data_type).removeprefix("TYPE_")
        entry: dict[str, Any] = {"name": t.name, "datatype": "BYTES" if datatype == "STRING" else datatype,
                                 "dims": list(t.dims)}
        if labels_dir is not None and getattr(t, "label_filename", ""):
            label_path = labels_dir / t.label_filename
            if label_path.is_file():
                entry["labels"] = [line.strip() for line in label_path.read_text().splitlines() if line.strip()]
        return entry

    if config.input:
        out["inputs"] = [tensor(t) for t in config.input]
    if config.output:
        out["outputs"] = [tensor(t, path.parent) for t in config.output]
    if config.HasField("dynamic_batching"):
        db = config.dynamic_batching
        policy: dict[str, Any] = {
            "max_queue_delay_us": db.max_queue_delay_microseconds,
            "preferred_batch_sizes": list(db.preferred_batch_size),
        }
        if db.HasField("default_queue_policy"):
            if db.default_queue_policy.max_queue_size > 0:
                policy["max_queue_size"] = db.default_queue_policy.max_queue_size
            policy["default_timeout_ms"] = db.default_queue_policy.default_timeout_microseconds // 1000
        out["dynamic_batching"] = policy
    else:
        out["dynamic_batching"] = None  # Triton's default scheduler: no batching across requests
    if config.instance_group:
        out["instance_count"] = max(1, sum(g.count or 1 for g in config.instance_group))
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
    return out


# --- layer 3: twinfer's config.yaml -----------------------------------------------------------------------------

def read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    if data.get("dynamic_batching") is False:
        data["dynamic_batching"] = None
    return data


# --- merging ----------------------------------------------------------------------------------------------------

def _merge_tensors(base: list[dict[str, Any]], overlay: list[Any], where: str) -> list[dict[str, Any]]:
    merged = {t["name"]: dict(t) for t in base}
    order = [t["name"] for t in base]
    for entry in overlay:
        if not isinstance(entry, dict) or "name" not in entry:
            raise ConfigError(f"{where}: every tensor entry needs a name")
        name = entry["name"]
        if name not in merged:
            order.append(name)
            merged[name] = {}
        merged[name].update(entry)
    return [merged[n] for n in order]


def _overlay(base: dict[str, Any], overlay: dict[str, Any], where: str) -> dict[str, Any]:
    out = dict(base)
    for key, value in overlay.items():
        if key in ("inputs", "outputs") and isinstance(value, list):
            out[key] = _merge_tensors(out.get(key, []), value, f"{where}: {key}")
        elif key == "dynamic_batching" and isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def _describe(error: ValidationError, where: str) -> str:
    parts = []
    for e in error.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        message = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        parts.append(f"{key}: {message}")
    return f"{where}: " + "; ".join(parts)


def load_model_config(model_dir: Path, sample_model_file: Path | None) -> ModelConfig:
    """The merged configuration of the model in `model_dir`; ConfigError naming file and key otherwise."""
    name = model_dir.name
    config: dict[str, Any] = {"name": name}
    sources = []
    if sample_model_file is not None and sample_model_file.suffix == ".onnx":
        config = derive_from_onnx(name, sample_model_file)
        sources.append(str(sample_model_file))
    for filename, reader in (("config.pbtxt", read_pbtxt), ("config.yaml", read_yaml)):
        path = model_dir / filename
        if path.is_file():
            layer = reader(path)
            if layer.get("name", name) != name:
                raise ConfigError(f"{path}: name: {layer['name']!r} differs from the directory name {name!r}")
            config = _overlay(config, layer, str(path))
            sources.append(str(path))
    where = sources[-1] if sources else str(model_dir)
    if "inputs" not in config or "outputs" not in config:
        raise ConfigError(f"{where}: no model file and no config giving inputs and outputs")
    try:
        return ModelConfig.model_validate(config)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, where)) from None
