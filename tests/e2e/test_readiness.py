"""#18 item 6: one broken model must not make the whole server unready (in Kubernetes that takes every pod out of
service); Triton's strict readiness stays an option (`readiness: strict`)."""

from __future__ import annotations

import urllib.error
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from tests.support import build_matmul_relu

pytestmark = pytest.mark.e2e


def ready_status(server) -> int:
    try:
        with urllib.request.urlopen(f"http://{server.http}/v2/health/ready", timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def model_ready_status(server, model: str) -> int:
    try:
        with urllib.request.urlopen(f"http://{server.http}/v2/models/{model}/ready", timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.fixture
def repo_with_a_broken_model(tmp_path):
    repo = tmp_path / "repo"
    build_matmul_relu(repo / "tiny" / "1" / "model.onnx", np.eye(16))
    (repo / "broken" / "1").mkdir(parents=True)
    (repo / "broken" / "1" / "model.onnx").write_bytes(b"not onnx")
    return repo


@pytest.mark.parametrize(("env", "ready"), [({}, True), ({"TWINFER_READINESS": "any"}, True),
                                            ({"TWINFER_READINESS": "strict"}, False)])
def test_server_readiness_with_one_broken_model(repo_with_a_broken_model, server_factory, env, ready):
    server = server_factory(repo_with_a_broken_model, "--insecure-dev", env=env)
    assert ready_status(server) == (200 if ready else 503)
    grpc = grpcclient.InferenceServerClient(server.grpc)
    assert grpc.is_server_ready() is ready
    assert model_ready_status(server, "tiny") == 200 and model_ready_status(server, "broken") == 400  # as Triton
    assert grpc.is_model_ready("tiny") and not grpc.is_model_ready("broken")
    grpc.close()
    assert server.stop() == 0


def test_no_model_serving_is_not_ready_in_either_mode(tmp_path, server_factory):
    repo = tmp_path / "repo"
    (repo / "broken" / "1").mkdir(parents=True)
    (repo / "broken" / "1" / "model.onnx").write_bytes(b"not onnx")
    server = server_factory(repo, "--insecure-dev")
    assert ready_status(server) == 503
    assert server.stop() == 0
