"""The two routes for the face models agree: LiteRT on the .tflite (served) and ONNX Runtime on the tf2onnx
conversion (the build-time alternative), and the conversion is reproducible byte for byte. Needs the tflite and
face-build extras (skipped otherwise); the pinned wheel comes from build/mediapipe-wheel (fetched once)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert", reason="the tflite extra")
pytest.importorskip("tf2onnx", reason="the face-build extra (tf2onnx, TensorFlow)")
skimage_data = pytest.importorskip("skimage.data", reason="scikit-image ships the test faces")

from twinfer.backends import BackendOptions, load_backend  # noqa: E402
from twinfer.faces.model_convert import FACE_MODEL_FILES, convert_all, convert_one  # noqa: E402
from twinfer.faces.model_files import (DEFAULT_CACHE, WHEEL_NAME, WHEEL_SHA256,  # noqa: E402
                                       fetch_face_models, sha256_of)
from twinfer.faces.model_specs import FACE_MODELS  # noqa: E402
from twinfer.faces.tracking_step import FaceTrackingStep, ModelCall  # noqa: E402
from twinfer.inference.model_config import ModelConfig, TensorConfig  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / DEFAULT_CACHE


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("onnx")
    convert_all(out, CACHE)
    return out


@pytest.fixture(scope="module")
def tflite_dir(tmp_path_factory) -> Path:
    return fetch_face_models(tmp_path_factory.mktemp("tflite"), CACHE)


def _infer_with(backend_name: str, directory: Path, suffix: str):
    loaded = {}
    for spec, item in zip(FACE_MODELS, FACE_MODEL_FILES):
        config = ModelConfig(
            name=spec.name, backend=backend_name, max_batch_size=spec.max_batch_size,
            inputs=tuple(TensorConfig(name=t.name, datatype="FP32", dims=t.dims) for t in spec.inputs),
            outputs=tuple(TensorConfig(name=t.name, datatype="FP32", dims=t.dims) for t in spec.outputs))
        file = directory / (f"{item.name}.onnx" if suffix == "onnx" else item.tflite)
        model_file = file.parent / f"model.{suffix}"
        target = directory / spec.name / model_file.name
        target.parent.mkdir(exist_ok=True)
        target.write_bytes(file.read_bytes())
        loaded[spec.name] = (config, load_backend(config, target, BackendOptions()))

    def run(call: ModelCall) -> dict[str, np.ndarray]:
        config, backend = loaded[call.model]
        out = backend.run(call.inputs, [t.name for t in config.outputs])
        return {name: value.reshape(value.shape[0], *config.output(name).dims) for name, value in out.items()}

    return run


def test_litert_and_onnxruntime_track_the_astronaut_to_the_same_points(converted, tflite_dir):
    """Measured: landmarks within 1e-3 frame pixels, presence and iris alike; both through twinfer backends."""
    frame = skimage_data.astronaut()
    lite = FaceTrackingStep().track(frame, _infer_with("tflite", tflite_dir, "tflite"))
    onnx = FaceTrackingStep().track(frame, _infer_with("onnxruntime", converted, "onnx"))
    assert lite is not None and onnx is not None
    np.testing.assert_allclose(onnx.landmarks, lite.landmarks, atol=0.01)
    np.testing.assert_allclose(onnx.image_left_eye.iris, lite.image_left_eye.iris, atol=0.01)
    np.testing.assert_allclose(onnx.image_right_eye.contour, lite.image_right_eye.contour, atol=0.01)
    assert abs(onnx.presence - lite.presence) < 1e-6
    np.testing.assert_allclose(onnx.roi.rotation, lite.roi.rotation, atol=1e-5)


def test_onnx_conversion_has_a_dynamic_batch(converted):
    import onnx

    for item in FACE_MODEL_FILES:
        model = onnx.load(str(converted / f"{item.name}.onnx"))
        for value in (*model.graph.input, *model.graph.output):
            assert value.type.tensor_type.shape.dim[0].dim_param == "batch", (item.name, value.name)
        assert not [n for n in model.graph.node if n.op_type == "PRelu"]  # split for ONNX Runtime's speed


def test_conversion_is_byte_for_byte_reproducible_across_hash_seeds(converted, tflite_dir, tmp_path):
    """tf2onnx's constant names follow hash-seeded set order; canonical names make the bytes independent of it."""
    assert sha256_of(CACHE / WHEEL_NAME) == WHEEL_SHA256
    item = FACE_MODEL_FILES[0]
    target = tmp_path / "again.onnx"
    script = ("import sys; from pathlib import Path; from twinfer.faces.model_convert import convert_one; "
              "convert_one(Path(sys.argv[1]), Path(sys.argv[2]))")
    env = {**os.environ, "PYTHONHASHSEED": "12345", "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, "-c", script, str(tflite_dir / item.tflite), str(target)], env=env, check=True,
                   capture_output=True, timeout=300)
    assert target.read_bytes() == (converted / f"{item.name}.onnx").read_bytes()
    convert_one(tflite_dir / item.tflite, tmp_path / "in_process.onnx")
    assert (tmp_path / "in_process.onnx").read_bytes() == target.read_bytes()
