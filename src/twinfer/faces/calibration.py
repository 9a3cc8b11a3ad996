"""Per-stream calibration: take the user's neutral face, then read every value relative to it.

NONE -> (calibrate(seconds)) -> CALIBRATING: from the first tracked frame on, for `seconds` of frame time (frame
timestamps, never the wall clock), the raw values of tracked frames are collected; lost frames are skipped and
calibration waits for at least `min_samples` tracked frames -> CALIBRATED. A new calibrate() starts over; reset()
goes back to NONE.

What is taken and how it is applied (decided here, the one place):
- each blendshape's neutral value n (mean over the samples, capped at `MAX_NEUTRAL` so the range never collapses)
  maps v -> clip((v - n) / (1 - n), 0, 1): the neutral face reads 0 and a full 1 still reads 1;
- the head rotation's neutral (the mean rotation): reported rotations become relative to it (R @ R_neutral^T), so
  a camera placed above or beside the screen does not read as a turned head;
- each eye's neutral (yaw, pitch), subtracted, so the user's resting gaze (at the screen) reads straight ahead.
The head translation is not offset: it stays the head's position in the camera frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from twinfer.faces.reading import CalibrationState

MAX_NEUTRAL = 0.8
DEFAULT_MIN_SAMPLES = 3


@dataclass(frozen=True, slots=True)
class Neutral:
    blendshapes: np.ndarray    # (52,)
    rotation: np.ndarray       # (3, 3)
    left_eye: np.ndarray       # (2,)
    right_eye: np.ndarray      # (2,)


def mean_rotation(rotations: list[np.ndarray]) -> np.ndarray:
    """The rotation nearest (Frobenius) to the mean matrix: the chordal mean, exact enough for small spreads."""
    u, _, vt = np.linalg.svd(np.mean(rotations, axis=0))
    d = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
    return u @ d @ vt


class Calibration:
    def __init__(self) -> None:
        self.state = CalibrationState.NONE
        self.neutral: Neutral | None = None
        self._seconds = 0.0
        self._min_samples = DEFAULT_MIN_SAMPLES
        self._started_at: float | None = None
        self._samples: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []

    def calibrate(self, seconds: float, min_samples: int = DEFAULT_MIN_SAMPLES) -> None:
        if not seconds >= 0:
            raise ValueError(f"calibration seconds must be >= 0, got {seconds}")
        self.state = CalibrationState.CALIBRATING
        self.neutral = None
        self._seconds, self._min_samples = float(seconds), max(1, int(min_samples))
        self._started_at = None
        self._samples = []

    def reset(self) -> None:
        self.state = CalibrationState.NONE
        self.neutral = None
        self._samples = []

    def observe(self, timestamp_s: float, blendshapes: np.ndarray, rotation: np.ndarray, left_eye: np.ndarray,
                right_eye: np.ndarray) -> None:
        """One tracked frame's raw values (call only for tracked frames)."""
        if self.state is not CalibrationState.CALIBRATING:
            return
        if self._started_at is None:
            self._started_at = timestamp_s
        if timestamp_s - self._started_at <= self._seconds or len(self._samples) < self._min_samples:
            self._samples.append((np.asarray(blendshapes, np.float64), np.asarray(rotation, np.float64),
                                  np.asarray(left_eye, np.float64), np.asarray(right_eye, np.float64)))
        if timestamp_s - self._started_at >= self._seconds and len(self._samples) >= self._min_samples:
            shapes, rots, lefts, rights = zip(*self._samples)
            self.neutral = Neutral(np.minimum(np.mean(shapes, axis=0), MAX_NEUTRAL), mean_rotation(list(rots)),
                                   np.mean(lefts, axis=0), np.mean(rights, axis=0))
            self.state = CalibrationState.CALIBRATED
            self._samples = []

    def apply(self, blendshapes: np.ndarray, rotation: np.ndarray, left_eye: np.ndarray, right_eye: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Values relative to the neutral face (unchanged until CALIBRATED)."""
        n = self.neutral
        if self.state is not CalibrationState.CALIBRATED or n is None:
            return blendshapes, rotation, left_eye, right_eye
        shapes = np.clip((blendshapes - n.blendshapes) / (1.0 - n.blendshapes), 0.0, 1.0)
        return shapes, rotation @ n.rotation.T, left_eye - n.left_eye, right_eye - n.right_eye
