"""The tflite backend on real .tflite files (MediaPipe's iris and face detector models from the pinned wheel)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert", reason="the tflite extra")

from twinfer.backends import BackendOptions, load_backend  # noqa: E402
from twinfer.backends.base import backend_of_file, canonical_backend  # noqa: E402
from twinfer.errors import ModelLoadError  # noqa: E402
from twinfer.faces.model_files import DEFAULT_CACHE, fetch_face_models  # noqa: E402
from twinfer.inference.config_loading import find_model_file  # noqa: E402
from twinfer.inference.model_config import ModelConfig, TensorConfig  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """The wheel's files, each also as <stem>/model.tflite (the name the backend loads)."""
    out = fetch_face_models(tmp_path_factory.mktemp("tflite"), ROOT / DEFAULT_CACHE)
    for name in ("iris_landmark", "face_detection_short_range"):
        (out / name).mkdir(exist_ok=True)
        (out / name / "model.tflite").write_bytes((out / f"{name}.tflite").read_bytes())
    return out


def iris_config(**changes) -> ModelConfig:
    fields = dict(
        name="iris", backend="tflite", max_batch_size=8,
        inputs=(TensorConfig(name="input_1", datatype="FP32", dims=(64, 64, 3)),),
        outputs=(TensorConfig(name="output_eyes_contours_and_brows", datatype="FP32", dims=(213,)),
                 TensorConfig(name="output_iris", datatype="FP32", dims=(15,))))
    fields.update(changes)
    return ModelConfig(**fields)


def test_tflite_is_a_backend_with_its_file_name():
    assert canonical_backend("litert") == canonical_backend("TFLite") == "tflite"
    assert backend_of_file(Path("model.tflite")) == "tflite"


def test_a_version_directory_with_model_tflite_is_found(tmp_path):
    (tmp_path / "model.tflite").write_bytes(b"x")
    assert find_model_file(tmp_path) == tmp_path / "model.tflite"
    assert find_model_file(tmp_path, "tflite") == tmp_path / "model.tflite"


def test_a_batch_runs_in_one_invoke_when_the_graph_allows_it(files):
    backend = load_backend(iris_config(), files / "iris_landmark" / "model.tflite", BackendOptions())
    assert backend.batching_mode == "resize"
    x = np.random.default_rng(0).uniform(0, 1, (3, 64, 64, 3)).astype(np.float32)
    out = backend.run({"input_1": x}, ["output_iris"])
    assert out["output_iris"].shape == (3, 15)
    alone = backend.run({"input_1": x[1:2]}, ["output_iris"])["output_iris"]
    np.testing.assert_allclose(out["output_iris"][1:2], alone, rtol=1e-5, atol=1e-5)


def test_parameters_can_force_item_by_item_batches_and_refuse_unknown_modes(files):
    backend = load_backend(iris_config(parameters={"batching": "loop"}), files / "iris_landmark" / "model.tflite",
                           BackendOptions())
    assert backend.batching_mode == "loop"
    x = np.random.default_rng(0).uniform(0, 1, (2, 64, 64, 3)).astype(np.float32)
    assert backend.run({"input_1": x}, ["output_iris"])["output_iris"].shape == (2, 15)
    with pytest.raises(ModelLoadError, match="batching 'sometimes'"):
        load_backend(iris_config(parameters={"batching": "sometimes"}), files / "iris_landmark" / "model.tflite",
                     BackendOptions())


@pytest.mark.parametrize("changes, message", [
    ({"inputs": (TensorConfig(name="image", datatype="FP32", dims=(64, 64, 3)),)}, "config names tensor 'image'"),
    ({"inputs": (TensorConfig(name="input_1", datatype="FP16", dims=(64, 64, 3)),)}, "FP32 in the .tflite"),
    ({"inputs": (TensorConfig(name="input_1", datatype="FP32", dims=(128, 128, 3)),)}, "config dims"),
])
def test_a_config_that_does_not_match_the_file_is_refused_at_load(files, changes, message):
    with pytest.raises(ModelLoadError, match=message):
        load_backend(iris_config(**changes), files / "iris_landmark" / "model.tflite", BackendOptions())


def test_a_file_litert_cannot_read_is_a_load_error(tmp_path):
    bad = tmp_path / "model.tflite"
    bad.write_bytes(b"not a flatbuffer")
    with pytest.raises(ModelLoadError, match="LiteRT cannot load"):
        load_backend(iris_config(), bad, BackendOptions())


def test_instance_threads_each_get_their_own_interpreter_and_the_same_answers(files):
    backend = load_backend(iris_config(), files / "iris_landmark" / "model.tflite", BackendOptions())
    rng = np.random.default_rng(2)
    inputs = [rng.uniform(0, 1, (1 + i % 3, 64, 64, 3)).astype(np.float32) for i in range(6)]
    expected = [backend.run({"input_1": x}, ["output_iris"])["output_iris"] for x in inputs]
    results: dict[int, list[np.ndarray]] = {}

    def worker(k: int) -> None:
        results[k] = [backend.run({"input_1": x}, ["output_iris"])["output_iris"] for x in inputs * 5]

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for k in range(3):
        for got, want in zip(results[k], expected * 5):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_a_bare_model_tflite_derives_its_config_from_the_file(files, tmp_path):
    """No config file: names, datatypes and shapes come from the .tflite; its fixed batch of 1 means no batching
    (resizing is only trusted where a config asks for batching and the probe agrees)."""
    from twinfer.inference.config_loading import load_model_config

    version = tmp_path / "iris" / "1"
    version.mkdir(parents=True)
    (version / "model.tflite").write_bytes((files / "iris_landmark.tflite").read_bytes())
    config = load_model_config(tmp_path / "iris", version / "model.tflite")
    assert config.backend == "tflite" and config.max_batch_size == 0
    assert [(t.name, t.datatype, t.dims) for t in config.inputs] == [("input_1", "FP32", (1, 64, 64, 3))]
    assert [(t.name, t.dims) for t in config.outputs] == [("output_eyes_contours_and_brows", (1, 213)),
                                                          ("output_iris", (1, 15))]
    backend = load_backend(config, version / "model.tflite", BackendOptions())
    out = backend.run({"input_1": np.zeros((1, 64, 64, 3), np.float32)}, ["output_iris"])
    assert out["output_iris"].shape == (1, 15)


def test_a_config_yaml_over_a_tflite_keeps_its_batching_and_dims(files, tmp_path):
    from twinfer.faces.model_specs import IRIS_LANDMARKS
    from twinfer.inference.config_loading import load_model_config

    version = tmp_path / "iris" / "1"
    version.mkdir(parents=True)
    (version / "model.tflite").write_bytes((files / "iris_landmark.tflite").read_bytes())
    (tmp_path / "iris" / "config.yaml").write_text(IRIS_LANDMARKS.config_yaml())
    config = load_model_config(tmp_path / "iris", version / "model.tflite")
    assert config.max_batch_size == IRIS_LANDMARKS.max_batch_size
    assert config.inputs[0].dims == (64, 64, 3) and config.output("output_iris").dims == (15,)
