"""`twinfer train face-blendshapes --repository DIR`: train, check on the held-out set, export, publish a version.

Runs in its own process (the CLI), never inside a server: the server picks the new version up by hot reload, and
its validation gate decides whether the version takes traffic. The trainer runs that same gate (the model's
config.yaml, the server's code) on the exported files before publishing, and refuses to publish a version that
misses it unless `--publish-anyway`: a refused newest version is still on disk for every later restart.
"""

from __future__ import annotations

import datetime
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np

import twinfer
from twinfer.arkit import ARKIT_BLENDSHAPES
from twinfer.errors import ModelLoadError, VersionRefused
from twinfer.sources.face_dataset import VALIDATION_SEED, write_validation_set
from twinfer.sources.synthetic_face import DRIVEN
from twinfer.training.export import INPUT_NAME, OUTPUT_NAME, exporters
from twinfer.training.face_net import IMAGE_SIZE
from twinfer.training.publish import (
    VALIDATION_FILE,
    ensure_text_file,
    face_config_yaml,
    publish_version,
    sha256,
    write_model_card,
)
from twinfer.training.train_face import Evaluation, Progress, TrainSettings, evaluate, torch_predictor, train_face_model

DESCRIPTION = ("A 1x128x128 grayscale face image (values in [0, 1]) -> the 52 ARKit blendshape weights in [0, 1] "
               "(output `blendshapes`, labelled with the ARKit names). A small CNN (five stride-2 convolutions, "
               "two dense layers, ~235k parameters) that runs in well under a millisecond per face on one CPU core.")
DATA = ("Procedural faces from twinfer.sources.synthetic_face: random expressions (each shape 0, 1 or uniform) in "
        "random scenes (yaw +-26 deg, pitch +-17 deg, roll +-17 deg, scale 0.85-1.12, shifts +-6 %, directional "
        "light, skin and background grey levels, contrast, Gaussian sensor noise up to 0.05, 8-bit quantised). "
        "No real faces and no downloaded data.")
LIMITS = ("Trained on synthetic cartoon faces only: it tracks the renderer's faces (what `twinfer stream --source "
          "synthetic` sends), not real people. Only the driven shapes carry information; the other ARKit outputs are "
          "near 0 by construction. A real tracker needs real, labelled data through the same pipeline.")


@dataclass
class FaceTrainOptions:
    repository: Path
    model_name: str = "face_blendshapes"
    formats: tuple[str, ...] = ("onnx", "torchscript")
    settings: TrainSettings = field(default_factory=TrainSettings)
    publish_anyway: bool = False  # publish a version that misses its gate (a deliberately bad model, tests)


class _ConsoleProgress(Progress):
    """A rich progress bar on a terminal; a line every 10 % otherwise (CI logs)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.bar = None
        self.tasks: dict[str, int] = {}
        self.last_tenth: dict[str, int] = {}
        if out.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as Bar

            self.bar = Bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                           TextColumn("{task.fields[info]}"), TimeRemainingColumn())
            self.bar.start()

    def _update(self, key: str, label: str, done: int, total: int, info: str = "") -> None:
        if self.bar is not None:
            if key not in self.tasks:
                self.tasks[key] = self.bar.add_task(label, total=total, info="")
            self.bar.update(self.tasks[key], completed=done, info=info)
            return
        tenth = done * 10 // max(total, 1)
        if tenth != self.last_tenth.get(key):
            self.last_tenth[key] = tenth
            print(f"{label} {done}/{total} {info}".rstrip(), file=self.out, flush=True)

    def data(self, done: int, total: int) -> None:
        self._update("data", "rendering faces", done, total)

    def step(self, step: int, total: int, epoch: int, loss: float) -> None:
        self._update("train", "training", step, total, f"epoch {epoch} loss {loss:.4f}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _held_out(model_dir: Path, out: TextIO) -> tuple[np.ndarray, np.ndarray]:
    path = model_dir / VALIDATION_FILE
    if not path.exists():
        write_validation_set(path, IMAGE_SIZE)
        print(f"wrote the held-out set {path} (seed {VALIDATION_SEED})", file=out)
    with np.load(path, allow_pickle=False) as data:
        return data[INPUT_NAME], data[OUTPUT_NAME]


def run_face_training(options: FaceTrainOptions, out: TextIO = sys.stdout) -> Path:
    """Train, evaluate, publish; returns the new version directory."""
    options.settings.check()
    export_steps = exporters(list(options.formats))  # refuse unknown formats before minutes of training
    model_dir = options.repository / options.model_name
    model_dir.mkdir(parents=True, exist_ok=True)
    images, targets = _held_out(model_dir, out)

    progress = _ConsoleProgress(out)
    try:
        result = train_face_model(options.settings, progress)
    finally:
        progress.close()
    evaluation = evaluate(torch_predictor(result.model), images, targets)
    print(f"held-out MAE {evaluation.mae:.4f} (driven shapes {evaluation.mae_driven:.4f}, worst "
          f"{evaluation.worst[0]} {evaluation.worst[1]:.4f}) after {result.steps} steps, "
          f"{result.data_seconds + result.train_seconds:.0f} s", file=out)

    if ensure_text_file(model_dir / "config.yaml", face_config_yaml(list(ARKIT_BLENDSHAPES))):
        print(f"wrote {model_dir / 'config.yaml'} (labels, batching, validation gate)", file=out)

    def write_files(staging: Path) -> None:
        for filename, export in export_steps:
            started = time.monotonic()
            export(result.model, staging / filename)
            print(f"exported {filename} ({time.monotonic() - started:.1f} s)", file=out)
        _check_gate(model_dir, staging, options.publish_anyway, out)
        card = _card(options, result.as_dict(), evaluation, staging)
        write_model_card(staging, card)

    version_dir = publish_version(model_dir, write_files)
    # The number is only known once the rename has claimed it; the card (which the server never reads) follows.
    card = json.loads((version_dir / "model_card.json").read_text(encoding="utf-8"))
    card["version"] = int(version_dir.name)
    write_model_card(version_dir, card)
    print(f"published {version_dir}", file=out)
    return version_dir


def _check_gate(model_dir: Path, staging: Path, publish_anyway: bool, out: TextIO) -> None:
    """The server's own decision, made here on the staged files: its config (config.yaml), its loader, its gate."""
    from twinfer.backends import BackendOptions
    from twinfer.inference.config_loading import find_model_file, load_model_config
    from twinfer.inference.model_version import load_and_warm

    model_file = find_model_file(staging)
    if model_file is None:
        return
    config = load_model_config(model_dir, model_file)
    if config.validation is None:
        print(f"{model_dir / 'config.yaml'} has no validation gate: nothing to check", file=out)
        return
    try:
        load_and_warm(config, model_file, BackendOptions()).close()
    except ModelLoadError as exc:
        if not publish_anyway:
            raise VersionRefused(f"not published: {exc} (train longer, e.g. the defaults, or pass "
                                 "--publish-anyway to publish it for a server to refuse)") from None
        print(f"WARNING: misses its validation gate, published anyway (--publish-anyway): {exc}", file=out)
        return
    print(f"passes its validation gate ({config.validation.max_mae} MAE, "
          f"{config.validation.max_mae_per_value} per value)", file=out)


def _card(options: FaceTrainOptions, training: dict, evaluation: Evaluation, staging: Path) -> dict:
    return {
        "model": options.model_name,
        "version": None,  # filled in once published
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "twinfer": twinfer.__version__,
        "description": DESCRIPTION,
        "inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, 1, IMAGE_SIZE, IMAGE_SIZE]}],
        "outputs": [{"name": OUTPUT_NAME, "datatype": "FP32", "shape": [-1, len(ARKIT_BLENDSHAPES)],
                     "labels": "ARKit blendshape names (twinfer.arkit)"}],
        "data": {"description": DATA, "image_size": IMAGE_SIZE, "driven": list(DRIVEN),
                 "validation_seed": VALIDATION_SEED, "validation_file": VALIDATION_FILE},
        "training": training,
        "metrics": evaluation.as_dict(),
        "files": {p.name: sha256(p) for p in sorted(staging.iterdir())},
        "limits": LIMITS,
    }
