"""twinfer's own HTTP/2 and the gRPC calls on it, byte-exact over a StringTransport with a real repository (the
`world` fixture: `tiny` with identity weights, synchronous model threads, a fake clock).

Each limit here is one a hostile or broken client could otherwise use to grow the server's memory or hold its
connections (issue #14's rules, for the gRPC front-end of issue #20)."""

from __future__ import annotations

import os
import struct
import zlib

import hpack
import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as pb
from twisted.internet.task import Clock

from tests.unit.h2_peer import GRPC_HEADERS, Peer
from twinfer.grpc.guard import CallGuard
from twinfer.grpc.native_server import NativeGrpcServer, grpc_timeout, percent_encode
from twinfer.grpc.service import KServeGrpcService
from twinfer.grpc.streams import OpenStreamLimit
from twinfer.http.body_budget import BodyBudget
from twinfer.http2 import connection as h2c
from twinfer.http2 import frames as f
from twinfer.http2.connection import Http2Factory
from twinfer.security.tokens import AdminCheck, Authenticator, TokenAuthority

INFER = "/inference.GRPCInferenceService/ModelInfer"
STREAM = "/inference.GRPCInferenceService/ModelStreamInfer"


def infer_request(values=None, model: str = "tiny", request_id: str = "r1") -> bytes:
    values = np.arange(16, dtype=np.float32).reshape(1, 16) if values is None else values
    request = pb.ModelInferRequest(model_name=model, id=request_id)
    request.inputs.add(name="INPUT0", datatype="FP32", shape=list(values.shape))
    request.raw_input_contents.append(values.tobytes())
    return request.SerializeToString()


class Server:
    def __init__(self, facade, clock: Clock, *, secret: str = "", budget: int = 1 << 30, max_message: int = 1 << 20,
                 max_streams: int = 8, max_header_bytes: int = 4096, inflight: int = 4) -> None:
        service = KServeGrpcService(facade, inflight, OpenStreamLimit(16))
        self.budget = BodyBudget(budget)
        self.grpc = NativeGrpcServer(service, CallGuard(Authenticator(secret), AdminCheck("")), clock, self.budget,
                                     max_message_bytes=max_message, body_timeout_s=5.0)
        self.factory = Http2Factory(self.grpc.open_stream, clock, max_concurrent_streams=max_streams,
                                    max_header_bytes=max_header_bytes, idle_timeout_s=30.0)
        self.clock = clock

    def peer(self, **kwargs) -> Peer:
        return Peer(self.factory, self.clock, **kwargs)


@pytest.fixture
def server(world):
    _, _, facade, _ = world
    return Server(facade, Clock())


def decode_answer(message: bytes) -> np.ndarray:
    response = pb.ModelInferResponse.FromString(message)
    return np.frombuffer(response.raw_output_contents[0], np.float32).reshape(tuple(response.outputs[0].shape))


# --- calls ------------------------------------------------------------------------------------------------------

def test_a_unary_infer_answers_headers_one_message_and_ok_trailers(server):
    peer = server.peer()
    stream = peer.call(INFER, infer_request())
    response = peer.response(stream)
    assert response.header(":status") == "200" and response.header("content-type") == "application/grpc"
    assert response.grpc_status == 0 and response.ended
    [message] = response.messages()
    assert pb.ModelInferResponse.FromString(message).id == "r1"
    np.testing.assert_allclose(decode_answer(message), np.arange(16, dtype=np.float32).reshape(1, 16))
    assert not peer.protocol.streams and server.budget.held == 0


def test_many_calls_on_one_connection_reuse_the_cached_header_block(server):
    peer = server.peer()
    streams = [peer.call(INFER, infer_request(request_id=str(i))) for i in range(20)]
    for i, stream in enumerate(streams):
        response = peer.response(stream)
        assert response.grpc_status == 0
        assert pb.ModelInferResponse.FromString(response.messages()[0]).id == str(i)


def test_errors_are_typed_statuses_in_a_trailers_only_response(server):
    peer = server.peer()
    cases = {
        peer.call(INFER, infer_request(model="nope")): (5, "unknown model 'nope'"),        # NOT_FOUND
        peer.call(INFER, b"\xff\xff\xff"): (3, "request is not a valid protobuf message"),  # INVALID_ARGUMENT
        peer.call("/inference.GRPCInferenceService/Nope", b""): (12, "unknown method"),     # UNIMPLEMENTED
        peer.call(INFER, infer_request(np.zeros((1, 3), np.float32))): (3, "INPUT0"),       # wrong shape
    }
    for stream, (status, text) in cases.items():
        response = peer.response(stream)
        assert response.grpc_status == status, (stream, response)
        assert text in response.header("grpc-message"), response
        assert response.ended and not response.data
    assert server.budget.held == 0


def test_credentials_are_checked_before_the_message_is_read(world):
    _, _, facade, _ = world
    server = Server(facade, Clock(), secret="s")
    peer = server.peer()
    denied = peer.response(peer.call(INFER, infer_request()))
    assert denied.grpc_status == 16  # UNAUTHENTICATED
    token = TokenAuthority("s").issue("ann", 2**40)
    allowed = peer.response(peer.call(INFER, infer_request(), [("authorization", f"Bearer {token}")]))
    assert allowed.grpc_status == 0
    live = peer.response(peer.call("/inference.GRPCInferenceService/ServerLive",
                                   pb.ServerLiveRequest().SerializeToString()))
    assert live.grpc_status == 0 and pb.ServerLiveResponse.FromString(live.messages()[0]).live


def test_a_message_over_the_limit_is_refused_from_its_prefix(server):
    peer = server.peer()
    stream = peer.next_stream
    peer.send(peer.headers_frame(stream, GRPC_HEADERS + [(":path", INFER)])
              + f.frame(f.DATA, 0, stream, struct.pack(">BI", 0, 2 << 20)))  # declares 2 MiB; the cap is 1 MiB
    response = peer.response(stream)
    assert response.grpc_status == 8 and "larger than max" in response.header("grpc-message")
    assert server.budget.held == 0


def send_compressed(peer: Peer, body: bytes, encoding: str | None, method: str = INFER) -> int:
    stream = peer.next_stream
    peer.next_stream += 2
    extra = [("grpc-encoding", encoding)] if encoding else []
    frames = peer.headers_frame(stream, GRPC_HEADERS + [(":path", method)] + extra)
    message = Peer.grpc_message(body, compressed=True)
    for i in range(0, len(message), h2c.MAX_FRAME_SIZE):
        last = i + h2c.MAX_FRAME_SIZE >= len(message)
        frames += f.frame(f.DATA, f.FLAG_END_STREAM if last else 0, stream, message[i:i + h2c.MAX_FRAME_SIZE])
    peer.send(frames)
    return stream


def gzip(data: bytes) -> bytes:
    import gzip as gz

    return gz.compress(data)


@pytest.mark.parametrize("encoding, pack", [("gzip", gzip), ("deflate", zlib.compress)])
def test_compressed_requests_are_inflated(server, encoding, pack):
    peer = server.peer()
    response = peer.response(send_compressed(peer, pack(infer_request()), encoding))
    assert response.grpc_status == 0, response
    np.testing.assert_allclose(decode_answer(response.messages()[0]), np.arange(16).reshape(1, 16))
    assert server.budget.held == 0


def test_a_large_compressed_request_is_inflated_off_the_reactor(world):
    from twisted.internet.defer import succeed

    _, _, facade, _ = world
    server = Server(facade, Clock(), max_message=64 << 20)
    ran: list[str] = []
    server.grpc.run_io = lambda fn, *args: ran.append(fn.__name__) or succeed(fn(*args))
    request = pb.ModelInferRequest.FromString(infer_request())
    request.parameters["padding"].string_param = np.random.default_rng(1).bytes(300_000).hex()
    body = zlib.compress(request.SerializeToString())
    assert len(body) > 256 * 1024  # random hex: about half its size once deflated
    peer = server.peer()
    peer.send(f.window_update(0, 1 << 24))
    response = peer.response(send_compressed(peer, body, "deflate"))
    assert response.grpc_status == 0 and ran == ["_inflate"]
    assert peer.response(send_compressed(peer, zlib.compress(infer_request()), "deflate")).grpc_status == 0
    assert ran == ["_inflate"]  # a small one is inflated in place
    assert server.budget.held == 0


def test_compressed_requests_are_bounded_and_checked(world):
    _, _, facade, _ = world
    server = Server(facade, Clock(), max_message=1 << 20)
    peer = server.peer()
    bomb = zlib.compress(b"\x00" * (8 << 20))  # 8 MiB of zeros in ~8 KB
    response = peer.response(send_compressed(peer, bomb, "deflate"))
    assert response.grpc_status == 8 and "once inflated" in response.header("grpc-message")
    assert peer.response(send_compressed(peer, b"not zlib", "deflate")).grpc_status == 3
    assert peer.response(send_compressed(peer, zlib.compress(infer_request())[:-4], "deflate")).grpc_status == 3
    assert peer.response(send_compressed(peer, zlib.compress(infer_request()), None)).grpc_status == 12
    assert peer.response(send_compressed(peer, zlib.compress(infer_request()), "snappy")).grpc_status == 12
    assert server.budget.held == 0


def test_the_body_budget_is_shared_and_given_back(world):
    _, _, facade, _ = world
    server = Server(facade, Clock(), budget=1100)
    peer = server.peer()
    peer.call(INFER, b"x" * 10, end_stream=False)  # a whole message, held until the request ends
    big = peer.next_stream
    peer.next_stream += 2
    peer.send(peer.headers_frame(big, GRPC_HEADERS + [(":path", INFER)])
              + f.frame(f.DATA, 0, big, struct.pack(">BI", 0, 995)))
    assert server.budget.held == 995 + 10
    refused = peer.call(INFER, infer_request())  # needs more than what is left
    assert peer.response(refused).grpc_status == 8
    peer.send(f.rst_stream(big, f.CANCEL))  # the client gives up on the big one: its bytes come back
    assert server.budget.held == 10
    assert peer.response(peer.call(INFER, infer_request())).grpc_status == 0


def test_a_request_that_never_completes_ends_at_the_body_deadline(server):
    peer = server.peer()
    stream = peer.call(INFER, infer_request(), end_stream=False)
    server.clock.advance(4.0)
    assert peer.response(stream).grpc_status is None
    server.clock.advance(2.0)  # past body_timeout_s (5 s): the next sweep ends it
    response = peer.response(stream)
    assert response.grpc_status == 4 and "body_timeout_s" in response.header("grpc-message")
    assert server.budget.held == 0 and not server.grpc.reading


def test_the_clients_deadline_is_kept(server):
    peer = server.peer()
    stream = peer.call(INFER, infer_request(), [("grpc-timeout", "200m")], end_stream=False)
    server.clock.advance(0.25)
    assert peer.response(stream).grpc_status == 4


@pytest.mark.parametrize("value, seconds", [(b"100m", 0.1), (b"3S", 3.0), (b"2M", 120.0), (b"5u", 5e-6),
                                            (b"1H", 3600.0), (b"", None), (b"123456789S", None), (b"10x", None)])
def test_grpc_timeout_values(value, seconds):
    assert grpc_timeout(value) == (pytest.approx(seconds) if seconds is not None else None)


def test_grpc_message_is_percent_encoded():
    assert percent_encode("wrong shape [1, 3]: 50% off é") == b"wrong shape [1, 3]: 50%25 off %C3%A9"


# --- ModelStreamInfer ---------------------------------------------------------------------------------------------

def test_a_stream_answers_each_request_and_errors_travel_in_it(server):
    peer = server.peer()
    stream = peer.next_stream
    peer.next_stream += 2
    body = b"".join(Peer.grpc_message(m) for m in (infer_request(request_id="a"), infer_request(model="nope",
                                                                                                 request_id="b")))
    peer.send(peer.headers_frame(stream, GRPC_HEADERS + [(":path", STREAM)])
              + f.frame(f.DATA, f.FLAG_END_STREAM, stream, body))
    response = peer.response(stream)
    answers = [pb.ModelStreamInferResponse.FromString(m) for m in response.messages()]
    assert [(a.infer_response.id, a.error_message) for a in answers] == [("a", ""), ("b", "unknown model 'nope'")]
    assert response.grpc_status == 0 and response.ended


def test_thousands_of_requests_answered_at_once_do_not_recurse(server):
    """Errors found before any work answer synchronously; 5,000 of them queued in one window must not nest 5,000
    calls deep (RecursionError)."""
    peer = server.peer()
    stream = peer.next_stream
    peer.next_stream += 2
    bad = Peer.grpc_message(infer_request(model="nope"))
    peer.send(peer.headers_frame(stream, GRPC_HEADERS + [(":path", STREAM)]))
    for start in range(0, 5000, 1000):
        peer.send(f.frame(f.DATA, f.FLAG_END_STREAM if start == 4000 else 0, stream, bad * 1000))
    response = peer.response(stream)
    assert 0 < len(response.messages()) < 5000 and not response.ended  # the answers fill our 64 KiB window...
    peer.send(f.window_update(0, 1 << 20) + f.window_update(stream, 1 << 20))  # ... and go on once it grows
    response = peer.response(stream)
    assert len(response.messages()) == 5000 and response.grpc_status == 0
    assert all(pb.ModelStreamInferResponse.FromString(m).error_message for m in response.messages()[:3])


# --- HTTP/2 limits ------------------------------------------------------------------------------------------------

def test_not_http2_is_a_protocol_error(server):
    peer = server.peer(handshake=False)
    peer.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert peer.goaway() == (0, f.PROTOCOL_ERROR) and peer.closed


def test_a_frame_over_the_advertised_size_is_refused_before_it_is_buffered(server):
    peer = server.peer()
    size = h2c.MAX_FRAME_SIZE + 1
    peer.send(f.FRAME_HEADER.pack(size >> 8, size & 0xFF, f.DATA, 0, 1))  # the header alone is enough
    assert peer.goaway()[1] == f.FRAME_SIZE_ERROR and peer.closed


def test_a_header_block_over_the_limit_through_continuation_is_refused(server):
    peer = server.peer()
    block = peer.encoder.encode([(":method", "POST"), (":path", INFER)])
    peer.send(f.frame(f.HEADERS, 0, 1, block))
    for _ in range(4):
        peer.send(f.frame(f.CONTINUATION, 0, 1, b"\x00" * 1500))
    assert peer.goaway()[1] == f.PROTOCOL_ERROR and peer.closed


def test_streams_past_the_advertised_limit_are_refused_and_hpack_stays_in_step(world):
    _, _, facade, _ = world
    server = Server(facade, Clock(), max_streams=2)
    peer = server.peer()
    [settings] = [fr for fr in peer.of_kind(f.SETTINGS) if not fr.flags & f.FLAG_ACK]
    advertised = dict(struct.unpack(">HI", settings.payload[i:i + 6]) for i in range(0, len(settings.payload), 6))
    assert advertised[f.SETTINGS_MAX_CONCURRENT_STREAMS] == 2
    open_ = [peer.call(INFER, infer_request(), end_stream=False) for _ in range(2)]
    refused = peer.call(INFER, infer_request(), [("x-new-header", "indexed now")])  # changes the HPACK table
    assert peer.response(refused).reset == f.REFUSED_STREAM
    for stream in open_:
        peer.send(f.frame(f.DATA, f.FLAG_END_STREAM, stream, b""))
        assert peer.response(stream).grpc_status == 0
    assert peer.response(peer.call(INFER, infer_request(), [("x-new-header", "indexed now")])).grpc_status == 0


class Holder:
    """A stream handler that reads and never gives flow-control credit back (a slow consumer)."""

    def __init__(self, stream) -> None:
        self.stream, self.received, self.was_reset = stream, 0, False

    def data_received(self, data: bytes) -> None:
        self.received += len(data)

    def end_of_stream(self) -> None:
        pass

    def reset(self) -> None:
        self.was_reset = True


def test_a_client_sending_past_a_streams_window_loses_that_stream_only():
    clock, holders = Clock(), []
    factory = Http2Factory(lambda stream: holders.append(Holder(stream)) or holders[-1], clock)
    peer = Peer(factory, clock)
    block = peer.encoder.encode([(":method", "POST"), (":path", "/x")])
    peer.send(f.frame(f.HEADERS, f.FLAG_END_HEADERS, 1, block) + f.frame(f.HEADERS, f.FLAG_END_HEADERS, 3, block))
    chunk = b"\x00" * h2c.MAX_FRAME_SIZE
    for _ in range(h2c.STREAM_WINDOW // len(chunk)):  # exactly the window: allowed
        peer.send(f.frame(f.DATA, 0, 1, chunk))
    assert holders[0].received == h2c.STREAM_WINDOW and not holders[0].was_reset
    peer.send(f.frame(f.DATA, 0, 1, b"x"))  # one byte past it
    assert peer.response(1).reset == f.FLOW_CONTROL_ERROR and holders[0].was_reset
    assert holders[0].received == h2c.STREAM_WINDOW  # the byte past the window never reached the handler
    peer.send(f.frame(f.DATA, 0, 3, b"still fine"))
    assert holders[1].received == 10 and not peer.closed and peer.goaway() is None


def test_what_we_send_waits_for_the_clients_window(server):
    peer = server.peer(handshake=False)
    peer.send(f.PREFACE + f.settings_frame({f.SETTINGS_INITIAL_WINDOW_SIZE: 100}))
    stream = peer.call(INFER, infer_request())
    response = peer.response(stream)
    assert response.header(":status") == "200" and len(response.data) == 100 and not response.ended
    peer.send(f.window_update(stream, 10_000))
    response = peer.response(stream)
    assert response.ended and response.grpc_status == 0
    np.testing.assert_allclose(decode_answer(response.messages()[0]), np.arange(16).reshape(1, 16))


def test_pings_are_answered_and_a_flood_is_cut(server):
    peer = server.peer()
    peer.send(f.frame(f.PING, 0, 0, b"12345678"))
    [ack] = [fr for fr in peer.of_kind(f.PING)]
    assert ack.flags & f.FLAG_ACK and ack.payload == b"12345678"
    peer.send(f.frame(f.PING, 0, 0, b"12345678") * (h2c.CONTROL_FRAMES_PER_SECOND + 1))
    assert peer.goaway()[1] == f.ENHANCE_YOUR_CALM and peer.closed


def test_rapid_reset_is_cut(server):
    peer = server.peer()
    for _ in range(h2c.CONTROL_FRAMES_PER_SECOND + 1):
        if peer.closed:
            break
        stream = peer.call(INFER, infer_request(), end_stream=False)
        peer.send(f.rst_stream(stream, f.CANCEL))
    assert peer.goaway()[1] == f.ENHANCE_YOUR_CALM and peer.closed
    peer.protocol.connectionLost(None)  # what the transport does once closed: every call ends, its bytes back
    assert server.budget.held == 0


def test_an_idle_connection_is_told_to_go_away(server):
    peer = server.peer()
    assert peer.response(peer.call(INFER, infer_request())).grpc_status == 0
    server.clock.advance(31.0)
    assert peer.goaway() == (1, f.NO_ERROR) and peer.closed


def test_shutdown_lets_calls_in_flight_finish(server):
    peer = server.peer()
    stream = peer.call(INFER, infer_request(), end_stream=False)
    server.factory.go_away_all()
    assert peer.goaway() == (stream, f.NO_ERROR) and not peer.closed
    late = peer.call(INFER, infer_request())
    assert peer.response(late).reset == f.REFUSED_STREAM
    peer.send(f.frame(f.DATA, f.FLAG_END_STREAM, stream, b""))
    assert peer.response(stream).grpc_status == 0 and peer.closed


def test_the_header_block_cache_forgets_when_the_table_changes():
    encoder = hpack.Encoder()
    decoder = f.HeaderBlockDecoder(4096)
    first = encoder.encode([("a", "1")])  # inserts into the dynamic table
    again = encoder.encode([("a", "1")])  # one indexed reference
    assert decoder.decode(first) == [(b"a", b"1")]
    assert decoder.decode(again) == decoder.decode(again) == [(b"a", b"1")]
    decoder.decode(encoder.encode([("b", "2")]))  # the table changes: index 62 is now b: 2
    assert decoder.decode(again) == [(b"b", b"2")]


# --- whatever a client sends -----------------------------------------------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_FRAME_KINDS = st.sampled_from([f.DATA, f.HEADERS, f.PRIORITY, f.RST_STREAM, f.SETTINGS, f.PUSH_PROMISE, f.PING,
                                f.GOAWAY, f.WINDOW_UPDATE, f.CONTINUATION, 0x0A, 0xFF])
_FRAMES = st.lists(st.tuples(_FRAME_KINDS, st.integers(0, 255), st.sampled_from([0, 1, 2, 3, 5, 7, 2**31 - 1]),
                             st.one_of(st.binary(max_size=64), st.just(infer_request()),
                                       st.just(Peer.grpc_message(infer_request())))), max_size=12)


@settings(max_examples=int(os.environ.get("H2_FUZZ_EXAMPLES", "300")), deadline=None,
          derandomize=not os.environ.get("H2_FUZZ_EXAMPLES"),  # the same examples in every make test run
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frames=_FRAMES, chunk=st.integers(1, 97))
def test_any_frame_sequence_is_served_or_refused_never_raises(world, frames, chunk):
    """Random frames (valid headers first, so streams exist) cut at random read boundaries: the connection either
    keeps serving or sends GOAWAY and closes; nothing escapes dataReceived, and once the connection is gone no body
    bytes stay held."""
    _, _, facade, _ = world
    server = Server(facade, Clock())
    peer = server.peer()
    data = peer.headers_frame(1, GRPC_HEADERS + [(":path", INFER)])
    for kind, flags, stream_id, payload in frames:
        data += f.frame(kind, flags, stream_id, payload)
    for i in range(0, len(data), chunk):
        peer.send(data[i:i + chunk])  # an exception here fails the test
    peer.read()
    if peer.closed:
        assert peer.goaway() is not None
    else:
        assert peer.response(peer.call(INFER, infer_request())).grpc_status in (0, None) or peer.closed
    peer.protocol.connectionLost(None)
    assert server.budget.held == 0 and not server.grpc.reading


# --- decoupled models ----------------------------------------------------------------------------------------------

class DecoupledFacade:
    """A facade whose model is decoupled: each streamed request gets a ResponseStream the test feeds."""

    def __init__(self) -> None:
        self.streams: list = []

    def element_budget(self):
        from twinfer.inference.limits import ElementBudget

        return ElementBudget(1 << 20)

    def infer(self, request, streaming=False):
        from twisted.internet.defer import succeed

        from twinfer.inference.response_stream import ResponseStream
        from twinfer.inference.types import InferenceResult

        assert streaming  # ModelStreamInfer asks for the stream
        stream = ResponseStream()
        self.streams.append(stream)
        return succeed(InferenceResult("talker", "1", stream=stream))


def streamed_request(request_id: str, final_flag: bool) -> bytes:
    request = pb.ModelInferRequest(model_name="talker", id=request_id)
    request.inputs.add(name="INPUT0", datatype="FP32", shape=[1, 16])
    request.raw_input_contents.append(np.zeros((1, 16), np.float32).tobytes())
    if final_flag:
        request.parameters["triton_enable_empty_final_response"].bool_param = True
    return Peer.grpc_message(request.SerializeToString())


def chunk(value: float):
    from twinfer.inference.response_stream import StreamItem

    return StreamItem(outputs={"OUT": np.full((1, 1000), value, np.float32)})


def open_decoupled_call(body: bytes, end: bool) -> tuple[DecoupledFacade, Peer, int]:
    """A ModelStreamInfer call to the decoupled facade carrying `body` (its messages); `end`: half-closed."""
    facade = DecoupledFacade()
    peer = Server(facade, Clock()).peer()
    stream = peer.next_stream
    peer.next_stream += 2
    peer.send(peer.headers_frame(stream, GRPC_HEADERS + [(":path", STREAM)])
              + f.frame(f.DATA, f.FLAG_END_STREAM if end else 0, stream, body))
    return facade, peer, stream


def test_a_decoupled_requests_responses_each_go_out_and_hold_its_slot_until_the_final_one():
    from twinfer.inference.response_stream import StreamItem

    facade, peer, stream = open_decoupled_call(streamed_request("a", True) + streamed_request("b", False), end=True)
    a, b = facade.streams
    a.put(chunk(1))
    b.put(chunk(2))
    a.put(chunk(3))
    b.put(StreamItem(final=True))  # b asked for no final flag: nothing goes out for it
    response = peer.response(stream)
    answers = [pb.ModelStreamInferResponse.FromString(m).infer_response for m in response.messages()]
    assert [(r.id, np.frombuffer(r.raw_output_contents[0], np.float32)[0]) for r in answers] == [
        ("a", 1), ("b", 2), ("a", 3)]
    assert not answers[0].parameters["triton_final_response"].bool_param
    assert "triton_final_response" not in answers[1].parameters
    assert not response.ended  # a's final response has not come: the call stays open
    a.put(StreamItem(final=True))
    response = peer.response(stream)
    last = pb.ModelStreamInferResponse.FromString(response.messages()[-1]).infer_response
    assert last.id == "a" and last.parameters["triton_final_response"].bool_param and not last.outputs
    assert response.ended and response.grpc_status == 0


def test_a_decoupled_stream_waits_for_the_client_and_a_reset_cancels_it(monkeypatch):
    from twinfer.grpc import native_server

    monkeypatch.setattr(native_server, "STREAM_PENDING_LIMIT", 10_000)
    facade, peer, stream = open_decoupled_call(streamed_request("a", False), end=False)
    (talk,) = facade.streams
    for value in range(40):  # 4 KB each: the 64 KiB window and 10 KB of pending answers stop the relay
        talk.put(chunk(value))
    sent = len(peer.response(stream).messages())
    assert 0 < sent < 40 and len(talk._items) > 0  # the rest waits in the model's stream (bounded there)
    peer.send(f.window_update(0, 1 << 20) + f.window_update(stream, 1 << 20))
    assert len(peer.response(stream).messages()) == 40 and not talk._items  # drained: relayed on
    peer.send(f.rst_stream(stream, 8))  # the client cancels
    assert talk.cancelled
    from twinfer.inference.response_stream import ResponseStreamClosed

    with pytest.raises(ResponseStreamClosed):
        talk.put(chunk(99))
