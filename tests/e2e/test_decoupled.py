"""Decoupled python models (Triton's `model_transaction_policy { decoupled: true }`) on a real server, called with
tritonclient's gRPC streaming client on both gRPC servers: several responses per request from the model's own
threads, Triton's final-response flags, per-response errors, an execute that raises, unary calls refused with the
reason, a model that sends until the client goes away stopping when it does, and BLS calls iterating a decoupled
model's responses (sync and async)."""

from __future__ import annotations

import queue
import textwrap
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.e2e.conftest import start_server, wait_until

REPEAT_CONFIG = """
name: "repeat"
backend: "python"
max_batch_size: 0
model_transaction_policy { decoupled: true }
input [ { name: "IN" data_type: TYPE_INT32 dims: [ -1 ] } ]
output [
  { name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] },
  { name: "IDX" data_type: TYPE_UINT32 dims: [ 1 ] }
]
"""

# Like Triton's repeat example: one response per element, sent from a thread the model starts, then the final flag.
REPEAT_MODEL = '''
import json
import threading

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        if not pb_utils.using_decoupled_model_transaction_policy(json.loads(args["model_config"])):
            raise pb_utils.TritonModelException("this model must be decoupled")  # as Triton's examples check
        self.threads = []

    def execute(self, requests):
        for request in requests:
            values = pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()
            if values.size and values[0] == 999:
                raise pb_utils.TritonModelException("999 cannot be repeated")
            thread = threading.Thread(target=self.repeat, args=(values, request.get_response_sender()), daemon=True)
            thread.start()
            self.threads.append(thread)
        return None

    def repeat(self, values, sender):
        for i, value in enumerate(values):
            if value < 0:
                sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"negative value {value} at {i}")))
                continue
            sender.send(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("OUT", np.array([value], np.int32)), pb_utils.Tensor("IDX", np.array([i], np.uint32))]))
        sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    def finalize(self):
        for thread in self.threads:
            thread.join(5)
'''

ENDLESS_CONFIG = """
name: "endless"
backend: "python"
model_transaction_policy {{ decoupled: true }}
input [ {{ name: "IN" data_type: TYPE_INT32 dims: [ 1 ] }} ]
output [ {{ name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] }} ]
parameters {{ key: "marker" value: {{ string_value: "{marker}" }} }}
"""

# Sends until the client has gone, then says how it ended in the marker file (outside the repository).
ENDLESS_MODEL = '''
import json
import threading

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.marker = json.loads(args["model_config"])["parameters"]["marker"]["string_value"]

    def execute(self, requests):
        for request in requests:
            threading.Thread(target=self.send_forever, args=(request,), daemon=True).start()
        return None

    def send_forever(self, request):
        sender, sent = request.get_response_sender(), 0
        while True:
            try:
                sender.send(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUT", np.array([sent], np.int32))]))
            except pb_utils.TritonModelException as exc:
                with open(self.marker, "w") as out:
                    out.write(f"{sent} {request.is_cancelled()} {exc.message()}")
                return
            sent += 1
'''


SUM_CONFIG = """
name: "sum_repeat"
backend: "python"
input [ { name: "IN" data_type: TYPE_INT32 dims: [ -1 ] } ]
output [ { name: "SUM" data_type: TYPE_INT32 dims: [ 1 ] }, { name: "COUNT" data_type: TYPE_INT32 dims: [ 1 ] } ]
"""

# Like Triton's bls_decoupled examples: a plain model summing what a decoupled one streams, sync and async.
SUM_MODEL = '''
import asyncio

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    async def execute(self, requests):
        responses = []
        for request in requests:
            values = pb_utils.get_input_tensor_by_name(request, "IN")
            call = lambda: pb_utils.InferenceRequest(model_name="repeat", inputs=[values],
                                                     requested_output_names=["OUT"])
            streams = [call().exec(decoupled=True), *await asyncio.gather(
                call().async_exec(decoupled=True), call().async_exec(decoupled=True))]
            total, count = 0, 0
            for stream in streams:
                for response in stream:
                    if response.has_error():
                        raise pb_utils.TritonModelException(response.error().message())
                    if response.output_tensors():  # the last one is empty: the final flag
                        total += int(pb_utils.get_output_tensor_by_name(response, "OUT").as_numpy()[0])
                        count += 1
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("SUM", np.array([total], np.int32)),
                                                         pb_utils.Tensor("COUNT", np.array([count], np.int32))]))
        return responses
'''


@pytest.fixture(scope="module", params=["twisted", "grpcio"])
def served(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"decoupled-{request.param}")
    repo = tmp / "repo"
    marker = tmp / "endless.marker"
    for name, config, model in (("repeat", REPEAT_CONFIG, REPEAT_MODEL),
                                ("endless", ENDLESS_CONFIG.format(marker=marker), ENDLESS_MODEL),
                                ("sum_repeat", SUM_CONFIG, SUM_MODEL)):
        (repo / name / "1").mkdir(parents=True)
        (repo / name / "config.pbtxt").write_text(textwrap.dedent(config))
        (repo / name / "1" / "model.py").write_text(model)
    server = start_server(tmp, repo, "--insecure-dev", env={"TWINFER_GRPC_SERVER": request.param})
    yield server, marker
    assert server.stop() == 0


def _values(values):
    tensor = grpcclient.InferInput("IN", [len(values)], "INT32")
    tensor.set_data_from_numpy(np.array(values, np.int32))
    return [tensor]


def _stream(server):
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}")
    answers: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    return client, answers


def _until_final(answers, request_ids, timeout_s=20.0):
    """Every answer, per request id, until each request's triton_final_response."""
    by_request = {request_id: [] for request_id in request_ids}
    open_ids = set(request_ids)
    deadline = time.monotonic() + timeout_s
    while open_ids:
        result, error = answers.get(timeout=max(0.1, deadline - time.monotonic()))
        response = result.get_response() if result is not None else None
        request_id = response.id if response is not None else None
        if request_id is None:
            raise AssertionError(f"an answer without a request id: {error}")
        by_request[request_id].append((result, error))
        if response.parameters["triton_final_response"].bool_param:
            open_ids.discard(request_id)
    return by_request


def test_each_request_gets_its_responses_in_order_and_an_empty_final_one(served):
    server, _ = served
    client, answers = _stream(server)
    try:
        client.async_stream_infer("repeat", _values([5, 7, 9]), request_id="a", enable_empty_final_response=True)
        client.async_stream_infer("repeat", _values([4, 2]), request_id="b", enable_empty_final_response=True)
        got = _until_final(answers, ["a", "b"])
    finally:
        client.stop_stream()
    for request_id, expected in (("a", [5, 7, 9]), ("b", [4, 2])):
        data = [result for result, _ in got[request_id][:-1]]
        assert [r.as_numpy("OUT").tolist() for r in data] == [[v] for v in expected]
        assert [r.as_numpy("IDX").tolist() for r in data] == [[i] for i in range(len(expected))]
        assert all(not r.get_response().parameters["triton_final_response"].bool_param for r in data)
        final = got[request_id][-1][0].get_response()
        assert final.model_name == "repeat" and not final.outputs  # the bare final flag, as Triton sends it


def test_without_the_final_flag_only_data_responses_come(served):
    server, _ = served
    client, answers = _stream(server)
    try:
        client.async_stream_infer("repeat", _values([1, 2, 3, 4]), request_id="plain")
        results = [answers.get(timeout=20) for _ in range(4)]
    finally:
        client.stop_stream()
    assert [r.as_numpy("OUT").tolist() for r, _ in results] == [[1], [2], [3], [4]]
    assert all("triton_final_response" not in r.get_response().parameters for r, _ in results)
    assert answers.empty()


def test_an_error_response_fails_that_response_only(served):
    server, _ = served
    client, answers = _stream(server)
    try:
        client.async_stream_infer("repeat", _values([3, -1, 8]), request_id="e", enable_empty_final_response=True)
        got = [answers.get(timeout=20) for _ in range(4)]  # tritonclient hands an error over without its response
    finally:
        client.stop_stream()
    assert got[0][0].as_numpy("OUT").tolist() == [3] and got[2][0].as_numpy("OUT").tolist() == [8]
    assert got[1][0] is None and isinstance(got[1][1], InferenceServerException)
    assert "negative value -1 at 1" in got[1][1].message()
    assert got[3][0].get_response().parameters["triton_final_response"].bool_param and answers.empty()


def test_an_execute_that_raises_ends_its_request_with_the_message(served):
    server, _ = served
    client, answers = _stream(server)
    try:
        client.async_stream_infer("repeat", _values([999]), request_id="x")
        result, error = answers.get(timeout=20)
        client.async_stream_infer("repeat", _values([6]), request_id="after")  # the model keeps serving
        after, after_error = answers.get(timeout=20)
    finally:
        client.stop_stream()
    assert isinstance(error, InferenceServerException) and "999 cannot be repeated" in error.message()
    assert after_error is None and after.as_numpy("OUT").tolist() == [6]


def test_unary_calls_are_refused_with_the_reason(served):
    server, _ = served
    grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}")
    with pytest.raises(InferenceServerException, match="decoupled .* ModelStreamInfer"):
        grpc.infer("repeat", _values([1]))
    http = httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}")
    tensor = httpclient.InferInput("IN", [1], "INT32")
    tensor.set_data_from_numpy(np.array([1], np.int32))
    with pytest.raises(InferenceServerException, match="decoupled .* ModelStreamInfer") as raised:
        http.infer("repeat", [tensor])
    assert raised.value.status() == "400"
    config = grpc.get_model_config("repeat").config
    assert config.model_transaction_policy.decoupled


def test_a_model_that_sends_forever_stops_when_the_client_goes(served):
    server, marker = served
    client, answers = _stream(server)
    try:
        client.async_stream_infer("endless", _values([0]), request_id="forever")
        first = [answers.get(timeout=20) for _ in range(50)]
    finally:
        client.stop_stream(cancel_requests=True)
        client.close()
    assert [r.as_numpy("OUT").tolist() for r, _ in first] == [[i] for i in range(50)]
    wait_until(marker.exists, timeout=20, what="the endless model to stop")
    sent, cancelled, reason = marker.read_text().split(" ", 2)
    assert int(sent) >= 50 and cancelled == "True" and "Unable to send response" in reason
    # ... and the server is fine: a new stream works
    client, answers = _stream(server)
    try:
        client.async_stream_infer("repeat", _values([11]), request_id="next")
        result, _ = answers.get(timeout=20)
    finally:
        client.stop_stream()
    assert result.as_numpy("OUT").tolist() == [11]


def test_a_bls_call_iterates_a_decoupled_models_responses(served):
    server, _ = served
    http = httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}")
    tensor = httpclient.InferInput("IN", [4], "INT32")
    tensor.set_data_from_numpy(np.array([1, 2, 3, 4], np.int32))
    result = http.infer("sum_repeat", [tensor])
    assert result.as_numpy("SUM").tolist() == [30] and result.as_numpy("COUNT").tolist() == [12]  # 3 calls x 4
    tensor = httpclient.InferInput("IN", [2], "INT32")
    tensor.set_data_from_numpy(np.array([1, -2], np.int32))
    with pytest.raises(InferenceServerException, match="negative value -2 at 1"):
        http.infer("sum_repeat", [tensor])
