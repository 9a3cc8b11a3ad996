"""TLS for the Twisted listeners (game protocol, KServe HTTP) from `settings.tls`.

Off by default (local use). With `cert_file` and `key_file` set, `server_tls_options` builds the
`CertificateOptions` Twisted needs, and `wrap_tls` puts a listener's factory behind `TLSMemoryBIOFactory`, which
works the same for an endpoint's port and for a port adopted from a shared SO_REUSEPORT socket. With
`client_ca_file`, clients must present a certificate that CA signed (mutual TLS). Every problem with the files is
a ConfigError naming the setting and the file, raised at start, so a bad deployment is one log line, not a server
that answers its first client with a handshake failure.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twinfer.config.settings import TlsSettings
from twinfer.errors import ConfigError


def _read(setting: str, path: Path) -> bytes:
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise ConfigError(f"config error: {setting}: cannot read {path}: {exc.strerror}") from None


def _certificates(setting: str, path: Path) -> list[Any]:
    from cryptography import x509
    from OpenSSL import crypto

    try:
        certificates = x509.load_pem_x509_certificates(_read(setting, path))
    except ValueError:
        raise ConfigError(f"config error: {setting}: {path} holds no PEM certificate") from None
    return [crypto.X509.from_cryptography(c) for c in certificates]


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """The PEM bytes of the `tls` settings, read once and checked to parse; what every TLS front-end builds from."""

    cert_chain: bytes
    key: bytes
    client_ca: bytes | None


def read_tls_files(tls: TlsSettings) -> TlsFiles | None:
    """None when TLS is off (no cert_file and no key_file); a ConfigError naming the setting otherwise."""
    if tls.cert_file is None and tls.key_file is None:
        if tls.client_ca_file is not None:
            raise ConfigError("config error: tls.client_ca_file needs tls.cert_file and tls.key_file")
        return None
    if tls.cert_file is None or tls.key_file is None:
        raise ConfigError("config error: tls.cert_file and tls.key_file must be set together")
    _certificates("tls.cert_file", tls.cert_file)
    if tls.client_ca_file is not None:
        _certificates("tls.client_ca_file", tls.client_ca_file)
    return TlsFiles(_read("tls.cert_file", tls.cert_file), _read("tls.key_file", tls.key_file),
                    _read("tls.client_ca_file", tls.client_ca_file) if tls.client_ca_file is not None else None)


def server_tls_options(tls: TlsSettings, alpn: list[bytes] | None = None) -> Any | None:
    """Twisted's CertificateOptions for `tls`, or None when TLS is off (no cert_file and no key_file). `alpn`: the
    protocols offered by ALPN (gRPC clients require b"h2")."""
    if read_tls_files(tls) is None:
        return None
    from cryptography.hazmat.primitives import serialization
    from OpenSSL import SSL, crypto
    from twisted.internet import ssl

    chain = _certificates("tls.cert_file", tls.cert_file)
    try:
        key = serialization.load_pem_private_key(_read("tls.key_file", tls.key_file), password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"config error: tls.key_file: {tls.key_file} is not an unencrypted PEM private key "
                          f"({exc})") from None
    trust = None
    if tls.client_ca_file is not None:
        authorities = _certificates("tls.client_ca_file", tls.client_ca_file)
        trust = ssl.trustRootFromCertificates([ssl.Certificate(c) for c in authorities])
    options = ssl.CertificateOptions(
        privateKey=crypto.PKey.from_cryptography_key(key),
        certificate=chain[0],
        extraCertChain=chain[1:],
        trustRoot=trust,  # set: a client certificate is required and must chain to it
        raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
        acceptableProtocols=alpn,
    )
    try:
        options.getContext()  # loads key and certificate now: a mismatch fails at start, not at the first client
    except SSL.Error as exc:
        raise ConfigError(f"config error: tls.key_file {tls.key_file} does not match tls.cert_file "
                          f"{tls.cert_file} ({exc})") from None
    return options


def wrap_tls(factory: Any, options: Any | None) -> Any:
    """The factory to listen with: `factory` itself when TLS is off, else the same behind TLS."""
    if options is None:
        return factory
    from twisted.protocols.tls import TLSMemoryBIOFactory

    return TLSMemoryBIOFactory(options, False, factory)
