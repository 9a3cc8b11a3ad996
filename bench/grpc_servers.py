"""twinfer's two gRPC servers next to Triton, perf_analyzer in interleaved rounds (issue #20).

    .venv/bin/python bench/grpc_servers.py [--concurrency 8,32] [--rounds 3] [--systems native,grpcio,triton+batching]
                                          [--protocols grpc]

- native: twinfer with `grpc_server: twisted` (its own HTTP/2, the default);
- grpcio: twinfer with `grpc_server: grpcio` (grpcio's aio server);
- triton / triton+batching: Triton 2.51 (bench/peers.py), plain or with dynamic batching.

All servers are up together; each round runs every system back to back, the first one rotating each round, and
the table shows medians. Server CPU a request = the server's process tree CPU (from /proc) over the model's
inference count from its own statistics endpoint, so the load tool's CPU and its warm-up are not in it. Not part
of `make test`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import loads, peers  # noqa: E402
from bench.__main__ import _site_packages, build_models, face_dims  # noqa: E402
from bench.peers import tree_cpu_seconds  # noqa: E402


def inference_count(server: peers.Running) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.http}/v2/models/tiny/stats", timeout=10) as response:
        stats = json.load(response)
    return sum(int(m["inference_count"]) for m in stats["model_stats"])


def start(name: str, work: Path, repo: Path, tiny: Path, face: Path, stack: contextlib.ExitStack) -> peers.Running:
    if name.startswith("triton"):
        triton_repo = peers.triton_repository(work / f"{name}_repo", tiny, face, face_dims(face),
                                              _site_packages("triton"), name == "triton+batching")
        return stack.enter_context(peers.triton(triton_repo, work))
    own = work / name
    own.mkdir()
    peers.ENV["TWINFER_GRPC_SERVER"] = "grpcio" if name == "grpcio" else "twisted"
    try:
        return stack.enter_context(peers.twinfer(repo, own))
    finally:
        peers.ENV.pop("TWINFER_GRPC_SERVER", None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", default="8,32")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--systems", default="native,grpcio,triton+batching")
    parser.add_argument("--protocols", default="grpc")
    args = parser.parse_args(argv)
    systems = args.systems.split(",")
    work = Path(tempfile.mkdtemp(prefix="twinfer-bench-grpc-"))
    repo, tiny, face = build_models(work)
    rates: dict[tuple[str, int, str], list[float]] = {}
    cpus: dict[tuple[str, int, str], list[float]] = {}
    with contextlib.ExitStack() as stack:
        servers = {name: start(name, work, repo, tiny, face, stack) for name in systems}
        for round_index in range(args.rounds):
            shift = round_index % len(systems)
            for protocol in args.protocols.split(","):
                for concurrency in (int(c) for c in args.concurrency.split(",")):
                    for name in systems[shift:] + systems[:shift]:
                        if protocol == "http" and name == "grpcio":
                            continue
                        server = servers[name]
                        port = server.grpc if protocol == "grpc" else server.http
                        count0, cpu0 = inference_count(server), tree_cpu_seconds(server.pid)
                        try:
                            rate, p50, p99 = loads.perf_analyzer(f"127.0.0.1:{port}", protocol, "tiny", concurrency,
                                                                 quick=False)
                        except peers.PeerError as exc:
                            print(f"round {round_index + 1} {protocol} c={concurrency} {name}: FAILED {exc}"[:300])
                            continue
                        cpu_us = (tree_cpu_seconds(server.pid) - cpu0) / max(1, inference_count(server) - count0) * 1e6
                        key = (protocol, concurrency, name)
                        rates.setdefault(key, []).append(rate)
                        cpus.setdefault(key, []).append(cpu_us)
                        print(f"round {round_index + 1} {protocol} c={concurrency:<3} {name:16s} {rate:8,.0f} infer/s "
                              f"p50 {p50:6.2f} p99 {p99:6.2f} ms  {cpu_us:5.0f} us server CPU/request", flush=True)
    print(f"\nmedians of {args.rounds} rounds, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    reference = "triton+batching" if "triton+batching" in systems else systems[-1]
    for key in sorted(rates):
        protocol, concurrency, name = key
        rate = statistics.median(rates[key])
        base = rates.get((protocol, concurrency, reference))
        ratio = f"{rate / statistics.median(base):.2f}x {reference}" if base else ""
        print(f"{protocol} c={concurrency:<3} {name:16s} {rate:8,.0f} infer/s  "
              f"{statistics.median(cpus[key]):5.0f} us CPU/req  {ratio}  rounds {[round(r) for r in rates[key]]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
