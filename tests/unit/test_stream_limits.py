"""Issue #14 on streams, with a fake clock and no sockets: reassembly memory has a process-wide budget and a frame
deadline, one session cannot take every stream, results go only to allowed receivers, and filter parameters are
checked."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from tests.support import SyncThreads, take_messages
from twinfer.errors import InvalidInput, Overloaded, PermissionDenied
from twinfer.inference.facade import InferenceFacade
from twinfer.inference.repository import ModelRepository
from twinfer.metrics import build_registry
from twinfer.protocol import game_pb2
from twinfer.protocol.framing import encode_frame
from twinfer.security.receivers import ReceiverPolicy
from twinfer.server.commands import ServerContext, default_registry
from twinfer.server.connection import ConnectionLimits, GameServerFactory
from twinfer.server.sessions import SessionRegistry
from twinfer.security.tokens import Authenticator
from twinfer.streaming import datagram as dg
from twinfer.streaming.endpoint import StreamEndpoint
from twinfer.streaming.manager import StreamManager, max_frame_bytes, parse_receiver_spec
from twinfer.streaming.reassembly import DROP_BUDGET, DROP_DEADLINE, FrameAssembler, PartialFrameBudget

E = game_pb2.ErrorCode
KEY = b"k" * 32


def build_image_model(root: Path) -> Path:
    """`pixels`: a [batch, 1, 8, 8] image in, the mean of each row out ([batch, 8]): the smallest stream model."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["image"], ["rows"], axes=[1, 3], keepdims=0)],
        "pixels",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("rows", TensorProto.FLOAT, ["batch", 8])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    (root / "pixels" / "1").mkdir(parents=True)
    onnx.save(model, str(root / "pixels" / "1" / "model.onnx"))
    return root


@pytest.fixture(scope="module")
def facade(tmp_path_factory):
    repo = ModelRepository(build_image_model(tmp_path_factory.mktemp("repo")), Clock(), SyncThreads())
    repo.start()
    assert repo.ready()
    return InferenceFacade(repo)


def manager(facade, **kwargs) -> StreamManager:
    clock = kwargs.pop("clock", Clock())
    m = StreamManager(facade, clock, SyncThreads().run_io, "127.0.0.1", **kwargs)
    m.sent = []  # type: ignore[attr-defined]
    m.attach(lambda data, address: m.sent.append((data, address)), 9001)  # type: ignore[attr-defined]
    return m


def request(width: int = 8, height: int = 8, pixel_format: str = "GRAY8", targets=(), **extra
            ) -> game_pb2.OpenStreamRequest:
    r = game_pb2.OpenStreamRequest(model="pixels", width=width, height=height, pixel_format=pixel_format, **extra)
    for host, port in targets:
        r.targets.add(kind="native", host=host, port=port)
    return r


def fragment(stream, sequence: int, index: int, count: int, payload: bytes) -> bytes:
    return dg.encode(stream.key, dg.Datagram(dg.KIND_FRAME, stream.id, sequence, 0, index, count, payload))


# --- Finding 4: reassembly memory --------------------------------------------------------------------------------

def test_assemblers_share_one_budget_and_the_oldest_partial_frame_goes_first():
    """Finding 4: each stream could hold 4 partial frames of ~16.6 MB with no overall limit (a ceiling near 68 GB
    with 1024 streams). One budget now caps the bytes held by every assembler together."""
    budget = PartialFrameBudget(max_bytes=1000, deadline_s=10)
    a, b = FrameAssembler(budget=budget), FrameAssembler(budget=budget)
    first = lambda assembler, seq: assembler.add(  # noqa: E731
        dg.decode(KEY, dg.fragment_frame(KEY, 1, seq, 0, b"x" * 800, 440)[0]))
    assert first(a, 1) is None and first(b, 1) is None  # 398 bytes each
    assert budget.held == 796 and a.dropped[DROP_BUDGET] == 0
    assert first(a, 2) is None  # 1,194 > 1,000: the oldest (a's frame 1) goes
    assert budget.held == 796 and a.held_bytes + b.held_bytes == budget.held
    assert a.dropped[DROP_BUDGET] == 1 and list(a._partial) == [2] and list(b._partial) == [1]  # noqa: SLF001
    assert first(a, 3) is None  # then b's frame 1, although a is the one asking
    assert b.dropped[DROP_BUDGET] == 1 and list(a._partial) == [2, 3] and not b._partial  # noqa: SLF001


def test_a_partial_frame_past_the_deadline_is_dropped_although_heartbeats_keep_coming():
    """Finding 4: heartbeats kept a stream, and with it its partial frames, alive for good."""
    budget = PartialFrameBudget(max_bytes=10**9, deadline_s=1.0)
    assembler = FrameAssembler(budget=budget)
    parts = [dg.decode(KEY, d) for d in dg.fragment_frame(KEY, 1, 1, 0, b"y" * 300, 200)]
    assert assembler.add(parts[0], now=10.0) is None
    assembler.heartbeat(dg.decode(KEY, dg.heartbeat(KEY, 1, 2, 0)), now=10.5)
    assert assembler.held_bytes > 0
    assembler.heartbeat(dg.decode(KEY, dg.heartbeat(KEY, 1, 3, 0)), now=11.01)
    assert assembler.held_bytes == 0 and budget.held == 0 and assembler.dropped[DROP_DEADLINE] == 1
    assert assembler.add(parts[1], now=11.02) is None  # the rest of that frame starts over and never completes


@pytest.mark.parametrize("fmt, raw", [("GRAY8", 64 * 48), ("RGB8", 64 * 48 * 3)])
def test_a_partial_frame_may_not_grow_past_the_streams_real_frame_size(fmt, raw):
    """Finding 4: the per-frame cap was width*height*3+1 whatever the format (3x too much for GRAY8) and up to
    ~16.6 MB; now it is the stream's real frame size, and never more than the datagram format carries."""
    assert max_frame_bytes(fmt, 64, 48, 65000) == raw
    assert max_frame_bytes("JPEG", 64, 48, 65000) == 64 * 48 * 3 + 64 * 1024  # room for a JPEG's headers
    assert max_frame_bytes("RGB8", 4096, 4096, 1200) == dg.MAX_FRAGMENTS * (1200 - dg.OVERHEAD)


def test_the_manager_gives_every_stream_one_budget_and_counts_evictions(facade):
    """Finding 4: through the manager, partial frames of all streams together stay under
    max_partial_frame_bytes, and an eviction is a counted drop reason of the stream that lost it."""
    clock = Clock()
    m = manager(facade, clock=clock, max_partial_frame_bytes=2048, frame_deadline_s=0.5, max_streams_per_session=9)
    streams = [m.open(object(), request(32, 32), "127.0.0.1") for _ in range(3)]  # 1,024-byte frames
    for stream in streams:
        m.datagram_received(fragment(stream, 1, 0, 2, b"p" * 900))
        assert m.budget.held <= 2048
    assert streams[0].stats.dropped[DROP_BUDGET] == 1 and m.budget.held == 1800
    registry = build_registry(facade, {}, m)
    assert registry.get_sample_value("twinfer_stream_partial_frame_bytes") == 1800
    assert registry.get_sample_value("twinfer_stream_datagrams_dropped_total", {"reason": DROP_BUDGET}) == 1
    m.datagram_received(fragment(streams[1], 1, 1, 2, b"p" * 124))  # completes stream 2's frame
    assert streams[1].stats.frames_in == 1 and m.budget.held == 900
    clock.advance(0.6)
    m.reap()
    assert m.budget.held == 0 and streams[2].stats.dropped[DROP_DEADLINE] == 1
    m.close(streams[0].id)
    assert m.dropped[DROP_BUDGET] == 1  # closed streams' counts move to the manager's totals


# --- Finding 5: one session, every stream slot ---------------------------------------------------------------------

def test_one_session_cannot_take_every_stream(facade):
    """Finding 5: one session opened all 1,024 streams and everyone else got OVERLOADED."""
    m = manager(facade, max_streams=10, max_streams_per_session=3)
    greedy, other = object(), object()
    for _ in range(3):
        m.open(greedy, request(), "127.0.0.1")
    with pytest.raises(Overloaded, match="max_streams_per_session"):
        m.open(greedy, request(), "127.0.0.1")
    m.open(other, request(), "127.0.0.1")
    m.close(next(iter(m.streams)))
    m.open(greedy, request(), "127.0.0.1")  # closing one frees its slot


# --- Finding 7: reflection and amplification ---------------------------------------------------------------------

def test_receivers_default_to_the_sessions_own_address(facade):
    """Finding 7: results went to any address a client named (16 targets, broadcast included, 78.8x the bytes)."""
    m = manager(facade)
    m.open(object(), request(targets=[("127.0.0.1", 4000)]), "127.0.0.1")
    with pytest.raises(PermissionDenied, match="neither this session's address"):
        m.open(object(), request(targets=[("10.1.2.3", 4000)]), "127.0.0.1")
    with pytest.raises(PermissionDenied):
        m.open(object(), request(targets=[("127.0.0.2", 4000)]), "127.0.0.1")
    stream = m.open(object(), request(), "192.0.2.7")
    m.subscribe(stream, parse_receiver_spec("native:192.0.2.7:4000"), "192.0.2.7")
    with pytest.raises(PermissionDenied):
        m.subscribe(stream, parse_receiver_spec("native:192.0.2.8:4000"), "192.0.2.7")
    assert len(stream.targets) == 1


def test_listed_networks_widen_the_rule_and_broadcast_needs_its_own_entry():
    """Finding 7: a listed network allows its hosts; a broadcast address only when listed on its own."""
    wide = ReceiverPolicy(["10.0.0.0/8", "0.0.0.0/0"])
    wide.check("10.1.2.3", "127.0.0.1")
    wide.check("::ffff:10.1.2.3", "127.0.0.1")
    for broadcast in ("255.255.255.255", "10.255.255.255", "0.0.0.0"):
        with pytest.raises(PermissionDenied, match="broadcast"):
            wide.check(broadcast, "127.0.0.1")
    assert not wide.broadcast_listed
    listed = ReceiverPolicy(["192.168.1.0/24", "192.168.1.255/32"])
    listed.check("192.168.1.255", "127.0.0.1")
    assert listed.broadcast_listed
    ReceiverPolicy().check("127.0.0.1", "::ffff:127.0.0.1")  # an IPv4 peer on a dual-stack socket
    with pytest.raises(ValueError, match="CIDR"):
        ReceiverPolicy(["not-a-network"])


def test_receivers_from_config_are_trusted(facade):
    """Finding 7: the operator's stream_receivers (config) are not subject to the client rule."""
    m = manager(facade, default_targets=[parse_receiver_spec("vmc:10.9.9.9:39539")])
    stream = m.open(object(), request(), "127.0.0.1")
    assert [t.host for t in stream.targets] == ["10.9.9.9"]


class _FakeUdpTransport:
    def __init__(self, sock: socket.socket) -> None:
        self.socket = sock

    def getHost(self) -> IPv4Address:
        return IPv4Address("UDP", "127.0.0.1", 9001)


@pytest.mark.parametrize("networks, expected", [([], 0), (["10.0.0.0/8"], 0), (["192.168.1.255/32"], 1)])
def test_the_udp_socket_may_broadcast_only_when_a_listed_address_can_be_a_broadcast(facade, networks, expected):
    """Finding 7: SO_BROADCAST was always on; the kernel now refuses any broadcast the rule did not foresee."""
    m = StreamManager(facade, Clock(), SyncThreads().run_io, "127.0.0.1", receivers=ReceiverPolicy(networks))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        endpoint = StreamEndpoint(m)
        endpoint.transport = _FakeUdpTransport(sock)
        endpoint.startProtocol()
        m.stop()
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST) == expected


# --- Finding 8: filter parameters --------------------------------------------------------------------------------

@pytest.mark.parametrize("field, value", [("min_cutoff", float("nan")), ("beta", -1.0), ("d_cutoff", float("inf")),
                                          ("min_cutoff", -0.5), ("beta", 1e30), ("d_cutoff", float("-inf"))])
def test_bad_one_euro_parameters_are_invalid_input(facade, field, value):
    """Finding 8: NaN or negative One Euro parameters in open_stream were an internal error (negative) or a filter
    that turns every output into NaN (NaN); infinities and absurd values likewise."""
    m = manager(facade)
    with pytest.raises(InvalidInput, match=field):
        m.open(object(), request(smoothing=True, **{field: value}), "127.0.0.1")
    assert not m.streams


def test_sane_one_euro_parameters_and_defaults_open():
    """Finding 8: zero still means the default; sane values are taken as given."""
    from twinfer.streaming.manager import one_euro_from

    f = one_euro_from(game_pb2.OpenStreamRequest(smoothing=True, beta=0.5))
    assert (f.min_cutoff, f.beta, f.d_cutoff) == (1.0, 0.5, 1.0)


# --- over the game protocol: the typed errors reach the client ----------------------------------------------------

def test_open_stream_and_subscribe_errors_on_the_wire(facade):
    """Findings 5, 7 and 8 over a real GameConnection: PERMISSION_DENIED, OVERLOADED and INVALID_INPUT replies."""
    clock = Clock()
    m = manager(facade, clock=clock, max_streams_per_session=1)
    context = ServerContext(facade, SessionRegistry(), Authenticator(""), clock, m)
    factory = GameServerFactory(context, default_registry(context), ConnectionLimits())
    proto = factory.buildProtocol(None)
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 5555))
    proto.makeConnection(transport)

    def call(request_id: int, **body) -> game_pb2.ServerMessage:
        proto.dataReceived(encode_frame(game_pb2.ClientMessage(request_id=request_id, **body).SerializeToString()))
        [reply] = take_messages(transport, game_pb2.ServerMessage)
        return reply

    broadcast = call(1, open_stream=request(targets=[("255.255.255.255", 39539)]))
    assert broadcast.error.code == E.ERROR_CODE_PERMISSION_DENIED
    nan = call(2, open_stream=request(smoothing=True, min_cutoff=float("nan")))
    assert nan.error.code == E.ERROR_CODE_INVALID_INPUT
    opened = call(3, open_stream=request(targets=[("127.0.0.1", 39539)]))
    assert opened.open_stream.stream_id
    assert call(4, open_stream=request()).error.code == E.ERROR_CODE_OVERLOADED
    far = game_pb2.SubscribeRequest(stream_id=opened.open_stream.stream_id,
                                    target=game_pb2.StreamTarget(kind="vmc", host="203.0.113.5", port=39539))
    assert call(5, subscribe=far).error.code == E.ERROR_CODE_PERMISSION_DENIED
    np.testing.assert_equal(len(m.streams), 1)
