"""The configuration of one served model, whatever file it came from (config.yaml, config.pbtxt or the model file).

Shapes follow Triton's convention: `dims` never include the batch dimension; when `max_batch_size > 0` every
request tensor carries one extra leading batch dimension of size 1..max_batch_size.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from twinfer.inference.datatypes import DATATYPES


def _field(group: Any, key: str, default: Any) -> Any:
    return group.get(key, default) if isinstance(group, dict) else getattr(group, key, default)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorConfig(_Strict):
    """One input or output: name, KServe datatype, dims (-1 = any size), optional labels for the last axis."""

    name: str
    datatype: str
    dims: tuple[int, ...]
    labels: tuple[str, ...] | None = None
    optional: bool = False  # an input a request may leave out (Triton's `optional: true`)

    @field_validator("datatype")
    @classmethod
    def _known_datatype(cls, value: str) -> str:
        value = value.upper()
        if value not in DATATYPES:
            raise ValueError(f"unknown datatype {value!r}; expected one of {', '.join(DATATYPES)}")
        return value

    @field_validator("dims")
    @classmethod
    def _valid_dims(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(d < -1 or d == 0 for d in value):
            raise ValueError(f"dims {list(value)} must be positive sizes or -1 (any size)")
        return value

    @model_validator(mode="after")
    def _labels_fit(self) -> TensorConfig:
        if self.labels is not None and self.dims and self.dims[-1] not in (-1, len(self.labels)):
            raise ValueError(
                f"{self.name}: {len(self.labels)} labels for a last dimension of size {self.dims[-1]}"
            )
        return self


class DynamicBatchingConfig(_Strict):
    """How requests queue and merge into batches. Delay 0 = run as soon as an instance is free."""

    max_queue_delay_us: int = Field(default=0, ge=0)
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_size: int = Field(default=1024, ge=1)
    default_timeout_ms: int = Field(default=0, ge=0)  # 0 = no timeout


class TransactionPolicy(_Strict):
    """Triton's `model_transaction_policy`: `decoupled` models send any number of responses per request (python
    models only), so only streaming calls (gRPC ModelStreamInfer) can reach them."""

    decoupled: bool = False


class VersionPolicy(_Strict):
    """Which versions on disk are served: the newest N, all, or a fixed list."""

    policy: Literal["latest", "all", "specific"] = "latest"
    latest_n: int = Field(default=1, ge=1)
    versions: tuple[int, ...] = ()

    def select(self, available: list[int]) -> list[int]:
        """The versions to serve out of those present on disk, newest first."""
        ordered = sorted(available, reverse=True)
        if self.policy == "all":
            return ordered
        if self.policy == "specific":
            return [v for v in ordered if v in self.versions]
        return ordered[: self.latest_n]


class ValidationConfig(_Strict):
    """The gate a new version must pass before it takes traffic: a dataset of inputs and expected outputs (an
    `.npz` file, relative to the model directory, holding one array per input and per checked output name) and
    the largest mean absolute error allowed, overall and per value of the last axis (e.g. per blendshape)."""

    dataset: str
    max_mae: float = Field(gt=0)
    max_mae_per_value: float | None = Field(default=None, gt=0)
    outputs: tuple[str, ...] = ()  # empty = every output present in the dataset
    batch_size: int = Field(default=32, ge=1)


class EnsembleStep(_Strict):
    """One step of an ensemble (Triton's `ensemble_scheduling.step`): the model it runs and how its tensors map to
    the ensemble's. `input_map` is step input -> ensemble tensor, `output_map` is step output -> ensemble tensor
    (Triton's direction for both); -1 = the newest ready version at call time."""

    model_name: str
    model_version: int = -1
    input_map: dict[str, str] = {}
    output_map: dict[str, str] = {}


class EnsembleScheduling(_Strict):
    step: tuple[EnsembleStep, ...] = Field(min_length=1)


class InstanceGroup(_Strict):
    """Where a model's instances run (Triton's `instance_group`): `count` instances of the kind, on each GPU of
    `gpus` (all visible GPUs when empty) for KIND_GPU, so `count: 2, gpus: [0, 1]` is four instances. KIND_AUTO is
    GPU when one is present, else CPU (twinfer.inference.placement decides, at load time)."""

    kind: Literal["KIND_AUTO", "KIND_CPU", "KIND_GPU"] = "KIND_AUTO"  # Triton's default too
    count: int = Field(default=1, ge=1)  # the total is bounded: ModelConfig.instance_count
    gpus: tuple[int, ...] = ()

    @field_validator("gpus")
    @classmethod
    def _valid_gpus(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(g < 0 for g in value) or len(set(value)) != len(value):
            raise ValueError(f"gpus {list(value)} must be distinct device numbers >= 0")
        return value

    @model_validator(mode="after")
    def _gpus_need_gpu_kind(self) -> InstanceGroup:
        if self.gpus and self.kind == "KIND_CPU":
            raise ValueError("gpus are given for a KIND_CPU group")
        return self


class Accelerator(_Strict):
    """One of Triton's `optimization.execution_accelerators.gpu_execution_accelerator` entries (`tensorrt`)."""

    name: Literal["tensorrt"]
    parameters: dict[str, str] = {}


class ExecutionAccelerators(_Strict):
    gpu_execution_accelerator: tuple[Accelerator, ...] = ()


class Optimization(_Strict):
    """Triton's `optimization`, the part twinfer uses: GPU execution accelerators (ONNX models on a GPU)."""

    execution_accelerators: ExecutionAccelerators = ExecutionAccelerators()


class ModelConfig(_Strict):
    """Everything the server needs to serve one model.

    `instance_count` alone means that many CPU instances (as before `instance_group`); with `instance_group` given,
    the groups decide and `instance_count` is their total (GPU groups without `gpus` count one GPU here; the
    placement expands them to every visible GPU)."""

    name: str
    backend: str = "onnxruntime"
    max_batch_size: int = Field(default=0, ge=0)
    inputs: tuple[TensorConfig, ...]
    outputs: tuple[TensorConfig, ...]
    dynamic_batching: DynamicBatchingConfig | None = DynamicBatchingConfig()
    instance_count: int = Field(default=1, ge=1, le=64)
    instance_group: tuple[InstanceGroup, ...] = ()
    optimization: Optimization = Optimization()
    version_policy: VersionPolicy = VersionPolicy()
    warmup: bool = True
    validation: ValidationConfig | None = None
    parameters: dict[str, str] = {}
    ensemble_scheduling: EnsembleScheduling | None = None  # only with backend `ensemble`
    model_transaction_policy: TransactionPolicy = TransactionPolicy()

    @model_validator(mode="before")
    @classmethod
    def _count_from_groups(cls, data: Any) -> Any:
        """`instance_group` wins over `instance_count`: the total of its groups."""
        groups = data.get("instance_group") if isinstance(data, dict) else None
        if isinstance(groups, list | tuple) and groups:
            try:
                total = sum(int(_field(g, "count", 1)) * max(1, len(_field(g, "gpus", ()) or ())) for g in groups)
            except (TypeError, ValueError):
                return data  # the field validators report what is wrong
            data = {**data, "instance_count": total}
        return data

    @model_validator(mode="after")
    def _unique_names(self) -> ModelConfig:
        for kind, tensors in (("input", self.inputs), ("output", self.outputs)):
            names = [t.name for t in tensors]
            if len(names) != len(set(names)):
                raise ValueError(f"duplicate {kind} names in {names}")
        if not self.outputs:  # no inputs is fine (Triton allows it: a generator, a test runner, a clock)
            raise ValueError("a model needs at least one output")
        if self.model_transaction_policy.decoupled and self.backend != "python":
            raise ValueError(f"model_transaction_policy.decoupled needs backend `python` (this model's is "
                             f"{self.backend!r})")
        if (self.backend.lower() == "ensemble") != (self.ensemble_scheduling is not None):
            raise ValueError("an ensemble (platform/backend `ensemble`) needs ensemble_scheduling, and "
                             "ensemble_scheduling needs platform `ensemble`")
        return self

    @property
    def batching(self) -> bool:
        return self.max_batch_size > 0

    @property
    def decoupled(self) -> bool:
        return self.model_transaction_policy.decoupled

    # Plain loops, not next(genexpr): called per request input, where the generator cost 4 % of the game protocol's
    # reactor time (py-spy, pipelined tiny model).
    def input(self, name: str) -> TensorConfig | None:
        for tensor in self.inputs:
            if tensor.name == name:
                return tensor
        return None

    def output(self, name: str) -> TensorConfig | None:
        for tensor in self.outputs:
            if tensor.name == name:
                return tensor
        return None

    def full_shape(self, tensor: TensorConfig) -> list[int]:
        """The shape a client sees in metadata: with a leading -1 batch dimension when batching."""
        return ([-1] if self.batching else []) + list(tensor.dims)
