"""One stream: authenticated frames in, at most one frame running and one waiting (the latest wins), results
postprocessed and fanned out to every receiver with one inference per frame, in frame order."""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from twinfer.errors import InvalidInput, TwinferError, UnusableFrame
from twinfer.faces.reading import CalibrationState, FaceReading
from twinfer.inference.facade import InferenceFacade
from twinfer.inference.types import InferenceRequest, InferenceResult
from twinfer.streaming.datagram import KIND_HEARTBEAT, Datagram, DatagramError, Signer
from twinfer.streaming.one_euro import OneEuroFilter
from twinfer.streaming.outputs import FORMATS, FrameResult, OutputFormat
from twinfer.streaming.pixels import PIXEL_FORMATS, TOO_LARGE, WRONG_SIZE
from twinfer.streaming.preprocess import ImageLayout, preprocess
from twinfer.streaming.reassembly import FrameAssembler, PartialFrameBudget
from twinfer.streaming.stats import StreamStats

log = Logger()
Address = tuple[str, int]
MAX_CALIBRATION_SECONDS = 60.0


class FaceProcessor(Protocol):
    """The per-stream state of the face tracker (DESIGN §4), as the stream and its commands see it."""

    calibration_state: CalibrationState
    version: str  # of the face_tracker model the stream opened

    def calibrate(self, seconds: float) -> CalibrationState: ...

    def process(self, pixels: bytes, capture_time_ns: int) -> Deferred[FaceReading]: ...


@dataclass(frozen=True, slots=True)
class Target:
    kind: str
    host: str
    port: int
    subject: str = "twinfer"


@dataclass(slots=True)
class _Frame:
    sequence: int
    capture_time_ns: int
    pixels: bytes
    received_at: float  # perf_counter, for frame-in -> datagram-out latency


class Stream:
    def __init__(
        self,
        stream_id: int,
        owner: Any,
        model: str,
        version: str | None,
        pixel_format: str,
        width: int,
        height: int,
        layout: ImageLayout,
        batched: bool,
        output_name: str,
        labels: tuple[str, ...],
        smoothing: OneEuroFilter | None,
        facade: InferenceFacade,
        run_blocking: Callable[..., Any],
        send: Callable[[bytes, Address], None],
        now: float,
        max_frame_bytes: int = 16 * 1024 * 1024,
        budget: PartialFrameBudget | None = None,
    ) -> None:
        self.id = stream_id
        self.owner = owner
        self.key = os.urandom(32)
        self.signer = Signer(self.key)
        self.model, self.version = model, version
        self.pixel_format, self.width, self.height = pixel_format, width, height
        self._layout, self._batched = layout, batched
        self._output_name, self.labels = output_name, labels
        self._smoothing = smoothing
        self._facade = facade
        self._run_blocking = run_blocking
        self._send = send
        self.stats = StreamStats()
        self.assembler = FrameAssembler(max_frame_bytes=max_frame_bytes, budget=budget, dropped=self.stats.dropped)
        self.targets: dict[Target, OutputFormat] = {}
        self.last_heard = now
        self.closed = False
        self.processor: FaceProcessor | None = None  # attached for face_tracker models
        self.want_landmarks = False  # the client asked for the face landmarks in native results
        self.bottom_up = False  # row 0 of every frame is the image's bottom row
        self.failures = FrameFailures()
        self.on_failure: Callable[[Stream], None] = lambda stream: None  # the manager reports to the owner
        self._first_capture_ns: int | None = None
        self._running = False
        self._waiting: _Frame | None = None

    # --- calibration ----------------------------------------------------------------------------------------------

    def calibrate(self, seconds: float) -> CalibrationState:
        """Start taking the user's neutral face over `seconds` (0 < s <= 60); the processor owns the state."""
        if self.processor is None:
            raise InvalidInput(f"model {self.model} does not track faces; calibration needs face_tracker")
        if not (math.isfinite(seconds) and 0 < seconds <= MAX_CALIBRATION_SECONDS):
            raise InvalidInput(f"calibration seconds {seconds!r}: expected 0 < seconds <= "
                               f"{MAX_CALIBRATION_SECONDS:g}")
        return self.processor.calibrate(float(seconds))

    # --- receivers ----------------------------------------------------------------------------------------------

    def add_target(self, target: Target) -> None:
        if target not in self.targets:
            self.targets[target] = FORMATS[target.kind](target.subject)

    def remove_target(self, target: Target) -> bool:
        return self.targets.pop(target, None) is not None

    # --- frames in ----------------------------------------------------------------------------------------------

    def datagram(self, d: Datagram, now: float) -> None:
        """An authentic datagram (tag checked); raises DatagramError for replays and malformed fragments."""
        if d.kind == KIND_HEARTBEAT:
            self.assembler.heartbeat(d, now)
            self.last_heard = now
            return
        try:
            done = self.assembler.add(d, now)
        except DatagramError as exc:
            if exc.reason == "oversized":  # a whole frame too big for the stream: the client must hear of it
                self._oversized(d.sequence)
            raise
        self.last_heard = now
        if done is None:
            return
        sequence, capture, pixels = done
        self.stats.frames_in += 1
        frame = _Frame(sequence, capture, pixels, time.perf_counter())
        if self._running:
            if self._waiting is not None:
                self.stats.frames_skipped += 1
            self._waiting = frame  # latest frame wins
        else:
            self._start(frame)

    def _start(self, frame: _Frame) -> None:
        self._running = True
        if self.processor is not None:
            d = self.processor.process(frame.pixels, frame.capture_time_ns)
            d.addCallbacks(self._tracked, self._failed, callbackArgs=(frame,), errbackArgs=(frame,))
        else:
            d = self._run_blocking(preprocess, frame.pixels, self.pixel_format, self.width, self.height,
                                   self._layout, self._batched, self.bottom_up)
            d.addCallback(lambda tensor: self._facade.infer(
                InferenceRequest(self.model, {self._layout.input_name: tensor}, self.version, [self._output_name])))
            d.addCallbacks(self._inferred, self._failed, callbackArgs=(frame,), errbackArgs=(frame,))
        d.addBoth(self._next)

    def _inferred(self, result: InferenceResult, frame: _Frame) -> None:
        if self.closed:
            return
        values = np.asarray(result.outputs[self._output_name], dtype=np.float32).reshape(-1)
        values = np.clip(values, 0.0, 1.0)
        if self._smoothing is not None:
            values = self._smoothing(values, frame.capture_time_ns / 1e9).astype(np.float32)
        self._emit(self._result(frame, values, result.version, None), frame)

    def _tracked(self, face: FaceReading, frame: _Frame) -> None:
        """A face tracker's reading: its blendshapes are the values, the rest rides along for pose and gaze."""
        if self.closed:
            return
        values = face.blendshapes
        if self._smoothing is not None and face.tracked:
            values = self._smoothing(values, frame.capture_time_ns / 1e9).astype(np.float32)
            face = dataclasses.replace(face, blendshapes=values)
        self._emit(self._result(frame, values, self.processor.version, face), frame)

    def _emit(self, out: FrameResult, frame: _Frame) -> None:
        encoded: dict[type, list[bytes]] = {}
        for target, fmt in list(self.targets.items()):
            key = (type(fmt), fmt.subject)
            datagrams = encoded.get(key)
            if datagrams is None:
                datagrams = encoded[key] = fmt.encode(out)
            for datagram in datagrams:
                self._send(datagram, (target.host, target.port))
                self.stats.datagrams_out += 1
        self.stats.frames_out += 1
        self.stats.latency.observe(time.perf_counter() - frame.received_at)

    def _result(self, frame: _Frame, values: np.ndarray, version: str, face: FaceReading | None) -> FrameResult:
        """The FrameResult every output encodes: landmarks only when asked for, T from the stream's first frame."""
        if self._first_capture_ns is None:
            self._first_capture_ns = frame.capture_time_ns
        if face is not None and face.landmarks is not None and not self.want_landmarks:
            face = dataclasses.replace(face, landmarks=None)
        return FrameResult(self.id, frame.sequence, frame.capture_time_ns, time.time_ns(), values, self.labels,
                           version, face, (frame.capture_time_ns - self._first_capture_ns) / 1e9)

    def _oversized(self, sequence: int) -> None:
        limit = self.assembler.max_frame_bytes
        if PIXEL_FORMATS[self.pixel_format]:
            error = UnusableFrame(WRONG_SIZE, f"frame {sequence} is larger than {limit} bytes; {self.width}x"
                                  f"{self.height} {self.pixel_format} needs {limit}")
        else:
            error = UnusableFrame(TOO_LARGE, f"frame {sequence} is larger than {limit} bytes, more than any "
                                  f"{self.width}x{self.height} JPEG")
        self.failures.add(error, sequence)
        if not self.closed:
            self.on_failure(self)

    def _failed(self, failure: Failure, frame: _Frame) -> None:
        self.stats.frames_failed += 1
        self.failures.add(failure.value, frame.sequence)
        if not self.closed:
            self.on_failure(self)
        if self.stats.frames_failed in (1, 10, 100) or self.stats.frames_failed % 1000 == 0:
            log.warn("stream {id}: frame {seq} failed ({n} so far): {error}", id=self.id, seq=frame.sequence,
                     n=self.stats.frames_failed, error=failure.getErrorMessage())

    def _next(self, _: object) -> None:
        self._running = False
        if self._waiting is not None and not self.closed:
            frame, self._waiting = self._waiting, None
            self._start(frame)


@dataclass(slots=True)
class FailureTally:
    """Frames failed for one reason: since the last report, in all, and the latest one."""

    pending: int = 0
    total: int = 0
    last_sequence: int = 0
    message: str = ""
    code_error: BaseException | None = None


class FrameFailures:
    """Complete frames the stream could not use, by reason, until the manager reports them to the session.

    Reasons are the `UnusableFrame` reasons (wrong_size, undecodable, too_large) and "inference" for anything the
    model call raised; the wire names them with FrameErrorReason.
    """

    def __init__(self) -> None:
        self.by_reason: dict[str, FailureTally] = {}
        self.last_report = -math.inf

    def add(self, error: BaseException, sequence: int) -> None:
        reason = error.reason if isinstance(error, UnusableFrame) else "inference"
        tally = self.by_reason.setdefault(reason, FailureTally())
        tally.pending += 1
        tally.total += 1
        tally.last_sequence = sequence
        tally.message = error.message if isinstance(error, TwinferError) else "internal server error"
        tally.code_error = error

    def take(self, now: float) -> list[tuple[str, FailureTally]]:
        """The reasons with failures not yet reported (their pending counts reset), stamping the report time."""
        due = [(reason, dataclasses.replace(t)) for reason, t in self.by_reason.items() if t.pending]
        for reason, _ in due:
            self.by_reason[reason].pending = 0
        if due:
            self.last_report = now
        return due
