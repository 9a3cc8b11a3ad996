from __future__ import annotations

import numpy as np
import onnxruntime as ort
import yaml

from tests.support import tiny_reference
from twinfer.arkit import ARKIT_BLENDSHAPES
from twinfer.demo_models import build_repository


def test_demo_repository_builds_runnable_models_once(tmp_path):
    written = build_repository(tmp_path)
    assert len(written) == 3
    x = np.random.default_rng(4).standard_normal((3, 16)).astype(np.float32)
    tiny = ort.InferenceSession(str(tmp_path / "tiny" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(tiny.run(None, {"INPUT0": x})[0], tiny_reference(x), rtol=1e-5, atol=1e-6)
    face = ort.InferenceSession(str(tmp_path / "face_blendshapes" / "1" / "model.onnx"),
                                providers=["CPUExecutionProvider"])
    [y] = face.run(None, {"image": np.random.default_rng(5).random((2, 1, 256, 256), np.float32)})
    assert y.shape == (2, 52) and (y >= 0).all() and (y <= 1).all()
    config = yaml.safe_load((tmp_path / "face_blendshapes" / "config.yaml").read_text())
    assert config["outputs"][0]["labels"] == list(ARKIT_BLENDSHAPES)
    assert not (tmp_path / "tiny" / "config.yaml").exists()
    mtimes = {p: p.stat().st_mtime_ns for p in written}
    assert build_repository(tmp_path) == []
    assert {p: p.stat().st_mtime_ns for p in written} == mtimes


def test_arkit_names_are_the_canonical_52():
    assert len(set(ARKIT_BLENDSHAPES)) == 52
    assert ARKIT_BLENDSHAPES[0] == "eyeBlinkLeft" and ARKIT_BLENDSHAPES[17] == "jawOpen"
    assert ARKIT_BLENDSHAPES[-1] == "tongueOut"
