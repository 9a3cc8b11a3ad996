"""The game-protocol connection on StringTransport and a fake clock: framing, dispatch, errors, auth, timeouts."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from tests.support import SyncThreads, make_repository, take_messages, tiny_reference
from twinfer.inference.facade import InferenceFacade
from twinfer.inference.repository import ModelRepository
from twinfer.protocol import game_pb2
from twinfer.protocol.framing import encode_frame
from twinfer.protocol.tensors import numpy_to_tensor, tensor_to_numpy
from twinfer.server.commands import ServerContext, default_registry
from twinfer.server.connection import ConnectionLimits, GameServerFactory
from twinfer.server.sessions import SessionRegistry
from twinfer.security.tokens import Authenticator, TokenAuthority

E = game_pb2.ErrorCode
SECRET = "unit-test-secret"


class Harness:
    def __init__(self, tmp_path, secret: str = "", limits: ConnectionLimits | None = None) -> None:
        self.clock = Clock()
        self.threads = SyncThreads()
        repo = ModelRepository(make_repository(tmp_path), self.clock, self.threads)
        repo.start()
        assert repo.ready()
        self.context = ServerContext(InferenceFacade(repo), SessionRegistry(), Authenticator(secret), self.clock)
        self.factory = GameServerFactory(self.context, default_registry(self.context), limits or ConnectionLimits())

    def connect(self):
        proto = self.factory.buildProtocol(None)
        transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 5555))
        proto.makeConnection(transport)
        return proto, transport

    @property
    def pool(self):
        return next(iter(self.threads.pools.values()))


def send(proto, message: game_pb2.ClientMessage, flags: int = 0) -> None:
    proto.dataReceived(encode_frame(message.SerializeToString(), flags))


def replies(transport: StringTransport) -> list[game_pb2.ServerMessage]:
    return take_messages(transport, game_pb2.ServerMessage)


def infer_message(request_id: int, x: np.ndarray, model: str = "tiny") -> game_pb2.ClientMessage:
    msg = game_pb2.ClientMessage(request_id=request_id)
    msg.infer.model = model
    numpy_to_tensor("INPUT0", x, msg.infer.inputs.add())
    return msg


@pytest.fixture
def harness(tmp_path):
    return Harness(tmp_path)


def test_ping_echoes_request_id_and_client_time(harness):
    proto, transport = harness.connect()
    msg = game_pb2.ClientMessage(request_id=7)
    msg.ping.client_time_ns = 123
    send(proto, msg)
    [reply] = replies(transport)
    assert reply.request_id == 7 and reply.pong.client_time_ns == 123 and reply.pong.server_time_ns > 0


def test_infer_returns_what_the_model_computes(harness):
    proto, transport = harness.connect()
    x = np.random.default_rng(1).standard_normal((3, 16)).astype(np.float32)
    send(proto, infer_message(5, x))
    [reply] = replies(transport)
    assert reply.request_id == 5 and reply.infer.model == "tiny" and reply.infer.version == "1"
    np.testing.assert_allclose(tensor_to_numpy(reply.infer.outputs[0]), tiny_reference(x), rtol=1e-5, atol=1e-6)


def test_pipelined_frames_in_one_segment_and_a_frame_split_byte_by_byte(harness):
    proto, transport = harness.connect()
    x = np.ones((1, 16), np.float32)
    proto.dataReceived(b"".join(encode_frame(infer_message(i, x).SerializeToString()) for i in (1, 2, 3)))
    assert [r.request_id for r in replies(transport)] == [1, 2, 3]
    for byte in encode_frame(infer_message(9, x).SerializeToString()):
        proto.dataReceived(bytes([byte]))
    [reply] = replies(transport)
    assert reply.request_id == 9 and reply.HasField("infer")


def test_huge_declared_length_is_refused_before_buffering_and_closes(harness):
    proto, transport = harness.connect()
    proto.dataReceived(struct.pack(">IH", 2 * 1024**3, 0) + b"x" * 100)
    [reply] = replies(transport)
    assert reply.kicked.code == E.ERROR_CODE_FRAME_TOO_LARGE
    assert transport.disconnecting
    assert proto._decoder.buffered == 0


def test_garbage_body_gets_malformed_error_and_the_connection_goes_on(harness):
    proto, transport = harness.connect()
    proto.dataReceived(encode_frame(b"\xff\xff\xff\xff\xff"))
    [reply] = replies(transport)
    assert reply.error.code == E.ERROR_CODE_MALFORMED_MESSAGE
    assert not transport.disconnecting
    send(proto, game_pb2.ClientMessage(request_id=2, ping=game_pb2.PingRequest()))
    assert replies(transport)[0].HasField("pong")


def test_unknown_message_type_and_empty_message(harness):
    proto, transport = harness.connect()
    # request_id=4, then field 99 (an unknown body type) as a length-delimited empty message.
    proto.dataReceived(encode_frame(b"\x08\x04" + b"\x9a\x06\x00"))
    send(proto, game_pb2.ClientMessage(request_id=5))
    first, second = replies(transport)
    assert (first.request_id, first.error.code) == (4, E.ERROR_CODE_UNKNOWN_MESSAGE)
    assert (second.request_id, second.error.code) == (5, E.ERROR_CODE_UNKNOWN_MESSAGE)


def test_unknown_flags_are_an_invalid_frame(harness):
    proto, transport = harness.connect()
    send(proto, game_pb2.ClientMessage(request_id=3, ping=game_pb2.PingRequest()), flags=0x8000)
    [reply] = replies(transport)
    assert (reply.request_id, reply.error.code) == (3, E.ERROR_CODE_INVALID_FRAME)


@pytest.mark.parametrize(
    "x, model, code, words",
    [
        (np.ones((1, 16), np.float64), "tiny", E.ERROR_CODE_INVALID_INPUT, "datatype FP64"),
        (np.ones((1, 15), np.float32), "tiny", E.ERROR_CODE_INVALID_INPUT, "shape [1, 15]"),
        (np.ones((16,), np.float32), "tiny", E.ERROR_CODE_INVALID_INPUT, "shape [16]"),
        (np.ones((65, 16), np.float32), "tiny", E.ERROR_CODE_INVALID_INPUT, "batch size 65"),
        (np.ones((1, 16), np.float32), "nope", E.ERROR_CODE_MODEL_NOT_FOUND, "unknown model"),
    ],
)
def test_bad_requests_get_typed_errors(harness, x, model, code, words):
    proto, transport = harness.connect()
    send(proto, infer_message(11, x, model=model))
    [reply] = replies(transport)
    assert reply.request_id == 11 and reply.error.code == code and words in reply.error.message


def test_data_size_disagreeing_with_shape_is_invalid_input(harness):
    proto, transport = harness.connect()
    msg = infer_message(12, np.ones((1, 16), np.float32))
    msg.infer.inputs[0].data = msg.infer.inputs[0].data[:-4]
    send(proto, msg)
    [reply] = replies(transport)
    assert reply.error.code == E.ERROR_CODE_INVALID_INPUT and "bytes of data" in reply.error.message


def test_auth_required_login_and_duplicate_login_kicks_the_first(tmp_path):
    harness = Harness(tmp_path, secret=SECRET)
    authority = TokenAuthority(SECRET)
    first, t1 = harness.connect()
    send(first, infer_message(1, np.ones((1, 16), np.float32)))
    assert replies(t1)[0].error.code == E.ERROR_CODE_UNAUTHENTICATED
    bad = game_pb2.ClientMessage(request_id=2)
    bad.login.token = TokenAuthority("other-secret").issue("alice", 0)
    send(first, bad)
    assert replies(t1)[0].error.code == E.ERROR_CODE_UNAUTHENTICATED
    good = game_pb2.ClientMessage(request_id=3)
    good.login.token = authority.issue("alice", 0)
    send(first, good)
    assert replies(t1)[0].login.user == "alice"
    send(first, infer_message(4, np.ones((1, 16), np.float32)))
    assert replies(t1)[0].HasField("infer")

    second, t2 = harness.connect()
    send(second, good)
    assert replies(t2)[0].login.user == "alice"
    [kick] = replies(t1)
    assert kick.kicked.code == E.ERROR_CODE_SESSION_REPLACED and "alice" in kick.kicked.reason
    assert t1.disconnecting and not t2.disconnecting


def test_expired_token_is_refused(tmp_path):
    harness = Harness(tmp_path, secret=SECRET)
    harness.clock.advance(1000)
    proto, transport = harness.connect()
    msg = game_pb2.ClientMessage(request_id=1)
    msg.login.token = TokenAuthority(SECRET).issue("bob", expires_at=999)
    send(proto, msg)
    [reply] = replies(transport)
    assert reply.error.code == E.ERROR_CODE_UNAUTHENTICATED and "expired" in reply.error.message


def test_idle_connection_is_closed_and_activity_keeps_it_open(tmp_path):
    harness = Harness(tmp_path, limits=ConnectionLimits(idle_timeout_s=10))
    proto, transport = harness.connect()
    harness.clock.advance(6)
    send(proto, game_pb2.ClientMessage(request_id=1, ping=game_pb2.PingRequest()))
    harness.clock.advance(6)
    assert not transport.disconnecting
    replies(transport)
    harness.clock.advance(5)
    [kick] = replies(transport)
    assert kick.kicked.code == E.ERROR_CODE_IDLE_TIMEOUT and transport.disconnecting


def test_no_login_in_time_is_closed_when_auth_is_required(tmp_path):
    harness = Harness(tmp_path, secret=SECRET, limits=ConnectionLimits(login_timeout_s=2))
    proto, transport = harness.connect()
    harness.clock.advance(2)
    [kick] = replies(transport)
    assert kick.kicked.code == E.ERROR_CODE_UNAUTHENTICATED and transport.disconnecting


def test_too_many_in_flight_is_overloaded_and_answers_arrive_out_of_order_later(tmp_path):
    harness = Harness(tmp_path, limits=ConnectionLimits(max_in_flight=2))
    proto, transport = harness.connect()
    harness.pool.hold = True
    for i in (1, 2, 3):
        send(proto, infer_message(i, np.full((1, 16), i, np.float32)))
    [overloaded] = replies(transport)
    assert (overloaded.request_id, overloaded.error.code) == (3, E.ERROR_CODE_OVERLOADED)
    harness.pool.hold = False
    harness.pool.release()
    done = replies(transport)
    assert sorted(r.request_id for r in done) == [1, 2] and all(r.HasField("infer") for r in done)
    assert proto.session.in_flight == 0


def test_drain_refuses_new_inference_and_waits_for_in_flight(harness):
    proto, transport = harness.connect()
    harness.pool.hold = True
    send(proto, infer_message(1, np.ones((1, 16), np.float32)))
    drained = []
    harness.factory.drain().addCallback(drained.append)
    send(proto, infer_message(2, np.ones((1, 16), np.float32)))
    [refused] = replies(transport)
    assert refused.error.code == E.ERROR_CODE_UNAVAILABLE and not drained
    harness.pool.hold = False
    harness.pool.release()
    assert drained == [None] and replies(transport)[0].request_id == 1


def test_other_sessions_keep_being_served_after_a_bad_one_is_closed(harness):
    bad, bad_t = harness.connect()
    good, good_t = harness.connect()
    bad.dataReceived(struct.pack(">IH", 2**31, 0))
    assert bad_t.disconnecting
    send(good, infer_message(1, np.ones((1, 16), np.float32)))
    assert replies(good_t)[0].HasField("infer")


def test_a_command_that_raises_at_once_answers_its_request_and_frees_its_slot(harness):
    """Commands are called directly (no maybeDeferred): a typed error raised while decoding (data size that
    disagrees with the shape) and an untyped bug both answer their own request id and leave nothing in flight."""
    proto, transport = harness.connect()
    bad = infer_message(3, np.zeros((1, 16), np.float32))
    bad.infer.inputs[0].data = b"\x00" * 7
    send(proto, bad)
    [reply] = replies(transport)
    assert reply.request_id == 3 and reply.error.code == E.ERROR_CODE_INVALID_INPUT
    assert "7 bytes of data" in reply.error.message and proto.session.in_flight == 0

    command = harness.factory.registry.get("ping")
    original = command.execute
    command.execute = lambda *args: 1 / 0
    try:
        msg = game_pb2.ClientMessage(request_id=4)
        msg.ping.client_time_ns = 1
        send(proto, msg)
    finally:
        command.execute = original
    [reply] = replies(transport)
    assert reply.request_id == 4 and reply.error.code == E.ERROR_CODE_INTERNAL
    assert reply.error.message == "internal server error" and proto.session.in_flight == 0
    x = np.ones((1, 16), np.float32)
    send(proto, infer_message(5, x))
    [reply] = replies(transport)
    assert reply.request_id == 5 and reply.WhichOneof("body") == "infer" and proto.session.in_flight == 0
