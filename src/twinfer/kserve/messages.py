"""Server and model metadata, Triton model configuration, statistics and the repository index, as the public
KServe / Triton protobuf messages (gRPC sends them; HTTP renders them with json_proto)."""

from __future__ import annotations

import json

from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.grpc import service_pb2 as pb

from twinfer import __version__
from twinfer.inference.model_config import ModelConfig, TensorConfig
from twinfer.inference.model_version import ModelVersion
from twinfer.inference.platforms import output_labels, platform_of
from twinfer.inference.repository import ServedModel
from twinfer.inference.statistics import ModelStatistics

SERVER_NAME = "twinfer"
EXTENSIONS = ("model_configuration", "statistics", "model_repository", "binary_tensor_data", "metrics")
LABELS_PARAMETER = "labels"  # an output's value names: a JSON list in the model config's parameters ("labels.<out>")


def server_metadata() -> pb.ServerMetadataResponse:
    return pb.ServerMetadataResponse(name=SERVER_NAME, version=__version__, extensions=EXTENSIONS)


def model_metadata(model: ServedModel, version: ModelVersion) -> pb.ModelMetadataResponse:
    config = version.config

    def tensor(t: TensorConfig) -> pb.ModelMetadataResponse.TensorMetadata:
        return pb.ModelMetadataResponse.TensorMetadata(name=t.name, datatype=t.datatype, shape=config.full_shape(t))

    return pb.ModelMetadataResponse(
        name=config.name,
        versions=[str(v) for v in sorted(model.versions)],
        platform=platform_of(config),
        inputs=[tensor(t) for t in config.inputs],
        outputs=[tensor(t) for t in config.outputs],
    )


def triton_config(config: ModelConfig) -> mc.ModelConfig:
    """twinfer's ModelConfig in Triton's schema (what `GET /v2/models/{m}/config` and perf_analyzer read)."""

    def tensor(cls: type, t: TensorConfig):
        dtype = "TYPE_STRING" if t.datatype == "BYTES" else f"TYPE_{t.datatype}"
        return cls(name=t.name, data_type=mc.DataType.Value(dtype), dims=list(t.dims))

    out = mc.ModelConfig(
        name=config.name,
        platform=platform_of(config),
        backend=config.backend,
        max_batch_size=config.max_batch_size,
        input=[_optional(tensor(mc.ModelInput, t), t) for t in config.inputs],
        output=[tensor(mc.ModelOutput, t) for t in config.outputs],
        instance_group=[mc.ModelInstanceGroup(name=f"{config.name}_{i}", kind=mc.ModelInstanceGroup.Kind.Value(g.kind),
                                              count=g.count, gpus=list(g.gpus))
                        for i, g in enumerate(config.instance_group)]
        or [mc.ModelInstanceGroup(name=config.name, kind=mc.ModelInstanceGroup.KIND_CPU,
                                  count=config.instance_count)],
    )
    if config.decoupled:
        out.model_transaction_policy.decoupled = True
    policy = config.version_policy
    if policy.policy == "all":
        out.version_policy.all.SetInParent()
    elif policy.policy == "specific":
        out.version_policy.specific.versions.extend(policy.versions)
    else:
        out.version_policy.latest.num_versions = policy.latest_n
    if config.dynamic_batching is not None and config.batching:
        db = config.dynamic_batching
        out.dynamic_batching.max_queue_delay_microseconds = db.max_queue_delay_us
        out.dynamic_batching.preferred_batch_size.extend(db.preferred_batch_sizes)
        out.dynamic_batching.default_queue_policy.max_queue_size = db.max_queue_size
        out.dynamic_batching.default_queue_policy.default_timeout_microseconds = db.default_timeout_ms * 1000
    for key, value in config.parameters.items():
        out.parameters[key].string_value = value
    for name, labels in output_labels(config).items():
        out.parameters[f"{LABELS_PARAMETER}.{name}"].string_value = json.dumps(labels)
    if config.ensemble_scheduling is not None:  # Triton's shape: an ensemble has a platform, no backend, no instances
        out.backend = ""
        del out.instance_group[:]
        for step in config.ensemble_scheduling.step:
            out.ensemble_scheduling.step.add(model_name=step.model_name, model_version=step.model_version,
                                             input_map=step.input_map, output_map=step.output_map)
    return out


def model_metadata_json(model: ServedModel, version: ModelVersion) -> dict:
    """KServe v2 model metadata for HTTP: the protobuf's fields, plus each labelled output's names as tensor
    `parameters` ({"labels": [...]}), which the gRPC message has no field for (gRPC clients read them from the
    model config's `labels.<output>` parameters)."""
    from twinfer.kserve.json_proto import to_json_dict

    body = to_json_dict(model_metadata(model, version))
    labels = output_labels(version.config)
    for tensor in body.get("outputs", []):
        if tensor["name"] in labels:
            tensor["parameters"] = {LABELS_PARAMETER: labels[tensor["name"]]}
    return body


def _optional(message: mc.ModelInput, tensor: TensorConfig) -> mc.ModelInput:
    message.optional = tensor.optional
    return message


def model_statistics(name: str, version: int, s: ModelStatistics) -> pb.ModelStatistics:
    """One version's counters as Triton's statistics extension reports them (this worker's, or every worker's
    summed: twinfer.server.worker_peers)."""

    def duration(d) -> pb.StatisticDuration:
        return pb.StatisticDuration(count=d.count, ns=d.ns)

    stats = pb.ModelStatistics(
        name=name,
        version=str(version),
        last_inference=s.last_inference_ms,
        inference_count=s.inference_count,
        execution_count=s.execution_count,
        inference_stats=pb.InferStatistics(
            success=duration(s.success),
            fail=duration(s.failure),
            queue=duration(s.queue),
            compute_input=pb.StatisticDuration(count=s.compute.count),
            compute_infer=duration(s.compute),
            compute_output=pb.StatisticDuration(count=s.compute.count),
        ),
    )
    for size in sorted(s.batches):
        b = s.batches[size]
        stats.batch_stats.add(
            batch_size=size,
            compute_input=pb.StatisticDuration(count=b.count),
            compute_infer=pb.StatisticDuration(count=b.count, ns=b.compute_ns),
            compute_output=pb.StatisticDuration(count=b.count),
        )
    return stats


def repository_index(models: list[ServedModel], ready_only: bool = False) -> pb.RepositoryIndexResponse:
    index = pb.RepositoryIndexResponse()
    for model in models:
        if ready_only and model.state != "READY":
            continue
        if model.versions:
            for v in sorted(model.versions):
                index.models.add(name=model.name, version=str(v), state="READY")
        else:
            state = "UNAVAILABLE" if model.state != "LOADING" else "LOADING"
            index.models.add(name=model.name, state=state, reason=model.reason)
        for v in sorted(model.failed):
            if v not in model.versions:
                index.models.add(name=model.name, version=str(v), state="UNAVAILABLE", reason=model.reason)
    return index
