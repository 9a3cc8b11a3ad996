"""`face_tracker`: a repository entry that names the models a stream's face tracker runs, not a graph to run.

A face tracker keeps state from frame to frame (the face region, calibration, easing) and calls three models per
frame (detector, landmarks, iris), so it lives with each stream (`twinfer.streaming.face_processor`) and calls
those models through the facade, where frames of every stream batch together. This backend makes the entry an
ordinary model of the repository all the same: versioned (`<version>/tracker.yaml`, the solver's settings), hot
reloaded, listed and described on every transport. A plain infer request cannot carry a stream's state, so it is
refused with a message saying what to do instead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from twinfer.errors import InvalidInput, ModelLoadError
from twinfer.inference.model_config import ModelConfig

TRACKER_FILE = "tracker.yaml"
_NUMBERS = {"score_threshold", "hfov_deg", "ease_s"}
_SWITCHES = {"batch_across_streams"}  # streaming.face_processor: run frames inline (False) or through the facade
_KEYS = _NUMBERS | _SWITCHES


class FaceTrackerBackend:
    def __init__(self, config: ModelConfig, path: Path) -> None:
        self.name = config.name
        try:
            settings = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
            raise ModelLoadError(f"model {config.name!r}: {path} is not readable YAML: {exc}") from None
        if not isinstance(settings, dict) or set(settings) - _KEYS:
            raise ModelLoadError(f"model {config.name!r}: {path}: expected a mapping of {', '.join(sorted(_KEYS))}")
        for key, value in settings.items():
            if key in _SWITCHES:
                if not isinstance(value, bool):
                    raise ModelLoadError(f"model {config.name!r}: {path}: {key} must be true or false")
            elif isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value <= 0:
                raise ModelLoadError(f"model {config.name!r}: {path}: {key} must be a positive number")
        self.settings: dict[str, float | bool] = {
            k: v if k in _SWITCHES else float(v) for k, v in settings.items()}

    def run(self, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        raise InvalidInput(
            f"{self.name} tracks faces across a stream's frames: open a stream on it (`twinfer stream --model "
            f"{self.name}`, or OpenStreamRequest); for single images call its models (face_detector, "
            "face_landmarks, iris_landmarks) directly"
        )

    def close(self) -> None:
        pass
