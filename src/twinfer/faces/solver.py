"""FaceSolver: one stream's face state (calibration, face-lost easing, an optional smoothing hook) and the one call
the tracker makes per frame, after its model calls: landmarks (+ iris) -> FaceReading.

Pure numpy, no models and no server: the geometry lives in head_pose, gaze, blendshapes; this class only chains
them and keeps what must survive from frame to frame. Time is the frames' own timestamps.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from twinfer.faces.blendshapes import solve_blendshapes
from twinfer.faces.calibration import DEFAULT_MIN_SAMPLES, Calibration
from twinfer.faces.face_lost import DEFAULT_EASE_S, FaceLostEasing
from twinfer.faces.gaze import gaze
from twinfer.faces.head_pose import DEFAULT_HFOV_RAD, DegenerateLandmarks, estimate_head_pose, rotation_to_angles
from twinfer.faces.reading import CalibrationState, FaceReading

DEFAULT_SCORE_THRESHOLD = 0.5   # MediaPipe's default min tracking confidence for its face-presence score
# A second gate behind the score: how far the skull-fixed points may sit from the canonical face's shape (RMS, after
# the fit). Measured: 0.3-0.5 mm on the astronaut's fixtures, 1.7 mm on her mirrored photo, 8.4 mm on a cat's face
# the model meshed, 74 mm on a left-handed (mirrored, unrelabelled) mesh. Real faces differ from the canonical one
# by a few millimetres, so the bound leaves room for them and is no substitute for the score.
DEFAULT_MAX_FIT_RESIDUAL_M = 0.007

Smoother = Callable[[FaceReading, float], FaceReading]


class FaceSolver:
    """Per stream. `smoother(reading, timestamp_s)` (e.g. a One Euro filter) runs on tracked readings only."""

    def __init__(self, score_threshold: float = DEFAULT_SCORE_THRESHOLD, hfov_rad: float = DEFAULT_HFOV_RAD,
                 ease_s: float = DEFAULT_EASE_S, smoother: Smoother | None = None,
                 max_fit_residual_m: float = DEFAULT_MAX_FIT_RESIDUAL_M) -> None:
        self.score_threshold = score_threshold
        self.max_fit_residual_m = max_fit_residual_m
        self.hfov_rad = hfov_rad
        self.smoother = smoother
        self.calibration = Calibration()
        self._easing = FaceLostEasing(ease_s)

    @property
    def calibration_state(self) -> CalibrationState:
        return self.calibration.state

    def calibrate(self, seconds: float, min_samples: int = DEFAULT_MIN_SAMPLES) -> None:
        """Take the user's neutral face over the next `seconds` of tracked frames."""
        self.calibration.calibrate(seconds, min_samples)

    def reset_calibration(self) -> None:
        self.calibration.reset()

    def solve(self, landmarks: np.ndarray | None, iris: np.ndarray | None, score: float,
              frame_size: tuple[int, int], timestamp_s: float, include_landmarks: bool = False) -> FaceReading:
        """One frame. `landmarks` (468, 3): the face-mesh model's output mapped to the frame's pixels (x right,
        y down, z in x's units, smaller = closer); `iris` (2, 5, 3) in the same units, [0] the person's left eye
        (mesh corners 362/263; MediaPipe's graphs call it the "right" eye, by image side), [1] the person's right
        (33/133), each the iris model's 5 points with the centre first, or None; `score` the face-present
        probability (0..1, after the sigmoid); `frame_size` (width, height). Below the score threshold, or with
        landmarks that cannot be a face (non-finite, or too far from a face's shape), the frame is lost: values
        ease to neutral and none come from it."""
        if landmarks is None or not score >= self.score_threshold:
            return self._lost(timestamp_s, score)
        try:
            pose = estimate_head_pose(landmarks, frame_size, self.hfov_rad)
        except DegenerateLandmarks:
            return self._lost(timestamp_s, score)
        if not pose.fit_residual_m <= self.max_fit_residual_m:
            return self._lost(timestamp_s, score)
        face = pose.to_face_frame(np.asarray(landmarks)[:468])
        left_eye, right_eye = gaze(pose, face, iris)
        shapes = solve_blendshapes(face, left_eye, right_eye)
        self.calibration.observe(timestamp_s, shapes, pose.rotation, left_eye, right_eye)
        shapes, rotation, left_eye, right_eye = self.calibration.apply(shapes, pose.rotation, left_eye, right_eye)
        reading = FaceReading(
            tracked=True, score=float(score), blendshapes=np.asarray(shapes, np.float32),
            head_rotation=rotation_to_angles(rotation).astype(np.float32),
            head_translation=pose.translation.astype(np.float32),
            left_eye=np.asarray(left_eye, np.float32), right_eye=np.asarray(right_eye, np.float32),
            calibration=self.calibration.state,
            landmarks=np.asarray(landmarks, np.float32) if include_landmarks else None)
        if self.smoother is not None:
            reading = self.smoother(reading, timestamp_s)
        return self._easing.tracked(reading, timestamp_s)

    def _lost(self, timestamp_s: float, score: float) -> FaceReading:
        return self._easing.lost(timestamp_s, float(score) if np.isfinite(score) else 0.0, self.calibration.state)
