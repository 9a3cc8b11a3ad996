"""End-to-end fixtures: a real `twinfer serve` process on 127.0.0.1, ports from --ports-file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import pytest

START_TIMEOUT_S = 60.0


@dataclass
class RunningServer:
    process: subprocess.Popen
    ports: dict[str, int]
    log_path: Path

    @property
    def tcp(self) -> int:
        return self.ports["tcp"]

    @property
    def http(self) -> str:
        return f"127.0.0.1:{self.ports['http']}"

    @property
    def grpc(self) -> str:
        return f"127.0.0.1:{self.ports['grpc']}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)


def _address_space_limit(limit: int):
    """A preexec_fn: the server process may map at most `limit` bytes, so a test of a memory bound cannot take
    the machine down when the bound is broken (the server gets MemoryError instead)."""
    def apply() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return apply


def start_server(tmp_path: Path, repository: Path, *args: str, env: dict[str, str] | None = None,
                 max_address_space: int | None = None) -> RunningServer:
    """Start a server and wait (with a deadline, no sleeps racing it) for its ports file."""
    ports_file = tmp_path / f"ports-{time.monotonic_ns()}.json"
    log_path = tmp_path / f"server-{time.monotonic_ns()}.log"
    cmd = [
        sys.executable, "-m", "twinfer", "serve",
        "--model-repository", str(repository),
        "--host", "127.0.0.1", "--tcp-port", "0", "--udp-port", "0", "--http-port", "0", "--grpc-port", "0",
        "--metrics-port", "0",
        "--ports-file", str(ports_file),
        *args,
    ]
    full_env = {**os.environ, "ORT_DISABLE_TELEMETRY": "1", **(env or {})}
    full_env = {k: v for k, v in full_env.items() if not k.startswith("TWINFER_") or (env and k in env)}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=full_env,
                                   preexec_fn=_address_space_limit(max_address_space) if max_address_space else None)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not ports_file.exists():
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log_path.read_text()}")
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"server did not start in {START_TIMEOUT_S} s:\n{log_path.read_text()}")
        time.sleep(0.02)
    return RunningServer(process, json.loads(ports_file.read_text()), log_path)


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator:
    servers: list[RunningServer] = []

    def factory(repository: Path, *args: str, env: dict[str, str] | None = None,
                max_address_space: int | None = None) -> RunningServer:
        server = start_server(tmp_path, repository, *args, env=env, max_address_space=max_address_space)
        servers.append(server)
        return server

    yield factory
    for server in servers:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait(10)


def wait_until(predicate, timeout: float = 20.0, interval: float = 0.02, what: str = "condition"):
    """Poll with a deadline; returns the predicate's truthy value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class SteadyTraffic:
    """One real client sending `inputs` to `model` back to back from a thread while a test changes the server
    underneath: `served` holds `label(outputs)` of every answer, `errors` the first failure (the thread then
    stops), so "zero failed requests" is `errors == []`."""

    def __init__(self, port: int, model: str, inputs: dict, label) -> None:
        self.served: list = []
        self.errors: list[BaseException] = []
        self._port, self._model, self._inputs, self._label = port, model, inputs, label
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        from twinfer.client import Client

        with Client("127.0.0.1", self._port) as client:
            while not self._stop.is_set():
                try:
                    self.served.append(self._label(client.infer(self._model, self._inputs)))
                except BaseException as exc:  # noqa: BLE001 - every failure counts
                    self.errors.append(exc)
                    return

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(20)
