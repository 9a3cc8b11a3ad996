"""The config server and service groups: validated versioned writes, start from the server or from the cache
when it is down, runtime-safe changes applied live, unsafe ones refused until restart."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from tests.e2e.conftest import wait_until
from tests.support import build_matmul_relu
from twinfer.client import Client

pytestmark = pytest.mark.e2e
TOKEN = "write-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_config_server(tmp_path, port: int) -> subprocess.Popen:
    ports = tmp_path / f"cs-{time.monotonic_ns()}.json"
    proc = subprocess.Popen([sys.executable, "-m", "twinfer", "config-server", "--port", str(port), "--store",
                             str(tmp_path / "store"), "--ports-file", str(ports)],
                            env={**os.environ, "TWINFER_CONFIG_WRITE_TOKEN": TOKEN},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: ports.exists() or proc.poll() is not None, what="config server up")
    assert proc.poll() is None
    return proc


def put(port: int, group: str, settings: dict, token: str | None = TOKEN) -> tuple[int, dict]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/groups/{group}", method="PUT",
                                     data=json.dumps({"settings": settings}).encode(),
                                     headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def test_groups_are_validated_versioned_and_served_with_etags(tmp_path):
    port = free_port()
    proc = start_config_server(tmp_path, port)
    try:
        assert put(port, "stage", {"log_level": "warn"}, token=None)[0] == 403
        status, body = put(port, "stage", {"tcp_prot": 1})
        assert status == 400 and "tcp_prot: unknown key" in body["error"]
        assert put(port, "stage", {"log_level": "warn"}) == (201, {"group": "stage", "version": 1})
        assert put(port, "stage", {"log_level": "debug"})[1]["version"] == 2
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/groups/stage", timeout=10) as response:
            etag = response.headers["ETag"]
            assert json.loads(response.read()) == {"group": "stage", "version": 2, "settings": {"log_level": "debug"}}
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/v1/groups/stage",
                                                          headers={"If-None-Match": etag}), timeout=10)
        assert info.value.code == 304
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/groups/stage/versions", timeout=10) as response:
            assert json.loads(response.read()) == {"versions": [1, 2]}
        started = time.monotonic()
        with pytest.raises(urllib.error.HTTPError) as info:  # long poll with nothing new: 304 after the wait
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/groups/stage?version=2&wait=1", timeout=10)
        assert info.value.code == 304 and time.monotonic() - started >= 0.9
    finally:
        proc.kill()
        proc.wait(10)


def test_server_starts_from_cache_when_the_config_server_is_down_and_picks_up_changes_live(tmp_path,
                                                                                            server_factory):
    repo = tmp_path / "repo"
    build_matmul_relu(repo / "tiny" / "1" / "model.onnx", np.eye(16))
    port = free_port()
    config_server = start_config_server(tmp_path, port)
    url = f"http://127.0.0.1:{port}"
    cache = str(tmp_path / "cache")
    env = {"TWINFER_CONFIG_CACHE_DIR": cache}
    assert put(port, "stage", {"repository_poll_s": 0, "idle_timeout_s": 30})[0] == 201
    first = server_factory(repo, "--insecure-dev", "--config-server", url, "--service-group", "stage", env=env)
    assert "service group stage v1 from config server" in first.log()
    assert first.stop() == 0
    config_server.kill()
    config_server.wait(10)

    # Config server down: the server starts from its cached copy.
    server = server_factory(repo, "--insecure-dev", "--config-server", url, "--service-group", "stage", env=env)
    assert "from cached copy" in server.log()
    build_matmul_relu(repo / "tiny" / "2" / "model.onnx", 2 * np.eye(16))  # not seen: polling is off (v1)

    # The config server returns; a runtime-safe change is applied live, an unsafe one is refused.
    config_server = start_config_server(tmp_path, port)
    try:
        assert put(port, "stage", {"repository_poll_s": 0.1, "idle_timeout_s": 30, "max_frame_bytes": 4096})[0] == 201
        wait_until(lambda: "applied repository_poll_s" in server.log(), timeout=30, what="the change applied")
        assert "max_frame_bytes changed but need a restart" in server.log()
        with Client("127.0.0.1", server.tcp) as client:
            wait_until(lambda: client.models()[0].versions == ["2"], what="hot reload, now switched on")
    finally:
        config_server.kill()
        config_server.wait(10)
    assert server.stop() == 0
