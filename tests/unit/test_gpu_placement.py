"""#21 GPUs, what can be checked without one: instance_group parsing (config.pbtxt and config.yaml), the placement
of every instance (device, ONNX provider list), the one-line refusal of KIND_GPU here, KIND_AUTO's CPU fallback with
the real onnxruntime (CPU providers only), and the same model on CPU and GPU where a GPU exists (skipped here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import yaml
from twisted.internet.task import Clock
from twisted.logger import capturedLogs

from tests.support import SyncThreads, build_matmul_relu
from twinfer.backends import BackendOptions, load_backend
from twinfer.errors import ConfigError, ModelLoadError, ModelNotReady
from twinfer.inference.config_loading import load_model_config
from twinfer.inference.facade import InferenceFacade
from twinfer.inference.model_config import ModelConfig
from twinfer.inference.placement import (
    CPU, Device, GpuInventory, gpu_accelerators, onnx_inventory, onnx_providers, place_instances)
from twinfer.inference.repository import ModelRepository
from twinfer.inference.types import InferenceRequest
from twinfer.kserve.messages import triton_config

TENSORS = {"inputs": [{"name": "x", "datatype": "FP32", "dims": [4]}],
           "outputs": [{"name": "y", "datatype": "FP32", "dims": [4]}]}
NO_GPU = GpuInventory(False, 0, "onnxruntime-gpu's CUDAExecutionProvider; available: ['CPUExecutionProvider']")
TWO_GPUS = GpuInventory(True, 2)
GPU_PRESENT = "CUDAExecutionProvider" in ort.get_available_providers()


def config(**fields) -> ModelConfig:
    return ModelConfig.model_validate({"name": "m", **TENSORS, **fields})


def place(inventory: GpuInventory, **fields) -> tuple[str, ...]:
    return tuple(map(str, place_instances(config(**fields), lambda: inventory).devices))


def never() -> GpuInventory:
    raise AssertionError("a CPU-only config must not ask what GPUs exist")


# --- placement: a pure function -----------------------------------------------------------------------------------

def test_no_instance_group_is_instance_count_cpu_instances_and_asks_nothing():
    assert place_instances(config(instance_count=3), never).devices == (CPU, CPU, CPU)
    assert place_instances(config(instance_group=[{"kind": "KIND_CPU", "count": 2}]), never).devices == (CPU, CPU)


@pytest.mark.parametrize(("group", "expected"), [
    ({"kind": "KIND_GPU", "gpus": [0], "count": 2}, ("gpu:0", "gpu:0")),
    ({"kind": "KIND_GPU", "gpus": [1, 0], "count": 1}, ("gpu:1", "gpu:0")),
    ({"kind": "KIND_GPU", "gpus": [0, 1], "count": 2}, ("gpu:0", "gpu:0", "gpu:1", "gpu:1")),  # count per GPU
    ({"kind": "KIND_GPU", "count": 1}, ("gpu:0", "gpu:1")),  # no gpus: every visible GPU, as Triton
    ({"kind": "KIND_AUTO", "count": 2, "gpus": [1]}, ("gpu:1", "gpu:1")),
    ({"kind": "KIND_AUTO"}, ("gpu:0", "gpu:1")),
])
def test_gpu_groups_on_a_machine_with_two_gpus(group, expected):
    assert place(TWO_GPUS, instance_group=[group]) == expected


def test_groups_add_up_in_order_and_instance_count_is_their_total():
    groups = [{"kind": "KIND_CPU", "count": 1}, {"kind": "KIND_GPU", "gpus": [0, 1], "count": 2}]
    assert place(TWO_GPUS, instance_group=groups) == ("cpu", "gpu:0", "gpu:0", "gpu:1", "gpu:1")
    assert config(instance_group=groups).instance_count == 5


def test_gpu_count_unknown_trusts_the_listed_gpus_and_defaults_to_gpu_0():
    unknown = GpuInventory(True, None)
    assert place(unknown, instance_group=[{"kind": "KIND_GPU", "gpus": [3]}]) == ("gpu:3",)
    assert place(unknown, instance_group=[{"kind": "KIND_GPU", "count": 2}]) == ("gpu:0", "gpu:0")


def test_a_gpu_the_process_does_not_see_is_refused_in_one_line():
    with pytest.raises(ModelLoadError, match=r"^model 'm': instance_group 0 names GPU\(s\) \[2\], this process "
                                             r"sees 2 \(0\.\.1\)$"):
        place(TWO_GPUS, instance_group=[{"kind": "KIND_GPU", "gpus": [0, 2]}])


def test_kind_gpu_without_a_gpu_is_one_line_naming_what_is_missing():
    with pytest.raises(ModelLoadError) as info:
        place(NO_GPU, instance_group=[{"kind": "KIND_GPU", "gpus": [0], "count": 2}])
    assert str(info.value) == ("model 'm': instance_group KIND_GPU needs onnxruntime-gpu's CUDAExecutionProvider; "
                               "available: ['CPUExecutionProvider']")


def test_kind_auto_without_a_gpu_falls_back_to_cpu_with_one_note():
    placement = place_instances(config(instance_group=[{"kind": "KIND_AUTO", "count": 2, "gpus": [0, 1]}]),
                                lambda: NO_GPU)
    assert placement.devices == (CPU,) * 4 and not placement.uses_gpu
    [note] = placement.notes
    assert "KIND_AUTO" in note and "4 CPU instance(s)" in note and "CUDAExecutionProvider" in note


# --- ONNX Runtime providers ---------------------------------------------------------------------------------------

def test_onnx_providers_cpu_unchanged_cuda_with_device_id_cpu_last():
    available = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert onnx_providers(config(), CPU, available) == ["CPUExecutionProvider"]
    assert onnx_providers(config(), Device("gpu", 1), available) == [
        ("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"]


@pytest.mark.parametrize("fields", [
    {"optimization": {"execution_accelerators": {"gpu_execution_accelerator": [
        {"name": "tensorrt", "parameters": {"precision_mode": "FP16", "max_workspace_size_bytes": "1073741824"}}]}}},
    {"parameters": {"gpu_execution_accelerator": "tensorrt"}},
])
def test_tensorrt_comes_first_when_asked(fields):
    available = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    providers = onnx_providers(config(**fields), Device("gpu", 0), available)
    assert [p if isinstance(p, str) else p[0] for p in providers] == available
    trt_options = providers[0][1]
    assert trt_options["device_id"] == 0 and providers[1] == ("CUDAExecutionProvider", {"device_id": 0})
    if "optimization" in fields:
        assert trt_options == {"device_id": 0, "trt_fp16_enable": True, "trt_max_workspace_size": 1073741824}
    assert onnx_providers(config(**fields), CPU, available) == ["CPUExecutionProvider"]  # no accelerator on a CPU


def test_tensorrt_asked_but_missing_or_misspelt_is_refused():
    trt = {"parameters": {"gpu_execution_accelerator": "tensorrt"}}
    with pytest.raises(ModelLoadError, match="tensorrt accelerator needs ONNX Runtime's TensorrtExecutionProvider"):
        onnx_providers(config(**trt), Device("gpu", 0), ["CUDAExecutionProvider", "CPUExecutionProvider"])
    with pytest.raises(ModelLoadError, match="'openvino' is not a known accelerator"):
        gpu_accelerators(config(parameters={"gpu_execution_accelerator": "openvino"}))
    bad = {"optimization": {"execution_accelerators": {"gpu_execution_accelerator": [
        {"name": "tensorrt", "parameters": {"precision_mode": "FP8"}}]}}}
    with pytest.raises(ModelLoadError, match="precision_mode: 'FP8' is not FP32, FP16 or INT8"):
        onnx_providers(config(**bad), Device("gpu", 0), ["TensorrtExecutionProvider", "CUDAExecutionProvider"])


def test_onnx_inventory_from_the_providers():
    assert onnx_inventory(["CUDAExecutionProvider", "CPUExecutionProvider"], 2) == TWO_GPUS
    assert onnx_inventory(["CUDAExecutionProvider", "CPUExecutionProvider"], None).usable
    assert not onnx_inventory(["CUDAExecutionProvider", "CPUExecutionProvider"], 0).usable  # no device visible
    missing = onnx_inventory(["AzureExecutionProvider", "CPUExecutionProvider"], 0)
    assert not missing.usable and "['AzureExecutionProvider', 'CPUExecutionProvider']" in missing.missing


# --- config files -------------------------------------------------------------------------------------------------

PBTXT_GPU = """
name: "m"
backend: "onnxruntime"
max_batch_size: 8
instance_group [ { kind: KIND_GPU gpus: [ 0, 1 ] count: 2 }, { kind: KIND_CPU } ]
optimization { execution_accelerators { gpu_execution_accelerator [ { name: "tensorrt"
  parameters { key: "precision_mode" value: "FP16" } } ] } }
"""


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    build_matmul_relu(tmp_path / "m" / "1" / "model.onnx", np.eye(16))
    return tmp_path / "m"


def test_pbtxt_and_yaml_give_the_same_groups_and_accelerators(model_dir):
    (model_dir / "config.pbtxt").write_text(PBTXT_GPU)
    from_pbtxt = load_model_config(model_dir, model_dir / "1" / "model.onnx")
    (model_dir / "config.pbtxt").unlink()
    (model_dir / "config.yaml").write_text(yaml.safe_dump({
        "max_batch_size": 8,
        "instance_group": [{"kind": "KIND_GPU", "gpus": [0, 1], "count": 2}, {"kind": "KIND_CPU"}],
        "optimization": {"execution_accelerators": {"gpu_execution_accelerator": [
            {"name": "tensorrt", "parameters": {"precision_mode": "FP16"}}]}}}))
    from_yaml = load_model_config(model_dir, model_dir / "1" / "model.onnx")
    for key in ("instance_group", "instance_count", "optimization"):
        assert getattr(from_pbtxt, key) == getattr(from_yaml, key), key
    assert from_yaml.instance_count == 5
    assert [(g.kind, g.count, g.gpus) for g in from_yaml.instance_group] == [("KIND_GPU", 2, (0, 1)),
                                                                            ("KIND_CPU", 1, ())]
    assert gpu_accelerators(from_yaml)[0].parameters == {"precision_mode": "FP16"}


def test_a_yaml_instance_count_replaces_the_pbtxt_groups(model_dir):
    (model_dir / "config.pbtxt").write_text(PBTXT_GPU)
    (model_dir / "config.yaml").write_text("instance_count: 3\n")
    loaded = load_model_config(model_dir, model_dir / "1" / "model.onnx")
    assert loaded.instance_group == () and loaded.instance_count == 3


@pytest.mark.parametrize(("text", "message"), [
    ("instance_group [ { kind: KIND_MODEL } ]", r"config\.pbtxt: instance_group\.0\.kind: Input should be"),
    ("instance_group [ { kind: KIND_CPU gpus: [ 0 ] } ]", r"config\.pbtxt: instance_group\.0: gpus are given for "
                                                          r"a KIND_CPU group"),
])
def test_bad_groups_are_config_errors_naming_the_file(model_dir, text, message):
    (model_dir / "config.pbtxt").write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_model_config(model_dir, model_dir / "1" / "model.onnx")


def test_triton_config_reports_the_groups(model_dir):
    (model_dir / "config.pbtxt").write_text(PBTXT_GPU)
    groups = triton_config(load_model_config(model_dir, model_dir / "1" / "model.onnx")).instance_group
    assert [(g.kind, g.count, list(g.gpus)) for g in groups] == [(1, 2, [0, 1]), (2, 1, [])]  # KIND_GPU=1, CPU=2


# --- the real onnxruntime here: CPU providers only -----------------------------------------------------------------

def load(model_dir: Path, text: str, name: str = "config.pbtxt"):
    (model_dir / name).write_text(text)
    model_file = model_dir / "1" / "model.onnx"
    return load_backend(load_model_config(model_dir, model_file), model_file, BackendOptions())


@pytest.mark.skipif(GPU_PRESENT, reason="checks the refusal on a machine without a GPU")
def test_kind_gpu_through_the_real_repository_loader_is_refused_in_one_line(tmp_path, model_dir):
    (model_dir / "config.pbtxt").write_text(PBTXT_GPU)
    repo = ModelRepository(tmp_path, Clock(), SyncThreads())
    repo.start()
    model = repo.model("m")
    assert model.state == "UNAVAILABLE" and not model.versions
    assert "\n" not in model.reason
    assert ("version 1 refused: model 'm': instance_group KIND_GPU needs onnxruntime-gpu's CUDAExecutionProvider; "
            f"available: {ort.get_available_providers()}") in model.reason
    out = []
    InferenceFacade(repo).infer(InferenceRequest("m", {"INPUT0": np.ones((1, 16), np.float32)})).addBoth(out.append)
    assert out[0].check(ModelNotReady) and "KIND_GPU needs onnxruntime-gpu" in out[0].getErrorMessage()


@pytest.mark.skipif(GPU_PRESENT, reason="checks the fallback on a machine without a GPU")
def test_kind_auto_falls_back_to_cpu_sessions_and_logs_one_line(model_dir):
    with capturedLogs() as events:
        backend = load(model_dir, "max_batch_size: 8\ninstance_group [ { kind: KIND_AUTO count: 3 } ]\n")
    assert backend.instance_count == 3 and backend.devices == (CPU,) * 3
    assert backend._session.get_providers() == ["CPUExecutionProvider"]
    notes = [e for e in events if "KIND_AUTO" in str(e.get("note", ""))]
    assert len(notes) == 1 and "3 CPU instance(s)" in notes[0]["note"]
    x = np.arange(16, dtype=np.float32).reshape(1, 16)
    np.testing.assert_array_equal(backend.run({"INPUT0": x}, ["OUTPUT0"])["OUTPUT0"], x)


def test_a_cpu_config_keeps_one_cpu_session(model_dir):
    backend = load(model_dir, "max_batch_size: 8\ninstance_count: 2\n", "config.yaml")
    assert backend.instance_count == 2 and backend._per_instance is None
    assert backend._session.get_providers() == ["CPUExecutionProvider"]


@pytest.mark.skipif(GPU_PRESENT, reason="checks the refusal on a machine without a GPU")
def test_kind_gpu_torch_without_cuda_names_the_missing_device(tmp_path):
    torch = pytest.importorskip("torch")
    version = tmp_path / "t" / "1"
    version.mkdir(parents=True)

    class Double(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 2

    torch.jit.script(Double()).save(str(version / "model.pt"))
    (tmp_path / "t" / "config.yaml").write_text(yaml.safe_dump({
        "backend": "pytorch", "max_batch_size": 4, "inputs": [{"name": "x", "datatype": "FP32", "dims": [3]}],
        "outputs": [{"name": "y", "datatype": "FP32", "dims": [3]}],
        "instance_group": [{"kind": "KIND_GPU", "gpus": [0]}]}))
    loaded = load_model_config(tmp_path / "t", version / "model.pt")
    with pytest.raises(ModelLoadError, match=r"^model 't': instance_group KIND_GPU needs a CUDA device: "
                                             r"torch\.cuda\.is_available\(\) is False \(torch .*\)$"):
        load_backend(loaded, version / "model.pt", BackendOptions())
    auto = loaded.model_copy(update={"instance_group": (loaded.instance_group[0].model_copy(
        update={"kind": "KIND_AUTO"}),)})
    backend = load_backend(auto, version / "model.pt", BackendOptions())
    assert backend.devices == (CPU,)
    np.testing.assert_array_equal(backend.run({"x": np.ones((1, 3), np.float32)}, ["y"])["y"], [[2, 2, 2]])


# --- on a GPU machine ---------------------------------------------------------------------------------------------

@pytest.mark.skipif(not GPU_PRESENT, reason="needs a GPU: CUDAExecutionProvider (onnxruntime-gpu, the `gpu` extra)")
def test_the_same_model_on_cpu_and_gpu_gives_allclose_outputs(model_dir):
    weights = np.random.default_rng(0).standard_normal((16, 16))
    build_matmul_relu(model_dir / "1" / "model.onnx", weights)
    cpu = load(model_dir, "max_batch_size: 8\ninstance_group [ { kind: KIND_CPU } ]\n")
    gpu = load(model_dir, "max_batch_size: 8\ninstance_group [ { kind: KIND_GPU gpus: [ 0 ] count: 2 } ]\n")
    assert gpu._session.get_providers()[0] == "CUDAExecutionProvider"
    x = np.random.default_rng(1).standard_normal((8, 16)).astype(np.float32)
    np.testing.assert_allclose(gpu.run({"INPUT0": x}, ["OUTPUT0"])["OUTPUT0"],
                               cpu.run({"INPUT0": x}, ["OUTPUT0"])["OUTPUT0"], rtol=1e-4, atol=1e-5)


# --- instance threads ---------------------------------------------------------------------------------------------

def test_each_instance_thread_keeps_one_instance_and_threads_spread_over_them():
    import threading

    from twinfer.backends.instances import PerInstance

    per_instance = PerInstance(["gpu:0", "gpu:0", "gpu:1", "gpu:1"])
    seen: dict[int, set[str]] = {}
    barrier = threading.Barrier(4)

    def work(i: int) -> None:
        barrier.wait()
        seen[i] = {per_instance.current() for _ in range(50)}

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert all(len(s) == 1 for s in seen.values())  # a thread never changes device
    assert sorted(next(iter(s)) for s in seen.values()) == ["gpu:0", "gpu:0", "gpu:1", "gpu:1"]


def test_the_version_runs_as_many_instance_threads_as_the_backend_placed():
    from twinfer.inference.model_version import FileSignature, ModelVersion

    class Placed:
        instance_count = 4  # e.g. KIND_GPU count 2 without `gpus` on a 2-GPU machine

        def run(self, inputs, outputs):
            return {"y": inputs["x"]}

        def close(self):
            pass

    sizes = {}

    class Recording(SyncThreads):
        def instance_pool(self, name, size):
            sizes[name] = size
            return super().instance_pool(name, size)

    cfg = config(instance_group=[{"kind": "KIND_GPU", "count": 2}])
    assert cfg.instance_count == 2
    version = ModelVersion(Clock(), Recording(), cfg, 1, Placed(), FileSignature(Path("x"), 0, 0))
    assert sizes == {"m-v1": 4} and version.batcher._instances == 4


def test_python_model_instances_are_told_their_kind_and_device(tmp_path, monkeypatch):
    """Triton's python backend passes each instance its model_instance_kind and device id; the model moves its own
    work there. Two visible GPUs (CUDA_VISIBLE_DEVICES), KIND_GPU count 1: one instance per GPU."""
    from tests.unit.test_python_backend import ECHO_CONFIG, write_python_model

    model = '''
    import json

    class TritonPythonModel:
        def initialize(self, args):
            self.where = (args["model_instance_kind"], args["model_instance_device_id"],
                          json.loads(args["model_config"])["instance_group"][0]["kind"])

        def execute(self, requests):
            return []
    '''
    write_python_model(tmp_path, "m", model, ECHO_CONFIG + "instance_group [{kind: KIND_GPU count: 1}]\n")
    model_dir = tmp_path / "m"
    loaded = load_model_config(model_dir, model_dir / "1" / "model.py")
    from twinfer.backends.python import PythonBackend

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    backend = PythonBackend(loaded, model_dir / "1" / "model.py", BackendOptions())
    assert backend.instance_count == 2
    assert [i.where for i in backend._instances] == [("GPU", "0", "KIND_GPU"), ("GPU", "1", "KIND_GPU")]
    backend.close()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(ModelLoadError, match=r"^model 'm': instance_group KIND_GPU needs a GPU this process sees"):
        PythonBackend(loaded, model_dir / "1" / "model.py", BackendOptions())
