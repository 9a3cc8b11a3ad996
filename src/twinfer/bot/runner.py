"""The coordinator: starts the worker processes, shows live progress, runs the failover command and samples the
server's memory, then merges every worker's HDR histograms exactly and judges the thresholds."""

from __future__ import annotations

import multiprocessing
import queue as queue_module
import re
import subprocess
import threading
import time
import urllib.request
from collections import defaultdict
from typing import Any

from rich.console import Console

from twinfer.bot.analysis import summarize
from twinfer.bot.recorder import Merged
from twinfer.bot.scenario import Scenario
from twinfer.bot.worker import worker_main

STARTUP_S = 3.0  # workers import and connect their reactors before the common start time


class StressWatch:
    """Judges each finished stress step live from the workers' per-second progress (p99 taken as the slowest
    worker's, so it errs towards stopping late, never early); the final knee comes from the exact merge."""

    def __init__(self, scenario: Scenario) -> None:
        from twinfer.bot.thresholds import parse_threshold
        from twinfer.bot.worker import rate_function

        self.scenario = scenario
        self.rate_at = lambda second: rate_function(scenario)(second)
        self.thresholds = [parse_threshold(t) for t in scenario.thresholds]

    def broken(self, second: int, live: dict[int, list[float]]) -> bool:
        step = self.scenario.stress.step
        if (second + 1) % step > 1e-9 and int((second + 1) / step) == int(second / step):
            return False  # judge only when a step's last second is in
        first = int(second / step) * step
        seconds = [s for s in range(int(first) + 1, second + 1) if s in live] or [second]
        ok = sum(live[s][0] for s in seconds if s in live)
        failed = sum(live[s][1] for s in seconds if s in live)
        window = {"rps": ok / len(seconds), "error_rate": failed / (ok + failed) if ok + failed else 0.0,
                  "latency_ms": defaultdict(float, {"p99": max(live[s][3] for s in seconds if s in live),
                                                    "p50": max(live[s][2] for s in seconds if s in live)})}
        met = all(t.check(window)[0] for t in self.thresholds if t.metric in ("p99", "p50", "error_rate", "rps"))
        return not met or window["rps"] < 0.9 * self.rate_at(second)


def sample_rss(url: str) -> float | None:
    try:
        text = urllib.request.urlopen(url, timeout=2).read().decode()
    except OSError:
        return None
    match = re.search(r"^process_resident_memory_bytes\s+([0-9.e+]+)", text, re.M)
    return float(match[1]) / 2**20 if match else None


def run(scenario: Scenario, console: Console | None = None) -> dict[str, Any]:
    console = console or Console(stderr=True)
    ctx = multiprocessing.get_context("spawn")
    results_queue = ctx.Queue()
    stop = ctx.Event()
    start_at = time.time() + STARTUP_S + scenario.warmup  # the measured start; workers warm up before it
    workers = [ctx.Process(target=worker_main, args=(scenario.model_dump_json(), i, scenario.processes, start_at,
                                                     results_queue, stop), daemon=True)
               for i in range(scenario.processes)]
    for w in workers:
        w.start()
    rss: list[tuple[float, float]] = []
    failover: dict[str, Any] = {}
    stop_sampling = threading.Event()

    def sampler() -> None:
        while not stop_sampling.wait(scenario.sample_every):
            value = sample_rss(scenario.metrics_url) if scenario.metrics_url else None
            if value is not None:
                rss.append((round(time.time() - start_at, 2), value))

    if scenario.metrics_url:
        threading.Thread(target=sampler, daemon=True).start()
    if scenario.test == "failover" and scenario.failover.command:
        def run_command() -> None:
            time.sleep(max(0.0, start_at + scenario.failover.at - time.time()))
            failover["command_at_s"] = round(time.time() - start_at, 3)
            done = subprocess.run(scenario.failover.command, shell=True, capture_output=True, text=True)
            failover["command_exit"] = done.returncode
            failover["command_done_s"] = round(time.time() - start_at, 3)

        threading.Thread(target=run_command, daemon=True).start()

    watch = StressWatch(scenario) if scenario.test == "stress" and scenario.thresholds else None
    merged = Merged()
    live: dict[int, list[float]] = defaultdict(lambda: [0, 0, 0.0, 0.0])
    shown = -1
    pending = set(range(scenario.processes))
    deadline = start_at + scenario.duration + scenario.timeout + 30 + (scenario.concurrency.connections / 50
                                                                        if scenario.test == "concurrency" else 0)
    while pending and time.time() < deadline:
        try:
            message = results_queue.get(timeout=0.5)
        except queue_module.Empty:
            if not any(w.is_alive() for w in workers):
                break
            continue
        if message[0] == "result":
            merged.add(message[2])
            pending.discard(message[1])
            continue
        _, _, second, ok, failed, p50, p99 = message
        row = live[second]
        row[0] += ok
        row[1] += failed
        row[2], row[3] = max(row[2], p50), max(row[3], p99)
        if second - 1 > shown and second - 1 in live:
            r = live[second - 1]
            console.print(f"[{second:4d}s] {r[0]:7.0f} ok/s {r[1]:5.0f} err/s  p50 {r[2]:6.2f} ms  p99 {r[3]:6.2f} ms")
            shown = second - 1
            if watch is not None and not stop.is_set() and watch.broken(second - 1, live):
                console.print(f"[{second:4d}s] stress: thresholds broke at {watch.rate_at(second - 1):,.0f}/s; "
                              "stopping")
                stop.set()
    stop_sampling.set()
    for w in workers:
        w.join(5)
        if w.is_alive():
            w.kill()
    if pending:
        merged.events.append((round(time.time() - start_at, 3), f"{len(pending)} worker(s) never reported"))
    return summarize(scenario, merged, rss, failover, missing_workers=len(pending))


def main_run(scenario: Scenario) -> int:
    from twinfer.bot.report import print_summary, write_html, write_json

    console = Console(stderr=True)
    summary = run(scenario, console)
    print_summary(summary, Console())
    if scenario.json_path:
        write_json(summary, scenario.json_path)
    if scenario.report:
        write_html(summary, scenario.report)
    return 0 if summary["passed"] else 1

