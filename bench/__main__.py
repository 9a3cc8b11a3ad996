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
from pathlib import Path

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from bench import loads, peers  # noqa: E402
from bench.loads import Result  # noqa: E402
from bench.report import targets, write_results  # noqa: E402

SUITES = ("raw", "kserve", "face", "tcp", "streams", "idle")


class Run:
    """What one `python -m bench` invocation measured, plus every failure with its reason."""

    def __init__(self, quick: bool, work: Path) -> None:
        self.quick = quick
        self.work = work
        self.results: list[Result] = []
        self.raw: dict[str, float] = {}
        self.extra: dict[str, dict] = {}
        self.failures: list[dict[str, str]] = []
        self.seconds = 3.0 if quick else 10.0
        self.concurrencies = (8,) if quick else (1, 8, 32)

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

    def add(self, result: Result) -> None:
        self.results.append(result)
        cpu = f", server {result.cpu_s_per_1k:.3f} CPU-s/1k" if result.cpu_s_per_1k is not None else ""
        print(f"  {result.system:<18} {result.protocol:<5} {result.tool:<14} b={result.batch:<2} c={result.concurrency:<3}"
              f" {result.infer_per_s:>9,.0f} infer/s  p50 {result.p50_ms:6.2f} ms  p99 {result.p99_ms:6.2f} ms{cpu}",
              flush=True)


def _measured(run: Run, server: peers.Running, system: str, protocol: str, tool: str, concurrency: int,
              call: Callable[[], tuple], batch: int = 1, note: str = "") -> None:
    """Run one load, with the server's CPU over the same interval, and record it."""
    cpu0, t0 = peers.tree_cpu_seconds(server.pid), time.monotonic()
    rate, p50, p99 = call()[:3]
    cpu, wall = peers.tree_cpu_seconds(server.pid) - cpu0, time.monotonic() - t0
    run.add(Result(system, protocol, tool, concurrency, rate, p50, p99, batch,
                   cpu_s_per_1k=1000 * cpu / max(rate * wall, 1), note=note))


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
                           float(np.percentile(a, 99)), batch, note="1 intra-op thread"))


def suite_kserve(run: Run, repo: Path, tiny: Path, face: Path) -> None:
    body = loads.kserve_body()

    def http_rows(server: peers.Running, system: str, pa: bool, grpc_py: bool, wrk_body: str = body) -> None:
        for c in run.concurrencies:
            if pa:
                for protocol, port in (("http", server.http), ("grpc", server.grpc)):
                    run.attempt(f"{system} perf_analyzer {protocol} c={c}", lambda protocol=protocol, port=port, c=c:
                                _measured(run, server, system, protocol, "perf_analyzer", c,
                                          lambda: loads.perf_analyzer(f"127.0.0.1:{port}", protocol, "tiny", c,
                                                                      run.quick)))
            url = f"http://127.0.0.1:{server.http}/v2/models/tiny/infer"
            run.attempt(f"{system} wrk c={c}", lambda c=c, url=url: _measured(
                run, server, system, "http", "wrk", c, lambda: loads.wrk(url, c, run.seconds, wrk_body)))
            if grpc_py:
                run.attempt(f"{system} grpc-py c={c}", lambda c=c: _measured(
                    run, server, system, "grpc", "grpc-py", c,
                    lambda: loads.grpc_closed_loop(f"127.0.0.1:{server.grpc}", c, run.seconds)))

    run.attempt("twinfer", lambda: _with(peers.twinfer(repo, run.work), lambda s: http_rows(s, "twinfer", True,
                                                                                             True)))
    site = _site_packages("triton")
    for system, batching in (("triton", False), ("triton+batching", True)):
        def start(batching=batching, system=system):
            triton_repo = peers.triton_repository(run.work / f"{system}_repo", tiny, face, face_dims(face), site,
                                                  batching)
            _with(peers.triton(triton_repo, run.work),
                  lambda s: http_rows(s, system, True, not batching, loads.triton_body()))
        run.attempt(system, start)
    run.attempt("mlserver", lambda: _with(peers.mlserver(tiny, run.work), lambda s: http_rows(s, "mlserver", False,
                                                                                               True)))
    run.attempt("litserve", lambda: _with(peers.litserve(tiny, run.work), lambda s: http_rows(s, "litserve", False,
                                                                                               False)))


def suite_face(run: Run, repo: Path, tiny: Path, face: Path) -> None:
    def rows(server: peers.Running, system: str, protocols: tuple[str, ...]) -> None:
        for protocol in protocols:
            port = server.http if protocol == "http" else server.grpc
            run.attempt(f"{system} face b=8 {protocol}", lambda protocol=protocol, port=port: _measured(
                run, server, system, protocol, "perf_analyzer", 4,
                lambda: loads.perf_analyzer(f"127.0.0.1:{port}", protocol, "face_blendshapes", 4, run.quick, batch=8),
                batch=8))

    run.attempt("twinfer face", lambda: _with(peers.twinfer(repo, run.work), lambda s: rows(s, "twinfer",
                                                                                             ("http", "grpc"))))

    def triton_face() -> None:
        triton_repo = peers.triton_repository(run.work / "triton_face_repo", tiny, face, face_dims(face),
                                              _site_packages("triton"), False)
        _with(peers.triton(triton_repo, run.work), lambda s: rows(s, "triton", ("http", "grpc")))

    run.attempt("triton face", triton_face)


def suite_tcp(run: Run) -> None:
    data = loads.run_script("bench.tcp_tiny", "--seconds", str(run.seconds))
    rate, p50, p99 = data["tcp"]
    run.add(Result("twinfer", "tcp", "tcp_tiny", data["window"][0] * data["window"][1], rate, p50, p99,
                   note=f"game protocol, {data['window'][0]} connections x {data['window'][1]} in flight, "
                        f"dynamic batching; server {data['server_cores']:.2f} cores; errors {data['errors']}"))
    run.extra["tcp"] = data


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


def _with(manager, body: Callable) -> None:
    with manager as server:
        body(server)


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
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    chosen = SUITES if "all" in args.suites else tuple(args.suites)
    unknown = [s for s in chosen if s not in SUITES]
    if unknown:
        parser.error(f"unknown suite {unknown}; known: {', '.join(SUITES)}")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="twinfer-bench-") as tmp:
        run = Run(args.quick, Path(tmp))
        missing = peers.ensure_apt("wrk", "libb64-0d")
        if missing:
            run.failures.append({"what": "apt", "error": f"not installed (not root?): {', '.join(missing)}"})
        for venv in ("pa", "triton", "mlserver", "litserve"):
            run.attempt(f"set up .peers/{venv}", lambda venv=venv: peers.setup_venv(venv))
        repo, tiny, face = build_models(run.work)
        suite_raw(run, tiny, face)  # every ratio needs it
        for suite in chosen:
            if suite == "kserve":
                suite_kserve(run, repo, tiny, face)
            elif suite == "face":
                suite_face(run, repo, tiny, face)
            elif suite in ("tcp", "streams", "idle"):
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
