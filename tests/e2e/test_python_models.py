"""Triton-style python models and ensembles on a real server, called with tritonclient (HTTP and gRPC) and the
game-protocol client: results, batching under concurrent load, BLS, BYTES, typed errors, readiness, hot reload."""

from __future__ import annotations

import concurrent.futures
import os
import time

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.e2e.conftest import wait_until
from tests.python_models_repo import SCALE_MODEL, build_python_repository
from twinfer.client import Client
from twinfer.errors import InferenceFailed, ModelNotReady, RequestTimeout


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from tests.e2e.conftest import start_server

    tmp = tmp_path_factory.mktemp("python-models")
    repo = build_python_repository(tmp / "repo")
    server = start_server(tmp, repo, "--insecure-dev", "--config", str(_poll_config(tmp)))
    session = ort.InferenceSession(str(repo / "tiny" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    yield server, repo, lambda x: session.run(["OUTPUT0"], {"INPUT0": x})[0]
    if server.process.poll() is None:
        assert server.stop() == 0


def _poll_config(tmp):
    path = tmp / "settings.yaml"
    path.write_text("repository_poll_s: 0.2\n")
    return path


def _http_input(name, array, datatype):
    tensor = httpclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=True)
    return tensor


def _grpc_input(name, array, datatype):
    tensor = grpcclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


A = np.arange(8, dtype=np.float32).reshape(2, 4)
B = np.full((2, 4), 0.5, np.float32)


def test_add_sub_over_http_and_grpc(served):
    server, _, _ = served
    http = httpclient.InferenceServerClient(server.http)
    result = http.infer("add_sub", [_http_input("INPUT0", A, "FP32"), _http_input("INPUT1", B, "FP32")])
    np.testing.assert_allclose(result.as_numpy("OUTPUT0"), A + B)
    np.testing.assert_allclose(result.as_numpy("OUTPUT1"), A - B)
    grpc = grpcclient.InferenceServerClient(server.grpc)
    result = grpc.infer("add_sub", [_grpc_input("INPUT0", A, "FP32"), _grpc_input("INPUT1", B, "FP32")],
                        outputs=[grpcclient.InferRequestedOutput("OUTPUT1")])
    np.testing.assert_allclose(result.as_numpy("OUTPUT1"), A - B)
    assert result.as_numpy("OUTPUT0") is None  # only what was asked for
    metadata = http.get_model_metadata("add_sub")
    assert metadata["platform"] == "python" and [t["name"] for t in metadata["inputs"]] == ["INPUT0", "INPUT1"]
    assert grpc.is_model_ready("add_sub") and http.is_server_ready()


def test_game_protocol_serves_python_models_and_ensembles(served):
    server, _, tiny = served
    x = np.random.default_rng(1).standard_normal((3, 16)).astype(np.float32)
    with Client("127.0.0.1", server.tcp) as client:
        out = client.infer("add_sub", {"INPUT0": A, "INPUT1": B})
        np.testing.assert_allclose(out["OUTPUT0"], A + B)
        out = client.infer("pipeline", {"IMAGE": x})
        np.testing.assert_allclose(out["FEATURES"], tiny(x * 0.5), rtol=1e-5, atol=1e-6)
        listed = {m.name: m.state for m in client.models()}
    assert listed["pipeline"] == "READY" and listed["add_sub"] == "READY"


def test_execute_gets_several_requests_under_concurrent_load(served):
    server, _, _ = served
    http = httpclient.InferenceServerClient(server.http, concurrency=16)
    pending = [http.async_infer("batch_probe", [_http_input("X", np.array([[float(i)]], np.float32), "FP32")])
               for i in range(16)]
    results = [p.get_result() for p in pending]
    counts = [int(r.as_numpy("COUNT")[0, 0]) for r in results]
    assert max(counts) > 1, counts  # requests that queued while execute slept arrived together
    assert [float(r.as_numpy("Y")[0, 0]) for r in results] == [10.0 * i for i in range(16)]  # each its own rows
    stats = http.get_inference_statistics("batch_probe")["model_stats"][0]
    assert int(stats["inference_count"]) == 16 and int(stats["execution_count"]) < 16


def test_bls_calls_the_onnx_model_sync_and_async(served):
    server, _, tiny = served
    x = np.random.default_rng(2).standard_normal((2, 16)).astype(np.float32)
    http = httpclient.InferenceServerClient(server.http)
    out = http.infer("bls", [_http_input("INPUT0", x, "FP32")]).as_numpy("OUTPUT0")
    np.testing.assert_allclose(out, tiny(x * 2), rtol=1e-5, atol=1e-6)
    grpc = grpcclient.InferenceServerClient(server.grpc)
    out = grpc.infer("bls_async", [_grpc_input("INPUT0", x, "FP32")]).as_numpy("OUTPUT0")
    np.testing.assert_allclose(out, tiny(x) + tiny(x * 2), rtol=1e-5, atol=1e-5)
    bad = np.full((1, 16), 999, np.float32)  # the model then calls a model that does not exist
    with pytest.raises(InferenceServerException) as info:
        http.infer("bls", [_http_input("INPUT0", bad, "FP32")])
    assert info.value.status() == "500" and "unknown model 'missing'" in info.value.message()


def test_bytes_in_and_out(served):
    server, _, _ = served
    text = np.array(["héllo".encode(), b"world", b""], dtype=np.object_)
    http = httpclient.InferenceServerClient(server.http)
    result = http.infer("strings", [_http_input("TEXT", text, "BYTES")])
    assert list(result.as_numpy("UPPER")) == ["HÉLLO".encode(), b"WORLD", b""]
    assert list(result.as_numpy("LENGTH")) == [5, 5, 0]
    grpc = grpcclient.InferenceServerClient(server.grpc)
    result = grpc.infer("strings", [_grpc_input("TEXT", text, "BYTES")])
    assert list(result.as_numpy("UPPER")) == ["HÉLLO".encode(), b"WORLD", b""]


def test_a_raising_model_fails_typed_on_every_transport_and_the_server_keeps_serving(served):
    server, _, _ = served
    x = np.array([[1.0]], np.float32)
    with pytest.raises(InferenceServerException) as info:
        httpclient.InferenceServerClient(server.http).infer("raiser", [_http_input("X", x, "FP32")])
    assert info.value.status() == "500" and "ValueError: the model refuses everything" in info.value.message()
    with pytest.raises(InferenceServerException) as info:
        grpcclient.InferenceServerClient(server.grpc).infer("raiser", [_grpc_input("X", x, "FP32")])
    assert info.value.status() == "StatusCode.INTERNAL" and "the model refuses everything" in info.value.message()
    with Client("127.0.0.1", server.tcp) as client:
        with pytest.raises(InferenceFailed, match="the model refuses everything"):
            client.infer("raiser", {"X": x})
        np.testing.assert_allclose(client.infer("add_sub", {"INPUT0": A, "INPUT1": B})["OUTPUT0"], A + B)


def test_an_error_response_fails_only_its_own_request_within_a_batch(served):
    server, _, _ = served
    http = httpclient.InferenceServerClient(server.http, concurrency=12)
    pending = [http.async_infer("picky", [_http_input("X", np.array([[float(i)]], np.float32), "FP32")])
               for i in range(12)]
    outcomes = []
    for i, p in enumerate(pending):
        try:
            outcomes.append(float(p.get_result().as_numpy("Y")[0, 0]))
        except InferenceServerException as exc:
            outcomes.append(exc.message())
    for i, outcome in enumerate(outcomes):
        if i % 2:
            assert "odd input refused" in outcome
        else:
            assert outcome == i + 1.0
    stats = http.get_inference_statistics("picky")["model_stats"][0]
    assert int(stats["execution_count"]) < 12  # the good and the bad shared execute calls


def test_a_hanging_model_hits_the_request_timeout_without_blocking_others(served):
    server, _, _ = served
    x = np.array([[3.0]], np.float32)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        started = time.monotonic()
        hung = pool.submit(lambda: httpclient.InferenceServerClient(server.http).infer(
            "sleepy", [_http_input("X", x, "FP32")]))
        http = httpclient.InferenceServerClient(server.http)  # the reactor answers meanwhile
        np.testing.assert_allclose(http.infer("add_sub", [_http_input("INPUT0", A, "FP32"),
                                                          _http_input("INPUT1", B, "FP32")]).as_numpy("OUTPUT0"), A + B)
        with pytest.raises(InferenceServerException) as info:
            hung.result(10)
        assert time.monotonic() - started < 1.9  # the timeout, not the model's 2 s sleep
    assert info.value.status() == "504" and "did not finish within 300 ms" in info.value.message()
    with Client("127.0.0.1", server.tcp) as client:
        with pytest.raises(RequestTimeout):
            client.infer("sleepy", {"X": x})


def test_ensemble_over_http_and_grpc(served):
    server, _, tiny = served
    x = np.random.default_rng(3).standard_normal((4, 16)).astype(np.float32)
    http = httpclient.InferenceServerClient(server.http)
    out = http.infer("pipeline", [_http_input("IMAGE", x, "FP32")]).as_numpy("FEATURES")
    np.testing.assert_allclose(out, tiny(x * 0.5), rtol=1e-5, atol=1e-6)
    grpc = grpcclient.InferenceServerClient(server.grpc)
    out = grpc.infer("pipeline", [_grpc_input("IMAGE", x, "FP32")]).as_numpy("FEATURES")
    np.testing.assert_allclose(out, tiny(x * 0.5), rtol=1e-5, atol=1e-6)
    assert http.get_model_metadata("pipeline")["platform"] == "ensemble"
    config = grpc.get_model_config("pipeline", as_json=True)["config"]
    assert config["platform"] == "ensemble" and "instance_group" not in config
    assert [s["model_name"] for s in config["ensemble_scheduling"]["step"]] == ["scale", "tiny"]
    assert config["ensemble_scheduling"]["step"][0]["output_map"] == {"SCALED": "preprocessed"}
    stats = http.get_inference_statistics("scale")["model_stats"][0]
    assert int(stats["inference_count"]) >= 8  # the step ran as the scale model's own traffic


def test_an_ensemble_step_error_is_typed(served):
    server, _, _ = served
    http = httpclient.InferenceServerClient(server.http)
    with pytest.raises(InferenceServerException) as info:
        http.infer("broken_pipeline", [_http_input("IN", np.array([[1.0]], np.float32), "FP32")])
    assert info.value.status() == "500" and "step 0 (picky): odd input refused" in info.value.message()
    with pytest.raises(InferenceServerException) as info:
        http.infer("broken_pipeline", [_http_input("IN", np.array([[2.0]], np.float32), "FP32")])
    assert "step 1 (raiser)" in info.value.message() and "refuses everything" in info.value.message()
    with pytest.raises(InferenceServerException) as info:  # a wrong request: the ensemble's own validation
        http.infer("broken_pipeline", [_http_input("IN", np.array([[1.0, 2.0]], np.float32), "FP32")])
    assert info.value.status() == "400"
    with pytest.raises(InferenceServerException) as info:
        grpcclient.InferenceServerClient(server.grpc).infer(
            "broken_pipeline", [_grpc_input("IN", np.array([[2.0]], np.float32), "FP32")])
    assert info.value.status() == "StatusCode.INTERNAL"


def test_an_ensemble_is_ready_only_while_its_steps_are(served):
    server, _, _ = served
    http = httpclient.InferenceServerClient(server.http)
    assert http.is_model_ready("pipeline")
    assert not http.is_model_ready("orphan")
    assert not grpcclient.InferenceServerClient(server.grpc).is_model_ready("orphan")
    with Client("127.0.0.1", server.tcp) as client:
        with pytest.raises(ModelNotReady, match="step model 'not_there'"):
            client.infer("orphan", {"A": np.zeros((1, 16), np.float32)})


def test_a_step_hot_reload_does_not_fail_ensemble_requests(served):
    server, repo, tiny = served
    x = np.random.default_rng(4).standard_normal((1, 16)).astype(np.float32)
    grpc = grpcclient.InferenceServerClient(server.grpc)
    seen, errors = set(), []
    version2 = repo / "scale" / "2"
    version2.mkdir()
    (version2 / "model.py").write_text(SCALE_MODEL.replace("* 0.5", "* 0.25"))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            out = grpc.infer("pipeline", [_grpc_input("IMAGE", x, "FP32")]).as_numpy("FEATURES")
        except InferenceServerException as exc:
            errors.append(exc)
            break
        factor = 0.5 if np.allclose(out, tiny(x * 0.5), atol=1e-6) else 0.25
        seen.add(factor)
        if factor == 0.25:
            break
    assert errors == [] and 0.25 in seen
    wait_until(lambda: "model scale version 1 draining" in server.log() or "version 1 draining" in server.log(),
               what="the old version to drain")
    assert os.path.isdir(version2)


def test_instance_group_count_runs_instances_in_parallel(served):
    server, _, _ = served
    http = httpclient.InferenceServerClient(server.http, concurrency=2)
    started = time.monotonic()
    pending = [http.async_infer("parallel", [_http_input("X", np.array([1.0], np.float32), "FP32")])
               for _ in range(2)]
    instances = sorted(int(p.get_result().as_numpy("INSTANCE")[0]) for p in pending)
    assert instances == [0, 1]
    assert time.monotonic() - started < 0.8  # two 0.4 s calls side by side: one after the other takes 0.8 s


@pytest.mark.parametrize("model", ["brightness", "brightness_pipeline"])
def test_streams_run_python_models_and_ensembles(served, model):
    import socket

    from twinfer.client.streams import StreamSender, target
    from twinfer.protocol import game_pb2

    server, _, _ = served
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(10)
    with Client("127.0.0.1", server.tcp) as client:
        sender = StreamSender(client, model, 32, 24,
                              targets=[target("native", f"127.0.0.1:{receiver.getsockname()[1]}")])
        for level in (0, 51, 255):
            sender.send_frame(np.full((24, 32), level, np.uint8))
            result = game_pb2.StreamResult.FromString(receiver.recvfrom(65535)[0])
            np.testing.assert_allclose(result.values, [level / 255] * 2, rtol=1e-5)
        if model == "brightness_pipeline":
            assert list(result.labels) == ["mean", "max"]
        sender.close()
    receiver.close()


def test_twinfer_models_and_the_repository_index_list_them(served):
    import subprocess
    import sys

    server, _, _ = served
    out = subprocess.run([sys.executable, "-m", "twinfer", "models", "--server", f"127.0.0.1:{server.tcp}"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    import re

    rows = {parts[0]: parts[1:] for parts in (re.split(r"\s{2,}", line.strip()) for line in out.splitlines())}
    assert rows["add_sub"][:2] == ["READY", "versions=1"] and rows["pipeline"][0] == "READY"
    assert rows["orphan"][0] == "UNAVAILABLE" and "step model 'not_there'" in rows["orphan"][2]
    index = {m["name"]: m for m in httpclient.InferenceServerClient(server.http).get_model_repository_index()}
    assert index["orphan"]["state"] == "UNAVAILABLE" and index["bls"]["state"] == "READY"


def test_bls_with_the_model_name_from_a_bytes_input(served):
    server, _, _ = served
    a, b = np.arange(4, dtype=np.float32), np.ones(4, np.float32)
    http = httpclient.InferenceServerClient(server.http)

    def call(name: bytes):
        return http.infer("bls_by_name", [_http_input("MODEL_NAME", np.array([name], np.object_), "BYTES"),
                                          _http_input("INPUT0", a, "FP32"), _http_input("INPUT1", b, "FP32")])

    result = call(b"add_sub_unbatched")
    np.testing.assert_allclose(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_allclose(result.as_numpy("OUTPUT1"), a - b)
    with pytest.raises(InferenceServerException, match="unknown model 'undefined_model'"):
        call(b"undefined_model")


def test_custom_metrics_of_a_python_model_are_on_metrics(served):
    import urllib.request

    server, _, _ = served
    http = httpclient.InferenceServerClient(server.http)
    for value in (0.5, 5.0, 50.0):
        http.infer("counted", [_http_input("X", np.array([[value]], np.float32), "FP32")])
    with urllib.request.urlopen(f"http://{server.http}/metrics", timeout=10) as response:
        text = response.read().decode()
    labels = 'model="counted",version="1"'
    # a counter keeps the name the model gave it, as Triton exports it (its custom_metrics example checks these)
    assert "# HELP counted_requests requests seen\n# TYPE counted_requests counter\n" in text
    assert f"counted_requests{{{labels}}} 3.0" in text and "counted_requests_total" not in text
    assert f"counted_last_value{{{labels}}} 50.0" in text
    assert f'counted_x_bucket{{le="1.0",{labels}}} 1.0' in text
    assert f'counted_x_bucket{{le="10.0",{labels}}} 2.0' in text
    assert f'counted_x_bucket{{le="+Inf",{labels}}} 3.0' in text and f"counted_x_sum{{{labels}}} 55.5" in text


def test_changing_a_helper_module_reloads_the_model(served):
    server, repo, _ = served
    http = httpclient.InferenceServerClient(server.http)
    x = np.array([[1.5]], np.float32)

    def factor() -> float:
        return float(http.infer("helper_user", [_http_input("X", x, "FP32")]).as_numpy("Y")[0, 0]) / 1.5

    assert factor() == 2
    helpers = repo / "helper_user" / "1" / "helpers.py"
    before = helpers.stat().st_mtime_ns
    helpers.write_text("FACTOR = 3\n")
    os.utime(helpers, ns=(before + 10**9, before + 10**9))
    wait_until(lambda: factor() == 3, what="the model to reload with the new helper")
