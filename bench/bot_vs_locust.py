"""Requests per CPU-second of `twinfer bot` vs Locust (FastHttpUser) against the same twinfer HTTP endpoint, in
the same run: same server, same KServe v2 JSON body, same concurrency, same duration.

    .venv/bin/python bench/bot_vs_locust.py [--seconds 10] [--users 8]

Locust is installed into `.peers/locust` (its own venv: gevent does not belong in twinfer's). CPU is each load
tool's own user+system time (its whole process tree, start-up included), read with getrusage(RUSAGE_CHILDREN).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from bench.common import demo_repository, running_server  # noqa: E402
from bench.kserve import kserve_body  # noqa: E402

LOCUST_VENV = ROOT / ".peers" / "locust"
LOCUSTFILE = """
from locust import constant, task
from locust.contrib.fasthttp import FastHttpUser

BODY = {body!r}

class Infer(FastHttpUser):
    wait_time = constant(0)

    @task
    def infer(self):
        self.client.post("/v2/models/tiny/infer", data=BODY, headers={{"Content-Type": "application/json"}})
"""


def ensure_locust() -> Path:
    locust = LOCUST_VENV / "bin" / "locust"
    if not locust.exists():
        subprocess.run([sys.executable, "-m", "venv", str(LOCUST_VENV)], check=True)
        subprocess.run([str(LOCUST_VENV / "bin" / "pip"), "install", "-q", "locust"], check=True)
    return locust


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_locust(locust: Path, port: int, users: int, seconds: float) -> tuple[int, float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        lf = Path(tmp) / "locustfile.py"
        lf.write_text(LOCUSTFILE.format(body=kserve_body()))
        before = children_cpu()
        subprocess.run([str(locust), "-f", str(lf), "--headless", "-u", str(users), "-r", str(users * 10),
                        "-t", f"{int(seconds)}s", "--host", f"http://127.0.0.1:{port}", "--only-summary",
                        "--csv", str(Path(tmp) / "out")], check=True, capture_output=True)
        cpu = children_cpu() - before
        with open(Path(tmp) / "out_stats.csv") as f:
            row = next(r for r in csv.DictReader(f) if r["Name"] == "Aggregated")
        return int(row["Request Count"]), int(row["Failure Count"]), cpu


def run_bot(port: int, users: int, seconds: float) -> tuple[int, int, float]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bot.json"
        before = children_cpu()
        subprocess.run([sys.executable, "-m", "twinfer", "bot", "--target", f"127.0.0.1:{port}", "--protocol",
                        "http", "--model", "tiny", "--users", str(users), "--duration", f"{seconds:g}s",
                        "--json", str(out)], check=True, capture_output=True)
        cpu = children_cpu() - before
        summary = json.loads(out.read_text())
        return summary["ok"], summary["failed"], cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--users", type=int, default=8)
    args = parser.parse_args(argv)
    locust = ensure_locust()
    short = float(max(round(args.seconds / 3), 2))  # locust takes whole seconds
    tools = {"locust FastHttpUser": lambda port, secs: run_locust(locust, port, args.users, secs),
             "twinfer bot": lambda port, secs: run_bot(port, args.users, secs)}
    results = {}
    with demo_repository() as repo, running_server(repo) as (ports, _):
        for name, run in tools.items():
            results[name] = (run(ports["http"], short), run(ports["http"], args.seconds))
    print(f"HTTP KServe JSON infer on the tiny model, {args.users} users, runs of {short:g} s and {args.seconds:g} s; "
          "the server shares the 2 cores")
    print(f"{'tool':<22} {'requests':>10} {'failed':>7} {'cpu s':>7} {'req/s':>8} {'req/cpu-s':>10} "
          f"{'marginal req/cpu-s':>19}")
    marginal = {}
    for name, ((n_short, _, cpu_short), (count, failed, cpu)) in results.items():
        # The difference between the two runs leaves out start-up (imports, process spawn): the steady cost.
        marginal[name] = (count - n_short) / (cpu - cpu_short) if cpu > cpu_short else float("nan")
        print(f"{name:<22} {count:>10,} {failed:>7} {cpu:>7.2f} {count / args.seconds:>8,.0f} {count / cpu:>10,.0f} "
              f"{marginal[name]:>19,.0f}")
    whole = {name: r[1][0] / r[1][2] for name, r in results.items()}
    print(f"bot / locust, requests per CPU-second: {whole['twinfer bot'] / whole['locust FastHttpUser']:.2f}x whole "
          f"run, {marginal['twinfer bot'] / marginal['locust FastHttpUser']:.2f}x steady state")
    return 0


if __name__ == "__main__":
    sys.exit(main())
