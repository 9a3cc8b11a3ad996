"""Issue #19 end to end, as an engine client written from docs/protocol.md would do it: raw sockets, struct and
hmac by hand (only the generated protobuf classes from game.proto), against a real server.

Login with a token built from the documented rule, capabilities, infer, metadata that agrees with KServe HTTP and
gRPC, an RGBA8 stream fed with uneven fragments in shuffled order plus heartbeats, a FrameErrors event for a frame
of the wrong size, StreamClosed when the heartbeats stop and when the model is unloaded, and on SIGTERM
StreamClosed(SERVER_DRAIN) then Kicked.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import socket
import struct
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from twinfer.demo_models import build_repository
from twinfer.protocol import game_pb2

pytestmark = pytest.mark.e2e
SECRET = "engine-contract-e2e"
ADMIN = "engine-contract-admin"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_token(user: str) -> str:
    payload = b64url(json.dumps({"sub": user, "exp": 0}).encode())
    signed = "v1." + payload
    return signed + "." + b64url(hmac.new(SECRET.encode(), signed.encode(), hashlib.sha256).digest())


class RawClient:
    """The game protocol by hand: 6-byte big-endian header (length, flags 0), then a protobuf body."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buffer = b""
        self.next_id = 1
        self.events: list[game_pb2.ServerMessage] = []

    def send(self, **body) -> int:
        request_id, self.next_id = self.next_id, self.next_id + 1
        data = game_pb2.ClientMessage(request_id=request_id, **body).SerializeToString()
        self.sock.sendall(struct.pack(">IH", len(data), 0) + data)
        return request_id

    def read(self, timeout: float = 10.0) -> game_pb2.ServerMessage:
        deadline = time.monotonic() + timeout
        while len(self.buffer) < 6 or len(self.buffer) < 6 + struct.unpack(">I", self.buffer[:4])[0]:
            self.sock.settimeout(max(deadline - time.monotonic(), 0.01))
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buffer += chunk
        length = struct.unpack(">I", self.buffer[:4])[0]
        body, self.buffer = self.buffer[6 : 6 + length], self.buffer[6 + length :]
        return game_pb2.ServerMessage.FromString(body)

    def call(self, **body) -> game_pb2.ServerMessage:
        request_id = self.send(**body)
        while True:
            message = self.read()
            if message.request_id == request_id:
                return message
            self.events.append(message)

    def event(self, kind: str, timeout: float = 10.0) -> game_pb2.ServerMessage:
        deadline = time.monotonic() + timeout
        while True:
            for message in self.events:
                if message.WhichOneof("body") == kind:
                    self.events.remove(message)
                    return message
            message = self.read(deadline - time.monotonic())
            assert message.request_id == 0, message
            self.events.append(message)


def datagram(key: bytes, kind: int, stream_id: int, sequence: int, index: int, count: int, payload: bytes) -> bytes:
    signed = struct.pack(">BBIQqHH", 1, kind, stream_id, sequence, time.time_ns(), index, count) + payload
    return signed + hmac.new(key, signed, hashlib.sha256).digest()[:16]


def repository(server, model: str, action: str) -> None:
    request = urllib.request.Request(f"http://{server.http}/v2/repository/models/{model}/{action}", data=b"{}",
                                     headers={"Authorization": f"Bearer {ADMIN}"}, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200


@pytest.fixture
def server(tmp_path, server_factory):
    repo = tmp_path / "repo"
    build_repository(repo)
    running = server_factory(repo, "--token-secret", SECRET, env={"TWINFER_STREAM_HEARTBEAT_TIMEOUT_S": "1",
                                                                  "TWINFER_AUTH__ADMIN_TOKEN": ADMIN})
    yield running
    running.stop()


def test_an_engine_client_from_the_reference_alone(server):
    client = RawClient(server.tcp)
    token = make_token("unity")
    login = client.call(login=game_pb2.LoginRequest(token=token, client_name="e2e", protocol_version=2)).login
    assert login.user == "unity" and login.protocol_version == 2 and login.expires_at_unix == 0
    assert "RGBA8" in login.capabilities.pixel_formats and login.capabilities.heartbeat_timeout_s == 1.0
    refused = client.call(login=game_pb2.LoginRequest(token=token, protocol_version=99))
    assert refused.error.code == game_pb2.ERROR_CODE_UNSUPPORTED_PROTOCOL
    client.call(login=game_pb2.LoginRequest(token=token, protocol_version=2))

    infer = game_pb2.InferRequest(model="tiny")
    infer.inputs.add(name="INPUT0", datatype="FP32", shape=[1, 16], data=np.ones(16, "<f4").tobytes())
    reply = client.call(infer=infer).infer
    assert reply.outputs[0].name == "OUTPUT0" and len(reply.outputs[0].data) == 64

    # metadata: the same platform and labels as KServe HTTP and gRPC; a non-integer version the same error
    meta = client.call(model_metadata=game_pb2.ModelMetadataRequest(model="face_blendshapes")).model_metadata
    header = {"Authorization": f"Bearer {token}"}
    with urllib.request.urlopen(urllib.request.Request(
            f"http://{server.http}/v2/models/face_blendshapes", headers=header), timeout=10) as response:
        http_meta = json.loads(response.read())
    assert http_meta["platform"] == meta.platform == "onnxruntime_onnx"
    assert http_meta["outputs"][0]["parameters"]["labels"] == list(meta.outputs[0].labels)
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    grpc = grpcclient.InferenceServerClient(server.grpc)
    metadata = {"authorization": f"Bearer {token}"}  # gRPC metadata keys are lower case
    grpc_meta = grpc.get_model_metadata("face_blendshapes", headers=metadata)
    assert grpc_meta.platform == meta.platform
    grpc_config = grpc.get_model_config("face_blendshapes", headers=metadata).config
    assert json.loads(grpc_config.parameters[f"labels.{meta.outputs[0].name}"].string_value) == list(
        meta.outputs[0].labels)
    wrong = client.call(model_metadata=game_pb2.ModelMetadataRequest(model="tiny", version="v1")).error
    assert wrong.code == game_pb2.ERROR_CODE_INVALID_INPUT
    with pytest.raises(urllib.error.HTTPError) as http_error:
        urllib.request.urlopen(urllib.request.Request(f"http://{server.http}/v2/models/tiny/versions/v1",
                                                      headers=header), timeout=10)
    assert http_error.value.code == 400 and json.loads(http_error.value.read())["error"] == wrong.message
    with pytest.raises(InferenceServerException) as grpc_error:
        grpc.get_model_metadata("tiny", model_version="v1", headers=metadata)
    assert grpc_error.value.status() == "StatusCode.INVALID_ARGUMENT" and wrong.message in grpc_error.value.message()
    grpc.close()

    # a stream: RGBA8, uneven fragments in shuffled order, results back on UDP
    results = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    results.bind(("127.0.0.1", 0))
    results.settimeout(10)
    request = game_pb2.OpenStreamRequest(model="face_blendshapes", pixel_format="RGBA8", width=32, height=32,
                                         bottom_up=True)
    request.targets.add(kind="native", host="127.0.0.1", port=results.getsockname()[1])
    opened = client.call(open_stream=request).open_stream
    assert len(opened.key) == 32 and len(opened.labels) == 52
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    target = (opened.udp_host, opened.udp_port)
    frame = np.random.default_rng(1).integers(0, 256, 32 * 32 * 4, dtype=np.uint8).tobytes()
    cuts = [0, 1000, 1100, 3000, len(frame)]  # 1000, 100, 1900 and 1096 bytes
    parts = [datagram(opened.key, 0, opened.stream_id, 1, i, 4, frame[a:b])
             for i, (a, b) in enumerate(zip(cuts, cuts[1:]))]
    random.Random(5).shuffle(parts)
    for part in parts:
        udp.sendto(part, target)
    result = game_pb2.StreamResult.FromString(results.recv(65536))
    assert result.stream_id == opened.stream_id and result.sequence == 1 and len(result.values) == 52

    # a frame of the wrong size: reported on TCP
    udp.sendto(datagram(opened.key, 0, opened.stream_id, 2, 0, 1, frame[:-4]), target)
    report = client.event("frame_errors").frame_errors
    assert report.stream_id == opened.stream_id and report.reason == game_pb2.FRAME_ERROR_REASON_WRONG_SIZE
    assert report.count == 1 and report.last_sequence == 2 and "needs 4096" in report.message

    # heartbeats keep it open past the timeout; silence closes it with a StreamClosed event
    start = time.monotonic()
    sequence = 3
    while time.monotonic() - start < 2.0:
        udp.sendto(datagram(opened.key, 1, opened.stream_id, sequence, 0, 1, b""), target)
        sequence += 1
        time.sleep(0.2)  # the heartbeat period of this client, not a wait for the server
    assert not any(m.HasField("stream_closed") for m in client.events)
    closed = client.event("stream_closed", timeout=5).stream_closed
    assert closed.stream_id == opened.stream_id
    assert closed.reason == game_pb2.STREAM_CLOSE_REASON_HEARTBEAT_TIMEOUT
    gone = client.call(close_stream=game_pb2.CloseStreamRequest(stream_id=opened.stream_id))
    assert gone.error.code == game_pb2.ERROR_CODE_STREAM_NOT_FOUND

    # its model unloaded (KServe's repository API): MODEL_UNLOADED; loaded again, streams open again
    unloaded = client.call(open_stream=request).open_stream
    repository(server, "face_blendshapes", "unload")
    closed = client.event("stream_closed", timeout=5).stream_closed
    assert closed.stream_id == unloaded.stream_id
    assert closed.reason == game_pb2.STREAM_CLOSE_REASON_MODEL_UNLOADED and "face_blendshapes" in closed.detail
    repository(server, "face_blendshapes", "load")

    # SIGTERM: the stream's owner hears SERVER_DRAIN, then the connection is kicked with UNAVAILABLE
    second = client.call(open_stream=request).open_stream
    udp.sendto(datagram(second.key, 1, second.stream_id, 1, 0, 1, b""), (second.udp_host, second.udp_port))
    assert server.stop() == 0
    drained = client.event("stream_closed").stream_closed
    assert drained.stream_id == second.stream_id and drained.reason == game_pb2.STREAM_CLOSE_REASON_SERVER_DRAIN
    kicked = client.event("kicked").kicked
    assert kicked.code == game_pb2.ERROR_CODE_UNAVAILABLE
    udp.close()
    results.close()
