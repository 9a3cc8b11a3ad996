"""LiteRT (.tflite) vs ONNX Runtime (converted .onnx) for the three face models, on one core: speed and parity.

    taskset -c 0 python tools/bench_face_models.py [--seconds 2]

Both runtimes get one thread. Inputs are real crops of skimage's astronaut (and random noise for the tail), so
parity is measured where it matters. LiteRT batches only by `resize_tensor_input` + `allocate_tensors`; the
cost of that re-allocation is reported separately (a server alternating batch sizes pays it on each change).
Each time is the best of five windows (the machine is shared). Prints markdown tables (docs/face_models.md
holds the numbers measured for the commit).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from twinfer.faces.model_convert import DEFAULT_ONNX_DIR, FACE_MODEL_FILES, convert_all
from twinfer.faces.model_files import fetch_face_models

SIZES = {"face_detector": 128, "face_landmarks": 192, "iris_landmarks": 64}


def _inputs(name: str, batch: int) -> np.ndarray:
    from skimage import data

    size = SIZES[name]
    image = data.astronaut().astype(np.float32) / 255.0
    crop = image[30:230, 130:330] if name != "iris_landmarks" else image[95:135, 175:215]
    rows = (np.linspace(0, crop.shape[0] - 1, size)).astype(int)
    cols = (np.linspace(0, crop.shape[1] - 1, size)).astype(int)
    tile = crop[rows][:, cols]
    if name == "face_detector":
        tile = tile * 2.0 - 1.0
    noise = np.random.default_rng(0).uniform(0, 1, (batch, size, size, 3)).astype(np.float32) * 0.1
    return (tile[None] + noise).astype(np.float32)


def _rate(run, seconds: float, windows: int = 5) -> float:
    """Seconds per call: the best of `windows` windows (the machine is shared; the best window is the least
    disturbed one)."""
    run()
    best = float("inf")
    for _ in range(windows):
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / windows:
            run()
            count += 1
        best = min(best, (time.perf_counter() - start) / count)
    return best


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    import onnxruntime as ort
    from ai_edge_litert.interpreter import Interpreter

    tflite_dir = fetch_face_models(Path("build") / "face_models")
    if not all((DEFAULT_ONNX_DIR / f"{item.name}.onnx").is_file() for item in FACE_MODEL_FILES):
        convert_all(DEFAULT_ONNX_DIR)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    print("| model | runtime | batch 1 ms | batch 8 ms (per item) | items/s at 8 | resize+allocate ms |")
    print("|---|---|---|---|---|---|")
    parity: list[str] = []
    for item in FACE_MODEL_FILES:
        session = ort.InferenceSession(str(DEFAULT_ONNX_DIR / f"{item.name}.onnx"), options,
                                       providers=["CPUExecutionProvider"])
        interpreter = Interpreter(model_path=str(tflite_dir / item.tflite), num_threads=1)
        in_name = session.get_inputs()[0].name
        x1, x8 = _inputs(item.name, 1), _inputs(item.name, 8)
        onnx_1 = _rate(lambda: session.run(None, {in_name: x1}), args.seconds)
        onnx_8 = _rate(lambda: session.run(None, {in_name: x8}), args.seconds)

        index = interpreter.get_input_details()[0]["index"]
        outputs = [d["index"] for d in interpreter.get_output_details()]

        def tflite_run(x: np.ndarray) -> list[np.ndarray]:
            interpreter.set_tensor(index, x)
            interpreter.invoke()
            return [interpreter.get_tensor(o).copy() for o in outputs]

        def resize(batch: int) -> None:
            interpreter.resize_tensor_input(index, [batch, SIZES[item.name], SIZES[item.name], 3])
            interpreter.allocate_tensors()

        single = Interpreter(model_path=str(tflite_dir / item.tflite), num_threads=1)
        single.allocate_tensors()

        def tflite_run_at_1(x: np.ndarray) -> list[np.ndarray]:
            single.set_tensor(index, x)
            single.invoke()
            return [single.get_tensor(o).copy() for o in outputs]

        resize(1)
        lite_1 = _rate(lambda: tflite_run(x1), args.seconds)
        ref_1 = tflite_run(x1)
        resize_cost = _rate(lambda: (resize(8), resize(1)), min(args.seconds, 1.0)) / 2
        resize(8)
        ref_8 = tflite_run(x8)
        singles = [tflite_run_at_1(x8[i:i + 1]) for i in range(8)]
        batched_ok = all(np.allclose(r.reshape(8, -1), np.concatenate([s[k].reshape(1, -1) for s in singles]),
                                     atol=1e-4) for k, r in enumerate(ref_8))
        if batched_ok:
            lite_8 = _rate(lambda: tflite_run(x8), args.seconds)
            ref_8 = [r.reshape(8, *r.shape[1:]) if r.shape[0] == 8 else r.reshape(8, -1) for r in ref_8]
        else:  # the graph mixes items when resized: 8 batch-1 invokes, as the tflite backend does
            resize(1)
            lite_8 = _rate(lambda: [tflite_run(x8[i:i + 1]) for i in range(8)], args.seconds)
            ref_8 = [np.concatenate([s[k] for s in singles]) for k in range(len(outputs))]
        resize(1)
        print(f"| {item.name} | onnxruntime | {onnx_1 * 1e3:.3f} | {onnx_8 * 1e3:.3f} ({onnx_8 / 8 * 1e3:.3f}) "
              f"| {8 / onnx_8:.0f} | none |")
        how = "" if batched_ok else " (8 x batch 1: resizing mixes items)"
        print(f"| {item.name} | litert | {lite_1 * 1e3:.3f} | {lite_8 * 1e3:.3f} ({lite_8 / 8 * 1e3:.3f}){how} "
              f"| {8 / lite_8:.0f} | {resize_cost * 1e3:.3f} |")
        got_1 = session.run(None, {in_name: x1})
        got_8 = session.run(None, {in_name: x8})
        names = [o.name for o in session.get_outputs()]
        for out_name, a, b, a8, b8 in zip(names, ref_1, got_1, ref_8, got_8):
            parity.append(f"| {item.name} | {out_name} | {np.abs(a - b.reshape(a.shape)).max():.2e} "
                          f"| {np.abs(a8.reshape(b8.shape) - b8).max():.2e} | {np.abs(a).max():.3g} |")
    print()
    print("| model | output | max abs diff, batch 1 | max abs diff, batch 8 | max abs value |")
    print("|---|---|---|---|---|")
    print("\n".join(parity))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
