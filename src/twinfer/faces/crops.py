"""MediaPipe face-mesh regions: detection -> face ROI, landmarks -> next frame's ROI and eye ROIs, and the model
tensors for them (crops in, points out, in frame pixels).

The rules follow MediaPipe's graphs (modules/face_landmark/face_detection_front_detection_to_roi.pbtxt,
face_landmark_landmarks_to_roi.pbtxt, face_landmark_cpu.pbtxt, modules/iris_landmark/iris_landmark_cpu.pbtxt and
iris_landmark_left_and_right_*.pbtxt):
- face ROI from a detection: the box centre, rotated so the eye keypoints lie on a horizontal line, long side
  squared and scaled 1.5;
- face ROI from landmarks (tracking): the landmarks' bounding box centre, rotation from eye corners 33 -> 263,
  long side squared and scaled 1.5;
- landmark crop 192 x 192, border replicated, RGB in [0, 1]; 468 points x, y, z back to frame pixels, z scaled
  like x; presence = sigmoid of the face-flag logit;
- eye ROIs from corners 33 -> 133 (the eye on the image's left, MediaPipe's "left eye", the subject's right) and
  362 -> 263 (the image's right), long side squared and scaled 2.3, 64 x 64, RGB in [0, 1]. The iris model was
  trained on one side: MediaPipe mirrors the image-right eye (IS_RIGHT_EYE: FLIP_HORIZONTALLY), and so do we.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from twinfer.faces.detection import LEFT_EYE, RIGHT_EYE, Detection
from twinfer.faces.roi import Roi, crop, rotation_between, square_roi

LANDMARK_SIZE = 192
IRIS_SIZE = 64
NUM_LANDMARKS = 468
FACE_ROI_SCALE = 1.5
EYE_ROI_SCALE = 2.3
ROTATION_START, ROTATION_END = 33, 263  # outer eye corners: image-left eye, image-right eye
IMAGE_LEFT_EYE = (33, 133)   # outer, inner corner of the eye on the image's left
IMAGE_RIGHT_EYE = (362, 263)  # inner, outer corner of the eye on the image's right (its crop is mirrored)
MIN_PRESENCE = 0.5


def roi_from_detection(detection: Detection) -> Roi:
    """The face ROI for the landmark model from a BlazeFace detection (MediaPipe's detection_to_roi)."""
    box = detection.box
    rotation = rotation_between(detection.keypoints[RIGHT_EYE], detection.keypoints[LEFT_EYE])
    return square_roi((box[0] + box[2]) / 2, (box[1] + box[3]) / 2, box[2] - box[0], box[3] - box[1],
                      rotation, FACE_ROI_SCALE)


def roi_from_landmarks(landmarks: np.ndarray) -> Roi:
    """The next frame's face ROI from this frame's 468 landmarks (frame pixels; MediaPipe's landmarks_to_roi)."""
    xy = np.asarray(landmarks)[:, :2]
    low, high = xy.min(axis=0), xy.max(axis=0)
    rotation = rotation_between(xy[ROTATION_START], xy[ROTATION_END])
    return square_roi((low[0] + high[0]) / 2, (low[1] + high[1]) / 2, high[0] - low[0], high[1] - low[1],
                      rotation, FACE_ROI_SCALE)


def landmark_input(frame: np.ndarray, roi: Roi) -> np.ndarray:
    """HxWx3 uint8 RGB frame -> the 192x192x3 float32 crop in [0, 1] for `face_landmarks`."""
    return crop(frame, roi, LANDMARK_SIZE, border="replicate") * np.float32(1.0 / 255.0)


def sigmoid(x: np.ndarray | float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(np.asarray(x, dtype=np.float64), -80.0, 80.0)))


@dataclass(frozen=True)
class FaceLandmarks:
    """468 x 3 points in frame pixels (z scaled like x, relative to the face centre) and the presence score."""

    points: np.ndarray
    presence: float

    @property
    def present(self) -> bool:
        return self.presence >= MIN_PRESENCE


def decode_landmarks(landmarks: np.ndarray, face_flag: np.ndarray, roi: Roi) -> FaceLandmarks:
    """One crop's `face_landmarks` outputs (1404 values and one logit, any leading axes) -> frame pixels."""
    points = np.asarray(landmarks, dtype=np.float64).reshape(NUM_LANDMARKS, 3)
    return FaceLandmarks(roi.to_frame(points, LANDMARK_SIZE), float(sigmoid(np.ravel(face_flag)[0])))


@dataclass(frozen=True)
class EyeRoi:
    """One eye's crop region; `flipped` is True for the image-right eye, mirrored for the iris model."""

    roi: Roi
    flipped: bool


def eye_rois(landmarks: np.ndarray) -> tuple[EyeRoi, EyeRoi]:
    """(image-left eye, image-right eye) ROIs from the 468 face landmarks in frame pixels."""
    xy = np.asarray(landmarks)[:, :2]
    out = []
    for (start, end), flipped in ((IMAGE_LEFT_EYE, False), (IMAGE_RIGHT_EYE, True)):
        a, b = xy[start], xy[end]
        low, high = np.minimum(a, b), np.maximum(a, b)
        roi = square_roi((low[0] + high[0]) / 2, (low[1] + high[1]) / 2, high[0] - low[0], high[1] - low[1],
                         rotation_between(a, b), EYE_ROI_SCALE)
        out.append(EyeRoi(roi, flipped))
    return out[0], out[1]


def iris_input(frame: np.ndarray, eye: EyeRoi) -> np.ndarray:
    """HxWx3 uint8 RGB frame -> one 64x64x3 float32 eye crop in [0, 1] for `iris_landmarks` (mirrored if so)."""
    return crop(frame, eye.roi, IRIS_SIZE, border="replicate", flip=eye.flipped) * np.float32(1.0 / 255.0)


@dataclass(frozen=True)
class EyeLandmarks:
    """One eye in frame pixels: 71 contour and brow points and 5 iris points (centre first), x, y, z."""

    contour: np.ndarray
    iris: np.ndarray

    @property
    def iris_centre(self) -> np.ndarray:
        return self.iris[0, :2]


def decode_iris(contour: np.ndarray, iris: np.ndarray, eye: EyeRoi) -> EyeLandmarks:
    """One crop's `iris_landmarks` outputs (213 and 15 values) -> frame pixels, undoing the mirror."""
    contour_points = np.asarray(contour, dtype=np.float64).reshape(71, 3)
    iris_points = np.asarray(iris, dtype=np.float64).reshape(5, 3)
    return EyeLandmarks(eye.roi.to_frame(contour_points, IRIS_SIZE, eye.flipped),
                        eye.roi.to_frame(iris_points, IRIS_SIZE, eye.flipped))
