"""Issue #17 findings 6 and 7 on a running server (real threads, real polling): odd version names and a huge
config beside a model being updated; the updated model hot-reloads while the others stay refused or skipped."""

from __future__ import annotations

import numpy as np
import pytest

from tests.e2e.conftest import ATTACK_ADDRESS_SPACE, wait_until
from tests.support import build_matmul_relu
from twinfer.client import Client
from twinfer.inference.config_loading import MAX_CONFIG_FILE_BYTES

pytestmark = pytest.mark.e2e
X = np.ones((1, 16), np.float32)


def test_odd_names_and_a_huge_config_do_not_stop_another_models_hot_reload(tmp_path, server_factory):
    repo = tmp_path / "repo"
    build_matmul_relu(repo / "tiny" / "1" / "model.onnx", np.eye(16))
    build_matmul_relu(repo / "odd" / "1" / "model.onnx", np.eye(16))
    server = server_factory(repo, "--insecure-dev", "--repository-poll", "0.2", address_space=ATTACK_ADDRESS_SPACE)
    for name in ("²", "٣"):
        build_matmul_relu(repo / "odd" / name / "model.onnx", 9 * np.eye(16))
    build_matmul_relu(repo / "huge" / "1" / "model.onnx", np.eye(16))
    with open(repo / "huge" / "config.pbtxt", "w") as f:
        for _ in range(8):  # 8 MiB of comments: parsed whole, this held the GIL for seconds
            f.write("# padding\n" * (MAX_CONFIG_FILE_BYTES // 10))
    with Client("127.0.0.1", server.tcp) as client:
        for v in (2, 3):
            build_matmul_relu(repo / "tiny" / str(v) / "model.onnx", v * np.eye(16))
            wait_until(lambda v=v: client.infer("tiny", {"INPUT0": X})["OUTPUT0"][0, 0] == v, timeout=30,
                       what=f"tiny v{v} hot-reloaded")
        wait_until(lambda: {m.name: m for m in client.models()}.get("huge") is not None, what="huge seen")
        models = {m.name: m for m in client.models()}
        assert list(models["odd"].versions) == ["1"]
        assert client.infer("odd", {"INPUT0": X})["OUTPUT0"][0, 0] == 1
        assert not list(models["huge"].versions)
    log = server.log()
    assert "larger than 1024 KiB; refused unread" in log
    assert log.count("directory '²' skipped") == 1 and log.count("directory '٣' skipped") == 1
    assert "repository poll failed" not in log and "Traceback" not in log
    assert server.stop() == 0
