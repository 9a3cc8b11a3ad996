"""Issue #14 finding 1: a request's declared shape is checked against the bytes actually present, and against
`max_request_elements`, before anything is allocated, on every transport.

A gRPC ModelInfer with a BYTES input of shape [3000000000] and 4 bytes of data once made the server allocate 3e9
objects; the kernel killed it at 23 GB. The server here runs under an address-space limit, so a regression fails
with the server dying (or a MemoryError) instead of exhausting the machine.
"""

from __future__ import annotations

import json
import socket

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from tests.e2e.conftest import ATTACK_ADDRESS_SPACE
from tests.e2e.test_kserve import raw_http
from tests.support import make_repository, tiny_reference
from twinfer.client import Client
from twinfer.errors import InvalidInput
from twinfer.protocol import game_pb2
from twinfer.protocol.framing import FrameDecoder, encode_frame

HUGE = 3_000_000_000
X = np.random.default_rng(3).standard_normal((2, 16)).astype(np.float32)


@pytest.fixture
def limited(tmp_path, server_factory):
    repo = make_repository(tmp_path / "repo")
    server = server_factory(repo, "--insecure-dev", address_space=ATTACK_ADDRESS_SPACE,
                            env={"TWINFER_MAX_REQUEST_ELEMENTS": "1000"})
    yield server
    assert server.stop() == 0
    assert "Traceback" not in server.log()


def _grpc_infer(server, request: pb.ModelInferRequest) -> grpc.RpcError | pb.ModelInferResponse:
    with grpc.insecure_channel(server.grpc) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        try:
            return stub.ModelInfer(request, timeout=20)
        except grpc.RpcError as exc:
            return exc


def _http_post(server, body: bytes, header_length: int | None = None) -> tuple[int, bytes]:
    extra = f"Inference-Header-Content-Length: {header_length}\r\n" if header_length is not None else ""
    request = (f"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{extra}"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    return raw_http(server.http, request, timeout=20)


def _game_infer(server, tensor: game_pb2.Tensor) -> game_pb2.ServerMessage:
    message = game_pb2.ClientMessage(request_id=7)
    message.infer.model = "tiny"
    message.infer.inputs.append(tensor)
    with socket.create_connection(("127.0.0.1", server.tcp), timeout=20) as sock:
        sock.sendall(encode_frame(message.SerializeToString()))
        decoder = FrameDecoder(1 << 20)
        while True:
            data = sock.recv(65536)
            assert data, "the server closed the connection instead of answering"
            for _, body in decoder.feed(data):
                return game_pb2.ServerMessage.FromString(body)


def _still_serving(server) -> None:
    with Client("127.0.0.1", server.tcp) as client:
        out = client.infer("tiny", {"INPUT0": X})["OUTPUT0"]
    np.testing.assert_allclose(out, tiny_reference(X), rtol=1e-5, atol=1e-5)


def test_grpc_bytes_with_a_huge_shape_and_four_bytes_is_invalid_argument(limited):
    request = pb.ModelInferRequest(model_name="tiny")
    request.inputs.add(name="INPUT0", datatype="BYTES", shape=[HUGE])
    request.raw_input_contents.append(b"\x00\x00\x00\x00")
    answer = _grpc_infer(limited, request)
    assert isinstance(answer, grpc.RpcError) and answer.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "max_request_elements" in answer.details()
    typed = pb.ModelInferRequest(model_name="tiny")
    typed.inputs.add(name="INPUT0", datatype="BYTES", shape=[HUGE]).contents.bytes_contents.append(b"x")
    answer = _grpc_infer(limited, typed)
    assert isinstance(answer, grpc.RpcError) and answer.code() == grpc.StatusCode.INVALID_ARGUMENT
    _still_serving(limited)


def test_http_binary_and_json_with_a_huge_shape_are_400(limited):
    header = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "BYTES", "shape": [HUGE],
                                     "parameters": {"binary_data_size": 4}}]}).encode()
    status, body = _http_post(limited, header + b"\x00\x00\x00\x00", len(header))
    assert status == 400 and b"max_request_elements" in body
    status, body = _http_post(limited, json.dumps(
        {"inputs": [{"name": "INPUT0", "datatype": "BYTES", "shape": [HUGE], "data": ["a"]}]}).encode())
    assert status == 400 and b"max_request_elements" in body
    status, body = _http_post(limited, json.dumps(
        {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1] * 40, "data": [1.0]}]}).encode())
    assert status == 400 and b"dimensions" in body
    _still_serving(limited)


def test_game_protocol_huge_shape_is_invalid_input(limited):
    reply = _game_infer(limited, game_pb2.Tensor(name="INPUT0", datatype="FP32", shape=[HUGE], data=b"\0" * 4))
    assert reply.request_id == 7 and reply.error.code == game_pb2.ERROR_CODE_INVALID_INPUT
    assert "max_request_elements" in reply.error.message
    reply = _game_infer(limited, game_pb2.Tensor(name="INPUT0", datatype="FP32", shape=[2**62, 2**62], data=b""))
    assert reply.error.code == game_pb2.ERROR_CODE_INVALID_INPUT
    _still_serving(limited)


def test_the_element_cap_holds_across_inputs_and_requests_under_it_pass(limited):
    """1000 elements allowed: 2x16 passes, 63x16 (1008) is refused on every transport with the setting's name."""
    _still_serving(limited)
    big = np.zeros((63, 16), np.float32)
    with Client("127.0.0.1", limited.tcp) as client, pytest.raises(InvalidInput, match="max_request_elements"):
        client.infer("tiny", {"INPUT0": big})
    status, body = _http_post(limited, json.dumps(
        {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [63, 16], "data": big.ravel().tolist()}]}
    ).encode())
    assert status == 400 and b"max_request_elements" in body
