"""The `calibrate` command and Stream.calibrate: delegation to the face processor, refusals, the wire reply; and the
per-frame result the stream builds for its outputs (landmarks only when asked, T from the first frame)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from twisted.internet.task import Clock

from twinfer.errors import InvalidInput, StreamNotFound
from twinfer.faces.reading import CalibrationState, FaceReading
from twinfer.protocol import game_pb2
from twinfer.security.tokens import Authenticator
from twinfer.server.commands import ServerContext, default_registry
from twinfer.server.commands.calibrate import CalibrateCommand
from twinfer.server.sessions import Session, SessionRegistry
from twinfer.streaming.manager import StreamManager
from twinfer.streaming.stream import Stream, _Frame


class FakeTracker:
    """Stands in for the integrator's face tracker: only the processor interface the stream relies on."""

    def __init__(self) -> None:
        self.calibration_state = CalibrationState.NONE
        self.calls: list[float] = []

    def calibrate(self, seconds: float) -> CalibrationState:
        self.calls.append(seconds)
        self.calibration_state = CalibrationState.CALIBRATING
        return self.calibration_state


def make_stream(owner: object, model: str = "face_tracker") -> Stream:
    return Stream(1, owner, model, None, "GRAY8", 8, 8, None, False, "y", ("jawOpen",), None, None, None,
                  lambda data, address: None, 0.0)


@pytest.fixture
def setup():
    session = Session(connection=None, peer="127.0.0.1")  # type: ignore[arg-type]
    manager = StreamManager(None, Clock(), None, "127.0.0.1")  # type: ignore[arg-type]
    stream = make_stream(session)
    manager.streams[stream.id] = stream
    context = ServerContext(None, SessionRegistry(), Authenticator(""), Clock(), streams=manager)  # type: ignore
    return session, stream, CalibrateCommand(context)


def calibrate_message(stream_id: int, seconds: float) -> game_pb2.ClientMessage:
    message = game_pb2.ClientMessage(request_id=7)
    message.calibrate.stream_id = stream_id
    message.calibrate.seconds = seconds
    return message


def test_calibrate_delegates_to_the_processor_and_replies_with_the_state(setup):
    session, stream, command = setup
    stream.processor = tracker = FakeTracker()
    reply = command.execute(session, calibrate_message(1, 3.0), game_pb2.ServerMessage(request_id=7))
    assert tracker.calls == [3.0]
    assert reply.WhichOneof("body") == "calibration_status"
    status = reply.calibration_status
    assert (status.stream_id, status.state, status.seconds_left) == (1, game_pb2.CALIBRATION_STATE_CALIBRATING, 3.0)


def test_calibrate_without_a_face_processor_names_the_model(setup):
    session, _stream, command = setup
    with pytest.raises(InvalidInput, match="model face_tracker does not track faces; calibration needs face_tracker"):
        command.execute(session, calibrate_message(1, 3.0), game_pb2.ServerMessage())


@pytest.mark.parametrize("seconds", [0.0, -1.0, 60.5, math.inf, math.nan])
def test_calibration_seconds_must_be_finite_and_in_0_to_60(setup, seconds):
    session, stream, command = setup
    stream.processor = tracker = FakeTracker()
    with pytest.raises(InvalidInput, match="calibration seconds"):
        command.execute(session, calibrate_message(1, seconds), game_pb2.ServerMessage())
    assert tracker.calls == []
    assert stream.calibrate(60.0) == CalibrationState.CALIBRATING  # the upper bound itself is allowed


def test_calibrate_someone_elses_or_an_unknown_stream_is_not_found(setup):
    _session, stream, command = setup
    stream.processor = FakeTracker()
    other = Session(connection=None, peer="127.0.0.1")  # type: ignore[arg-type]
    with pytest.raises(StreamNotFound):
        command.execute(other, calibrate_message(1, 2.0), game_pb2.ServerMessage())
    with pytest.raises(StreamNotFound):
        command.execute(_session, calibrate_message(99, 2.0), game_pb2.ServerMessage())


def test_calibrate_is_registered():
    context = ServerContext(None, SessionRegistry(), Authenticator(""), Clock())  # type: ignore[arg-type]
    assert isinstance(default_registry(context).get("calibrate"), CalibrateCommand)


def reading(landmarks: np.ndarray | None) -> FaceReading:
    return FaceReading(True, 0.9, np.zeros(52, np.float32), np.zeros(3, np.float32), np.zeros(3, np.float32),
                       np.zeros(2, np.float32), np.zeros(2, np.float32), CalibrationState.CALIBRATED, landmarks)


def test_stream_results_carry_landmarks_only_when_asked_and_seconds_since_the_first_frame():
    stream = make_stream(object())
    points = np.ones((478, 3), np.float32)
    values = np.zeros(1, np.float32)
    first = stream._result(_Frame(1, 5_000_000_000, b"", 0.0), values, "1", reading(points))  # noqa: SLF001
    later = stream._result(_Frame(2, 7_250_000_000, b"", 0.0), values, "1", reading(points))  # noqa: SLF001
    assert first.face is not None and first.face.landmarks is None and first.stream_seconds == 0.0
    assert later.stream_seconds == pytest.approx(2.25)
    stream.want_landmarks = True
    kept = stream._result(_Frame(3, 7_260_000_000, b"", 0.0), values, "1", reading(points))  # noqa: SLF001
    assert kept.face is not None and kept.face.landmarks is points
