"""The Twisted client on StringTransport: requests on the wire, replies matched by id, typed errors."""

from __future__ import annotations

import numpy as np
import pytest
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from tests.support import take_messages
from twinfer.client.errors import ServerError, SessionClosed, error_from_wire
from twinfer.client.twisted_client import GameClientProtocol
from twinfer.errors import ModelNotFound, Overloaded
from twinfer.protocol import game_pb2
from twinfer.protocol.framing import encode_frame
from twinfer.protocol.tensors import numpy_to_tensor, tensor_to_numpy


@pytest.fixture
def client():
    proto = GameClientProtocol()
    transport = StringTransport()
    proto.makeConnection(transport)
    return proto, transport


def sent(transport: StringTransport) -> list[game_pb2.ClientMessage]:
    return take_messages(transport, game_pb2.ClientMessage)


def reply(proto, message: game_pb2.ServerMessage) -> None:
    proto.dataReceived(encode_frame(message.SerializeToString()))


def result_of(d):
    out = []
    d.addBoth(out.append)
    return out


def test_pipelined_infers_resolve_out_of_order(client):
    proto, transport = client
    a = result_of(proto.infer("m", {"x": np.zeros((1, 2), np.float32)}, version="3", outputs=["y"]))
    b = result_of(proto.infer("m", {"x": np.ones((1, 2), np.float32)}))
    first, second = sent(transport)
    assert (first.infer.model, first.infer.version, list(first.infer.outputs)) == ("m", "3", ["y"])
    assert tensor_to_numpy(second.infer.inputs[0]).tolist() == [[1.0, 1.0]]
    for request, value in ((second, 7.0), (first, 5.0)):
        msg = game_pb2.ServerMessage(request_id=request.request_id)
        numpy_to_tensor("y", np.full((1, 2), value, np.float32), msg.infer.outputs.add())
        reply(proto, msg)
    assert a[0]["y"].tolist() == [[5.0, 5.0]] and b[0]["y"].tolist() == [[7.0, 7.0]]


def test_error_replies_become_typed_exceptions_with_the_code(client):
    proto, transport = client
    d = result_of(proto.infer("missing", {"x": np.zeros((1,), np.float32)}))
    [request] = sent(transport)
    msg = game_pb2.ServerMessage(request_id=request.request_id)
    msg.error.code = game_pb2.ERROR_CODE_MODEL_NOT_FOUND
    msg.error.message = "unknown model 'missing'"
    reply(proto, msg)
    assert isinstance(d[0], Failure) and d[0].check(ModelNotFound)
    assert d[0].value.code == game_pb2.ERROR_CODE_MODEL_NOT_FOUND and "missing" in d[0].value.message


def test_kick_then_close_fails_pending_requests_with_the_reason(client):
    proto, transport = client
    d = result_of(proto.ping())
    kick = game_pb2.ServerMessage()
    kick.kicked.code = game_pb2.ERROR_CODE_SESSION_REPLACED
    kick.kicked.reason = "logged in elsewhere"
    reply(proto, kick)
    proto.connectionLost(Failure(ConnectionError()))
    assert d[0].check(SessionClosed) and d[0].value.code == game_pb2.ERROR_CODE_SESSION_REPLACED
    later = result_of(proto.models())
    assert later[0].check(SessionClosed)


def test_unknown_codes_are_server_errors():
    assert isinstance(error_from_wire(999, "?"), ServerError)
    error = error_from_wire(game_pb2.ERROR_CODE_OVERLOADED, "")
    assert isinstance(error, Overloaded) and error.message == "OVERLOADED"
