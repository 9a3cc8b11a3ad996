"""Builds the demo model repository behind `make models`: no downloads, fixed seeds, same bytes every time.

    python -m twinfer.demo_models [DIR] [--force]

- `tiny`: INPUT0 fp32[-1,16] -> OUTPUT0 = Relu(MatMul(INPUT0, W)), W from seed 0: the peers' benchmark model,
  laid out with no config file at all, so the server derives its config from the graph.
- `face_blendshapes`: a 1x256x256 grayscale image in [0,1] -> 52 values in [0,1] labelled with the ARKit names.
  A real small CNN graph, but its weights are RANDOM: it shows the plumbing, not a face tracker, until the
  training pipeline publishes a trained version.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml

from twinfer.arkit import ARKIT_BLENDSHAPES


def _save_atomically(model, path: Path) -> None:
    import onnx

    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    onnx.save(model, tmp)
    os.replace(tmp, path)


def _finish(graph):
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="twinfer")
    model.ir_version = 8  # loadable by older onnxruntime builds too
    return model


def build_tiny(path: Path) -> None:
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).standard_normal((16, 16)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["INPUT0", "W"], ["mm"]), helper.make_node("Relu", ["mm"], ["OUTPUT0"])],
        "tiny",
        [helper.make_tensor_value_info("INPUT0", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("OUTPUT0", TensorProto.FLOAT, ["batch", 16])],
        initializer=[numpy_helper.from_array(w, name="W")],
    )
    _save_atomically(_finish(graph), path)


def build_face_blendshapes(path: Path) -> None:
    """Conv(1->8, k5, s4)+Relu, Conv(8->16, k3, s2)+Relu, GlobalAveragePool, Flatten, Gemm(16->52), Sigmoid."""
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
    _save_atomically(_finish(graph), path)


FACE_CONFIG_HEADER = (
    "# Built by `make models` (twinfer.demo_models). The weights are RANDOM until the training pipeline\n"
    "# publishes a trained version; the labels and the plumbing are real.\n"
)


def face_config() -> dict:
    return {
        "max_batch_size": 64,
        "dynamic_batching": {"max_queue_delay_us": 500, "preferred_batch_sizes": [8, 16]},
        "outputs": [{"name": "blendshapes", "labels": list(ARKIT_BLENDSHAPES)}],
    }


def _verify(path: Path, inputs: dict[str, np.ndarray]) -> None:
    """Refuse to leave a model on disk that ONNX Runtime cannot run."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    session.run(None, inputs)


def build_repository(root: Path, force: bool = False) -> list[Path]:
    """Write the demo repository under `root`; returns the files written (existing ones are kept unless force)."""
    written: list[Path] = []
    tiny = root / "tiny" / "1" / "model.onnx"
    if force or not tiny.exists():
        build_tiny(tiny)
        _verify(tiny, {"INPUT0": np.zeros((1, 16), np.float32)})
        written.append(tiny)
    face = root / "face_blendshapes" / "1" / "model.onnx"
    if force or not face.exists():
        build_face_blendshapes(face)
        _verify(face, {"image": np.zeros((1, 1, 256, 256), np.float32)})
        written.append(face)
    config = root / "face_blendshapes" / "config.yaml"
    if force or not config.exists():
        text = FACE_CONFIG_HEADER + yaml.safe_dump(face_config(), sort_keys=False, default_flow_style=None, width=100)
        fd, tmp = tempfile.mkstemp(dir=config.parent, prefix=".config.yaml.")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, config)
        written.append(config)
    return written


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    parser = argparse.ArgumentParser(prog="python -m twinfer.demo_models", description="Build the demo models.")
    parser.add_argument("directory", nargs="?", default="models", type=Path)
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
