"""LiteRT (.tflite) vs ONNX Runtime (converted .onnx) for the three face models, on one core: speed and parity.

    taskset -c 0 python tools/bench_face_models.py [--seconds 2]

Both runtimes get one thread. Inputs are real crops of skimage's astronaut (and random noise for the tail), so
parity is measured where it matters. LiteRT batches only by `resize_tensor_input` + `allocate_tensors`; the
cost of that re-allocation is reported separately (a server alternating batch sizes pays it on each change).
Prints a markdown table (docs/face_models.md holds the numbers measured for the commit).
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


def _rate(run, seconds: float) -> float:
    run()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        run()
        count += 1
    return (time.perf_counter() - start) / count


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

        resize(1)
        lite_1 = _rate(lambda: tflite_run(x1), args.seconds)
        ref_1 = tflite_run(x1)
        resize_cost = _rate(lambda: (resize(8), resize(1)), min(args.seconds, 1.0)) / 2
        resize(8)
        lite_8 = _rate(lambda: tflite_run(x8), args.seconds)
        ref_8 = tflite_run(x8)
        resize(1)
        print(f"| {item.name} | onnxruntime | {onnx_1 * 1e3:.3f} | {onnx_8 * 1e3:.3f} ({onnx_8 / 8 * 1e3:.3f}) "
              f"| {8 / onnx_8:.0f} | none |")
        print(f"| {item.name} | litert | {lite_1 * 1e3:.3f} | {lite_8 * 1e3:.3f} ({lite_8 / 8 * 1e3:.3f}) "
              f"| {8 / lite_8:.0f} | {resize_cost * 1e3:.3f} |")
        got_1 = session.run(None, {in_name: x1})
        got_8 = session.run(None, {in_name: x8})
        names = [o.name for o in session.get_outputs()]
        for out_name, a, b, a8, b8 in zip(names, ref_1, got_1, ref_8, got_8):
            parity.append(f"| {item.name} | {out_name} | {np.abs(a - b.reshape(a.shape)).max():.2e} "
                          f"| {np.abs(a8 - b8.reshape(a8.shape)).max():.2e} | {np.abs(a).max():.3g} |")
    print()
    print("| model | output | max abs diff, batch 1 | max abs diff, batch 8 | max abs value |")
    print("|---|---|---|---|---|")
    print("\n".join(parity))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
