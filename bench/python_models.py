"""Python models and ensembles (issue #16, "Speed"), side by side in one run.

    .venv/bin/python bench/python_models.py [--seconds 5] [--concurrency 8] [--rounds 3] [--workers 2] [--json]

1. The same model.py (it batches its requests into one ONNX Runtime call) under Triton's python backend (the peer
   of bench/peers.py: stub process, /dev/shm) and under twinfer (in process), perf_analyzer HTTP and gRPC at c=8.
   Target: twinfer >= 2x Triton. Also twinfer under `--workers N` (default 2; 0 leaves it out): one reactor is
   one core's worth of request handling, and Triton uses every core. Needs the peers (`python -m bench kserve` installs them into .peers/); without
   them this part says "not run" and the rest still runs.
2. Overhead of a trivial python model (identity) over calling its `execute` directly in process: p99 of a gRPC
   round trip at c=1 minus p99 of the direct call (target: <= 1 ms), and the same through the facade in process
   (batcher, instance thread, wrappers; no transport). The native ONNX `tiny` on both paths is shown for scale.
3. An ensemble (python pre-processing step -> ONNX model) vs the same work in one python model, gRPC c=8.
The load generators share the machine's cores with the servers: compare the ratios of one run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import textwrap
import time
from contextlib import ExitStack
from pathlib import Path

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from bench import peers  # noqa: E402
from bench.common import grpc_closed_loop, percentiles_ms, running_server  # noqa: E402

# One model.py for both servers. Triton's stub does not see the venv's onnxruntime, hence `site_packages`.
BATCHING_MODEL_PY = textwrap.dedent('''
    import json, os, sys
    import numpy as np
    import triton_python_backend_utils as pb_utils

    class TritonPythonModel:
        def initialize(self, args):
            cfg = json.loads(args["model_config"])
            site = cfg.get("parameters", {}).get("site_packages", {}).get("string_value")
            if site:
                sys.path.insert(0, site)
            import onnxruntime as ort
            so = ort.SessionOptions(); so.intra_op_num_threads = 1; so.inter_op_num_threads = 1
            path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
            self.sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
            self.scale = float(cfg.get("parameters", {}).get("scale", {}).get("string_value", "1"))

        def execute(self, requests):
            xs = [pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy() for r in requests]
            x = np.concatenate(xs) if len(xs) > 1 else xs[0]
            if self.scale != 1:
                x = x * np.float32(self.scale)
            y = self.sess.run(["OUTPUT0"], {"INPUT0": x})[0]
            out, start = [], 0
            for part in xs:
                out.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", y[start:start + len(part)])]))
                start += len(part)
            return out
''')

IDENTITY_MODEL_PY = textwrap.dedent('''
    import triton_python_backend_utils as pb_utils

    class TritonPythonModel:
        def execute(self, requests):
            return [pb_utils.InferenceResponse([pb_utils.Tensor(
                "OUTPUT0", pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy())]) for r in requests]
''')

SCALE_MODEL_PY = textwrap.dedent('''
    import numpy as np
    import triton_python_backend_utils as pb_utils

    class TritonPythonModel:
        def execute(self, requests):
            return [pb_utils.InferenceResponse([pb_utils.Tensor(
                "OUTPUT0", pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy() * np.float32(0.5))])
                for r in requests]
''')


def python_config(name: str, parameters: dict[str, str] | None = None) -> str:
    params = "".join(f'parameters: {{ key: "{k}", value: {{ string_value: "{v}" }} }}\n'
                     for k, v in (parameters or {}).items())
    return textwrap.dedent(f'''\
        name: "{name}"
        backend: "python"
        max_batch_size: 64
        input  [ {{ name: "INPUT0", data_type: TYPE_FP32, dims: [ 16 ] }} ]
        output [ {{ name: "OUTPUT0", data_type: TYPE_FP32, dims: [ 16 ] }} ]
        instance_group [ {{ kind: KIND_CPU, count: 1 }} ]
        dynamic_batching {{ max_queue_delay_microseconds: 0 }}
        ''') + params


ENSEMBLE_CONFIG = textwrap.dedent('''\
    name: "pipeline"
    platform: "ensemble"
    max_batch_size: 64
    input  [ { name: "INPUT0", data_type: TYPE_FP32, dims: [ 16 ] } ]
    output [ { name: "OUTPUT0", data_type: TYPE_FP32, dims: [ 16 ] } ]
    ensemble_scheduling { step [
      { model_name: "scale" model_version: -1 input_map { key: "INPUT0" value: "INPUT0" }
        output_map { key: "OUTPUT0" value: "scaled" } },
      { model_name: "tiny" model_version: -1 input_map { key: "INPUT0" value: "scaled" }
        output_map { key: "OUTPUT0" value: "OUTPUT0" } } ] }
    ''')


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def build_repository(root: Path, site_packages: str | None = None) -> Path:
    """tiny (ONNX), tiny_py (the batching model.py around the same file), identity, scale, the ensemble
    scale -> tiny, and fused (scale and ORT in one model.py)."""
    from twinfer.demo_models import build_tiny

    (root / "tiny" / "1").mkdir(parents=True)
    build_tiny(root / "tiny" / "1" / "model.onnx")
    extra = {"site_packages": site_packages} if site_packages else {}
    for name, params in (("tiny_py", extra), ("fused", {"scale": "0.5", **extra})):
        write(root / name / "1" / "model.py", BATCHING_MODEL_PY)
        shutil.copyfile(root / "tiny" / "1" / "model.onnx", root / name / "1" / "model.onnx")
        write(root / name / "config.pbtxt", python_config(name, params))
    for name, model in (("identity", IDENTITY_MODEL_PY), ("scale", SCALE_MODEL_PY)):
        write(root / name / "1" / "model.py", model)
        write(root / name / "config.pbtxt", python_config(name))
    (root / "pipeline" / "1").mkdir(parents=True)
    write(root / "pipeline" / "config.pbtxt", ENSEMBLE_CONFIG)
    return root


# --- loads --------------------------------------------------------------------------------------------------------

X = np.random.default_rng(1).standard_normal((1, 16)).astype(np.float32)


def direct_execute(model_file: Path, seconds: float) -> tuple[float, float, float]:
    """The identity model's execute called in this process, one request per call (what "directly" means)."""
    from twinfer.backends import triton_utils as pb_utils
    from twinfer.backends.python_import import import_model_file

    model = import_model_file("identity", model_file).TritonPythonModel()
    latencies: list[float] = []
    stop = time.perf_counter() + seconds
    while time.perf_counter() < stop:
        t = time.perf_counter()
        model.execute([pb_utils.InferenceRequest(model_name="identity", requested_output_names=["OUTPUT0"],
                                                 inputs=[pb_utils.Tensor("INPUT0", X)])])
        latencies.append(time.perf_counter() - t)
    return (len(latencies) / seconds, *percentiles_ms(latencies))


def facade_round_trips(repo: Path, models: list[str], seconds: float) -> dict[str, tuple[float, float, float]]:
    """Sequential requests through the inference facade in this process (a real reactor, the real batcher and
    instance threads, no transport): what twinfer's python path itself adds to a model's execute. Runs the
    reactor, so it must come last."""
    from twisted.internet import reactor
    from twisted.internet.defer import ensureDeferred

    from twinfer.inference.facade import InferenceFacade
    from twinfer.inference.repository import ModelRepository
    from twinfer.inference.threads import ReactorThreads
    from twinfer.inference.types import InferenceRequest

    results: dict[str, tuple[float, float, float]] = {}

    async def run() -> None:
        repository = ModelRepository(repo, reactor, ReactorThreads(reactor))
        facade = InferenceFacade(repository)
        await repository.start()
        for model in models:
            latencies: list[float] = []
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                t = time.perf_counter()
                await facade.infer(InferenceRequest(model, {"INPUT0": X}))
                latencies.append(time.perf_counter() - t)
            results[model] = (len(latencies) / seconds, *percentiles_ms(latencies[len(latencies) // 10:]))
        await repository.stop()

    def main() -> None:
        d = ensureDeferred(run())
        d.addErrback(lambda f: f.printTraceback())
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(main)
    reactor.run()
    return results


def peers_installed() -> bool:
    return all((peers.PEERS / name / ".installed").exists() for name in ("triton", "pa"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of part 1 (median reported)")
    parser.add_argument("--workers", type=int, default=2,
                        help="also measure twinfer with --workers N in part 1 (0 or 1: leave it out)")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON line last")
    args = parser.parse_args(argv)
    scaled = f"twinfer --workers {args.workers}"
    c, secs = args.concurrency, args.seconds
    rows: list[dict] = []
    notes: list[str] = []

    def row(part: str, system: str, protocol: str, tool: str, rate: float, p50: float, p99: float) -> None:
        rows.append({"part": part, "system": system, "protocol": protocol, "tool": tool, "infer_per_s": rate,
                     "p50_ms": p50, "p99_ms": p99})

    with tempfile.TemporaryDirectory(prefix="twinfer-bench-py-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        repo = build_repository(work / "repo")
        ports, _ = stack.enter_context(running_server(repo))
        ports_scaled = stack.enter_context(running_server(repo, "--workers", str(args.workers)))[0] \
            if args.workers > 1 else None
        grpc_url = f"127.0.0.1:{ports['grpc']}"

        # 1. the same model.py under Triton's python backend and under twinfer
        if peers_installed():
            from bench.loads import perf_analyzer

            site = str(next((peers.PEERS / "triton" / "lib").glob("python3*/site-packages")))
            triton_repo = work / "triton-repo"
            (triton_repo / "tiny_py" / "1").mkdir(parents=True)
            write(triton_repo / "tiny_py" / "1" / "model.py", BATCHING_MODEL_PY)
            shutil.copyfile(repo / "tiny" / "1" / "model.onnx", triton_repo / "tiny_py" / "1" / "model.onnx")
            write(triton_repo / "tiny_py" / "config.pbtxt", python_config("tiny_py", {"site_packages": site}))
            try:
                triton = stack.enter_context(peers.triton(triton_repo, work))
                # interleaved rounds, the first system alternating; the median round is the row (this machine
                # drifts by a quarter between minutes, so one row each measured the drift as much as the servers)
                measured: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
                for round_index in range(args.rounds):
                    for protocol in ("http", "grpc"):
                        pair = [("twinfer", ports[protocol]), ("triton", getattr(triton, protocol))]
                        if ports_scaled is not None:
                            pair.append((scaled, ports_scaled[protocol]))
                        first = round_index % len(pair)
                        for system, port in pair[first:] + pair[:first]:
                            try:
                                measured.setdefault((protocol, system), []).append(perf_analyzer(
                                    f"127.0.0.1:{port}", protocol, "tiny_py", c, quick=False))
                            except peers.PeerError as exc:
                                notes.append(f"round {round_index + 1} {system} {protocol}: {str(exc)[-200:]}")
                for protocol in ("http", "grpc"):
                    for system in ("twinfer", "triton", scaled):
                        runs = sorted(measured.get((protocol, system), []))
                        if runs:
                            rate, p50, p99 = runs[len(runs) // 2]
                            row("same model.py", system, protocol,
                                f"perf_analyzer c={c}, median of {len(runs)}", rate, p50, p99)
            except peers.PeerError as exc:
                notes.append(f"part 1 not run: {exc}")
        else:
            notes.append("part 1 not run: Triton and perf_analyzer are not installed in .peers/ "
                         "(`python -m bench kserve` sets them up)")
            rate, p50, p99 = grpc_closed_loop(grpc_url, "tiny_py", c, secs)
            row("same model.py", "twinfer", "grpc", f"grpc.aio c={c}", rate, p50, p99)

        # 2. a trivial python model over calling it directly
        rate, p50, p99 = direct_execute(repo / "identity" / "1" / "model.py", secs)
        row("trivial overhead", "direct execute()", "in process", "loop", rate, p50, p99)
        for model in ("identity", "tiny"):
            rate, p50, p99 = grpc_closed_loop(grpc_url, model, 1, secs)
            row("trivial overhead", f"twinfer {model}", "grpc", "grpc.aio c=1", rate, p50, p99)

        # 3. ensemble (python step -> ONNX) vs one python model doing both
        for model in ("pipeline", "fused"):
            rate, p50, p99 = grpc_closed_loop(grpc_url, model, c, secs)
            row("ensemble vs fused", f"twinfer {model}", "grpc", f"grpc.aio c={c}", rate, p50, p99)

        # 2b. the same without a transport: the facade in this process (runs a reactor: last)
        for model, (rate, p50, p99) in facade_round_trips(repo, ["identity", "tiny"], secs).items():
            row("trivial overhead", f"facade {model}", "in process", "facade c=1", rate, p50, p99)

    print(f"python models, batch 1 per request, {secs:g} s per row, {os.cpu_count()} cores")
    print(f"{'part':<18} {'system':<22} {'protocol':<10} {'tool':<32} {'infer/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for r in rows:
        print(f"{r['part']:<18} {r['system']:<22} {r['protocol']:<10} {r['tool']:<32} {r['infer_per_s']:>9,.0f} "
              f"{r['p50_ms']:>8.3f} {r['p99_ms']:>8.3f}")
    verdicts = {}
    by = {(r["part"], r["system"], r["protocol"]): r for r in rows}
    for protocol in ("http", "grpc"):
        ours, theirs = by.get(("same model.py", "twinfer", protocol)), by.get(("same model.py", "triton", protocol))
        if ours and theirs:
            verdicts[f"{protocol} twinfer/triton (target >= 2)"] = ours["infer_per_s"] / theirs["infer_per_s"]
        more = by.get(("same model.py", scaled, protocol))
        if more and theirs:
            verdicts[f"{protocol} {scaled}/triton"] = more["infer_per_s"] / theirs["infer_per_s"]
    direct, served = by[("trivial overhead", "direct execute()", "in process")], by[("trivial overhead",
                                                                                       "twinfer identity", "grpc")]
    verdicts["trivial model p99 overhead ms, gRPC round trip (target <= 1)"] = served["p99_ms"] - direct["p99_ms"]
    facade = by[("trivial overhead", "facade identity", "in process")]
    verdicts["trivial model p99 overhead ms, facade in process"] = facade["p99_ms"] - direct["p99_ms"]
    verdicts["ensemble/fused throughput"] = (by[("ensemble vs fused", "twinfer pipeline", "grpc")]["infer_per_s"]
                                             / by[("ensemble vs fused", "twinfer fused", "grpc")]["infer_per_s"])
    for key, value in verdicts.items():
        print(f"{key}: {value:.3f}")
    for note in notes:
        print(note)
    if args.json:
        print(json.dumps({"rows": rows, "verdicts": verdicts, "notes": notes}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
