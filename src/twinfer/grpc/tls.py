"""gRPC server credentials from the `tls` settings: off unless a certificate and key are given; with a client CA
bundle, clients must present a certificate it signed (mutual TLS).

grpcio takes PEM bytes: they come from `twinfer.security.tls.read_tls_files`, read once at start and checked the
same way as for the Twisted listeners, so a missing or unreadable file is a ConfigError naming the setting, not a
failure on the first handshake.
"""

from __future__ import annotations

import grpc

from twinfer.config.settings import TlsSettings
from twinfer.security.tls import read_tls_files


def server_credentials(tls: TlsSettings) -> grpc.ServerCredentials | None:
    """None when TLS is off (no certificate configured)."""
    files = read_tls_files(tls)
    if files is None:
        return None
    return grpc.ssl_server_credentials([(files.key, files.cert_chain)], root_certificates=files.client_ca,
                                       require_client_auth=files.client_ca is not None)
