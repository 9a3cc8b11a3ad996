"""gRPC over TLS and mutual TLS, against certificates the test makes (trustme), with the real tritonclient."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import trustme
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.support import make_repository, tiny_reference

pytestmark = pytest.mark.e2e
X = np.random.default_rng(3).standard_normal((1, 16)).astype(np.float32)


def write_pems(folder: Path, ca: trustme.CA, cert: trustme.LeafCert, name: str) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"ca": folder / f"{name}-ca.pem", "cert": folder / f"{name}-cert.pem", "key": folder / f"{name}-key.pem"}
    ca.cert_pem.write_to_path(paths["ca"])
    cert.cert_chain_pems[0].write_to_path(paths["cert"])
    for extra in cert.cert_chain_pems[1:]:
        extra.write_to_path(paths["cert"], append=True)
    cert.private_key_pem.write_to_path(paths["key"])
    return {k: str(v) for k, v in paths.items()}


def infer(server, **tls) -> np.ndarray:
    client = grpcclient.InferenceServerClient(server.grpc, ssl=bool(tls), **tls)
    try:
        inp = grpcclient.InferInput("INPUT0", list(X.shape), "FP32")
        inp.set_data_from_numpy(X)
        return client.infer("tiny", [inp], client_timeout=10).as_numpy("OUTPUT0")
    finally:
        client.close()


def refused(call) -> str:
    with pytest.raises(InferenceServerException) as info:
        call()
    return str(info.value.status())


@pytest.fixture
def pki(tmp_path):
    server_ca, client_ca, stranger_ca = trustme.CA(), trustme.CA(), trustme.CA()
    return {
        "server": write_pems(tmp_path / "pki", server_ca, server_ca.issue_cert("127.0.0.1", "localhost"), "server"),
        "client": write_pems(tmp_path / "pki", client_ca, client_ca.issue_cert("game-client"), "client"),
        "stranger": write_pems(tmp_path / "pki", stranger_ca, stranger_ca.issue_cert("intruder"), "stranger"),
    }


def test_tls_serves_verified_clients_and_refuses_plaintext(tmp_path, server_factory, pki):
    server = server_factory(make_repository(tmp_path / "repo"), "--insecure-dev", env={
        "TWINFER_TLS__CERT_FILE": pki["server"]["cert"], "TWINFER_TLS__KEY_FILE": pki["server"]["key"]})
    out = infer(server, root_certificates=pki["server"]["ca"])
    np.testing.assert_allclose(out, tiny_reference(X), rtol=1e-5, atol=1e-5)
    assert refused(lambda: infer(server)) == "StatusCode.UNAVAILABLE"  # plaintext on a TLS port
    # A client that trusts another CA does not accept the server's certificate.
    assert refused(lambda: infer(server, root_certificates=pki["stranger"]["ca"])) == "StatusCode.UNAVAILABLE"
    assert server.stop() == 0


def test_mutual_tls_needs_a_client_certificate_from_the_client_ca(tmp_path, server_factory, pki):
    server = server_factory(make_repository(tmp_path / "repo"), "--insecure-dev", env={
        "TWINFER_TLS__CERT_FILE": pki["server"]["cert"], "TWINFER_TLS__KEY_FILE": pki["server"]["key"],
        "TWINFER_TLS__CLIENT_CA_FILE": pki["client"]["ca"]})
    trust = {"root_certificates": pki["server"]["ca"]}
    assert refused(lambda: infer(server, **trust)) == "StatusCode.UNAVAILABLE"  # no client certificate
    stranger = {"private_key": pki["stranger"]["key"], "certificate_chain": pki["stranger"]["cert"]}
    assert refused(lambda: infer(server, **trust, **stranger)) == "StatusCode.UNAVAILABLE"
    mine = {"private_key": pki["client"]["key"], "certificate_chain": pki["client"]["cert"]}
    np.testing.assert_allclose(infer(server, **trust, **mine), tiny_reference(X), rtol=1e-5, atol=1e-5)
    assert server.stop() == 0


def test_a_half_configured_tls_is_a_readable_start_error(tmp_path, server_factory, pki):
    with pytest.raises(RuntimeError) as info:
        server_factory(make_repository(tmp_path / "repo"), "--insecure-dev",
                       env={"TWINFER_TLS__CERT_FILE": pki["server"]["cert"]})
    assert "tls.cert_file and tls.key_file must be set together" in str(info.value)
    assert "Traceback" not in str(info.value)
