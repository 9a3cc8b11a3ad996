"""Server settings: one pydantic model, every field documented (the README's config reference is rendered from
these descriptions by `settings_reference_markdown`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# 0 = pick a free port, -1 = listener off.
Port = Annotated[int, Field(ge=-1, le=65535)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class OnnxSettings(_Section):
    intra_op_threads: int = Field(1, ge=0, description="ONNX Runtime threads inside one operator (0 = ORT default)")
    inter_op_threads: int = Field(1, ge=0, description="ONNX Runtime threads across operators (0 = ORT default)")


class AuthSettings(_Section):
    token_secret: str = Field("", description="HMAC secret for login tokens, checked on every transport (game "
                              "login, HTTP `Authorization: Bearer`, gRPC `authorization` metadata); empty needs "
                              "--insecure-dev")
    admin_token: str = Field("", description="bearer token for repository load/unload (empty = load/unload refused)")
    token_ttl_s: int = Field(3600, ge=1, description="default lifetime of tokens minted by `twinfer token`")


class TlsSettings(_Section):
    cert_file: Path | None = Field(None, description="PEM certificate (chain); set with key_file, TLS is on for the "
                                   "game protocol, HTTP and gRPC (the metrics port stays plain)")
    key_file: Path | None = Field(None, description="PEM private key of cert_file")
    client_ca_file: Path | None = Field(None, description="PEM CA bundle; set, clients must present a certificate "
                                        "it signed (mutual TLS)")


class Settings(_Section):
    host: str = Field("127.0.0.1", description="interface every listener binds (0.0.0.0 in containers)")
    tcp_port: Port = Field(9000, description="game protocol (TCP); 0 = any free port, -1 = off")
    udp_port: Port = Field(9001, description="stream datagrams (UDP)")
    http_port: Port = Field(8000, description="KServe v2 over HTTP")
    grpc_port: Port = Field(8001, description="KServe v2 over gRPC")
    metrics_port: Port = Field(8002, description="Prometheus metrics")
    model_repository: Path | None = Field(None, description="directory of models: <model>/<version>/model.onnx")
    ports_file: Path | None = Field(None, description="JSON file written atomically once every listener is up")
    workers: int = Field(1, ge=1, description="worker processes")
    config_server: str = Field("", description="config server URL; with service_group, settings come from it "
                               "(after the YAML file, before the environment)")
    service_group: str = Field("", description="the service group to pull from the config server")
    config_cache_dir: Path = Field(Path("~/.cache/twinfer"), description="where the last group config is kept, "
                                   "so the server starts when the config server is down")
    reuse_port: bool = Field(False, description="share listening ports with other processes (set for workers by "
                             "the supervisor)")
    worker_index: int = Field(-1, ge=-1, description="this worker's index under a supervisor (-1 = standalone)")
    worker_count: int = Field(1, ge=1, description="how many workers the supervisor runs (set by it for its workers)")
    worker_run_dir: Path | None = Field(None, description="the supervisor's private directory, where its workers "
                                        "answer each other for statistics and metrics (set by it)")
    worker_heartbeat_timeout_s: float = Field(
        10.0, ge=0, description="a worker whose reactor sends its supervisor no heartbeat for this long (a hung "
        "or stopped process) is killed and replaced; 0 = never")
    status_file: Path | None = Field(None, description="JSON status written every second (workers and "
                                     "supervisor); `twinfer status` reads the supervisor's")
    log_format: Literal["text", "json"] = Field("text", description="text, or JSON lines for log collectors")
    event_loop: Literal["auto", "uvloop", "asyncio"] = Field(
        "auto", description="the loop under the reactor: uvloop when installed (auto), or asyncio's own")
    log_level: Literal["debug", "info", "warn", "error"] = Field("info", description="lowest level logged")
    insecure_dev: bool = Field(False, description="allow running without a token secret (local development)")
    readiness: Literal["any", "strict"] = Field(
        "any", description="when /v2/health/ready (and gRPC ServerReady) says ready: `any` once a model serves, so "
        "one broken model does not take every pod out of service; `strict` (Triton's) only while every model not "
        "explicitly unloaded serves. Each model's own ready endpoint is exact either way")
    auth: AuthSettings = Field(default_factory=AuthSettings)
    onnx: OnnxSettings = Field(default_factory=OnnxSettings)
    tls: TlsSettings = Field(default_factory=TlsSettings)
    max_frame_bytes: int = Field(16 * 1024 * 1024, ge=64, le=1024**3,
                                 description="largest game-protocol body accepted; larger declared lengths close")
    max_http_body_bytes: int = Field(64 * 1024 * 1024, ge=1024, le=1024**3,
                                     description="largest HTTP request body (and gRPC message) accepted")
    max_request_elements: int = Field(16 * 1024 * 1024, ge=1, description="tensor elements one request may declare "
                                      "across its inputs (checked before anything is allocated)")
    max_json_body_bytes: int = Field(8 * 1024 * 1024, ge=1024, le=1024**3,
                                     description="largest KServe JSON body (JSON costs ~20x the CPU of binary "
                                     "tensors; send large tensors with the binary extension)")
    max_http_header_bytes: int = Field(64 * 1024, ge=1024, description="request line plus headers; larger gets 431")
    max_http_url_bytes: int = Field(8 * 1024, ge=256, description="request target; longer gets 414")
    max_buffered_body_bytes: int = Field(512 * 1024 * 1024, ge=1024, description="request bodies held at once "
                                         "across all HTTP connections of the process; past it, 503")
    header_timeout_s: float = Field(10.0, gt=0, description="an HTTP request's headers must arrive within this "
                                    "of its first byte")
    body_timeout_s: float = Field(60.0, gt=0, description="an HTTP body, or a game-protocol frame once its header "
                                  "arrived, must arrive within this")
    close_grace_s: float = Field(2.0, gt=0, description="a kicked connection that cannot flush its goodbye is "
                                 "aborted after this")
    max_inflight_per_session: int = Field(256, ge=1, description="requests one connection may have in flight")
    grpc_stream_max_inflight: int = Field(64, ge=1, description="requests one gRPC ModelStreamInfer may have in "
                                          "flight or answered but unread; reading stops past it")
    grpc_max_concurrent_streams: int = Field(1024, ge=1, description="concurrent gRPC calls per connection; past "
                                             "it HTTP/2 refuses the new stream (UNAVAILABLE, safe to retry)")
    grpc_server: Literal["twisted", "grpcio"] = Field(
        "twisted", description="what serves gRPC: `twisted`, twinfer's own HTTP/2 on the reactor "
        "(twinfer.grpc.native_server: half grpcio's CPU per call), or `grpcio`, grpcio's aio server")
    grpc_max_open_streams: int = Field(1024, ge=1, description="gRPC ModelStreamInfer calls open at once in one "
                                       "process; past it, a new one gets RESOURCE_EXHAUSTED")
    idle_timeout_s: float = Field(60.0, gt=0, description="close a connection silent this long (pings count)")
    login_timeout_s: float = Field(10.0, gt=0, description="with auth on, a connection must log in within this")
    advertised_host: str = Field("", description="UDP address told to stream clients (empty = host, or 127.0.0.1 "
                                 "when host is 0.0.0.0); in Kubernetes, the pod's reachable address")
    stream_heartbeat_timeout_s: float = Field(5.0, gt=0, description="close a stream silent this long (no frame, "
                                              "no heartbeat)")
    max_datagram_bytes: int = Field(65000, ge=128, le=65507, description="largest stream datagram accepted")
    max_streams: int = Field(1024, ge=1, description="streams open at once in one process")
    max_streams_per_session: int = Field(8, ge=1, description="streams one session may have open")
    max_partial_frame_bytes: int = Field(256 * 1024 * 1024, ge=1024, description="bytes held in partly "
                                         "reassembled stream frames across the process; past it, the oldest go")
    stream_frame_threads: int = Field(0, ge=0, le=256, description="threads that decode and track stream frames "
                                      "(CPU-bound work: 0 = one per core)")
    frame_deadline_s: float = Field(1.0, gt=0, description="a stream frame not complete this long after its first "
                                    "fragment is dropped (heartbeats do not extend it)")
    stream_receiver_networks: list[str] = Field(default_factory=list, description="CIDR networks stream results "
                                                "may go to besides the session's own address (broadcast only when "
                                                "listed), e.g. 10.0.0.0/8")
    stream_receivers: list[str] = Field(default_factory=list, description="receivers added to every stream, as "
                                        "KIND:HOST:PORT (vmc, livelink, native), e.g. vmc:127.0.0.1:39539")
    repository_poll_s: float = Field(2.0, ge=0, description="seconds between repository scans (0 = no hot reload)")
    drain_timeout_s: float = Field(10.0, ge=0, description="on SIGTERM, wait this long for requests in flight")


def _rows(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str, Any, str]]:
    rows = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows.extend(_rows(annotation, f"{prefix}{name}."))
            continue
        key = f"{prefix}{name}"
        env = "TWINFER_" + key.upper().replace(".", "__")
        rows.append((key, env, field.get_default(call_default_factory=True), field.description or ""))
    return rows


def settings_reference_markdown() -> str:
    """The config reference as a markdown table: key, environment variable, default, meaning."""
    lines = ["| key | environment | default | meaning |", "|---|---|---|---|"]
    for key, env, default, description in _rows(Settings):
        shown = "" if default is None else (str(default).lower() if isinstance(default, bool) else str(default))
        lines.append(f"| `{key}` | `{env}` | `{shown}` | {description} |")
    return "\n".join(lines)
