"""Odd gRPC messages against a real server: every one gets a typed status (INVALID_ARGUMENT / NOT_FOUND, never
INTERNAL or UNKNOWN) and the server log shows no traceback."""

from __future__ import annotations

import random

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from tests.support import make_repository

pytestmark = pytest.mark.e2e
ADMIN = "fuzz-admin"
ROW = np.zeros((1, 16), np.float32).tobytes()
TYPED = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}


def infer(model: str = "tiny", version: str = "", inputs=(("INPUT0", "FP32", [1, 16]),), raw=(ROW,),
          timeout: tuple[str, object] | None = None, outputs=()) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model, model_version=version, id="f")
    for name, datatype, shape in inputs:
        request.inputs.add(name=name, datatype=datatype, shape=shape)
    request.raw_input_contents.extend(raw)
    if timeout is not None:
        setattr(request.parameters["timeout"], timeout[0], timeout[1])
    for name in outputs:
        request.outputs.add(name=name)
    return request


def structured_cases(stub) -> dict[str, tuple]:
    huge = "9" * 5000
    big_dims = [2**62, 2**62]
    return {
        "metadata, empty name": (stub.ModelMetadata, pb.ModelMetadataRequest(name="")),
        "metadata, name with newline": (stub.ModelMetadata, pb.ModelMetadataRequest(name="tiny\n")),
        "metadata, 100k name": (stub.ModelMetadata, pb.ModelMetadataRequest(name="a" * 100_000)),
        "metadata, path name": (stub.ModelMetadata, pb.ModelMetadataRequest(name="../tiny")),
        "metadata, 5000-digit version": (stub.ModelMetadata, pb.ModelMetadataRequest(name="tiny", version=huge)),
        "metadata, 50000-digit version": (stub.ModelMetadata, pb.ModelMetadataRequest(name="tiny", version=huge * 10)),
        "metadata, superscript version": (stub.ModelMetadata, pb.ModelMetadataRequest(name="tiny", version="\u00b2")),
        "config, 5000-digit version": (stub.ModelConfig, pb.ModelConfigRequest(name="tiny", version=huge)),
        "config, newline name": (stub.ModelConfig, pb.ModelConfigRequest(name="tiny\n")),
        "ready, newline name": (stub.ModelReady, pb.ModelReadyRequest(name="tiny\n")),
        "statistics, 5000-digit version": (stub.ModelStatistics, pb.ModelStatisticsRequest(name="tiny", version=huge)),
        "statistics, unknown model": (stub.ModelStatistics, pb.ModelStatisticsRequest(name="nope")),
        "load, newline name": (stub.RepositoryModelLoad, pb.RepositoryModelLoadRequest(model_name="tiny\n")),
        "load, path name": (stub.RepositoryModelLoad, pb.RepositoryModelLoadRequest(model_name="../../etc")),
        "load, empty name": (stub.RepositoryModelLoad, pb.RepositoryModelLoadRequest(model_name="")),
        "unload, unknown": (stub.RepositoryModelUnload, pb.RepositoryModelUnloadRequest(model_name="nope")),
        "infer, empty model": (stub.ModelInfer, infer(model="")),
        "infer, 5000-digit version": (stub.ModelInfer, infer(version=huge)),
        "infer, superscript version": (stub.ModelInfer, infer(version="\u00b2")),
        "infer, more raw than inputs": (stub.ModelInfer, infer(raw=[ROW, ROW])),
        "infer, fewer raw than inputs": (stub.ModelInfer, infer(inputs=[("INPUT0", "FP32", [1, 16]),
                                                                       ("B", "FP32", [1])])),
        "infer, negative dims": (stub.ModelInfer, infer(inputs=[("INPUT0", "FP32", [-1, 16])])),
        "infer, huge dims raw": (stub.ModelInfer, infer(inputs=[("INPUT0", "FP32", big_dims)])),
        "infer, huge dims typed": (stub.ModelInfer, infer(inputs=[("INPUT0", "FP32", big_dims)], raw=())),
        "infer, huge dims BYTES typed": (stub.ModelInfer, infer(inputs=[("INPUT0", "BYTES", big_dims)], raw=())),
        "infer, zero batch": (stub.ModelInfer, infer(inputs=[("INPUT0", "FP32", [0, 16])], raw=[b""])),
        "infer, scalar": (stub.ModelInfer, infer(inputs=[("INPUT0", "FP32", [])], raw=[b"\0" * 4])),
        "infer, unknown datatype": (stub.ModelInfer, infer(inputs=[("INPUT0", "FP99", [1, 16])])),
        "infer, empty datatype typed": (stub.ModelInfer, infer(inputs=[("INPUT0", "", [1, 16])], raw=())),
        "infer, BYTES cut short": (stub.ModelInfer, infer(inputs=[("INPUT0", "BYTES", [1, 16])], raw=[b"\xff"] * 1)),
        "infer, input twice": (stub.ModelInfer, infer(inputs=[("INPUT0", "FP32", [1, 16])] * 2, raw=[ROW, ROW])),
        "infer, no inputs": (stub.ModelInfer, infer(inputs=(), raw=())),
        "infer, output with newline": (stub.ModelInfer, infer(outputs=["OUTPUT0\n"])),
        "infer, timeout as string": (stub.ModelInfer, infer(timeout=("string_param", "soon"))),
        "infer, timeout as bool": (stub.ModelInfer, infer(timeout=("bool_param", True))),
        "infer, negative timeout": (stub.ModelInfer, infer(timeout=("int64_param", -5))),
    }


def test_odd_messages_get_typed_errors_and_leave_no_traceback(tmp_path, server_factory):
    server = server_factory(make_repository(tmp_path / "repo"), "--insecure-dev",
                            env={"TWINFER_AUTH__ADMIN_TOKEN": ADMIN})
    admin = (("authorization", f"Bearer {ADMIN}"),)
    with grpc.insecure_channel(server.grpc) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        wrong = {}
        for name, (method, request) in structured_cases(stub).items():
            try:
                method(request, metadata=admin, timeout=20)
                wrong[name] = "OK"
            except grpc.RpcError as exc:
                if exc.code() not in TYPED:
                    wrong[name] = (exc.code().name, exc.details())
        assert wrong == {}

        # Bytes that are not the method's message, and seeded random bytes, to every read-only method.
        rng = random.Random(14)
        blobs = [b"\xff\xff\xff\x07", b"\x0a\xff", b"\x12\x05ab"] + [
            rng.randbytes(rng.randint(1, 64)) for _ in range(40)]
        for method in ("ModelInfer", "ModelMetadata", "ModelConfig", "ModelReady", "ModelStatistics",
                       "ServerMetadata", "RepositoryIndex", "ServerLive", "ServerReady"):
            call = channel.unary_unary(f"/inference.GRPCInferenceService/{method}")
            for blob in blobs:
                try:
                    call(blob, timeout=20)
                except grpc.RpcError as exc:
                    assert exc.code() in TYPED, (method, blob, exc.code(), exc.details())

        # The same in a stream: each odd request gets its error in the stream, the stream goes on.
        odd = [infer(version="9" * 5000), infer(inputs=[("INPUT0", "FP32", [-1, 16])]), infer(model="tiny\n"),
               infer(timeout=("double_param", 1.5)), infer()]
        answers = list(stub.ModelStreamInfer(iter(odd), timeout=20))
        errors = [a.error_message for a in answers if a.error_message]
        assert len(answers) == 5 and len(errors) == 4, answers
        assert not any("internal" in e for e in errors), errors
        raw_stream = channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer",
                                           response_deserializer=pb.ModelStreamInferResponse.FromString)
        garbled = list(raw_stream(iter([b"\xff\xff\xff", infer().SerializeToString()]), timeout=20))
        assert sorted(bool(a.error_message) for a in garbled) == [False, True]
        assert any("not a valid protobuf message" in a.error_message for a in garbled)

    log = server.log()
    assert "Traceback" not in log and "Unexpected" not in log, log[-3000:]
    assert server.stop() == 0
