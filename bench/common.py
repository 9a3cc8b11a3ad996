"""Bench helpers: a temporary demo repository, a server process on free ports, percentiles."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np


def percentiles_ms(latencies_s: list[float]) -> tuple[float, float]:
    if not latencies_s:
        return float("nan"), float("nan")
    a = np.asarray(latencies_s) * 1e3
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def grpc_closed_loop(url: str, model: str, concurrency: int, seconds: float) -> tuple[float, float, float]:
    """(infer/s, p50 ms, p99 ms) of `concurrency` back-to-back tritonclient.grpc.aio callers on one channel, each
    sending a [1, 16] FP32 INPUT0 (the tiny model's shape), after a 1 s warm-up."""
    import tritonclient.grpc.aio as g

    x = np.random.default_rng(1).standard_normal((1, 16)).astype(np.float32)

    async def worker(client, stop: float, latencies: list[float]) -> None:
        inp = g.InferInput("INPUT0", [1, 16], "FP32")
        inp.set_data_from_numpy(x)
        outputs = [g.InferRequestedOutput("OUTPUT0")]
        while time.perf_counter() < stop:
            t = time.perf_counter()
            await client.infer(model, [inp], outputs=outputs)
            latencies.append(time.perf_counter() - t)

    async def main() -> tuple[float, list[float]]:
        client = g.InferenceServerClient(url)
        await asyncio.gather(*[worker(client, time.perf_counter() + 1, []) for _ in range(concurrency)])
        latencies: list[float] = []
        t0 = time.perf_counter()
        await asyncio.gather(*[worker(client, t0 + seconds, latencies) for _ in range(concurrency)])
        elapsed = time.perf_counter() - t0
        await client.close()
        return elapsed, latencies

    elapsed, latencies = asyncio.run(main())
    return (len(latencies) / elapsed, *percentiles_ms(latencies))


@contextmanager
def demo_repository():
    from twinfer.demo_models import build_tiny

    with tempfile.TemporaryDirectory(prefix="twinfer-bench-") as tmp:
        repo = Path(tmp) / "repo"
        (repo / "tiny" / "1").mkdir(parents=True)
        build_tiny(repo / "tiny" / "1" / "model.onnx")
        yield repo


@contextmanager
def running_server(repository: Path, *args: str, timeout_s: float = 60.0):
    """Start `twinfer serve` on free ports; yield its ports; SIGTERM it afterwards."""
    with tempfile.TemporaryDirectory(prefix="twinfer-bench-run-") as tmp:
        ports_file = Path(tmp) / "ports.json"
        log_path = Path(tmp) / "server.log"
        cmd = [sys.executable, "-m", "twinfer", "serve", "--model-repository", str(repository),
               "--host", "127.0.0.1", "--tcp-port", "0", "--udp-port", "0", "--http-port", "0", "--grpc-port", "0",
               "--metrics-port", "0", "--ports-file", str(ports_file),
               "--insecure-dev", "--log-level", "warn", *args]
        env = {**os.environ, "ORT_DISABLE_TELEMETRY": "1"}
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + timeout_s
            while not ports_file.exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"server did not start:\n{log_path.read_text()}")
                time.sleep(0.05)
            yield json.loads(ports_file.read_text()), proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
