"""Request and response parameters between tritonclient and python models, as Triton passes them: the client's
parameters reach `request.parameters()` (the protocol's own stay with the server), a model's
`InferenceResponse(parameters=...)` reach the client on HTTP, gRPC and in a decoupled model's stream, an ensemble
hands the client's parameters to its steps, and parameters Triton would refuse are refused with its words."""

from __future__ import annotations

import json
import queue

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.e2e.conftest import start_server
from tests.python_models_repo import write_python_models

ECHO_CONFIG = """
name: "{name}"
backend: "python"
{extra}
input [ {{ name: "X" data_type: TYPE_FP32 dims: [ 1 ] }} ]
output [ {{ name: "SEEN" data_type: TYPE_STRING dims: [ 1 ] }} ]
"""

# Echoes the parameters it was given (as JSON) and answers with parameters of its own.
ECHO_MODEL = '''
import json

import numpy as np
import triton_python_backend_utils as pb_utils


def answer(request):
    seen = json.loads(request.parameters())
    if "bad" in seen:
        try:
            return pb_utils.InferenceResponse(parameters={"ratio": 0.5})
        except Exception as exc:  # as Triton's response_parameters model does
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG))
    return pb_utils.InferenceResponse(
        output_tensors=[pb_utils.Tensor("SEEN", np.array([json.dumps(seen, sort_keys=True)], np.object_))],
        parameters={"keys": len(seen), "voice": str(seen.get("voice", "")), "echoed": True})


class TritonPythonModel:
    def execute(self, requests):
        if pb_utils.using_decoupled_model_transaction_policy(self.config):
            for request in requests:
                sender = request.get_response_sender()
                sender.send(answer(request))
                sender.send(pb_utils.InferenceResponse(parameters={"last": True}),
                            flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
            return None
        return [answer(request) for request in requests]

    def initialize(self, args):
        self.config = json.loads(args["model_config"])
'''

PIPELINE_CONFIG = """
name: "pipeline"
platform: "ensemble"
input [ { name: "X" data_type: TYPE_FP32 dims: [ 1 ] } ]
output [ { name: "SEEN" data_type: TYPE_STRING dims: [ 1 ] } ]
ensemble_scheduling { step [ { model_name: "echo" model_version: -1 input_map { key: "X" value: "X" }
                               output_map { key: "SEEN" value: "SEEN" } } ] }
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("parameters")
    repo = tmp / "repo"
    for name, extra in (("echo", ""), ("echo_stream", "model_transaction_policy { decoupled: true }")):
        (repo / name / "1").mkdir(parents=True)
        (repo / name / "config.pbtxt").write_text(ECHO_CONFIG.format(name=name, extra=extra))
        (repo / name / "1" / "model.py").write_text(ECHO_MODEL)
    (repo / "pipeline" / "1").mkdir(parents=True)
    (repo / "pipeline" / "config.pbtxt").write_text(PIPELINE_CONFIG)
    server = start_server(tmp, repo, "--insecure-dev")
    yield server
    assert server.stop() == 0


def _x(module):
    tensor = module.InferInput("X", [1], "FP32")
    tensor.set_data_from_numpy(np.ones(1, np.float32))
    return [tensor]


def _seen(result) -> dict:
    return json.loads(result.as_numpy("SEEN")[0])


def test_http_parameters_reach_the_model_and_come_back(served):
    http = httpclient.InferenceServerClient(f"127.0.0.1:{served.ports['http']}")
    result = http.infer("echo", _x(httpclient), parameters={"voice": "alto", "temperature": 0.7, "n": 3})
    assert _seen(result) == {"n": 3, "temperature": 0.7, "voice": "alto"}
    assert result.get_response()["parameters"] == {"keys": 3, "voice": "alto", "echoed": True}
    assert _seen(http.infer("echo", _x(httpclient))) == {}
    # the protocol's own parameters stay with the server (tritonclient refuses to send them; a raw client may)
    import urllib.request

    body = json.dumps({"inputs": [{"name": "X", "datatype": "FP32", "shape": [1], "data": [1.0]}],
                       "parameters": {"binary_data_output": False, "timeout": 5_000_000, "voice": "raw"}}).encode()
    with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{served.ports['http']}/v2/models/echo/infer",
                                                       data=body, method="POST"), timeout=10) as response:
        document = json.loads(response.read())
    assert json.loads(document["outputs"][0]["data"][0]) == {"voice": "raw"}
    assert document["parameters"]["voice"] == "raw"


def test_grpc_parameters_reach_the_model_and_come_back(served):
    grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{served.ports['grpc']}")
    result = grpc.infer("echo", _x(grpcclient), parameters={"voice": "bass", "greedy": False, "n": 2})
    assert _seen(result) == {"greedy": False, "n": 2, "voice": "bass"}
    params = result.get_response().parameters
    assert params["keys"].int64_param == 3 and params["voice"].string_param == "bass"
    assert params["echoed"].bool_param


def test_an_ensemble_hands_the_clients_parameters_to_its_steps(served):
    http = httpclient.InferenceServerClient(f"127.0.0.1:{served.ports['http']}")
    assert _seen(http.infer("pipeline", _x(httpclient), parameters={"voice": "tenor"})) == {"voice": "tenor"}


def test_a_decoupled_models_responses_carry_their_parameters(served):
    grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{served.ports['grpc']}")
    answers: queue.Queue = queue.Queue()
    grpc.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        grpc.async_stream_infer("echo_stream", _x(grpcclient), parameters={"voice": "soprano"})
        first, error = answers.get(timeout=20)
        last, last_error = answers.get(timeout=20)
    finally:
        grpc.stop_stream()
    assert error is None and _seen(first) == {"voice": "soprano"}
    assert first.get_response().parameters["voice"].string_param == "soprano"
    assert last_error is None and last.get_response().parameters["last"].bool_param


def test_parameters_triton_refuses_are_refused_with_its_words(served):
    grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{served.ports['grpc']}")
    with pytest.raises(InferenceServerException,
                       match="Expect parameters values to have type bool/int/str, found type <class 'float'>"):
        grpc.infer("echo", _x(grpcclient), parameters={"bad": 1})


ERROR_CODE_CONFIG = """
name: "error_code"
backend: "python"
input [ { name: "ERROR_CODE" data_type: TYPE_STRING dims: [ 1 ] } ]
output [ { name: "DUMMY_OUT" data_type: TYPE_STRING dims: [ 1 ] } ]
"""

# Like Triton's QA error_code model: fail with the TritonError code named by the input.
ERROR_CODE_MODEL = '''
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        codes = {name: getattr(pb_utils.TritonError, name) for name in
                 ("UNKNOWN", "INTERNAL", "NOT_FOUND", "INVALID_ARG", "UNAVAILABLE", "UNSUPPORTED", "ALREADY_EXISTS",
                  "CANCELLED")}
        responses = []
        for request in requests:
            name = pb_utils.get_input_tensor_by_name(request, "ERROR_CODE").as_numpy()[0].decode()
            if name == "raise":
                raise ValueError("no such luck")
            error = (pb_utils.TritonError("error code: " + name, codes[name]) if name in codes
                     else pb_utils.TritonError("unrecognized error code: " + name))
            responses.append(pb_utils.InferenceResponse(error=error))
        return responses
'''


def test_a_models_triton_error_codes_become_tritons_statuses(tmp_path):
    repo = write_python_models(tmp_path / "repo", {"error_code": (ERROR_CODE_CONFIG, ERROR_CODE_MODEL)})
    server = start_server(tmp_path, repo, "--insecure-dev")
    try:
        grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}")
        http = httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}")
        # (code, gRPC status, HTTP status), as Triton maps them (grpc_utils.cc, http_server.cc)
        for code, grpc_status, http_status in (
                ("UNKNOWN", "UNKNOWN", "400"), ("INTERNAL", "INTERNAL", "500"), ("NOT_FOUND", "NOT_FOUND", "404"),
                ("INVALID_ARG", "INVALID_ARGUMENT", "400"), ("UNAVAILABLE", "UNAVAILABLE", "503"),
                ("UNSUPPORTED", "UNIMPLEMENTED", "501"), ("ALREADY_EXISTS", "ALREADY_EXISTS", "400"),
                ("CANCELLED", "CANCELLED", "400"), ("(default)", "INTERNAL", "500")):
            words = ("error code: " if code != "(default)" else "unrecognized error code: ") + code
            for client, module, status in ((grpc, grpcclient, f"StatusCode.{grpc_status}"), (http, httpclient,
                                                                                               http_status)):
                tensor = module.InferInput("ERROR_CODE", [1], "BYTES")
                tensor.set_data_from_numpy(np.array([code.encode()], np.object_))
                with pytest.raises(InferenceServerException) as raised:
                    client.infer("error_code", [tensor])
                assert raised.value.status() == status and raised.value.message() == words, (
                    code, raised.value.status(), raised.value.message())
        tensor = grpcclient.InferInput("ERROR_CODE", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([b"raise"], np.object_))
        with pytest.raises(InferenceServerException) as raised:
            grpc.infer("error_code", [tensor])
        assert raised.value.message() == ("Failed to process the request(s) for model 'error_code_0_0', message: "
                                          "ValueError: no such luck")  # Triton's words for an execute that raised
    finally:
        assert server.stop() == 0
