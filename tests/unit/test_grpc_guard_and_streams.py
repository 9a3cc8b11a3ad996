"""The gRPC front-end's pieces without a server: the call policy, stream backpressure, TLS configuration."""

from __future__ import annotations

import asyncio

import pytest
from tritonclient.grpc import service_pb2 as pb

from twinfer.config.settings import TlsSettings
from twinfer.errors import ConfigError, InvalidInput, Overloaded, PermissionDenied, Unauthenticated
from twinfer.grpc.guard import SERVICE, CallGuard, MalformedRequest
from twinfer.grpc.streams import OpenStreamLimit, stream_answers
from twinfer.grpc.tls import server_credentials
from twinfer.security.tokens import AdminCheck, Authenticator, TokenAuthority

NOW = 1_000_000.0


def guard(secret: str = "s", admin: str = "root") -> CallGuard:
    return CallGuard(Authenticator(secret), AdminCheck(admin), now=lambda: NOW)


def auth(value: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", value),)


def test_the_policy_per_method():
    token = TokenAuthority("s").issue("ann", int(NOW) + 60)
    g = guard()
    for method in ("ServerLive", "ServerReady"):
        g.check(SERVICE + method, ())  # probes: open
    for method in ("ModelInfer", "ModelStreamInfer", "ModelMetadata", "RepositoryIndex", "ModelStatistics",
                   "ServerMetadata", "ModelReady", "ModelConfig"):
        with pytest.raises(Unauthenticated):
            g.check(SERVICE + method, ())
        g.check(SERVICE + method, auth(f"Bearer {token}"))
    with pytest.raises(Unauthenticated, match="expired"):
        CallGuard(Authenticator("s"), AdminCheck("root"), now=lambda: NOW + 61).check(
            SERVICE + "ModelInfer", auth(f"Bearer {token}"))
    for header in ((), auth(f"Bearer {token}"), auth("Bearer rooty")):
        with pytest.raises(PermissionDenied):
            g.check(SERVICE + "RepositoryModelLoad", header)
    g.check(SERVICE + "RepositoryModelUnload", auth("Bearer root"))
    with pytest.raises(PermissionDenied, match="no admin token is configured"):
        guard(secret="", admin="").check(SERVICE + "RepositoryModelLoad", auth("Bearer "))
    guard(secret="").check(SERVICE + "ModelInfer", ())  # insecure dev mode: no token needed


class Requests:
    """An endless client: counts how many requests the server has pulled."""

    def __init__(self, limit: int = 10**9) -> None:
        self.pulled = 0
        self.limit = limit

    def __aiter__(self):
        return self

    async def __anext__(self):
        if self.pulled >= self.limit:
            raise StopAsyncIteration
        self.pulled += 1
        if self.pulled == 3:
            return MalformedRequest("request is not a valid protobuf message (DecodeError)")
        return pb.ModelInferRequest(id=str(self.pulled), model_name="m")


async def echo(request: pb.ModelInferRequest):
    if request.model_name == "bad":
        raise InvalidInput("bad input")
    yield pb.ModelStreamInferResponse(infer_response=pb.ModelInferResponse(id=request.id))


async def settle() -> None:
    for _ in range(50):
        await asyncio.sleep(0)


def test_a_stream_stops_reading_while_max_inflight_answers_wait_unsent():
    async def run() -> None:
        requests = Requests()
        answers = stream_answers(requests, echo, max_inflight=4)
        first = await answers.__anext__()  # the consumer takes one answer, then stops reading
        await settle()
        assert first.infer_response.id == "1"
        # 4 slots; the taken answer keeps its slot until the consumer comes back (grpcio: until its send is done)
        assert requests.pulled == 4
        taken = [await answers.__anext__() for _ in range(3)]
        await settle()
        assert requests.pulled == 7
        assert [a.infer_response.id or a.error_message for a in taken] == [
            "2", "request is not a valid protobuf message (DecodeError)", "4"]
        await answers.aclose()

    asyncio.run(run())


def test_a_finite_stream_answers_everything_then_ends():
    async def run() -> list[str]:
        return [a.infer_response.id async for a in stream_answers(Requests(limit=20), echo, max_inflight=2)]

    ids = asyncio.run(run())
    assert sorted(ids, key=lambda i: int(i) if i else 3) == [str(i) if i != 3 else "" for i in range(1, 21)]


def test_the_open_stream_cap_is_typed_and_names_its_setting():
    limit = OpenStreamLimit(2)
    limit.enter()
    limit.enter()
    with pytest.raises(Overloaded, match="grpc_max_open_streams"):
        limit.enter()
    limit.leave()
    limit.enter()


def test_tls_settings_are_checked_before_the_server_starts(tmp_path):
    assert server_credentials(TlsSettings()) is None
    pem = tmp_path / "x.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n")
    import trustme

    real = tmp_path / "real.pem"
    trustme.CA().issue_cert("localhost").cert_chain_pems[0].write_to_path(str(real))
    cases = [
        (TlsSettings(cert_file=pem), "must be set together"),
        (TlsSettings(client_ca_file=pem), "needs tls.cert_file"),
        (TlsSettings(cert_file=real, key_file=tmp_path / "missing.pem"), "tls.key_file: cannot read"),
        (TlsSettings(cert_file=pem, key_file=real), "tls.cert_file: .* holds no PEM certificate"),
    ]
    (tmp_path / "text.pem").write_text("not a certificate")
    cases.append((TlsSettings(cert_file=tmp_path / "text.pem", key_file=pem), "tls.cert_file: .* no PEM"))
    for tls, message in cases:
        with pytest.raises(ConfigError, match=message):
            server_credentials(tls)


def test_malformed_bytes_become_a_marker_not_an_exception():
    from twinfer.grpc.guard import _tolerant

    deserialize = _tolerant(pb.ModelInferRequest.FromString)
    assert isinstance(deserialize(b"\xff\xff\xff"), MalformedRequest)
    assert deserialize(pb.ModelInferRequest(id="7").SerializeToString()).id == "7"
