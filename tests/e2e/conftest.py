"""End-to-end fixtures: a real `twinfer serve` process on 127.0.0.1, ports from --ports-file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

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


def start_server(tmp_path: Path, repository: Path, *args: str, env: dict[str, str] | None = None) -> RunningServer:
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
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=full_env)
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

    def factory(repository: Path, *args: str, env: dict[str, str] | None = None) -> RunningServer:
        server = start_server(tmp_path, repository, *args, env=env)
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
