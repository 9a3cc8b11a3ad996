"""`twinfer train face-blendshapes` in seconds: tiny settings, real PyTorch, real exports checked in ONNX Runtime
and TorchScript, a real version directory with its model card."""

from __future__ import annotations

import io
import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
import yaml

from tests.support import face_net_with_batch_norm_statistics
from twinfer.errors import ConfigError
from twinfer.sources.face_dataset import VALIDATION_SEED
from twinfer.training import publish
from twinfer.training.face_command import FaceTrainOptions, run_face_training
from twinfer.training.face_net import folded_state
from twinfer.training.train_face import TrainSettings, train_face_model

TINY = TrainSettings(samples=64, epochs=1, batch_size=32, threads=1, max_steps=2)


def test_a_short_run_publishes_version_1_with_exports_card_config_and_validation_set(tmp_path):
    out = io.StringIO()
    version = run_face_training(FaceTrainOptions(tmp_path, settings=TINY, publish_anyway=True), out)
    model_dir = tmp_path / "face_blendshapes"
    assert version == model_dir / "1"
    assert sorted(p.name for p in version.iterdir()) == ["model.onnx", "model.pt", "model_card.json",
                                                         "model_card.md"]
    assert not [p for p in model_dir.iterdir() if p.name.startswith(".")]  # no staging left behind

    card = json.loads((version / "model_card.json").read_text())
    assert card["version"] == 1 and card["training"]["steps"] == 2 and card["training"]["settings"]["seed"] == 0
    assert card["data"]["validation_seed"] == VALIDATION_SEED and card["metrics"]["samples"] == 256
    assert set(card["files"]) == {"model.onnx", "model.pt"}
    assert card["files"]["model.onnx"] == publish.sha256(version / "model.onnx")
    assert "Held-out error" in (version / "model_card.md").read_text()

    config = yaml.safe_load((model_dir / "config.yaml").read_text())
    assert config["validation"] == {"dataset": "validation.npz", "max_mae": publish.GATE_MAX_MAE,
                                    "max_mae_per_value": publish.GATE_MAX_MAE_PER_VALUE}
    # Two steps cannot learn faces: published only because told to, and the run says the gate refuses it.
    assert "WARNING: misses its validation gate, published anyway" in out.getvalue()
    assert "refused by its validation gate" in out.getvalue()

    # The ONNX and TorchScript files give the same answers.
    x = np.random.default_rng(2).random((3, 1, 128, 128), dtype=np.float32)
    session = ort.InferenceSession(str(version / "model.onnx"), providers=["CPUExecutionProvider"])
    [from_onnx] = session.run(None, {"image": x})
    with torch.inference_mode():
        from_script = torch.jit.load(str(version / "model.pt"))(torch.from_numpy(x)).numpy()
    assert from_onnx.shape == (3, 52)
    np.testing.assert_allclose(from_onnx, from_script, atol=1e-5)


def test_a_second_run_is_version_2_and_keeps_the_operator_s_config(tmp_path):
    model_dir = tmp_path / "face_blendshapes"
    model_dir.mkdir()
    (model_dir / "config.yaml").write_text("max_batch_size: 8\n")
    run_face_training(FaceTrainOptions(tmp_path, formats=("onnx",), settings=TINY), io.StringIO())
    second = run_face_training(FaceTrainOptions(tmp_path, formats=("onnx",), settings=TINY), io.StringIO())
    assert second.name == "2" and (second / "model.onnx").is_file() and not (second / "model.pt").exists()
    assert (model_dir / "config.yaml").read_text() == "max_batch_size: 8\n"


def test_a_version_that_misses_its_gate_is_not_published(tmp_path, capsys):
    """#18 item 1: the defaults missed the gate and still published version 2, which hid version 1 after a restart.
    Now nothing is published (no version, no staging) and the CLI says so in one line, exit 2."""
    from twinfer.cli import main
    from twinfer.errors import VersionRefused

    with pytest.raises(VersionRefused, match="not published: .*refused by its validation gate.*--publish-anyway"):
        run_face_training(FaceTrainOptions(tmp_path, formats=("onnx",), settings=TINY), io.StringIO())
    model_dir = tmp_path / "face_blendshapes"
    assert sorted(p.name for p in model_dir.iterdir()) == ["config.yaml", "validation.npz"]
    code = main(["train", "face-blendshapes", "--repository", str(tmp_path), "--samples", "64", "--epochs", "1",
                 "--max-steps", "1", "--threads", "1", "--formats", "onnx"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("twinfer: not published:") and err.count("\n") == 1, err
    assert sorted(p.name for p in model_dir.iterdir()) == ["config.yaml", "validation.npz"]


def test_a_failed_export_leaves_no_version_and_no_staging(tmp_path, monkeypatch):
    def broken(model, path):
        path.write_bytes(b"half")
        raise RuntimeError("export broke")

    monkeypatch.setattr("twinfer.training.face_command.exporters", lambda formats: [("model.onnx", broken)])
    with pytest.raises(RuntimeError, match="export broke"):
        run_face_training(FaceTrainOptions(tmp_path, settings=TINY), io.StringIO())
    assert sorted(p.name for p in (tmp_path / "face_blendshapes").iterdir()) == ["config.yaml", "validation.npz"]


@pytest.mark.parametrize(("options", "message"), [
    (FaceTrainOptions(__import__("pathlib").Path("unused"), formats=("onnx", "tflite")), "unknown tflite"),
    (FaceTrainOptions(__import__("pathlib").Path("unused"), settings=TrainSettings(seed=VALIDATION_SEED)),
     "validation set's seed"),
    (FaceTrainOptions(__import__("pathlib").Path("unused"), settings=TrainSettings(samples=0)), "--samples"),
])
def test_bad_options_are_refused_before_any_work(tmp_path, options, message):
    options.repository = tmp_path
    with pytest.raises(ConfigError, match=message):
        run_face_training(options, io.StringIO())
    assert list(tmp_path.iterdir()) == []


def test_training_is_deterministic_for_a_seed_and_learns():
    settings = TrainSettings(samples=96, epochs=3, batch_size=32, threads=1, learning_rate=3e-3)
    first, second = train_face_model(settings), train_face_model(settings)
    for key, value in first.model.state_dict().items():
        assert torch.equal(value, second.model.state_dict()[key]), key
    assert first.steps == 9
    other = train_face_model(TrainSettings(samples=96, epochs=3, batch_size=32, threads=1, seed=1))
    assert not torch.equal(other.model.fc2.weight, first.model.fc2.weight)


def test_folded_state_is_the_eval_network_without_batch_norm():
    model = face_net_with_batch_norm_statistics(0, scale=3.0)
    state = {k: torch.from_numpy(v) for k, v in folded_state(model).items()}
    x = torch.rand(2, 1, 128, 128)
    h = x
    for i in range(1, 6):
        conv = getattr(model, f"conv{i}")
        h = torch.relu(torch.nn.functional.conv2d(h, state[f"conv{i}.weight"], state[f"conv{i}.bias"],
                                                  stride=conv.stride, padding=conv.padding))
    h = torch.relu(torch.nn.functional.linear(h.flatten(1), state["fc1.weight"], state["fc1.bias"]))
    plain = torch.sigmoid(torch.nn.functional.linear(h, state["fc2.weight"], state["fc2.bias"]))
    with torch.inference_mode():
        np.testing.assert_allclose(plain.numpy(), model(x).numpy(), atol=1e-5)
