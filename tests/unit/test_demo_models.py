from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import yaml

from tests.support import tiny_reference
from twinfer import demo_models
from twinfer.arkit import ARKIT_BLENDSHAPES
from twinfer.demo_models import build_repository, main
from twinfer.sources.synthetic_face import render_face


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_tiny_is_relu_of_matmul_with_seed_0_weights(tmp_path):
    build_repository(tmp_path)
    w = np.random.default_rng(0).standard_normal((16, 16)).astype(np.float32)
    x = np.random.default_rng(4).standard_normal((3, 16)).astype(np.float32)
    [y] = _session(tmp_path / "tiny" / "1" / "model.onnx").run(None, {"INPUT0": x})
    assert y.shape == (3, 16) and y.dtype == np.float32
    np.testing.assert_allclose(y, np.maximum(x @ w, 0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(y, tiny_reference(x), rtol=1e-5, atol=1e-6)
    assert not (tmp_path / "tiny" / "config.yaml").exists()  # the server derives tiny's config from the graph


def test_face_model_is_the_shipped_trained_one_with_its_card(tmp_path):
    build_repository(tmp_path)
    version = tmp_path / "face_blendshapes" / "1"
    assert (version / "model.onnx").read_bytes() == (demo_models.SHIPPED_FACE_MODEL / "model.onnx").read_bytes()
    session = _session(version / "model.onnx")
    assert [(i.name, i.shape) for i in session.get_inputs()] == [("image", ["batch", 1, 128, 128])]
    assert [(o.name, o.shape) for o in session.get_outputs()] == [("blendshapes", ["batch", 52])]
    [y] = session.run(None, {"image": np.random.default_rng(5).random((2, 1, 128, 128), np.float32)})
    assert y.shape == (2, 52) and y.dtype == np.float32
    assert (y >= 0).all() and (y <= 1).all()
    card = json.loads((version / "model_card.json").read_text())
    assert card["files"]["model.onnx"] == hashlib.sha256((version / "model.onnx").read_bytes()).hexdigest()
    assert "Held-out error" in (version / "model_card.md").read_text()


def test_face_model_tracks_a_rendered_face(tmp_path):
    """Trained, not random: a wide-open jaw reads as jawOpen, a neutral face does not."""
    build_repository(tmp_path)
    session = _session(tmp_path / "face_blendshapes" / "1" / "model.onnx")
    faces = np.stack([render_face(values, 128, as_float=True)[None] for values in
                      ({}, {"jawOpen": 1.0}, {"eyeBlinkLeft": 1.0}, {"mouthSmileRight": 1.0})])
    [y] = session.run(None, {"image": faces})
    jaw, blink, smile = (ARKIT_BLENDSHAPES.index(n) for n in ("jawOpen", "eyeBlinkLeft", "mouthSmileRight"))
    assert y[0, [jaw, blink, smile]].max() < 0.3
    assert y[1, jaw] > 0.7 and y[2, blink] > 0.7 and y[3, smile] > 0.6


def test_face_config_has_labels_batching_and_the_gate_with_its_validation_set(tmp_path):
    build_repository(tmp_path)
    text = (tmp_path / "face_blendshapes" / "config.yaml").read_text()
    assert text.startswith("# Built by `make models`") and "RANDOM" not in text
    config = yaml.safe_load(text)
    assert config["validation"]["dataset"] == "validation.npz" and config["validation"]["max_mae_per_value"] == 0.08
    with np.load(tmp_path / "face_blendshapes" / "validation.npz") as data:
        assert data["image"].shape == (256, 1, 128, 128) and data["blendshapes"].shape == (256, 52)
    assert config["max_batch_size"] == 64
    assert config["dynamic_batching"] == {"max_queue_delay_us": 500, "preferred_batch_sizes": [8, 16]}
    [output] = config["outputs"]
    assert output["name"] == "blendshapes"
    assert len(output["labels"]) == 52 and output["labels"] == list(ARKIT_BLENDSHAPES)


def test_second_build_rewrites_nothing_and_force_rewrites_everything(tmp_path):
    written = build_repository(tmp_path)
    faces = [f"{name}/{file}" for name in ("face_detector", "face_landmarks", "iris_landmarks")
             for file in ("1/LICENSE.mediapipe", "1/model.tflite", "config.yaml")]
    assert sorted(p.relative_to(tmp_path).as_posix() for p in written) == sorted([
        "face_blendshapes/1/model.onnx", "face_blendshapes/config.yaml", "face_blendshapes/validation.npz",
        "tiny/1/model.onnx", *faces, "face_tracker/config.yaml", "face_tracker/1/tracker.yaml"])
    mtimes = {p: p.stat().st_mtime_ns for p in written}
    assert build_repository(tmp_path) == []
    assert {p: p.stat().st_mtime_ns for p in written} == mtimes
    before = {p: p.read_bytes() for p in written}
    assert sorted(build_repository(tmp_path, force=True)) == sorted(written)
    assert {p: p.read_bytes() for p in written} == before  # deterministic: same seeds, same bytes


def test_files_are_readable_by_others_and_no_temporaries_are_left(tmp_path):
    written = build_repository(tmp_path)
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) & 0o044 == 0o044, path  # mkstemp alone would give 0600
    assert not [p for p in tmp_path.rglob(".*") if p.is_file()]


def test_a_model_onnxruntime_cannot_run_is_never_left_behind(tmp_path, monkeypatch):
    def broken(path: Path) -> None:
        raise RuntimeError("onnxruntime refused it")

    monkeypatch.setattr(demo_models, "_runs_in_onnxruntime", lambda inputs: broken)
    with pytest.raises(RuntimeError):
        build_repository(tmp_path)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []  # so the next build does not skip it


def test_cli_builds_then_reports_nothing_to_do(tmp_path, capsys):
    assert main([str(tmp_path / "repo")]) == 0
    assert capsys.readouterr().out.count("wrote ") == 4 + 3 * 3 + 2  # tiny, face_blendshapes, 3 face models, tracker
    assert main([str(tmp_path / "repo")]) == 0
    assert "already built" in capsys.readouterr().out


def test_a_face_model_download_that_fails_is_one_line_and_leaves_no_face_model(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TWINFER_FACE_MODEL_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # nothing listens on the discard port
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    assert main([str(tmp_path / "repo")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip download mediapipe==0.10.21 failed" in err
    assert not (tmp_path / "repo" / "face_detector").exists()


def test_arkit_names_are_the_canonical_52():
    assert len(ARKIT_BLENDSHAPES) == 52 and len(set(ARKIT_BLENDSHAPES)) == 52
    assert ARKIT_BLENDSHAPES[0] == "eyeBlinkLeft" and ARKIT_BLENDSHAPES[17] == "jawOpen"
    assert ARKIT_BLENDSHAPES[-1] == "tongueOut"
