"""Issue #17 findings 4 and 5: workers die with their supervisor (SIGKILL of the supervisor, SIGTERM during its
start-up), and a worker that stops answering (SIGSTOP) is killed, replaced, logged and counted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.e2e.conftest import wait_until
from tests.support import make_repository

pytestmark = pytest.mark.e2e


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def read_status(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def status_of(tmp_path: Path) -> tuple[Path, dict]:
    path = wait_until(lambda: next(tmp_path.glob("ports-*.json.status.json"), None), what="status file")
    status = wait_until(lambda: (s := read_status(path)) and all(w["pid"] for w in s["workers"]) and s,
                        what="both workers in the status")
    return path, status


def kill_all(pids) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_workers_drain_and_exit_when_the_supervisor_is_killed(tmp_path, server_factory):
    """Finding 4: after a SIGKILL of the supervisor both workers stayed up, serving as orphans."""
    server = server_factory(make_repository(tmp_path / "repo"), "--insecure-dev", "--workers", "2")
    _, status = status_of(tmp_path)
    pids = [w["pid"] for w in status["workers"]]
    try:
        server.process.kill()
        server.process.wait(10)
        wait_until(lambda: not any(alive(p) for p in pids), timeout=30, what="both orphaned workers gone")
        log = server.log()
        # Each noticed it one way or the other (the pipe from the supervisor, or the kernel's PR_SET_PDEATHSIG
        # SIGTERM, whichever comes first) and drained to a clean stop.
        assert log.count("[twinfer.server.app#info] stopped") == 2, log
    finally:
        kill_all(pids)


def test_sigterm_during_start_up_waits_for_the_workers(tmp_path):
    """Finding 4: a SIGTERM while the workers were starting made the supervisor exit 0 with them still alive."""
    repo = make_repository(tmp_path / "repo")
    log = tmp_path / "supervisor.log"
    cmd = [sys.executable, "-m", "twinfer", "serve", "--model-repository", str(repo), "--insecure-dev",
           "--workers", "2", "--host", "127.0.0.1", "--tcp-port", "0", "--udp-port", "0", "--http-port", "0",
           "--grpc-port", "0", "--metrics-port", "0", "--ports-file", str(tmp_path / "ports.json")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWINFER_")}
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**env, "ORT_DISABLE_TELEMETRY": "1"})
    workers: list[int] = []
    try:
        workers = wait_until(lambda: len(c := children(proc.pid)) == 2 and c, timeout=30, interval=0.005,
                             what="two workers spawned")
        assert not (tmp_path / "ports.json").exists()  # still starting
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        still = [p for p in workers if alive(p)]
        assert still == [], f"workers {still} outlived their supervisor:\n{log.read_text()}"
    finally:
        if proc.poll() is None:
            proc.kill()
        kill_all(workers)


def test_a_stopped_worker_is_killed_replaced_logged_and_counted(tmp_path, server_factory):
    """Finding 5: with one worker SIGSTOPped, 22 of 40 new HTTP connections hung (the kernel still hands it its
    share of SO_REUSEPORT connections) and nothing noticed. Now its missing heartbeats get it killed and replaced."""
    server = server_factory(make_repository(tmp_path / "repo"), "--insecure-dev", "--workers", "2",
                            env={"TWINFER_WORKER_HEARTBEAT_TIMEOUT_S": "2"})
    status_file, status = status_of(tmp_path)
    pids = [w["pid"] for w in status["workers"]]
    try:
        os.kill(pids[0], signal.SIGSTOP)
        started = time.monotonic()
        replaced = wait_until(lambda: (s := read_status(status_file)) and s["workers"][0]["pid"] not in (None, pids[0])
                              and s, timeout=30, what="the stopped worker replaced")
        assert time.monotonic() - started < 10
        assert not alive(pids[0])
        assert replaced["workers"][0]["hung_kills"] == 1 and replaced["hung_kills"] == 1
        assert replaced["workers"][1]["pid"] == pids[1] and replaced["workers"][1]["hung_kills"] == 0
        assert "sent no heartbeat for" in server.log() and "killing it (SIGKILL)" in server.log()
        wait_until(lambda: read_status(status_file)["workers"][0]["sessions"] is not None, timeout=30,
                   what="the new worker serving")

        def get(_: int) -> int:
            with urllib.request.urlopen(f"http://{server.http}/v2/health/ready", timeout=5) as response:
                return response.status

        with ThreadPoolExecutor(8) as pool:
            assert list(pool.map(get, range(40))) == [200] * 40
        show = subprocess.run([sys.executable, "-m", "twinfer", "status", "--status-file", str(status_file)],
                              capture_output=True, text=True, timeout=60)
        assert show.returncode == 0 and "hung" in show.stdout
        assert server.stop() == 0
    finally:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
