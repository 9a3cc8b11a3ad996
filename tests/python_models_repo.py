"""A repository of Triton-style python models and ensembles, written the way Triton users write them (config.pbtxt,
`import triton_python_backend_utils as pb_utils`), for the python-backend tests."""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent

from tests.support import make_repository

ADD_SUB_CONFIG = """
name: "add_sub"
backend: "python"
max_batch_size: 8
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] },
        { name: "INPUT1" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] },
         { name: "OUTPUT1" data_type: TYPE_FP32 dims: [ 4 ] } ]
dynamic_batching { }
instance_group [ { count: 2 kind: KIND_CPU } ]
"""

# Shaped like python_backend's examples/add_sub/model.py: config lookups in initialize, one response per request.
ADD_SUB_MODEL = '''
import json

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.model_config = model_config = json.loads(args["model_config"])
        output0_config = pb_utils.get_output_config_by_name(model_config, "OUTPUT0")
        output1_config = pb_utils.get_output_config_by_name(model_config, "OUTPUT1")
        self.output0_dtype = pb_utils.triton_string_to_numpy(output0_config["data_type"])
        self.output1_dtype = pb_utils.triton_string_to_numpy(output1_config["data_type"])
        self.args = {k: args[k] for k in ("model_name", "model_version", "model_instance_kind")}

    def execute(self, requests):
        responses = []
        for request in requests:
            in_0 = pb_utils.get_input_tensor_by_name(request, "INPUT0")
            in_1 = pb_utils.get_input_tensor_by_name(request, "INPUT1")
            out_0 = in_0.as_numpy() + in_1.as_numpy()
            out_1 = in_0.as_numpy() - in_1.as_numpy()
            out_tensor_0 = pb_utils.Tensor("OUTPUT0", out_0.astype(self.output0_dtype))
            out_tensor_1 = pb_utils.Tensor("OUTPUT1", out_1.astype(self.output1_dtype))
            responses.append(pb_utils.InferenceResponse(output_tensors=[out_tensor_0, out_tensor_1]))
        return responses

    def finalize(self):
        pb_utils.Logger.log_info("add_sub finalized")
'''

# Reports how many requests each execute call got, after a pause long enough for concurrent requests to queue.
BATCH_PROBE_CONFIG = """
name: "batch_probe"
backend: "python"
max_batch_size: 32
input [ { name: "X" data_type: TYPE_FP32 dims: [ 1 ] } ]
output [ { name: "COUNT" data_type: TYPE_INT32 dims: [ 1 ] }, { name: "Y" data_type: TYPE_FP32 dims: [ 1 ] } ]
dynamic_batching { }
"""

BATCH_PROBE_MODEL = '''
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        time.sleep(0.1)
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy()
            count = np.full((x.shape[0], 1), len(requests), dtype=np.int32)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("COUNT", count),
                                                         pb_utils.Tensor("Y", x * 10)]))
        return responses
'''

# BLS, as python_backend's examples/bls: a request to another model of the repository (the ONNX `tiny`).
BLS_CONFIG = """
name: "bls"
backend: "python"
max_batch_size: 8
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 16 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 16 ] } ]
dynamic_batching { }
"""

BLS_MODEL = '''
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "INPUT0")
            model_name = "missing" if float(x.as_numpy().ravel()[0]) == 999 else "tiny"
            infer_request = pb_utils.InferenceRequest(
                model_name=model_name, requested_output_names=["OUTPUT0"],
                inputs=[pb_utils.Tensor("INPUT0", x.as_numpy() * 2)])
            infer_response = infer_request.exec()
            if infer_response.has_error():
                raise pb_utils.TritonModelException(infer_response.error().message())
            out = pb_utils.get_output_tensor_by_name(infer_response, "OUTPUT0")
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", out.as_numpy())]))
        return responses
'''

# The asyncio form (async def execute + await async_exec), several BLS calls in flight at once.
BLS_ASYNC_MODEL = '''
import asyncio

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    async def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            calls = [pb_utils.InferenceRequest(model_name="tiny", requested_output_names=["OUTPUT0"],
                                               inputs=[pb_utils.Tensor("INPUT0", x * k)]).async_exec()
                     for k in (1, 2)]
            first, second = await asyncio.gather(*calls)
            total = (pb_utils.get_output_tensor_by_name(first, "OUTPUT0").as_numpy()
                     + pb_utils.get_output_tensor_by_name(second, "OUTPUT0").as_numpy())
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", total)]))
        return responses
'''

# Triton's BLS example shape: the model to call comes in a BYTES input (so its name arrives as bytes), and the
# called model's output tensors are passed through as they are.
BLS_BY_NAME_CONFIG = """
name: "bls_by_name"
backend: "python"
input [ { name: "MODEL_NAME" data_type: TYPE_STRING dims: [ 1 ] },
        { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] }, { name: "INPUT1" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] }, { name: "OUTPUT1" data_type: TYPE_FP32 dims: [ 4 ] } ]
instance_group [ { kind: KIND_CPU } ]
"""

BLS_BY_NAME_MODEL = '''
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            in_0 = pb_utils.get_input_tensor_by_name(request, "INPUT0")
            in_1 = pb_utils.get_input_tensor_by_name(request, "INPUT1")
            model_name = pb_utils.get_input_tensor_by_name(request, "MODEL_NAME").as_numpy()[0]
            infer_request = pb_utils.InferenceRequest(
                model_name=model_name, requested_output_names=["OUTPUT0", "OUTPUT1"], inputs=[in_0, in_1])
            infer_response = infer_request.exec()
            if infer_response.has_error():
                raise pb_utils.TritonModelException(infer_response.error().message())
            responses.append(pb_utils.InferenceResponse(output_tensors=infer_response.output_tensors()))
        return responses
'''

STRINGS_CONFIG = """
name: "strings"
backend: "python"
max_batch_size: 0
input [ { name: "TEXT" data_type: TYPE_STRING dims: [ -1 ] } ]
output [ { name: "UPPER" data_type: TYPE_STRING dims: [ -1 ] }, { name: "LENGTH" data_type: TYPE_INT32 dims: [ -1 ] } ]
"""

STRINGS_MODEL = '''
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            text = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy()
            assert text.dtype == np.object_ and all(isinstance(t, bytes) for t in text), text
            upper = np.array([t.decode("utf-8").upper().encode("utf-8") for t in text], dtype=np.object_)
            length = np.array([len(t.decode("utf-8")) for t in text], dtype=np.int32)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("UPPER", upper),
                                                         pb_utils.Tensor("LENGTH", length)]))
        return responses
'''

# Errors: `raiser` raises from execute; `picky` fails odd requests alone with a TritonError in their response;
# `sleepy` hangs past its 300 ms default timeout.
SIMPLE_CONFIG = """
name: "{name}"
backend: "python"
max_batch_size: 16
input [ {{ name: "X" data_type: TYPE_FP32 dims: [ 1 ] }} ]
output [ {{ name: "Y" data_type: TYPE_FP32 dims: [ 1 ] }} ]
dynamic_batching {{ {batching} }}
"""

RAISER_MODEL = '''
class TritonPythonModel:
    def execute(self, requests):
        raise ValueError("the model refuses everything")
'''

PICKY_MODEL = '''
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        time.sleep(0.05)
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy()
            if int(x.ravel()[0]) % 2:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError("odd input refused")))
            else:
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("Y", x + 1)]))
        return responses
'''

SLEEPY_MODEL = '''
import time

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        time.sleep(2.0)
        return [pb_utils.InferenceResponse([pb_utils.Tensor("Y", pb_utils.get_input_tensor_by_name(r, "X")
                                                            .as_numpy())]) for r in requests]
'''

# Pre-processing in python, then the ONNX model: Triton's ensemble format, empty version directory.
SCALE_CONFIG = """
name: "scale"
backend: "python"
max_batch_size: 8
input [ { name: "RAW" data_type: TYPE_FP32 dims: [ 16 ] } ]
output [ { name: "SCALED" data_type: TYPE_FP32 dims: [ 16 ] } ]
dynamic_batching { }
"""

SCALE_MODEL = '''
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor(
            "SCALED", pb_utils.get_input_tensor_by_name(r, "RAW").as_numpy() * 0.5)]) for r in requests]
'''

PIPELINE_CONFIG = """
name: "pipeline"
platform: "ensemble"
max_batch_size: 8
input [ { name: "IMAGE" data_type: TYPE_FP32 dims: [ 16 ] } ]
output [ { name: "FEATURES" data_type: TYPE_FP32 dims: [ 16 ] } ]
ensemble_scheduling {
  step [
    { model_name: "scale" model_version: -1
      input_map { key: "RAW" value: "IMAGE" }
      output_map { key: "SCALED" value: "preprocessed" } },
    { model_name: "tiny" model_version: -1
      input_map { key: "INPUT0" value: "preprocessed" }
      output_map { key: "OUTPUT0" value: "FEATURES" } }
  ]
}
"""

# The same keys in config.yaml; its second step is the raising model.
BROKEN_PIPELINE_YAML = """
platform: ensemble
max_batch_size: 16
inputs: [{name: IN, datatype: FP32, dims: [1]}]
outputs: [{name: OUT, datatype: FP32, dims: [1]}]
ensemble_scheduling:
  step:
    - {model_name: picky, model_version: -1, input_map: {X: IN}, output_map: {Y: MID}}
    - {model_name: raiser, input_map: {X: MID}, output_map: {Y: OUT}}
"""

ORPHAN_CONFIG = """
name: "orphan"
platform: "ensemble"
max_batch_size: 8
input [ { name: "A" data_type: TYPE_FP32 dims: [ 16 ] } ]
output [ { name: "B" data_type: TYPE_FP32 dims: [ 16 ] } ]
ensemble_scheduling { step [ { model_name: "not_there" input_map { key: "INPUT0" value: "A" }
                               output_map { key: "OUTPUT0" value: "B" } } ] }
"""


# A stream model: camera frames in (1 x H x W, [0,1] floats), two numbers out; and an ensemble of it alone.
BRIGHTNESS_CONFIG = """
name: "brightness"
backend: "python"
max_batch_size: 8
input [ { name: "IMAGE" data_type: TYPE_FP32 dims: [ 1, -1, -1 ] } ]
output [ { name: "LEVEL" data_type: TYPE_FP32 dims: [ 2 ] } ]
dynamic_batching { }
"""

BRIGHTNESS_MODEL = '''
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            image = pb_utils.get_input_tensor_by_name(request, "IMAGE").as_numpy()
            flat = image.reshape(image.shape[0], -1)
            level = np.stack([flat.mean(axis=1), flat.max(axis=1)], axis=1).astype(np.float32)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("LEVEL", level)]))
        return responses
'''

BRIGHTNESS_ENSEMBLE_YAML = """
platform: ensemble
max_batch_size: 8
inputs: [{name: FRAME, datatype: FP32, dims: [1, -1, -1]}]
outputs: [{name: STATS, datatype: FP32, dims: [2], labels: [mean, max]}]
ensemble_scheduling:
  step: [{model_name: brightness, input_map: {IMAGE: FRAME}, output_map: {LEVEL: STATS}}]
"""

# Two instances, no batching: concurrent requests run in parallel on different TritonPythonModel objects.
PARALLEL_CONFIG = """
name: "parallel"
backend: "python"
max_batch_size: 0
input [ { name: "X" data_type: TYPE_FP32 dims: [ 1 ] } ]
output [ { name: "INSTANCE" data_type: TYPE_INT64 dims: [ 1 ] } ]
instance_group [ { count: 2 kind: KIND_CPU } ]
"""

PARALLEL_MODEL = '''
import threading
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.number = int(args["model_instance_name"].rsplit("_", 1)[1])
        self.busy = threading.Lock()

    def execute(self, requests):
        assert self.busy.acquire(blocking=False), "one instance ran two execute calls at once"
        try:
            time.sleep(0.4)
        finally:
            self.busy.release()
        return [pb_utils.InferenceResponse([pb_utils.Tensor("INSTANCE", np.array([self.number]))])
                for _ in requests]
'''


# Custom metrics as in python_backend's custom_metrics example: a counter, a gauge and a histogram.
COUNTED_MODEL = '''
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        labels = {"model": args["model_name"], "version": args["model_version"]}
        self.requests = pb_utils.MetricFamily(name="counted_requests", description="requests seen",
                                              kind=pb_utils.MetricFamily.COUNTER).Metric(labels=labels)
        self.last = pb_utils.MetricFamily(name="counted_last_value", description="last X",
                                          kind=pb_utils.MetricFamily.GAUGE).Metric(labels=labels)
        self.sizes = pb_utils.MetricFamily(name="counted_x", description="X values",
                                           kind=pb_utils.MetricFamily.HISTOGRAM).Metric(labels=labels,
                                                                                        buckets=[1.0, 10.0])

    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy()
            self.requests.increment(1)
            self.last.set(float(x.ravel()[-1]))
            for value in x.ravel():
                self.sizes.observe(float(value))
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("Y", x)]))
        return responses
'''


# model.py importing a helper module beside it (hot reload watches the helper too).
HELPER_USER_MODEL = '''
import helpers
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor(
            "Y", pb_utils.get_input_tensor_by_name(r, "X").as_numpy() * helpers.FACTOR)]) for r in requests]
'''


def write_model(root: Path, name: str, config: str, model: str | None, config_name: str = "config.pbtxt") -> None:
    version = root / name / "1"
    version.mkdir(parents=True)
    (root / name / config_name).write_text(dedent(config))
    if model is not None:
        (version / "model.py").write_text(dedent(model))


def build_python_repository(root: Path) -> Path:
    make_repository(root)  # tiny/1/model.onnx
    write_model(root, "add_sub", ADD_SUB_CONFIG, ADD_SUB_MODEL)
    write_model(root, "batch_probe", BATCH_PROBE_CONFIG, BATCH_PROBE_MODEL)
    write_model(root, "bls", BLS_CONFIG, BLS_MODEL)
    write_model(root, "bls_async", BLS_CONFIG.replace('"bls"', '"bls_async"'), BLS_ASYNC_MODEL)
    write_model(root, "strings", STRINGS_CONFIG, STRINGS_MODEL)
    add_sub_unbatched = ADD_SUB_CONFIG.replace('"add_sub"', '"add_sub_unbatched"').replace("max_batch_size: 8",
                                                                                          "max_batch_size: 0")
    write_model(root, "add_sub_unbatched", add_sub_unbatched.replace("dynamic_batching { }", ""), ADD_SUB_MODEL)
    write_model(root, "bls_by_name", BLS_BY_NAME_CONFIG, BLS_BY_NAME_MODEL)
    write_model(root, "counted", SIMPLE_CONFIG.format(name="counted", batching=""), COUNTED_MODEL)
    write_model(root, "helper_user", SIMPLE_CONFIG.format(name="helper_user", batching=""), HELPER_USER_MODEL)
    (root / "helper_user" / "1" / "helpers.py").write_text("FACTOR = 2\n")
    write_model(root, "raiser", SIMPLE_CONFIG.format(name="raiser", batching=""), RAISER_MODEL)
    write_model(root, "picky", SIMPLE_CONFIG.format(name="picky", batching=""), PICKY_MODEL)
    write_model(root, "sleepy", SIMPLE_CONFIG.format(
        name="sleepy", batching="default_queue_policy { default_timeout_microseconds: 300000 }"), SLEEPY_MODEL)
    write_model(root, "scale", SCALE_CONFIG, SCALE_MODEL)
    write_model(root, "pipeline", PIPELINE_CONFIG, None)
    write_model(root, "broken_pipeline", BROKEN_PIPELINE_YAML, None, "config.yaml")
    write_model(root, "orphan", ORPHAN_CONFIG, None)
    write_model(root, "brightness", BRIGHTNESS_CONFIG, BRIGHTNESS_MODEL)
    write_model(root, "brightness_pipeline", BRIGHTNESS_ENSEMBLE_YAML, None, "config.yaml")
    write_model(root, "parallel", PARALLEL_CONFIG, PARALLEL_MODEL)
    return root


def write_python_models(root: Path, models: dict[str, tuple[str, str]]) -> Path:
    """A repository of python models: name -> (config.pbtxt, model.py), version 1 each."""
    for name, (config, model) in models.items():
        write_model(root, name, config, model)
    return root
