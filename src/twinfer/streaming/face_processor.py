"""The face tracker of one stream (DESIGN §4): camera frames of a real person -> FaceReading.

Per frame, as MediaPipe does: the detector only while no face is tracked (otherwise the region comes from the
previous frame's landmarks), the 468-point mesh on the crop aligned by the eye line, the iris model on both eye
crops, then the solver (blendshapes, head pose, gaze, calibration, face-lost easing). None of it runs on the
reactor. One frame at a time per stream (the stream guarantees it), so the per-stream state needs no lock.

Two ways to run a frame's model calls:
- inline (the default): the whole frame, models included, runs in one worker-thread job. The reactor resolves
  and leases the three model versions (ModelVersion.lease: a hot reload waits for the frame), hands over one job
  and gets one result back: five thread hand-offs a frame fewer. Measured on this 2-core machine (same build,
  RGB8 frames, server CPU from /proc): 4 closed-loop streams 146-161 frames/s at 10.1-10.5 ms a frame inline,
  112-121 frames/s at 11.0-11.7 ms through the facade.
- through the facade (`batch_across_streams: true` in the version's tracker.yaml, or a model whose backend
  cannot run on any thread): each call is an ordinary request, so the calls of every stream meet in each
  model's dynamic batcher. That pays where a batch costs less per item than one call (a GPU); with LiteRT on
  a CPU it does not (face_landmarks 1.88 ms an item at batch 1, 2.33 at batch 8; iris 1.76 and 1.96).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from twisted.internet.defer import Deferred, ensureDeferred

from twinfer.faces.model_specs import FACE_DETECTOR, FACE_LANDMARKS, IRIS_LANDMARKS
from twinfer.faces.reading import CalibrationState, FaceReading
from twinfer.faces.solver import FaceSolver
from twinfer.faces.tracking_step import FaceTrackingStep, ModelCall
from twinfer.inference.facade import InferenceFacade
from twinfer.inference.model_version import ModelVersion
from twinfer.inference.types import InferenceRequest
from twinfer.streaming.pixels import frame_pixels

FACE_TRACKER_BACKEND = "face_tracker"


@dataclass(frozen=True, slots=True)
class TrackerModels:
    """Which repository models a face_tracker uses (its config's `parameters`, MediaPipe's three by default)."""

    detector: str = FACE_DETECTOR.name
    landmarks: str = FACE_LANDMARKS.name
    iris: str = IRIS_LANDMARKS.name

    @classmethod
    def from_parameters(cls, parameters: dict[str, Any]) -> TrackerModels:
        defaults = cls()
        return cls(str(parameters.get("detector", defaults.detector)),
                   str(parameters.get("landmarks", defaults.landmarks)),
                   str(parameters.get("iris", defaults.iris)))

    def rename(self, call: ModelCall) -> str:
        return {FACE_DETECTOR.name: self.detector, FACE_LANDMARKS.name: self.landmarks,
                IRIS_LANDMARKS.name: self.iris}[call.model]


def batches_across_streams(backend: Any) -> bool:
    """The version's tracker.yaml setting (see the module docstring): False, run each frame inline."""
    return bool(getattr(backend, "settings", {}).get("batch_across_streams", False))


def solver_from(backend: Any) -> FaceSolver:
    """A new stream's solver, with the face_tracker version's settings (its tracker.yaml)."""
    settings = getattr(backend, "settings", {})
    kwargs: dict[str, float] = {}
    if "score_threshold" in settings:
        kwargs["score_threshold"] = settings["score_threshold"]
    if "hfov_deg" in settings:
        kwargs["hfov_rad"] = math.radians(settings["hfov_deg"])
    if "ease_s" in settings:
        kwargs["ease_s"] = settings["ease_s"]
    return FaceSolver(**kwargs)


def frame_to_rgb(pixels: bytes, pixel_format: str, width: int, height: int, bottom_up: bool = False) -> np.ndarray:
    """A stream frame as (H, W, 3) uint8 RGB, row 0 at the top (the one conversion: streaming.pixels)."""
    image = frame_pixels(pixels, pixel_format, width, height, bottom_up)
    return np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image


def _release_unused(leased: dict[str, ModelVersion]) -> None:
    for version in leased.values():
        version.release([], True)


class FaceTrackerProcessor:
    """One stream's tracker: the ROI carried between frames, the solver's calibration and easing."""

    def __init__(self, facade: InferenceFacade, run_blocking: Callable[..., Deferred], models: TrackerModels,
                 pixel_format: str, width: int, height: int, version: str, solver: FaceSolver | None = None,
                 want_landmarks: bool = False, bottom_up: bool = False, batch_across_streams: bool = False) -> None:
        self._facade = facade
        self.batch_across_streams = batch_across_streams
        self.bottom_up = bottom_up
        self.version = version
        self._run = run_blocking
        self.models = models
        self.pixel_format, self.width, self.height = pixel_format, width, height
        self.step = FaceTrackingStep()
        self.solver = solver or FaceSolver()
        self.want_landmarks = want_landmarks
        self.detector_runs = 0

    # --- calibration (the `calibrate` request) -------------------------------------------------------------

    @property
    def calibration_state(self) -> CalibrationState:
        return self.solver.calibration_state

    def calibrate(self, seconds: float) -> CalibrationState:
        self.solver.calibrate(seconds)
        return self.solver.calibration_state

    # --- frames ----------------------------------------------------------------------------------------------

    def process(self, pixels: bytes, capture_time_ns: int) -> Deferred[FaceReading]:
        return ensureDeferred(self._process(pixels, capture_time_ns / 1e9))

    async def _infer(self, call: ModelCall) -> dict[str, np.ndarray]:
        request = InferenceRequest(self.models.rename(call), call.inputs)
        result = await self._facade.infer(request)
        return result.outputs

    async def _process(self, pixels: bytes, timestamp_s: float) -> FaceReading:
        leased = None if self.batch_across_streams else self._lease()
        if leased is None:
            return await self._process_through_facade(pixels, timestamp_s)
        runs: dict[str, list[tuple[int, int]]] = {name: [] for name in leased}
        ok = False
        try:
            reading = await self._run(self._process_inline, pixels, timestamp_s, leased, runs)
            ok = True
            return reading
        finally:
            for name, version in leased.items():
                version.release(runs[name], ok)

    def _lease(self) -> dict[str, ModelVersion] | None:
        """Reactor thread: the serving version of each model this tracker calls, leased; None when one of them
        cannot run inline (or is being retired right now): then this frame goes through the facade."""
        leased: dict[str, ModelVersion] = {}
        for name in dict.fromkeys((self.models.detector, self.models.landmarks, self.models.iris)):
            try:
                version = self._facade.resolve(name)  # ModelNotFound / ModelNotReady fail the frame, typed
            except BaseException:
                _release_unused(leased)
                raise
            if not version.lease():
                _release_unused(leased)
                return None
            leased[name] = version
        return leased

    def _process_inline(self, pixels: bytes, timestamp_s: float, leased: dict[str, ModelVersion],
                        runs: dict[str, list[tuple[int, int]]]) -> FaceReading:
        """Worker thread: the whole frame, each model run on this thread under the reactor's lease."""

        def infer(call: ModelCall) -> dict[str, np.ndarray]:
            name = self.models.rename(call)
            version = leased[name]
            outputs, compute_ns = version.run_inline(call.inputs, [t.name for t in version.config.outputs])
            runs[name].append((len(next(iter(call.inputs.values()))), compute_ns))
            return outputs

        frame, detection_call, landmarks_call = self._begin(pixels)
        size = (frame.shape[1], frame.shape[0])
        if detection_call is not None:
            self.detector_runs += 1
            landmarks_call = self._detected(infer(detection_call), frame)
            if landmarks_call is None:
                return self.solver.solve(None, None, 0.0, size, timestamp_s)
        assert landmarks_call is not None
        presence, iris_call = self._landmarks(infer(landmarks_call), frame)
        if iris_call is None:
            return self.solver.solve(None, None, presence, size, timestamp_s)
        return self._finish(infer(iris_call), size, timestamp_s)

    async def _process_through_facade(self, pixels: bytes, timestamp_s: float) -> FaceReading:
        # Each worker-thread hop costs the reactor a thread-pool dispatch and a wake-up (~0.3-0.4 ms of server CPU
        # per hop on this machine), so each hop does all the numpy work there is until the next model call: a
        # tracked frame takes three (decode + crop, landmarks -> eye crops, iris -> solve), a detected one four.
        frame, detection_call, landmarks_call = await self._run(self._begin, pixels)
        size = (frame.shape[1], frame.shape[0])
        if detection_call is not None:
            self.detector_runs += 1
            landmarks_call = await self._run(self._detected, await self._infer(detection_call), frame)
            if landmarks_call is None:
                return await self._run(self.solver.solve, None, None, 0.0, size, timestamp_s)
        assert landmarks_call is not None
        presence, iris_call = await self._run(self._landmarks, await self._infer(landmarks_call), frame)
        if iris_call is None:  # presence too low: tracking dropped, the next frame runs the detector
            return await self._run(self.solver.solve, None, None, presence, size, timestamp_s)
        return await self._run(self._finish, await self._infer(iris_call), size, timestamp_s)

    def _begin(self, pixels: bytes) -> tuple[np.ndarray, ModelCall | None, ModelCall | None]:
        """The frame, and either the detector's call (no face tracked) or, tracking, the landmark call already."""
        frame = frame_to_rgb(pixels, self.pixel_format, self.width, self.height, self.bottom_up)
        detection_call = self.step.detection_call(frame)
        if detection_call is not None:
            return frame, detection_call, None
        return frame, None, self.step.landmarks_call(frame)

    def _detected(self, outputs: dict[str, np.ndarray], frame: np.ndarray) -> ModelCall | None:
        """The detector's outputs -> the landmark call on its face, or None: no face in this frame."""
        if self.step.accept_detection(outputs) is None:
            return None
        return self.step.landmarks_call(frame)

    def _landmarks(self, outputs: dict[str, np.ndarray], frame: np.ndarray) -> tuple[float, ModelCall | None]:
        face = self.step.accept_landmarks(outputs)
        if face.presence < self.step.min_presence:
            return face.presence, None
        return face.presence, self.step.iris_call(frame)

    def _finish(self, outputs: dict[str, np.ndarray], size: tuple[int, int], timestamp_s: float) -> FaceReading:
        tracked = self.step.accept_iris(outputs)
        # The solver takes the person's left eye first: that is the eye on the image's right.
        iris = np.stack([tracked.image_right_eye.iris, tracked.image_left_eye.iris])
        reading = self.solver.solve(tracked.landmarks, iris, tracked.presence, size, timestamp_s,
                                    include_landmarks=self.want_landmarks)
        if not reading.tracked:  # the solver found no face in these landmarks: look for one afresh next frame
            self.step.reset()
        return reading
