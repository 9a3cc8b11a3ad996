"""Run a server process: logging, reactor, signals, exit code. SIGTERM and SIGINT drain, then exit 0."""

from __future__ import annotations

import os
import re
import sys

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from twinfer.config import Settings
from twinfer.errors import ConfigError

log = Logger()


def install_asyncio_reactor(event_loop: str = "auto") -> None:
    """Twisted on asyncio, so grpcio's asyncio server shares the reactor's loop (no thread hop per call).

    uvloop when installed (`event_loop: auto`): measured with perf_analyzer at c=8 on the tiny model (2 cores,
    same run), HTTP 6,100 -> 7,060 infer/s (157 -> 142 us server CPU per request) and gRPC 2,640 -> 2,880
    (455 -> 410 us); the pure-Python selector loop is part of every request's cost. The reactor is
    `twinfer.server.reactor.TwinferReactor`: Twisted's asyncio reactor without its per-event logging context and
    with a direct callFromThread (its docstring has the numbers).
    """
    import asyncio

    from twinfer.server.reactor import install as install_reactor

    if "twisted.internet.reactor" not in sys.modules:
        loop = None
        if event_loop in ("auto", "uvloop"):
            try:
                import uvloop
            except ImportError:
                if event_loop == "uvloop":
                    raise ConfigError("event_loop: uvloop is not installed (pip install uvloop)") from None
            else:
                loop = uvloop.new_event_loop()
        loop = loop or asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        install_reactor(loop)


def run_server(settings: Settings, reload_settings=None, group_version: int = 0, group_source: str = "") -> int:
    # The supervisor moves no traffic but reaps its workers, and under uvloop Twisted stops seeing SIGCHLD for a
    # worker spawned after another one died (a restarted worker's exit was never reaped, so SIGTERM hung the
    # supervisor): it keeps asyncio's own loop. Workers take the configured one.
    install_asyncio_reactor("asyncio" if settings.workers > 1 else settings.event_loop)
    from twisted.internet import reactor

    from twinfer.logs import setup_logging
    from twinfer.server.app import TwinferServer

    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    if settings.model_repository is None:
        raise ConfigError("model_repository: required (--model-repository DIR)")
    check_repository_path(settings.model_repository)
    if not settings.auth.token_secret and not settings.insecure_dev:
        raise ConfigError(
            "auth.token_secret: empty; set TWINFER_AUTH__TOKEN_SECRET, or pass --insecure-dev for local use"
        )
    if settings.tls.cert_file is not None or settings.tls.key_file is not None:
        from twinfer.security.tls import server_tls_options

        server_tls_options(settings.tls)  # a bad file is one config error here, not one per worker
    setup_logging(settings.log_format, settings.log_level)
    if settings.workers > 1:
        from twinfer.supervisor import Supervisor

        return run_reactor(reactor, Supervisor(settings, reactor))
    from twinfer.server.sessions import set_worker_index

    set_worker_index(settings.worker_index)
    if group_source:
        log.info("service group {g} v{v} from {source}", g=settings.service_group, v=group_version,
                 source=group_source)
    server = TwinferServer(settings, reactor, reload_settings)
    server.group_version = group_version
    if settings.worker_index >= 0:
        _link_to_supervisor(reactor, settings)
    return run_reactor(reactor, server)


def _link_to_supervisor(reactor, settings: Settings) -> None:
    """Under a supervisor: drain when it dies, and send it heartbeats (see twinfer.worker_link)."""
    from twinfer.worker_link import SupervisorLink

    if not SupervisorLink.available():
        log.warn("worker_index is set but the supervisor's pipes are missing: no heartbeats, no parent watch")
        return
    SupervisorLink(reactor, settings.worker_heartbeat_timeout_s, lambda: _stop_reactor(reactor)).start()


def _stop_reactor(reactor) -> None:
    from twisted.internet.error import ReactorNotRunning

    try:
        reactor.stop()
    except ReactorNotRunning:  # already shutting down (a SIGTERM came first)
        pass


def check_repository_path(path: os.PathLike[str] | str) -> None:
    """Before any port opens: a missing repository, or a file given for it, is one line, not a start-up traceback."""
    from pathlib import Path

    path = Path(path)
    if not path.exists():
        raise ConfigError(f"model_repository: {path} does not exist (build the demo one with `make models`, or pass "
                          "--model-repository DIR)")
    if not path.is_dir():
        raise ConfigError(f"model_repository: {path} is a file; expected a directory of models")


def start_up_problem(failure) -> str | None:
    """The one line for a start-up failure the operator can fix (a port in use, a bad setting); None for a bug."""
    from twisted.internet.error import CannotListenError

    if failure.check(CannotListenError):
        exc = failure.value
        reason = getattr(exc.socketError, "strerror", None) or str(exc.socketError)
        return (f"cannot listen on {exc.interface or '0.0.0.0'}:{exc.port}: {reason.lower()} (is another server "
                "running? choose other ports with --tcp-port, --udp-port, --http-port, --grpc-port, --metrics-port)")
    if failure.check(ConfigError):
        return str(failure.value)
    bound = re.match(r"Failed to bind to address (\S+?);", str(failure.value)) if failure.check(RuntimeError) else None
    if bound:  # grpcio's way of saying the same
        return (f"cannot listen on {bound[1]} (gRPC): address in use or not available (is another server running? "
                "choose another port with --grpc-port)")
    return None


def run_reactor(reactor, server) -> int:
    """Start `server` (anything with start() and stop() returning Deferreds), run until a signal, stop cleanly.

    A signal during start-up stops the server too: one whose `stops_during_start` is true (the supervisor: its
    workers already run and must be drained, not orphaned) at once, any other once its start has settled, so
    nothing it opens after the signal is left behind.
    """
    exit_code = [0]
    starting: list[Deferred] = []

    def started_failed(failure):
        problem = start_up_problem(failure)
        if problem is None:
            log.failure("start-up failed", failure)
            exit_code[0] = 1
        else:
            print(f"twinfer: {problem}", file=sys.stderr, flush=True)
            exit_code[0] = 2
        _stop_reactor(reactor)

    def start() -> None:
        d = server.start()
        starting.append(d)
        d.addErrback(started_failed)

    def shutdown():
        if not starting:
            return None
        if getattr(server, "stops_during_start", False) or starting[0].called:
            return server.stop()
        settled: Deferred = Deferred()
        starting[0].addBoth(lambda result: (settled.callback(None), result)[1])
        return settled.addCallback(lambda _: server.stop())

    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown", shutdown)
    reactor.run()
    sys.stdout.flush()
    return exit_code[0]
