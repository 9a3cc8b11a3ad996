"""HTTP under hostile load (issue #14): large JSON bodies do not stall a bystander (finding 6), and slow big bodies
are capped process-wide and their memory is given back (finding 13). Real server, real sockets."""

from __future__ import annotations

import select
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.bystander import measure
from tests.e2e.conftest import wait_until
from tests.support import make_repository

pytestmark = pytest.mark.e2e
MB = 1024 * 1024


def test_a_bystander_keeps_its_p99_while_large_json_bodies_arrive(tmp_path, server_factory):
    """Before: each 7 MB JSON body was parsed on the reactor (~66 ms), and the bystander's p99 went from 4.0 to
    143 ms (0.4 to 40 ms on a quieter machine). Now it is parsed in a child process, and beside back-to-back 7 MB
    JSON bodies the bystander's p99 stays within 2x of its p99 beside the same bytes sent as binary tensors (moving
    7 MB bodies over loopback on two cores shared with the sender costs any bystander ~1-2 ms at p99 by itself:
    measured quiet 0.3-0.6 ms, beside such traffic 1.5-2.5 ms, with or without JSON; the JSON parse must add no more
    than that again). The quiet p99 is reported too; the baseline is floored at 0.5 ms for scheduler noise."""
    server = server_factory(make_repository(tmp_path / "repo"), "--insecure-dev", "--tcp-port", "-1",
                            "--grpc-port", "-1")
    result = measure(server.http, 7_000_000, rounds=8, per_window=1000)
    print(result)
    assert result["large_statuses"] == [400]  # parsed, then refused by the model's shape check: not a 413
    assert result["large_answered"] >= 4
    assert result["binary_statuses"] == [400]
    assert result["loaded_p99_ms"] <= 2 * max(result["binary_p99_ms"], 0.5), result
    assert server.stop() == 0
    assert "Traceback" not in server.log()


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def answer_if_any(sock: socket.socket, wait: float = 0.0) -> bytes | None:
    ready, _, _ = select.select([sock], [], [], wait)
    if not ready:
        return None
    try:
        return sock.recv(65536) or b"closed"
    except OSError:
        return b"closed"


def test_slow_big_bodies_are_capped_across_connections_and_memory_comes_back(tmp_path, server_factory):
    """Before: ten slow 60 MB bodies were all buffered (972 MB peak) and 849 MB stayed held afterwards."""
    budget = 200 * MB
    server = server_factory(make_repository(tmp_path / "repo"), "--insecure-dev", "--tcp-port", "-1",
                            "--grpc-port", "-1", env={"TWINFER_MAX_BUFFERED_BODY_BYTES": str(budget)})
    pid = server.process.pid
    subprocess.run(["prlimit", f"--pid={pid}", "--as=3000000000"], check=True)  # a runaway cannot take the machine
    host, port = server.http.split(":")
    rss_start = rss_bytes(pid)
    body_size, step = 60 * MB, 2 * MB
    piece = b"x" * step
    socks = []
    for _ in range(10):
        sock = socket.create_connection((host, int(port)), timeout=30)
        sock.sendall(b"POST /v2/nothing HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % body_size)
        socks.append(sock)
    # a body that does not fit the budget is refused on its headers, before any of it is sent
    answers: dict[int, bytes] = {}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(answers) < 10 - budget // body_size:
        for i, sock in enumerate(socks):
            if i not in answers and (got := answer_if_any(sock, 0.01)) is not None:
                answers[i] = got
    sending = [i for i in range(10) if i not in answers]
    sent, peak = 0, rss_start
    while sent < body_size:  # slow clients: the bodies arrive side by side, a piece at a time
        for i in sending:
            socks[i].sendall(piece)
        sent += step
        peak = max(peak, rss_bytes(pid))
        time.sleep(0.01)
    for i in sending:
        answers[i] = answer_if_any(socks[i], 30) or b"none"
    refused = [a for a in answers.values() if a.startswith(b"HTTP/1.1 503")]
    served = [a for a in answers.values() if a.startswith(b"HTTP/1.1 404")]  # no such route, once the body was read
    assert len(served) == budget // body_size and len(refused) == 10 - len(served), answers
    assert peak - rss_start < budget + 60 * MB, (peak - rss_start) / MB
    for sock in socks:
        sock.close()
    # memory goes back: nothing of the bodies is kept once they are answered or their connections dropped
    try:
        wait_until(lambda: rss_bytes(pid) - rss_start < 40 * MB, timeout=15, what="RSS back near its start")
    finally:
        print(f"RSS start {rss_start / MB:.0f} MB, peak {peak / MB:.0f} MB, after {rss_bytes(pid) / MB:.0f} MB, "
              f"served {len(served)}, refused {len(refused)}")
    assert server.stop() == 0
