"""What the face tracker reads from one frame: the one type the tracker produces and every output encodes.

Conventions (ARKit's face anchor frame, so engines that take ARKit data need no conversion of their own):
right-handed, x towards the viewer's right (the person's own left), y up, z out of the face towards the camera.
Angles are radians: yaw about +y, pitch about +x, roll about +z, each positive by the right-hand rule. Each output
format converts to its receiver's convention and says so where it does (VMC: Unity's left-handed axes; Live Link:
Live Link Face's channels).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np


class CalibrationState(enum.IntEnum):
    """Per stream. VMC's `/VMC/Ext/OK` carries it as its calibration state."""

    NONE = 0         # no neutral face taken: raw solver values
    CALIBRATING = 1  # taking the user's neutral face now
    CALIBRATED = 2   # values are relative to the user's neutral face


@dataclass(frozen=True, slots=True)
class FaceReading:
    tracked: bool                  # a face is tracked in this frame; False: values are easing to neutral
    score: float                   # face-present score, 0..1
    blendshapes: np.ndarray        # (52,) float32 in twinfer.arkit.ARKIT_BLENDSHAPES order, each 0..1
    head_rotation: np.ndarray      # (3,) float32: yaw, pitch, roll in radians
    head_translation: np.ndarray   # (3,) float32: metres, camera frame (x right, y up, z towards the camera)
    left_eye: np.ndarray           # (2,) float32: the person's left eye, yaw and pitch in radians
    right_eye: np.ndarray          # (2,) float32: the person's right eye
    calibration: CalibrationState = CalibrationState.NONE
    landmarks: np.ndarray | None = None  # (N, 3) float32 in the frame's pixels (x, y, z) when the stream asked

    @staticmethod
    def neutral(calibration: CalibrationState = CalibrationState.NONE) -> FaceReading:
        """No face: every value at rest."""
        zeros = np.zeros
        return FaceReading(False, 0.0, zeros(52, np.float32), zeros(3, np.float32), zeros(3, np.float32),
                           zeros(2, np.float32), zeros(2, np.float32), calibration)
