from __future__ import annotations

import numpy as np
import pytest

from twinfer.errors import ModelLoadError
from twinfer.inference.model_config import ModelConfig, TensorConfig, ValidationConfig
from twinfer.inference.validation_gate import validate


class Shift:
    """A backend whose output is its input plus `delta` on the value at `index`."""

    def __init__(self, delta: float, index: int = 0) -> None:
        self.delta, self.index = delta, index

    def run(self, inputs, outputs):
        y = inputs["x"].copy()
        y[..., self.index] += self.delta
        return {"y": y}


def config(**gate) -> ModelConfig:
    return ModelConfig(name="m", max_batch_size=8, inputs=(TensorConfig(name="x", datatype="FP32", dims=(4,)),),
                       outputs=(TensorConfig(name="y", datatype="FP32", dims=(4,), labels=("a", "b", "c", "d")),),
                       validation=ValidationConfig(dataset="v.npz", **gate))


@pytest.fixture
def model_dir(tmp_path):
    x = np.random.default_rng(0).random((20, 4)).astype(np.float32)
    np.savez(tmp_path / "v.npz", x=x, y=x)
    return tmp_path


def test_mae_overall_and_per_value_with_labels(model_dir):
    report = validate(config(max_mae=0.1), Shift(0.2, index=2), model_dir)
    assert report.samples == 20 and report.mae["y"] == pytest.approx(0.05, abs=1e-6)
    assert report.worst_value["y"] == ("c", pytest.approx(0.2, abs=1e-6)) and report.passed
    strict = validate(config(max_mae=0.1, max_mae_per_value=0.1), Shift(0.2, index=2), model_dir)
    assert not strict.passed and "y[c] MAE 0.2000 > 0.1" in strict.failures[0]
    assert not validate(config(max_mae=0.01), Shift(0.2), model_dir).passed


def test_a_dataset_without_the_inputs_is_a_load_error(tmp_path):
    np.savez(tmp_path / "v.npz", other=np.zeros(3))
    with pytest.raises(ModelLoadError, match="lacks inputs"):
        validate(config(max_mae=0.1), Shift(0), tmp_path)
