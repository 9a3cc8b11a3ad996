"""`pb_utils.ModelConfig`: what `TritonPythonModel.auto_complete_config` receives, completes and returns."""

from __future__ import annotations

import json
from typing import Any


class ModelConfig:
    """What `TritonPythonModel.auto_complete_config(auto_complete_model_config)` receives and returns: the
    model's configuration as Triton's JSON, which the model may complete (batch size, dynamic batching, inputs,
    outputs) when config.pbtxt leaves them out. Additions must agree with what the configuration already says."""

    def __init__(self, model_config: str | dict[str, Any]) -> None:
        self._model_config = json.loads(model_config) if isinstance(model_config, str) else model_config
        self._model_config.setdefault("input", [])
        self._model_config.setdefault("output", [])
        self._model_config.setdefault("max_batch_size", 0)

    def as_dict(self) -> dict[str, Any]:
        return self._model_config

    def set_max_batch_size(self, max_batch_size: int) -> None:
        current = self._model_config["max_batch_size"]
        if current > max_batch_size:
            raise ValueError(f"configuration specified max_batch_size {current}, but auto_complete_config of "
                             f"model {self._model_config.get('name')!r} specified max_batch_size {max_batch_size}")
        self._model_config["max_batch_size"] = max_batch_size

    def set_dynamic_batching(self) -> None:
        for scheduler in ("sequence_batching", "ensemble_scheduling"):
            if scheduler in self._model_config:
                raise ValueError(f"configuration specified {scheduler}, but auto_complete_config of model "
                                 f"{self._model_config.get('name')!r} sets dynamic_batching")
        self._model_config.setdefault("dynamic_batching", {})

    def set_model_transaction_policy(self, transaction_policy: dict[str, Any]) -> None:
        self._model_config["model_transaction_policy"] = dict(transaction_policy)

    def add_input(self, input: dict[str, Any]) -> None:  # noqa: A002 - Triton's parameter name
        self._add("input", input, ("name", "data_type", "dims", "optional"))

    def add_output(self, output: dict[str, Any]) -> None:
        self._add("output", output, ("name", "data_type", "dims"))

    def _add(self, kind: str, tensor: dict[str, Any], allowed: tuple[str, ...]) -> None:
        model = self._model_config.get("name")
        extra = set(tensor) - set(allowed)
        if extra:
            raise ValueError(f"{kind} {tensor.get('name')!r} of model {model!r}: unknown properties {sorted(extra)}")
        for key in ("name", "data_type", "dims"):
            if key not in tensor:
                raise ValueError(f"{kind} {tensor.get('name')!r} of model {model!r} is missing {key!r}")
        for current in self._model_config[kind]:
            if current["name"] != tensor["name"]:
                continue
            if current.get("data_type", "TYPE_INVALID") not in ("TYPE_INVALID", tensor["data_type"]):
                raise ValueError(f"model {model!r}: configuration expects datatype {current['data_type']} for "
                                 f"{kind} {tensor['name']!r}, the model provides {tensor['data_type']}")
            if current.get("dims") and list(current["dims"]) != list(tensor["dims"]):
                raise ValueError(f"model {model!r}, tensor {tensor['name']!r}: the model expects dims "
                                 f"{list(tensor['dims'])} but the configuration specifies {list(current['dims'])}")
            current.update(tensor)
            return
        self._model_config[kind].append(dict(tensor))

