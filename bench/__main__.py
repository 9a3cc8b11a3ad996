"""`python -m bench all` (or `make bench`): twinfer next to raw ONNX Runtime, Triton, MLServer and LitServe, in one
run on one machine, with the same models and the same load tools; results in bench/results/<date>.md and .json.

    python -m bench [all|raw|kserve|face|tcp|streams|idle ...] [--quick] [--out DIR]

Suites:
- raw:     in-process ONNX Runtime, one thread: tiny at batch 1 and 64, the face CNN at batch 1 and 8 (the ceiling).
- kserve:  tiny, batch 1: perf_analyzer (HTTP, gRPC; c = 1, 8, 32) on twinfer and Triton (plain and with
           dynamic batching); wrk (HTTP+JSON) on all four servers; a closed-loop gRPC client on twinfer, Triton
           and MLServer (perf_analyzer's Triton mode cannot drive MLServer or LitServe: PEERS.md).
- face:    the face CNN at batch 8 through perf_analyzer (c=4: enough in flight to keep one instance busy) on
           twinfer and Triton, rows/s vs raw ORT at batch 8.
- tcp:     the game protocol, pipelined with dynamic batching (bench/tcp_tiny.py), vs Triton HTTP (PA, c=8).
- streams: concurrent 60 fps face streams with p99 < 16.7 ms (bench/streams.py) vs the raw compute limit.
- idle:    RSS per idle logged-in session over 10,000 sessions in one worker (bench/idle_sessions.py).
A system that cannot be set up or started is reported with its error in the results, never skipped silently.

kserve, face and tcp share one set of servers, all started first: each load runs on every system back to back, and
the loads the targets use (c=8, face batch 8, tcp) run in 3 rounds (rotating which system goes first) and report
the median round. On this shared 2-core machine throughput drifts by 10-20 % over minutes; measuring one system's
whole suite after another's had moved a ratio from 1.17x to 0.92x between two runs.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from bench import loads, peers  # noqa: E402
from bench.loads import Result  # noqa: E402
from bench.report import targets, write_results  # noqa: E402

SUITES = ("raw", "kserve", "face", "tcp", "streams", "idle")
WORKERS = 2
SCALED = f"twinfer --workers {WORKERS}"  # the same server scaled out on this machine's cores (README: Scale-out)


class Run:
    """What one `python -m bench` invocation measured, plus every failure with its reason."""

    def __init__(self, quick: bool, work: Path, rounds: int | None = None) -> None:
        self.quick = quick
        self.work = work
        self.results: list[Result] = []
        self.raw: dict[str, float] = {}
        self.extra: dict[str, dict] = {}
        self.failures: list[dict[str, str]] = []
        self.seconds = 3.0 if quick else 10.0
        self.concurrencies = (8,) if quick else (1, 8, 32)
        self.rounds = rounds or (1 if quick else 3)

    def attempt(self, what: str, action: Callable[[], None]) -> None:
        started = time.monotonic()
        print(f"- {what} ...", flush=True)
        try:
            action()
        except Exception as exc:  # every failure is reported, then the run goes on
            detail = str(exc) if isinstance(exc, peers.PeerError) else traceback.format_exc(limit=3)
            self.failures.append({"what": what, "error": detail.strip()[-1500:]})
            print(f"  FAILED: {detail.strip().splitlines()[0] if detail.strip() else exc!r}", flush=True)
        print(f"  ({time.monotonic() - started:.0f} s)", flush=True)

    def add(self, result: Result, keep: bool = False) -> None:
        """Print a measurement; `keep` records it (interleaved cells record only their median)."""
        if keep:
            self.results.append(result)
        cpu = f", server {result.cpu_s_per_1k:.3f} CPU-s/1k" if result.cpu_s_per_1k is not None else ""
        print(f"  {result.system:<18} {result.protocol:<5} {result.tool:<14} b={result.batch:<2} c={result.concurrency:<3}"
              f" {result.infer_per_s:>9,.0f} infer/s  p50 {result.p50_ms:6.2f} ms  p99 {result.p99_ms:6.2f} ms{cpu}",
              flush=True)


@dataclass
class Cell:
    """One load on one system. Cells of the same load on different systems run back to back, and target cells
    once per round, so machine drift over the run cannot favour whichever system happened to run first."""

    system: str
    server: peers.Running
    protocol: str
    tool: str
    concurrency: int
    call: Callable[[], tuple]
    batch: int = 1
    note: str = ""
    samples: list[Result] = field(default_factory=list)

    @property
    def load(self) -> tuple:
        return self.protocol, self.tool, self.concurrency, self.batch

    @property
    def is_target(self) -> bool:
        """The loads the issue's targets are computed from: measured every round, reported as the median."""
        return self.concurrency == 8 or self.batch == 8 or self.tool == "tcp_tiny"

    def measure(self) -> Result:
        """Run the load once, with the server's CPU over the same interval (or the tool's own measured window)."""
        cpu0, t0 = peers.tree_cpu_seconds(self.server.pid), time.monotonic()
        out = self.call()
        cpu, wall = peers.tree_cpu_seconds(self.server.pid) - cpu0, time.monotonic() - t0
        rate, p50, p99 = out[:3]
        if len(out) > 3 and out[3] is not None:  # (cpu seconds, seconds) measured by the tool itself
            cpu, wall = out[3]
        result = Result(self.system, self.protocol, self.tool, self.concurrency, rate, p50, p99, self.batch,
                        cpu_s_per_1k=1000 * cpu / max(rate * wall, 1), note=self.note)
        self.samples.append(result)
        return result

    def reported(self) -> Result | None:
        """The median sample by throughput (a real measurement, not an average), with the spread in its note."""
        if not self.samples:
            return None
        ordered = sorted(self.samples, key=lambda r: r.infer_per_s)
        median = ordered[(len(ordered) - 1) // 2]
        if len(ordered) > 1:
            spread = f"median of {len(ordered)} interleaved rounds ({ordered[0].infer_per_s:,.0f}-" \
                     f"{ordered[-1].infer_per_s:,.0f} infer/s)"
            median.note = f"{median.note}; {spread}" if median.note else spread
            median.samples = [r.infer_per_s for r in self.samples]
        return median


def measure_interleaved(run: Run, cells: list[Cell]) -> None:
    """Round 1 measures every cell; rounds 2..n only the target cells. Within a round, the systems of each load run
    back to back, in an order rotated every round."""
    loads_in_order: dict[tuple, list[Cell]] = {}
    for cell in cells:
        loads_in_order.setdefault(cell.load, []).append(cell)
    for round_index in range(run.rounds):
        for same_load in loads_in_order.values():
            if round_index and not same_load[0].is_target:
                continue
            shift = round_index % len(same_load)
            for cell in same_load[shift:] + same_load[:shift]:
                label = f"{cell.system} {cell.tool} {cell.protocol} b={cell.batch} c={cell.concurrency}"
                if run.rounds > 1 and cell.is_target:
                    label += f" (round {round_index + 1}/{run.rounds})"
                run.attempt(label, lambda cell=cell: run.add(cell.measure()))
    for cell in cells:
        if (result := cell.reported()) is not None:
            run.results.append(result)


# --- models -----------------------------------------------------------------------------------------------------

def build_models(work: Path) -> tuple[Path, Path, Path]:
    """The demo repository (tiny = the peers' model, the trained face CNN) built by the project's own script."""
    from twinfer.demo_models import build_repository

    repo = work / "twinfer_repo"
    build_repository(repo)
    return repo, repo / "tiny" / "1" / "model.onnx", repo / "face_blendshapes" / "1" / "model.onnx"


def face_dims(face: Path) -> list[int]:
    import onnx

    dims = onnx.load(str(face)).graph.input[0].type.tensor_type.shape.dim
    return [d.dim_value for d in dims[1:]]


# --- suites -----------------------------------------------------------------------------------------------------

def suite_raw(run: Run, tiny: Path, face: Path) -> None:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    for label, model, name, batches in (("tiny", tiny, "INPUT0", (1, 64)), ("face", face, "image", (1, 8))):
        sess = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
        shape = [d if isinstance(d, int) else 1 for d in sess.get_inputs()[0].shape[1:]]
        for batch in batches:
            x = np.random.default_rng(0).random((batch, *shape), np.float32)
            for _ in range(50):
                sess.run(None, {name: x})
            latencies, t0 = [], time.perf_counter()
            while (t := time.perf_counter()) < t0 + run.seconds / 2:
                sess.run(None, {name: x})
                latencies.append(time.perf_counter() - t)
            calls = len(latencies) / (time.perf_counter() - t0)
            run.raw[f"{label}_b{batch}"] = calls
            a = np.array(latencies) * 1e3
            run.add(Result("onnxruntime", "-", "in-process", 1, calls, float(np.percentile(a, 50)),
                           float(np.percentile(a, 99)), batch, note="1 intra-op thread"), keep=True)


def start_servers(run: Run, stack: contextlib.ExitStack, chosen: tuple[str, ...], repo: Path, tiny: Path,
                  face: Path) -> dict[str, peers.Running]:
    """Every server the chosen suites load, all started before any load runs and kept up together (idle, each
    costs under 0.5 % of a core: measured), so loads on different systems can alternate. A server that cannot
    start is a failure in the results; its cells are simply absent."""
    servers: dict[str, peers.Running] = {}

    def start(system: str, manager) -> None:
        servers[system] = stack.enter_context(manager)

    kserve = "kserve" in chosen
    run.attempt("start twinfer", lambda: start("twinfer", peers.twinfer(repo, run.work)))
    if kserve or "tcp" in chosen:  # one reactor is one core's worth of request handling; Triton uses every core
        run.attempt(f"start {SCALED}", lambda: start(SCALED, peers.twinfer(repo, run.work, "--workers", str(WORKERS),
                                                                           name=SCALED)))
    if kserve or "face" in chosen:
        site = _site_packages("triton")
        for system, batching in (("triton", False), ("triton+batching", True)) if kserve else (("triton", False),):
            def start_triton(system=system, batching=batching) -> None:
                triton_repo = peers.triton_repository(run.work / f"{system}_repo", tiny, face, face_dims(face), site,
                                                      batching)
                start(system, peers.triton(triton_repo, run.work))
            run.attempt(f"start {system}", start_triton)
    if kserve:
        run.attempt("start mlserver", lambda: start("mlserver", peers.mlserver(tiny, run.work)))
        run.attempt("start litserve", lambda: start("litserve", peers.litserve(tiny, run.work)))
    return servers


def kserve_cells(run: Run, servers: dict[str, peers.Running]) -> list[Cell]:
    """Tiny model, batch 1: perf_analyzer on the Triton-mode servers, wrk on all, the gRPC client where gRPC is."""
    cells = []
    for c in run.concurrencies:
        for protocol in ("http", "grpc"):
            for system in ("twinfer", SCALED, "triton", "triton+batching"):
                if (server := servers.get(system)) is not None:
                    url = f"127.0.0.1:{server.http if protocol == 'http' else server.grpc}"
                    cells.append(Cell(system, server, protocol, "perf_analyzer", c,
                                      lambda url=url, protocol=protocol, c=c: loads.perf_analyzer(
                                          url, protocol, "tiny", c, run.quick)))
        for system in ("twinfer", "triton", "triton+batching", "mlserver", "litserve"):
            if (server := servers.get(system)) is not None:
                url = f"http://127.0.0.1:{server.http}/v2/models/tiny/infer"
                body = loads.triton_body() if system.startswith("triton") else loads.kserve_body()
                cells.append(Cell(system, server, "http", "wrk", c,
                                  lambda url=url, body=body, c=c: loads.wrk(url, c, run.seconds, body)))
        for system in ("twinfer", "triton", "mlserver"):
            if (server := servers.get(system)) is not None:
                cells.append(Cell(system, server, "grpc", "grpc-py", c,
                                  lambda url=f"127.0.0.1:{server.grpc}", c=c: loads.grpc_closed_loop(url, c,
                                                                                                     run.seconds)))
    return cells


def face_cells(run: Run, servers: dict[str, peers.Running]) -> list[Cell]:
    """The face CNN at batch 8, c=4 (enough in flight to keep one instance busy), on twinfer and Triton."""
    cells = []
    for protocol in ("http", "grpc"):
        for system in ("twinfer", "triton"):
            if (server := servers.get(system)) is not None:
                url = f"127.0.0.1:{server.http if protocol == 'http' else server.grpc}"
                cells.append(Cell(system, server, protocol, "perf_analyzer", 4,
                                  lambda url=url, protocol=protocol: loads.perf_analyzer(
                                      url, protocol, "face_blendshapes", 4, run.quick, batch=8), batch=8))
    return cells


def tcp_cells(run: Run, servers: dict[str, peers.Running]) -> list[Cell]:
    """The game protocol, pipelined with dynamic batching (bench/tcp_tiny.py), on the twinfer servers. The same 128
    requests in flight on each; under --workers, over 8 connections, since the kernel spreads connections (not
    requests) over the workers and 4 connections often landed 3:1."""
    cells = []
    for system, connections, window in (("twinfer", 4, 32), (SCALED, 8, 16)):
        server = servers.get(system)
        if server is None:
            continue

        def call(server=server, connections=connections, window=window) -> tuple:
            data = loads.run_script("bench.tcp_tiny", "--seconds", str(run.seconds), "--port", str(server.tcp),
                                    "--server-pid", str(server.pid), "--connections", str(connections),
                                    "--window", str(window))
            if data["errors"]:
                raise peers.PeerError(f"tcp_tiny: {data['errors']} error replies")
            run.extra.setdefault("tcp", []).append(data)
            return (*data["tcp"], (data["server_cpu_s"], data["seconds"]))

        cells.append(Cell(system, server, "tcp", "tcp_tiny", connections * window, call,
                          note=f"game protocol, {connections} connections x {window} in flight, dynamic batching"))
    return cells


def suite_servers(run: Run, chosen: tuple[str, ...], repo: Path, tiny: Path, face: Path) -> None:
    """kserve, face and tcp: one set of servers, every load interleaved across the systems."""
    with contextlib.ExitStack() as stack:
        servers = start_servers(run, stack, chosen, repo, tiny, face)
        cells = []
        if "kserve" in chosen:
            cells += kserve_cells(run, servers)
        if "face" in chosen:
            cells += face_cells(run, servers)
        if "tcp" in chosen:
            cells += tcp_cells(run, servers)
        measure_interleaved(run, cells)


def suite_streams(run: Run) -> None:
    args = ["--seconds", "3" if run.quick else "5", "--max-streams", "64"]
    data = loads.run_script("bench.streams", *args, timeout=1800)
    run.extra["streams"] = data
    print(f"  {data['streams']} streams at 60 fps with p99 < 16.7 ms: {data['results_per_s']:,.0f} results/s vs raw "
          f"{data['raw_frames_per_s']:,.0f} frames/s", flush=True)


def suite_idle(run: Run) -> None:
    data = loads.run_script("bench.idle_sessions", "--sessions", "2000" if run.quick else "10000")
    run.extra["idle"] = data
    print(f"  {data['sessions']} sessions: {data['bytes_per_session'] / 1024:.2f} KiB each", flush=True)


def _site_packages(venv: str) -> Path:
    return next((peers.PEERS / venv / "lib").glob("python3*/site-packages"))


# --- machine ----------------------------------------------------------------------------------------------------

def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())

    def version(cmd: list[str]) -> str:
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
            return (out.stdout or out.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "not available"

    def pip_version(venv: str, package: str) -> str:
        python = peers.PEERS / venv / "bin" / "python"
        if not python.exists():
            return "not installed"
        return version([str(python), "-c", f"import importlib.metadata as m; print(m.version('{package}'))"])

    import onnxruntime
    import twisted

    import twinfer
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), "cpu": cpu,
        "cores": os.cpu_count(), "python": platform.python_version(), "kernel": platform.release(),
        "twinfer": twinfer.__version__, "twisted": twisted.__version__, "onnxruntime": onnxruntime.__version__,
        "wrk": version(["wrk", "-v"]), "triton (nvidia-pytriton)": pip_version("triton", "nvidia-pytriton"),
        "triton onnxruntime": pip_version("triton", "onnxruntime"), "mlserver": pip_version("mlserver", "mlserver"),
        "litserve": pip_version("litserve", "litserve"), "perf_analyzer (tritonclient)": pip_version("pa",
                                                                                                     "tritonclient"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("suites", nargs="*", default=["all"], help=f"all or some of: {', '.join(SUITES)}")
    parser.add_argument("--quick", action="store_true", help="short runs, c=8 only (a smoke run, ~5 min)")
    parser.add_argument("--rounds", type=int, help="rounds of the target loads (default 3; 1 with --quick)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    chosen = SUITES if "all" in args.suites else tuple(args.suites)
    unknown = [s for s in chosen if s not in SUITES]
    if unknown:
        parser.error(f"unknown suite {unknown}; known: {', '.join(SUITES)}")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="twinfer-bench-") as tmp:
        run = Run(args.quick, Path(tmp), args.rounds)
        missing = peers.ensure_apt("wrk", "libb64-0d")
        if missing:
            run.failures.append({"what": "apt", "error": f"not installed (not root?): {', '.join(missing)}"})
        for venv in ("pa", "triton", "mlserver", "litserve"):
            run.attempt(f"set up .peers/{venv}", lambda venv=venv: peers.setup_venv(venv))
        repo, tiny, face = build_models(run.work)
        suite_raw(run, tiny, face)  # every ratio needs it
        if {"kserve", "face", "tcp"} & set(chosen):
            suite_servers(run, chosen, repo, tiny, face)
        for suite in ("streams", "idle"):
            if suite in chosen:
                run.attempt(suite, lambda suite=suite: globals()[f"suite_{suite}"](run))
        with contextlib.suppress(Exception):
            shutil.copytree(run.work, args.out / "tmp" / "last-run-logs", dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("*.onnx", "*.npz", "*.py", "site-packages"))
        info = machine()
        info["seconds"] = round(time.monotonic() - started)
        info["quick"] = args.quick
        md, js = write_results(args.out, info, run.results, run.raw, run.extra, run.failures, targets(run))
    print(f"wrote {md} and {js} in {info['seconds']} s; {len(run.failures)} failure(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
