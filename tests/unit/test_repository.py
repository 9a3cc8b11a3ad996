"""The model repository with synchronous threads and a fake clock: loads, swaps, refusals, unloads."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from twisted.internet.task import Clock

from tests.support import SyncThreads, build_matmul_relu
from twinfer.errors import InvalidInput, ModelNotFound, ModelNotReady
from twinfer.inference.facade import InferenceFacade
from twinfer.inference.repository import ModelRepository, valid_model_name
from twinfer.inference.types import InferenceRequest

X = np.abs(np.random.default_rng(2).standard_normal((1, 16))).astype(np.float32)


def infer(facade: InferenceFacade, version: str | None = None):
    out = []
    facade.infer(InferenceRequest("tiny", {"INPUT0": X}, version=version)).addBoth(out.append)
    return out[0]


def test_a_new_version_swaps_in_and_the_old_one_drains_then_unloads(world):
    root, repo, facade, threads = world
    assert np.allclose(infer(facade).outputs["OUTPUT0"], X)
    old_pool = threads.pools["tiny-v1"]
    old_pool.hold = True
    pending = []
    facade.infer(InferenceRequest("tiny", {"INPUT0": X})).addBoth(pending.append)
    build_matmul_relu(root / "tiny" / "2" / "model.onnx", 2 * np.eye(16))
    repo.poll()
    result = infer(facade)
    assert result.version == "2" and np.allclose(result.outputs["OUTPUT0"], 2 * X)
    assert not pending and not old_pool.stopped  # still draining its request
    old_pool.hold = False
    old_pool.release()
    assert pending[0].version == "1" and old_pool.stopped


def test_a_broken_new_version_is_refused_and_the_old_one_keeps_serving(world):
    root, repo, facade, _ = world
    (root / "tiny" / "2").mkdir()
    (root / "tiny" / "2" / "model.onnx").write_bytes(b"not onnx")
    repo.poll()
    assert infer(facade).version == "1"
    model = repo.model("tiny")
    assert model.state == "READY" and 2 in model.failed and "2" in model.reason
    build_matmul_relu(root / "tiny" / "2" / "model.onnx", 3 * np.eye(16))  # fixed in place: retried
    repo.poll()
    assert infer(facade).version == "2"


def test_version_policy_all_serves_every_version_and_routes_by_number(world):
    root, repo, facade, _ = world
    build_matmul_relu(root / "tiny" / "2" / "model.onnx", 2 * np.eye(16))
    (root / "tiny" / "config.yaml").write_text("version_policy: {policy: all}\n")
    repo.poll()
    assert sorted(repo.model("tiny").versions) == [1, 2]
    assert np.allclose(infer(facade, "1").outputs["OUTPUT0"], X)
    assert np.allclose(infer(facade, "2").outputs["OUTPUT0"], 2 * X)
    assert infer(facade, "7").check(ModelNotFound)
    for odd in ("../1", "\u00b2"):  # not a number (isdigit() but int() raises): the same error as HTTP's (#19)
        assert infer(facade, odd).check(InvalidInput)
    for odd in ("9" * 5000, "1" * 19):  # a number, absurdly long: still typed
        assert infer(facade, odd).check(ModelNotFound)


def test_a_bad_config_is_refused_and_the_running_config_stays(world):
    root, repo, facade, _ = world
    (root / "tiny" / "config.yaml").write_text("max_batch_size: -3\n")
    repo.poll()
    model = repo.model("tiny")
    assert "max_batch_size" in model.reason and infer(facade).version == "1"
    assert model.config.max_batch_size == 64


def test_config_change_reloads_with_the_new_settings(world):
    root, repo, facade, _ = world
    (root / "tiny" / "config.yaml").write_text("max_batch_size: 4\n")
    repo.poll()
    assert repo.model("tiny").config.max_batch_size == 4
    out = []
    facade.infer(InferenceRequest("tiny", {"INPUT0": np.ones((5, 16), np.float32)})).addBoth(out.append)
    assert "batch size 5" in str(out[0].value)


def test_explicit_unload_sticks_across_polls_until_load(world):
    root, repo, facade, _ = world
    repo.unload("tiny")
    repo.poll()
    assert infer(facade).check(ModelNotReady)
    assert repo.ready()  # an explicitly unloaded model does not make the server unready
    repo.load("tiny")
    assert infer(facade).version == "1"


def test_a_removed_model_unloads_and_a_new_one_appears(world):
    root, repo, facade, _ = world
    build_matmul_relu(root / "other" / "1" / "model.onnx", np.eye(16))
    shutil.rmtree(root / "tiny")
    repo.poll()
    assert [m.name for m in repo.models()] == ["other"]
    assert infer(facade).check(ModelNotFound)


def test_model_names_that_could_be_paths_are_never_valid():
    for bad in ("..", "../x", "a/b", ".hidden", "", "a\\b", "x" * 200, "tiny\n"):
        assert not valid_model_name(bad)
    assert valid_model_name("face_blendshapes") and valid_model_name("resnet-50.v2")


def test_names_must_match_whole_a_trailing_newline_is_not_part_of_a_name():
    """`^...$` with re.match accepted "tiny\n": `$` also matches just before a final newline (#14 finding 16)."""
    for bad in ("tiny\n", "tiny\r\n", "\ntiny", "x" * 128 + "\n"):
        assert not valid_model_name(bad), repr(bad)
    assert valid_model_name("x" * 128)


@pytest.fixture
def log_lines():
    """Every error-level line the repository logs, as text."""
    from twisted.logger import LogLevel, formatEvent, globalLogPublisher

    lines: list[str] = []

    def observer(event):
        if event.get("log_level") in (LogLevel.error, LogLevel.critical) and "model " in formatEvent(event):
            lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observer)
    yield lines
    globalLogPublisher.removeObserver(observer)


def gated_repo(tmp_path, *weights: float):
    """`tiny` with one version per weight (1, 2, ...) and a gate that only the identity (weight 1) passes."""
    root = tmp_path / "repo"
    for v, w in enumerate(weights, start=1):
        build_matmul_relu(root / "tiny" / str(v) / "model.onnx", w * np.eye(16))
    np.savez(root / "tiny" / "v.npz", INPUT0=np.repeat(X, 4, axis=0), OUTPUT0=np.repeat(X, 4, axis=0))
    (root / "tiny" / "config.yaml").write_text("validation: {dataset: v.npz, max_mae: 0.01}\n")
    return root


def test_at_start_up_a_newest_version_refused_by_its_gate_falls_back_to_the_next_that_passes(tmp_path, log_lines):
    """#18 item 1: after a restart a refused version 2 must not hide version 1 (it did: UNAVAILABLE, ready 503)."""
    root = gated_repo(tmp_path, 1.0, 3.0)
    repo = ModelRepository(root, Clock(), SyncThreads())
    repo.start()
    model = repo.model("tiny")
    assert model.state == "READY" and sorted(model.versions) == [1] and repo.ready()
    assert infer(InferenceFacade(repo)).version == "1"
    assert len(log_lines) == 1 and "version 2 refused" in log_lines[0] and "version 1 serves instead" in log_lines[0]
    for _ in range(5):  # #18 item 5: an unchanged refusal is not logged again on every scan
        repo.poll()
    assert len(log_lines) == 1 and sorted(repo.model("tiny").versions) == [1]


def test_a_refused_only_version_is_logged_once_across_scans(tmp_path, log_lines):
    root = gated_repo(tmp_path, 3.0)
    repo = ModelRepository(root, Clock(), SyncThreads())
    repo.start()
    for _ in range(5):
        repo.poll()
    model = repo.model("tiny")
    assert model.state == "UNAVAILABLE" and not repo.ready()
    assert len(log_lines) == 1 and "no version serves" in log_lines[0], log_lines
    build_matmul_relu(root / "tiny" / "2" / "model.onnx", np.eye(16))  # a version that passes: serves
    repo.poll()
    assert infer(InferenceFacade(repo)).version == "2"


def test_a_bad_config_is_logged_once_across_scans(world, log_lines):
    root, repo, facade, _ = world
    (root / "tiny" / "config.yaml").write_text("max_batch_size: -3\n")
    for _ in range(5):
        repo.poll()
    assert len(log_lines) == 1 and "max_batch_size" in log_lines[0], log_lines
    assert infer(facade).version == "1"
