"""KServe v2 throughput and latency of twinfer over HTTP and gRPC, next to raw in-process ONNX Runtime.

    .venv/bin/python bench/kserve.py [--seconds 10] [--concurrency 8]

Same run, same machine, tiny model, batch 1 per request:
- raw ONNX Runtime: back-to-back `sess.run` on one thread (the ceiling);
- HTTP + JSON: `wrk -t1 -cC` with the KServe v2 body the peers were measured with (../shared/bench/PEERS.md),
  when wrk is installed (`apt-get install wrk`); otherwise a closed-loop tritonclient.http run;
- gRPC: a closed-loop `tritonclient.grpc.aio` client (PEERS.md's v2grpc.py).
Reference numbers for Triton 2.51 / MLServer 1.7.1 on this machine kind are in PEERS.md (wrk c=8: Triton 6,176,
MLServer 2,328 infer/s; gRPC-py c=8: Triton 4,273, MLServer 2,159). The load generator shares the two cores with
the server, so compare ratios measured in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from bench.common import demo_repository, grpc_closed_loop, percentiles_ms, running_server  # noqa: E402
from bench.tcp_tiny import raw_onnxruntime  # noqa: E402


def kserve_body() -> str:
    random.seed(1)
    data = [round(random.uniform(-1, 1), 4) for _ in range(16)]
    return json.dumps({"inputs": [{"name": "INPUT0", "shape": [1, 16], "datatype": "FP32", "data": data}]},
                      separators=(",", ":"))


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def http_wrk(port: int, seconds: float, concurrency: int) -> tuple[float, float, float, str]:
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "v2.lua"
        script.write_text(f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                          f"wrk.body = [[{kserve_body()}]]\n")
        url = f"http://127.0.0.1:{port}/v2/models/tiny/infer"
        subprocess.run(["wrk", "-t1", f"-c{concurrency}", "-d2s", "-s", str(script), url], capture_output=True)
        out = subprocess.run(["wrk", "-t1", f"-c{concurrency}", f"-d{seconds:g}s", "--latency", "-s", str(script),
                              url], capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in out:
        raise RuntimeError(f"wrk saw errors:\n{out}")
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    return rate, _ms(re.search(r"50%\s+(\S+)", out).group(1)), _ms(re.search(r"99%\s+(\S+)", out).group(1)), "wrk"


def http_tritonclient(port: int, seconds: float, concurrency: int) -> tuple[float, float, float, str]:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(f"127.0.0.1:{port}", concurrency=concurrency)
    x = np.random.default_rng(1).standard_normal((1, 16)).astype(np.float32)
    inp = httpclient.InferInput("INPUT0", [1, 16], "FP32")
    inp.set_data_from_numpy(x, binary_data=False)
    latencies: list[float] = []
    stop = time.perf_counter() + seconds
    in_flight = [(client.async_infer("tiny", [inp]), time.perf_counter()) for _ in range(concurrency)]
    t0 = time.perf_counter()
    while in_flight:
        pending, started = in_flight.pop(0)
        pending.get_result()
        latencies.append(time.perf_counter() - started)
        if time.perf_counter() < stop:
            in_flight.append((client.async_infer("tiny", [inp]), time.perf_counter()))
    elapsed = time.perf_counter() - t0
    p50, p99 = percentiles_ms(latencies)
    return len(latencies) / elapsed, p50, p99, "tritonclient.http"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args(argv)
    rows = []
    with demo_repository() as repo:
        raw_rate, raw_p50, raw_p99 = raw_onnxruntime(repo / "tiny" / "1" / "model.onnx", args.seconds)
        rows.append(("onnxruntime in-process (1 thread)", "loop", raw_rate, raw_p50, raw_p99))
        with running_server(repo) as (ports, _):
            http = http_wrk if shutil.which("wrk") else http_tritonclient
            rate, p50, p99, tool = http(ports["http"], args.seconds, args.concurrency)
            rows.append((f"twinfer HTTP+JSON c={args.concurrency}", tool, rate, p50, p99))
            rate, p50, p99 = grpc_closed_loop(f"127.0.0.1:{ports['grpc']}", "tiny", args.concurrency, args.seconds)
            tool = "tritonclient.grpc.aio"
            rows.append((f"twinfer gRPC c={args.concurrency}", tool, rate, p50, p99))
    print(f"tiny model, batch 1 per request, {args.seconds:g} s per row, {os.cpu_count()} cores")
    print(f"{'system':<36} {'tool':<22} {'infer/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'vs raw ORT':>10}")
    for name, tool, rate, p50, p99 in rows:
        print(f"{name:<36} {tool:<22} {rate:>10,.0f} {p50:>8.3f} {p99:>8.3f} {rate / raw_rate:>10.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
