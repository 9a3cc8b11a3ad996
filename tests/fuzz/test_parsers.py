"""Property-based fuzzing of every parser a client can reach (issue #14): whatever the bytes, each parser either
parses or raises its one typed error, never anything else, and nothing it holds grows without bound.

Inputs are drawn by hypothesis two ways: structured values (shapes, floats, names, JSON documents) and seeded
byte mutations (`tests.fuzz.mutate`) of valid messages, which reach deeper than random bytes do.
"""

from __future__ import annotations

import base64
import json
import math
import random
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2 as pb
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher

from tests.fuzz.mutate import mutate, splice
from tests.support import SyncThreads, make_repository
from twinfer.errors import ConfigError, InvalidInput, TwinferError, Unauthenticated
from twinfer.grpc.infer_codec import decode_request
from twinfer.http.infer_codec import parse_infer
from twinfer.inference.config_loading import load_model_config
from twinfer.inference.facade import InferenceFacade
from twinfer.inference.limits import ElementBudget
from twinfer.inference.repository import ModelRepository
from twinfer.protocol import game_pb2
from twinfer.protocol.framing import HEADER_SIZE, FrameDecoder, encode_frame
from twinfer.security.tokens import Authenticator, TokenAuthority
from twinfer.server.commands import ServerContext, default_registry
from twinfer.server.connection import ConnectionLimits, GameServerFactory
from twinfer.server.sessions import SessionRegistry
from twinfer.streaming import datagram as dg
from twinfer.streaming.reassembly import FrameAssembler

SECRET = "fuzz-secret"
seeds = st.integers(0, 2**32 - 1)


class LoggedFailures:
    """Twisted log events that carry a failure (a traceback in the server's log)."""

    def __init__(self) -> None:
        self.events: list[dict] = []

    def __call__(self, event: dict) -> None:
        if "log_failure" in event:
            self.events.append(event)


@pytest.fixture(scope="module")
def logged_failures():
    observer = LoggedFailures()
    globalLogPublisher.addObserver(observer)
    yield observer
    globalLogPublisher.removeObserver(observer)
    assert not observer.events, [e["log_failure"].getTraceback() for e in observer.events[:3]]


@pytest.fixture(scope="module")
def facade():
    from twinfer.demo_models import copy_shipped_face_model

    clock = Clock()
    root = make_repository(Path(tempfile.mkdtemp()) / "repo")
    (root / "face" / "1").mkdir(parents=True)
    copy_shipped_face_model(root / "face" / "1" / "model.onnx")  # an image model, so streams can open
    repository = ModelRepository(root, clock, SyncThreads())
    repository.start()
    return InferenceFacade(repository, max_request_elements=4096)


# --- game protocol ------------------------------------------------------------------------------------------------

def _valid_client_messages() -> list[bytes]:
    token = TokenAuthority(SECRET).issue("fuzzer", 0)
    messages = [game_pb2.ClientMessage(request_id=1, login=game_pb2.LoginRequest(token=token, client_name="f")),
                game_pb2.ClientMessage(request_id=2, ping=game_pb2.PingRequest(client_time_ns=5)),
                game_pb2.ClientMessage(request_id=3, list_models=game_pb2.ListModelsRequest()),
                game_pb2.ClientMessage(request_id=4, model_metadata=game_pb2.ModelMetadataRequest(model="tiny"))]
    infer = game_pb2.ClientMessage(request_id=5)
    infer.infer.model = "tiny"
    infer.infer.inputs.add(name="INPUT0", datatype="FP32", shape=[1, 16], data=np.ones(16, np.float32).tobytes())
    messages.append(infer)
    opened = game_pb2.ClientMessage(request_id=6)
    opened.open_stream.model = "tiny"
    opened.open_stream.width = opened.open_stream.height = 4
    messages.append(opened)
    return [m.SerializeToString() for m in messages]


GAME_SEEDS = _valid_client_messages()


@given(st.binary(max_size=512), st.lists(st.integers(1, 64), max_size=8))
def test_frame_decoder_holds_at_most_one_frame_whatever_the_bytes(data, cuts):
    decoder = FrameDecoder(max_body=256)
    chunks, start = [], 0
    for cut in cuts:
        chunks.append(data[start : start + cut])
        start += cut
    chunks.append(data[start:])
    try:
        for chunk in chunks:
            for _flags, body in decoder.feed(chunk):
                assert len(body) <= 256
            assert decoder.buffered <= HEADER_SIZE + 256
    except TwinferError as exc:
        assert "exceeds the limit" in exc.message


@given(seeds, st.booleans())
def test_game_connection_answers_mutated_frames_with_frames_and_never_raises(facade, logged_failures, seed, auth):
    rng = random.Random(seed)
    context = ServerContext(facade, SessionRegistry(), Authenticator(SECRET if auth else ""), Clock())
    factory = GameServerFactory(context, default_registry(context), ConnectionLimits(max_frame_bytes=4096))
    proto = factory.buildProtocol(None)
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 5555))
    proto.makeConnection(transport)
    stream = b"".join(
        encode_frame(mutate(rng.choice(GAME_SEEDS), rng) if rng.random() < 0.8 else rng.choice(GAME_SEEDS))
        for _ in range(rng.randrange(1, 12))
    )
    if rng.random() < 0.3:
        stream = mutate(stream, rng)  # break the framing itself
    for i in range(0, len(stream), rng.randrange(1, 300)):
        proto.dataReceived(stream[i : i + 300])
    for _flags, body in FrameDecoder(1 << 24).feed(transport.value()):
        reply = game_pb2.ServerMessage.FromString(body)
        if reply.HasField("error"):
            assert reply.error.code != game_pb2.ERROR_CODE_INTERNAL, reply.error.message
    proto.connectionLost(None)
    assert len(context.sessions) == 0


# --- stream datagrams -----------------------------------------------------------------------------------------------

KEY = b"k" * 32


@given(st.binary(max_size=200))
def test_datagram_parsing_raises_only_datagram_errors(data):
    try:
        dg.decode(KEY, data) if dg.peek_stream_id(data) == 7 else None
    except dg.DatagramError as exc:
        assert exc.reason in ("malformed", "forged")


@given(seeds)
def test_reassembly_of_authentic_mutated_fragments_stays_bounded(seed):
    """Mutated datagrams re-signed with the stream key, so they pass the tag and reach the reassembly."""
    rng = random.Random(seed)
    assembler = FrameAssembler(window=16, max_partial=4, max_frame_bytes=3000)
    signer = dg.Signer(KEY)
    for sequence in range(rng.randrange(1, 40)):
        frame = rng.randbytes(rng.randrange(1, 3000))
        for raw in dg.fragment_frame(signer, 7, sequence * rng.choice((1, 1, -1, 3)) % 2**63, 0, frame, 600):
            signed = mutate(raw[: -dg.TAG_BYTES], rng) if rng.random() < 0.3 else raw[: -dg.TAG_BYTES]
            try:
                datagram = dg.decode(signer, signed + signer.tag(signed))
                if datagram.kind == dg.KIND_HEARTBEAT:
                    assembler.heartbeat(datagram)
                else:
                    done = assembler.add(datagram)
                    assert done is None or len(done[2]) <= 3000
            except dg.DatagramError:
                pass
            held = sum(p.size for p in assembler._partial.values())
            assert len(assembler._partial) <= 4 and held <= 4 * 3000


# --- KServe JSON, binary and gRPC tensors --------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
datatypes = st.sampled_from(["FP32", "FP64", "INT8", "INT64", "UINT8", "BOOL", "FP16", "BYTES", "STRING", ""])
shapes = st.lists(st.integers(-2, 3_000_000_000) | st.sampled_from([0, 1, 2, 16, 2**62]), max_size=6)


@st.composite
def kserve_inputs(draw):
    entry = {"name": draw(st.sampled_from(["INPUT0", "x", "", "\n"])), "datatype": draw(datatypes),
             "shape": draw(shapes | json_values)}
    if draw(st.booleans()):
        entry["data"] = draw(json_values | st.lists(st.floats() | st.integers() | st.text(max_size=3), max_size=40))
    else:
        entry["parameters"] = {"binary_data_size": draw(st.integers(-5, 200) | json_values)}
    return entry


@given(st.lists(kserve_inputs(), max_size=3), st.binary(max_size=200), st.booleans(), json_values)
def test_kserve_http_bodies_parse_or_are_invalid_input(inputs, binary, with_header, extra):
    header = json.dumps({"inputs": inputs, "parameters": extra if isinstance(extra, dict) else {},
                         "outputs": extra if isinstance(extra, list) else None}).encode()
    try:
        parsed = parse_infer("tiny", None, header + binary, str(len(header)).encode() if with_header else None,
                             ElementBudget(4096))
    except InvalidInput:
        return
    assert sum(a.size for a in parsed.request.inputs.values()) <= 4096


@given(seeds)
def test_mutated_kserve_bodies_parse_or_are_invalid_input(seed):
    rng = random.Random(seed)
    x = np.ones((1, 16), np.float32)
    header = json.dumps({"inputs": [{"name": "INPUT0", "shape": [1, 16], "datatype": "FP32",
                                     "parameters": {"binary_data_size": x.nbytes}}]}).encode()
    body = mutate(header + x.tobytes(), rng)
    try:
        parse_infer("tiny", None, body, str(len(header)).encode() if rng.random() < 0.7 else None,
                    ElementBudget(4096))
    except InvalidInput:
        pass


@st.composite
def grpc_requests(draw):
    request = pb.ModelInferRequest(model_name=draw(st.sampled_from(["tiny", "", "x\n"])))
    raw = draw(st.booleans())
    for _ in range(draw(st.integers(0, 3))):
        tensor = request.inputs.add(name=draw(st.sampled_from(["INPUT0", "b"])), datatype=draw(datatypes),
                                    shape=draw(st.lists(st.integers(-2, 2**62), max_size=5)))
        if raw:
            request.raw_input_contents.append(draw(st.binary(max_size=128)))
        else:
            tensor.contents.fp32_contents.extend(draw(st.lists(st.floats(width=32), max_size=20)))
            tensor.contents.bytes_contents.extend(draw(st.lists(st.binary(max_size=4), max_size=5)))
            tensor.contents.int_contents.extend(draw(st.lists(st.integers(-2**31, 2**31 - 1), max_size=5)))
    if draw(st.booleans()):
        request.raw_input_contents.append(b"\0" * draw(st.integers(0, 8)))
    return request


@given(grpc_requests())
def test_grpc_requests_decode_and_infer_with_typed_errors_only(facade, logged_failures, request):
    try:
        decoded = decode_request(request, facade.element_budget())
    except InvalidInput:
        return
    outcome = []
    facade.infer(decoded).addBoth(outcome.append)
    if outcome and hasattr(outcome[0], "value"):
        assert isinstance(outcome[0].value, TwinferError), outcome[0].getTraceback()


@given(seeds)
def test_mutated_grpc_wire_bytes_decode_or_are_invalid_input(seed):
    rng = random.Random(seed)
    request = pb.ModelInferRequest(model_name="tiny")
    request.inputs.add(name="INPUT0", datatype="FP32", shape=[1, 16])
    request.raw_input_contents.append(np.ones(16, np.float32).tobytes())
    try:
        parsed = pb.ModelInferRequest.FromString(mutate(request.SerializeToString(), rng))
    except Exception:  # noqa: BLE001 - protobuf's DecodeError: grpc answers that itself
        return
    try:
        decode_request(parsed, ElementBudget(4096))
    except InvalidInput:
        pass


# --- tokens ---------------------------------------------------------------------------------------------------------

def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@given(st.text(max_size=200) | st.binary(max_size=200).map(lambda b: b.decode("latin-1")))
def test_any_text_as_a_token_is_unauthenticated_or_valid(text):
    try:
        Authenticator(SECRET).authenticate(text, "anon", 0.0)
    except Unauthenticated:
        pass


@given(json_values, st.floats(allow_nan=True) | st.integers())
def test_signed_payloads_of_any_shape_are_unauthenticated_or_valid(payload, now):
    """Correctly signed tokens with odd payloads: only a dict with a str `sub` and an int `exp` logs in."""
    authority = TokenAuthority(SECRET)
    body = _b64(json.dumps(payload).encode())
    token = f"v1.{body}.{authority._tag('v1.' + body)}"
    try:
        claims = authority.verify(token, now if isinstance(now, int) or math.isfinite(now) else 0.0)
    except Unauthenticated:
        return
    assert isinstance(payload, dict) and isinstance(payload.get("exp"), int) and claims.user


# --- model configs ------------------------------------------------------------------------------------------------

PBTXT = ('name: "tiny"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 8\n'
         'input [ { name: "INPUT0", data_type: TYPE_FP32, dims: [ 16 ] } ]\n'
         'output [ { name: "OUTPUT0", data_type: TYPE_FP32, dims: [ 16 ], label_filename: "labels.txt" } ]\n'
         'dynamic_batching { max_queue_delay_microseconds: 200 preferred_batch_size: [ 4, 8 ] }\n'
         'instance_group [ { kind: KIND_CPU, count: 2 } ]\n')
YAML = ("max_batch_size: 8\ninstance_count: 1\ndynamic_batching:\n  max_queue_delay_us: 100\n"
        "outputs:\n  - name: OUTPUT0\n    labels: [a, b]\nvalidation:\n  dataset: v.npz\n")


@pytest.fixture(scope="module")
def model_dir():
    root = make_repository(Path(tempfile.mkdtemp()) / "repo")
    return root / "tiny"


@given(seeds, st.sampled_from(["config.pbtxt", "config.yaml"]))
def test_mutated_model_configs_load_or_are_one_config_error(model_dir, seed, name):
    rng = random.Random(seed)
    seed_text = (PBTXT if name.endswith("pbtxt") else YAML).encode()
    other = (YAML if name.endswith("pbtxt") else PBTXT).encode()
    data = mutate(seed_text, rng) if rng.random() < 0.8 else splice(seed_text, other, rng)
    for stale in ("config.pbtxt", "config.yaml"):
        (model_dir / stale).unlink(missing_ok=True)
    (model_dir / name).write_bytes(data)
    try:
        load_model_config(model_dir, model_dir / "1" / "model.onnx")
    except ConfigError as exc:
        assert "\n" not in str(exc).strip() or "Traceback" not in str(exc)
    finally:
        (model_dir / name).unlink()


# --- HTTP requests ------------------------------------------------------------------------------------------------

def _http_seeds() -> list[bytes]:
    x = np.ones((1, 16), np.float32)
    body = json.dumps({"inputs": [{"name": "INPUT0", "shape": [1, 16], "datatype": "FP32",
                                   "data": x.ravel().tolist()}]}).encode()
    header = json.dumps({"inputs": [{"name": "INPUT0", "shape": [1, 16], "datatype": "FP32",
                                     "parameters": {"binary_data_size": 64}}]}).encode()
    return [
        b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body),
        b"POST /v2/models/tiny/versions/1/infer HTTP/1.1\r\nHost: t\r\nInference-Header-Content-Length: %d\r\n"
        b"Content-Length: %d\r\n\r\n%s%s" % (len(header), len(header) + 64, header, x.tobytes()),
        b"GET /v2/models/tiny HTTP/1.1\r\nHost: t\r\n\r\nGET /v2/models/tiny/config HTTP/1.1\r\nHost: t\r\n\r\n",
        b"POST /v2/repository/index HTTP/1.1\r\nHost: t\r\nContent-Length: 15\r\n\r\n{\"ready\": true}",
        b"GET /v2/models/stats HTTP/1.1\r\nHost: t\r\n\r\nGET /v2/health/ready HTTP/1.0\r\n\r\n",
        b"POST /v2/repository/models/tiny/load HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer x\r\n"
        b"Content-Length: 0\r\n\r\n",
    ]


HTTP_SEEDS = _http_seeds()


@given(seeds)
def test_http_connection_answers_mutated_requests_without_a_500(facade, logged_failures, seed):
    """Whatever arrives, the answer is well-formed HTTP with a client-error or success status, never 500."""
    from twinfer.http.connection import HttpFactory
    from twinfer.http.kserve_api import KServeHttpApi

    rng = random.Random(seed)
    factory = HttpFactory(KServeHttpApi(facade), Clock(), 1 << 16, idle_timeout_s=5)
    proto = factory.buildProtocol(None)
    transport = StringTransport()
    proto.makeConnection(transport)
    data = mutate(rng.choice(HTTP_SEEDS), rng) if rng.random() < 0.9 else splice(*rng.sample(HTTP_SEEDS, 2), rng)
    for i in range(0, len(data), rng.randrange(1, 400)):
        proto.dataReceived(data[i : i + 400])
    out = transport.value()
    for head in out.split(b"HTTP/1.1 ")[1:]:
        status = int(head[:3])
        assert status < 500 or status == 503, out[:300]
    proto.connectionLost(None)
    assert factory.connections == 0


# --- stream-open parameters --------------------------------------------------------------------------------------

odd_floats = st.floats(allow_nan=True, allow_infinity=True, width=32)


@st.composite
def open_requests(draw):
    request = game_pb2.OpenStreamRequest(
        model=draw(st.sampled_from(["face", "face", "tiny", "nope", ""])),
        version=draw(st.sampled_from(["", "", "1", "x", "99"])),
        pixel_format=draw(st.sampled_from(["", "GRAY8", "RGB8", "JPEG", "RGBA8", "YUV"])),
        width=draw(st.integers(0, 5000) | st.integers(0, 2**32 - 1)),
        height=draw(st.integers(0, 5000) | st.integers(0, 2**32 - 1)),
        smoothing=draw(st.booleans()), min_cutoff=draw(odd_floats), beta=draw(odd_floats),
        d_cutoff=draw(odd_floats))
    for _ in range(draw(st.integers(0, 3))):
        request.targets.add(kind=draw(st.sampled_from(["native", "vmc", "livelink", "x", ""])),
                            host=draw(st.sampled_from(["127.0.0.1", "localhost", "255.255.255.255", "::1", "a b",
                                                       "10.0.0.1", ""])),
                            port=draw(st.integers(0, 70000)))
    return request


@given(open_requests())
def test_stream_open_parameters_open_a_stream_or_are_typed_errors(facade, request):
    from twinfer.streaming.manager import StreamManager

    manager = StreamManager(facade, Clock(), lambda f, *a: None, "127.0.0.1")
    owner = object()
    try:
        stream = manager.open(owner, request)
    except TwinferError:
        return
    if stream._smoothing is not None:
        f = stream._smoothing
        assert all(math.isfinite(v) and v >= 0 for v in (f.min_cutoff, f.beta, f.d_cutoff))
    manager.close(stream.id)


@given(odd_floats, odd_floats, odd_floats)
def test_one_euro_parameters_are_finite_and_non_negative_or_refused(facade, min_cutoff, beta, d_cutoff):
    """#14 finding 8: NaN or negative One Euro parameters had been taken as they came."""
    from twinfer.streaming.manager import StreamManager

    manager = StreamManager(facade, Clock(), lambda f, *a: None, "127.0.0.1")
    request = game_pb2.OpenStreamRequest(model="face", width=64, height=64, smoothing=True, min_cutoff=min_cutoff,
                                         beta=beta, d_cutoff=d_cutoff)
    try:
        stream = manager.open(object(), request)
    except InvalidInput:
        return
    f = stream._smoothing
    assert all(math.isfinite(v) and v >= 0 for v in (f.min_cutoff, f.beta, f.d_cutoff))
    assert f.min_cutoff > 0 and f.d_cutoff > 0
