"""Builds a server from Settings, starts its listeners, and drains it on shutdown.

Start order: load the repository (so the first request finds its models), then listen, then write the ports file
(atomically, once every listener is up, so a script that waits for it can connect at once). Stop order: refuse new
inferences (UNAVAILABLE), let requests in flight finish (bounded by drain_timeout_s), close the streams (each owner
hears StreamClosed SERVER_DRAIN), say goodbye to sessions (requests still in flight get UNAVAILABLE, then Kicked),
close the listeners, unload the models.
"""

from __future__ import annotations

import asyncio
import gc
import os
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks, maybeDeferred
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger

from twinfer.backends import BackendOptions
from twinfer.config import Settings
from twinfer.errors import ConfigError, TwinferError
from twinfer.gc_policy import freeze_long_lived
from twinfer.http.body_budget import BodyBudget
from twinfer.http.connection import HttpFactory, RequestLimits
from twinfer.http.json_offload import ProcessDecoder
from twinfer.http.kserve_api import KServeHttpApi, MetricsOnly
from twinfer.inference.facade import InferenceFacade
from twinfer.inference.repository import ModelRepository
from twinfer.inference.threads import ReactorThreads
from twinfer.jsonfile import write_json_atomically
from twinfer.kserve.statistics import StatisticsReader
from twinfer.metrics import GroupExposition, build_registry, exposition
from twinfer.reuseport import listen_shared
from twinfer.server.commands import ServerContext, default_registry
from twinfer.server.connection import ConnectionLimits, GameServerFactory
from twinfer.server.sessions import SessionRegistry
from twinfer.server.worker_peers import WorkerPeers, metric_families_json
from twinfer.security.receivers import ReceiverPolicy
from twinfer.security.tls import server_tls_options, wrap_tls
from twinfer.security.tokens import Authenticator
from twinfer.streaming.endpoint import StreamEndpoint
from twinfer.streaming.manager import StreamManager, parse_receiver_spec
from twinfer.streaming.stream import Target

log = Logger()


def advertised_host(settings: Settings) -> str:
    if settings.advertised_host:
        return settings.advertised_host
    return "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host


def stream_receivers(settings: Settings) -> list[Target]:
    try:
        return [parse_receiver_spec(spec) for spec in settings.stream_receivers]
    except TwinferError as exc:
        raise ConfigError(f"config error: stream_receivers: {exc.message}") from None


def receiver_policy(settings: Settings) -> ReceiverPolicy:
    try:
        return ReceiverPolicy(settings.stream_receiver_networks)
    except ValueError as exc:
        raise ConfigError(f"config error: {exc}") from None


class TwinferServer:
    def __init__(self, settings: Settings, reactor: Any, reload_settings: Any = None) -> None:
        """`reload_settings(group_layer) -> Settings` re-layers the settings with a new service-group config."""
        self._reload_settings = reload_settings
        if settings.model_repository is None:
            raise ValueError("a model repository is required (--model-repository DIR)")
        self.settings = settings
        self.reactor = reactor
        self.repository = ModelRepository(
            Path(settings.model_repository),
            reactor,
            ReactorThreads(reactor),
            BackendOptions(settings.onnx.intra_op_threads, settings.onnx.inter_op_threads),
            settings.repository_poll_s,
        )
        self.facade = InferenceFacade(self.repository, settings.max_request_elements, settings.readiness)
        self.sessions = SessionRegistry()
        # Stream frames (decoding, face tracking) run on a few threads of their own, as many as there are cores:
        # the work is CPU-bound, and a handful of long-lived threads keep their caches and their per-thread LiteRT
        # interpreters warm, where the reactor's pool of 10 handed successive frames to whichever thread was free.
        frame_threads = settings.stream_frame_threads or os.cpu_count() or 2
        self.frame_threads = ReactorThreads(reactor).instance_pool("frames", frame_threads)
        self.streams = StreamManager(
            self.facade, reactor, self.frame_threads.run, advertised_host(settings),
            settings.stream_heartbeat_timeout_s, settings.max_datagram_bytes, settings.max_streams,
            stream_receivers(settings), settings.max_streams_per_session, settings.max_partial_frame_bytes,
            settings.frame_deadline_s, receiver_policy(settings),
        ) if settings.udp_port >= 0 else None
        self.context = ServerContext(self.facade, self.sessions, Authenticator(settings.auth.token_secret), reactor,
                                     self.streams)
        self.tcp_factory = GameServerFactory(
            self.context,
            default_registry(self.context),
            ConnectionLimits(
                max_frame_bytes=settings.max_frame_bytes,
                max_in_flight=settings.max_inflight_per_session,
                idle_timeout_s=settings.idle_timeout_s,
                login_timeout_s=settings.login_timeout_s,
                body_timeout_s=settings.body_timeout_s,
                close_grace_s=settings.close_grace_s,
            ),
        )
        self.metrics_registry = build_registry(self.facade, {
            "twinfer_sessions": lambda: len(self.sessions),
            "twinfer_sessions_logged_in": lambda: self.sessions.logged_in,
            "twinfer_http_connections": lambda: self.http_factory.connections,
            "twinfer_gc_frozen_objects": gc.get_freeze_count,
        }, self.streams)
        metrics = exposition(self.metrics_registry)
        self.statistics = StatisticsReader(self.facade)
        self.peers: WorkerPeers | None = None
        if settings.worker_run_dir is not None and settings.worker_count > 1 and settings.worker_index >= 0:
            # Under a supervisor: statistics and /metrics speak for every worker (twinfer.server.worker_peers).
            registry = self.metrics_registry
            self.peers = WorkerPeers(reactor, settings.worker_run_dir, settings.worker_index, settings.worker_count,
                                     {"stats": self.statistics.answer,
                                      "metrics": lambda: metric_families_json(registry.collect())})
            self.statistics.peers = self.peers
            metrics = GroupExposition(registry, self.peers)
        self.tls_options = server_tls_options(settings.tls)  # before listening: a bad file is one config error
        self.json_decoder = ProcessDecoder(reactor)
        http_limits = RequestLimits(settings.max_http_header_bytes, settings.max_http_url_bytes,
                                    settings.header_timeout_s, settings.body_timeout_s)
        body_budget = BodyBudget(settings.max_buffered_body_bytes, reactor)  # one for all HTTP listeners
        self.http_factory = HttpFactory(
            KServeHttpApi(self.facade, settings.auth.admin_token, metrics, auth=self.context.auth,
                          max_json_body_bytes=settings.max_json_body_bytes, decoder=self.json_decoder,
                          now=reactor.seconds, statistics=self.statistics),
            reactor, settings.max_http_body_bytes, settings.idle_timeout_s, limits=http_limits, budget=body_budget,
        )
        self.metrics_factory = HttpFactory(MetricsOnly(metrics), reactor, 1024, settings.idle_timeout_s,
                                           limits=http_limits, budget=body_budget)
        self.ports: dict[str, int] = {}
        self.group_version = 0  # the service-group version the settings came from
        self._watch_error: str | None = None  # the watch's last failure, logged once
        self._stopping = False
        self._listeners: list[Any] = []
        self._grpc_server: Any = None
        self._grpc_credentials: Any = None
        self.grpc_factory: Any = None
        self._grpc_tls: Any = None
        if settings.grpc_port >= 0 and settings.grpc_server == "grpcio":
            from twinfer.grpc.tls import server_credentials

            self._grpc_credentials = server_credentials(settings.tls)  # a bad TLS setting fails here, readably
        elif settings.grpc_port >= 0:
            self._grpc_tls = server_tls_options(settings.tls, alpn=[b"h2"])  # gRPC clients require ALPN h2
            self.grpc_factory = self._native_grpc(body_budget)

    def _native_grpc(self, budget: BodyBudget) -> Any:
        """gRPC on twinfer's own HTTP/2 (twinfer.grpc.native_server), TLS with ALPN h2 as gRPC clients require."""
        from twinfer.grpc.guard import CallGuard
        from twinfer.grpc.native_server import NativeGrpcServer
        from twinfer.grpc.service import KServeGrpcService
        from twinfer.grpc.streams import OpenStreamLimit
        from twinfer.http2.connection import Http2Factory
        from twinfer.security.tokens import AdminCheck

        s = self.settings
        service = KServeGrpcService(self.facade, s.grpc_stream_max_inflight, OpenStreamLimit(s.grpc_max_open_streams),
                                    self.statistics)
        guard = CallGuard(self.context.auth, AdminCheck(s.auth.admin_token))
        self.grpc_server = NativeGrpcServer(service, guard, self.reactor, budget,
                                            max_message_bytes=s.max_http_body_bytes, body_timeout_s=s.body_timeout_s,
                                            run_io=ReactorThreads(self.reactor).run_io)
        factory = Http2Factory(self.grpc_server.open_stream, self.reactor,
                               max_concurrent_streams=s.grpc_max_concurrent_streams,
                               max_header_bytes=s.max_http_header_bytes, idle_timeout_s=s.idle_timeout_s)
        self.grpc_factory = factory
        return factory

    def _endpoint(self, port: int):
        host = self.settings.host
        cls = TCP6ServerEndpoint if ":" in host else TCP4ServerEndpoint
        return cls(self.reactor, port, interface=host)

    @inlineCallbacks
    def start(self):
        if not self.context.auth.required:
            log.warn("AUTH DISABLED: no token secret is set (--insecure-dev); anyone can connect. Local use only.")
        yield self.repository.start()
        if self.peers is not None:
            self.peers.listen()
        for model in self.repository.models():
            log.info("model {name}: {state} versions={versions} {reason}", name=model.name, state=model.state,
                     versions=sorted(model.versions), reason=model.reason)
        for key, port_number, factory in (
            ("tcp", self.settings.tcp_port, wrap_tls(self.tcp_factory, self.tls_options)),
            ("http", self.settings.http_port, wrap_tls(self.http_factory, self.tls_options)),
            ("metrics", self.settings.metrics_port, self.metrics_factory),  # plain: bind it to an internal interface
            *((("grpc", self.settings.grpc_port, wrap_tls(self.grpc_factory, self._grpc_tls)),)
              if self.grpc_factory is not None else ()),
        ):
            if port_number >= 0 and self.settings.reuse_port:
                port = listen_shared(self.reactor, self.settings.host, port_number, factory)
                self._listeners.append(port)
                self.ports[key] = port.getHost().port
            elif port_number >= 0:
                port = yield self._endpoint(port_number).listen(factory)
                self._listeners.append(port)
                self.ports[key] = port.getHost().port
        if self.streams is not None:
            udp = self.reactor.listenUDP(self.settings.udp_port, StreamEndpoint(self.streams),
                                         interface=self.settings.host, maxPacketSize=65535)
            self._listeners.append(udp)
            self.ports["udp"] = udp.getHost().port
        if self.settings.grpc_port >= 0 and self.grpc_factory is None:
            from twinfer.grpc.service import start_grpc_server

            self._grpc_server, self.ports["grpc"] = yield Deferred.fromFuture(asyncio.ensure_future(
                start_grpc_server(self.facade, self.context.auth, self.settings, self._grpc_credentials,
                                  self.statistics)
            ))
        log.info("twinfer listening on {host}: {ports}", host=self.settings.host, ports=self.ports)
        freeze_long_lived("start-up")
        if self.settings.ports_file is not None:
            write_json_atomically(Path(self.settings.ports_file), self.ports)
        if self.settings.status_file is not None:
            self._status = LoopingCall(self._write_status)
            self._status.start(1.0)
        if self.settings.config_server and self.settings.service_group and self._reload_settings is not None:
            self.watch_group(self.group_version)

    # --- service-group configs applied at runtime ---------------------------------------------------------------

    def watch_group(self, version: int, delay_s: float = 0.0) -> None:
        """Long-poll the config server for versions newer than `version`; apply what is safe, refuse the rest.

        The watch never ends while the server runs: any failure (config server down, a bad or oversized document,
        an error applying it) is logged once, the same failure again is not, and the next try waits twice as long
        (1 s up to 60 s). Only a document whose settings were accepted is cached, so a restart never starts from
        one that was refused.
        """
        from twinfer.configserver.client import BadGroupDocument, cache_path, watch_once, write_cache

        s = self.settings
        d = ReactorThreads(self.reactor).run_io(watch_once, s.config_server, s.service_group, version, 25.0)

        def got(document: Any) -> None:
            if self._stopping:
                return
            if document is None:
                self.watch_group(version)
                return
            if document["version"] <= version:  # a server that answers the same version at once: no busy loop
                raise BadGroupDocument(f"version {document['version']} is not newer than {version}")
            _, refused = self.apply_group(document)
            if refused != ["(invalid)"]:
                write_cache(cache_path(s.config_cache_dir, s.service_group), document)
            self._watch_error = None
            self.watch_group(document["version"])

        def failed(failure: Any) -> None:
            if self._stopping:
                return
            error = failure.getErrorMessage() if failure.check(OSError, BadGroupDocument) else \
                f"{failure.type.__name__}: {failure.getErrorMessage()}"
            retry = min(max(delay_s * 2, 1.0), 60.0)
            if error != self._watch_error:
                self._watch_error = error
                log.warn("config server {url}: {error}; last good settings kept, retrying (backoff up to 60 s)",
                         url=s.config_server, error=error)
            self.reactor.callLater(retry, self.watch_group, version, retry)

        d.addCallback(got).addErrback(failed)

    def apply_group(self, document: dict[str, Any]) -> tuple[list[str], list[str]]:
        from twinfer.configserver.client import RUNTIME_SAFE

        label = f"service group {document.get('group')} v{document.get('version')}"
        try:
            new = self._reload_settings((label, document.get("settings") or {}))
        except ConfigError as exc:
            log.error("{label} refused: {error}", label=label, error=exc)
            return [], ["(invalid)"]
        changed = [k for k in type(new).model_fields if getattr(new, k) != getattr(self.settings, k)]
        applied = [k for k in changed if k in RUNTIME_SAFE]
        refused = [k for k in changed if k not in RUNTIME_SAFE]
        for key in applied:
            self._apply(key, getattr(new, key))
        self.settings = self.settings.model_copy(update={k: getattr(new, k) for k in applied})
        if applied:
            log.info("{label}: applied {keys}", label=label, keys=", ".join(applied))
        if refused:
            log.warn("{label}: {keys} changed but need a restart; not applied", label=label, keys=", ".join(refused))
        return applied, refused

    def _apply(self, key: str, value: Any) -> None:
        from dataclasses import replace

        from twinfer.logs import set_log_level

        limits = self.tcp_factory.limits
        if key == "log_level":
            set_log_level(value)
        elif key == "repository_poll_s":
            self.repository.set_poll_interval(value)
        elif key == "idle_timeout_s":
            self.tcp_factory.limits = replace(limits, idle_timeout_s=value)
            self.http_factory.idle_timeout_s = value
        elif key == "login_timeout_s":
            self.tcp_factory.limits = replace(limits, login_timeout_s=value)
        elif key == "max_inflight_per_session":
            self.tcp_factory.limits = replace(limits, max_in_flight=value)
        elif key == "stream_heartbeat_timeout_s" and self.streams is not None:
            self.streams.heartbeat_timeout_s = value
        elif key == "stream_receivers" and self.streams is not None:
            self.streams.default_targets = stream_receivers(self.settings.model_copy(update={key: value}))

    def _write_status(self) -> None:
        """What a supervisor shows in `twinfer status` for this worker."""
        write_json_atomically(Path(self.settings.status_file), {
            "pid": os.getpid(), "worker": self.settings.worker_index, "sessions": len(self.sessions),
            "logged_in": self.sessions.logged_in, "http_connections": self.http_factory.connections,
            "streams": len(self.streams.streams) if self.streams is not None else 0,
            "models_ready": sum(1 for m in self.repository.models() if m.versions), "ports": self.ports,
        })

    @inlineCallbacks
    def stop(self):
        """Graceful drain; safe to call once from the reactor's shutdown trigger."""
        self._stopping = True
        log.info("draining: refusing new inferences, waiting for requests in flight")
        drained = self.tcp_factory.drain()
        timeout = self.reactor.callLater(self.settings.drain_timeout_s, drained.cancel)
        try:
            yield drained
        except Exception:
            log.warn("drain timed out after {s} s; closing anyway", s=self.settings.drain_timeout_s)
        if timeout.active():
            timeout.cancel()
        if self.streams is not None:
            self.streams.stop("server shutting down")  # each owner hears StreamClosed before its Kicked
        self.frame_threads.stop(wait=False)  # frames already queued finish; their results are no longer sent
        self.tcp_factory.close_all("server shutting down")
        if self._grpc_server is not None:
            yield Deferred.fromFuture(asyncio.ensure_future(self._grpc_server.stop(1.0)))
        if self.grpc_factory is not None:  # GOAWAY: calls in flight finish (for up to 1 s, as grpcio's stop gave)
            self.grpc_factory.go_away_all()
            deadline = self.reactor.seconds() + 1.0
            while self.grpc_factory.connections and self.reactor.seconds() < deadline:
                yield deferLater(self.reactor, 0.02, lambda: None)
        yield DeferredList([maybeDeferred(p.stopListening) for p in self._listeners])
        if self.peers is not None:
            yield self.peers.stop_listening()
        self.json_decoder.stop()
        yield self.repository.stop()
        log.info("stopped")

