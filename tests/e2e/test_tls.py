"""TLS on the game port and the HTTP port (issue #14 finding 11), with certificates made by trustme: a Python ssl
client logs in over TLS, tritonclient.http infers with ssl=True, a plain client fails cleanly, mutual TLS refuses a
client without a certificate, and a bad certificate path is one config error at start."""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import gevent.ssl
import numpy as np
import pytest
import trustme
import tritonclient.http as httpclient

from tests.support import make_repository, tiny_reference
from twinfer.client import Client
from twinfer.client.errors import SessionClosed
from twinfer.security.tokens import TokenAuthority

pytestmark = pytest.mark.e2e
SECRET = "tls-test-secret"
X = np.random.default_rng(8).standard_normal((2, 16)).astype(np.float32)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def server_files(ca: trustme.CA, tmp_path, client_ca: bool = False) -> dict[str, str]:
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file = tmp_path / "server.pem", tmp_path / "server.key"
    for i, blob in enumerate(cert.cert_chain_pems):
        blob.write_to_path(str(cert_file), append=i > 0)
    cert.private_key_pem.write_to_path(str(key_file))
    env = {"TWINFER_TLS__CERT_FILE": str(cert_file), "TWINFER_TLS__KEY_FILE": str(key_file),
           "TWINFER_AUTH__TOKEN_SECRET": SECRET}
    if client_ca:
        ca.cert_pem.write_to_path(str(tmp_path / "client-ca.pem"))
        env["TWINFER_TLS__CLIENT_CA_FILE"] = str(tmp_path / "client-ca.pem")
    return env


def client_context(ca: trustme.CA, with_cert: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(context)
    if with_cert:
        ca.issue_cert("game-client@example.com").configure_cert(context)
    return context


def token() -> str:
    return TokenAuthority(SECRET).issue("alice", int(time.time()) + 600)


def test_game_and_http_over_tls(ca, tmp_path, server_factory):
    server = server_factory(make_repository(tmp_path / "repo"), env=server_files(ca, tmp_path))
    with Client("127.0.0.1", server.tcp, token=token(), ssl_context=client_context(ca)) as client:
        out = client.infer("tiny", {"INPUT0": X})["OUTPUT0"]
        np.testing.assert_allclose(out, tiny_reference(X), rtol=1e-5, atol=1e-5)
        assert client.ping() >= 0
        # the reader thread receives while writers send: many requests in flight on one TLS socket
        batch = np.random.default_rng(9).standard_normal((64, 16)).astype(np.float32)
        futures = [client.infer_async("tiny", {"INPUT0": batch}) for _ in range(100)]
        for future in futures:
            np.testing.assert_allclose(future.result(30)["OUTPUT0"], tiny_reference(batch), rtol=1e-5, atol=1e-5)

    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    http = httpclient.InferenceServerClient(
        server.http, ssl=True,
        ssl_context_factory=lambda: gevent.ssl.create_default_context(cafile=str(ca_file)))
    assert http.is_server_live()
    inp = httpclient.InferInput("INPUT0", list(X.shape), "FP32")
    inp.set_data_from_numpy(X, binary_data=True)
    result = http.infer("tiny", [inp], headers={"Authorization": f"Bearer {token()}"})
    np.testing.assert_allclose(result.as_numpy("OUTPUT0"), tiny_reference(X), rtol=1e-5, atol=1e-5)
    http.close()

    # plain clients against TLS ports fail at once (no HTTP answer, no login), and the server keeps serving
    with socket.create_connection(("127.0.0.1", server.ports["http"]), timeout=10) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            answer = sock.recv(65536)
        except ConnectionResetError:
            answer = b""
        assert not answer.startswith(b"HTTP/1.1 200")
    with pytest.raises((SessionClosed, TimeoutError)):  # not a login
        with Client("127.0.0.1", server.tcp, token=token(), timeout=5):
            pass
    # the metrics port stays plain
    with socket.create_connection(("127.0.0.1", server.ports["metrics"]), timeout=10) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    with Client("127.0.0.1", server.tcp, token=token(), ssl_context=client_context(ca)) as client:
        assert client.infer("tiny", {"INPUT0": X})["OUTPUT0"].shape == (2, 16)
    assert server.stop() == 0
    assert "Traceback" not in server.log()


def test_tls_logins_from_many_threads_all_arrive(ca, tmp_path, server_factory):
    """The client reads on its own thread while the caller writes. Over an `ssl.SSLSocket` that is two threads in
    one OpenSSL object, which OpenSSL forbids: logins went missing (the server kicked them after its login timeout;
    the old client lost several of these 120 in every run). The client's TlsSocket keeps TLS state behind a lock."""
    server = server_factory(make_repository(tmp_path / "repo"), env=server_files(ca, tmp_path))
    context = client_context(ca)

    def login_and_ping(i: int) -> str | None:
        try:
            user_token = TokenAuthority(SECRET).issue(f"user-{i}", int(time.time()) + 600)
            with Client("127.0.0.1", server.tcp, token=user_token, ssl_context=context, timeout=5) as client:
                client.ping()
                if i % 20 == 0:
                    np.testing.assert_allclose(client.infer("tiny", {"INPUT0": X})["OUTPUT0"], tiny_reference(X),
                                               rtol=1e-5, atol=1e-5)
            return None
        except Exception as exc:  # noqa: BLE001 - collected, so one failure shows with the others
            return f"{i}: {exc!r}"

    with ThreadPoolExecutor(6) as pool:
        failures = [failure for failure in pool.map(login_and_ping, range(120)) if failure]
    assert failures == []


def test_mutual_tls_refuses_a_client_without_a_certificate(ca, tmp_path, server_factory):
    server = server_factory(make_repository(tmp_path / "repo"), env=server_files(ca, tmp_path, client_ca=True))
    with Client("127.0.0.1", server.tcp, token=token(), ssl_context=client_context(ca, with_cert=True)) as client:
        assert client.infer("tiny", {"INPUT0": X})["OUTPUT0"].shape == (2, 16)
    with pytest.raises((ssl.SSLError, ConnectionError, SessionClosed)):
        # TLS 1.3: the client's handshake may finish before the server checks it, so the refusal can surface on
        # the login's reply instead; either way there is no session
        with Client("127.0.0.1", server.tcp, token=token(), ssl_context=client_context(ca), timeout=5):
            pass
    with socket.create_connection(("127.0.0.1", server.ports["http"]), timeout=10) as raw:
        with client_context(ca).wrap_socket(raw, server_hostname="127.0.0.1") as sock:
            with pytest.raises((ssl.SSLError, ConnectionError)):
                sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
                if not sock.recv(65536):
                    raise ConnectionError("closed without an answer")
    with socket.create_connection(("127.0.0.1", server.ports["http"]), timeout=10) as raw:
        with client_context(ca, with_cert=True).wrap_socket(raw, server_hostname="127.0.0.1") as sock:
            sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    assert server.stop() == 0


@pytest.mark.parametrize("setting", ["CERT_FILE", "KEY_FILE"])
def test_a_bad_certificate_or_key_path_is_one_config_error(ca, tmp_path, setting):
    env = server_files(ca, tmp_path)
    env[f"TWINFER_TLS__{setting}"] = str(tmp_path / "missing.pem")
    result = subprocess.run(
        [sys.executable, "-m", "twinfer", "serve", "--model-repository", str(make_repository(tmp_path / "repo")),
         "--tcp-port", "0", "--udp-port", "-1", "--http-port", "0", "--grpc-port", "-1", "--metrics-port", "-1"],
        capture_output=True, text=True, timeout=60, env={**__import__("os").environ, **env})
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [f"twinfer: config error: tls.{setting.lower()}: cannot read {tmp_path / 'missing.pem'}: "
                     "No such file or directory"], result.stderr


def test_tls_on_ports_shared_with_reuse_port(ca, tmp_path, server_factory):
    """The supervisor's workers listen through listen_shared (SO_REUSEPORT): TLS must wrap that path too."""
    env = {**server_files(ca, tmp_path), "TWINFER_REUSE_PORT": "true"}
    server = server_factory(make_repository(tmp_path / "repo"), env=env)
    with Client("127.0.0.1", server.tcp, token=token(), ssl_context=client_context(ca)) as client:
        assert client.infer("tiny", {"INPUT0": X})["OUTPUT0"].shape == (2, 16)
    with socket.create_connection(("127.0.0.1", server.ports["http"]), timeout=10) as raw:
        with client_context(ca).wrap_socket(raw, server_hostname="127.0.0.1") as sock:
            sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    assert server.stop() == 0
