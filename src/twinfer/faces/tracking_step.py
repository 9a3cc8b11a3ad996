"""Per stream, per frame: the vision steps before the solver, as separate calls around the three model calls.

A stream's processor owns one `FaceTrackingStep`. For each frame (HxWx3 uint8 RGB; `as_rgb` turns grey or
RGBA frames into that, `track` does it itself):

1. `detection_call(frame)` -> a `ModelCall` for `face_detector`, or None while a face is tracked (the ROI then
   comes from the previous frame's landmarks, as in MediaPipe); its outputs go to `accept_detection`, which
   returns the face ROI (None: no face in this frame; the frame is finished).
2. `landmarks_call(frame)` -> a `ModelCall` for `face_landmarks` on the aligned 192x192 crop; its outputs go to
   `accept_landmarks`, which returns the 468 landmarks and presence. Presence under 0.5 drops tracking (the next
   frame runs the detector) and finishes the frame.
3. `iris_call(frame)` -> one `ModelCall` for `iris_landmarks` with both eye crops (batch 2: image-left eye, then
   the mirrored image-right eye); its outputs go to `accept_iris`, which returns the finished `TrackedFace`.

The processor sends each call through the inference facade (`InferenceRequest(call.model, call.inputs)`), so
the calls of all streams meet in each model's dynamic batcher and run as one batch. Tensor formats are in
twinfer.faces.model_specs; every `ModelCall.inputs` array already has its leading batch axis, and each accept
method takes the facade's outputs for that call as they come ({name: array with the batch axis}).

`track` (blocking) and `track_async` (awaits each call, e.g. Deferreds from the facade) run the three steps for
callers that need no interleaving of their own.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np

from twinfer.faces import crops
from twinfer.faces.detection import Detection, decode, detector_input
from twinfer.faces.model_specs import FACE_DETECTOR, FACE_LANDMARKS, IRIS_LANDMARKS
from twinfer.faces.roi import Roi

Outputs = dict[str, np.ndarray]


def as_rgb(frame: np.ndarray) -> np.ndarray:
    """An HxWx3 view of a camera frame: grey (HxW or HxWx1) is repeated, RGBA drops its alpha."""
    if frame.ndim == 2:
        frame = frame[..., None]
    if frame.ndim != 3 or frame.shape[2] not in (1, 3, 4):
        raise ValueError(f"a frame is HxW, HxWx1, HxWx3 or HxWx4; got shape {frame.shape}")
    if frame.shape[2] == 1:
        return np.repeat(frame, 3, axis=2)
    return frame[..., :3]


@dataclass(frozen=True)
class ModelCall:
    """One request for the facade: model name and batched inputs."""

    model: str
    inputs: dict[str, np.ndarray]


@dataclass(frozen=True)
class TrackedFace:
    """What the vision steps found in one frame (frame pixels; z scaled like x)."""

    landmarks: np.ndarray                  # (468, 3)
    presence: float                        # sigmoid of the face flag, 0..1
    roi: Roi                               # the face crop these landmarks came from
    detected: bool                         # True: the ROI came from the detector this frame
    image_left_eye: crops.EyeLandmarks     # the subject's right eye on an unmirrored camera image
    image_right_eye: crops.EyeLandmarks


class Phase(enum.Enum):
    DETECT = "detect"
    LANDMARKS = "landmarks"
    IRIS = "iris"


class StepOrderError(RuntimeError):
    """A step was called out of order for this frame (a processor bug, not a user error)."""


class FaceTrackingStep:
    """The per-stream state (the face ROI carried from frame to frame) and the per-frame steps."""

    def __init__(self, min_presence: float = crops.MIN_PRESENCE, min_detection_score: float = 0.5) -> None:
        self.min_presence = min_presence
        self.min_detection_score = min_detection_score
        self._tracked_roi: Roi | None = None  # from the previous frame's landmarks
        self._roi: Roi | None = None          # this frame's face ROI
        self._detected = False
        self._face: crops.FaceLandmarks | None = None
        self._eyes: tuple[crops.EyeRoi, crops.EyeRoi] | None = None
        self._frame_size: tuple[int, int] = (0, 0)
        self._phase = Phase.DETECT

    @property
    def tracking(self) -> bool:
        """True when the next frame takes its ROI from landmarks and skips the detector."""
        return self._tracked_roi is not None

    def reset(self) -> None:
        """Forget the tracked face (e.g. the stream jumped): the next frame runs the detector."""
        self._tracked_roi = None
        self._phase = Phase.DETECT

    def _expect(self, phase: Phase) -> None:
        if self._phase is not phase:
            raise StepOrderError(f"{phase.value} step called while the frame is at the {self._phase.value} step")

    # --- 1. detector (only when no face is tracked) ---------------------------------------------------------

    def detection_call(self, frame: np.ndarray) -> ModelCall | None:
        """Start a frame. None: a face is tracked, go straight to `landmarks_call`."""
        self._phase = Phase.DETECT
        self._frame_size = (frame.shape[1], frame.shape[0])
        if self._tracked_roi is not None:
            self._roi, self._detected = self._tracked_roi, False
            self._phase = Phase.LANDMARKS
            return None
        return ModelCall(FACE_DETECTOR.name, {FACE_DETECTOR.input.name: detector_input(frame)[None]})

    def accept_detection(self, outputs: Outputs) -> Roi | None:
        """The detector's outputs -> the face ROI (the best face), or None when the frame has no face."""
        self._expect(Phase.DETECT)
        faces = decode(outputs["regressors"][0], outputs["classificators"][0], *self._frame_size,
                       min_score=self.min_detection_score)
        if not faces:
            return None
        self._roi, self._detected = crops.roi_from_detection(faces[0]), True
        self._phase = Phase.LANDMARKS
        return self._roi

    # --- 2. landmarks ---------------------------------------------------------------------------------------

    def landmarks_call(self, frame: np.ndarray) -> ModelCall:
        self._expect(Phase.LANDMARKS)
        assert self._roi is not None
        crop = crops.landmark_input(frame, self._roi)
        return ModelCall(FACE_LANDMARKS.name, {FACE_LANDMARKS.input.name: crop[None]})

    def accept_landmarks(self, outputs: Outputs) -> crops.FaceLandmarks:
        """Landmarks and presence; presence below `min_presence` drops tracking and ends the frame (then
        `.presence` is low and `iris_call` refuses to run)."""
        self._expect(Phase.LANDMARKS)
        assert self._roi is not None
        face = crops.decode_landmarks(outputs["conv2d_21"][0], outputs["conv2d_31"][0], self._roi)
        if face.presence < self.min_presence:
            self._tracked_roi = None
            self._phase = Phase.DETECT
            return face
        self._face = face
        self._tracked_roi = crops.roi_from_landmarks(face.points)
        self._eyes = crops.eye_rois(face.points)
        self._phase = Phase.IRIS
        return face

    # --- 3. iris --------------------------------------------------------------------------------------------

    def iris_call(self, frame: np.ndarray) -> ModelCall:
        self._expect(Phase.IRIS)
        assert self._eyes is not None
        batch = np.stack([crops.iris_input(frame, eye) for eye in self._eyes])
        return ModelCall(IRIS_LANDMARKS.name, {IRIS_LANDMARKS.input.name: batch})

    def accept_iris(self, outputs: Outputs) -> TrackedFace:
        self._expect(Phase.IRIS)
        assert self._eyes is not None and self._face is not None and self._roi is not None
        contours, irises = outputs["output_eyes_contours_and_brows"], outputs["output_iris"]
        left, right = (crops.decode_iris(contours[i], irises[i], eye) for i, eye in enumerate(self._eyes))
        self._phase = Phase.DETECT
        return TrackedFace(self._face.points, self._face.presence, self._roi, self._detected, left, right)

    # --- all three --------------------------------------------------------------------------------------------

    def track(self, frame: np.ndarray, infer: Callable[[ModelCall], Outputs]) -> TrackedFace | None:
        """Run the frame's steps with a blocking `infer`; None when no face is found or presence drops."""
        frame = as_rgb(frame)
        call = self.detection_call(frame)
        if call is not None and self.accept_detection(infer(call)) is None:
            return None
        self.accept_landmarks(infer(self.landmarks_call(frame)))
        if self._phase is not Phase.IRIS:
            return None
        return self.accept_iris(infer(self.iris_call(frame)))

    async def track_async(self, frame: np.ndarray,
                          infer: Callable[[ModelCall], Awaitable[Outputs]]) -> TrackedFace | None:
        """`track` with an awaitable `infer` (the facade's Deferreds, inside `ensureDeferred`)."""
        frame = as_rgb(frame)
        call = self.detection_call(frame)
        if call is not None and self.accept_detection(await infer(call)) is None:
            return None
        self.accept_landmarks(await infer(self.landmarks_call(frame)))
        if self._phase is not Phase.IRIS:
            return None
        return self.accept_iris(await infer(self.iris_call(frame)))


__all__ = ["Detection", "FaceTrackingStep", "ModelCall", "StepOrderError", "TrackedFace", "as_rgb"]
