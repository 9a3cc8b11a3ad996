"""KServe HTTP hardening (issue #14) against a real server: bearer tokens (tritonclient with headers=), the admin
check, statistics without a model, names with a trailing newline, deep JSON, the JSON size cap, header/URL caps."""

from __future__ import annotations

import json
import socket
import time

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.e2e.test_kserve import raw_http
from tests.support import make_repository, tiny_reference
from twinfer.security.tokens import TokenAuthority

pytestmark = pytest.mark.e2e
SECRET = "http-test-secret"
ADMIN = "admin-secret"
X = np.random.default_rng(3).standard_normal((2, 16)).astype(np.float32)


@pytest.fixture
def secured(tmp_path, server_factory):
    repo = make_repository(tmp_path / "repo")
    server = server_factory(repo, env={"TWINFER_AUTH__TOKEN_SECRET": SECRET, "TWINFER_AUTH__ADMIN_TOKEN": ADMIN})
    yield server
    assert server.stop() == 0
    assert "Traceback" not in server.log()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def request(path: str, method: str = "GET", headers: dict[str, str] | None = None, body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: x", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def tiny_input() -> httpclient.InferInput:
    inp = httpclient.InferInput("INPUT0", list(X.shape), "FP32")
    inp.set_data_from_numpy(X, binary_data=True)
    return inp


def test_tritonclient_works_with_a_token_in_headers(secured):
    token = TokenAuthority(SECRET).issue("alice", int(time.time()) + 600)
    client = httpclient.InferenceServerClient(secured.http)
    auth = bearer(token)
    assert client.is_server_live() and client.is_server_ready()  # health: open, no headers
    assert client.is_model_ready("tiny", headers=auth)
    assert client.get_model_metadata("tiny", headers=auth)["name"] == "tiny"
    result = client.infer("tiny", [tiny_input()], headers=auth)
    np.testing.assert_allclose(result.as_numpy("OUTPUT0"), tiny_reference(X), rtol=1e-5, atol=1e-5)
    assert client.get_model_repository_index(headers=auth)[0]["name"] == "tiny"
    # finding 9: statistics of every model (GET /v2/models/stats) was a 404 "unknown model 'stats'"
    stats = client.get_inference_statistics(headers=auth)["model_stats"]
    assert [(s["name"], s["inference_stats"]["success"]["count"]) for s in stats] == [("tiny", 1)]
    status, body = raw_http(secured.http, request("/metrics", headers=auth))
    assert status == 200 and b"twinfer_http_connections" in body
    client.close()


def test_without_a_valid_token_every_route_but_health_is_401(secured):
    authority = TokenAuthority(SECRET)
    expired = authority.issue("alice", int(time.time()) - 5)
    forged = TokenAuthority("another-secret").issue("alice", int(time.time()) + 600)
    infer_body = json.dumps({"inputs": [{"name": "INPUT0", "shape": [1, 16], "datatype": "FP32",
                                         "data": [0.0] * 16}]}).encode()
    routes = [("GET", "/v2", b""), ("GET", "/v2/models/tiny", b""), ("GET", "/v2/models/tiny/ready", b""),
              ("GET", "/v2/models/tiny/config", b""), ("POST", "/v2/models/tiny/infer", infer_body),
              ("POST", "/v2/repository/index", b"{}"), ("GET", "/v2/models/stats", b""),
              ("GET", "/v2/models/tiny/stats", b""), ("GET", "/metrics", b"")]
    for headers, words in (({}, "token is required"), (bearer(expired), "expired"),
                           (bearer(forged), "signature"), ({"Authorization": "Basic YWxpY2U6eA=="}, "required")):
        for method, path, body in routes:
            status, answer = raw_http(secured.http, request(path, method, headers, body))
            assert status == 401, (method, path, headers, status, answer)
            assert words in json.loads(answer)["error"]
    for path in ("/v2/health/live", "/v2/health/ready"):
        assert raw_http(secured.http, request(path))[0] == 200
    # the metrics-only port stays open (documented: bind it to an internal interface)
    assert raw_http(f"127.0.0.1:{secured.ports['metrics']}", request("/metrics"))[0] == 200


def test_load_unload_need_the_admin_token_not_a_user_token(secured):
    token = TokenAuthority(SECRET).issue("alice", int(time.time()) + 600)
    client = httpclient.InferenceServerClient(secured.http)
    for headers in ({}, bearer(token), bearer("wrong")):
        with pytest.raises(InferenceServerException) as info:
            client.unload_model("tiny", headers=headers)
        assert str(info.value.status()) == "403"
    client.unload_model("tiny", headers=bearer(ADMIN))
    assert not client.is_model_ready("tiny", headers=bearer(token))
    client.load_model("tiny", headers=bearer(ADMIN))
    assert client.is_model_ready("tiny", headers=bearer(token))


def test_with_no_admin_token_load_unload_are_refused(tmp_path, server_factory):
    server = server_factory(make_repository(tmp_path / "repo"), "--insecure-dev")
    for action in ("load", "unload"):
        for headers in ({}, bearer(ADMIN), bearer("")):
            status, body = raw_http(server.http, request(f"/v2/repository/models/tiny/{action}", "POST", headers))
            assert status == 403 and "no admin token is configured" in json.loads(body)["error"]
    assert httpclient.InferenceServerClient(server.http).is_model_ready("tiny")
    assert server.stop() == 0


def test_names_with_a_trailing_newline_are_invalid(tmp_path, server_factory):
    server = server_factory(make_repository(tmp_path / "repo"), "--insecure-dev")
    for path in ("/v2/models/tiny%0a/ready", "/v2/models/tiny%0A", "/v2/models/tiny%0a/versions/1/ready"):
        status, body = raw_http(server.http, request(path))
        assert status == 400 and "invalid model name" in json.loads(body)["error"], (path, status, body)
    status, body = raw_http(server.http, request("/v2/models/tiny/versions/1%0a/ready"))
    assert status == 400 and "invalid model version" in json.loads(body)["error"]
    assert raw_http(server.http, request("/v2/models/tiny/ready"))[0] == 200
    assert server.stop() == 0


def test_deep_json_is_a_client_error_with_no_traceback(tmp_path, server_factory):
    server = server_factory(make_repository(tmp_path / "repo"), "--insecure-dev")
    deep = b"[" * 200_000 + b"]" * 200_000
    deep_object = b'{"ready": ' + b'{"a": ' * 50_000 + b"1" + b"}" * 50_000 + b"}"
    infer_deep = b'{"inputs": [{"name": "INPUT0", "shape": [1, 16], "datatype": "FP32", "data": ' + deep + b"}]}"
    for path, body in (("/v2/repository/index", deep), ("/v2/repository/index", deep_object),
                       ("/v2/models/tiny/infer", deep), ("/v2/models/tiny/infer", infer_deep),
                       ("/v2/models/tiny/infer", b'{"inputs": [' + b"1," * 400_000)):  # > 512 KiB: the child parses
        status, answer = raw_http(server.http, request(path, "POST", body=body))
        assert status == 400 and "JSON" in json.loads(answer)["error"], (path, status, answer[:200])
    assert raw_http(server.http, request("/v2/health/ready"))[0] == 200
    assert server.stop() == 0
    log = server.log()
    assert "Traceback" not in log and "RecursionError" not in log


def test_json_bodies_above_the_json_cap_get_413_with_a_pointer_to_binary(tmp_path, server_factory):
    server = server_factory(make_repository(tmp_path / "repo"), "--insecure-dev",
                            env={"TWINFER_MAX_JSON_BODY_BYTES": str(1024 * 1024)})
    big = np.random.default_rng(5).standard_normal((4000, 16)).astype(np.float32)  # ~1.3 MB as JSON
    client = httpclient.InferenceServerClient(server.http)
    inp = httpclient.InferInput("INPUT0", list(big.shape), "FP32")
    inp.set_data_from_numpy(big, binary_data=False)
    with pytest.raises(InferenceServerException) as info:
        client.infer("tiny", [inp])
    assert str(info.value.status()) == "413" and "binary" in info.value.message()
    # the same tensor as binary passes the size check (and meets the model's own batch limit instead)
    inp.set_data_from_numpy(big, binary_data=True)
    with pytest.raises(InferenceServerException) as info:
        client.infer("tiny", [inp])
    assert str(info.value.status()) == "400" and "batch" in info.value.message()
    inp = httpclient.InferInput("INPUT0", [64, 16], "FP32")
    inp.set_data_from_numpy(big[:64], binary_data=False)
    np.testing.assert_allclose(client.infer("tiny", [inp]).as_numpy("OUTPUT0"), tiny_reference(big[:64]),
                               rtol=1e-5, atol=1e-5)
    assert server.stop() == 0


def test_oversized_url_and_headers_get_414_and_431(tmp_path, server_factory):
    server = server_factory(make_repository(tmp_path / "repo"), "--insecure-dev",
                            env={"TWINFER_MAX_HTTP_URL_BYTES": "1024", "TWINFER_MAX_HTTP_HEADER_BYTES": "4096"})
    assert raw_http(server.http, request("/v2/models/" + "a" * 2000))[0] == 414
    assert raw_http(server.http, request("/v2/health/live", headers={"X-Big": "v" * 5000}))[0] == 431
    # one header streamed without end is cut off near the cap, not read for ever
    host, port = server.http.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nX-Endless: ")
        answer = b""
        try:
            for _ in range(200):
                sock.sendall(b"v" * 1024)
        except OSError:
            pass  # the server closed on us
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 431")
    assert raw_http(server.http, request("/v2/health/live"))[0] == 200
    assert server.stop() == 0
