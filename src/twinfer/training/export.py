"""Exports of a trained FaceNet: ONNX (what the server runs by default), TorchScript and `torch.export` programs
(the `pytorch` backend), and a TensorFlow SavedModel / Keras file (the `tensorflow` backend). Every export is checked against the PyTorch model on
the same inputs before it is kept, so a broken export fails the training run, not a server later."""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from twinfer.errors import ConfigError
from twinfer.training.face_net import IMAGE_SIZE, FaceNet, folded_state

FORMATS = {"onnx": "model.onnx", "torchscript": "model.pt", "torch_export": "model.pt2",
           "savedmodel": "model.savedmodel", "keras": "model.keras"}
INPUT_NAME, OUTPUT_NAME = "image", "blendshapes"
OPSET = 17
TOLERANCE = 1e-4  # float32 reorderings between runtimes; a wrong export is off by far more


def _check_inputs() -> np.ndarray:
    return np.random.default_rng(7).random((4, 1, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)


def _compare(name: str, expected: np.ndarray, got: np.ndarray) -> None:
    worst = float(np.abs(expected - got).max())
    if not worst <= TOLERANCE:
        raise RuntimeError(f"{name} export differs from the PyTorch model by {worst:.2e} (> {TOLERANCE:.0e})")


def export_onnx(model: FaceNet, path: Path) -> None:
    """ONNX opset 17 with a dynamic batch axis. The TorchScript-based exporter (`dynamo=False`): the dynamo one
    needs onnxscript, which the `train` extra does not pull in, and gives the same graph for a plain CNN."""
    import onnxruntime as ort

    x = _check_inputs()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation notice for the TorchScript path
        torch.onnx.export(model, (torch.from_numpy(x[:1]),), str(path), input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], opset_version=OPSET, dynamo=False,
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    _compare("ONNX", _torch_run(model, x), session.run([OUTPUT_NAME], {INPUT_NAME: x})[0])


def export_torchscript(model: FaceNet, path: Path) -> None:
    """A traced TorchScript module: loadable by `torch.jit.load` without unpickling Python objects. PyTorch 2.13
    marks TorchScript deprecated (warnings silenced here) but it is what libtorch / Triton's pytorch backend load;
    `torch_export` is the successor format."""
    x = _check_inputs()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with torch.no_grad():
            traced = torch.jit.trace(model, torch.from_numpy(x[:1]))
        traced.save(str(path))
        loaded = torch.jit.load(str(path), map_location="cpu")
    with torch.inference_mode():
        _compare("TorchScript", _torch_run(model, x), loaded(torch.from_numpy(x)).numpy())


def export_program(model: FaceNet, path: Path) -> None:
    """A `torch.export` program (.pt2) with a dynamic batch dimension: the format PyTorch keeps going forward."""
    x = _check_inputs()
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(model, (torch.from_numpy(x[:2]),), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path))
    loaded = torch.export.load(str(path)).module()
    with torch.inference_mode():
        _compare("torch.export", _torch_run(model, x), loaded(torch.from_numpy(x)).numpy())


def export_tensorflow(model: FaceNet, path: Path, fmt: str) -> None:
    """The Keras mirror of the network (batch norm folded in), as a SavedModel directory or a .keras file."""
    try:
        from twinfer.training.keras_export import build_keras_face_net, save_tensorflow
    except ImportError as exc:
        raise ConfigError(f"--formats {fmt} needs TensorFlow: pip install 'twinfer[tensorflow]' ({exc})") from None
    save_tensorflow(folded_state(model), path.parent, fmt=fmt)
    x = _check_inputs()
    _compare(fmt, _torch_run(model, x), np.asarray(build_keras_face_net(folded_state(model))(x)))


def _torch_run(model: FaceNet, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(x)).numpy()


def exporters(formats: list[str]) -> list[tuple[str, Callable[[FaceNet, Path], None]]]:
    """(file name, export function) per requested format, in a fixed order; unknown names are a ConfigError."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ConfigError(f"--formats: unknown {', '.join(unknown)} (known: {', '.join(FORMATS)})")
    table: dict[str, Callable[[FaceNet, Path], None]] = {
        "onnx": export_onnx, "torchscript": export_torchscript, "torch_export": export_program,
        "savedmodel": lambda m, p: export_tensorflow(m, p, "savedmodel"),
        "keras": lambda m, p: export_tensorflow(m, p, "keras"),
    }
    return [(FORMATS[f], table[f]) for f in FORMATS if f in formats]


def remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
