"""The PyTorch and TensorFlow backends with real libraries: parity with ONNX Runtime on the face network, safe
loading (nothing is unpickled, Keras Lambda layers refused), config derivation and choice between formats."""

from __future__ import annotations

import json
import shutil
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tests import support
from tests.support import face_net_with_batch_norm_statistics
from twinfer.backends import BackendOptions, load_backend
from twinfer.errors import ConfigError, ModelLoadError
from twinfer.inference.config_loading import find_model_file, load_model_config
from twinfer.inference.model_version import FileSignature, load_and_warm
from twinfer.training.export import export_onnx, export_program, export_torchscript
from twinfer.training.face_net import folded_state
from twinfer.training.keras_export import save_tensorflow

FACE_TENSORS = {**support.FACE_TENSORS, "max_batch_size": 16}


@pytest.fixture(scope="module")
def face_versions(tmp_path_factory) -> dict[str, Path]:
    """One FaceNet (seeded, with non-trivial batch-norm statistics) in every format, each its own model dir."""
    root = tmp_path_factory.mktemp("repo")
    model = face_net_with_batch_norm_statistics(3)
    files = {}
    for model_name, filename, export in (
        ("face_onnx", "model.onnx", export_onnx), ("face_torchscript", "model.pt", export_torchscript),
        ("face_export", "model.pt2", export_program),
    ):
        (root / model_name / "1").mkdir(parents=True)
        export(model, root / model_name / "1" / filename)
        files[model_name] = root / model_name / "1" / filename
    for model_name, fmt in (("face_savedmodel", "savedmodel"), ("face_keras", "keras")):
        (root / model_name / "1").mkdir(parents=True)
        files[model_name] = save_tensorflow(folded_state(model), root / model_name / "1", fmt=fmt)
    for model_name in ("face_torchscript", "face_export", "face_keras"):  # formats without named tensors
        (root / model_name / "config.yaml").write_text(yaml.safe_dump(FACE_TENSORS))
    return files


def _load(model_file: Path):
    config = load_model_config(model_file.parent.parent, find_model_file(model_file.parent))
    return config, load_and_warm(config, model_file, BackendOptions())


def test_every_format_gives_the_same_outputs_as_onnx(face_versions):
    x = np.random.default_rng(8).random((8, 1, 128, 128), dtype=np.float32)
    results, backends = {}, {}
    for model_name, path in face_versions.items():
        config, backend = _load(path)
        backends[model_name] = config.backend
        results[model_name] = backend.run({"image": x}, ["blendshapes"])["blendshapes"]
        backend.close()
    assert backends == {"face_onnx": "onnxruntime", "face_torchscript": "pytorch", "face_export": "pytorch",
                        "face_savedmodel": "tensorflow", "face_keras": "tensorflow"}
    for model_name, value in results.items():
        assert value.shape == (8, 52) and value.dtype == np.float32, model_name
        np.testing.assert_allclose(value, results["face_onnx"], atol=1e-5, err_msg=model_name)
    assert results["face_onnx"].std() > 0.01  # the comparison is not between constants


def test_savedmodel_config_is_derived_from_its_signature(face_versions):
    config = load_model_config(face_versions["face_savedmodel"].parent.parent,
                               find_model_file(face_versions["face_savedmodel"].parent))
    assert config.backend == "tensorflow" and config.max_batch_size == 64
    assert [(t.name, t.datatype, list(t.dims)) for t in config.inputs] == [("image", "FP32", [1, 128, 128])]
    assert [(t.name, list(t.dims)) for t in config.outputs] == [("blendshapes", [52])]


def test_torchscript_without_config_is_refused_naming_the_file(face_versions, tmp_path):
    (tmp_path / "m" / "1").mkdir(parents=True)
    shutil.copy(face_versions["face_torchscript"], tmp_path / "m" / "1" / "model.pt")
    with pytest.raises(ConfigError, match=r"model\.pt: .*list the inputs and outputs in config\.yaml"):
        load_model_config(tmp_path / "m", tmp_path / "m" / "1" / "model.pt")


def test_the_config_backend_picks_the_file_when_a_version_holds_several(face_versions, tmp_path):
    version = tmp_path / "both" / "1"
    version.mkdir(parents=True)
    shutil.copy(face_versions["face_onnx"], version / "model.onnx")
    doubled = torch.jit.script(_Double())
    doubled.save(str(version / "model.pt"))
    model_dir = version.parent
    config, backend = _load(find_model_file(version))
    assert config.backend == "onnxruntime"  # no config: ONNX first
    backend.close()
    (model_dir / "config.yaml").write_text(yaml.safe_dump({
        "backend": "pytorch_libtorch", "max_batch_size": 4, "warmup": False,
        "inputs": [{"name": "x", "datatype": "FP32", "dims": [3]}],
        "outputs": [{"name": "y", "datatype": "FP32", "dims": [3]}]}))
    config, backend = _load(find_model_file(version))
    assert config.backend == "pytorch_libtorch"
    out = backend.run({"x": np.array([[1, 2, 3]], np.float32)}, ["y"])["y"]
    np.testing.assert_array_equal(out, [[2, 4, 6]])


class _Double(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2


class _Marker:
    """Unpickling this object would create a file: the proof that a loader ran pickle."""

    path = ""

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_a_pickled_module_is_refused_and_never_unpickled(tmp_path):
    marker = tmp_path / "unpickled"
    evil = _Marker()
    evil.path = str(marker)
    (tmp_path / "m" / "1").mkdir(parents=True)
    torch.save({"model": evil}, tmp_path / "m" / "1" / "model.pt")  # what `torch.save(model)` files look like
    (tmp_path / "m" / "config.yaml").write_text(yaml.safe_dump(FACE_TENSORS))
    config = load_model_config(tmp_path / "m", tmp_path / "m" / "1" / "model.pt")
    with pytest.raises(ModelLoadError, match="Pickled modules .* are never loaded"):
        load_backend(config, tmp_path / "m" / "1" / "model.pt", BackendOptions())
    assert not marker.exists()


def test_an_export_archive_with_pickled_payloads_is_refused(face_versions, tmp_path):
    source = face_versions["face_export"]
    tampered = tmp_path / "m" / "1" / "model.pt2"
    tampered.parent.mkdir(parents=True)
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(tampered, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename.endswith("_weights_config.json"):
                config = json.loads(data)
                next(iter(config["config"].values()))["use_pickle"] = True
                data = json.dumps(config).encode()
            dst.writestr(item, data)
    (tmp_path / "m" / "config.yaml").write_text(yaml.safe_dump(FACE_TENSORS))
    config = load_model_config(tmp_path / "m", tampered)
    with pytest.raises(ModelLoadError, match="pickled or custom object"):
        load_backend(config, tampered, BackendOptions())


def test_a_keras_lambda_layer_is_refused_by_safe_mode(tmp_path):
    import keras

    inputs = keras.Input((3,), name="x")
    model = keras.Model(inputs, keras.layers.Lambda(lambda t: t * 2)(inputs))
    (tmp_path / "m" / "1").mkdir(parents=True)
    model.save(str(tmp_path / "m" / "1" / "model.keras"))
    (tmp_path / "m" / "config.yaml").write_text(yaml.safe_dump({
        "max_batch_size": 4, "inputs": [{"name": "x", "datatype": "FP32", "dims": [3]}],
        "outputs": [{"name": "y", "datatype": "FP32", "dims": [3]}]}))
    config = load_model_config(tmp_path / "m", tmp_path / "m" / "1" / "model.keras")
    assert config.backend == "tensorflow"
    with pytest.raises(ModelLoadError, match="safe_mode"):
        load_backend(config, tmp_path / "m" / "1" / "model.keras", BackendOptions())


def test_a_wrong_output_datatype_in_the_config_fails_warm_up(face_versions, tmp_path):
    shutil.copytree(face_versions["face_torchscript"].parent.parent, tmp_path / "m")
    (tmp_path / "m" / "config.yaml").write_text(yaml.safe_dump(
        {**FACE_TENSORS, "outputs": [{"name": "blendshapes", "datatype": "FP64", "dims": [52]}]}))
    config = load_model_config(tmp_path / "m", tmp_path / "m" / "1" / "model.pt")
    with pytest.raises(ModelLoadError, match="blendshapes.* is FP32, the config says FP64"):
        load_and_warm(config, tmp_path / "m" / "1" / "model.pt", BackendOptions())


@pytest.mark.parametrize("model_name", ["face_torchscript", "face_export", "face_savedmodel"])
def test_concurrent_runs_from_instance_threads_get_their_own_answers(face_versions, model_name):
    config, backend = _load(face_versions[model_name])
    rng = np.random.default_rng(4)
    batches = [rng.random((2, 1, 128, 128), dtype=np.float32) for _ in range(4)]
    expected = [backend.run({"image": b}, ["blendshapes"])["blendshapes"] for b in batches]
    failures: list[str] = []

    def worker(i: int) -> None:
        for _ in range(10):
            got = backend.run({"image": batches[i]}, ["blendshapes"])["blendshapes"]
            if not np.allclose(got, expected[i], atol=1e-6):
                failures.append(f"thread {i}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert failures == []


def test_a_missing_extra_is_a_clear_load_error(face_versions, monkeypatch):
    config, _ = _load(face_versions["face_torchscript"])
    monkeypatch.delitem(sys.modules, "twinfer.backends.pytorch", raising=False)
    monkeypatch.setitem(sys.modules, "torch", None)  # what an environment without PyTorch looks like
    with pytest.raises(ModelLoadError, match=r"needs the `torch` extra: pip install 'twinfer\[torch\]'"):
        load_backend(config, face_versions["face_torchscript"], BackendOptions())


def test_a_savedmodel_directory_signature_changes_when_a_file_inside_changes(face_versions, tmp_path):
    copy = tmp_path / "model.savedmodel"
    shutil.copytree(face_versions["face_savedmodel"], copy)
    before = FileSignature.of(copy)
    (copy / "fingerprint.pb").write_bytes((copy / "fingerprint.pb").read_bytes() + b"\0")
    assert FileSignature.of(copy) != before and before.size > 100_000
