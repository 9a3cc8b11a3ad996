"""The python backend without a server: the batcher's request-list mode on a fake clock, TritonPythonModel loading
and calling, auto_complete_config, and the ensemble config readers and graph checks."""

from __future__ import annotations

import json
from pathlib import Path
from textwrap import dedent

import numpy as np
import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from tests.python_models_repo import ADD_SUB_CONFIG, ADD_SUB_MODEL, PIPELINE_CONFIG
from twinfer.backends.base import BackendOptions
from twinfer.errors import ConfigError, InferenceFailed, InvalidInput, ModelLoadError, RequestTimeout, Unavailable
from twinfer.inference.batcher import DynamicBatcher
from twinfer.inference.config_loading import load_model_config
from twinfer.inference.ensemble import check_graph
from twinfer.inference.model_config import DynamicBatchingConfig, ModelConfig, TensorConfig
from twinfer.inference.statistics import ModelStatistics


def make_config(**overrides) -> ModelConfig:
    fields = dict(
        name="m", backend="python", max_batch_size=8,
        inputs=(TensorConfig(name="x", datatype="FP32", dims=(2,)),),
        outputs=(TensorConfig(name="y", datatype="FP32", dims=(2,)),),
        dynamic_batching=DynamicBatchingConfig(), instance_count=1,
    )
    fields.update(overrides)
    return ModelConfig(**fields)


class ManualRequests:
    """Records request lists; the test answers them, one result per request."""

    def __init__(self) -> None:
        self.calls: list[tuple[list, Deferred]] = []

    def __call__(self, requests):
        d: Deferred = Deferred()
        self.calls.append((requests, d))
        return d

    def answer(self, results=None) -> None:
        requests, d = self.calls.pop(0)
        if results is None:
            results = [{"y": inputs["x"] * 2} for inputs, _ in requests]
        d.callback((results, 1000))


def never(inputs, outputs):  # the concatenating path must not be used
    raise AssertionError("a request-list backend got a concatenated batch")


def outcome(d: Deferred) -> list:
    out: list = []
    d.addBoth(out.append)
    return out


def test_request_list_mode_hands_queued_requests_over_as_a_list_with_per_request_results():
    clock, stats, execute = Clock(), ModelStatistics(), ManualRequests()
    batcher = DynamicBatcher(clock, make_config(), never, stats, execute)
    first = outcome(batcher.submit({"x": np.ones((1, 2), np.float32)}, ["y"]))
    # Different row counts and shapes never concatenate, so they may share a call (no same-shape rule).
    second = outcome(batcher.submit({"x": np.ones((3, 2), np.float32)}, ["y"]))
    third = outcome(batcher.submit({"x": np.ones((2, 2), np.float32)}, ["y"]))
    assert [len(r) for r, _ in execute.calls] == [1]
    execute.answer()
    assert first[0]["y"].shape == (1, 2)
    assert [len(r) for r, _ in execute.calls] == [2]
    execute.answer([{"y": np.zeros((3, 2))}, InvalidInput("this one is wrong")])
    assert second[0]["y"].shape == (3, 2)
    assert isinstance(third[0], Failure) and third[0].check(InvalidInput)
    assert stats.in_flight == 0 and stats.execution_count == 2 and stats.failure.count == 1


def test_request_list_mode_still_caps_rows_at_max_batch_size():
    clock, execute = Clock(), ManualRequests()
    batcher = DynamicBatcher(clock, make_config(max_batch_size=4), never, ModelStatistics(), execute)
    for n in (1, 3, 2, 2):
        batcher.submit({"x": np.ones((n, 2), np.float32)}, ["y"])
    execute.answer()
    assert [inputs["x"].shape[0] for inputs, _ in execute.calls[0][0]] == [3]  # 3 + 2 > 4
    execute.answer()
    assert [inputs["x"].shape[0] for inputs, _ in execute.calls[0][0]] == [2, 2]


def test_a_request_that_hangs_in_execute_times_out_and_its_late_result_is_dropped():
    clock, stats, execute = Clock(), ModelStatistics(), ManualRequests()
    batcher = DynamicBatcher(clock, make_config(), never, stats, execute)
    hung = outcome(batcher.submit({"x": np.ones((1, 2), np.float32)}, ["y"], timeout_s=0.3))
    clock.advance(0.29)
    assert hung == []
    clock.advance(0.02)
    assert hung[0].check(RequestTimeout) and "did not finish within 300 ms" in hung[0].value.message
    assert stats.in_flight == 0 and stats.failure.count == 1
    execute.answer()  # the model finally returns: nothing fires twice, the instance is free again
    assert stats.success.count == 0 and batcher.busy == 0


def test_other_backends_keep_the_queue_only_timeout():
    clock = Clock()
    calls = []

    def execute(inputs, outputs):
        d: Deferred = Deferred()
        calls.append(d)
        return d

    batcher = DynamicBatcher(clock, make_config(backend="onnxruntime"), execute, ModelStatistics())
    running = outcome(batcher.submit({"x": np.ones((1, 2), np.float32)}, ["y"], timeout_s=0.3))
    clock.advance(1.0)
    assert running == []  # a graph runtime's run is not abandoned
    calls[0].callback(({"y": np.ones((1, 2))}, 10))
    assert running[0]["y"].shape == (1, 2)


# --- the backend itself ------------------------------------------------------------------------------------------

def write_python_model(root: Path, name: str, model: str, config: str | None = None, version: int = 1) -> Path:
    directory = root / name / str(version)
    directory.mkdir(parents=True, exist_ok=True)
    if config is not None:
        (root / name / "config.pbtxt").write_text(dedent(config))
    path = directory / "model.py"
    path.write_text(dedent(model))
    return path


def load(root: Path, name: str) -> tuple[ModelConfig, object]:
    from twinfer.backends.python import PythonBackend

    model_dir = root / name
    versions = sorted(p for p in model_dir.iterdir() if p.is_dir())
    config = load_model_config(model_dir, versions[-1] / "model.py")
    return config, PythonBackend(config, versions[-1] / "model.py", BackendOptions())


def test_add_sub_runs_with_triton_args_and_one_instance_per_count(tmp_path):
    write_python_model(tmp_path, "add_sub", ADD_SUB_MODEL, ADD_SUB_CONFIG)
    config, backend = load(tmp_path, "add_sub")
    assert config.backend == "python" and config.instance_count == 2 and config.max_batch_size == 8
    a, b = np.ones((2, 4), np.float32), np.full((2, 4), 3, np.float32)
    (result,) = backend.run_requests([({"INPUT0": a, "INPUT1": b}, ["OUTPUT1"])])
    assert list(result) == ["OUTPUT1"] and np.array_equal(result["OUTPUT1"], a - b)
    instances = backend._instances
    assert len(instances) == 2 and instances[0] is not instances[1]
    assert instances[0].args == {"model_name": "add_sub", "model_version": "1", "model_instance_kind": "CPU"}
    assert instances[0].model_config["input"][0] == {"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [4]}
    backend.close()


def test_each_load_gets_its_own_module(tmp_path):
    model = '''
    import triton_python_backend_utils as pb_utils
    LOADS = []

    class TritonPythonModel:
        def initialize(self, args):
            LOADS.append(args["model_version"])
            self.loads = LOADS

        def execute(self, requests):
            return [pb_utils.InferenceResponse([pb_utils.Tensor("y", pb_utils.get_input_tensor_by_name(r, "x")
                                                                .as_numpy())]) for r in requests]
    '''
    config = 'backend: "python"\ninput [{name: "x" data_type: TYPE_FP32 dims: [2]}]\n' \
             'output [{name: "y" data_type: TYPE_FP32 dims: [2]}]\n'
    write_python_model(tmp_path, "m", model, config)
    _, first = load(tmp_path, "m")
    _, second = load(tmp_path, "m")
    assert first._instances[0].loads == ["1"] and second._instances[0].loads == ["1"]  # no shared module state
    assert first._module.__name__ != second._module.__name__
    import sys

    first.close()
    assert first._module.__name__ not in sys.modules and second._module.__name__ in sys.modules
    second.close()


ECHO_CONFIG = """
backend: "python"
max_batch_size: 4
input [{name: "x" data_type: TYPE_FP32 dims: [1]}]
output [{name: "y" data_type: TYPE_FP32 dims: [1]}]
"""


@pytest.mark.parametrize("body, error, message", [
    ("raise RuntimeError('nope')", InferenceFailed, "Failed to process the request(s) for model 'm_0_0', message: RuntimeError: nope"),
    ("raise pb_utils.TritonModelException('said no')", InferenceFailed, "said no"),
    ("return []", InferenceFailed, "execute returned 0 responses for 2 requests"),
    ("return [pb_utils.InferenceResponse(error=pb_utils.TritonError('bad x', pb_utils.TritonError.INVALID_ARG))] * 2",
     InvalidInput, "bad x"),
    ("return [pb_utils.InferenceResponse([])] * 2", InferenceFailed, "returned no output 'y'"),
    ("return [pb_utils.InferenceResponse(['not a tensor'])] * 2", InferenceFailed, "unusable response"),
    ("return [None, None]", InferenceFailed, "returned NoneType, not an InferenceResponse"),
])
def test_failures_of_execute_are_typed_per_request(tmp_path, body, error, message):
    model = f'''
    import triton_python_backend_utils as pb_utils

    class TritonPythonModel:
        def execute(self, requests):
            {body}
    '''
    write_python_model(tmp_path, "m", model, ECHO_CONFIG)
    _, backend = load(tmp_path, "m")
    x = np.ones((1, 1), np.float32)
    results = backend.run_requests([({"x": x}, ["y"]), ({"x": x}, ["y"])])
    assert len(results) == 2
    for result in results:
        assert isinstance(result, error) and message in result.message
    backend.close()


def test_initialize_failure_is_a_load_error_and_finalize_runs(tmp_path):
    model = '''
    import pathlib

    class TritonPythonModel:
        def initialize(self, args):
            self.name = args["model_instance_name"]
            self.marker = pathlib.Path(args["model_repository"]) / "finalized"
            if self.name.endswith("_1"):
                raise RuntimeError("second instance broke")

        def execute(self, requests):
            return []

        def finalize(self):
            with open(self.marker, "a") as f:
                f.write(self.name + "\\n")
    '''
    write_python_model(tmp_path, "m", model, ECHO_CONFIG + "instance_group [{count: 2}]\n")
    with pytest.raises(ModelLoadError, match="initialize failed: RuntimeError: second instance broke"):
        load(tmp_path, "m")
    assert (tmp_path / "m" / "finalized").read_text() == "m_0_0\n"  # the instance that initialized, only


def test_a_file_without_triton_python_model_is_refused(tmp_path):
    write_python_model(tmp_path, "m", "x = 1\n", ECHO_CONFIG)
    with pytest.raises(ModelLoadError, match="no class TritonPythonModel"):
        load(tmp_path, "m")


AUTO_COMPLETE_MODEL = '''
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    @staticmethod
    def auto_complete_config(auto_complete_model_config):
        auto_complete_model_config.add_input({"name": "IN", "data_type": "TYPE_FP32", "dims": [4]})
        auto_complete_model_config.add_output({"name": "OUT", "data_type": "TYPE_STRING", "dims": [-1]})
        auto_complete_model_config.set_max_batch_size(16)
        auto_complete_model_config.set_dynamic_batching()
        return auto_complete_model_config

    def execute(self, requests):
        return []
'''


def test_auto_complete_config_fills_in_a_minimal_config(tmp_path):
    path = write_python_model(tmp_path, "auto", AUTO_COMPLETE_MODEL, 'backend: "python"\n')
    config = load_model_config(tmp_path / "auto", path)
    assert config.max_batch_size == 16 and config.dynamic_batching is not None
    assert [(t.name, t.datatype, t.dims) for t in config.inputs] == [("IN", "FP32", (4,))]
    assert [(t.name, t.datatype, t.dims) for t in config.outputs] == [("OUT", "BYTES", (-1,))]


def test_auto_complete_config_that_contradicts_the_config_is_refused(tmp_path):
    config = 'backend: "python"\ninput [{name: "IN" data_type: TYPE_INT32 dims: [4]}]\n'
    path = write_python_model(tmp_path, "auto", AUTO_COMPLETE_MODEL, config)
    with pytest.raises(ConfigError, match="expects datatype TYPE_INT32 for input 'IN'"):
        load_model_config(tmp_path / "auto", path)


# --- ensemble configs --------------------------------------------------------------------------------------------

def test_ensemble_config_from_pbtxt_and_yaml_agree(tmp_path):
    (tmp_path / "pipeline" / "1").mkdir(parents=True)
    (tmp_path / "pipeline" / "config.pbtxt").write_text(PIPELINE_CONFIG)
    from_pbtxt = load_model_config(tmp_path / "pipeline", None)
    (tmp_path / "pipeline" / "config.pbtxt").unlink()
    (tmp_path / "pipeline" / "config.yaml").write_text(dedent("""
        platform: ensemble
        max_batch_size: 8
        dynamic_batching: false  # Triton's default scheduler, as config.pbtxt without dynamic_batching
        inputs: [{name: IMAGE, datatype: FP32, dims: [16]}]
        outputs: [{name: FEATURES, datatype: FP32, dims: [16]}]
        ensemble_scheduling:
          step:
            - {model_name: scale, model_version: -1, input_map: {RAW: IMAGE}, output_map: {SCALED: preprocessed}}
            - {model_name: tiny, input_map: {INPUT0: preprocessed}, output_map: {OUTPUT0: FEATURES}}
    """))
    from_yaml = load_model_config(tmp_path / "pipeline", None)
    assert from_pbtxt == from_yaml and from_pbtxt.backend == "ensemble"
    assert [s.model_name for s in from_pbtxt.ensemble_scheduling.step] == ["scale", "tiny"]
    check_graph(from_pbtxt)


def test_ensemble_needs_its_scheduling(tmp_path):
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "config.yaml").write_text("platform: ensemble\ninputs: [{name: A, datatype: FP32, dims: [1]}]\n"
                                               "outputs: [{name: B, datatype: FP32, dims: [1]}]\n")
    with pytest.raises(ConfigError, match="needs ensemble_scheduling"):
        load_model_config(tmp_path / "e", None)


def ensemble(steps: list[dict]) -> ModelConfig:
    return ModelConfig.model_validate({
        "name": "e", "backend": "ensemble",
        "inputs": [{"name": "A", "datatype": "FP32", "dims": [1]}],
        "outputs": [{"name": "B", "datatype": "FP32", "dims": [1]}],
        "ensemble_scheduling": {"step": steps},
    })


@pytest.mark.parametrize("steps, message", [
    ([{"model_name": "m", "input_map": {"x": "nowhere"}, "output_map": {"y": "B"}}], "reads 'nowhere'"),
    ([{"model_name": "m", "input_map": {"x": "A"}, "output_map": {"y": "C"}}], "no step writes the output 'B'"),
    ([{"model_name": "m", "input_map": {"x": "A"}, "output_map": {"y": "B"}},
      {"model_name": "n", "input_map": {"x": "A"}, "output_map": {"y": "B"}}], "'B' is written twice"),
    ([{"model_name": "m", "input_map": {"x": "C"}, "output_map": {"y": "D"}},
      {"model_name": "n", "input_map": {"x": "D"}, "output_map": {"y": "C"}},
      {"model_name": "o", "input_map": {"x": "A"}, "output_map": {"y": "B"}}], "a cycle"),
    ([{"model_name": "e", "input_map": {"x": "A"}, "output_map": {"y": "B"}}], "calls the ensemble itself"),
])
def test_bad_ensemble_graphs_are_refused(steps, message):
    with pytest.raises(ModelLoadError, match=message):
        check_graph(ensemble(steps))


def test_json_config_the_model_sees_is_tritons_shape():
    from twinfer.backends.python import triton_model_config

    config = make_config(outputs=(TensorConfig(name="y", datatype="BYTES", dims=(-1,)),), parameters={"k": "v"})
    seen = json.loads(json.dumps(triton_model_config(config)))
    assert seen["output"] == [{"name": "y", "data_type": "TYPE_STRING", "dims": [-1]}]
    assert seen["parameters"] == {"k": {"string_value": "v"}} and seen["max_batch_size"] == 8


def test_inputs_are_the_models_own_writable_copies(tmp_path):
    """Triton's inputs are writable: a model that scales in place must work on a read-only wire buffer, and must
    not change the array the caller (or another ensemble step) still holds."""
    model = '''
    import triton_python_backend_utils as pb_utils

    class TritonPythonModel:
        def execute(self, requests):
            out = []
            for r in requests:
                x = pb_utils.get_input_tensor_by_name(r, "x").as_numpy()
                x *= 2
                out.append(pb_utils.InferenceResponse([pb_utils.Tensor("y", x)]))
            return out
    '''
    write_python_model(tmp_path, "m", model, ECHO_CONFIG)
    _, backend = load(tmp_path, "m")
    wire = np.frombuffer(np.array([[3.0]], np.float32).tobytes(), np.float32).reshape(1, 1)
    assert not wire.flags.writeable
    shared = np.array([[5.0]], np.float32)
    first, second = backend.run_requests([({"x": wire}, ["y"]), ({"x": shared}, ["y"])])
    assert first["y"][0, 0] == 6.0 and second["y"][0, 0] == 10.0
    assert wire[0, 0] == 3.0 and shared[0, 0] == 5.0
    backend.close()


def test_dlpack_round_trip_with_torch():
    torch = pytest.importorskip("torch")
    from twinfer.backends import triton_utils as pb_utils

    wire = np.frombuffer(np.arange(4, dtype=np.float32).tobytes(), np.float32)
    tensor = pb_utils.Tensor._of_request("x", wire)
    as_torch = torch.utils.dlpack.from_dlpack(tensor.to_dlpack())
    assert as_torch.tolist() == [0.0, 1.0, 2.0, 3.0]
    back = pb_utils.Tensor.from_dlpack("y", torch.utils.dlpack.to_dlpack(as_torch * 2))
    assert back.name() == "y" and back.as_numpy().tolist() == [0.0, 2.0, 4.0, 6.0]
    assert pb_utils.Tensor.from_dlpack("z", torch.ones(2)).as_numpy().tolist() == [1.0, 1.0]


def test_metric_families_follow_tritons_rules():
    from twinfer.backends import triton_utils as pb_utils

    counter = pb_utils.MetricFamily("unit_requests", "d", pb_utils.MetricFamily.COUNTER)
    metric = counter.Metric(labels={"model": "m"})
    metric.increment(2)
    assert pb_utils.MetricFamily("unit_requests", "d", pb_utils.MetricFamily.COUNTER).Metric(
        labels={"model": "m"}).value() == 2  # same name, same labels: the same metric
    with pytest.raises(pb_utils.TritonModelException, match="cannot be decremented"):
        metric.increment(-1)
    with pytest.raises(pb_utils.TritonModelException, match="set\\(\\) is for gauges"):
        metric.set(5)
    with pytest.raises(pb_utils.TritonModelException, match="already exists as a counter"):
        pb_utils.MetricFamily("unit_requests", "d", pb_utils.MetricFamily.GAUGE)
    with pytest.raises(pb_utils.TritonModelException, match="needs buckets"):
        pb_utils.MetricFamily("unit_sizes", "d", pb_utils.MetricFamily.HISTOGRAM).Metric(labels={})
    with pytest.raises(pb_utils.TritonModelException, match="server's own"):
        pb_utils.MetricFamily("twinfer_fake", "d", pb_utils.MetricFamily.GAUGE)


def test_custom_counters_keep_their_bare_names_and_the_servers_keep_total():
    from prometheus_client import CollectorRegistry, Counter

    from twinfer.backends import triton_utils as pb_utils
    from twinfer.inference.custom_metrics import CustomMetricsCollector
    from twinfer.metrics import render

    pb_utils.MetricFamily("unit_latency_ns", "time spent", pb_utils.MetricFamily.COUNTER).Metric(
        labels={"model": "m"}).increment(7)
    pb_utils.MetricFamily("unit_seen_total", "named the Prometheus way", pb_utils.MetricFamily.COUNTER).Metric(
        labels={}).increment(1)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CustomMetricsCollector())
    Counter("twinfer_unit_things", "the server's own", registry=registry).inc()
    text = render(registry).decode()
    assert ('# HELP unit_latency_ns time spent\n# TYPE unit_latency_ns counter\nunit_latency_ns{model="m"} 7.0\n'
            in text)  # as Triton exports a custom counter
    assert "unit_latency_ns_total" not in text
    assert "# TYPE unit_seen_total counter\nunit_seen_total 1.0\n" in text
    assert "# TYPE twinfer_unit_things_total counter\ntwinfer_unit_things_total 1.0\n" in text


def models_with_helpers(tmp_path, model: str):
    """Python models `a` and `b`, both this model.py, each beside its own helpers.py (FACTOR = 2 and 3), loaded."""
    for name, factor in (("a", 2), ("b", 3)):
        path = write_python_model(tmp_path, name, model, ECHO_CONFIG)
        (path.parent / "helpers.py").write_text(f"FACTOR = {factor}\n")
    return load(tmp_path, "a")[1], load(tmp_path, "b")[1]


def test_helper_modules_beside_model_py_do_not_leak_between_models(tmp_path):
    model = '''
    import helpers
    import triton_python_backend_utils as pb_utils

    class TritonPythonModel:
        def execute(self, requests):
            return [pb_utils.InferenceResponse([pb_utils.Tensor("y", pb_utils.get_input_tensor_by_name(r, "x")
                                                                .as_numpy() * helpers.FACTOR)]) for r in requests]
    '''
    a, b = models_with_helpers(tmp_path, model)
    x = np.ones((1, 1), np.float32)
    assert a.run_requests([({"x": x}, ["y"])])[0]["y"][0, 0] == 2
    assert b.run_requests([({"x": x}, ["y"])])[0]["y"][0, 0] == 3  # its own helpers.py, not a's
    import sys

    assert "helpers" not in sys.modules
    a.close()
    b.close()


def test_optional_inputs_may_be_left_out(tmp_path):
    from twinfer.errors import InvalidInput as Invalid
    from twinfer.inference.validation import validate_inputs

    config = ('backend: "python"\ninput [{name: "x" data_type: TYPE_FP32 dims: [1]},'
              ' {name: "bias" data_type: TYPE_FP32 dims: [1] optional: true}]\n'
              'output [{name: "y" data_type: TYPE_FP32 dims: [1]}]\n')
    model = '''
    import triton_python_backend_utils as pb_utils

    class TritonPythonModel:
        def execute(self, requests):
            out = []
            for r in requests:
                x = pb_utils.get_input_tensor_by_name(r, "x").as_numpy()
                bias = pb_utils.get_input_tensor_by_name(r, "bias")
                out.append(pb_utils.InferenceResponse([pb_utils.Tensor("y", x + (0 if bias is None else
                                                                                 bias.as_numpy()))]))
            return out
    '''
    write_python_model(tmp_path, "m", model, config)
    loaded, backend = load(tmp_path, "m")
    assert loaded.input("bias").optional and not loaded.input("x").optional
    x = np.ones(1, np.float32)
    alone = validate_inputs(loaded, {"x": x})
    assert list(alone) == ["x"]
    with pytest.raises(Invalid, match="missing input 'x'"):
        validate_inputs(loaded, {"bias": x})
    (without,) = backend.run_requests([(alone, ["y"])])
    (with_bias,) = backend.run_requests([({"x": x, "bias": x * 4}, ["y"])])
    assert without["y"][0] == 1 and with_bias["y"][0] == 5
    backend.close()


def test_a_python_model_configured_in_config_yaml(tmp_path):
    path = write_python_model(tmp_path, "m", ADD_SUB_MODEL)
    (tmp_path / "m" / "config.yaml").write_text(dedent("""
        backend: python
        max_batch_size: 4
        instance_count: 3
        inputs: [{name: INPUT0, datatype: FP32, dims: [4]}, {name: INPUT1, datatype: FP32, dims: [4]}]
        outputs: [{name: OUTPUT0, datatype: FP32, dims: [4]}, {name: OUTPUT1, datatype: FP32, dims: [4]}]
    """))
    from twinfer.backends.python import PythonBackend

    config = load_model_config(tmp_path / "m", path)
    backend = PythonBackend(config, path, BackendOptions())
    assert len(backend._instances) == 3 and config.dynamic_batching is not None
    a = np.ones((2, 4), np.float32)
    assert np.array_equal(backend.run({"INPUT0": a, "INPUT1": a}, ["OUTPUT0"])["OUTPUT0"], a * 2)
    backend.close()


class FakeFacade:
    """Records step requests; the test answers them."""

    def __init__(self) -> None:
        self.calls: list[tuple[object, Deferred]] = []

    def infer(self, request):
        d: Deferred = Deferred()
        self.calls.append((request, d))
        return d

    def answer(self, model: str, outputs: dict) -> None:
        from twinfer.inference.types import InferenceResult

        index = next(i for i, (r, _) in enumerate(self.calls) if r.model == model)
        _, d = self.calls.pop(index)
        d.callback(InferenceResult(model, "1", outputs))


def diamond() -> ModelConfig:
    """A -> left, right (independent, run together) -> join -> B."""
    return ModelConfig.model_validate({
        "name": "e", "backend": "ensemble",
        "inputs": [{"name": "A", "datatype": "FP32", "dims": [1]}],
        "outputs": [{"name": "B", "datatype": "FP32", "dims": [1]}],
        "ensemble_scheduling": {"step": [
            {"model_name": "join", "input_map": {"l": "L", "r": "R"}, "output_map": {"y": "B"}},
            {"model_name": "left", "input_map": {"x": "A"}, "output_map": {"y": "L"}},
            {"model_name": "right", "model_version": 2, "input_map": {"x": "A"}, "output_map": {"y": "R"}},
        ]},
    })


def scheduler(facade: FakeFacade):
    from twinfer.inference.caller import ModelCaller
    from twinfer.inference.ensemble import EnsembleBackend

    backend = EnsembleBackend(diamond(), BackendOptions(caller=ModelCaller(None, facade.infer)))
    assert backend.depends_on == (("join", None), ("left", None), ("right", "2"))
    stats = ModelStatistics()
    return backend.scheduler(Clock(), stats), stats


def test_ensemble_steps_run_when_their_inputs_exist_and_independent_ones_together():
    facade = FakeFacade()
    sched, stats = scheduler(facade)
    a = np.array([1.0], np.float32)
    result = outcome(sched.submit({"A": a}, ["B"], timeout_s=0.5))
    assert sorted(r.model for r, _ in facade.calls) == ["left", "right"]  # join waits for both
    right = next(r for r, _ in facade.calls if r.model == "right")
    assert right.version == "2" and right.timeout_ms == 500 and right.outputs == ["y"] and right.inputs["x"] is a
    facade.answer("left", {"y": a + 1})
    assert [r.model for r, _ in facade.calls] == ["right"]
    facade.answer("right", {"y": a + 2})
    join = facade.calls[0][0]
    assert join.model == "join" and join.inputs["l"][0] == 2 and join.inputs["r"][0] == 3
    assert sched.busy == 1 and result == []
    facade.answer("join", {"y": a * 10})
    assert list(result[0]) == ["B"] and result[0]["B"][0] == 10
    assert stats.success.count == 1 and stats.in_flight == 0 and sched.busy == 0


def test_an_ensemble_step_error_keeps_its_type_and_names_the_step():
    from twinfer.errors import Overloaded

    facade = FakeFacade()
    sched, stats = scheduler(facade)
    result = outcome(sched.submit({"A": np.array([1.0], np.float32)}, ["B"]))
    drained = outcome(sched.drained())
    assert drained == []  # a request is running
    index = next(i for i, (r, _) in enumerate(facade.calls) if r.model == "right")
    facade.calls.pop(index)[1].errback(Overloaded("queue full"))
    assert result[0].check(Overloaded)
    assert result[0].value.message == "ensemble 'e' step 2 (right): queue full"
    facade.answer("left", {"y": np.array([2.0], np.float32)})  # a late sibling: nothing more happens
    assert facade.calls == [] and stats.failure.count == 1 and drained == [None]
    late = outcome(sched.submit({"A": np.array([1.0], np.float32)}, ["B"]))
    assert late[0].check(Unavailable)


class RequestListFake:
    def __init__(self) -> None:
        self.closed = False

    def run_requests(self, requests):
        return [{"y": inputs["x"]} for inputs, _ in requests]

    def run(self, inputs, outputs):
        raise AssertionError("not used")

    def close(self) -> None:
        self.closed = True


def version_with_held_pool():
    from pathlib import Path as P

    from tests.support import SyncThreads
    from twinfer.inference.model_version import FileSignature, ModelVersion

    clock, threads, backend = Clock(), SyncThreads(), RequestListFake()
    version = ModelVersion(clock, threads, make_config(), 1, backend, FileSignature(P("model.py"), 0, 0))
    pool = threads.pools["m-v1"]
    pool.hold = True
    return clock, version, pool, backend


def test_unloading_a_python_model_waits_for_execute_and_not_forever_for_one_that_hangs():
    from twinfer.inference.model_version import HUNG_GRACE_S

    clock, version, pool, backend = version_with_held_pool()
    answered = outcome(version.batcher.submit({"x": np.ones((1, 2), np.float32)}, ["y"]))
    retired = outcome(version.retire())
    clock.advance(1)
    assert retired == [] and not backend.closed  # execute is still running: the unload waits
    pool.release()
    assert answered[0]["y"].shape == (1, 2) and retired == [None] and backend.closed and pool.stopped

    clock, version, pool, backend = version_with_held_pool()
    version.batcher.submit({"x": np.ones((1, 2), np.float32)}, ["y"])  # never answered: execute hangs
    retired = outcome(version.retire())
    clock.advance(HUNG_GRACE_S - 1)
    assert retired == []
    clock.advance(1)
    assert retired == [None] and backend.closed and pool.stopped
    pool.release()  # the stuck call returns at last: nothing breaks


DECOUPLED_MODEL = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "x").as_numpy()
            sender = request.get_response_sender()
            if x[0, 0] < 0:
                return [pb_utils.InferenceResponse([pb_utils.Tensor("y", x)])]  # not how a decoupled model answers
            for step in range(3):
                sender.send(pb_utils.InferenceResponse([pb_utils.Tensor("y", x * step)]))
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
            try:
                sender.send(pb_utils.InferenceResponse([pb_utils.Tensor("y", x)]))
            except pb_utils.TritonModelException as exc:
                assert "Unable to send response" in exc.message()
            else:
                raise AssertionError("a send after the final flag went through")
        return None
"""


def _drain(stream) -> list:
    items: list = []
    while not items or not items[-1].final:
        stream.next().addCallback(items.append)
    return items


def test_a_decoupled_python_model_sends_its_responses_to_the_requests_stream(tmp_path):
    from twinfer.backends.python import triton_model_config
    from twinfer.inference.response_stream import ResponseStream

    write_python_model(tmp_path, "m", DECOUPLED_MODEL, ECHO_CONFIG + "model_transaction_policy { decoupled: true }\n")
    config, backend = load(tmp_path, "m")
    assert config.decoupled and triton_model_config(config)["model_transaction_policy"] == {"decoupled": True}
    good, bad = ResponseStream(), ResponseStream()
    x = np.full((1, 1), 3, np.float32)
    assert backend.run_requests([({"x": x}, ["y"], good), ({"x": -x}, ["y"], bad)]) == [{}, {}]
    items = _drain(good)
    assert [item.outputs["y"][0, 0] for item in items[:3]] == [0, 3, 6]
    assert items[3].final and items[3].outputs is None and len(items) == 4
    (failed,) = _drain(bad)  # execute returned responses: the requests still open end with the reason
    assert isinstance(failed.error, InferenceFailed) and "execute must return None" in failed.error.message
    with pytest.raises(InvalidInput, match="decoupled"):
        backend.run({"x": x}, ["y"])  # one result from a stream of them: not a thing


SENDER_DEFAULT_MODE_MODEL = """
import threading

import numpy as np
import triton_python_backend_utils as pb_utils

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "x").as_numpy()
            how = int(x[0, 0])
            if how == 5:    # nothing sent at all
                continue
            sender = request.get_response_sender()
            response = pb_utils.InferenceResponse([pb_utils.Tensor("y", x * 10)])
            if how == 1:    # response and final flag together
                sender.send(response, flags=FINAL)
            elif how == 2:  # the response, then the flag alone
                sender.send(response)
                sender.send(flags=FINAL)
            elif how == 3:  # from a thread, after execute returned
                threading.Timer(0.05, sender.send, args=(response,), kwargs={"flags": FINAL}).start()
            elif how == 4:  # two responses: refused, the first one stands
                sender.send(response)
                try:
                    sender.send(response, flags=FINAL)
                except pb_utils.TritonModelException as exc:
                    assert "exactly one response" in exc.message()
                    sender.send(flags=FINAL)
            # how == 6: a sender taken, nothing ever sent on it
        return None
"""


def test_a_default_mode_model_may_answer_through_the_response_sender(tmp_path, monkeypatch):
    """Triton 24.06: a model that is not decoupled may send its one response per request with the sender."""
    from twinfer.backends import python

    monkeypatch.setattr(python, "SENT_RESPONSE_WAIT_S", 1.0)
    write_python_model(tmp_path, "m", SENDER_DEFAULT_MODE_MODEL, ECHO_CONFIG)
    _, backend = load(tmp_path, "m")
    requests = [({"x": np.full((1, 1), how, np.float32)}, ["y"]) for how in (1, 2, 3, 4, 5, 6)]
    *answered, silent, waited = backend.run_requests(requests)
    assert [float(result["y"][0, 0]) for result in answered] == [10.0, 20.0, 30.0, 40.0]
    assert isinstance(silent, InferenceFailed) and "sent no response for this request" in silent.message
    assert isinstance(waited, InferenceFailed) and "no final flag for this request within 1 s" in waited.message


def test_decoupled_needs_the_python_backend():
    with pytest.raises(ValueError, match="decoupled needs backend `python`"):
        make_config(backend="onnxruntime", model_transaction_policy={"decoupled": True})


def test_a_python_versions_signature_covers_its_helpers_but_not_bytecode(tmp_path):
    import os

    from twinfer.inference.repository import scan_model

    path = write_python_model(tmp_path, "m", ADD_SUB_MODEL, ADD_SUB_CONFIG)
    (path.parent / "helpers.py").write_text("X = 1\n")
    first = scan_model(tmp_path / "m").versions[1]
    assert first.path == path
    (path.parent / "__pycache__").mkdir()
    (path.parent / "__pycache__" / "helpers.cpython-311.pyc").write_bytes(b"\0" * 100)
    assert scan_model(tmp_path / "m").versions[1] == first
    (path.parent / "helpers.py").write_text("X = 22\n")
    os.utime(path.parent / "helpers.py", ns=(first.mtime_ns + 10**9, first.mtime_ns + 10**9))
    assert scan_model(tmp_path / "m").versions[1] != first


def test_relative_imports_of_helpers_work_and_stay_private(tmp_path):
    model = '''
    from . import helpers
    from .helpers import FACTOR
    import triton_python_backend_utils as pb_utils

    class TritonPythonModel:
        def execute(self, requests):
            return [pb_utils.InferenceResponse([pb_utils.Tensor("y", pb_utils.get_input_tensor_by_name(r, "x")
                                                                .as_numpy() * FACTOR * helpers.FACTOR)])
                    for r in requests]
    '''
    a, b = models_with_helpers(tmp_path, model)
    x = np.ones((1, 1), np.float32)
    assert a.run_requests([({"x": x}, ["y"])])[0]["y"][0, 0] == 4
    assert b.run_requests([({"x": x}, ["y"])])[0]["y"][0, 0] == 9
    import sys

    package = a._module.__name__.rpartition(".")[0]
    assert f"{package}.helpers" in sys.modules
    a.close()
    assert not [n for n in sys.modules if n.startswith(package)]
    b.close()


def test_loading_a_model_never_changes_sys_path(tmp_path):
    """Models load on several threads: a sys.path that shifts under another thread's import makes it skip an entry
    (seen: `initialize` failing with "No module named 'onnxruntime'" while another model loaded)."""
    import sys

    model = '''
    import sys
    import helpers
    PATH_WHILE_IMPORTING = list(sys.path)

    class TritonPythonModel:
        def initialize(self, args):
            import late_helper
            self.path = list(sys.path)
            self.late = late_helper.VALUE

        def execute(self, requests):
            return []
    '''
    path = write_python_model(tmp_path, "m", model, ECHO_CONFIG)
    (path.parent / "helpers.py").write_text("X = 1\n")
    (path.parent / "late_helper.py").write_text("VALUE = 7\n")
    before = list(sys.path)
    _, backend = load(tmp_path, "m")
    assert backend._module.PATH_WHILE_IMPORTING == before == list(sys.path)
    assert backend._instances[0].path == before and backend._instances[0].late == 7
    assert "helpers" not in sys.modules and "late_helper" not in sys.modules
    backend.close()


def test_the_logger_has_tritons_level_names():
    from twinfer.backends import triton_utils as pb_utils

    logger = pb_utils.Logger
    assert logger.INFO == pb_utils.LogLevel.INFO and logger.VERBOSE == pb_utils.LogLevel.VERBOSE
    logger.log("a message at a level named the way Triton's QA model names it", logger.WARNING)


@pytest.mark.parametrize("where", ["import", "initialize", "auto_complete_config", "execute", "finalize"])
def test_a_model_calling_sys_exit_fails_that_model_only(tmp_path, where):
    """SystemExit is not an Exception: unittest.main() in a model's initialize (as Triton's QA models do) stopped the
    whole server's start-up."""
    exits = {w: "sys.exit(2)" if w == where else "pass" for w in ("import", "initialize", "auto_complete_config",
                                                                    "execute", "finalize")}
    model = f'''
    import sys

    import numpy as np
    import triton_python_backend_utils as pb_utils

    {exits["import"]}

    class TritonPythonModel:
        @staticmethod
        def auto_complete_config(config):
            {exits["auto_complete_config"]}
            return config

        def initialize(self, args):
            {exits["initialize"]}

        def execute(self, requests):
            {exits["execute"]}
            return [pb_utils.InferenceResponse([pb_utils.Tensor("y", np.ones((1, 1), np.float32))]) for _ in requests]

        def finalize(self):
            {exits["finalize"]}
    '''
    write_python_model(tmp_path, "m", model, ECHO_CONFIG)
    if where in ("import", "auto_complete_config"):
        with pytest.raises((ModelLoadError, ConfigError), match="SystemExit: 2"):
            load(tmp_path, "m")
        return
    if where == "initialize":
        with pytest.raises(ModelLoadError, match="initialize failed: SystemExit: 2"):
            load(tmp_path, "m")
        return
    _, backend = load(tmp_path, "m")
    (result,) = backend.run_requests([({"x": np.ones((1, 1), np.float32)}, ["y"])])
    if where == "execute":
        assert isinstance(result, InferenceFailed) and "message: SystemExit: 2" in result.message
    backend.close()  # finalize's sys.exit is logged, not raised
