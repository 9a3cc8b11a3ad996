"""Train the face model with the shipped settings and copy it into the package (twinfer/data/face_blendshapes), so
`make models` serves it on machines without PyTorch. `make ship-face-model`; takes ~8 minutes on 2 cores.

The copy is the ONNX file and its model card; the card records the settings, the held-out error and the file's
sha256, so anyone can retrain and compare.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from twinfer.training.face_command import FaceTrainOptions, run_face_training
from twinfer.training.train_face import TrainSettings

SHIPPED = Path(__file__).resolve().parent.parent / "src" / "twinfer" / "data" / "face_blendshapes"
SETTINGS = TrainSettings(samples=64_000, epochs=6, seed=0)


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        version = run_face_training(FaceTrainOptions(Path(tmp), formats=("onnx",), settings=SETTINGS))
        SHIPPED.mkdir(parents=True, exist_ok=True)
        for name in ("model.onnx", "model_card.md", "model_card.json"):
            shutil.copyfile(version / name, SHIPPED / name)
            print(f"copied {name} -> {SHIPPED / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
