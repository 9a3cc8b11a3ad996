"""ModelVersion's inline runs (what the face tracker uses to run a whole frame on one worker thread): a lease keeps
a version loaded through a hot reload, a retiring version refuses new leases, runs are counted in its statistics,
and only backends safe on any thread run inline."""

from __future__ import annotations

import numpy as np

from tests.support import build_matmul_relu

X = np.abs(np.random.default_rng(3).standard_normal((2, 16))).astype(np.float32)


def test_a_leased_version_runs_inline_and_counts_the_run(world):
    _, _, facade, _ = world
    version = facade.resolve("tiny")
    assert version.runs_inline
    assert version.lease()
    assert version.stats.in_flight == 1
    outputs, compute_ns = version.run_inline({"INPUT0": X}, ["OUTPUT0"])
    np.testing.assert_allclose(outputs["OUTPUT0"], X, rtol=1e-6)
    version.release([(2, compute_ns)], ok=True)
    assert version.stats.in_flight == 0
    assert version.stats.success.count == 1 and version.stats.inference_count == 2
    assert version.stats.execution_count == 1 and version.stats.batches[2].count == 1


def test_a_hot_reload_waits_for_the_lease_and_the_retired_version_refuses_new_ones(world):
    root, repo, facade, threads = world
    old = facade.resolve("tiny")
    assert old.lease()
    build_matmul_relu(root / "tiny" / "2" / "model.onnx", 2 * np.eye(16))
    repo.poll()
    new = facade.resolve("tiny")
    assert new.version == 2
    assert not threads.pools["tiny-v1"].stopped  # the frame holding version 1 is still running on it
    outputs, _ = old.run_inline({"INPUT0": X}, ["OUTPUT0"])  # the backend is still there
    np.testing.assert_allclose(outputs["OUTPUT0"], X, rtol=1e-6)
    assert not old.lease()  # retiring: the next frame resolves again and gets version 2
    old.release([], ok=True)
    assert threads.pools["tiny-v1"].stopped


def test_backends_that_are_not_safe_on_any_thread_do_not_run_inline(world):
    _, _, facade, _ = world
    version = facade.resolve("tiny")
    version._backend.thread_safe = False  # as a python model, TorchScript or TensorFlow backend says by omission
    assert not version.runs_inline and not version.lease()
