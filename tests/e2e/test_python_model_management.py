"""A python model managing the repository the way Triton's python backend lets it (pb_utils.load_model,
unload_model, is_model_ready), plus the other names Triton's own QA models use (PreferredMemory on a BLS call,
set_release_flags), on a real server called with tritonclient."""

from __future__ import annotations

import numpy as np
import tritonclient.http as httpclient

from tests.e2e.conftest import start_server
from tests.python_models_repo import write_python_models
from tests.support import make_repository

MANAGER_CONFIG = """
name: "manager"
backend: "python"
input [ { name: "X" data_type: TYPE_FP32 dims: [ 1, 16 ] } ]
output [ { name: "STATES" data_type: TYPE_INT32 dims: [ 8 ] }, { name: "Y" data_type: TYPE_FP32 dims: [ 1, 16 ] } ]
"""

MANAGER_MODEL = '''
import numpy as np
import triton_python_backend_utils as pb_utils


def raises(call, *words):
    try:
        call()
    except pb_utils.TritonModelException as exc:
        return int(all(word in exc.message() for word in words))
    return 0


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "X")
            states = [pb_utils.is_model_ready("tiny")]
            pb_utils.unload_model("tiny")
            states.append(pb_utils.is_model_ready("tiny"))
            pb_utils.load_model(model_name="tiny")
            states += [pb_utils.is_model_ready("tiny", "1"), pb_utils.is_model_ready("tiny", "7"),
                       pb_utils.is_model_ready("nope")]
            states.append(raises(lambda: pb_utils.load_model("nope"), "nope"))
            states.append(raises(lambda: pb_utils.load_model("tiny", config="{}"), "not supported"))
            states.append(raises(lambda: request.set_release_flags(pb_utils.TRITONSERVER_REQUEST_RELEASE_RESCHEDULE),
                                 "rescheduling"))
            request.set_release_flags(pb_utils.TRITONSERVER_REQUEST_RELEASE_ALL)  # the normal release: fine
            bls = pb_utils.InferenceRequest(
                model_name="tiny", inputs=[pb_utils.Tensor("INPUT0", x.as_numpy())], requested_output_names=["OUTPUT0"],
                preferred_memory=pb_utils.PreferredMemory(pb_utils.TRITONSERVER_MEMORY_CPU, 0)).exec()
            if bls.has_error():
                raise pb_utils.TritonModelException(bls.error().message())
            y = pb_utils.get_output_tensor_by_name(bls, "OUTPUT0").as_numpy()
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("STATES", np.array(states, np.int32)),
                                                         pb_utils.Tensor("Y", y)]))
        return responses
'''


def test_a_python_model_unloads_loads_and_checks_models(tmp_path):
    repo = write_python_models(make_repository(tmp_path / "repo"), {"manager": (MANAGER_CONFIG, MANAGER_MODEL)})
    server = start_server(tmp_path, repo, "--insecure-dev")
    try:
        http = httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}")
        x = np.arange(16, dtype=np.float32).reshape(1, 16)
        tensor = httpclient.InferInput("X", [1, 16], "FP32")
        tensor.set_data_from_numpy(x)
        result = http.infer("manager", [tensor])
        # ready, unloaded, loaded again (v1), no v7, no such model, load errors typed, rescheduling refused by name
        assert result.as_numpy("STATES").tolist() == [1, 0, 1, 0, 0, 1, 1, 1]
        assert result.as_numpy("Y").shape == (1, 16)  # the BLS call with preferred_memory reached the reloaded tiny
        assert http.is_model_ready("tiny")
    finally:
        assert server.stop() == 0


CLOCK_CONFIG = """
name: "clock"
backend: "python"
output [ { name: "TICKS" data_type: TYPE_INT64 dims: [ 1 ] } ]
"""

# No inputs at all, as Triton allows (its QA's BLS test-runner models have none): each call counts one more tick.
CLOCK_MODEL = '''
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.ticks = 0

    def execute(self, requests):
        responses = []
        for request in requests:
            assert request.inputs() == []
            self.ticks += 1
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("TICKS", np.array([self.ticks], np.int64))]))
        return responses
'''


def _any_ready(tmp_path):
    path = tmp_path / "settings.yaml"
    path.write_text("readiness: any\n")  # one broken model must not hold the server's readiness
    return path


def test_a_model_without_inputs_is_served_on_every_transport(tmp_path):
    import tritonclient.grpc as grpcclient

    from twinfer.client import Client

    # and a model whose initialize runs unittest.main(), which calls sys.exit(): before, the server's start-up died
    quitter = ("import unittest\n\nclass TritonPythonModel:\n    def initialize(self, args):\n"
               "        unittest.main(argv=['x', '--no-such-flag'])\n\n    def execute(self, requests):\n"
               "        return []\n")
    repo = write_python_models(tmp_path / "repo", {"clock": (CLOCK_CONFIG, CLOCK_MODEL),
                                                   "quitter": (CLOCK_CONFIG.replace('"clock"', '"quitter"'), quitter)})
    server = start_server(tmp_path, repo, "--insecure-dev", "--config", str(_any_ready(tmp_path)))
    try:
        http = httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}")
        grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}")
        assert http.infer("clock", []).as_numpy("TICKS").tolist() == [1]
        assert grpc.infer("clock", []).as_numpy("TICKS").tolist() == [2]
        with Client("127.0.0.1", server.ports["tcp"]) as client:
            assert client.infer("clock", {})["TICKS"].tolist() == [3]
        assert http.get_model_metadata("clock")["inputs"] == []
        assert not http.is_model_ready("quitter")
        reasons = [m.get("reason", "") for m in http.get_model_repository_index() if m["name"] == "quitter"]
        assert reasons and all("initialize failed: SystemExit: 2" in r for r in reasons), reasons
    finally:
        assert server.stop() == 0


SENDER_CONFIG = """
name: "late"
backend: "python"
max_batch_size: 8
dynamic_batching { }
input [ { name: "X" data_type: TYPE_FP32 dims: [ 1 ] } ]
output [ { name: "Y" data_type: TYPE_FP32 dims: [ 1 ] } ]
"""

# Triton 24.06's default mode with the response sender: each response sent from a thread after execute returned None.
SENDER_MODEL = '''
import threading

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy()
            response = pb_utils.InferenceResponse([pb_utils.Tensor("Y", x + 1)])
            threading.Timer(0.01, request.get_response_sender().send, args=(response,),
                            kwargs={"flags": pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL}).start()
        return None
'''


def test_a_model_answering_through_the_response_sender_is_served(tmp_path):
    import tritonclient.grpc as grpcclient

    repo = write_python_models(tmp_path / "repo", {"late": (SENDER_CONFIG, SENDER_MODEL)})
    server = start_server(tmp_path, repo, "--insecure-dev")
    try:
        for module, address in ((httpclient, server.ports["http"]), (grpcclient, server.ports["grpc"])):
            client = module.InferenceServerClient(f"127.0.0.1:{address}")
            tensor = module.InferInput("X", [2, 1], "FP32")
            tensor.set_data_from_numpy(np.array([[1.0], [2.0]], np.float32))
            assert client.infer("late", [tensor]).as_numpy("Y").tolist() == [[2.0], [3.0]]
    finally:
        assert server.stop() == 0
