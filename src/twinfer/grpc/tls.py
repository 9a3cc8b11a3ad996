"""gRPC server credentials from the `tls` settings: off unless a certificate and key are given; with a client CA
bundle, clients must present a certificate it signed (mutual TLS).

grpcio takes PEM bytes, so the files are read here, once at start; a missing or unreadable file is a ConfigError
naming the setting, not a failure on the first handshake.
"""

from __future__ import annotations

from pathlib import Path

import grpc

from twinfer.config.settings import TlsSettings
from twinfer.errors import ConfigError


def _read_pem(key: str, path: Path) -> bytes:
    try:
        data = Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise ConfigError(f"config error: tls.{key}: cannot read {path}: {exc.strerror}") from None
    if b"-----BEGIN " not in data:
        raise ConfigError(f"config error: tls.{key}: {path} is not a PEM file")
    return data


def server_credentials(tls: TlsSettings) -> grpc.ServerCredentials | None:
    """None when TLS is off (no certificate configured)."""
    if tls.cert_file is None and tls.key_file is None:
        if tls.client_ca_file is not None:
            raise ConfigError("config error: tls.client_ca_file needs tls.cert_file and tls.key_file")
        return None
    if tls.cert_file is None or tls.key_file is None:
        raise ConfigError("config error: tls.cert_file and tls.key_file must be set together")
    pair = (_read_pem("key_file", tls.key_file), _read_pem("cert_file", tls.cert_file))
    client_ca = _read_pem("client_ca_file", tls.client_ca_file) if tls.client_ca_file is not None else None
    return grpc.ssl_server_credentials([pair], root_certificates=client_ca, require_client_auth=client_ca is not None)
