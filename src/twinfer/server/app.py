"""Builds a server from Settings, starts its listeners, and drains it on shutdown.

Start order: load the repository (so the first request finds its models), then listen, then write the ports file
(atomically, once every listener is up, so a script that waits for it can connect at once). Stop order: refuse new
inferences, let requests in flight finish (bounded by drain_timeout_s), say goodbye to sessions, close the
listeners, unload the models.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from twisted.internet.defer import DeferredList, inlineCallbacks, maybeDeferred
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint
from twisted.logger import Logger

from twinfer.backends import BackendOptions
from twinfer.config import Settings
from twinfer.inference.facade import InferenceFacade
from twinfer.inference.repository import ModelRepository
from twinfer.inference.threads import ReactorThreads
from twinfer.server.commands import ServerContext, default_registry
from twinfer.server.connection import ConnectionLimits, GameServerFactory
from twinfer.server.sessions import SessionRegistry
from twinfer.server.tokens import Authenticator

log = Logger()


def write_ports_file(path: Path, ports: dict[str, int]) -> None:
    """Write JSON atomically: readers see the old file or the whole new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        json.dump(ports, f)
    os.replace(tmp, path)


class TwinferServer:
    def __init__(self, settings: Settings, reactor: Any) -> None:
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
        self.facade = InferenceFacade(self.repository)
        self.sessions = SessionRegistry()
        self.context = ServerContext(self.facade, self.sessions, Authenticator(settings.auth.token_secret), reactor)
        self.tcp_factory = GameServerFactory(
            self.context,
            default_registry(self.context),
            ConnectionLimits(
                max_frame_bytes=settings.max_frame_bytes,
                max_in_flight=settings.max_inflight_per_session,
                idle_timeout_s=settings.idle_timeout_s,
                login_timeout_s=settings.login_timeout_s,
            ),
        )
        self.ports: dict[str, int] = {}
        self._listeners: list[Any] = []

    def _endpoint(self, port: int):
        host = self.settings.host
        cls = TCP6ServerEndpoint if ":" in host else TCP4ServerEndpoint
        return cls(self.reactor, port, interface=host)

    @inlineCallbacks
    def start(self):
        if not self.context.auth.required:
            log.warn("AUTH DISABLED: no token secret is set (--insecure-dev); anyone can connect. Local use only.")
        yield self.repository.start()
        for model in self.repository.models():
            log.info("model {name}: {state} versions={versions} {reason}", name=model.name, state=model.state,
                     versions=sorted(model.versions), reason=model.reason)
        if self.settings.tcp_port >= 0:
            port = yield self._endpoint(self.settings.tcp_port).listen(self.tcp_factory)
            self._listeners.append(port)
            self.ports["tcp"] = port.getHost().port
        log.info("twinfer listening on {host}: {ports}", host=self.settings.host, ports=self.ports)
        if self.settings.ports_file is not None:
            write_ports_file(Path(self.settings.ports_file), self.ports)

    @inlineCallbacks
    def stop(self):
        """Graceful drain; safe to call once from the reactor's shutdown trigger."""
        log.info("draining: refusing new inferences, waiting for requests in flight")
        drained = self.tcp_factory.drain()
        timeout = self.reactor.callLater(self.settings.drain_timeout_s, drained.cancel)
        try:
            yield drained
        except Exception:
            log.warn("drain timed out after {s} s; closing anyway", s=self.settings.drain_timeout_s)
        if timeout.active():
            timeout.cancel()
        self.tcp_factory.close_all("server shutting down")
        yield DeferredList([maybeDeferred(p.stopListening) for p in self._listeners])
        yield self.repository.stop()
        log.info("stopped")

