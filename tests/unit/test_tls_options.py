"""security/tls.py: settings -> Twisted's CertificateOptions, and one ConfigError per bad deployment."""

from __future__ import annotations

import pytest
import trustme
from OpenSSL import SSL

from twinfer.config.settings import TlsSettings
from twinfer.errors import ConfigError
from twinfer.security.tls import server_tls_options, wrap_tls


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def files(ca: trustme.CA, tmp_path, name: str = "server"):
    cert = ca.issue_cert("localhost")
    cert_file, key_file = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    return cert_file, key_file


def test_off_by_default():
    assert server_tls_options(TlsSettings()) is None
    factory = object()
    assert wrap_tls(factory, None) is factory


def test_client_ca_makes_client_certificates_required(ca, tmp_path):
    cert_file, key_file = files(ca, tmp_path)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    plain = server_tls_options(TlsSettings(cert_file=cert_file, key_file=key_file)).getContext()
    assert plain.get_verify_mode() == SSL.VERIFY_NONE
    mutual = server_tls_options(TlsSettings(cert_file=cert_file, key_file=key_file,
                                            client_ca_file=tmp_path / "ca.pem")).getContext()
    assert mutual.get_verify_mode() & SSL.VERIFY_PEER and mutual.get_verify_mode() & SSL.VERIFY_FAIL_IF_NO_PEER_CERT


@pytest.mark.parametrize("case, words", [
    ("cert only", "must be set together"),
    ("client ca only", "needs tls.cert_file"),
    ("missing key", "tls.key_file: cannot read"),
    ("not a certificate", "holds no PEM certificate"),
    ("not a key", "not an unencrypted PEM private key"),
    ("mismatch", "does not match"),
])
def test_bad_files_are_one_config_error(ca, tmp_path, case, words):
    cert_file, key_file = files(ca, tmp_path)
    _, other_key = files(ca, tmp_path, "other")
    settings = {
        "cert only": TlsSettings(cert_file=cert_file),
        "client ca only": TlsSettings(client_ca_file=cert_file),
        "missing key": TlsSettings(cert_file=cert_file, key_file=tmp_path / "nope.key"),
        "not a certificate": TlsSettings(cert_file=key_file, key_file=key_file),
        "not a key": TlsSettings(cert_file=cert_file, key_file=cert_file),
        "mismatch": TlsSettings(cert_file=cert_file, key_file=other_key),
    }[case]
    with pytest.raises(ConfigError, match=words) as info:
        server_tls_options(settings)
    assert "\n" not in str(info.value)
