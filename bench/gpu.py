"""The face model on the CPU and on a GPU, in the same run (issue #21): same outputs (allclose), and the speed-up.

    .venv/bin/python bench/gpu.py [--seconds 3] [--batches 1,8,64] [--gpu 0] [--tensorrt]

Loads the shipped face_blendshapes ONNX model (1x128x128 grey crops -> 52 ARKit blendshapes) through twinfer's own
ONNX backend twice: `instance_group [{kind: KIND_CPU}]` and `[{kind: KIND_GPU, gpus: [N]}]` (optionally with the
TensorRT accelerator), then, per batch size, checks the GPU's outputs against the CPU's and runs each for --seconds
in a closed loop on one thread: rows/s and p50/p99 latency per call, with the host<->device copies included (the
backend takes and returns numpy, as the facade does).

Without a usable GPU it still runs the CPU side and prints the one-line reason the GPU side was refused (that is
the refusal a KIND_GPU model gets at load). Not part of `make test`; results: bench/results/gpu-<date>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from twinfer.backends import BackendOptions, load_backend  # noqa: E402
from twinfer.errors import ModelLoadError  # noqa: E402
from twinfer.inference.config_loading import load_model_config  # noqa: E402
from twinfer.inference.model_config import ModelConfig  # noqa: E402

SHIPPED = ROOT / "src" / "twinfer" / "data" / "face_blendshapes" / "model.onnx"


def face_config(model_file: Path, groups: list[dict], tensorrt: bool) -> ModelConfig:
    base = load_model_config(model_file.parent.parent, model_file).model_dump()
    base.update(instance_group=groups, instance_count=1, max_batch_size=max(64, base["max_batch_size"]))
    if tensorrt:
        base["optimization"] = {"execution_accelerators": {"gpu_execution_accelerator": [{"name": "tensorrt"}]}}
    return ModelConfig.model_validate(base)


def measure(backend, inputs: dict[str, np.ndarray], outputs: list[str], seconds: float) -> dict[str, float]:
    for _ in range(3):
        backend.run(inputs, outputs)  # warm-up (CUDA kernels, TensorRT engines)
    latencies = []
    deadline = time.perf_counter() + seconds
    while (start := time.perf_counter()) < deadline:
        backend.run(inputs, outputs)
        latencies.append(time.perf_counter() - start)
    rows = len(latencies) * next(iter(inputs.values())).shape[0]
    total = sum(latencies)
    return {"rows_per_s": rows / total, "p50_ms": float(np.percentile(latencies, 50) * 1e3),
            "p99_ms": float(np.percentile(latencies, 99) * 1e3), "calls": len(latencies)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--batches", default="1,8,64")
    parser.add_argument("--gpu", type=int, default=0)
    parser.add_argument("--tensorrt", action="store_true")
    parser.add_argument("--model", type=Path, default=SHIPPED)
    args = parser.parse_args()
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:  # the model in a directory of its own, no config file beside it
        model_file = Path(tmp) / "face_blendshapes" / "1" / "model.onnx"
        model_file.parent.mkdir(parents=True)
        model_file.write_bytes(args.model.read_bytes())
        cpu_config = face_config(model_file, [{"kind": "KIND_CPU"}], False)
        gpu_config = face_config(model_file, [{"kind": "KIND_GPU", "gpus": [args.gpu]}], args.tensorrt)
        cpu = load_backend(cpu_config, model_file, BackendOptions())
        try:
            gpu = load_backend(gpu_config, model_file, BackendOptions())
            refused = ""
        except ModelLoadError as exc:
            gpu, refused = None, str(exc)
        spec = cpu_config.inputs[0]
        outputs = [t.name for t in cpu_config.outputs]
        rng = np.random.default_rng(0)
        report: dict = {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "machine": platform.node(),
                        "gpu_refused": refused, "tensorrt": args.tensorrt, "results": []}
        print(f"GPU: {'refused: ' + refused if refused else gpu._session.get_providers()}")
        for batch in (int(b) for b in args.batches.split(",")):
            x = rng.random((batch, *spec.dims), dtype=np.float32)
            row: dict = {"batch": batch, "cpu": measure(cpu, {spec.name: x}, outputs, args.seconds)}
            if gpu is not None:
                want, got = cpu.run({spec.name: x}, outputs), gpu.run({spec.name: x}, outputs)
                row["max_abs_diff"] = max(float(np.max(np.abs(want[n] - got[n]))) for n in outputs)
                row["allclose"] = all(np.allclose(want[n], got[n], rtol=1e-3, atol=1e-4) for n in outputs)
                row["gpu"] = measure(gpu, {spec.name: x}, outputs, args.seconds)
                row["speedup"] = row["gpu"]["rows_per_s"] / row["cpu"]["rows_per_s"]
            report["results"].append(row)
            line = f"batch {batch:3d}: CPU {row['cpu']['rows_per_s']:9.0f} rows/s p99 {row['cpu']['p99_ms']:.2f} ms"
            if gpu is not None:
                line += (f" | GPU {row['gpu']['rows_per_s']:9.0f} rows/s p99 {row['gpu']['p99_ms']:.2f} ms | "
                         f"x{row['speedup']:.2f} | allclose {row['allclose']} (max diff {row['max_abs_diff']:.2e})")
            print(line)
    out = ROOT / "bench" / "results" / f"gpu-{dt.date.today().isoformat()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return 0 if gpu is None or all(r["allclose"] for r in report["results"]) else 1


if __name__ == "__main__":
    sys.exit(main())
