"""KServe v2 over HTTP and gRPC, driven by the unchanged `tritonclient` against a repository it did not build."""

from __future__ import annotations

import json
import queue
import re
import socket

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.support import make_repository

pytestmark = pytest.mark.e2e
ADMIN = "admin-secret"


@pytest.fixture
def kserve(tmp_path, server_factory):
    repo = make_repository(tmp_path / "repo")
    server = server_factory(repo, "--insecure-dev", env={"TWINFER_AUTH__ADMIN_TOKEN": ADMIN})
    session = ort.InferenceSession(str(repo / "tiny" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    yield server, lambda x: session.run(["OUTPUT0"], {"INPUT0": x})[0]
    assert server.stop() == 0


X = np.random.default_rng(11).standard_normal((3, 16)).astype(np.float32)


def raw_http(address: str, request: bytes, timeout: float = 10.0) -> tuple[int, bytes]:
    host, port = address.split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        if not head:
            return 0, b""
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length")), 0)
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
        return int(head.split(b" ")[1]), body


def test_http_metadata_config_infer_json_binary_and_async(kserve):
    server, reference = kserve
    client = httpclient.InferenceServerClient(server.http)
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("tiny")
    meta = client.get_model_metadata("tiny")
    assert meta["platform"] == "onnxruntime_onnx" and meta["inputs"][0]["shape"] == [-1, 16]
    config = client.get_model_config("tiny")
    assert config["max_batch_size"] == 64 and config["input"][0]["dims"] == [16]
    expected = reference(X)
    for binary in (False, True):
        inp = httpclient.InferInput("INPUT0", list(X.shape), "FP32")
        inp.set_data_from_numpy(X, binary_data=binary)
        out = httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary)
        result = client.infer("tiny", [inp], outputs=[out], request_id="r1")
        np.testing.assert_allclose(result.as_numpy("OUTPUT0"), expected, rtol=1e-6, atol=1e-6)
        assert result.get_response()["id"] == "r1"
    pending = [client.async_infer("tiny", [inp]) for _ in range(4)]
    for p in pending:
        np.testing.assert_allclose(p.get_result().as_numpy("OUTPUT0"), expected, rtol=1e-6, atol=1e-6)
    stats = client.get_inference_statistics("tiny")["model_stats"][0]
    assert stats["inference_stats"]["success"]["count"] == 6 and stats["inference_stats"]["fail"]["count"] == 0
    assert sum(b["compute_infer"]["count"] for b in stats["batch_stats"]) == stats["execution_count"]
    client.close()


def test_grpc_metadata_config_infer_stream_and_async(kserve):
    server, reference = kserve
    client = grpcclient.InferenceServerClient(server.grpc)
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("tiny")
    assert not client.is_model_ready("nope")
    assert client.get_model_metadata("tiny").inputs[0].shape == [-1, 16]
    assert client.get_model_config("tiny").config.max_batch_size == 64
    expected = reference(X)
    inp = grpcclient.InferInput("INPUT0", list(X.shape), "FP32")
    inp.set_data_from_numpy(X)
    np.testing.assert_allclose(client.infer("tiny", [inp]).as_numpy("OUTPUT0"), expected, rtol=1e-6, atol=1e-6)
    answers: queue.Queue = queue.Queue()
    client.async_infer("tiny", [inp], callback=lambda result, error: answers.put((result, error)))
    result, error = answers.get(timeout=10)
    assert error is None
    np.testing.assert_allclose(result.as_numpy("OUTPUT0"), expected, rtol=1e-6, atol=1e-6)
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    for i in range(5):
        client.async_stream_infer("tiny", [inp], request_id=str(i))
    bad = grpcclient.InferInput("INPUT0", [1, 3], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 3), np.float32))
    client.async_stream_infer("tiny", [bad], request_id="bad")
    ids, errors = set(), []
    for _ in range(6):
        result, error = answers.get(timeout=10)
        if error is not None:
            errors.append(str(error))
        else:
            ids.add(result.get_response().id)
            np.testing.assert_allclose(result.as_numpy("OUTPUT0"), expected, rtol=1e-6, atol=1e-6)
    client.stop_stream()
    assert ids == {"0", "1", "2", "3", "4"} and len(errors) == 1 and "shape [1, 3]" in errors[0]
    stats = client.get_inference_statistics("tiny").model_stats[0]
    assert stats.inference_stats.success.count == 7 and stats.inference_count == 21
    index = {m.name: m.state for m in client.get_model_repository_index().models}
    assert index == {"tiny": "READY"}
    client.close()


def test_grpc_compressed_requests(kserve):
    """tritonclient's compression_algorithm (gzip, deflate) on unary calls and on a stream, as Triton accepts."""
    server, reference = kserve
    client = grpcclient.InferenceServerClient(server.grpc)
    inp = grpcclient.InferInput("INPUT0", list(X.shape), "FP32")
    inp.set_data_from_numpy(X)
    for algorithm in ("gzip", "deflate"):
        result = client.infer("tiny", [inp], compression_algorithm=algorithm)
        np.testing.assert_allclose(result.as_numpy("OUTPUT0"), reference(X), rtol=1e-6, atol=1e-6)
    answers: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)), compression_algorithm="gzip")
    for i in range(3):
        client.async_stream_infer("tiny", [inp], request_id=str(i))
    results = [answers.get(timeout=10) for _ in range(3)]
    client.stop_stream()
    assert all(error is None for _, error in results), results
    client.close()


def test_grpc_asyncio_client(kserve):
    import asyncio

    server, reference = kserve

    async def run() -> list[np.ndarray]:
        client = grpcaio.InferenceServerClient(server.grpc)
        inp = grpcaio.InferInput("INPUT0", list(X.shape), "FP32")
        inp.set_data_from_numpy(X)
        results = await asyncio.gather(*[client.infer("tiny", [inp]) for _ in range(8)])
        await client.close()
        return [r.as_numpy("OUTPUT0") for r in results]

    for out in asyncio.run(run()):
        np.testing.assert_allclose(out, reference(X), rtol=1e-6, atol=1e-6)


def test_bad_requests_get_the_right_status_and_the_server_keeps_serving(kserve):
    server, reference = kserve
    client = httpclient.InferenceServerClient(server.http)
    grpc_client = grpcclient.InferenceServerClient(server.grpc)

    def http_status(call) -> tuple[str, str]:
        with pytest.raises(InferenceServerException) as info:
            call()
        return str(info.value.status()), info.value.message()

    wrong_shape = httpclient.InferInput("INPUT0", [1, 15], "FP32")
    wrong_shape.set_data_from_numpy(np.zeros((1, 15), np.float32))
    assert http_status(lambda: client.infer("tiny", [wrong_shape]))[0] == "400"
    wrong_dtype = httpclient.InferInput("INPUT0", [1, 16], "FP64")
    wrong_dtype.set_data_from_numpy(np.zeros((1, 16), np.float64))
    status, message = http_status(lambda: client.infer("tiny", [wrong_dtype]))
    assert status == "400" and "FP64" in message
    ok = httpclient.InferInput("INPUT0", [1, 16], "FP32")
    ok.set_data_from_numpy(X[:1])
    assert http_status(lambda: client.infer("nope", [ok]))[0] == "404"
    with pytest.raises(InferenceServerException) as info:
        grpc_client.infer("nope", [grpcclient.InferInput("INPUT0", [1, 16], "FP32").set_data_from_numpy(X[:1])])
    assert "NOT_FOUND" in str(info.value.status())

    infer = "/v2/models/tiny/infer"
    cases = [
        (b"POST " + infer.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\n{bad json", 400, "JSON"),
        (b"POST " + infer.encode() + b" HTTP/1.1\r\nHost: x\r\nInference-Header-Content-Length: 999\r\n"
         b"Content-Length: 2\r\n\r\n{}", 400, "Inference-Header-Content-Length"),
        (b"POST " + infer.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n", 413, "larger"),
        (b"GET /v2/models/..%2Fetc/config HTTP/1.1\r\nHost: x\r\n\r\n", 400, "invalid model name"),
        (b"GET /v2/nothing HTTP/1.1\r\nHost: x\r\n\r\n", 404, "no endpoint"),
        (b"POST /v2/repository/models/tiny/unload HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 403, "admin"),
        (b"GARBAGE\r\n\r\n", 400, "malformed"),
    ]
    header = {"inputs": [{"name": "INPUT0", "shape": [1, 16], "datatype": "FP32",
                          "parameters": {"binary_data_size": 64}}]}
    head = json.dumps(header).encode()
    truncated = head + b"\0" * 10
    cases.append((b"POST " + infer.encode() + b" HTTP/1.1\r\nHost: x\r\nInference-Header-Content-Length: "
                  + str(len(head)).encode() + b"\r\nContent-Length: " + str(len(truncated)).encode() + b"\r\n\r\n"
                  + truncated, 400, "runs past"))
    for request, status, words in cases:
        got, body = raw_http(server.http, request)
        assert got == status, (request[:60], got, body)
        assert words in json.loads(body)["error"], body
    np.testing.assert_allclose(client.infer("tiny", [ok]).as_numpy("OUTPUT0"), reference(X[:1]), rtol=1e-6)


def test_repository_load_unload_needs_the_admin_token(kserve):
    server, _ = kserve
    client = httpclient.InferenceServerClient(server.http)
    with pytest.raises(InferenceServerException):
        client.unload_model("tiny")
    admin = {"Authorization": f"Bearer {ADMIN}"}
    client.unload_model("tiny", headers=admin)
    assert not client.is_model_ready("tiny")
    index = client.get_model_repository_index()
    assert index == [{"name": "tiny", "version": "", "state": "UNAVAILABLE", "reason": "unloaded"}]
    grpc_client = grpcclient.InferenceServerClient(server.grpc)
    with pytest.raises(InferenceServerException) as info:
        grpc_client.load_model("tiny")
    assert "PERMISSION_DENIED" in str(info.value.status())
    grpc_client.load_model("tiny", headers={"authorization": f"Bearer {ADMIN}"})
    assert client.is_model_ready("tiny") and grpc_client.is_model_ready("tiny")


def test_metrics_on_the_http_port_and_the_metrics_port(kserve):
    server, _ = kserve
    client = httpclient.InferenceServerClient(server.http)
    inp = httpclient.InferInput("INPUT0", [1, 16], "FP32")
    inp.set_data_from_numpy(X[:1])
    for _ in range(3):
        client.infer("tiny", [inp])
    for port in (server.ports["http"], server.ports["metrics"]):
        status, body = raw_http(f"127.0.0.1:{port}", b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        text = body.decode()
        assert status == 200
        assert 'twinfer_inference_request_success_total{model="tiny",version="1"} 3.0' in text
        assert 'twinfer_inference_batch_executions_total{batch_size="1",model="tiny",version="1"}' in text
        assert "process_resident_memory_bytes" in text and "twinfer_http_connections" in text
        # twinfer.gc_policy: what start-up built (imports, models) is frozen, so full collections skip it
        frozen = re.search(r"^twinfer_gc_frozen_objects ([0-9.e+]+)$", text, re.M)
        assert frozen and float(frozen.group(1)) > 10_000, "start-up heap not frozen"
        assert 'python_gc_collections_total{generation="2"}' in text
    status, _ = raw_http(f"127.0.0.1:{server.ports['metrics']}", b"GET /v2/models/tiny HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 404  # the metrics port serves metrics only
