"""Model configuration from the ONNX signature, Triton's config.pbtxt and twinfer's config.yaml."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from tests.support import build_matmul_relu
from twinfer.errors import ConfigError
from twinfer.inference.config_loading import DERIVED_MAX_BATCH_SIZE, load_model_config


@pytest.fixture
def tiny_dir(tmp_path):
    build_matmul_relu(tmp_path / "tiny" / "1" / "model.onnx", np.eye(16))
    return tmp_path / "tiny"


def onnx_file(d):
    return d / "1" / "model.onnx"


def test_derived_from_a_dynamic_first_dimension_means_batching(tiny_dir):
    config = load_model_config(tiny_dir, onnx_file(tiny_dir))
    assert config.name == "tiny" and config.backend == "onnxruntime"
    assert config.max_batch_size == DERIVED_MAX_BATCH_SIZE and config.dynamic_batching is not None
    assert [(t.name, t.datatype, t.dims) for t in config.inputs] == [("INPUT0", "FP32", (16,))]
    assert [(t.name, t.datatype, t.dims) for t in config.outputs] == [("OUTPUT0", "FP32", (16,))]


def test_a_fixed_first_dimension_is_not_batching(tmp_path):
    import onnx

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "fixed",
        [helper.make_tensor_value_info("x", TensorProto.INT64, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.INT64, [1, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    (tmp_path / "fixed" / "1").mkdir(parents=True)
    onnx.save(model, str(tmp_path / "fixed" / "1" / "model.onnx"))
    config = load_model_config(tmp_path / "fixed", tmp_path / "fixed" / "1" / "model.onnx")
    assert config.max_batch_size == 0 and config.dynamic_batching is None
    assert config.inputs[0].dims == (1, 3) and config.inputs[0].datatype == "INT64"


PBTXT = """
name: "tiny"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [ { name: "INPUT0", data_type: TYPE_FP32, dims: [ 16 ] } ]
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


def test_triton_pbtxt_is_read(tiny_dir):
    (tiny_dir / "config.pbtxt").write_text(PBTXT)
    (tiny_dir / "labels.txt").write_text("\n".join(f"l{i}" for i in range(16)) + "\n")
    config = load_model_config(tiny_dir, onnx_file(tiny_dir))
    assert config.max_batch_size == 8 and config.instance_count == 2
    policy = config.dynamic_batching
    assert (policy.max_queue_delay_us, policy.preferred_batch_sizes, policy.max_queue_size,
            policy.default_timeout_ms) == (200, (4, 8), 32, 5)
    assert config.version_policy.policy == "specific" and config.version_policy.versions == (1, 3)
    assert config.outputs[0].labels == tuple(f"l{i}" for i in range(16))
    assert config.parameters == {"intra_op_threads": "2"}


def test_pbtxt_without_dynamic_batching_means_none(tiny_dir):
    (tiny_dir / "config.pbtxt").write_text('name: "tiny"\nmax_batch_size: 4\n')
    config = load_model_config(tiny_dir, onnx_file(tiny_dir))
    assert config.max_batch_size == 4 and config.dynamic_batching is None


def test_yaml_adds_labels_by_name_and_wins_over_pbtxt(tiny_dir):
    (tiny_dir / "config.pbtxt").write_text('name: "tiny"\nmax_batch_size: 4\n')
    labels = [f"c{i}" for i in range(16)]
    (tiny_dir / "config.yaml").write_text(
        f"max_batch_size: 2\ninstance_count: 3\noutputs:\n  - name: OUTPUT0\n    labels: {labels}\n"
    )
    config = load_model_config(tiny_dir, onnx_file(tiny_dir))
    assert config.max_batch_size == 2 and config.instance_count == 3
    assert config.outputs[0].labels == tuple(labels) and config.outputs[0].dims == (16,)


@pytest.mark.parametrize(
    "text, words",
    [
        ("max_batch_sise: 4\n", "max_batch_sise: unknown key"),
        ("dynamic_batching: {max_queue_size: 0}\n", "dynamic_batching.max_queue_size"),
        ("outputs: [{name: OUTPUT0, labels: [a, b]}]\n", "2 labels"),
        ("inputs: [{name: INPUT0, datatype: FLOAT}]\n", "unknown datatype"),
        ("name: other\n", "differs from the directory name"),
        ("max_batch_size: [\n", "not valid YAML"),
    ],
)
def test_bad_yaml_names_the_file_and_the_key(tiny_dir, text, words):
    (tiny_dir / "config.yaml").write_text(text)
    with pytest.raises(ConfigError) as info:
        load_model_config(tiny_dir, onnx_file(tiny_dir))
    message = str(info.value)
    assert words in message and "\n" not in message


def test_bad_pbtxt_names_the_file(tiny_dir):
    (tiny_dir / "config.pbtxt").write_text("max_batch_size: 'x'\n")
    with pytest.raises(ConfigError, match="config.pbtxt"):
        load_model_config(tiny_dir, onnx_file(tiny_dir))


def test_no_model_file_and_no_config_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no model file"):
        load_model_config(tmp_path / "empty", None)


def test_dynamic_batching_false_disables_it(tiny_dir):
    (tiny_dir / "config.yaml").write_text("dynamic_batching: false\n")
    assert load_model_config(tiny_dir, onnx_file(tiny_dir)).dynamic_batching is None
