"""One worker process or several (`--workers N`) next to Triton, in interleaved rounds (issue #20).

    .venv/bin/python bench/workers.py [--workers 2] [--rounds 3] [--loads http8,http32,grpc8,tcp]

twinfer runs one reactor per process: `--workers N` puts N processes behind the same ports (SO_REUSEPORT: the kernel
spreads connections, not requests, so a load needs several connections to use them). This runs the same loads on
twinfer with one worker, twinfer with N, and plain Triton 2.51 (bench/peers.py), all up together, each round
every system back to back with the first one rotating; the table shows medians. Loads: perf_analyzer HTTP or gRPC
at c=8 / c=32 on the tiny model (perf_analyzer's HTTP client opens a connection per concurrent request; its gRPC
client shares one channel, so gRPC cannot spread), and the game protocol pipelined (bench/tcp_tiny.py: 4
connections x 32 in flight). Server CPU: the process tree's, over the load's wall time (cores in use). Not part of
`make test`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import loads, peers  # noqa: E402
from bench.__main__ import _site_packages, build_models, face_dims  # noqa: E402
from bench.peers import tree_cpu_seconds  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def run_load(load: str, server: peers.Running) -> float:
    """Requests per second of one load against one server."""
    if load == "tcp":
        out = subprocess.run([sys.executable, str(ROOT / "bench" / "tcp_tiny.py"), "--port", str(server.tcp),
                              "--seconds", "8", "--json"], capture_output=True, text=True, cwd=ROOT, timeout=120)
        return float(json.loads(out.stdout.strip().splitlines()[-1])["tcp"][0])
    protocol, concurrency = load[:4], int(load[4:])  # "http8" -> ("http", 8)
    port = server.http if protocol == "http" else server.grpc
    rate, _, _ = loads.perf_analyzer(f"127.0.0.1:{port}", protocol, "tiny", concurrency, quick=False)
    return rate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--loads", default="http8,http32,grpc8,tcp")
    args = parser.parse_args(argv)
    load_names = args.loads.split(",")
    work = Path(tempfile.mkdtemp(prefix="twinfer-bench-workers-"))
    repo, tiny, face = build_models(work)
    systems = ["twinfer", f"twinfer --workers {args.workers}", "triton"]
    rates: dict[tuple[str, str], list[float]] = {}
    cores: dict[tuple[str, str], list[float]] = {}
    with contextlib.ExitStack() as stack:
        servers: dict[str, peers.Running] = {}
        for index, name in enumerate(systems):
            own = work / f"s{index}"
            own.mkdir()
            if name == "triton":
                triton_repo = peers.triton_repository(work / "triton_repo", tiny, face, face_dims(face),
                                                      _site_packages("triton"), False)
                servers[name] = stack.enter_context(peers.triton(triton_repo, own))
            else:
                extra = ("--workers", str(args.workers)) if "--workers" in name else ()
                servers[name] = stack.enter_context(peers.twinfer(repo, own, *extra))
        for round_index in range(args.rounds):
            shift = round_index % len(systems)
            for load in load_names:
                for name in systems[shift:] + systems[:shift]:
                    if load == "tcp" and name == "triton":
                        continue
                    server = servers[name]
                    cpu0, t0 = tree_cpu_seconds(server.pid), time.monotonic()
                    try:
                        rate = run_load(load, server)
                    except (peers.PeerError, subprocess.SubprocessError, ValueError, IndexError) as exc:
                        print(f"round {round_index + 1} {load} {name}: FAILED {exc}"[:300], flush=True)
                        continue
                    used = (tree_cpu_seconds(server.pid) - cpu0) / (time.monotonic() - t0)
                    rates.setdefault((load, name), []).append(rate)
                    cores.setdefault((load, name), []).append(used)
                    print(f"round {round_index + 1} {load:7s} {name:22s} {rate:9,.0f} req/s  server {used:4.2f} cores",
                          flush=True)
    print(f"\nmedians of {args.rounds} rounds, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
          "ratios to Triton at the same load (the game protocol: to Triton's HTTP at c=8)")
    for load in load_names:
        base = rates.get((load if load != "tcp" else "http8", "triton"))
        for name in systems:
            values = rates.get((load, name))
            if not values:
                continue
            rate = statistics.median(values)
            ratio = f"{rate / statistics.median(base):5.2f}x Triton" if base else ""
            print(f"{load:7s} {name:22s} {rate:9,.0f} req/s  {statistics.median(cores[(load, name)]):4.2f} cores  "
                  f"{ratio}  rounds {[round(v) for v in values]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
