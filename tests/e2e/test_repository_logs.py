"""#18 item 5: a broken or refused version is logged once, when its state changes, not on every repository scan
(it was 2 lines every 2 s: 452 of 630 lines of a `make run` log)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.e2e.conftest import wait_until
from tests.support import build_matmul_relu
from twinfer.client import Client

pytestmark = pytest.mark.e2e


def test_broken_and_refused_versions_are_logged_once_across_many_scans(tmp_path, server_factory):
    repo = tmp_path / "repo"
    build_matmul_relu(repo / "tiny" / "1" / "model.onnx", np.eye(16))
    (repo / "broken" / "1").mkdir(parents=True)
    (repo / "broken" / "1" / "model.onnx").write_bytes(b"not onnx")
    build_matmul_relu(repo / "gated" / "1" / "model.onnx", 3 * np.eye(16))  # misses its gate
    x = np.abs(np.random.default_rng(0).standard_normal((8, 16))).astype(np.float32)
    np.savez(repo / "gated" / "v.npz", INPUT0=x, OUTPUT0=x)
    (repo / "gated" / "config.yaml").write_text("validation: {dataset: v.npz, max_mae: 0.01}\n")
    server = server_factory(repo, "--insecure-dev", "--repository-poll", "0.05")
    with Client("127.0.0.1", server.tcp) as client:
        # Later scans happen: each new version of `tiny` is only seen by one, so three of them prove three scans.
        for v in (2, 3, 4):
            build_matmul_relu(repo / "tiny" / str(v) / "model.onnx", v * np.eye(16))
            wait_until(lambda v=v: next(m for m in client.models() if m.name == "tiny").versions == [str(v)],
                       what=f"tiny version {v} served")
    assert server.stop() == 0
    log = [line for line in server.log().splitlines() if "[twinfer.inference.repository" in line]
    broken = [line for line in log if "model broken" in line]
    gated = [line for line in log if "model gated" in line]
    assert len(broken) == 1 and "not a readable ONNX model" in broken[0], "\n".join(log)
    assert len(gated) == 1 and "refused by its validation gate" in gated[0] and "no version serves" in gated[0], gated
