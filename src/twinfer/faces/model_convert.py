"""Build time only: the ONNX route for the three MediaPipe face models (tf2onnx), reproducible byte for byte.

    python tools/convert_face_models.py [--out build/face_models_onnx]   # convert the pinned wheel's models
    python tools/convert_face_models.py --check --out DIR                # re-convert and compare with DIR

The demo repository serves the .tflite files through the `tflite` backend, which measured faster on one core
(docs/face_models.md). This route stays for two uses: the parity test (LiteRT vs ONNX Runtime on the same
frames) and platforms without LiteRT wheels, where the ONNX files serve through the always-installed onnxruntime
backend with the same tensor names. Conversion needs tf2onnx and TensorFlow (the `face-build` extra).

Three rewrites after tf2onnx, all exact:
- `make_batch_dynamic`: tf2onnx keeps the TFLite batch of 1 (input shape, Reshape targets); dimension 0 becomes
  `batch` on every input and output and each constant Reshape target starting with 1 starts with 0 (copy the
  input's dimension), valid because every Reshape here keeps the batch axis.
- `split_prelu`: ONNX Runtime's PRelu with a per-channel slope takes 60 % of the landmark model's time on one
  core; Relu(x) + slope * Min(x, 0) is the same function bit for bit and runs 2.2x faster.
- `canonical_names`: tf2onnx numbers constants in hash-seeded order, so names are fixed by graph order.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path

from twinfer.faces.model_files import DEFAULT_CACHE, LICENSE_MEMBER, fetch_face_models

DEFAULT_ONNX_DIR = Path("build") / "face_models_onnx"
OPSET = 17
PRODUCER = "twinfer.faces.model_convert (tf2onnx 1.17.0)"


@dataclass(frozen=True)
class FaceModelFile:
    """One shipped model: the repository name it is served under and the .tflite it comes from."""

    name: str
    tflite: str


FACE_MODEL_FILES: tuple[FaceModelFile, ...] = (  # the repository names, and the wheel's files they serve
    FaceModelFile("face_detector", "face_detection_short_range.tflite"),
    FaceModelFile("face_landmarks", "face_landmark.tflite"),
    FaceModelFile("iris_landmarks", "iris_landmark.tflite"),
)


def make_batch_dynamic(model):  # onnx.ModelProto -> onnx.ModelProto (onnx imported lazily)
    """Name dim 0 `batch` on inputs and outputs, make constant Reshape targets keep the batch, drop stale shapes."""
    import numpy as np
    from onnx import numpy_helper

    graph = model.graph
    for value in (*graph.input, *graph.output):
        dim = value.type.tensor_type.shape.dim[0]
        dim.ClearField("dim_value")
        dim.dim_param = "batch"
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    for node in graph.node:
        if node.op_type != "Reshape" or node.input[1] not in initializers:
            continue
        tensor = initializers[node.input[1]]
        shape = numpy_helper.to_array(tensor).copy()
        if shape.size and shape[0] == 1:
            shape[0] = 0
            tensor.CopyFrom(numpy_helper.from_array(shape.astype(np.int64), tensor.name))
    del graph.value_info[:]
    model.producer_name = PRODUCER
    model.producer_version = ""
    model.doc_string = ""
    graph.doc_string = ""
    return model


def split_prelu(model):  # onnx.ModelProto -> onnx.ModelProto
    """Replace each PRelu(x, slope) by Relu(x) + slope * Min(x, 0): identical values, far faster in ONNX Runtime."""
    import numpy as np
    from onnx import helper, numpy_helper

    graph = model.graph
    nodes = []
    zero = "prelu_zero"
    for node in graph.node:
        if node.op_type != "PRelu":
            nodes.append(node)
            continue
        x, slope = node.input
        y = node.output[0]
        nodes += [helper.make_node("Relu", [x], [f"{y}_pos"]),
                  helper.make_node("Min", [x, zero], [f"{y}_neg"]),
                  helper.make_node("Mul", [f"{y}_neg", slope], [f"{y}_scaled"]),
                  helper.make_node("Add", [f"{y}_pos", f"{y}_scaled"], [y])]
    if len(nodes) != len(graph.node):
        graph.initializer.append(numpy_helper.from_array(np.zeros((), np.float32), zero))
    del graph.node[:]
    graph.node.extend(nodes)
    return model


def canonical_names(model):  # onnx.ModelProto -> onnx.ModelProto
    """Rename every inner tensor and node by first use in node order, and sort the initializers.

    tf2onnx numbers its generated constants from counters whose order follows set iteration (hash-seeded), so the
    same .tflite converts to different bytes on each run; with names fixed by graph order the output is
    reproducible byte for byte, which is what lets a test re-convert and compare with the committed files.
    """
    graph = model.graph
    keep = {value.name for value in (*graph.input, *graph.output)} | {""}
    renamed: dict[str, str] = {}

    def name_of(old: str) -> str:
        if old in keep:
            return old
        if old not in renamed:
            renamed[old] = f"t{len(renamed)}"
        return renamed[old]

    for index, node in enumerate(graph.node):
        node.name = f"{node.op_type.lower()}_{index}"
        for position, old in enumerate(node.input):
            node.input[position] = name_of(old)
        for position, old in enumerate(node.output):
            node.output[position] = name_of(old)
    initializers = sorted(graph.initializer, key=lambda tensor: int(name_of(tensor.name)[1:]))
    for tensor in initializers:
        tensor.name = name_of(tensor.name)
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    return model


def convert_one(tflite: Path, target: Path) -> None:
    """tf2onnx on one .tflite, then `make_batch_dynamic`, checked by the ONNX checker, written to `target`."""
    import onnx
    import tf2onnx

    model, _ = tf2onnx.convert.from_tflite(str(tflite), opset=OPSET)
    model = canonical_names(split_prelu(make_batch_dynamic(model)))
    onnx.checker.check_model(model, full_check=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(model.SerializeToString())


def convert_all(out: Path = DEFAULT_ONNX_DIR, cache: Path = DEFAULT_CACHE) -> dict[str, str]:
    """Fetch the pinned wheel's models, convert all three into `out`, copy the licence; returns name -> sha256."""
    digests: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        sources = fetch_face_models(Path(tmp), cache)
        for item in FACE_MODEL_FILES:
            target = Path(out) / f"{item.name}.onnx"
            convert_one(sources / item.tflite, target)
            digests[item.name] = hashlib.sha256(target.read_bytes()).hexdigest()
        licence = (sources / LICENSE_MEMBER.name).read_bytes()
        (Path(out) / LICENSE_MEMBER.name).write_bytes(licence)
    return digests


def differences(expected: Path, actual: Path) -> list[str]:
    """Names of the shipped files whose bytes differ between two folders (empty when reproduced exactly)."""
    names = [f"{item.name}.onnx" for item in FACE_MODEL_FILES] + [LICENSE_MEMBER.name]
    return [name for name in names
            if not (expected / name).is_file() or (expected / name).read_bytes() != (actual / name).read_bytes()]


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_ONNX_DIR,
                        help=f"output folder (default {DEFAULT_ONNX_DIR})")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="wheel cache")
    parser.add_argument("--check", action="store_true", help="re-convert into a temporary folder and compare")
    args = parser.parse_args(argv)
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            convert_all(Path(tmp), args.cache)
            changed = differences(args.out, Path(tmp))
        print("reproduced byte for byte" if not changed else f"differ: {', '.join(changed)}")
        return 1 if changed else 0
    for name, digest in convert_all(args.out, args.cache).items():
        print(f"{args.out / (name + '.onnx')}  sha256 {digest}")
    return 0
