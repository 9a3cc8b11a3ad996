"""Builds the demo model repository behind `make models`: no downloads, fixed seeds, same bytes every time.

    python -m twinfer.demo_models [DIR] [--force]

- `tiny`: INPUT0 fp32[-1,16] -> OUTPUT0 = Relu(MatMul(INPUT0, W)), W from seed 0: the peers' benchmark model,
  laid out with no config file at all, so the server derives its config from the graph.
- `face_blendshapes`: a 1x256x256 grayscale image in [0,1] -> 52 values in [0,1] labelled with the ARKit names.
  A real small CNN graph, but its weights are RANDOM: it shows the plumbing, not a face tracker, until the
  training pipeline publishes a trained version.

Every file is written to a temporary name beside its target and renamed into place, and a model is renamed only
after ONNX Runtime has loaded it and run a zero input: a server watching the repository never sees half a file,
and a failed build never leaves a file that the next (idempotent) build would mistake for a finished one.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from twinfer.arkit import ARKIT_BLENDSHAPES

if TYPE_CHECKING:
    import onnx

OPSET = 17
IR_VERSION = 8  # loadable by older onnxruntime builds (1.15+) too, not only the one in our venv

FACE_CONFIG_HEADER = (
    "# Built by `make models` (twinfer.demo_models). The weights are RANDOM until the training pipeline\n"
    "# publishes a trained version; the labels and the plumbing are real.\n"
)


def _write_atomically(path: Path, write: Callable[[Path], None], check: Callable[[Path], None] | None = None) -> None:
    """Write via a temporary file beside `path`, run `check` on it, then rename it into place.

    mkstemp creates 0600 files; they are widened to 0644 (what a plain `open` gives under the usual umask) so a
    server running as another user (a service account, a container user) can read a repository someone else built.
    Fixed rather than read from os.umask(), which can only be read by setting it: racy in a threaded process.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        if check is not None:
            check(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _runs_in_onnxruntime(inputs: dict[str, np.ndarray]) -> Callable[[Path], None]:
    """A check that refuses a model ONNX Runtime cannot load or run (the server would refuse it later anyway)."""

    def check(path: Path) -> None:
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        session.run(None, inputs)

    return check


def _save_model(model: onnx.ModelProto, path: Path, sample_inputs: dict[str, np.ndarray]) -> None:
    """Check the graph with the ONNX checker, then write it atomically once ONNX Runtime has run it."""
    import onnx

    onnx.checker.check_model(model, full_check=True)
    _write_atomically(path, lambda tmp: onnx.save(model, str(tmp)), _runs_in_onnxruntime(sample_inputs))


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


def face_blendshapes_model() -> onnx.ModelProto:
    """Conv(1->8, k5, s4)+Relu, Conv(8->16, k3, s2)+Relu, GlobalAveragePool, Flatten, Gemm(16->52), Sigmoid.

    Small enough to run in well under a millisecond on a CPU, yet a real convolutional graph, so batching,
    threading and the stream path are exercised with realistic shapes. He-initialised weights from a fixed seed:
    the outputs vary with the image but mean nothing until a trained version replaces this one.
    """
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(52)

    def he(*shape: int) -> np.ndarray:
        fan_in = int(np.prod(shape[1:]))
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

    weights = {
        "c1_w": he(8, 1, 5, 5), "c1_b": np.zeros(8, np.float32),
        "c2_w": he(16, 8, 3, 3), "c2_b": np.zeros(16, np.float32),
        "fc_w": he(52, 16), "fc_b": np.zeros(52, np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["image", "c1_w", "c1_b"], ["c1"], kernel_shape=[5, 5], strides=[4, 4],
                         pads=[2, 2, 2, 2]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "c2_w", "c2_b"], ["c2"], kernel_shape=[3, 3], strides=[2, 2],
                         pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], transB=1),
        helper.make_node("Sigmoid", ["logits"], ["blendshapes"]),
    ]
    graph = helper.make_graph(
        nodes,
        "face_blendshapes",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, 256, 256])],
        [helper.make_tensor_value_info("blendshapes", TensorProto.FLOAT, ["batch", 52])],
        initializer=[numpy_helper.from_array(v, name=k) for k, v in weights.items()],
    )
    return _finish(graph)


def build_face_blendshapes(path: Path) -> None:
    """Write the `face_blendshapes` model to `path` (atomically, after ONNX Runtime has run it)."""
    _save_model(face_blendshapes_model(), path, {"image": np.zeros((1, 1, 256, 256), np.float32)})


def face_config() -> dict[str, Any]:
    """The face model's config: batching tuned for many 60 fps streams, outputs labelled with the ARKit names so
    VMC / Live Link receivers get names rather than indices."""
    return {
        "max_batch_size": 64,
        "dynamic_batching": {"max_queue_delay_us": 500, "preferred_batch_sizes": [8, 16]},
        "outputs": [{"name": "blendshapes", "labels": list(ARKIT_BLENDSHAPES)}],
    }


def face_config_text() -> str:
    """config.yaml as written: the header (so nobody mistakes the weights for trained ones), then the YAML."""
    return FACE_CONFIG_HEADER + yaml.safe_dump(face_config(), sort_keys=False, default_flow_style=None, width=100)


def build_repository(root: Path, force: bool = False) -> list[Path]:
    """Write the demo repository under `root`; returns the files written (existing ones are kept unless force).

    Idempotent so `make run` can depend on it without rebuilding (and without touching mtimes a running server's
    repository poller would react to).
    """
    root = Path(root)
    steps: list[tuple[Path, Callable[[Path], None]]] = [
        (root / "tiny" / "1" / "model.onnx", build_tiny),
        (root / "face_blendshapes" / "1" / "model.onnx", build_face_blendshapes),
        (root / "face_blendshapes" / "config.yaml",
         lambda path: _write_atomically(path, lambda tmp: tmp.write_text(face_config_text(), encoding="utf-8"))),
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
    written = build_repository(args.directory, args.force)
    for path in written:
        print(f"wrote {path}")
    if not written:
        print(f"{args.directory}: demo models already built (--force rebuilds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
