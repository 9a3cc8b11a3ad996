"""`twinfer serve --workers N`: N worker processes, each with its own reactor, behind shared ports.

TCP, HTTP, metrics and gRPC ports are shared with SO_REUSEPORT (the supervisor holds each number with a bound,
non-listening socket so port 0 resolves once for all workers); each worker owns its UDP port (base + index, or
its own free port when the base is 0) and advertises it to the streams it serves. A worker that dies is
restarted with backoff (0.1 s doubling to 5 s; reset once it has lived 10 s). SIGTERM is forwarded to every
worker, which drains; the supervisor exits 0 once they are gone, also when the SIGTERM comes during start-up.
Status (pids, uptime, restarts, hung workers killed, sessions) goes to a JSON file every second for `twinfer status`.

Each worker gets two pipes (twinfer.worker_link): one whose EOF tells it the supervisor died (it drains instead of
serving on as an orphan; PR_SET_PDEATHSIG as well on Linux), and one its reactor writes a heartbeat to. A worker
silent for worker_heartbeat_timeout_s (stopped, wedged; the kernel still hands it its share of SO_REUSEPORT
connections) is killed with SIGKILL, logged, counted, and restarted like any worker that died.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger

from twinfer.config import Settings
from twinfer.jsonfile import write_json_atomically
from twinfer.reuseport import reserve_port
from twinfer.worker_link import HEARTBEAT_FD, PARENT_FD, heartbeat_interval

log = Logger()
SHARED = ("tcp", "http", "metrics", "grpc")
MAX_BACKOFF_S = 5.0
HEALTHY_AFTER_S = 10.0
FIRST_HEARTBEAT_GRACE_S = 60.0  # imports and the service-group pull come before a worker's reactor runs


class _WorkerProtocol(ProcessProtocol):
    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.ended: Deferred[None] = Deferred()

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD == HEARTBEAT_FD:
            self.worker.last_beat = time.monotonic()

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(None)
        self.worker.ended(reason.value)


class Worker:
    def __init__(self, supervisor: Supervisor, index: int) -> None:
        self.supervisor = supervisor
        self.index = index
        self.restarts = 0
        self.fast_failures = 0
        self.started_at = 0.0
        self.last_beat: float | None = None
        self.hung_kills = 0
        self.killing = False
        self.process: Any = None
        self.last_pid: int | None = None
        self.protocol: _WorkerProtocol | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None and self.process.pid else None

    def start(self) -> None:
        s = self.supervisor
        self.protocol = _WorkerProtocol(self)
        args = [sys.executable, "-m", "twinfer", "serve", "--config", str(s.worker_config(self.index))]
        self.process = s.reactor.spawnProcess(self.protocol, sys.executable, args, env=s.worker_env,
                                              childFDs={0: "w", 1: 1, 2: 2, PARENT_FD: "w", HEARTBEAT_FD: "r"})
        self.started_at = time.monotonic()
        self.last_beat, self.killing = None, False
        self.last_pid = self.process.pid
        log.info("worker {i} started (pid {pid})", i=self.index, pid=self.process.pid)

    def ended(self, reason: Any) -> None:
        s = self.supervisor
        pid, self.last_pid = self.last_pid, None
        if s.stopping:
            return
        lived = time.monotonic() - self.started_at
        self.fast_failures = 0 if lived > HEALTHY_AFTER_S else self.fast_failures + 1
        delay = min(0.1 * 2 ** max(self.fast_failures - 1, 0), MAX_BACKOFF_S) if self.fast_failures else 0.0
        log.warn("worker {i} (pid {pid}) ended after {lived:.1f} s: {reason}; restarting in {d:.1f} s",
                 i=self.index, pid=pid, lived=lived, reason=reason, d=delay)
        self.restarts += 1
        s.reactor.callLater(delay, self._restart)

    def check_alive(self, timeout_s: float, now: float) -> None:
        """SIGKILL a worker whose reactor has been silent too long; processEnded then restarts it."""
        if self.pid is None or self.killing:
            return
        since = self.last_beat if self.last_beat is not None else self.started_at
        limit = timeout_s if self.last_beat is not None else timeout_s + FIRST_HEARTBEAT_GRACE_S
        if now - since <= limit:
            return
        self.killing = True
        self.hung_kills += 1
        log.error("worker {i} (pid {pid}) sent no heartbeat for {s:.1f} s (hung or stopped): killing it (SIGKILL) "
                  "and starting another; {n} hung worker(s) killed so far", i=self.index, pid=self.pid,
                  s=now - since, n=sum(w.hung_kills for w in self.supervisor.workers))
        self.terminate(signal.SIGKILL)

    def _restart(self) -> None:
        if not self.supervisor.stopping:
            self.start()

    def terminate(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.pid:
            try:
                self.process.signalProcess(sig)
            except Exception:  # noqa: BLE001 - already gone
                pass


class Supervisor:
    stops_during_start = True  # run_reactor: a SIGTERM during start-up drains the workers already started

    def __init__(self, settings: Settings, reactor: Any) -> None:
        self.settings = settings
        self.reactor = reactor
        self.stopping = False
        self.run_dir = Path(tempfile.mkdtemp(prefix="twinfer-workers-"))
        self._reserved: list[Any] = []
        self.ports: dict[str, int] = {}
        for key in SHARED:
            port = getattr(settings, f"{key}_port")
            if port >= 0:
                sock, number = reserve_port(settings.host, port)
                self._reserved.append(sock)
                self.ports[key] = number
        self.workers = [Worker(self, i) for i in range(settings.workers)]
        self.worker_env = {k: v for k, v in os.environ.items() if not k.upper().startswith("TWINFER_")}
        self.status_file = settings.status_file or (
            Path(f"{settings.ports_file}.status.json") if settings.ports_file else self.run_dir / "status.json")
        self._status = LoopingCall(self._write_status)
        self._liveness = LoopingCall(self._check_workers)

    def worker_config(self, index: int) -> Path:
        """The merged settings, as a YAML file each worker starts from (environment already applied)."""
        path = self.run_dir / f"worker-{index}.yaml"
        if not path.exists():
            data = self.settings.model_dump(mode="json")
            udp = self.settings.udp_port
            data.update(
                workers=1, reuse_port=True, worker_index=index, worker_count=len(self.workers),
                worker_run_dir=str(self.run_dir),
                udp_port=udp + index if udp > 0 else udp,
                ports_file=str(self.run_dir / f"worker-{index}.ports.json"),
                status_file=str(self.run_dir / f"worker-{index}.status.json"),
                **{f"{key}_port": number for key, number in self.ports.items()},
            )
            path.write_text(yaml.safe_dump(data))
        return path

    @inlineCallbacks
    def start(self):
        for worker in self.workers:
            worker.start()
        timeout = self.settings.worker_heartbeat_timeout_s
        if timeout > 0:
            self._liveness.clock = self.reactor
            self._liveness.start(heartbeat_interval(timeout), now=False)
        deadline = time.monotonic() + 120
        while not all((self.run_dir / f"worker-{w.index}.ports.json").exists() for w in self.workers):
            if self.stopping:
                return
            if time.monotonic() > deadline:
                raise RuntimeError("workers did not come up within 120 s")
            yield deferLater(self.reactor, 0.05, lambda: None)
        udp = [json.loads((self.run_dir / f"worker-{w.index}.ports.json").read_text()).get("udp")
               for w in self.workers]
        ports: dict[str, Any] = dict(self.ports)
        if udp[0] is not None:
            ports["udp"] = udp[0]
            ports["udp_workers"] = udp
        ports["workers"] = len(self.workers)
        if self.stopping:
            return
        self._status.start(1.0)
        log.info("supervisor: {n} workers listening on {host}: {ports}", n=len(self.workers),
                 host=self.settings.host, ports=ports)
        if self.settings.ports_file is not None:
            write_json_atomically(Path(self.settings.ports_file), ports)

    def status(self) -> dict[str, Any]:
        rows = []
        for w in self.workers:
            path = self.run_dir / f"worker-{w.index}.status.json"
            try:
                reported = json.loads(path.read_text())
            except (OSError, ValueError):
                reported = {}
            current = reported.get("pid") == w.pid
            rows.append({"worker": w.index, "pid": w.pid, "uptime_s": round(time.monotonic() - w.started_at, 1),
                         "restarts": w.restarts, "hung_kills": w.hung_kills,
                         "sessions": reported.get("sessions") if current else None,
                         "streams": reported.get("streams") if current else None,
                         "udp_port": (reported.get("ports") or {}).get("udp") if current else None})
        return {"supervisor_pid": os.getpid(), "ports": self.ports, "workers": rows,
                "hung_kills": sum(w.hung_kills for w in self.workers)}

    def _check_workers(self) -> None:
        if not self.stopping:
            now = time.monotonic()
            for w in self.workers:
                w.check_alive(self.settings.worker_heartbeat_timeout_s, now)

    def _write_status(self) -> None:
        write_json_atomically(Path(self.status_file), self.status())

    def stop(self) -> Deferred[Any]:
        """Forward SIGTERM; SIGKILL whoever is still draining after drain_timeout_s + 5 s."""
        self.stopping = True
        for loop in (self._status, self._liveness):
            if loop.running:
                loop.stop()
        waits = [w.protocol.ended for w in self.workers if w.protocol is not None and not w.protocol.ended.called]
        for w in self.workers:
            w.terminate()
        kill = self.reactor.callLater(self.settings.drain_timeout_s + 5, self._kill_all)
        done = DeferredList(waits)

        def finished(result: Any) -> Any:
            if kill.active():
                kill.cancel()
            for sock in self._reserved:
                sock.close()
            return result

        return done.addBoth(finished)

    def _kill_all(self) -> None:
        for w in self.workers:
            w.terminate(signal.SIGKILL)


def print_status(path: Path) -> int:
    try:
        status = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        print(f"twinfer status: cannot read {path}: {exc}", file=sys.stderr)
        return 1
    if not _process_alive(int(status["supervisor_pid"])):  # the file outlives the supervisor: list no workers
        print(f"twinfer status: the supervisor (pid {status['supervisor_pid']}) is not running; {path} is what it "
              "last wrote", file=sys.stderr)
        return 1
    print(f"supervisor pid {status['supervisor_pid']}, ports {status['ports']}")
    print(f"{'worker':>6} {'pid':>8} {'uptime s':>9} {'restarts':>8} {'hung':>4} {'sessions':>8} {'streams':>7} "
          f"{'udp':>6}")
    for w in status["workers"]:
        print(f"{w['worker']:>6} {w['pid'] or '-':>8} {w['uptime_s']:>9} {w['restarts']:>8} "
              f"{w.get('hung_kills', 0):>4} "
              f"{'-' if w['sessions'] is None else w['sessions']:>8} {'-' if w['streams'] is None else w['streams']:>7}"
              f" {w['udp_port'] or '-':>6}")
    return 0


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True
