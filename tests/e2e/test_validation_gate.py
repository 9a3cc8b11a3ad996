"""The validation gate: a version whose outputs miss its validation set is refused (visible in status and the
repository index) while the good version keeps serving with zero failed requests; `twinfer validate` agrees."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request

import numpy as np
import pytest

from tests.e2e.conftest import SteadyTraffic, wait_until
from tests.support import build_matmul_relu
from twinfer.client import Client

pytestmark = pytest.mark.e2e


def publish(repo, version: int, weights: np.ndarray, tmp_path) -> None:
    staging = tmp_path / f"staging-{version}"
    build_matmul_relu(staging / "model.onnx", weights)
    shutil.move(str(staging), str(repo / "gated" / str(version)))


def test_a_version_failing_its_gate_is_refused_and_the_good_one_keeps_serving(tmp_path, server_factory):
    repo = tmp_path / "repo"
    (repo / "gated").mkdir(parents=True)
    rng = np.random.default_rng(0)
    x = np.abs(rng.standard_normal((64, 16))).astype(np.float32)
    np.savez(repo / "gated" / "validation.npz", INPUT0=x, OUTPUT0=x)  # the right model is the identity
    (repo / "gated" / "config.yaml").write_text(
        "validation: {dataset: validation.npz, max_mae: 0.01, max_mae_per_value: 0.02}\n")
    publish(repo, 1, np.eye(16), tmp_path)
    server = server_factory(repo, "--insecure-dev", "--repository-poll", "0.1")
    probe = x[:1]
    with SteadyTraffic(server.tcp, "gated", {"INPUT0": probe},
                       lambda out: "good" if np.allclose(out["OUTPUT0"], probe, rtol=0.01) else "bad") as traffic:
        served = traffic.served
        wait_until(lambda: len(served) > 50, what="traffic on version 1")
        publish(repo, 2, 1.5 * np.eye(16), tmp_path)  # off by 50 %: must be refused
        with Client("127.0.0.1", server.tcp) as client:
            status = wait_until(lambda: (m := client.models()[0]) and "validation gate" in m.reason and m,
                                what="version 2 refused")
            assert list(status.versions) == ["1"] and status.state == "READY"
            assert "OUTPUT0 MAE" in status.reason
        with urllib.request.urlopen(urllib.request.Request(f"http://{server.http}/v2/repository/index",
                                                           method="POST", data=b"{}"), timeout=10) as response:
            index = json.loads(response.read())
        assert {"name": "gated", "version": "1", "state": "READY", "reason": ""} in index
        assert any(e["version"] == "2" and e["state"] == "UNAVAILABLE" and "validation gate" in e["reason"]
                   for e in index)
        count = len(served)
        wait_until(lambda: len(served) > count + 50, what="more traffic while version 2 is refused")
        publish(repo, 3, np.eye(16) * 1.001, tmp_path)  # within the gate
        with Client("127.0.0.1", server.tcp) as client:
            wait_until(lambda: list(client.models()[0].versions) == ["3"], what="version 3 passes and serves")
    assert traffic.errors == [] and "bad" not in served
    env = {**os.environ, "ORT_DISABLE_TELEMETRY": "1"}
    good = subprocess.run([sys.executable, "-m", "twinfer", "validate", "gated", "--model-repository", str(repo),
                           "--version", "1"], capture_output=True, text=True, timeout=60, env=env)
    bad = subprocess.run([sys.executable, "-m", "twinfer", "validate", "gated", "--model-repository", str(repo),
                          "--version", "2"], capture_output=True, text=True, timeout=60, env=env)
    assert good.returncode == 0 and "passed" in good.stdout, good.stdout + good.stderr
    assert bad.returncode == 1 and "FAILED" in bad.stdout and "OUTPUT0 MAE" in bad.stdout
    assert server.stop() == 0
