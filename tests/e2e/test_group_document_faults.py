"""Issue #17 findings 1 and 2: a fake config server serves a huge document, a versionless one and a JSON list to a
running server (under an address-space limit); the server refuses each, keeps its last good settings, keeps
watching, applies the next good version, caches only good documents, and restarts from that cache. A bad cache is
ignored, named in the one-line start error, instead of a KeyError traceback."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest

from tests.e2e.conftest import ATTACK_ADDRESS_SPACE, start_server, wait_until
from tests.support import make_repository
from twinfer.client import Client

pytestmark = pytest.mark.e2e
GROUP = "stage"
HUGE_BYTES = 400 * 1024 * 1024  # the old client read it whole (and cached it); the new one stops after 1 MiB


def document(version: int, **settings) -> bytes:
    return json.dumps({"group": GROUP, "version": version, "settings": settings}).encode()


class FakeConfigServer:
    """`current` answers a plain GET; each long poll (`?wait=`) takes the next scripted answer, or waits then 304s.
    An answer is bytes, or "huge": a valid-looking document streamed without Content-Length."""

    def __init__(self, current: bytes, script: list) -> None:
        self.current = current
        self.script = list(script)
        self.served: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *_: object) -> None:
                pass

            def do_GET(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                if "wait" not in query:
                    return self._send(fake.current)
                if not fake.script:
                    time.sleep(min(float(query["wait"][0]), 1.0))
                    self.send_response(304)
                    self.end_headers()
                    return None
                answer = fake.script.pop(0)
                fake.served.append("huge" if answer == "huge" else answer.decode()[:40])
                return self._stream_huge() if answer == "huge" else self._send(answer)

            def _send(self, body: bytes) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _stream_huge(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()  # no Content-Length: the client can only find out by reading
                chunk = b"A" * (1024 * 1024)
                try:
                    self.wfile.write(b'{"group": "stage", "version": 5, "settings": {"log_level": "debug", "x": "')
                    for _ in range(HUGE_BYTES // len(chunk)):
                        self.wfile.write(chunk)
                    self.wfile.write(b'"}}')
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeConfigServer:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
def servers(tmp_path) -> Iterator[list]:
    started: list = []
    yield started
    for server in started:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait(10)


def test_huge_versionless_and_list_documents_are_refused_and_the_watch_keeps_going(tmp_path, servers):
    """Findings 1 and 2: the huge document was read whole (165 MB -> 4.77 GB) and cached; the versionless one was
    applied as "vNone", cached, and killed the watch with a KeyError; the list raised TypeError."""
    repo = make_repository(tmp_path / "repo")
    cache_dir = tmp_path / "cache"
    env = {"TWINFER_CONFIG_CACHE_DIR": str(cache_dir)}
    script = ["huge", json.dumps({"group": GROUP, "settings": {"idle_timeout_s": 31}}).encode(), b"[1, 2, 3]",
              document(2, repository_poll_s=0, idle_timeout_s=32), *[document(2, repository_poll_s=0)] * 2]
    with FakeConfigServer(document(1, repository_poll_s=0, idle_timeout_s=30), script) as fake:
        server = start_server(tmp_path, repo, "--insecure-dev", "--config-server", fake.url, "--service-group",
                              GROUP, env=env, address_space=ATTACK_ADDRESS_SPACE)
        servers.append(server)
        baseline = rss_mb(server.process.pid)
        wait_until(lambda: "service group stage v2: applied idle_timeout_s" in server.log(), timeout=60,
                   what="the good v2 after three bad documents")
        wait_until(lambda: not fake.script, timeout=30, what="the same version answered twice more")
        wait_until(lambda: "version 2 is not newer than 2" in server.log(), what="a stale answer refused")
        log = server.log()
        assert fake.served[0] == "huge" and len(fake.served) == 6
        assert log.count("version 2 is not newer than 2") == 1  # logged once, retried with backoff, not re-applied
        assert log.count("service group stage v2: applied") == 1
        assert log.count("larger than 1048576 bytes; refused") == 1
        assert log.count("`version` must be a positive integer, got None") == 1
        assert log.count("expected a JSON object, got list") == 1
        assert "vNone" not in log and "v5" not in log and "KeyError" not in log and "Traceback" not in log
        assert rss_mb(server.process.pid) < baseline + 100  # nothing near the 400 MB body stayed
        cache = cache_dir / f"{GROUP}.json"
        assert cache.stat().st_size < 1024 and json.loads(cache.read_text())["version"] == 2
        with Client("127.0.0.1", server.tcp) as client:
            assert client.infer("tiny", {"INPUT0": np.ones((1, 16), np.float32)})["OUTPUT0"].shape == (1, 16)
        assert server.stop() == 0

    # The config server is gone: the restart comes up from the cached v2.
    again = start_server(tmp_path, repo, "--insecure-dev", "--config-server", fake.url, "--service-group", GROUP,
                         env=env)
    servers.append(again)
    assert "service group stage v2 from cached copy" in again.log()
    assert again.stop() == 0


@pytest.mark.parametrize("cached", [json.dumps({"group": GROUP, "settings": {}}), "[1, 2]", "{not json"])
def test_a_bad_cache_is_ignored_with_one_line(tmp_path, servers, cached):
    """Finding 2: with the config server down, a versionless cache made the start exit on KeyError (a list: on
    TypeError), with a traceback. Now the cache is ignored with one line and the start fails readably; with the
    config server up, the server starts from it and rewrites the cache."""
    repo = make_repository(tmp_path / "repo")
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    (cache_dir / f"{GROUP}.json").write_text(cached)
    env = {"TWINFER_CONFIG_CACHE_DIR": str(cache_dir)}
    with pytest.raises(RuntimeError) as info:  # nothing listens on port 9 (discard): the config server is down
        start_server(tmp_path, repo, "--insecure-dev", "--config-server", "http://127.0.0.1:9", "--service-group",
                     GROUP, env=env)
    output = str(info.value)
    assert "exited with 2" in output and output.count("the cached copy was ignored") == 1
    assert "Traceback" not in output and "KeyError" not in output and "TypeError" not in output

    with FakeConfigServer(document(3, repository_poll_s=0), []) as fake:
        server = start_server(tmp_path, repo, "--insecure-dev", "--config-server", fake.url, "--service-group",
                              GROUP, env=env)
        servers.append(server)
        assert "service group stage v3 from config server" in server.log()
        assert json.loads((cache_dir / f"{GROUP}.json").read_text())["version"] == 3
        assert server.stop() == 0
