"""The golden vectors of tests/golden (issue #19) against the server, the Python client and the encoders.

The files are written once by tools/make_golden.py and committed; nothing here regenerates them. Each claim of
docs/protocol.md that a vector pins is checked twice where it can be: by the rule written out in the test (HMAC,
struct layouts) and by twinfer's own code, so the document, the vectors and the code cannot drift apart silently.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import random
import struct
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import json_format
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from tests.support import SyncThreads, make_repository, parse_live_link_with_struct
from tests.unit.test_stream_limits import build_image_model
from twinfer.client import messages
from twinfer.client.errors import SessionClosed
from twinfer.client.twisted_client import GameClientProtocol
from twinfer.errors import Unauthenticated
from twinfer.faces.reading import CalibrationState, FaceReading
from twinfer.inference.facade import InferenceFacade
from twinfer.inference.repository import ModelRepository
from twinfer.protocol import game_pb2
from twinfer.protocol.framing import FrameDecoder
from twinfer.security.tokens import Authenticator, TokenAuthority
from twinfer.server.commands import ServerContext, default_registry
from twinfer.server.connection import ConnectionLimits, GameServerFactory
from twinfer.server.sessions import SessionRegistry
from twinfer.streaming import datagram as dg
from twinfer.streaming.manager import StreamManager
from twinfer.streaming.outputs.base import FrameResult
from twinfer.streaming.outputs.livelink import LiveLinkFormat, parse_packet
from twinfer.streaming.outputs.vmc import VmcFormat

GOLDEN = Path(__file__).resolve().parent.parent / "golden"


def load(name: str) -> dict:
    return json.loads((GOLDEN / f"{name}.json").read_text(encoding="utf-8"))


TOKENS, GAME, DATAGRAMS, OUTPUTS = load("tokens"), load("game_messages"), load("datagrams"), load("outputs")
FRAMES = {f["name"]: f for f in GAME["frames"]}


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# --- tokens -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("vector", TOKENS["vectors"], ids=lambda v: v["name"])
def test_token_vectors_follow_the_documented_rule_and_the_server_agrees(vector):
    secret = bytes.fromhex(TOKENS["secret_utf8_hex"])
    assert secret == TOKENS["secret"].encode()
    payload = vector["payload_b64url"]
    assert base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode() == vector["payload_json"]
    assert vector["signed"] == "v1." + payload
    tag = hmac.new(secret, vector["signed"].encode(), hashlib.sha256).digest()
    assert tag.hex() == vector["tag_hex"]
    assert vector["token"].startswith(vector["signed"] + ".")
    authority = TokenAuthority(TOKENS["secret"])
    if vector["accepted"]:
        assert vector["token"] == f"{vector['signed']}.{_b64url(tag)}"  # unpadded base64url tag
        claims = authority.verify(vector["token"], TOKENS["now_unix"])
        parsed = json.loads(vector["payload_json"])
        assert (claims.user, claims.expires_at) == (parsed["sub"], parsed["exp"])
    else:
        with pytest.raises(Unauthenticated):
            authority.verify(vector["token"], TOKENS["now_unix"])


def test_the_server_issues_exactly_the_golden_token():
    first = TOKENS["vectors"][0]
    parsed = json.loads(first["payload_json"])
    assert TokenAuthority(TOKENS["secret"]).issue(parsed["sub"], parsed["exp"]) == first["token"]


# --- game frames --------------------------------------------------------------------------------------------------

def _message(vector: dict):
    cls = game_pb2.ClientMessage if vector["direction"] == "client" else game_pb2.ServerMessage
    return json_format.ParseDict(vector["message"], cls())


@pytest.mark.parametrize("vector", GAME["frames"], ids=lambda v: v["name"])
def test_every_frame_is_a_big_endian_header_and_its_message(vector):
    framed = bytes.fromhex(vector["frame_hex"])
    length, flags = struct.unpack(">IH", framed[:6])
    assert (length, flags) == (len(framed) - 6, 0) and framed[:6].hex() == vector["header_hex"]
    assert framed[6:].hex() == vector["body_hex"]
    assert _message(vector).SerializeToString() == framed[6:]
    [(got_flags, body)] = list(FrameDecoder().feed(framed))
    assert got_flags == 0 and body == framed[6:]


def test_the_python_client_builds_the_golden_request_frames():
    login = FRAMES["login"]["message"]
    assert messages.build_login(1, login["login"]["token"], "golden").hex() == FRAMES["login"]["frame_hex"]
    x = np.arange(16, dtype=np.float32).reshape(1, 16) / 4
    assert messages.build_infer(2, "tiny", {"INPUT0": x}).hex() == FRAMES["infer"]["frame_hex"]
    unknown = messages.build_infer(3, "nope", {"INPUT0": np.array([[1.5]], np.float32)})
    assert unknown.hex() == FRAMES["infer_unknown_model"]["frame_hex"]
    body = _message(FRAMES["open_stream"]).open_stream
    assert messages.build_body(4, "open_stream", body).hex() == FRAMES["open_stream"]["frame_hex"]


class _Server:
    def __init__(self, tmp_path, secret: str = "") -> None:
        self.clock = Clock()
        threads = SyncThreads()
        repository = ModelRepository(build_image_model(make_repository(tmp_path)), self.clock, threads)
        repository.start()
        facade = InferenceFacade(repository)
        self.streams = StreamManager(facade, self.clock, threads.run_io, "127.0.0.1", max_datagram_bytes=1200)
        self.sent: list[bytes] = []
        self.streams.attach(lambda data, address: self.sent.append(data), 9001)
        context = ServerContext(facade, SessionRegistry(), Authenticator(secret), self.clock, self.streams)
        self.proto = GameServerFactory(context, default_registry(context), ConnectionLimits()).buildProtocol(None)
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 5555))
        self.proto.makeConnection(self.transport)

    def feed(self, hex_bytes: str) -> bytes:
        self.proto.dataReceived(bytes.fromhex(hex_bytes))
        out = self.transport.value()
        self.transport.clear()
        return out


def test_the_server_answers_the_golden_requests_with_the_golden_replies(tmp_path):
    server = _Server(tmp_path, TOKENS["secret"])
    [login] = [game_pb2.ServerMessage.FromString(b) for _, b in FrameDecoder().feed(server.feed(
        FRAMES["login"]["frame_hex"]))]
    assert login.request_id == 1 and login.login.user == "unreal-bot" and login.login.protocol_version == 2
    [infer] = [game_pb2.ServerMessage.FromString(b) for _, b in FrameDecoder().feed(server.feed(
        FRAMES["infer"]["frame_hex"]))]
    assert infer.request_id == 2 and messages.infer_outputs(infer)["OUTPUT0"].shape == (1, 16)
    assert server.feed(FRAMES["infer_unknown_model"]["frame_hex"]).hex() == FRAMES["error_model_not_found"][
        "frame_hex"]
    ping_zero = game_pb2.ClientMessage(request_id=0, ping=game_pb2.PingRequest())
    assert server.feed(messages.frame(ping_zero).hex()).hex() == FRAMES["error_request_id_0"]["frame_hex"]
    opened = take_messages_hex(server, FRAMES["open_stream"]["frame_hex"])
    assert opened.open_stream.stream_id == 1 and len(opened.open_stream.key) == 32
    assert server.feed(GAME["oversized_header_hex"]).hex() == FRAMES["kicked_frame_too_large"]["frame_hex"]
    assert server.transport.disconnecting


def take_messages_hex(server: _Server, hex_bytes: str) -> game_pb2.ServerMessage:
    [reply] = [game_pb2.ServerMessage.FromString(b) for _, b in FrameDecoder().feed(server.feed(hex_bytes))]
    return reply


def test_the_server_sends_the_golden_stream_events(tmp_path):
    server = _Server(tmp_path)
    request = game_pb2.OpenStreamRequest(model="pixels", width=8, height=8)
    opened = take_messages_hex(server, messages.build_body(1, "open_stream", request).hex()).open_stream
    for datagram in dg.fragment_frame(opened.key, opened.stream_id, 1, 0, b"\0" * 63, 1200):
        server.streams.datagram_received(datagram)
    assert server.transport.value().hex() == FRAMES["frame_errors"]["frame_hex"]
    server.transport.clear()
    server.clock.advance(5.1)
    server.streams.reap()
    assert server.transport.value().hex() == FRAMES["stream_closed"]["frame_hex"]


def test_the_twisted_client_reads_the_golden_server_frames():
    client = GameClientProtocol()
    client.makeConnection(StringTransport())
    client._ids = itertools.count(5)  # the golden pong answers request 5
    pending = client.ping()
    for name in ("pong", "stream_closed", "frame_errors"):
        client.dataReceived(bytes.fromhex(FRAMES[name]["frame_hex"]))
    assert pending.called
    assert [e.WhichOneof("body") for e in client.events] == ["stream_closed", "frame_errors"]
    waiting = client.models()
    client.dataReceived(bytes.fromhex(FRAMES["kicked_frame_too_large"]["frame_hex"]))
    failures: list = []
    waiting.addErrback(failures.append)
    assert failures and failures[0].check(SessionClosed)
    assert failures[0].value.code == game_pb2.ERROR_CODE_FRAME_TOO_LARGE


# --- stream datagrams ---------------------------------------------------------------------------------------------

def test_datagram_vectors_follow_the_documented_layout():
    key = bytes.fromhex(DATAGRAMS["key_hex"])
    for fields in [*DATAGRAMS["fragments"], DATAGRAMS["heartbeat"]]:
        data = bytes.fromhex(fields["hex"])
        signed, tag = data[:-16], data[-16:]
        assert signed.hex() == fields["signed_hex"] and tag.hex() == fields["tag_hex"]
        assert hmac.new(key, signed, hashlib.sha256).digest()[:16] == tag  # header + payload, not the tag
        version, kind, stream_id, sequence, capture, index, count = struct.unpack(">BBIQqHH", signed[:26])
        assert (version, kind, stream_id, sequence, capture, index, count) == (
            1, fields["kind"], fields["stream_id"], fields["sequence"], fields["capture_time_ns"],
            fields["fragment_index"], fields["fragment_count"])
        assert signed[26:].hex() == fields["payload_hex"]
    beat = DATAGRAMS["heartbeat"]
    assert (beat["kind"], beat["fragment_index"], beat["fragment_count"], beat["payload_hex"]) == (1, 0, 1, "")
    frame = DATAGRAMS["frame"]
    assert [f["fragment_index"] for f in DATAGRAMS["fragments"]] == [0, 1, 2]
    assert max(len(f["hex"]) // 2 for f in DATAGRAMS["fragments"]) == frame["max_datagram_bytes"]
    assert "".join(f["payload_hex"] for f in DATAGRAMS["fragments"]) == frame["pixels_hex"]


def test_twinfer_fragments_and_signs_exactly_the_golden_datagrams():
    key, frame = bytes.fromhex(DATAGRAMS["key_hex"]), DATAGRAMS["frame"]
    built = dg.fragment_frame(key, DATAGRAMS["stream_id"], frame["sequence"], frame["capture_time_ns"],
                              bytes.fromhex(frame["pixels_hex"]), frame["max_datagram_bytes"])
    assert [b.hex() for b in built] == [f["hex"] for f in DATAGRAMS["fragments"]]
    beat = DATAGRAMS["heartbeat"]
    assert dg.heartbeat(key, beat["stream_id"], beat["sequence"], beat["capture_time_ns"]).hex() == beat["hex"]


def test_the_server_reassembles_the_golden_fragments_in_any_order(tmp_path):
    server = _Server(tmp_path)
    frame = DATAGRAMS["frame"]
    request = game_pb2.OpenStreamRequest(model="pixels", width=frame["width"], height=frame["height"],
                                         pixel_format=frame["pixel_format"])
    request.targets.add(kind="native", host="127.0.0.1", port=39000)
    opened = take_messages_hex(server, messages.build_body(1, "open_stream", request).hex()).open_stream
    stream = server.streams.streams[opened.stream_id]
    assert stream.id == DATAGRAMS["stream_id"]
    stream.key = bytes.fromhex(DATAGRAMS["key_hex"])  # the vectors' key in place of the random one
    stream.signer = dg.Signer(stream.key)
    server.streams.datagram_received(bytes.fromhex(DATAGRAMS["forged_hex"]))
    assert stream.stats.dropped["forged"] == 1
    fragments = [bytes.fromhex(f["hex"]) for f in DATAGRAMS["fragments"]]
    random.Random(3).shuffle(fragments)
    for data in fragments:
        server.streams.datagram_received(data)
    server.streams.datagram_received(bytes.fromhex(DATAGRAMS["heartbeat"]["hex"]))
    [result] = [game_pb2.StreamResult.FromString(d) for d in server.sent]
    assert result.sequence == frame["sequence"] and result.capture_time_ns == frame["capture_time_ns"]
    assert stream.stats.frames_in == 1 and not stream.stats.dropped.get("replayed")
    server.streams.datagram_received(fragments[0])  # a replay of an accepted frame
    assert stream.stats.dropped["replayed"] == 1


# --- Live Link and VMC --------------------------------------------------------------------------------------------

def golden_result() -> FrameResult:
    r = OUTPUTS["result"]
    f32 = lambda values: np.array(values, np.float32)  # noqa: E731
    face = FaceReading(r["tracked"], r["score"], f32(r["values"]), f32(r["head_rotation_rad"]),
                       f32(r["head_translation_m"]), f32(r["left_eye_rad"]), f32(r["right_eye_rad"]),
                       CalibrationState[r["calibration"]])
    return FrameResult(r["stream_id"], r["sequence"], r["capture_time_ns"], 0, f32(r["values"]), tuple(r["labels"]),
                       "1", face, r["stream_seconds"])


def test_the_live_link_packet_has_the_documented_layout():
    data = bytes.fromhex(OUTPUTS["livelink_hex"])
    r = OUTPUTS["result"]
    version, device, subject, frame, sub_frame, numerator, denominator, count, values = \
        parse_live_link_with_struct(data)  # checks the packet ends right after its `count` floats
    assert version == 6
    assert (device, subject, numerator, denominator, count) == (f"twinfer-{r['stream_id']}", r["subject"], 60, 1, 61)
    frames = r["capture_time_ns"] / 1e9 * 60
    assert frame == int(frames) % 2**31 and sub_frame == pytest.approx(frames - int(frames), abs=1e-3)
    np.testing.assert_allclose(values[:52], r["values"], rtol=1e-6)
    assert (device, subject, frame, [numerator, denominator]) == (
        OUTPUTS["livelink"]["device"], OUTPUTS["livelink"]["subject"], OUTPUTS["livelink"]["frame"],
        OUTPUTS["livelink"]["rate"])
    assert sub_frame == OUTPUTS["livelink"]["sub_frame"] and list(values) == OUTPUTS["livelink"]["values"]
    np.testing.assert_allclose(values[52:55], np.array(r["head_rotation_rad"]) / np.pi, rtol=1e-6)
    np.testing.assert_allclose(values[55:61], [r["left_eye_rad"][0] / np.pi, r["left_eye_rad"][1] / np.pi, 0,
                                               r["right_eye_rad"][0] / np.pi, r["right_eye_rad"][1] / np.pi, 0],
                               rtol=1e-6)


def test_twinfer_encodes_exactly_the_golden_live_link_packet_and_vmc_bundles():
    result = golden_result()
    packet = LiveLinkFormat("twinfer").encode(result)[0]
    assert packet.hex() == OUTPUTS["livelink_hex"]
    assert parse_packet(packet).subject == "twinfer"
    bundles = VmcFormat("twinfer").encode(result)
    assert [b.hex() for b in bundles] == OUTPUTS["vmc_bundles_hex"]


def test_every_golden_vmc_bundle_stands_on_its_own():
    from pythonosc.osc_bundle import OscBundle

    names: list[str] = []
    for i, hex_bundle in enumerate(OUTPUTS["vmc_bundles_hex"]):
        data = bytes.fromhex(hex_bundle)
        assert len(data) <= 1200
        contents = [m for m in OscBundle(data)]
        assert [[m.address, *m.params] for m in contents] == OUTPUTS["vmc_bundles"][i]
        addresses = [m.address for m in contents]
        assert addresses[:2] == ["/VMC/Ext/OK", "/VMC/Ext/T"] and addresses[-1] == "/VMC/Ext/Blend/Apply"
        assert contents[0].params == [1, 3, 0, 1] and contents[1].params == [OUTPUTS["result"]["stream_seconds"]]
        if i == 0:
            assert addresses[2:6] == ["/VMC/Ext/Root/Pos", "/VMC/Ext/Bone/Pos", "/VMC/Ext/Bone/Pos",
                                      "/VMC/Ext/Bone/Pos"]
        names += [m.params[0] for m in contents if m.address == "/VMC/Ext/Blend/Val"]
    assert names == OUTPUTS["result"]["labels"]


def test_the_blocking_client_keeps_the_golden_events_and_ends_on_the_kick():
    import socket
    import threading
    import time

    from twinfer.client import Client

    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            for name in ("stream_closed", "frame_errors", "kicked_frame_too_large"):
                conn.sendall(bytes.fromhex(FRAMES[name]["frame_hex"]))
            conn.recv(1)  # until the client goes

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client = Client("127.0.0.1", listener.getsockname()[1], timeout=5)
    deadline = time.monotonic() + 5
    while not client.closed and time.monotonic() < deadline:
        time.sleep(0.01)  # polling the reader thread's progress, with a deadline
    assert client.closed
    assert [e.WhichOneof("body") for e in client.events] == ["stream_closed", "frame_errors"]
    assert client.events[0].stream_closed.reason == game_pb2.STREAM_CLOSE_REASON_HEARTBEAT_TIMEOUT
    with pytest.raises(SessionClosed) as info:
        client.models()
    assert info.value.code == game_pb2.ERROR_CODE_FRAME_TOO_LARGE
    client.close()
    thread.join(5)
    listener.close()
