"""gRPC with a token secret: `authorization: Bearer <token>` metadata (the game protocol's tokens), health open for
probes, repository load/unload behind the admin token and refused when none is configured. Real tritonclient."""

from __future__ import annotations

import queue
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.support import make_repository, tiny_reference
from twinfer.security.tokens import TokenAuthority

pytestmark = pytest.mark.e2e
SECRET = "grpc-test-secret"
ADMIN = "grpc-admin-token"
X = np.random.default_rng(5).standard_normal((2, 16)).astype(np.float32)


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def status_of(call) -> tuple[str, str]:
    with pytest.raises(InferenceServerException) as info:
        call()
    return str(info.value.status()), info.value.message()


def tiny_input() -> grpcclient.InferInput:
    inp = grpcclient.InferInput("INPUT0", list(X.shape), "FP32")
    inp.set_data_from_numpy(X)
    return inp


@pytest.fixture(params=["twisted", "grpcio"])
def secured(request, tmp_path, server_factory):
    """Both gRPC servers (twinfer's own HTTP/2, the default, and grpcio's) keep the same policy."""
    repo = make_repository(tmp_path / "repo")
    server = server_factory(repo, env={"TWINFER_AUTH__TOKEN_SECRET": SECRET, "TWINFER_AUTH__ADMIN_TOKEN": ADMIN,
                                       "TWINFER_GRPC_SERVER": request.param})
    client = grpcclient.InferenceServerClient(server.grpc)
    yield server, client
    client.close()
    assert server.stop() == 0


def stream_outcome(client: grpcclient.InferenceServerClient, headers: dict[str, str] | None) -> tuple:
    answers: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)), headers=headers)
    try:
        try:
            client.async_stream_infer("tiny", [tiny_input()], request_id="s1")
        except InferenceServerException:
            pass  # the stream already ended: its status went to the callback
        return answers.get(timeout=20)
    finally:
        client.stop_stream()


def test_every_method_but_health_needs_a_valid_token(secured):
    server, client = secured
    now = int(time.time())
    good = TokenAuthority(SECRET).issue("alice", now + 600)
    forged = TokenAuthority("someone-else").issue("alice", now + 600)
    expired = TokenAuthority(SECRET).issue("alice", now - 5)
    calls = {
        "infer": lambda h: client.infer("tiny", [tiny_input()], headers=h),
        "model metadata": lambda h: client.get_model_metadata("tiny", headers=h),
        "model config": lambda h: client.get_model_config("tiny", headers=h),
        "model ready": lambda h: client.is_model_ready("tiny", headers=h),
        "server metadata": lambda h: client.get_server_metadata(headers=h),
        "repository index": lambda h: client.get_model_repository_index(headers=h),
        "statistics": lambda h: client.get_inference_statistics("tiny", headers=h),
    }
    for label, headers in (("none", None), ("forged", bearer(forged)), ("expired", bearer(expired)),
                           ("not bearer", {"authorization": good}), ("garbage", bearer("x" * 5000))):
        for name, call in calls.items():
            status, message = status_of(lambda: call(headers))
            assert status == "StatusCode.UNAUTHENTICATED", (label, name, status, message)
        _, error = stream_outcome(client, headers)
        assert error is not None and "UNAUTHENTICATED" in str(error.status()), (label, error)
    assert "expired" in status_of(lambda: calls["infer"](bearer(expired)))[1]
    assert "signature" in status_of(lambda: calls["infer"](bearer(forged)))[1]

    assert client.is_server_live() and client.is_server_ready()  # probes need no token
    ok = bearer(good)
    np.testing.assert_allclose(calls["infer"](ok).as_numpy("OUTPUT0"), tiny_reference(X), rtol=1e-5, atol=1e-5)
    assert calls["model metadata"](ok).name == "tiny" and calls["model ready"](ok)
    assert [m.name for m in calls["repository index"](ok).models] == ["tiny"]
    assert calls["statistics"](ok).model_stats[0].inference_stats.success.count == 1
    result, error = stream_outcome(client, ok)
    assert error is None and result.get_response().id == "s1"
    np.testing.assert_allclose(result.as_numpy("OUTPUT0"), tiny_reference(X), rtol=1e-5, atol=1e-5)
    assert "Traceback" not in server.log()


def test_load_and_unload_need_the_admin_token_not_a_login_token(secured):
    _, client = secured
    login = bearer(TokenAuthority(SECRET).issue("alice", int(time.time()) + 600))
    for headers in (None, login, bearer(ADMIN + "x")):
        status, message = status_of(lambda: client.unload_model("tiny", headers=headers))
        assert status == "StatusCode.PERMISSION_DENIED" and "admin token" in message
    assert client.is_model_ready("tiny", headers=login)
    client.unload_model("tiny", headers=bearer(ADMIN))
    assert not client.is_model_ready("tiny", headers=login)
    client.load_model("tiny", headers=bearer(ADMIN))
    assert client.is_model_ready("tiny", headers=login)


def test_without_an_admin_token_load_and_unload_are_refused(tmp_path, server_factory):
    server = server_factory(make_repository(tmp_path / "repo"), "--insecure-dev")
    client = grpcclient.InferenceServerClient(server.grpc)
    for call in (lambda: client.unload_model("tiny"), lambda: client.load_model("tiny"),
                 lambda: client.unload_model("tiny", headers=bearer(""))):
        status, message = status_of(call)
        assert status == "StatusCode.PERMISSION_DENIED" and "no admin token is configured" in message
    assert client.is_model_ready("tiny")  # insecure dev mode: no login needed, and the model is still there
    client.close()
    assert server.stop() == 0
