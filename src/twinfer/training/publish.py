"""Publishing a trained model as a new version directory of a model repository, the only hand-over between
training and serving.

Everything is written into a hidden staging directory inside the model directory (same file system), then renamed
to the next version number in one step: a server polling the repository sees no version, or a complete one. The
model's config.yaml and its validation set are written when missing (never overwritten: they are the operator's),
so a repository that did not have the model yet is servable, gated and labelled after one run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import yaml

from twinfer.atomic_files import write_atomically

VALIDATION_FILE = "validation.npz"
# The gate written into a new face model's config: the "MAE per blendshape < 0.08", and an overall bound
# (over all 52 outputs, most of which are 0) that a model predicting the mean of every shape misses by far.
GATE_MAX_MAE = 0.04
GATE_MAX_MAE_PER_VALUE = 0.08


def next_version(model_dir: Path) -> int:
    versions = [int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()]
    return max(versions, default=0) + 1


def sha256(path: Path) -> str:
    """Of a file's bytes (what `sha256sum` prints), or of a directory's files (relative path and bytes, in name
    order: a SavedModel)."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def ensure_text_file(path: Path, text: str) -> bool:
    """Write `path` if it does not exist; True when written."""
    if path.exists():
        return False
    write_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return True


def publish_version(model_dir: Path, write_files: Callable[[Path], None]) -> Path:
    """Run `write_files(staging_dir)`, then rename the staging directory to the next free version number.

    A concurrent publisher taking the same number makes the rename fail (the target exists and is not empty); the
    next number is tried. A failure anywhere removes the staging directory: nothing half-written is left.
    """
    model_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=model_dir))
    try:
        write_files(staging)
        for path in staging.rglob("*"):
            os.chmod(path, 0o755 if path.is_dir() else 0o644)  # readable by a server running as another user
        os.chmod(staging, 0o755)
        for _ in range(100):
            target = model_dir / str(next_version(model_dir))
            try:
                os.rename(staging, target)
                return target
            except OSError:
                if not target.exists():
                    raise
        raise RuntimeError(f"{model_dir}: could not claim a version number")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def write_model_card(directory: Path, card: dict) -> None:
    """model_card.json (for tools) and model_card.md (for people), from one dict, each replaced atomically."""
    for name, text in (("model_card.json", json.dumps(card, indent=2) + "\n"),
                       ("model_card.md", model_card_markdown(card))):
        write_atomically(directory / name, lambda tmp, text=text: tmp.write_text(text, encoding="utf-8"))


def model_card_markdown(card: dict) -> str:
    metrics = card["metrics"]
    training = card["training"]
    settings = training["settings"]
    lines = [
        f"# {card['model']} version {card['version']}",
        "",
        (f"Trained {card['date']} by `twinfer train face-blendshapes` (twinfer {card['twinfer']}, "
        f"PyTorch {training['torch']})."),
        "",
        "## What it does",
        card["description"],
        "",
        "## Data",
        card["data"]["description"],
        "",
        (f"- training: {settings['samples']} rendered faces, seed {settings['seed']}, "
        f"{card['data']['image_size']}x{card['data']['image_size']} grayscale"),
        f"- held-out: {metrics['samples']} faces from seed {card['data']['validation_seed']} (never trained on)",
        f"- shapes driven: {', '.join(card['data']['driven'])}; the other ARKit shapes are trained to 0",
        "",
        "## Training",
        (f"- {training['steps']} steps ({settings['epochs']} epochs max, batch {settings['batch_size']}, "
        f"Adam one-cycle lr {settings['learning_rate']}), {settings['threads']} CPU threads"),
        (f"- rendering {training['data_seconds']} s, training {training['train_seconds']} s, "
        f"final training loss (MSE) {training['final_loss']:.5f}"),
        "",
        "## Held-out error (mean absolute error, values in [0, 1])",
        (f"- all 52 outputs: {metrics['mae']:.4f}; the driven shapes: {metrics['mae_driven']:.4f}; "
        f"worst output: {metrics['worst'][0]} {metrics['worst'][1]:.4f}"),
        "",
        "| shape | MAE |",
        "|---|---|",
        *[f"| {name} | {value:.4f} |" for name, value in metrics["per_shape"].items()],
        "",
        "## Files",
        *[f"- `{name}`: sha256 {digest}" for name, digest in card["files"].items()],
        "",
        "## Limits",
        card["limits"],
        "",
    ]
    return "\n".join(lines)


def face_config_yaml(labels: list[str], validation_file: str = VALIDATION_FILE, max_mae: float = GATE_MAX_MAE,
                     max_mae_per_value: float = GATE_MAX_MAE_PER_VALUE, header: str | None = None) -> str:
    """The face model's config.yaml: batching for many 60 fps streams, ARKit labels (so VMC / Live Link receivers
    get names), the validation gate."""
    config = {
        "backend": "onnxruntime",
        "max_batch_size": 64,
        "dynamic_batching": {"max_queue_delay_us": 500, "preferred_batch_sizes": [8, 16]},
        "outputs": [{"name": "blendshapes", "labels": labels}],
        "validation": {"dataset": validation_file, "max_mae": max_mae, "max_mae_per_value": max_mae_per_value},
    }
    header = header or ("# Written by `twinfer train face-blendshapes` when the model had no config; edit freely, it is never\n"
              "# overwritten. `validation` is the gate a new version must pass before it takes traffic.\n")
    return header + yaml.safe_dump(config, sort_keys=False, default_flow_style=None, width=100)
