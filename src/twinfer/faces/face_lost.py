"""Face lost: every value eases from the last tracked reading to neutral, linearly, within `ease_s` of the last
tracked frame (frame timestamps). Nothing computed from a frame without a face is ever sent: a lost frame's output
is built from the last tracked reading alone."""

from __future__ import annotations

import numpy as np

from twinfer.faces.reading import CalibrationState, FaceReading

DEFAULT_EASE_S = 0.5


class FaceLostEasing:
    def __init__(self, ease_s: float = DEFAULT_EASE_S) -> None:
        if not ease_s > 0:
            raise ValueError(f"ease_s must be > 0, got {ease_s}")
        self.ease_s = ease_s
        self._last: FaceReading | None = None
        self._last_at = 0.0

    def tracked(self, reading: FaceReading, timestamp_s: float) -> FaceReading:
        self._last, self._last_at = reading, timestamp_s
        return reading

    def lost(self, timestamp_s: float, score: float, calibration: CalibrationState) -> FaceReading:
        last = self._last
        weight = 0.0 if last is None else min(1.0, max(0.0, 1.0 - (timestamp_s - self._last_at) / self.ease_s))
        if last is None or weight == 0.0:
            self._last = None
            return _with_score(FaceReading.neutral(calibration), score)
        w = np.float32(weight)
        return FaceReading(False, float(score), last.blendshapes * w, last.head_rotation * w,
                           last.head_translation * w, last.left_eye * w, last.right_eye * w, calibration)


def _with_score(reading: FaceReading, score: float) -> FaceReading:
    return FaceReading(False, float(score), reading.blendshapes, reading.head_rotation, reading.head_translation,
                       reading.left_eye, reading.right_eye, reading.calibration)
