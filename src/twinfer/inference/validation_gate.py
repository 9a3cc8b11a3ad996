"""The validation gate: a version whose outputs on the model's validation set are off by more than the config
allows never takes traffic. Runs where the version is loaded (a worker thread), after warm-up; `twinfer validate`
runs the same check offline."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from twinfer.backends import Backend
from twinfer.errors import ConfigError, ModelLoadError
from twinfer.inference.model_config import ModelConfig
from twinfer.inference.paths import inside_model_dir


@dataclass
class ValidationReport:
    samples: int
    mae: dict[str, float] = field(default_factory=dict)  # output -> mean absolute error
    worst_value: dict[str, tuple[str, float]] = field(default_factory=dict)  # output -> (label or index, its MAE)
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        parts = [f"{name} MAE {value:.4f}" for name, value in self.mae.items()]
        parts += [f"{name} worst {label} {value:.4f}" for name, (label, value) in self.worst_value.items()]
        verdict = "passed" if self.passed else "FAILED: " + "; ".join(self.failures)
        return f"validation on {self.samples} samples: {', '.join(parts)}: {verdict}"


def validate(config: ModelConfig, backend: Backend, model_dir: Path) -> ValidationReport:
    gate = config.validation
    if gate is None:
        raise ValueError(f"model {config.name!r} has no validation set in its config")
    try:
        path = inside_model_dir(model_dir, gate.dataset, "validation.dataset", model_dir / "config.yaml")
    except ConfigError as exc:
        raise ModelLoadError(str(exc)) from None
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"model {config.name!r}: cannot read validation set {path}: {exc}") from exc
    inputs = {t.name: data[t.name] for t in config.inputs if t.name in data}
    if len(inputs) != len(config.inputs):
        raise ModelLoadError(f"model {config.name!r}: validation set {path} lacks inputs "
                             f"{sorted(t.name for t in config.inputs if t.name not in data)}")
    checked = list(gate.outputs) or [t.name for t in config.outputs if t.name in data]
    if not checked:
        raise ModelLoadError(f"model {config.name!r}: validation set {path} holds no expected output")
    samples = len(next(iter(inputs.values()))) if inputs else 1  # a model without inputs: one sample
    got: dict[str, list[np.ndarray]] = {name: [] for name in checked}
    step = gate.batch_size if config.batching else 1
    for start in range(0, samples, step):
        batch = {name: array[start : start + step] for name, array in inputs.items()}
        if not config.batching:
            batch = {name: array[0] for name, array in batch.items()}
        outputs = backend.run(batch, checked)
        for name in checked:
            got[name].append(outputs[name] if config.batching else outputs[name][None])
    report = ValidationReport(samples)
    for name in checked:
        predicted = np.concatenate(got[name]).astype(np.float64)
        expected = data[name].astype(np.float64)
        if predicted.shape != expected.shape:
            raise ModelLoadError(f"model {config.name!r}: output {name!r} shape {predicted.shape}, validation set "
                                 f"has {expected.shape}")
        errors = np.abs(predicted - expected)
        report.mae[name] = float(errors.mean())
        if report.mae[name] > gate.max_mae:
            report.failures.append(f"{name} MAE {report.mae[name]:.4f} > {gate.max_mae}")
        if errors.ndim >= 2:
            per_value = errors.reshape(-1, errors.shape[-1]).mean(axis=0)
            worst = int(per_value.argmax())
            spec = config.output(name)
            label = spec.labels[worst] if spec is not None and spec.labels else str(worst)
            report.worst_value[name] = (label, float(per_value[worst]))
            if gate.max_mae_per_value is not None and per_value[worst] > gate.max_mae_per_value:
                report.failures.append(f"{name}[{label}] MAE {per_value[worst]:.4f} > {gate.max_mae_per_value}")
    return report
