"""Model configuration from the ONNX signature, Triton's config.pbtxt and twinfer's config.yaml."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from twinfer.errors import ConfigError
from twinfer.inference.config_loading import (
    DERIVED_MAX_BATCH_SIZE,
    derive_from_onnx,
    find_model_file,
    load_model_config,
)
from twinfer.inference.model_config import DynamicBatchingConfig


def save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def build_tiny(path: Path, weights_as_input: bool = False) -> Path:
    """INPUT0 fp32 [batch, 16] -> OUTPUT0 = Relu(MatMul(INPUT0, W)). Old exporters also list W as a graph input."""
    inputs = [helper.make_tensor_value_info("INPUT0", TensorProto.FLOAT, ["batch", 16])]
    if weights_as_input:
        inputs.append(helper.make_tensor_value_info("W", TensorProto.FLOAT, [16, 16]))
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["INPUT0", "W"], ["mm"]), helper.make_node("Relu", ["mm"], ["OUTPUT0"])],
        "tiny",
        inputs,
        [helper.make_tensor_value_info("OUTPUT0", TensorProto.FLOAT, ["batch", 16])],
        initializer=[numpy_helper.from_array(np.eye(16, dtype=np.float32), name="W")],
    )
    return save(graph, path)


def build_fixed(path: Path) -> Path:
    """x int64 [1, 3] -> y: a fixed leading 1 is a shape, not a batch dimension."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "fixed",
        [helper.make_tensor_value_info("x", TensorProto.INT64, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.INT64, [1, 3])],
    )
    return save(graph, path)


@pytest.fixture
def tiny_dir(tmp_path: Path) -> Path:
    build_tiny(tmp_path / "tiny" / "1" / "model.onnx")
    return tmp_path / "tiny"


def onnx_file(d: Path) -> Path:
    return d / "1" / "model.onnx"


# --- derivation from the ONNX signature -------------------------------------------------------------------------

def test_find_model_file(tiny_dir: Path, tmp_path: Path) -> None:
    assert find_model_file(tiny_dir / "1") == onnx_file(tiny_dir)
    (tmp_path / "empty").mkdir()
    assert find_model_file(tmp_path / "empty") is None


@pytest.mark.parametrize("weights_as_input", [False, True])
def test_a_dynamic_first_dimension_everywhere_means_batching(tmp_path: Path, weights_as_input: bool) -> None:
    config = derive_from_onnx("tiny", build_tiny(tmp_path / "m.onnx", weights_as_input))
    assert config.name == "tiny" and config.backend == "onnxruntime"
    assert config.max_batch_size == DERIVED_MAX_BATCH_SIZE == 64
    assert config.dynamic_batching == DynamicBatchingConfig()
    assert [(t.name, t.datatype, t.dims) for t in config.inputs] == [("INPUT0", "FP32", (16,))]
    assert [(t.name, t.datatype, t.dims) for t in config.outputs] == [("OUTPUT0", "FP32", (16,))]


def test_a_fixed_first_dimension_of_one_is_not_batching(tmp_path: Path) -> None:
    config = derive_from_onnx("fixed", build_fixed(tmp_path / "m.onnx"))
    assert config.max_batch_size == 0 and config.dynamic_batching is None
    assert config.inputs[0].dims == (1, 3) and config.inputs[0].datatype == "INT64"
    assert config.outputs[0].dims == (1, 3)


def test_one_fixed_tensor_turns_batching_off_and_unknown_dims_become_minus_one(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["a"], ["b"]), helper.make_node("Identity", ["c"], ["d"])], "mixed",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT16, ["n", None]),
         helper.make_tensor_value_info("c", TensorProto.BOOL, [2, "k"])],
        [helper.make_tensor_value_info("b", TensorProto.FLOAT16, ["n", None]),
         helper.make_tensor_value_info("d", TensorProto.BOOL, [2, "k"])],
    )
    config = derive_from_onnx("mixed", save(graph, tmp_path / "m.onnx"))
    assert config.max_batch_size == 0 and config.dynamic_batching is None
    assert [(t.name, t.datatype, t.dims) for t in config.inputs] == [("a", "FP16", (-1, -1)), ("c", "BOOL", (2, -1))]


def test_an_unreadable_model_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "m.onnx").write_bytes(b"not a protobuf at all \xff\xff")
    with pytest.raises(ConfigError, match="m.onnx"):
        derive_from_onnx("m", tmp_path / "m.onnx")


# --- Triton's config.pbtxt --------------------------------------------------------------------------------------

PBTXT = """
name: "tiny"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [ { name: "INPUT0", data_type: TYPE_FP32, dims: [ 16 ], reshape: { shape: [ 4, 4 ] } } ]
output [ { name: "OUTPUT0", data_type: TYPE_FP32, dims: [ 16 ], label_filename: "labels.txt" } ]
dynamic_batching {
  max_queue_delay_microseconds: 200
  preferred_batch_size: [ 4, 8 ]
  default_queue_policy { max_queue_size: 32, default_timeout_microseconds: 5000 }
}
instance_group [ { kind: KIND_CPU, count: 2 } ]
version_policy: { specific: { versions: [ 1, 3 ] } }
parameters: { key: "intra_op_threads", value: { string_value: "2" } }
"""


def test_triton_pbtxt_is_read(tiny_dir: Path) -> None:
    (tiny_dir / "config.pbtxt").write_text(PBTXT)
    (tiny_dir / "labels.txt").write_text("\n".join(f"l{i}" for i in range(16)) + "\n")
    config = load_model_config(tiny_dir, onnx_file(tiny_dir))
    assert config.backend == "onnxruntime" and config.max_batch_size == 8 and config.instance_count == 2
    policy = config.dynamic_batching
    assert policy is not None
    assert (policy.max_queue_delay_us, policy.preferred_batch_sizes, policy.max_queue_size,
            policy.default_timeout_ms) == (200, (4, 8), 32, 5)
    assert config.version_policy.policy == "specific" and config.version_policy.versions == (1, 3)
    assert config.inputs[0].dims == (16,)  # reshape ignored
    assert config.outputs[0].labels == tuple(f"l{i}" for i in range(16))
    assert config.parameters == {"intra_op_threads": "2"}


def test_pbtxt_alone_is_enough_without_a_model_file(tiny_dir: Path) -> None:
    (tiny_dir / "config.pbtxt").write_text(PBTXT.replace("[ 1, 3 ]", "[ 1 ]"))
    config = load_model_config(tiny_dir, None)
    assert config.outputs[0].labels is None  # labels.txt does not exist: ignored
    assert config.version_policy.versions == (1,)


def test_pbtxt_triton_defaults(tiny_dir: Path) -> None:
    (tiny_dir / "config.pbtxt").write_text(
        'name: "tiny"\nmax_batch_size: 4\ninstance_group [ { count: 1 }, { count: 0 } ]\n'
        "version_policy: { latest: { num_versions: 2 } }\n"
    )
    config = load_model_config(tiny_dir, onnx_file(tiny_dir))
    assert config.max_batch_size == 4 and config.dynamic_batching is None  # no dynamic_batching block
    assert config.instance_count == 2  # count 0 is Triton's default of 1
    assert (config.version_policy.policy, config.version_policy.latest_n) == ("latest", 2)
    assert config.inputs[0].dims == (16,) and config.inputs[0].datatype == "FP32"


def test_pbtxt_unbounded_queue_keeps_our_default_and_timeouts_round_up(tiny_dir: Path) -> None:
    (tiny_dir / "config.pbtxt").write_text(
        "max_batch_size: 4\ndynamic_batching { default_queue_policy { max_queue_size: 0, "
        "default_timeout_microseconds: 500 } }\n"
    )
    policy = load_model_config(tiny_dir, onnx_file(tiny_dir)).dynamic_batching
    assert policy is not None and policy.max_queue_size == 1024 and policy.default_timeout_ms == 1


def test_pbtxt_without_max_batch_size_gives_back_the_batch_dimension(tiny_dir: Path) -> None:
    (tiny_dir / "config.pbtxt").write_text('name: "tiny"\n')
    config = load_model_config(tiny_dir, onnx_file(tiny_dir))
    assert config.max_batch_size == 0 and config.inputs[0].dims == (-1, 16)


def test_bad_pbtxt_names_the_file(tiny_dir: Path) -> None:
    (tiny_dir / "config.pbtxt").write_text("max_batch_size: 'x'\n")
    with pytest.raises(ConfigError, match="config.pbtxt"):
        load_model_config(tiny_dir, onnx_file(tiny_dir))


# --- twinfer's config.yaml --------------------------------------------------------------------------------------

def test_yaml_adds_labels_to_derived_outputs_by_name(tiny_dir: Path) -> None:
    labels = [f"c{i}" for i in range(16)]
    (tiny_dir / "config.yaml").write_text(f"outputs:\n  - name: OUTPUT0\n    labels: {labels}\n")
    config = load_model_config(tiny_dir, onnx_file(tiny_dir))
    out = config.outputs[0]
    assert (out.labels, out.dims, out.datatype) == (tuple(labels), (16,), "FP32")
    assert config.max_batch_size == DERIVED_MAX_BATCH_SIZE


def test_yaml_wins_over_pbtxt(tiny_dir: Path) -> None:
    (tiny_dir / "config.pbtxt").write_text(PBTXT)
    (tiny_dir / "config.yaml").write_text(
        "max_batch_size: 2\ninstance_count: 3\ndynamic_batching: {max_queue_delay_us: 50}\n"
        "version_policy: {policy: all}\nparameters: {intra_op_threads: '4'}\n"
    )
    config = load_model_config(tiny_dir, onnx_file(tiny_dir))
    assert config.max_batch_size == 2 and config.instance_count == 3
    assert config.dynamic_batching is not None
    assert config.dynamic_batching.max_queue_delay_us == 50 and config.dynamic_batching.max_queue_size == 32
    assert config.version_policy.policy == "all" and config.parameters == {"intra_op_threads": "4"}


def test_yaml_may_override_dims_and_datatype(tiny_dir: Path) -> None:
    (tiny_dir / "config.yaml").write_text("inputs: [{name: INPUT0, datatype: fp16, dims: [-1]}]\n")
    config = load_model_config(tiny_dir, onnx_file(tiny_dir))
    assert (config.inputs[0].datatype, config.inputs[0].dims) == ("FP16", (-1,))


@pytest.mark.parametrize("value, expected", [("false", None), ("true", DynamicBatchingConfig())])
def test_yaml_dynamic_batching_switch(tiny_dir: Path, value: str, expected: object) -> None:
    (tiny_dir / "config.yaml").write_text(f"dynamic_batching: {value}\n")
    assert load_model_config(tiny_dir, onnx_file(tiny_dir)).dynamic_batching == expected


@pytest.mark.parametrize(
    "text, words",
    [
        ("max_batch_sise: 4\n", "config.yaml: max_batch_sise: unknown key"),
        ("dynamic_batching: {max_queue_size: 0}\n",
         "config.yaml: dynamic_batching.max_queue_size: Input should be greater than or equal to 1"),
        ("dynamic_batching: {max_queue_sise: 3}\n", "dynamic_batching.max_queue_sise: unknown key"),
        ("outputs: [{name: OUTPUT0, lables: [a]}]\n", "outputs.OUTPUT0.lables: unknown key"),
        ("outputs: [{name: OUTPUT0, labels: [a, b]}]\n",
         "config.yaml: outputs.OUTPUT0: OUTPUT0: 2 labels for a last dimension of size 16"),
        ("outputs: [{name: OUTPUT1, labels: [a]}]\n", "outputs.OUTPUT1: no such output in model.onnx"),
        ("inputs: [{name: INPUT0, datatype: FLOAT}]\n", "inputs.INPUT0.datatype: unknown datatype"),
        ("inputs: [{datatype: FP32}]\n", "inputs.0: every tensor needs a name"),
        ("instance_count: lots\n", "instance_count: Input should be a valid integer"),
        ("version_policy: {policy: newest}\n", "version_policy.policy"),
        ("name: other\n", "name: 'other' differs from the directory name"),
        ("max_batch_size: [\n", "config.yaml: not valid YAML"),
        ("- just\n- a list\n", "config.yaml: expected a mapping"),
    ],
)
def test_bad_yaml_names_the_file_and_the_key(tiny_dir: Path, text: str, words: str) -> None:
    (tiny_dir / "config.yaml").write_text(text)
    with pytest.raises(ConfigError) as info:
        load_model_config(tiny_dir, onnx_file(tiny_dir))
    message = str(info.value)
    assert words in message and "\n" not in message


def test_an_error_names_the_file_that_set_the_value(tiny_dir: Path) -> None:
    (tiny_dir / "config.pbtxt").write_text("max_batch_size: 4\ninstance_group [ { count: 100 } ]\n")
    (tiny_dir / "config.yaml").write_text("warmup: false\n")
    with pytest.raises(ConfigError, match=r"config\.pbtxt: instance_count: Input should be less than"):
        load_model_config(tiny_dir, onnx_file(tiny_dir))


def test_batching_a_model_with_a_fixed_first_dimension_is_refused(tmp_path: Path) -> None:
    model = build_fixed(tmp_path / "fixed" / "1" / "model.onnx")
    (tmp_path / "fixed" / "config.yaml").write_text("max_batch_size: 8\n")
    with pytest.raises(ConfigError, match=r"config\.yaml: max_batch_size: 8 needs a dynamic first dimension"):
        load_model_config(tmp_path / "fixed", model)
    (tmp_path / "fixed" / "config.yaml").write_text(
        "max_batch_size: 8\ninputs: [{name: x, dims: [3]}]\noutputs: [{name: y, dims: [3]}]\n"
    )
    assert load_model_config(tmp_path / "fixed", model).inputs[0].dims == (3,)


def test_yaml_alone_gives_a_complete_config(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.yaml").write_text(
        "inputs: [{name: a, datatype: BYTES, dims: [1]}]\noutputs: [{name: b, datatype: FP32, dims: [2]}]\n"
    )
    config = load_model_config(tmp_path / "m", None)
    assert config.name == "m" and config.inputs[0].datatype == "BYTES" and config.max_batch_size == 0


def test_no_model_file_and_no_config_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no model file"):
        load_model_config(tmp_path / "empty", None)
    (tmp_path / "empty" / "config.yaml").write_text("instance_count: 2\n")
    with pytest.raises(ConfigError, match="config.yaml: no model file and no config giving inputs"):
        load_model_config(tmp_path / "empty", None)


def test_a_pbtxt_name_that_differs_is_an_error(tiny_dir: Path) -> None:
    (tiny_dir / "config.pbtxt").write_text('name: "small"\n')
    with pytest.raises(ConfigError, match=r"config\.pbtxt: name: 'small' differs"):
        load_model_config(tiny_dir, onnx_file(tiny_dir))


@pytest.mark.parametrize("label_file", ["../../outside/secret.txt", "/etc/passwd", "link.txt"])
def test_label_filename_outside_the_model_directory_is_refused(tiny_dir: Path, label_file: str) -> None:
    """#14 finding 15: `label_filename: "../../outside/secret.txt"` was read and served through model metadata."""
    outside = tiny_dir.parent.parent / "outside"
    outside.mkdir(exist_ok=True)
    (outside / "secret.txt").write_text("\n".join(f"secret{i}" for i in range(16)))
    (tiny_dir / "link.txt").symlink_to(outside / "secret.txt")  # a symlink inside that points out
    (tiny_dir / "config.pbtxt").write_text(PBTXT.replace('"labels.txt"', f'"{label_file}"'))
    with pytest.raises(ConfigError, match="label_filename") as caught:
        load_model_config(tiny_dir, onnx_file(tiny_dir))
    assert "secret" not in str(caught.value).replace("secret.txt", "")


def test_validation_dataset_outside_the_model_directory_is_refused(tmp_path: Path) -> None:
    from twinfer.inference.paths import inside_model_dir

    (tmp_path / "m").mkdir()
    assert inside_model_dir(tmp_path / "m", "sub/v.npz", "validation.dataset", "c") == (tmp_path / "m/sub/v.npz")
    with pytest.raises(ConfigError, match="outside the model directory"):
        inside_model_dir(tmp_path / "m", "../v.npz", "validation.dataset", "c")
