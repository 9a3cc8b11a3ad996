"""RSS per idle logged-in game-protocol session in one twinfer worker: open N TCP connections that each log in
(a real session), hold them, read the server's RSS from /proc before and after.

    .venv/bin/python -m bench.idle_sessions [--sessions 10000] [--json]

The client is this process (non-blocking sockets, one login frame each); the server is a separate process. ulimit
-n must allow N descriptors on both sides (20,000 here).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import selectors
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import demo_repository, running_server  # noqa: E402
from twinfer.client.messages import build_login  # noqa: E402
from twinfer.protocol.framing import FrameDecoder  # noqa: E402


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def open_sessions(port: int, count: int, timeout_s: float = 120.0) -> list[socket.socket]:
    """Connect and log in `count` sessions; returns the sockets once every login has been answered."""
    selector = selectors.DefaultSelector()
    sockets, pending = [], {}
    login = build_login(1, "", "idle-bench")
    for _ in range(count):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        sockets.append(s)
        pending[s.fileno()] = (s, FrameDecoder(), bytearray(login))
        selector.register(s, selectors.EVENT_WRITE | selectors.EVENT_READ)
        if len(pending) % 500 == 0:  # let the server accept in steps: its listen backlog is finite
            _pump(selector, pending, deadline=time.monotonic() + 0.5, until=len(pending) - 250)
    _pump(selector, pending, deadline=time.monotonic() + timeout_s, until=0)
    if pending:
        raise RuntimeError(f"{len(pending)} of {count} sessions were not answered")
    selector.close()
    return sockets


def _pump(selector, pending, deadline: float, until: int) -> None:
    while len(pending) > until and time.monotonic() < deadline:
        for key, events in selector.select(0.2):
            s, decoder, out = pending.get(key.fd, (None, None, None))
            if s is None:
                continue
            if events & selectors.EVENT_WRITE and out:
                try:
                    del out[: s.send(out)]
                except BlockingIOError:
                    pass
                if not out:
                    selector.modify(s, selectors.EVENT_READ)
            if events & selectors.EVENT_READ:
                try:
                    data = s.recv(65536)
                except BlockingIOError:
                    continue
                if not data:
                    raise RuntimeError("the server closed a session")
                if list(decoder.feed(data)):
                    selector.unregister(s)
                    del pending[key.fd]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, args.sessions + 1000)), hard))
    os.environ["TWINFER_IDLE_TIMEOUT_S"] = "3600"  # idle is the point: the default 60 s would close them
    with demo_repository() as repo, running_server(repo) as (ports, proc):
        open_sessions(ports["tcp"], 50)  # warm the server's code paths, then measure from a settled state
        time.sleep(1.0)
        before = rss_kb(proc.pid)
        sockets = open_sessions(ports["tcp"], args.sessions)
        time.sleep(1.0)
        after = rss_kb(proc.pid)
        per_session = (after - before) * 1024 / args.sessions
        for s in sockets:
            s.close()
    print(f"{args.sessions} idle sessions: server RSS {before / 1024:.1f} -> {after / 1024:.1f} MiB, "
          f"{per_session / 1024:.2f} KiB per session")
    if args.json:
        print(json.dumps({"sessions": args.sessions, "rss_before_kb": before, "rss_after_kb": after,
                          "bytes_per_session": per_session}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
