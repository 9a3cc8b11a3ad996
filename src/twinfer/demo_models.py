"""Builds the demo model repository behind `make models`: no downloads, fixed seeds, same bytes every time.

    python -m twinfer.demo_models [DIR] [--force]

- `tiny`: INPUT0 fp32[-1,16] -> OUTPUT0 = Relu(MatMul(INPUT0, W)), W from seed 0: the peers' benchmark model,
  laid out with no config file at all, so the server derives its config from the graph.
- `face_blendshapes`: a 1x128x128 grayscale image in [0,1] -> 52 values in [0,1] labelled with the ARKit names.
  The model trained by `twinfer train face-blendshapes` on synthetic faces, shipped in the package
  (twinfer/data/face_blendshapes: model.onnx and its model card, under 1 MB) and copied in as version 1, with its
  config (batching, labels, validation gate) and the held-out validation set, rendered here from a fixed seed.
- `face_detector`, `face_landmarks`, `iris_landmarks`: MediaPipe 0.10.21's BlazeFace, face mesh and iris models
  (Apache-2.0), served by the `tflite` backend. The one build step that downloads: the pinned mediapipe wheel,
  once, into build/mediapipe-wheel (sha256-checked, never imported; twinfer.faces.model_files). Each version
  directory gets the .tflite as model.tflite and the licence; config.yaml comes from twinfer.faces.model_specs.

Every file is written to a temporary name beside its target and renamed into place, and a model is renamed only
after ONNX Runtime has loaded it and run a zero input: a server watching the repository never sees half a file,
and a failed build never leaves a file that the next (idempotent) build would mistake for a finished one.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from twinfer.arkit import ARKIT_BLENDSHAPES
from twinfer.atomic_files import write_atomically

if TYPE_CHECKING:
    import onnx

OPSET = 17
IR_VERSION = 8  # loadable by older onnxruntime builds (1.15+) too, not only the one in our venv

SHIPPED_FACE_MODEL = Path(__file__).parent / "data" / "face_blendshapes"
FACE_CONFIG_HEADER = (
    "# Built by `make models` (twinfer.demo_models). Version 1 is the model trained by `twinfer train\n"
    "# face-blendshapes` (see 1/model_card.md); `validation` is the gate every new version must pass.\n"
)


def _runs_in_onnxruntime(inputs: dict[str, np.ndarray]) -> Callable[[Path], None]:
    """A check that refuses a model ONNX Runtime cannot load or run (the server would refuse it later anyway)."""

    def check(path: Path) -> None:
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        session.run(None, inputs)

    return check


def _runs_in_litert(path: Path) -> None:
    """A check that LiteRT loads and runs a .tflite (skipped where the `tflite` extra is not installed: the
    server then refuses the model with a message naming the extra)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        return
    interpreter = Interpreter(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    interpreter.invoke()


def _save_model(model: onnx.ModelProto, path: Path, sample_inputs: dict[str, np.ndarray]) -> None:
    """Check the graph with the ONNX checker, then write it atomically once ONNX Runtime has run it."""
    import onnx

    onnx.checker.check_model(model, full_check=True)
    write_atomically(path, lambda tmp: onnx.save(model, str(tmp)), _runs_in_onnxruntime(sample_inputs))


def _finish(graph: onnx.GraphProto) -> onnx.ModelProto:
    """Wrap a graph in a model with a pinned opset and IR version, so the bytes do not drift with onnx upgrades."""
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="twinfer")
    model.ir_version = IR_VERSION
    return model


def tiny_model() -> onnx.ModelProto:
    """relu(INPUT0 @ W), W = default_rng(0) standard normal 16x16: identical to the peers' benchmark model, so
    numbers measured against either server compare like for like."""
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).standard_normal((16, 16)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["INPUT0", "W"], ["mm"]), helper.make_node("Relu", ["mm"], ["OUTPUT0"])],
        "tiny",
        [helper.make_tensor_value_info("INPUT0", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("OUTPUT0", TensorProto.FLOAT, ["batch", 16])],
        initializer=[numpy_helper.from_array(w, name="W")],
    )
    return _finish(graph)


def build_tiny(path: Path) -> None:
    """Write the `tiny` model to `path` (atomically, after ONNX Runtime has run it)."""
    _save_model(tiny_model(), path, {"INPUT0": np.zeros((1, 16), np.float32)})


def copy_shipped_face_model(path: Path) -> None:
    """Copy the trained face model shipped in the package to `path` (atomically, after ONNX Runtime has run it),
    with its model card beside it."""
    source = SHIPPED_FACE_MODEL / "model.onnx"
    if not source.is_file():
        raise FileNotFoundError(f"{source}: the shipped face model is missing from this installation")
    data = source.read_bytes()
    write_atomically(path, lambda tmp: tmp.write_bytes(data),
                     _runs_in_onnxruntime({"image": np.zeros((1, 1, 128, 128), np.float32)}))
    for card in ("model_card.md", "model_card.json"):
        text = (SHIPPED_FACE_MODEL / card).read_text(encoding="utf-8")
        write_atomically(path.parent / card, lambda tmp, text=text: tmp.write_text(text, encoding="utf-8"))


def face_config_text() -> str:
    """config.yaml as written: batching for many 60 fps streams, ARKit labels, the validation gate."""
    from twinfer.training.publish import face_config_yaml  # numpy/yaml only: no PyTorch

    return face_config_yaml(list(ARKIT_BLENDSHAPES), header=FACE_CONFIG_HEADER)


def write_face_validation_set(path: Path) -> None:
    from twinfer.sources.face_dataset import write_validation_set

    write_validation_set(path, 128)


def _face_model_steps(root: Path) -> list[tuple[Path, Callable[[Path], None]]]:
    """model.tflite, its licence and config.yaml for each face model, from the pinned wheel (fetched once)."""
    from twinfer.faces.model_files import DEFAULT_CACHE, LICENSE_MEMBER, cached_wheel, extract
    from twinfer.faces.model_specs import FACE_MODELS

    extracted: dict[str, Path] = {}

    def source(name: str) -> Path:
        if "dir" not in extracted:
            cache = Path(os.environ.get("TWINFER_FACE_MODEL_CACHE", DEFAULT_CACHE))
            extract(cached_wheel(cache), cache / "extracted")
            extracted["dir"] = cache / "extracted"
        return extracted["dir"] / name

    def copier(name: str, check: Callable[[Path], None] | None = None) -> Callable[[Path], None]:
        return lambda path: write_atomically(path, lambda tmp: tmp.write_bytes(source(name).read_bytes()), check)

    def config_writer(text: str) -> Callable[[Path], None]:
        def write(path: Path) -> None:
            source(LICENSE_MEMBER.name)  # fetch first: a failed download writes nothing of the model
            write_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))

        return write

    steps: list[tuple[Path, Callable[[Path], None]]] = []
    for spec in FACE_MODELS:
        version = root / spec.name / "1"
        steps += [  # the model file last: a watching server sees a complete model directory or none
            (root / spec.name / "config.yaml", config_writer(spec.config_yaml())),
            (version / LICENSE_MEMBER.name, copier(LICENSE_MEMBER.name)),
            (version / "model.tflite", copier(spec.tflite, _runs_in_litert)),
        ]
    return steps


FACE_TRACKER_HEADER = (
    "# The real-face tracker (twinfer.streaming.face_processor): open a stream on it and every frame runs\n"
    "# face_detector (only while no face is tracked), face_landmarks and iris_landmarks through the facade, then\n"
    "# the solver (52 ARKit blendshapes, head pose, gaze, calibration). Plain infer requests are refused: a\n"
    "# tracker's state lives with its stream. 1/tracker.yaml holds the solver's settings.\n"
)


def face_tracker_config_text() -> str:
    import yaml

    config = {
        "backend": "face_tracker",
        "max_batch_size": 0,
        "warmup": False,
        "parameters": {"detector": "face_detector", "landmarks": "face_landmarks", "iris": "iris_landmarks"},
        "inputs": [{"name": "image", "datatype": "UINT8", "dims": [-1, -1, 3]}],
        "outputs": [{"name": "blendshapes", "datatype": "FP32", "dims": [len(ARKIT_BLENDSHAPES)],
                     "labels": list(ARKIT_BLENDSHAPES)}],
    }
    return FACE_TRACKER_HEADER + yaml.safe_dump(config, sort_keys=False, default_flow_style=None, width=110)


TRACKER_SETTINGS = ("# The face solver's settings (twinfer.faces.solver.FaceSolver)\n"
                    "score_threshold: 0.5   # below this face-present score a frame counts as no face\n"
                    "hfov_deg: 60           # the camera's horizontal field of view, for the head's distance\n"
                    "ease_s: 0.5            # once the face is lost, values ease to neutral over this\n"
                    "# batch_across_streams: true  # run the model calls through the batchers (pays on a GPU;\n"
                    "#                             # on a CPU each frame runs inline, faster: face_processor.py)\n")


def _text_writer(text: str) -> Callable[[Path], None]:
    return lambda path: write_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def build_repository(root: Path, force: bool = False) -> list[Path]:
    """Write the demo repository under `root`; returns the files written (existing ones are kept unless force).

    Idempotent so `make run` can depend on it without rebuilding (and without touching mtimes a running server's
    repository poller would react to).
    """
    root = Path(root)
    steps: list[tuple[Path, Callable[[Path], None]]] = [
        (root / "tiny" / "1" / "model.onnx", build_tiny),
        (root / "face_blendshapes" / "1" / "model.onnx", copy_shipped_face_model),
        (root / "face_blendshapes" / "validation.npz", write_face_validation_set),
        (root / "face_blendshapes" / "config.yaml",
         lambda path: write_atomically(path, lambda tmp: tmp.write_text(face_config_text(), encoding="utf-8"))),
        *_face_model_steps(root),
        (root / "face_tracker" / "config.yaml", _text_writer(face_tracker_config_text())),
        (root / "face_tracker" / "1" / "tracker.yaml", _text_writer(TRACKER_SETTINGS)),
    ]
    written: list[Path] = []
    for path, build in steps:
        if force or not path.exists():
            build(path)
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    """`python -m twinfer.demo_models [DIR] [--force]`: build the repository and say what was written."""
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    parser = argparse.ArgumentParser(prog="python -m twinfer.demo_models", description="Build the demo models.")
    parser.add_argument("directory", nargs="?", default="models", type=Path,
                        help="model repository to write (default: models)")
    parser.add_argument("--force", action="store_true", help="rebuild files that already exist")
    args = parser.parse_args(argv)
    from twinfer.faces.model_files import FaceModelFetchError

    try:
        written = build_repository(args.directory, args.force)
    except FaceModelFetchError as error:  # the one download: say why in one line, not a traceback
        print(f"demo_models: face models: {error}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    if not written:
        print(f"{args.directory}: demo models already built (--force rebuilds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
