"""Issue #19 on StringTransport and a fake clock: what an engine client sees when things go wrong (request_id 0,
version negotiation, kicks that answer what is in flight, STREAM_NOT_FOUND, StreamClosed and FrameErrors events)
and the engine pixel formats (RGBA8, BGRA8, bottom-up)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from tests.support import SyncThreads, make_repository, take_messages
from tests.unit.test_stream_limits import build_image_model
from twinfer.errors import UnusableFrame
from twinfer.inference.facade import InferenceFacade
from twinfer.inference.repository import ModelRepository
from twinfer.protocol import game_pb2
from twinfer.protocol.framing import encode_frame
from twinfer.protocol.tensors import numpy_to_tensor
from twinfer.protocol.version import PROTOCOL_VERSION
from twinfer.security.tokens import Authenticator, TokenAuthority
from twinfer.server.commands import ServerContext, default_registry
from twinfer.server.connection import ConnectionLimits, GameServerFactory
from twinfer.server.sessions import SessionRegistry
from twinfer.streaming import datagram as dg
from twinfer.streaming.face_processor import frame_to_rgb
from twinfer.streaming.manager import StreamManager
from twinfer.streaming.pixels import frame_pixels

E = game_pb2.ErrorCode
SECRET = "contract-secret"


class Server:
    """A game connection over StringTransport with streams: the 8x8 `pixels` model (row means out) and `tiny`."""

    def __init__(self, tmp_path, secret: str = "", heartbeat_timeout_s: float = 5.0) -> None:
        self.clock = Clock()
        self.threads = SyncThreads()
        root = build_image_model(make_repository(tmp_path))
        self.repository = ModelRepository(root, self.clock, self.threads)
        self.repository.start()
        assert self.repository.ready()
        self.facade = InferenceFacade(self.repository)
        self.streams = StreamManager(self.facade, self.clock, self.threads.run_io, "127.0.0.1",
                                     heartbeat_timeout_s=heartbeat_timeout_s, max_datagram_bytes=1200)
        self.sent: list[bytes] = []
        self.streams.attach(lambda data, address: self.sent.append(data), 9001)
        self.context = ServerContext(self.facade, SessionRegistry(), Authenticator(secret), self.clock, self.streams)
        self.factory = GameServerFactory(self.context, default_registry(self.context), ConnectionLimits())
        self.proto = self.factory.buildProtocol(None)
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 5555))
        self.proto.makeConnection(self.transport)

    def send(self, request_id: int, **body) -> None:
        message = game_pb2.ClientMessage(request_id=request_id, **body)
        self.proto.dataReceived(encode_frame(message.SerializeToString()))

    def replies(self) -> list[game_pb2.ServerMessage]:
        return take_messages(self.transport, game_pb2.ServerMessage)

    def call(self, request_id: int, **body) -> game_pb2.ServerMessage:
        self.send(request_id, **body)
        [reply] = self.replies()
        return reply

    def open(self, pixel_format: str = "GRAY8", bottom_up: bool = False, width: int = 8, height: int = 8
             ) -> game_pb2.OpenStreamResponse:
        request = game_pb2.OpenStreamRequest(model="pixels", width=width, height=height, pixel_format=pixel_format,
                                             bottom_up=bottom_up)
        request.targets.add(kind="native", host="127.0.0.1", port=39000)
        reply = self.call(1, open_stream=request)
        assert reply.HasField("open_stream"), reply
        return reply.open_stream

    def frame(self, opened: game_pb2.OpenStreamResponse, sequence: int, pixels: bytes) -> None:
        for datagram in dg.fragment_frame(opened.key, opened.stream_id, sequence, 0, pixels, 1200):
            self.streams.datagram_received(datagram)

    def results(self) -> list[game_pb2.StreamResult]:
        out = [game_pb2.StreamResult.FromString(d) for d in self.sent]
        self.sent.clear()
        return out


@pytest.fixture
def server(tmp_path):
    return Server(tmp_path)


# --- request ids, versions, kicks ---------------------------------------------------------------------------------

def test_request_id_zero_is_refused_and_not_run(server):
    reply = server.call(0, open_stream=game_pb2.OpenStreamRequest(model="pixels", width=8, height=8))
    assert reply.request_id == 0 and reply.error.code == E.ERROR_CODE_MALFORMED_MESSAGE
    assert "request_id 0" in reply.error.message
    assert server.streams.streams == {}  # not executed
    assert server.call(1, ping=game_pb2.PingRequest()).HasField("pong")  # the connection goes on


def test_login_answers_with_the_servers_version_and_capabilities(tmp_path):
    server = Server(tmp_path, secret=SECRET)
    token = TokenAuthority(SECRET).issue("ada", 0)
    for client_version in (0, 1, PROTOCOL_VERSION):
        reply = server.call(3, login=game_pb2.LoginRequest(token=token, protocol_version=client_version))
        assert reply.login.user == "ada" and reply.login.protocol_version == PROTOCOL_VERSION
    caps = reply.login.capabilities
    assert caps.min_protocol_version == 1
    assert list(caps.pixel_formats) == ["GRAY8", "RGB8", "RGBA8", "BGRA8", "JPEG"]
    assert list(caps.target_kinds) == ["native", "vmc", "livelink"]
    assert caps.max_frame_bytes == ConnectionLimits().max_frame_bytes and caps.max_in_flight == 256
    assert caps.max_datagram_bytes == 1200 and caps.max_fragments == dg.MAX_FRAGMENTS
    assert caps.heartbeat_timeout_s == 5.0 and caps.max_streams_per_session == 8 and caps.max_side == 4096


def test_a_client_newer_than_the_server_gets_a_clear_refusal_and_stays_logged_out(tmp_path):
    server = Server(tmp_path, secret=SECRET)
    token = TokenAuthority(SECRET).issue("ada", 0)
    assert server.call(1, login=game_pb2.LoginRequest(token=token)).HasField("login")
    refused = server.call(2, login=game_pb2.LoginRequest(token=token, protocol_version=PROTOCOL_VERSION + 1))
    assert refused.error.code == E.ERROR_CODE_UNSUPPORTED_PROTOCOL
    assert f"1..{PROTOCOL_VERSION}" in refused.error.message
    assert server.call(3, list_models=game_pb2.ListModelsRequest()).error.code == E.ERROR_CODE_UNAUTHENTICATED


def test_a_kick_first_answers_every_request_in_flight_with_its_code(server):
    """The drain on SIGTERM (close_all after drain_timeout_s): in-flight inferences get UNAVAILABLE, not silence;
    a new one during the drain gets UNAVAILABLE at once."""
    [pool] = [p for name, p in server.threads.pools.items() if "tiny" in name]
    pool.hold = True
    x = np.ones((1, 16), np.float32)
    for request_id in (4, 5):
        message = game_pb2.ClientMessage(request_id=request_id)
        message.infer.model = "tiny"
        numpy_to_tensor("INPUT0", x, message.infer.inputs.add())
        server.proto.dataReceived(encode_frame(message.SerializeToString()))
    assert server.replies() == []
    drained = server.factory.drain()
    assert not drained.called
    late = game_pb2.ClientMessage(request_id=6)
    late.infer.model = "tiny"
    server.proto.dataReceived(encode_frame(late.SerializeToString()))
    [refused] = server.replies()
    assert refused.request_id == 6 and refused.error.code == E.ERROR_CODE_UNAVAILABLE
    server.factory.close_all("server shutting down")
    answered = server.replies()
    assert [(m.request_id, m.WhichOneof("body")) for m in answered] == [(4, "error"), (5, "error"), (0, "kicked")]
    assert all(m.error.code == E.ERROR_CODE_UNAVAILABLE for m in answered[:2])
    assert answered[2].kicked.code == E.ERROR_CODE_UNAVAILABLE
    pool.release()  # the model finishes after all: nothing more is written
    assert server.replies() == []


# --- stream errors and events -------------------------------------------------------------------------------------

def test_close_stream_on_an_unknown_stream_is_stream_not_found(server):
    reply = server.call(2, close_stream=game_pb2.CloseStreamRequest(stream_id=77))
    assert reply.error.code == E.ERROR_CODE_STREAM_NOT_FOUND


def test_a_silent_stream_sends_stream_closed_with_the_reason(server):
    opened = server.open()
    server.clock.advance(5.1)
    server.streams.reap()
    [event] = server.replies()
    assert event.request_id == 0 and event.stream_closed.stream_id == opened.stream_id
    assert event.stream_closed.reason == game_pb2.STREAM_CLOSE_REASON_HEARTBEAT_TIMEOUT
    assert "no datagram for 5.1 s" in event.stream_closed.detail
    assert server.call(2, close_stream=game_pb2.CloseStreamRequest(stream_id=opened.stream_id)).error.code == \
        E.ERROR_CODE_STREAM_NOT_FOUND


def test_a_stream_whose_model_is_unloaded_sends_stream_closed(server):
    opened = server.open()
    server.repository.unload("pixels")
    server.streams.reap()
    [event] = server.replies()
    assert event.stream_closed.stream_id == opened.stream_id
    assert event.stream_closed.reason == game_pb2.STREAM_CLOSE_REASON_MODEL_UNLOADED
    assert "pixels" in event.stream_closed.detail and server.streams.streams == {}


def test_a_drain_sends_stream_closed_before_the_kick(server):
    opened = server.open()
    server.streams.stop("server shutting down")
    server.factory.close_all("server shutting down")
    closed, kicked = server.replies()
    assert closed.stream_closed.stream_id == opened.stream_id
    assert closed.stream_closed.reason == game_pb2.STREAM_CLOSE_REASON_SERVER_DRAIN
    assert kicked.kicked.code == E.ERROR_CODE_UNAVAILABLE


def test_close_stream_by_the_client_is_acked_and_sends_no_event(server):
    opened = server.open()
    reply = server.call(2, close_stream=game_pb2.CloseStreamRequest(stream_id=opened.stream_id))
    assert reply.stream_ack.stream_id == opened.stream_id
    server.streams.reap()
    assert server.replies() == []


def test_unusable_frames_are_reported_rate_limited_with_counts_and_reason(server):
    opened = server.open()
    server.frame(opened, 1, b"\x00" * 63)  # GRAY8 8x8 needs 64
    [first] = server.replies()
    report = first.frame_errors
    assert first.request_id == 0 and report.stream_id == opened.stream_id
    assert report.reason == game_pb2.FRAME_ERROR_REASON_WRONG_SIZE and report.code == E.ERROR_CODE_INVALID_INPUT
    assert (report.count, report.total, report.last_sequence) == (1, 1, 1) and "needs 64" in report.message
    server.frame(opened, 2, b"\x00" * 65)  # dropped by reassembly (larger than any 8x8 GRAY8 frame): reported too
    server.frame(opened, 3, b"\x00" * 10)
    assert server.replies() == []  # within the report interval: held back
    server.clock.advance(server.streams.report_interval_s)
    server.streams.reap()
    [second] = server.replies()
    assert (second.frame_errors.count, second.frame_errors.total, second.frame_errors.last_sequence) == (2, 3, 3)
    server.frame(opened, 4, b"\x80" * 64)  # a good frame: a result, no report
    assert len(server.results()) == 1 and server.replies() == []


def test_jpeg_failures_name_their_reason(tmp_path):
    from PIL import Image

    server = Server(tmp_path)
    opened = server.open("JPEG")
    server.frame(opened, 1, b"\xff\xd8 not a jpeg")
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(buffer, format="JPEG")
    server.clock.advance(server.streams.report_interval_s)
    server.frame(opened, 2, buffer.getvalue())  # 16x16 on a stream opened 8x8
    reports = [m.frame_errors for m in server.replies()]
    assert [(r.reason, r.last_sequence) for r in reports] == [
        (game_pb2.FRAME_ERROR_REASON_UNDECODABLE, 1), (game_pb2.FRAME_ERROR_REASON_TOO_LARGE, 2)]
    assert "16x16 is larger than the stream's 8x8" in reports[1].message


def test_pending_failures_are_reported_before_the_stream_closed_event(server):
    opened = server.open()
    server.frame(opened, 1, b"")
    server.frame(opened, 2, b"")
    server.replies()
    server.clock.advance(6)
    server.streams.reap()
    report, closed = server.replies()
    assert report.frame_errors.count == 1 and report.frame_errors.total == 2
    assert closed.stream_closed.reason == game_pb2.STREAM_CLOSE_REASON_HEARTBEAT_TIMEOUT


# --- pixel formats ------------------------------------------------------------------------------------------------

def _image() -> np.ndarray:
    rng = np.random.default_rng(7)
    return rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)


def test_rgba8_and_bgra8_are_rgb_with_alpha_dropped_and_bottom_up_flips_rows():
    rgb = _image()
    alpha = np.full((4, 6, 1), 9, np.uint8)
    rgba = np.concatenate([rgb, alpha], axis=2).tobytes()
    bgra = np.concatenate([rgb[:, :, ::-1], alpha], axis=2).tobytes()
    np.testing.assert_array_equal(frame_pixels(rgba, "RGBA8", 6, 4), rgb)
    np.testing.assert_array_equal(frame_pixels(bgra, "BGRA8", 6, 4), rgb)
    np.testing.assert_array_equal(frame_pixels(rgb[::-1].tobytes(), "RGB8", 6, 4, bottom_up=True), rgb)
    np.testing.assert_array_equal(frame_to_rgb(bgra, "BGRA8", 6, 4), rgb)  # the face tracker's conversion
    np.testing.assert_array_equal(frame_to_rgb(rgba[: 6 * 4 * 4], "RGBA8", 6, 4, bottom_up=True), rgb[::-1])
    with pytest.raises(UnusableFrame, match="needs 96") as info:
        frame_pixels(rgba[:-1], "RGBA8", 6, 4)
    assert info.value.reason == "wrong_size"


@pytest.mark.parametrize("pixel_format", ["RGBA8", "BGRA8"])
def test_engine_pixel_formats_and_bottom_up_through_a_stream(server, pixel_format):
    """Row means of a frame whose rows are 0, 10, ..., 70 grey: top-down as sent, reversed when bottom_up."""
    rows = np.repeat(np.arange(8, dtype=np.uint8)[:, None] * 10, 8, axis=1)  # (8, 8) grey levels
    four = np.stack([rows, rows, rows, np.full_like(rows, 255)], axis=2).tobytes()
    top_down = server.open(pixel_format)
    server.frame(top_down, 1, four)
    bottom_up = server.open(pixel_format, bottom_up=True)
    server.frame(bottom_up, 1, four)
    first, second = server.results()
    expected = np.arange(8) * 10 / 255
    np.testing.assert_allclose(first.values, expected, atol=1e-5)
    np.testing.assert_allclose(second.values, expected[::-1], atol=1e-5)
    assert server.replies() == []


# --- one answer on every transport ----------------------------------------------------------------------------------

def test_game_metadata_reports_the_kserve_platform_name(server):
    from twinfer.kserve import messages as kserve

    reply = server.call(2, model_metadata=game_pb2.ModelMetadataRequest(model="tiny"))
    resolved = server.facade.resolve("tiny", None)
    assert reply.model_metadata.platform == "onnxruntime_onnx"
    assert kserve.model_metadata(server.facade.model("tiny"), resolved).platform == reply.model_metadata.platform


@pytest.mark.parametrize("version", ["abc", "1.0", "²", "-1"])
def test_a_non_integer_version_is_invalid_input_with_the_http_wording(server, version):
    reply = server.call(2, model_metadata=game_pb2.ModelMetadataRequest(model="tiny", version=version))
    assert reply.error.code == E.ERROR_CODE_INVALID_INPUT
    assert reply.error.message == f"invalid model version {version!r}: versions are positive integers"
    assert server.call(3, model_metadata=game_pb2.ModelMetadataRequest(model="tiny", version="9")).error.code == \
        E.ERROR_CODE_MODEL_NOT_FOUND  # an integer that is not served stays MODEL_NOT_FOUND


def test_output_labels_reach_the_kserve_metadata_and_config_as_parameters(tmp_path):
    import json

    import yaml

    from twinfer.kserve import messages as kserve

    root = make_repository(tmp_path)
    (root / "tiny" / "config.yaml").write_text(yaml.safe_dump({
        "backend": "onnxruntime", "max_batch_size": 8,
        "inputs": [{"name": "INPUT0", "datatype": "FP32", "dims": [16]}],
        "outputs": [{"name": "OUTPUT0", "datatype": "FP32", "dims": [16], "labels": [f"c{i}" for i in range(16)]}],
    }))
    repository = ModelRepository(root, Clock(), SyncThreads())
    repository.start()
    facade = InferenceFacade(repository)
    resolved = facade.resolve("tiny", None)
    body = kserve.model_metadata_json(facade.model("tiny"), resolved)
    assert body["outputs"][0]["parameters"] == {"labels": [f"c{i}" for i in range(16)]}
    assert "parameters" not in body["inputs"][0]
    config = kserve.triton_config(resolved.config)
    assert json.loads(config.parameters["labels.OUTPUT0"].string_value) == [f"c{i}" for i in range(16)]
