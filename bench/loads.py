"""The load tools of the harness, each returning a Result: perf_analyzer 2.51 (Triton protocol, binary tensors),
wrk (HTTP + the KServe v2 JSON body of PEERS.md) and a closed-loop gRPC client (tritonclient.grpc.aio, PEERS.md's
v2grpc.py). Parsing is kept in small pure functions so it is unit-tested."""

from __future__ import annotations

import csv
import io
import json
import random
import re
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.peers import ENV, PeerError, setup_venv


@dataclass
class Result:
    system: str
    protocol: str
    tool: str
    concurrency: int
    infer_per_s: float
    p50_ms: float
    p99_ms: float
    batch: int = 1
    cpu_s_per_1k: float | None = None  # server process tree CPU seconds per 1,000 requests
    note: str = ""
    samples: list[float] = field(default_factory=list)  # infer/s of every round, when measured in rounds

    @property
    def rows_per_s(self) -> float:
        return self.infer_per_s * self.batch

    def as_dict(self) -> dict:
        return {**asdict(self), "rows_per_s": self.rows_per_s}


# --- perf_analyzer ----------------------------------------------------------------------------------------------

def parse_perf_analyzer_csv(text: str) -> tuple[float, float, float]:
    """(infer/s, p50 ms, p99 ms) from perf_analyzer's -f CSV (latencies in microseconds)."""
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows:
        raise ValueError("perf_analyzer wrote no result row")
    row = rows[-1]
    return float(row["Inferences/Second"]), float(row["p50 latency"]) / 1e3, float(row["p99 latency"]) / 1e3


def perf_analyzer(url: str, protocol: str, model: str, concurrency: int, quick: bool, batch: int = 1) -> tuple:
    venv = setup_venv("pa")
    site = next((venv / "lib").glob("python3*/site-packages"))
    env = {**ENV, "LD_LIBRARY_PATH": str(site / "nvidia" / "cuda_runtime" / "lib")}
    window = "1000" if quick else "3500"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "pa.csv"
        cmd = [str(venv / "bin" / "perf_analyzer"), "-m", model, "-i", protocol, "-u", url, "-b", str(batch),
               "--concurrency-range", str(concurrency), "-p", window, "-s", "25", "--max-trials",
               "3" if quick else "6", "-f", str(out)]
        result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
        if result.returncode != 0 or not out.exists():
            raise PeerError(f"perf_analyzer failed ({result.returncode}): {(result.stdout + result.stderr)[-800:]}")
        inferences, p50, p99 = parse_perf_analyzer_csv(out.read_text())
        return inferences / batch, p50, p99  # perf_analyzer counts rows ("inferences"); requests/s here


# --- wrk --------------------------------------------------------------------------------------------------------

def kserve_body() -> str:
    """PEERS.md's body: INPUT0 [1,16] from random.seed(1), rounded to 4 places."""
    rng = random.Random(1)
    data = [round(rng.uniform(-1, 1), 4) for _ in range(16)]
    return json.dumps({"inputs": [{"name": "INPUT0", "shape": [1, 16], "datatype": "FP32", "data": data}]},
                      separators=(",", ":"))


def triton_body() -> str:
    """Triton's Python backend cannot return JSON outputs for this model (PEERS.md): ask for a binary output."""
    body = json.loads(kserve_body())
    body["outputs"] = [{"name": "OUTPUT0", "parameters": {"binary_data": True}}]
    return json.dumps(body, separators=(",", ":"))


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def parse_wrk(out: str) -> tuple[float, float, float, int]:
    """(requests/s, p50 ms, p99 ms, non-2xx count) from `wrk --latency` output."""
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    # Anchored: "50%" also ends stdev columns like "75.50%" in the thread stats above the distribution.
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.MULTILINE).group(1)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.MULTILINE).group(1)
    return rate, _ms(p50), _ms(p99), int(non_2xx.group(1)) if non_2xx else 0


def wrk(url: str, concurrency: int, seconds: float, body: str) -> tuple[float, float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "v2.lua"
        script.write_text(f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                          f"wrk.body = [[{body}]]\n")
        subprocess.run(["wrk", "-t1", f"-c{concurrency}", "-d1s", "-s", str(script), url], capture_output=True,
                       timeout=60)  # warm-up
        out = subprocess.run(["wrk", "-t1", f"-c{concurrency}", f"-d{seconds:g}s", "--latency", "-s", str(script),
                              url], capture_output=True, text=True, timeout=seconds + 60).stdout
    rate, p50, p99, errors = parse_wrk(out)
    if errors:
        raise PeerError(f"wrk saw {errors} non-2xx responses at {url}")
    return rate, p50, p99


# --- gRPC closed loop -------------------------------------------------------------------------------------------

GRPC_CLIENT = '''
import asyncio, json, sys, time
import numpy as np
import tritonclient.grpc.aio as g
url, conc, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
x = np.random.default_rng(1).standard_normal((1, 16)).astype(np.float32)
async def worker(cli, stop, lat):
    i = g.InferInput("INPUT0", [1, 16], "FP32"); i.set_data_from_numpy(x)
    o = [g.InferRequestedOutput("OUTPUT0")]
    while time.perf_counter() < stop:
        t = time.perf_counter(); await cli.infer("tiny", [i], outputs=o)
        lat.append(time.perf_counter() - t)
async def main():
    cli = g.InferenceServerClient(url)
    await asyncio.gather(*[worker(cli, time.perf_counter() + 1, []) for _ in range(conc)])
    lat, t0 = [], time.perf_counter()
    await asyncio.gather(*[worker(cli, t0 + secs, lat) for _ in range(conc)])
    el = time.perf_counter() - t0; await cli.close(); a = np.array(lat) * 1e3
    print(json.dumps([len(a) / el, float(np.percentile(a, 50)), float(np.percentile(a, 99))]))
asyncio.run(main())
'''


def grpc_closed_loop(url: str, concurrency: int, seconds: float) -> tuple[float, float, float]:
    """PEERS.md's v2grpc.py, run in the perf_analyzer venv (tritonclient 2.51) as its own process."""
    venv = setup_venv("pa")
    result = subprocess.run([str(venv / "bin" / "python"), "-c", GRPC_CLIENT, url, str(concurrency), str(seconds)],
                            capture_output=True, text=True, env=ENV, timeout=seconds + 120)
    if result.returncode != 0:
        raise PeerError(f"gRPC client failed: {result.stderr[-800:]}")
    rate, p50, p99 = json.loads(result.stdout.strip().splitlines()[-1])
    return rate, p50, p99


def run_script(module: str, *args: str, timeout: float = 900) -> dict:
    """A bench script that prints a JSON line last (`--json`), run as its own process (each runs a reactor)."""
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run([sys.executable, "-m", module, *args, "--json"], capture_output=True, text=True,
                            env={**ENV, "PYTHONPATH": str(root)}, cwd=root, timeout=timeout)
    if result.returncode not in (0, 1) or not result.stdout.strip():
        raise PeerError(f"{module} failed ({result.returncode}): {(result.stdout + result.stderr)[-800:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])
