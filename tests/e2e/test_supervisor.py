"""`twinfer serve --workers 2`: shared ports, both workers serve, a killed worker is back fast and only its own
in-flight requests are lost, SIGTERM drains everything and exits 0."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request

import numpy as np
import pytest

from tests.e2e.conftest import wait_until
from tests.support import make_repository
from twinfer.client import Client

pytestmark = pytest.mark.e2e


def read_status(path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def test_two_workers_share_ports_survive_a_kill_and_drain(tmp_path, server_factory):
    server = server_factory(make_repository(tmp_path / "repo"), "--insecure-dev", "--workers", "2")
    assert server.ports["workers"] == 2 and len(server.ports["udp_workers"]) == 2
    status_file = next(tmp_path.glob("ports-*.json.status.json"), None) or wait_until(
        lambda: next(tmp_path.glob("ports-*.json.status.json"), None), what="status file")
    status = wait_until(lambda: (s := read_status(status_file)) and all(w["pid"] for w in s["workers"]) and s,
                        what="both workers in the status")
    pids = [w["pid"] for w in status["workers"]]

    workers_seen = set()
    for i in range(24):
        with Client("127.0.0.1", server.tcp) as client:
            workers_seen.add(client.login(f"user{i}").session_id.split("-")[0])
            out = client.infer("tiny", {"INPUT0": np.ones((1, 16), np.float32)})
            assert out["OUTPUT0"].shape == (1, 16)
    assert workers_seen == {"w0", "w1"}
    for _ in range(4):
        with urllib.request.urlopen(f"http://{server.http}/v2/health/ready", timeout=10) as response:
            assert response.status == 200

    run = subprocess.run(
        [sys.executable, "-m", "twinfer", "bot", "--target", f"127.0.0.1:{server.tcp}", "--model", "tiny",
         "--test", "failover", "--users", "8", "--duration", "5s", "--timeout", "2s",
         "--failover-command", f"kill -9 {pids[0]}", "--failover-at", "2s", "--json", str(tmp_path / "f.json")],
        capture_output=True, text=True, timeout=120, env={**os.environ, "ORT_DISABLE_TELEMETRY": "1"})
    assert run.returncode == 0, run.stdout + run.stderr
    failover = json.loads((tmp_path / "f.json").read_text())["failover"]
    assert failover["recovery_s"] is not None and failover["recovery_s"] < 1.0
    assert 1 <= failover["lost"] <= 8  # only what the killed worker had in flight (at most one per user)

    restarted = wait_until(lambda: (s := read_status(status_file)) and s["workers"][0]["restarts"] == 1
                           and s["workers"][0]["pid"] not in (None, pids[0]) and s, what="worker 0 restarted")
    assert restarted["workers"][1]["pid"] == pids[1] and restarted["workers"][1]["restarts"] == 0
    show = subprocess.run([sys.executable, "-m", "twinfer", "status", "--status-file", str(status_file)],
                          capture_output=True, text=True, timeout=60)
    assert show.returncode == 0 and str(pids[1]) in show.stdout

    assert server.stop() == 0
    for pid in [restarted["workers"][0]["pid"], pids[1]]:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    # #18 item 7: the status file outlives the supervisor; `twinfer status` must not list its workers as running.
    stale = subprocess.run([sys.executable, "-m", "twinfer", "status", "--status-file", str(status_file)],
                           capture_output=True, text=True, timeout=60)
    assert stale.returncode == 1 and "is not running" in stale.stderr, stale.stdout + stale.stderr
    assert str(pids[1]) not in stale.stdout and "worker" not in stale.stdout
