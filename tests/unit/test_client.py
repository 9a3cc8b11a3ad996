"""The game-protocol clients.

The Twisted client runs on StringTransport: requests are read off the wire, replies fed back by hand, in any
order. The blocking client talks to a fake server on a real socket (a thread answering frames: echo, errors,
held and reordered replies, kicks and EOF), so its reader thread, locks and timeouts run for real.
"""

from __future__ import annotations

import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from twisted.internet.defer import CancelledError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from tests.support import take_messages
from twinfer.client import Client, ServerError, SessionClosed, error_from_wire, messages
from twinfer.client.twisted_client import GameClientProtocol, connect
from twinfer.errors import InvalidInput, ModelNotFound, Overloaded, Unauthenticated
from twinfer.protocol import game_pb2
from twinfer.protocol.framing import FrameDecoder, encode_frame
from twinfer.protocol.tensors import numpy_to_tensor, tensor_to_numpy

E = game_pb2.ErrorCode
WAIT = 10.0  # generous bound for every wait in these tests; none should come close


# --- Twisted client on StringTransport ------------------------------------------------------------------------

@pytest.fixture
def client() -> tuple[GameClientProtocol, StringTransport]:
    proto = GameClientProtocol()
    transport = StringTransport()
    proto.makeConnection(transport)
    return proto, transport


def sent(transport: StringTransport) -> list[game_pb2.ClientMessage]:
    return take_messages(transport, game_pb2.ClientMessage)


def reply(proto: GameClientProtocol, message: game_pb2.ServerMessage) -> None:
    proto.dataReceived(encode_frame(message.SerializeToString()))


def result_of(d: Any) -> list[Any]:
    out: list[Any] = []
    d.addBoth(out.append)
    return out


def error_reply(request_id: int, code: int, text: str) -> game_pb2.ServerMessage:
    msg = game_pb2.ServerMessage(request_id=request_id)
    msg.error.code = code
    msg.error.message = text
    return msg


def test_pipelined_infers_resolve_out_of_order(client):
    proto, transport = client
    a = result_of(proto.infer("m", {"x": np.zeros((1, 2), np.float32)}, version="3", outputs=["y"], timeout_ms=50))
    b = result_of(proto.infer("m", {"x": np.ones((1, 2), np.float32)}))
    first, second = sent(transport)
    assert first.request_id != second.request_id
    assert (first.infer.model, first.infer.version, list(first.infer.outputs), first.infer.timeout_ms) == (
        "m", "3", ["y"], 50)
    assert tensor_to_numpy(second.infer.inputs[0]).tolist() == [[1.0, 1.0]]
    assert not a and not b
    for request, value in ((second, 7.0), (first, 5.0)):  # the second request is answered first
        msg = game_pb2.ServerMessage(request_id=request.request_id)
        numpy_to_tensor("y", np.full((1, 2), value, np.float32), msg.infer.outputs.add())
        reply(proto, msg)
    assert a[0]["y"].tolist() == [[5.0, 5.0]] and b[0]["y"].tolist() == [[7.0, 7.0]]
    assert a[0]["y"].dtype == np.float32


def test_replies_split_across_reads_are_reassembled(client):
    proto, transport = client
    d = result_of(proto.models())
    [request] = sent(transport)
    msg = game_pb2.ServerMessage(request_id=request.request_id)
    msg.list_models.models.add(name="tiny", versions=["1", "2"], state="READY")
    data = encode_frame(msg.SerializeToString())
    for i in range(len(data)):
        proto.dataReceived(data[i:i + 1])
    assert [(m.name, list(m.versions)) for m in d[0]] == [("tiny", ["1", "2"])]


def test_error_replies_become_typed_exceptions_with_the_code(client):
    proto, transport = client
    d = result_of(proto.infer("missing", {"x": np.zeros((1,), np.float32)}))
    [request] = sent(transport)
    reply(proto, error_reply(request.request_id, E.ERROR_CODE_MODEL_NOT_FOUND, "unknown model 'missing'"))
    assert isinstance(d[0], Failure) and d[0].check(ModelNotFound)
    assert d[0].value.code == E.ERROR_CODE_MODEL_NOT_FOUND and "missing" in d[0].value.message


def test_connection_lost_fails_pending_and_later_requests(client):
    proto, transport = client
    pending = [result_of(proto.ping()), result_of(proto.model_metadata("m"))]
    assert len(sent(transport)) == 2
    proto.connectionLost(Failure(ConnectionError("reset")))
    for d in pending:
        assert d[0].check(SessionClosed) and "reset" in d[0].value.reason
    later = result_of(proto.infer("m", {"x": np.zeros(1, np.float32)}))
    assert later[0].check(SessionClosed)
    assert transport.value() == b""  # nothing written after the end


def test_kick_fails_pending_requests_with_the_reason(client):
    proto, _ = client
    d = result_of(proto.ping())
    kick = game_pb2.ServerMessage()
    kick.kicked.code = E.ERROR_CODE_SESSION_REPLACED
    kick.kicked.reason = "logged in elsewhere"
    reply(proto, kick)
    assert d[0].check(SessionClosed) and d[0].value.code == E.ERROR_CODE_SESSION_REPLACED
    assert d[0].value.reason == "logged in elsewhere"
    proto.connectionLost(Failure(ConnectionError()))  # the kick stays the reason
    later = result_of(proto.models())
    assert later[0].check(SessionClosed) and later[0].value.code == E.ERROR_CODE_SESSION_REPLACED


def test_a_corrupt_reply_stream_ends_the_session(client):
    proto, transport = client
    d = result_of(proto.ping())
    proto.dataReceived(encode_frame(b"\xff\xff\xff"))
    assert d[0].check(SessionClosed) and transport.disconnecting


def test_cancelled_request_drops_its_late_reply(client):
    proto, transport = client
    d = proto.ping()
    out = result_of(d)
    d.cancel()
    assert out[0].check(CancelledError)
    [request] = sent(transport)
    pong = game_pb2.ServerMessage(request_id=request.request_id)
    pong.pong.client_time_ns = request.ping.client_time_ns
    reply(proto, pong)  # no error: nobody is waiting for it
    assert len(out) == 1


def test_unencodable_inputs_fail_without_sending(client):
    proto, transport = client
    d = result_of(proto.infer("m", {"x": np.array(["a"], dtype=object)}))
    assert d[0].check(InvalidInput) and transport.value() == b""


def test_close_fails_pending_requests(client):
    proto, transport = client
    d = result_of(proto.ping())
    proto.close()
    assert d[0].check(SessionClosed) and transport.disconnecting


def test_connect_logs_in_with_the_token():
    reactor = MemoryReactorClock()
    d = result_of(connect(reactor, "127.0.0.1", 9000, token="secret"))
    host, port, factory, *_ = reactor.tcpClients[0]
    assert (host, port) == ("127.0.0.1", 9000)
    transport = StringTransport()
    wire = factory.buildProtocol(None)
    wire.makeConnection(transport)
    [login] = sent(transport)
    assert login.login.token == "secret" and not d
    ok = game_pb2.ServerMessage(request_id=login.request_id)
    ok.login.user = "alice"
    wire.dataReceived(encode_frame(ok.SerializeToString()))
    assert isinstance(d[0], GameClientProtocol)


def test_connect_with_a_bad_token_fails_and_closes():
    reactor = MemoryReactorClock()
    d = result_of(connect(reactor, "127.0.0.1", 9000, token="forged"))
    factory = reactor.tcpClients[0][2]
    transport = StringTransport()
    wire = factory.buildProtocol(None)
    wire.makeConnection(transport)
    [login] = sent(transport)
    no = error_reply(login.request_id, E.ERROR_CODE_UNAUTHENTICATED, "invalid token signature")
    wire.dataReceived(encode_frame(no.SerializeToString()))
    assert d[0].check(Unauthenticated) and transport.disconnecting


# --- shared messages ------------------------------------------------------------------------------------------

def test_unknown_codes_are_server_errors():
    error = error_from_wire(999, "?")
    assert isinstance(error, ServerError) and error.code == 999
    assert isinstance(error_from_wire(E.ERROR_CODE_INTERNAL, "bug"), ServerError)
    error = error_from_wire(E.ERROR_CODE_OVERLOADED, "")
    assert isinstance(error, Overloaded) and error.message == "OVERLOADED" and error.code == E.ERROR_CODE_OVERLOADED


def test_a_reply_of_the_wrong_kind_is_an_error_but_an_empty_one_is_defaults():
    pong = game_pb2.ServerMessage(request_id=1)
    pong.pong.client_time_ns = 1
    with pytest.raises(ServerError):
        messages.infer_outputs(pong)
    assert messages.list_models().decode(game_pb2.ServerMessage(request_id=1)) == []


def test_twisted_client_calibrate_sends_the_request_and_returns_the_status(client):
    proto, transport = client
    done = result_of(proto.calibrate(4, 2.5))
    [request] = sent(transport)
    assert request.WhichOneof("body") == "calibrate"
    assert (request.calibrate.stream_id, request.calibrate.seconds) == (4, 2.5)
    answer = game_pb2.ServerMessage(request_id=request.request_id)
    answer.calibration_status.stream_id = 4
    answer.calibration_status.state = game_pb2.CALIBRATION_STATE_CALIBRATING
    answer.calibration_status.seconds_left = 2.5
    reply(proto, answer)
    assert done == [answer.calibration_status]
    wrong = game_pb2.ServerMessage(request_id=1)
    wrong.stream_ack.stream_id = 4
    with pytest.raises(ServerError):
        messages.calibrate(4, 1.0).decode(wrong)


# --- blocking client against a fake server on a real socket ---------------------------------------------------

class FakeServer:
    """Answers each connection's frames in a thread of its own.

    Models: "echo" returns its inputs as outputs; "missing" is MODEL_NOT_FOUND; "hold" is never answered;
    "reverse:N" is held until N of them arrived, then all are answered last first; "kick" kicks; "eof" closes.
    Tokens: "good" logs in, anything else is UNAUTHENTICATED.
    """

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        except OSError:
            pass
        self.sock.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        decoder = FrameDecoder()
        held: list[game_pb2.ServerMessage] = []
        with conn:
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                for _, body in decoder.feed(data):
                    if not self._answer(conn, game_pb2.ClientMessage.FromString(body), held):
                        conn.shutdown(socket.SHUT_RDWR)
                        return

    @staticmethod
    def _answer(conn: socket.socket, request: game_pb2.ClientMessage, held: list[game_pb2.ServerMessage]) -> bool:
        """Send the reply (if any) to one request; False closes the connection."""
        out = game_pb2.ServerMessage(request_id=request.request_id)
        kind = request.WhichOneof("body")
        if kind == "login":
            if request.login.token != "good":
                out.error.code, out.error.message = E.ERROR_CODE_UNAUTHENTICATED, "invalid token"
            else:
                out.login.user = "alice"
        elif kind == "ping":
            out.pong.client_time_ns = request.ping.client_time_ns
        elif kind == "list_models":
            out.list_models.models.add(name="echo", versions=["1"], state="READY")
        elif kind == "model_metadata":
            out.model_metadata.name = request.model_metadata.model
        elif kind == "infer":
            model = request.infer.model
            if model == "missing":
                out.error.code, out.error.message = E.ERROR_CODE_MODEL_NOT_FOUND, "unknown model 'missing'"
            elif model == "hold":
                return True
            elif model == "eof":
                return False
            elif model == "kick":
                out.request_id = 0
                out.kicked.code, out.kicked.reason = E.ERROR_CODE_SESSION_REPLACED, "logged in elsewhere"
                conn.sendall(encode_frame(out.SerializeToString()))
                return False
            else:
                out.infer.model = model
                for tensor in request.infer.inputs:
                    out.infer.outputs.add().CopyFrom(tensor)
                if model.startswith("reverse:"):
                    held.append(out)
                    if len(held) < int(model.split(":")[1]):
                        return True
                    replies, held[:] = held[::-1], []
                    conn.sendall(b"".join(encode_frame(m.SerializeToString()) for m in replies))
                    return True
        conn.sendall(encode_frame(out.SerializeToString()))
        return True


@pytest.fixture
def server():
    fake = FakeServer()
    yield fake
    fake.close()


@pytest.fixture
def blocking(server):
    with Client(port=server.port, timeout=WAIT) as c:
        yield c


def test_blocking_infer_echoes(blocking):
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    out = blocking.infer("echo", {"x": x}, version="1", outputs=["x"])
    np.testing.assert_array_equal(out["x"], x)
    assert out["x"].dtype == np.float32 and not out["x"].flags.writeable  # a view on the reply, documented


def test_blocking_infer_async_pipelines_50_requests_answered_in_reverse(blocking):
    inputs = [np.full((1, 4), i, np.int32) for i in range(50)]
    # The server answers nothing until all 50 are in, so success means 50 requests were in flight at once.
    futures = [blocking.infer_async("reverse:50", {"x": x}) for x in inputs]
    for x, future in zip(inputs, futures):
        np.testing.assert_array_equal(future.result(WAIT)["x"], x)


def test_blocking_client_is_thread_safe(blocking):
    def run(i: int) -> bool:
        x = np.full((3,), i, np.float64)
        return bool(np.array_equal(blocking.infer("echo", {"x": x})["x"], x))

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(run, range(80)))


def test_blocking_error_reply_raises_the_typed_error(blocking):
    with pytest.raises(ModelNotFound) as caught:
        blocking.infer("missing", {"x": np.zeros(1, np.float32)})
    assert caught.value.code == E.ERROR_CODE_MODEL_NOT_FOUND and "missing" in caught.value.message
    assert blocking.ping() >= 0  # the connection is still usable


def test_blocking_ping_models_and_metadata(blocking):
    rtt = blocking.ping()
    assert 0 <= rtt < WAIT
    assert [(m.name, m.state) for m in blocking.models()] == [("echo", "READY")]
    assert blocking.model_metadata("echo").name == "echo"


def test_blocking_login(server):
    with Client(port=server.port, token="good", timeout=WAIT) as c:
        assert c.login("good").user == "alice"
    with pytest.raises(Unauthenticated) as caught:
        Client(port=server.port, token="bad", timeout=WAIT)
    assert caught.value.code == E.ERROR_CODE_UNAUTHENTICATED


def test_blocking_close_fails_pending_and_later_calls(blocking):
    future = blocking.infer_async("hold", {"x": np.zeros(1, np.float32)})
    blocking.close()
    assert isinstance(future.exception(WAIT), SessionClosed)
    with pytest.raises(SessionClosed):
        blocking.ping()
    blocking.close()  # idempotent


def test_blocking_server_eof_fails_pending_and_later_calls(blocking):
    held = blocking.infer_async("hold", {"x": np.zeros(1, np.float32)})
    with pytest.raises(SessionClosed):
        blocking.infer("eof", {"x": np.zeros(1, np.float32)})
    assert isinstance(held.exception(WAIT), SessionClosed)
    with pytest.raises(SessionClosed):
        blocking.ping()
    assert blocking.closed


def test_blocking_kick_carries_code_and_reason(blocking):
    with pytest.raises(SessionClosed) as caught:
        blocking.infer("kick", {"x": np.zeros(1, np.float32)})
    assert caught.value.code == E.ERROR_CODE_SESSION_REPLACED and caught.value.reason == "logged in elsewhere"
    with pytest.raises(SessionClosed) as later:
        blocking.models()
    assert later.value.code == E.ERROR_CODE_SESSION_REPLACED


def test_blocking_wait_is_bounded_by_the_timeout(server):
    with Client(port=server.port, timeout=0.2) as c:
        with pytest.raises(TimeoutError):
            c.infer("hold", {"x": np.zeros(1, np.float32)})
        assert c.ping() >= 0  # a timed-out request doesn't break the connection
